/* rlhf-eval: evaluates a policy with n samples per prompt, on any dataset
 * with any scorer, and reports the unbiased pass@k for every k <= n, the
 * majority-vote accuracy and the mean reward (common/tasks/passk.h).
 *
 *   rlhf-eval --model M.gguf --data FILE.jsonl --n 10 --temperature 0.8
 *   rlhf-eval --ckpt DIR --builtin 500 --task gold_arith --n 4
 *
 * Prompts come from a JSONL dataset (common/tasks/dataset.h: rendered with
 * the model's chat template for a GGUF model) or from the held-out problems
 * of the built-in arithmetic task (a char model's checkpoint). Each record
 * is scored by its own task, or by --task for all; the sandboxed "code"
 * scorer runs here on the same pool the reward server uses. A sample is
 * correct when its scorer says so (score_is_correct), and for code when it
 * passed every test (component all_pass). Generation is the actors' path
 * (gen_run) with the sampler's settings; a completion is cut at the first
 * --stop string before it is scored.
 *
 * This sits in deploy/, the top layer: it uses the learner's model loading
 * conventions and the reward server's sandbox, which no lower folder may. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/log.h"
#include "common/base/prog.h"
#include "common/base/progress.h"
#include "common/base/rng.h"
#include "common/formats/bpe.h"
#include "common/formats/bpe_gguf.h"
#include "common/formats/ckpt.h"
#include "common/formats/ckpt_config.h"
#include "common/formats/gguf_llama.h"
#include "common/formats/tok.h"
#include "common/nn/gen.h"
#include "common/nn/model.h"
#include "common/tasks/dataset.h"
#include "common/tasks/passk.h"
#include "common/tasks/score.h"
#include "common/tasks/task.h"
#include "reward_server/sandbox_scorer.h"
#include "reward_server/scorer.h"

#define EVAL_STOPS_MAX 8
#define EVAL_KEY_MAX 64

typedef struct {
    const char   *ckpt, *model, *data, *task, *out, *stop;
    int           builtin;    /* held-out problems of the built-in task, 0 = use --data */
    int           n;          /* samples per prompt */
    int           max_new;    /* tokens per completion at most */
    int           batch;      /* sequences per generation call */
    int           limit;      /* prompts at most, 0 = all */
    int           max_seq;    /* positions a GGUF model is loaded with */
    int           max_digits; /* the built-in task's operand digits */
    int           code_workers;
    int           decode_weights; /* KernType generation decodes in, as actors do */
    SamplerConfig sampler;
    uint64_t      seed;
} EvalArgs;

static const EvalArgs k_defaults = {
    .builtin = 0,
    .n = 1,
    .max_new = 256,
    .batch = 16,
    .limit = 0,
    .max_seq = 1024,
    .max_digits = 3,
    .code_workers = 2,
    .decode_weights = KERN_BF16,
    .sampler = {.temperature = 0.0f, .top_k = 0, .top_p = 1.0f},
    .seed = 1,
};

/* One prompt to evaluate. */
typedef struct {
    uint64_t  label; /* file line, or the built-in problem's index */
    int      *ids;
    int       n_ids;
    char     *prompt_text; /* the built-in task's prompt (scorers see it); "" for records */
    char     *answer, *meta;
    char     *task; /* the scorer spec, resolved into spec once the scorers are known */
    ScoreSpec spec;
    bool      is_code; /* a term runs in the sandbox: no vote */
    int       correct; /* samples correct */
    double    reward_sum;
    int       vote;     /* sample index of the winning key, -1 none */
    int       vote_ok;  /* that sample's correctness */
    char      vote_key[EVAL_KEY_MAX];
} Item;

static int check(const FlagsSpec *spec, void *ctx)
{
    (void)spec;
    EvalArgs *a = ctx;
    char      why[200];
    if (!a->ckpt == !a->model) {
        fprintf(stderr, "rlhf-eval: give one of --ckpt DIR or --model PATH.gguf\n");
        return ERR_ARG;
    }
    if (!a->data == !a->builtin) {
        fprintf(stderr, "rlhf-eval: give one of --data FILE.jsonl or --builtin N\n");
        return ERR_ARG;
    }
    if (a->builtin && a->model) {
        fprintf(stderr, "rlhf-eval: --builtin is the char task of a --ckpt model; a GGUF "
                        "model takes --data\n");
        return ERR_ARG;
    }
    if (sampler_config_validate(&a->sampler, why, sizeof why)) {
        fprintf(stderr, "rlhf-eval: sampling flags: %s\n", why);
        return ERR_ARG;
    }
    return 0;
}

