#include "learner/learner_task.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "common/tasks/score.h"
#include "learner/learner_publish.h"

_Static_assert(LEARNER_PROMPT_IDS_MAX >= TASK_TEXT_MAX &&
                   LEARNER_PROMPT_IDS_MAX >= CHAT_TASK_PROMPT_MAX_IDS &&
                   LEARNER_ANSWER_MAX >= CHAT_TASK_TEXT_MAX,
               "buffer sizes");
/* A record's strings go on the wire as they are. */
_Static_assert(DATASET_MAX_ANSWER - 1 <= WIRE_MAX_TEXT && DATASET_MAX_META - 1 <= WIRE_MAX_META &&
                   SCORE_SPEC_MAX - 1 <= WIRE_MAX_NAME,
               "dataset bounds within the wire's");

#define EVAL_BATCH_CHAR 64 /* prompts per evaluation batch, char model */
#define EVAL_BATCH_BPE 16  /* a 135M model's KV cache and logits are per sequence */
#define PROMPT_CACHE 512   /* rendered prompts kept, by id (a lease's groups come back soon) */

/* A source of train prompts: fills rec with prompt id. */
typedef struct {
    const char *name;
    void (*fill)(Learner *l, uint64_t id, DatasetRecord *rec);
    int (*check)(Learner *l);
} LearnerSource;

typedef struct {
    uint64_t      id;
    bool          is_valid;
    DatasetRecord rec;
} CachedPrompt;

/* The buffers of one prompt of a lease being granted. */
typedef struct {
    int32_t *ids;
    int      cap;
    char    *answer, *task, *meta;
} WireSlot;

struct LearnerPrompts {
    const LearnerSource *src;
    Dataset             *train;     /* --data, or NULL */
    Dataset             *eval;      /* --eval-data, or NULL */
    uint64_t             data_seed; /* the train data's shuffle seed */
    ScoreSpec            builtin;   /* the built-in task's scorer */
    CachedPrompt         cache[PROMPT_CACHE];
    WireSlot             slots[LEARNER_MAX_LEASE_PROMPTS];
    char                *text; /* (text_cap) a completion decoded */
    size_t               text_cap;
};

static char *dup_str(const char *s)
{
    char *d = strdup(s ? s : "");
    CHECK(d);
    return d;
}

/* ---- Sources ------------------------------------------------------------ */

static void builtin_record(Learner *l, const int *ids, int n, const char *answer,
                           DatasetRecord *rec)
{
    rec->ids = xmalloc(sizeof(int) * (size_t)n);
    memcpy(rec->ids, ids, sizeof(int) * (size_t)n);
    rec->n_ids = n;
    rec->answer = dup_str(answer);
    rec->task = dup_str(l->prompts->src->name);
    rec->meta = dup_str("");
    rec->spec = l->prompts->builtin;
}

static void arith_fill(Learner *l, uint64_t id, DatasetRecord *rec)
{
    TaskProblem p;
    task_problem(&l->task, l->prompt_seed, id, false, &p);
    int ids[TASK_TEXT_MAX], n = 0;
    /* Our own task text in our own charset: a failure is a bug. */
    CHECK(tok_encode(l->tok, p.prompt, strlen(p.prompt), TOK_ENC_BOS, ids, TASK_TEXT_MAX, &n) == 0);
    builtin_record(l, ids, n, p.answer, rec);
}

static void chat_fill(Learner *l, uint64_t id, DatasetRecord *rec)
{
    ChatTaskProblem p;
    chat_task_problem(&l->chat, l->prompt_seed, id, false, &p);
    int ids[CHAT_TASK_PROMPT_MAX_IDS], n = 0;
    /* check_chat encoded the longest question: a failure is a bug. */
    CHECK(chat_task_prompt_ids(l->bpe, p.question, ids, CHAT_TASK_PROMPT_MAX_IDS, &n) == 0);
    builtin_record(l, ids, n, p.answer, rec);
}

static void data_fill(Learner *l, uint64_t id, DatasetRecord *rec)
{
    LearnerPrompts *lp = l->prompts;
    uint64_t        k = dataset_shuffle(dataset_size(lp->train), lp->data_seed, id);
    /* The file was read whole and is held open: only an edit in place
     * (logged by dataset_read with file:line) gets here. */
    if (dataset_read(lp->train, k, rec) != 0) {
        log_error("learner: the data file changed in place under the running learner; stopping "
                  "(a restart resumes from the checkpoint, and refuses the changed file)");
        CHECK(!"data file edited in place");
    }
}

/* The model must hold a prompt of n ids and a full completion. */
static int check_positions(Learner *l, int n, const char *what)
{
    int max_seq = model_config(l->policy)->max_seq_len;
    if (n + l->cfg.max_new_tokens > max_seq) {
        log_error("learner: %s of up to %d ids plus %d new tokens exceed the model's %d positions",
                  what, n, l->cfg.max_new_tokens, max_seq);
        return ERR_RANGE;
    }
    return 0;
}

/* The chat task on a GGUF model: the longest question (both operands of
 * max_digits digits, a minus) must encode, and fit with a full completion. */
static int chat_check(Learner *l)
{
    const LearnerConfig *c = &l->cfg;
    char                 q[CHAT_TASK_TEXT_MAX], num[8];
    memset(num, '9', sizeof num);
    num[c->max_digits] = '\0';
    snprintf(q, sizeof q, "What is -%s - %s? Reply with the number only.", num, num);
    int ids[CHAT_TASK_PROMPT_MAX_IDS], n = 0;
    int rc = chat_task_prompt_ids(l->bpe, q, ids, CHAT_TASK_PROMPT_MAX_IDS, &n);
    if (rc) {
        log_error("learner: '%s': the chat task's prompt does not encode in %d ids (%s)",
                  c->model_path, CHAT_TASK_PROMPT_MAX_IDS, err_str(rc));
        return rc;
    }
    return check_positions(l, n, "chat prompts");
}

static int arith_check(Learner *l)
{
    const LearnerConfig *c = &l->cfg;
    /* Prompts and answers are built from these characters; a checkpoint
     * whose tokenizer lacks one cannot be trained on the task. */
    for (const char *ch = "0123456789+-="; *ch; ch++) {
        if (tok_id(l->tok, *ch) < 0) {
            log_error("learner: the tokenizer has no '%c', which the arithmetic task needs", *ch);
            return ERR_MISMATCH;
        }
    }
    return check_positions(l, 2 * c->max_digits + 3, "prompts");
}

/* Opened and checked by learner_task_open, before the source is chosen. */
static int data_check(Learner *l)
{
    return 0;
}

static const LearnerSource k_sources[] = {
    {LEARNER_TASK_ARITH, arith_fill, arith_check},
    {CHAT_TASK_NAME, chat_fill, chat_check},
    {"data", data_fill, data_check},
};

/* ---- Prompts ------------------------------------------------------------ */

/* Train prompt id, rendered: from the cache, or from the source. Valid
 * until the next call for an id of the same cache line. */
static const DatasetRecord *prompt_get(Learner *l, uint64_t id)
{
    CachedPrompt *c = &l->prompts->cache[id % PROMPT_CACHE];
    if (c->is_valid && c->id == id) return &c->rec;
    dataset_record_free(&c->rec);
    l->prompts->src->fill(l, id, &c->rec);
    CHECK(c->rec.n_ids >= 1 && c->rec.n_ids <= LEARNER_PROMPT_IDS_MAX);
    c->id = id;
    c->is_valid = true;
    return &c->rec;
}

int learner_task_prompt(Learner *l, uint64_t id, int *ids, char *answer)
{
    const DatasetRecord *r = prompt_get(l, id);
    memcpy(ids, r->ids, sizeof(int) * (size_t)r->n_ids);
    if (answer) snprintf(answer, LEARNER_ANSWER_MAX, "%s", r->answer);
    return r->n_ids;
}

static void replace(char **dst, const char *src)
{
    free(*dst);
    *dst = dup_str(src);
}