/* Splits --stop ("a|b", with \n \t \\ \| escapes) into at most
 * EVAL_STOPS_MAX strings in buf. Returns the count, or -1 (logged). */
static int parse_stops(const char *spec, char *buf, size_t cap, const char **stops)
{
    int    n = 0;
    size_t o = 0;
    if (!spec || !*spec) return 0;
    stops[n++] = buf;
    for (const char *p = spec; *p; p++) {
        char c = *p;
        if (c == '\\' && p[1]) {
            p++;
            c = *p == 'n' ? '\n' : *p == 't' ? '\t' : *p;
        } else if (c == '|') {
            if (o + 1 >= cap || n == EVAL_STOPS_MAX) goto bad;
            buf[o++] = '\0';
            stops[n++] = buf + o;
            continue;
        }
        if (o + 1 >= cap) goto bad;
        buf[o++] = c;
    }
    buf[o] = '\0';
    for (int i = 0; i < n; i++)
        if (!stops[i][0]) goto bad;
    return n;
bad:
    log_error("--stop '%s': expected up to %d non-empty strings separated by '|'", spec,
              EVAL_STOPS_MAX);
    return -1;
}

static void cut_at_stops(char *text, const char *const *stops, int n_stops)
{
    for (int i = 0; i < n_stops; i++) {
        char *at = strstr(text, stops[i]);
        if (at) *at = '\0';
    }
}

static bool spec_has(const ScoreSpec *s, const char *name)
{
    for (int k = 0; k < s->n_terms; k++)
        if (!strcmp(s->terms[k].def->name, name)) return true;
    return false;
}

static bool sample_correct(const ScoreResult *r)
{
    for (int i = 0; i < r->n_components; i++)
        if (!strcmp(r->components[i].name, "all_pass")) return r->components[i].value >= 0.5f;
    return score_is_correct(r);
}

static void item_free(Item *it)
{
    free(it->ids);
    free(it->prompt_text);
    free(it->answer);
    free(it->meta);
    free(it->task);
    memset(it, 0, sizeof *it);
}

/* The prompts: dataset records, or the built-in task's held-out problems. */
static int load_items(const EvalArgs *a, const Tok *tok, const Bpe *bpe, ScorerRegistry *reg,
                      int max_prompt_ids, Item **out, int *n_out)
{
    *out = NULL;
    *n_out = 0;
    char why[300];
    if (a->builtin) {
        TaskConfig tc = TASK_DEFAULTS;
        tc.max_digits = a->max_digits;
        ScoreSpec spec;
        const char *task = a->task ? a->task : "arith";
        if (score_spec_parse(task, score_builtin, NULL, &spec, why, sizeof why)) {
            log_error("--task '%s': %s", task, why);
            return ERR_ARG;
        }
        int   n = a->limit && a->limit < a->builtin ? a->limit : a->builtin;
        Item *items = xcalloc((size_t)n, sizeof *items);
        for (int i = 0; i < n; i++) {
            TaskProblem p;
            task_problem(&tc, a->seed, (uint64_t)i, true, &p);
            Item *it = &items[i];
            it->label = (uint64_t)i;
            it->ids = xmalloc(sizeof(int) * TASK_TEXT_MAX);
            CHECK(tok_encode(tok, p.prompt, strlen(p.prompt), TOK_ENC_BOS, it->ids, TASK_TEXT_MAX,
                             &it->n_ids) == 0);
            it->prompt_text = xstrdup(p.prompt);
            it->answer = xstrdup(p.answer);
            it->meta = xstrdup("");
            it->task = xstrdup(task);
            it->is_code = spec_has(&spec, SANDBOX_SCORER_NAME);
        }
        *out = items;
        *n_out = n;
        return 0;
    }
    DatasetOpts o = {.tok = bpe ? NULL : tok,
                     .bpe = bpe,
                     .max_prompt_ids = max_prompt_ids,
                     .default_task = a->task,
                     .lookup = score_builtin, /* every name; "code" is resolved later */
                     .lookup_ctx = NULL,
                     .max_bad_percent = 50};
    Dataset *d = NULL;
    int      rc = dataset_open(a->data, &o, &d);
    if (rc) return rc;
    uint64_t n = dataset_size(d);
    if (a->limit && (uint64_t)a->limit < n) n = (uint64_t)a->limit;
    Item *items = xcalloc((size_t)n, sizeof *items);
    for (uint64_t k = 0; k < n && rc == 0; k++) {
        DatasetRecord r = {0};
        if ((rc = dataset_read(d, k, &r)) == 0) {
            Item *it = &items[k];
            it->label = r.line;
            it->ids = xmalloc(sizeof(int) * (size_t)r.n_ids);
            memcpy(it->ids, r.ids, sizeof(int) * (size_t)r.n_ids);
            it->n_ids = r.n_ids;
            it->prompt_text = xstrdup("");
            it->answer = xstrdup(r.answer);
            it->meta = xstrdup(r.meta);
            /* --task overrides every record's own. */
            it->task = xstrdup(a->task ? a->task : r.task);
            ScoreSpec sp;
            if (score_spec_parse(it->task, score_builtin, NULL, &sp, why, sizeof why)) {
                log_error("--task '%s': %s", it->task, why);
                rc = ERR_ARG;
            }
            it->spec = sp;
            it->is_code = spec_has(&it->spec, SANDBOX_SCORER_NAME);
        }
        dataset_record_free(&r);
    }
    dataset_free(&d);
    if (rc) {
        for (uint64_t k = 0; k < n; k++) item_free(&items[k]);
        free(items);
        return rc;
    }
    *out = items;
    *n_out = (int)n;
    return 0;
}