void learner_task_wire_prompt(Learner *l, uint64_t id, int slot, Rlhf__Prompt *pr)
{
    CHECK(slot >= 0 && slot < LEARNER_MAX_LEASE_PROMPTS);
    WireSlot            *w = &l->prompts->slots[slot];
    const DatasetRecord *r = prompt_get(l, id);
    if (r->n_ids > w->cap) {
        w->cap = r->n_ids;
        w->ids = xrealloc(w->ids, sizeof(int32_t) * (size_t)w->cap);
    }
    for (int i = 0; i < r->n_ids; i++) w->ids[i] = r->ids[i];
    replace(&w->answer, r->answer);
    replace(&w->task, r->task);
    replace(&w->meta, r->meta);
    pr->prompt_id = id;
    pr->tokens = w->ids;
    pr->n_tokens = (size_t)r->n_ids;
    pr->answer = w->answer;
    pr->task = w->task;
    pr->meta_json = w->meta;
}

const char *learner_task_name(const Learner *l)
{
    return l->prompts ? l->prompts->src->name : (l->bpe ? CHAT_TASK_NAME : LEARNER_TASK_ARITH);
}

/* The reward server's verdict: its "correct" component, else its reward. */
static bool score_says_correct(const Rlhf__Score *sc)
{
    for (size_t i = 0; i < sc->n_components; i++)
        if (!strcmp(sc->components[i]->name, "correct")) return sc->components[i]->value >= 0.5f;
    return sc->reward >= 0.5f;
}

bool learner_task_is_correct(Learner *l, uint64_t id, const Rlhf__Completion *cp,
                             const Rlhf__Score *sc)
{
    LearnerPrompts      *lp = l->prompts;
    const DatasetRecord *r = prompt_get(l, id);
    if (!score_spec_is_local(&r->spec)) return sc && score_says_correct(sc);
    int    nt = (int)cp->n_tokens;
    int    stop_id = l->bpe ? bpe_eot_id(l->bpe) : TOK_EOS;
    bool   stop = nt > 0 && cp->tokens[nt - 1] == stop_id;
    int    nc = nt - stop;
    size_t need = l->bpe ? bpe_decode_max_bytes(l->bpe, nc) : TOK_DECODE_MAX_BYTES(nc);
    if (need > lp->text_cap) {
        lp->text_cap = need;
        lp->text = xrealloc(lp->text, need);
    }
    /* The ids were checked against the vocabulary on arrival. */
    int rc = l->bpe
                 ? bpe_decode(l->bpe, (const int *)cp->tokens, nc, 0, lp->text, lp->text_cap, NULL)
                 : tok_decode(l->tok, (const int *)cp->tokens, nc, 0, lp->text, lp->text_cap, NULL);
    if (rc) return false;
    ScoreInput  in = {.prompt = "",
                      .completion = lp->text,
                      .answer = r->answer,
                      .meta_json = r->meta,
                      .is_truncated = !stop};
    ScoreResult res;
    char        why[160];
    return score_spec_run(&r->spec, &in, &res, why, sizeof why) == 0 && score_is_correct(&res);
}

/* ---- Opening ------------------------------------------------------------ */

/* The options of a dataset for this model: its tokenizer, prompts that leave
 * room for a full completion, records without a task scored with --task. */
static int data_opts(Learner *l, DatasetOpts *o)
{
    int max_seq = model_config(l->policy)->max_seq_len;
    int room = max_seq - l->cfg.max_new_tokens;
    if (room < 2) {
        log_error("learner: the model's %d positions leave no room for a prompt before %d new "
                  "tokens (--max-new-tokens)",
                  max_seq, l->cfg.max_new_tokens);
        return ERR_RANGE;
    }
    *o = (DatasetOpts){.tok = l->bpe ? NULL : l->tok,
                       .bpe = l->bpe,
                       .max_prompt_ids =
                           room < LEARNER_PROMPT_IDS_MAX ? room : LEARNER_PROMPT_IDS_MAX,
                       .default_task = l->cfg.data_task,
                       .lookup = score_builtin,
                       .max_bad_percent = l->cfg.data_max_bad};
    return 0;
}