typedef struct {
    const EvalArgs *a;
    Model          *m;
    const Tok      *tok;
    const Bpe      *bpe;
    const char     *stops[EVAL_STOPS_MAX];
    int             n_stops;
} Run;

/* Samples and scores every item; fills the items' counts and votes. */
static int run_items(Run *r, Item *items, int n_items, double *wall_s)
{
    const EvalArgs *a = r->a;
    int             per = a->batch / a->n > 0 ? a->batch / a->n : 1; /* prompts per call */
    int             B = per * a->n, W = a->max_new, P = 0;
    for (int i = 0; i < n_items; i++) P = items[i].n_ids > P ? items[i].n_ids : P;
    int T = P + W;
    if (T > model_config(r->m)->max_seq_len) T = model_config(r->m)->max_seq_len;
    Generator *g = gen_new(r->m, B, T);
    GenConfig  gc = {.sampler = a->sampler,
                     .max_new = W,
                     .stop_id = r->bpe ? bpe_eot_id(r->bpe) : TOK_EOS};
    GenOutput  go = {xmalloc(sizeof(int) * (size_t)B * W), xmalloc(sizeof(float) * (size_t)B * W),
                     xmalloc(sizeof(float) * (size_t)B * W), xmalloc(sizeof(int) * (size_t)B),
                     xmalloc(sizeof(int) * (size_t)B)};
    const int **pp = xmalloc(sizeof(int *) * (size_t)B);
    int        *pl = xmalloc(sizeof(int) * (size_t)B);
    size_t      tcap = r->bpe ? bpe_decode_max_bytes(r->bpe, W) : TOK_DECODE_MAX_BYTES(W);
    char       *text = xmalloc(tcap);
    char(*keys)[EVAL_KEY_MAX] = xmalloc(sizeof *keys * (size_t)a->n);
    const char **kp = xmalloc(sizeof(char *) * (size_t)a->n);
    bool        *ok = xmalloc(sizeof(bool) * (size_t)a->n);
    Rng          rng;
    rng_seed(&rng, a->seed);
    Progress pr;
    progress_start(&pr, "eval", "sample", (int64_t)n_items * a->n);
    int rc = 0, scored_err = 0;
    for (int start = 0; start < n_items && rc == 0; start += per) {
        int np = n_items - start < per ? n_items - start : per;
        for (int i = 0; i < np; i++)
            for (int j = 0; j < a->n; j++) {
                pp[i * a->n + j] = items[start + i].ids;
                pl[i * a->n + j] = items[start + i].n_ids;
            }
        if ((rc = gen_run(g, &gc, np * a->n, pp, pl, &rng, &go))) break;
        for (int i = 0; i < np; i++) {
            Item *it = &items[start + i];
            for (int j = 0; j < a->n; j++) {
                int  q = i * a->n + j;
                bool cut = go.finish[q] != GEN_FINISH_STOP;
                int  nt = go.n_tokens[q] - !cut;
                int  drc = r->bpe ? bpe_decode(r->bpe, go.tokens + (size_t)q * W, nt, 0, text,
                                               tcap, NULL)
                                  : tok_decode(r->tok, go.tokens + (size_t)q * W, nt, 0, text,
                                               tcap, NULL);
                if (drc) text[0] = '\0';
                size_t before = strlen(text);
                cut_at_stops(text, r->stops, r->n_stops);
                /* A completion cut at a stop string ended; one cut by the cap did not. */
                if (strlen(text) < before) cut = false;
                ScoreInput  in = {.prompt = it->prompt_text,
                                  .completion = text,
                                  .answer = it->answer,
                                  .meta_json = it->meta,
                                  .is_truncated = cut};
                ScoreResult res;
                char        why[300];
                ok[j] = false;
                if (score_spec_run(&it->spec, &in, &res, why, sizeof why)) {
                    if (scored_err++ < 5)
                        log_warn("eval: prompt %" PRIu64 " sample %d not scored, counted wrong "
                                 "(%s)",
                                 it->label, j, why);
                } else {
                    ok[j] = sample_correct(&res);
                    it->reward_sum += res.reward;
                }
                if (start + i < 2 && j == 0)
                    log_debug("eval: prompt %" PRIu64 " sample 0 (%d tokens, %s): %.600s",
                              it->label, go.n_tokens[q], cut ? "cut" : "ended", text);
                it->correct += ok[j];
                passk_vote_key(text, keys[j], EVAL_KEY_MAX);
                kp[j] = it->is_code ? "" : keys[j];
            }
            it->vote = passk_vote(kp, a->n);
            it->vote_ok = it->vote >= 0 && ok[it->vote];
            snprintf(it->vote_key, sizeof it->vote_key, "%s", it->vote >= 0 ? keys[it->vote] : "");
        }
        char extra[96];
        int  done = start + np, c = 0;
        for (int i = 0; i < done; i++) c += items[i].correct;
        snprintf(extra, sizeof extra, "pass@1 so far %.3f", (double)c / ((double)done * a->n));
        progress_update(&pr, (int64_t)done * a->n, extra, false);
    }
    progress_update(&pr, (int64_t)n_items * a->n, NULL, true);
    progress_end(&pr);
    *wall_s = progress_elapsed(&pr);
    if (scored_err) log_warn("eval: %d samples could not be scored (counted wrong)", scored_err);
    free(ok);
    free(kp);
    free(keys);
    free(text);
    free(pl);
    free(pp);
    free(go.tokens);
    free(go.logp_sampled);
    free(go.logp_full);
    free(go.n_tokens);
    free(go.finish);
    gen_free(&g);
    return rc;
}

/* The report: printed as a table and written as JSON to --out. */
static int report(const EvalArgs *a, const Item *items, int n_items, double wall_s)
{
    json_t *passk = json_object();
    printf("%-8s %s\n", "k", "pass@k");
    for (int k = 1; k <= a->n; k++) {
        double s = 0;
        for (int i = 0; i < n_items; i++) s += passk_estimate(a->n, items[i].correct, k);
        s /= n_items;
        char key[16];
        snprintf(key, sizeof key, "%d", k);
        json_object_set_new(passk, key, json_real(s));
        printf("%-8d %.4f\n", k, s);
    }
    int    voters = 0, vote_ok = 0;
    double reward = 0;
    for (int i = 0; i < n_items; i++) {
        reward += items[i].reward_sum;
        if (!items[i].is_code) {
            voters++;
            vote_ok += items[i].vote_ok;
        }
    }
    reward /= (double)n_items * a->n;
    printf("mean reward %.4f over %d prompts x %d samples; ", reward, n_items, a->n);
    if (voters)
        printf("majority vote %.4f (%d prompts)\n", (double)vote_ok / voters, voters);
    else
        printf("no majority vote (code has no answer to vote on)\n");
    json_t *per = json_array();
    for (int i = 0; i < n_items; i++)
        json_array_append_new(
            per, json_pack("{s:I, s:i, s:f, s:s, s:b}", "line", (json_int_t)items[i].label,
                           "correct", items[i].correct, "reward_mean",
                           items[i].reward_sum / a->n, "vote", items[i].vote_key, "vote_correct",
                           items[i].vote_ok));
    json_t *j = json_pack(
        "{s:s, s:s, s:s?, s:i, s:i, s:f, s:f, s:i, s:I, s:i, s:o, s:f, s:o, s:f, s:f, s:o}",
        "policy", a->ckpt ? a->ckpt : a->model, "data", a->data ? a->data : "builtin", "task",
        a->task, "prompts", n_items, "n", a->n, "temperature", (double)a->sampler.temperature,
        "top_p", (double)a->sampler.top_p, "max_new", a->max_new, "seed", (json_int_t)a->seed,
        "voters", voters, "pass_at_k", passk, "reward_mean", reward, "majority_vote",
        voters ? json_real((double)vote_ok / voters) : json_null(), "wall_s", wall_s,
        "samples_per_s", wall_s > 0 ? (double)n_items * a->n / wall_s : 0.0, "per_prompt", per);
    int rc = 0;
    if (a->out) {
        char *txt = json_dumps(j, JSON_INDENT(1));
        size_t n = strlen(txt);
        txt = xrealloc(txt, n + 2);
        txt[n] = '\n';
        txt[n + 1] = '\0';
        if ((rc = fileio_write_atomic(a->out, txt, n + 1)))
            log_error("--out '%s': %s", a->out, err_str(rc));
        free(txt);
    }
    json_decref(j);
    return rc;
}