/* A BPE model must stop its completions and cover its tokenizer. */
static int check_bpe(Learner *l)
{
    if (!l->bpe) return 0;
    if (bpe_eot_id(l->bpe) < 0 || bpe_vocab_size(l->bpe) > model_config(l->policy)->vocab_size) {
        log_error("learner: '%s': no end-of-turn token, or a tokenizer of %d ids for a model of %d",
                  l->cfg.model_path, bpe_vocab_size(l->bpe), model_config(l->policy)->vocab_size);
        return ERR_MISMATCH;
    }
    return 0;
}

static uint64_t hex_u64(const json_t *v, bool *ok)
{
    const char *s = json_string_value(v);
    char       *end = NULL;
    uint64_t    x = s ? strtoull(s, &end, 16) : 0;
    *ok = s && s[0] && end && *end == '\0';
    return x;
}

/* A resumed run's data: the same file content, its shuffle seed. */
static int resume_data(Learner *l, bool resumed, const json_t *st)
{
    LearnerPrompts *lp = l->prompts;
    const char     *file = l->cfg.data_path;
    if (!resumed) return 0;
    if (!st && !lp->train) return 0;
    if (!st) {
        log_error("learner: the checkpoint in '%s' trained on the built-in task, not on data; "
                  "resuming it on '%s' would not continue it (use another --ckpt-dir)",
                  l->cfg.ckpt_dir, file);
        return ERR_MISMATCH;
    }
    const char *was = json_string_value(json_object_get(st, "path"));
    if (!lp->train) {
        log_error("learner: the checkpoint in '%s' trained on --data '%s'; give it again to "
                  "resume (or use another --ckpt-dir)",
                  l->cfg.ckpt_dir, was ? was : "?");
        return ERR_MISMATCH;
    }
    bool     ok_fp, ok_seed;
    uint64_t fp = hex_u64(json_object_get(st, "fingerprint"), &ok_fp);
    uint64_t seed = hex_u64(json_object_get(st, "seed"), &ok_seed);
    json_t  *rec = json_object_get(st, "records");
    if (!ok_fp || !ok_seed || !json_is_integer(rec)) {
        log_error("learner: '%s': the trainer state's \"data\" lacks records, fingerprint or seed",
                  l->cfg.ckpt_dir);
        return ERR_FORMAT;
    }
    uint64_t n = dataset_size(lp->train);
    if (fp != dataset_fingerprint(lp->train) || (uint64_t)json_integer_value(rec) != n) {
        log_error("learner: --data '%s' is not the data the checkpoint trained on ('%s': %" PRId64
                  " records, fingerprint %016" PRIx64 "; now %" PRIu64 " records, %016" PRIx64
                  "): resuming would repeat or skip records; restore that file, or start a fresh "
                  "run (another --ckpt-dir)",
                  file, was ? was : "?", (int64_t)json_integer_value(rec), fp, n,
                  dataset_fingerprint(lp->train));
        return ERR_MISMATCH;
    }
    lp->data_seed = seed;
    json_t *ep = json_object_get(st, "epoch"), *pos = json_object_get(st, "position");
    log_info("learner: resuming the data '%s' at epoch %" PRId64 ", record %" PRId64 " of %" PRIu64
             " (the prompts leased but not trained come first)",
             file, json_is_integer(ep) ? (int64_t)json_integer_value(ep) : -1,
             json_is_integer(pos) ? (int64_t)json_integer_value(pos) : -1, n);
    return 0;
}