int main(int argc, char **argv)
{
    EvalArgs a = k_defaults;
    Flag     flags[] = {
        FLAG_STRING("ckpt", &a.ckpt, "DIR", "the policy: a checkpoint of ours", .def = "none"),
        FLAG_PATH("model", &a.model, "PATH.gguf", "the policy: a GGUF model (chat template)",
                      .def = "none"),
        FLAG_PATH("data", &a.data, "FILE.jsonl", "prompts (README \"Bring your own data\")",
                      .def = "none"),
        FLAG_INT("builtin", &a.builtin, 0, 10000000, "N",
                     "instead of --data: N held-out problems of the built-in\n"
                         "arithmetic task (a char model's --ckpt)"),
        FLAG_STRING("task", &a.task, "SPEC",
                        "scorer spec for every prompt (README \"Scorers and specs\")",
                        .def = "each record's own; arith for --builtin"),
        FLAG_INT("n", &a.n, 1, 1024, "N", "samples per prompt (pass@k for every k <= N)"),
        FLAG_FLOAT("temperature", &a.sampler.temperature, -HUGE_VAL, HUGE_VAL, "X",
                       "sampling temperature, 0 = greedy"),
        FLAG_FLOAT("top-p", &a.sampler.top_p, -HUGE_VAL, HUGE_VAL, "P",
                       "nucleus mass in (0, 1], 1 = off"),
        FLAG_INT("max-new", &a.max_new, 1, 8192, "N", "tokens per completion at most"),
        FLAG_STRING("stop", &a.stop, "S|S..",
                        "cut completions at the first of these strings (\\n, \\t,\n"
                        "\\| escapes), e.g. '\\ndef |\\nclass '",
                        .def = "none"),
        FLAG_INT("batch", &a.batch, 1, 4096, "N",
                     "sequences per generation call (prompts x n)"),
        FLAG_INT("limit", &a.limit, 0, 100000000, "N", "first N prompts only, 0 = all"),
        FLAG_INT("max-seq", &a.max_seq, 16, 1 << 16, "N",
                     "positions a GGUF model is loaded with (prompt + completion)"),
        FLAG_INT("max-digits", &a.max_digits, 1, 6, "D", "--builtin: operand digits"),
        FLAG_INT("code-workers", &a.code_workers, 1, 64, "N",
                     "sandboxed runs at once for the code scorer"),
        FLAG_CHOICE("decode-weights", &a.decode_weights, kern_type_names, "T",
                    "precision generation decodes in: bf16 as actors do, fp16 or fp32"),
        FLAG_U64("seed", &a.seed, "S", "sampling seed (and --builtin's problems)"),
        FLAG_STRING("out", &a.out, "FILE.json", "the JSON report", .def = "none"),
        FLAGS_END,
    };
    FlagsSpec spec = {
        .prog = "rlhf-eval",
        .synopsis = "(--ckpt DIR | --model PATH.gguf) (--data FILE.jsonl | --builtin N) [flags]",
        .about = "Samples n completions per prompt from a policy, scores them, and reports the\n"
                 "unbiased pass@k for every k <= n, the majority-vote accuracy and the mean\n"
                 "reward.\n",
        .flags = flags,
        .check = check,
        .check_ctx = &a,
    };
    int rc = prog_start(&spec, argc, argv, "eval", NULL);
    if (rc != PROG_RUN) return rc;

    char        stop_buf[1024];
    Run         run = {.a = &a};
    Tok        *tok = NULL;
    Bpe        *bpe = NULL;
    Model      *m = NULL;
    Item       *items = NULL;
    int         n_items = 0;
    double      wall = 0;
    SandboxScorer *code = NULL;
    ScorerRegistry *reg = scorer_registry_new();
    if ((run.n_stops = parse_stops(a.stop, stop_buf, sizeof stop_buf, run.stops)) < 0) {
        rc = ERR_ARG;
        goto out;
    }
    if (a.model) {
        if ((rc = bpe_load(a.model, &bpe)) || (rc = gguf_load(a.model, a.max_seq, &m))) goto out;
    } else {
        ModelConfig mc;
        if ((rc = ckpt_load_config(a.ckpt, &mc)) || (rc = ckpt_load_tok(a.ckpt, &tok))) goto out;
        m = model_new(&mc);
        for (int attempt = 0; attempt < 3; attempt++)
            if ((rc = ckpt_load(a.ckpt, m)) != ERR_AGAIN) break;
        if (rc) goto out;
    }
    if ((rc = model_set_decode_type(m, (KernType)a.decode_weights))) goto out;
    run.m = m;
    run.tok = tok;
    run.bpe = bpe;
    if ((rc = scorer_register_builtins(reg, NULL))) goto out;
    SandboxScorerConfig sc = {.sandbox = SANDBOX_DEFAULTS, .is_all_or_nothing = false};
    sc.sandbox.workers = a.code_workers;
    int max_prompt = model_config(m)->max_seq_len - 1;
    if ((rc = load_items(&a, tok, bpe, reg, max_prompt, &items, &n_items))) goto out;
    bool need_code = false;
    for (int i = 0; i < n_items; i++) need_code |= items[i].is_code;
    if (need_code) {
        if (!(code = sandbox_scorer_new(&sc, NULL))) {
            rc = ERR_IO;
            goto out;
        }
        if ((rc = scorer_register(reg, SANDBOX_SCORER_NAME, sandbox_scorer_run, code))) goto out;
    }
    /* Every spec against the scorers that run here (the sandbox's included). */
    for (int i = 0; i < n_items && rc == 0; i++) {
        char why[300];
        if (scorer_resolve(reg, items[i].task, &items[i].spec, why, sizeof why)) {
            log_error("eval: prompt %" PRIu64 ": %s", items[i].label, why);
            rc = ERR_ARG;
        }
    }
    if (rc) goto out;
    log_info("eval: %d prompts x %d samples, temperature %g, top-p %g, max-new %d, %d stop "
             "strings",
             n_items, a.n, (double)a.sampler.temperature, (double)a.sampler.top_p, a.max_new,
             run.n_stops);
    if ((rc = run_items(&run, items, n_items, &wall)) == 0) rc = report(&a, items, n_items, wall);
out:
    for (int i = 0; i < n_items; i++) item_free(&items[i]);
    free(items);
    sandbox_scorer_free(&code);
    scorer_registry_free(&reg);
    model_free(&m);
    tok_free(&tok);
    bpe_free(&bpe);
    return rc ? PROG_EXIT_FAIL : PROG_EXIT_OK;
}