int learner_task_open(Learner *l, bool resumed, const json_t *data_state)
{
    CHECK(!l->prompts);
    LearnerPrompts *lp = xcalloc(1, sizeof *lp);
    l->prompts = lp;
    const LearnerConfig *c = &l->cfg;
    lp->data_seed = c->seed ^ 0x6461746173686675ULL; /* "datashfu": apart from the other seeds */
    int         rc = check_bpe(l);
    DatasetOpts o;
    if (!rc && (c->data_path || c->eval_data_path)) rc = data_opts(l, &o);
    if (!rc && c->data_path && (rc = dataset_open(c->data_path, &o, &lp->train)))
        log_error("learner: --data '%s' refused (%s)", c->data_path, err_str(rc));
    if (!rc && c->eval_data_path && (rc = dataset_open(c->eval_data_path, &o, &lp->eval)))
        log_error("learner: --eval-data '%s' refused (%s)", c->eval_data_path, err_str(rc));
    if (rc) return rc;
    lp->src = lp->train ? &k_sources[2] : l->bpe ? &k_sources[1] : &k_sources[0];
    char why[200];
    /* The built-in tasks' prompts are scored by the scorer of their name. */
    if (!lp->train)
        CHECK(score_spec_parse(lp->src->name, score_builtin, NULL, &lp->builtin, why, sizeof why) ==
              0);
    if ((rc = lp->src->check(l))) return rc;
    if ((rc = resume_data(l, resumed, data_state))) return rc;
    if (lp->train && !lp->eval && c->eval_n > 0)
        log_warn("learner: no --eval-data: the --data run has no held-out evaluation");
    if (lp->train)
        log_info("learner: training on %" PRIu64 " records of '%s', shuffled each epoch",
                 dataset_size(lp->train), c->data_path);
    return 0;
}

void learner_task_free(Learner *l)
{
    LearnerPrompts *lp = l->prompts;
    if (!lp) return;
    for (int i = 0; i < PROMPT_CACHE; i++) dataset_record_free(&lp->cache[i].rec);
    for (int i = 0; i < LEARNER_MAX_LEASE_PROMPTS; i++) {
        WireSlot *w = &lp->slots[i];
        free(w->ids);
        free(w->answer);
        free(w->task);
        free(w->meta);
    }
    dataset_free(&lp->train);
    dataset_free(&lp->eval);
    free(lp->text);
    free(lp);
    l->prompts = NULL;
}

/* ---- Evaluation and state ----------------------------------------------- */

int learner_task_evaluate(Learner *l, EvalResult *out)
{
    LearnerPrompts      *lp = l->prompts;
    const LearnerConfig *c = &l->cfg;
    memset(out, 0, sizeof *out);
    if (c->eval_n <= 0 || (lp->train && !lp->eval)) return 0;
    if (lp->eval)
        return eval_dataset(learner_publish_model(l), l->bpe ? NULL : l->tok, l->bpe, lp->eval,
                            c->eval_n, l->bpe ? EVAL_BATCH_BPE : EVAL_BATCH_CHAR, c->max_new_tokens,
                            out);
    if (l->bpe)
        return eval_chat(learner_publish_model(l), l->bpe, &l->chat, l->eval_seed, c->eval_n,
                         EVAL_BATCH_BPE, c->max_new_tokens, out);
    return eval_arith(learner_publish_model(l), l->tok, &l->task, l->eval_seed, c->eval_n,
                      EVAL_BATCH_CHAR, out);
}

void learner_task_save_state(const Learner *l, json_t *extra)
{
    const LearnerPrompts *lp = l->prompts;
    if (!lp || !lp->train) return;
    json_t  *next = json_object_get(json_object_get(extra, "lease"), "next_prompt");
    uint64_t n = dataset_size(lp->train);
    uint64_t p = json_is_integer(next) ? (uint64_t)json_integer_value(next) : 0;
    char     fp[20], seed[20];
    snprintf(fp, sizeof fp, "%016" PRIx64, dataset_fingerprint(lp->train));
    snprintf(seed, sizeof seed, "%016" PRIx64, lp->data_seed);
    /* epoch and position are for people: the lease state's next_prompt
     * (and its pending prompts) is where the data resumes. */
    json_t *d = json_pack("{s:s, s:I, s:s, s:s, s:I, s:I}", "path", l->cfg.data_path, "records",
                          (json_int_t)n, "fingerprint", fp, "seed", seed, "epoch",
                          (json_int_t)(p / n), "position", (json_int_t)(p % n));
    CHECK(d && json_object_set_new(extra, "data", d) == 0);
}
