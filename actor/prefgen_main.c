/* rlhf-prefgen: the built-in preference tasks. Samples completions of an
 * arithmetic task from a policy and has a hidden gold judge
 * (common/tasks/gold.h) label them through a noisy Bradley-Terry coin, as
 * annotators who disagree would. The policy is the char model's SFT warm
 * start (--ckpt, the arithmetic task, judge gold_arith) or a chat model
 * (--model FILE.gguf, the chat arithmetic task worded as a question and
 * rendered with its chat template, judge gold_chat: right arithmetic in a
 * one-line answer). Writes, into --out:
 *
 *   train.jsonl   {"prompt","chosen","rejected","meta":{...}} pairs to train
 *                 a reward model or DPO on (train split of the task); with
 *                 --form rankings, {"prompt","completions","ranking",
 *                 "meta"}: each train prompt's distinct samples (distinct
 *                 in text and in gold reward) ranked by the same labeller
 *                 (gold_rank), and the pairs that --form pairs would have
 *                 written go to train-pairs.jsonl
 *   eval.jsonl    held-out pairs (the task's evaluation split), same labeller
 *   ref.jsonl     {"prompt","completion"}: the policy's own samples on train
 *                 prompts, the reference completions a reward model's scores
 *                 are centred on
 *   labeller.json tau, the flip rate asked for and the one drawn, and the
 *                 labeller's ceiling: the best held-out pair accuracy any
 *                 reward model can expect (1 - the mean flip chance)
 *
 * A prompt is the char task's text ("37+45=") or the chat task's question
 * (a user message; trainers given the GGUF render it with its template).
 * Each record's meta carries the answer and the gold rewards, so that what
 * a learned reward agrees with can be checked against the judge; trainers
 * must not read it. A pair is two completions that differ in text and in
 * gold reward (a tie gives an annotator nothing to choose), each ended by
 * the policy itself (one cut by the length cap is not an answer to show);
 * prompts whose K samples hold no such pair are counted and skipped.
 * Sampling is common/tasks/eval's: sample j of prompt i draws from its own
 * stream of (seed, i, j). */
#include <errno.h>
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
#include "common/formats/policy.h"
#include "common/formats/tok.h"
#include "common/nn/gen.h"
#include "common/nn/kern.h"
#include "common/nn/model.h"
#include "common/tasks/chat_task.h"
#include "common/tasks/eval.h"
#include "common/tasks/gold.h"
#include "common/tasks/prefs_data.h"
#include "common/tasks/task.h"

typedef struct {
    const char *ckpt;           /* the char policy the pairs are sampled from */
    const char *model;          /* or a chat model (GGUF) */
    const char *out;            /* output directory */
    int         pairs;          /* train pairs */
    int         eval_pairs;     /* held-out pairs */
    int         refs;           /* reference completions */
    int         k;              /* samples per prompt a pair is picked from */
    float       temperature;    /* sampling temperature */
    int         max_new;        /* tokens per completion at most, EOS included; 0 = the task's */
    double      flip;           /* share of labels against the gold order */
    uint64_t    seed;           /* problems, sampling and the coin */
    int         max_digits;     /* the task's operand digits; 0 = the task's */
    int         pick;           /* which pair of the k samples: k_picks[pick] */
    int         form;           /* train records: k_forms[form] */
    int         batch;          /* sequences decoded together */
    int         decode_weights; /* KernType */
} PrefArgs;

static const char *const k_picks[] = {"first", "widest", NULL};
static const char *const k_forms[] = {"pairs", "rankings", NULL};

static const PrefArgs k_defaults = {
    .ckpt = NULL,
    .model = NULL,
    .out = NULL,
    .pairs = 4000,
    .eval_pairs = 500,
    .refs = 1000,
    .k = 4,
    .temperature = 1.0f,
    .max_new = 0,
    .flip = GOLD_FLIP_DEFAULT,
    .seed = 3000,
    .max_digits = 0,
    .pick = 0,
    .form = 0,
    .batch = 64,
    .decode_weights = KERN_F32,
};

/* A prompt's completions with their gold rewards: a pair (n = 2, in
 * sampling order, unlabelled), a ranking's distinct samples, or a
 * reference (n = 1). Strings are owned. */
typedef struct {
    char  *prompt, *answer;
    int    n;
    char  *t[PREFS_MAX_K];
    double g[PREFS_MAX_K];
} Item;

static void item_free(Item *it)
{
    free(it->prompt);
    free(it->answer);
    for (int i = 0; i < it->n; i++) free(it->t[i]);
    memset(it, 0, sizeof *it);
}

static void item_set(Item *it, const EvalPrompt *p)
{
    it->prompt = xstrdup(p->prompt);
    it->answer = xstrdup(p->answer);
    it->n = 0;
}

static void item_add(Item *it, const char *text, double g)
{
    it->t[it->n] = xstrdup(text);
    it->g[it->n++] = g;
}

static int check(const FlagsSpec *spec, void *ctx)
{
    (void)spec;
    PrefArgs *a = ctx;
    if (!a->out || (!a->ckpt == !a->model)) {
        fprintf(stderr, "rlhf-prefgen: --out DIR and one policy, --ckpt DIR or --model "
                        "FILE.gguf, are required\n");
        return ERR_ARG;
    }
    if (!(a->flip > 0 && a->flip < 0.5)) {
        fprintf(stderr, "rlhf-prefgen: --flip %g: expected a share in (0, 0.5)\n", a->flip);
        return ERR_ARG;
    }
    if (!(a->temperature > 0)) {
        fprintf(stderr, "rlhf-prefgen: --temperature %g: pairs need sampling, expected > 0\n",
                a->temperature);
        return ERR_ARG;
    }
    return 0;
}

/* What one pass over a split collects. */
typedef struct {
    const PrefArgs *a;
    Item           *pairs;  /* want */
    Item           *ranked; /* want, or NULL */
    Item           *refs;   /* nrefs, or NULL */
    int             want, nrefs, got, nref;
    int             tried, skipped, cut; /* prompts; prompts without a pair; samples cut */
    Progress        pr;
} Collect;

/* The judge's gold reward of a sample that ended by itself, in double
 * (the sample's reward is the same, rounded to a float). */
static double judge(const PrefArgs *a, const EvalPrompt *p, int j)
{
    const char *t = p->samples[j].text;
    return a->model ? gold_chat(t, p->answer) : gold_arith(t, p->answer);
}

static bool usable(const EvalSample *s)
{
    return s->finish == GEN_FINISH_STOP && s->is_scored;
}

/* Picks a pair of a prompt's samples that ended by themselves and differ
 * in text and in gold reward; false when there is none. With widest false,
 * the first such pair in sampling order: the pairs keep the policy's own
 * mix of easy and hard choices. With widest, the pair with the largest gold
 * gap (the first on a tie), as a labelling budget spent on the comparisons
 * that say the most would be: fewer near-misses whose label is close to a
 * coin flip. The labeller's tau and ceiling are calibrated on whichever
 * pairs are made. */
static bool pick_pair(const PrefArgs *a, const EvalPrompt *p, Item *out)
{
    const EvalSample *s = p->samples;
    double            best = 0, g[PREFS_MAX_K];
    int               bx = -1, by = -1, k = p->n_samples;
    bool              widest = a->pick == 1;
    for (int x = 0; x < k; x++) g[x] = usable(&s[x]) ? judge(a, p, x) : 0;
    for (int x = 0; x < k && (widest || bx < 0); x++) {
        if (!usable(&s[x])) continue;
        for (int y = x + 1; y < k && (widest || bx < 0); y++) {
            if (!usable(&s[y]) || !strcmp(s[x].text, s[y].text)) continue;
            double gap = fabs(g[x] - g[y]);
            if (gap < 1e-6 || gap <= best) continue;
            best = gap;
            bx = x;
            by = y;
        }
    }
    if (bx < 0) return false;
    item_set(out, p);
    item_add(out, s[bx].text, g[bx]);
    item_add(out, s[by].text, g[by]);
    return true;
}

/* A prompt's samples that ended by themselves and differ from every
 * earlier one in text and in gold reward, in sampling order. */
static void distinct(const PrefArgs *a, const EvalPrompt *p, Item *out)
{
    item_set(out, p);
    for (int x = 0; x < p->n_samples && out->n < PREFS_MAX_K; x++) {
        const EvalSample *s = &p->samples[x];
        if (!usable(s)) continue;
        double g = judge(a, p, x);
        bool   seen = false;
        for (int y = 0; y < out->n && !seen; y++)
            seen = !strcmp(out->t[y], s->text) || fabs(out->g[y] - g) < 1e-6;
        if (!seen) item_add(out, s->text, g);
    }
}

/* eval_run's callback: one prompt's k samples, scored by the judge. */
static int on_prompt(void *ctx, const EvalPrompt *p)
{
    Collect *c = ctx;
    c->tried++;
    for (int j = 0; j < p->n_samples; j++) c->cut += p->samples[j].finish != GEN_FINISH_STOP;
    if (c->refs && c->nref < c->nrefs) {
        for (int j = 0; j < p->n_samples; j++) {
            if (!usable(&p->samples[j])) continue;
            Item *r = &c->refs[c->nref++];
            item_set(r, p);
            item_add(r, p->samples[j].text, judge(c->a, p, j));
            break;
        }
    }
    if (c->got < c->want) {
        if (pick_pair(c->a, p, &c->pairs[c->got])) {
            if (c->ranked) distinct(c->a, p, &c->ranked[c->got]);
            c->got++;
        } else {
            c->skipped++;
        }
        progress_update(&c->pr, c->got, NULL, false);
    }
    return c->got >= c->want && (!c->refs || c->nref >= c->nrefs) ? 1 : 0;
}

/* Collects c->want pairs (and refs) from one split of the task. */
static int collect(Model *m, const Tok *tok, const Bpe *bpe, bool train, Collect *c,
                   const char *label)
{
    const PrefArgs *a = c->a;
    TaskConfig      tc = bpe ? CHAT_TASK_DEFAULTS : TASK_DEFAULTS;
    if (a->max_digits) tc.max_digits = a->max_digits;
    ScoreSpec spec;
    char      why[256];
    CHECK(score_spec_parse(bpe ? "gold_chat" : "gold_arith", score_builtin, NULL, &spec, why,
                           sizeof why) == 0);
    uint64_t   limit = 50 * (uint64_t)(c->want + c->nrefs) + 1000;
    EvalSource src = {.kind = bpe ? EVAL_SRC_CHAT : EVAL_SRC_ARITH,
                      .task = &tc,
                      .task_seed = a->seed,
                      .is_train = train,
                      .n = limit};
    EvalConfig ec = {.n_samples = a->k,
                     .sampler = {.temperature = a->temperature, .top_k = 0, .top_p = 1.0f},
                     .max_new = a->max_new ? a->max_new : (bpe ? 32 : 8),
                     .batch = a->batch,
                     .seed = a->seed ^ (train ? 0x7261696eull : 0x6576616cull),
                     .spec = &spec,
                     .score_threads = 1,
                     .is_keep_text = true};
    progress_start(&c->pr, label, "pair", c->want);
    int rc = c->want > 0 || c->nrefs > 0 ? eval_run(m, tok, bpe, &src, &ec, on_prompt, c, NULL) : 1;
    progress_update(&c->pr, c->got, NULL, true);
    progress_end(&c->pr);
    if (rc < 0) return rc;
    if (c->got < c->want) {
        log_error("%s: %d prompts gave only %d of %d pairs: the policy in '%s' rarely "
                  "samples two completions the judge tells apart (try a higher "
                  "--temperature, --k or --max-new)",
                  label, c->tried, c->got, c->want, a->ckpt ? a->ckpt : a->model);
        return ERR_RANGE;
    }
    return 0;
}

/* Appends one JSON object and a newline to buf (growing it). */
static void append_line(char **buf, size_t *len, size_t *cap, json_t *obj)
{
    char  *line = json_dumps(obj, JSON_COMPACT);
    size_t n = strlen(line);
    if (*len + n + 2 > *cap) {
        *cap = (*len + n + 2) * 2;
        *buf = xrealloc(*buf, *cap);
    }
    memcpy(*buf + *len, line, n);
    *len += n;
    (*buf)[(*len)++] = '\n';
    free(line);
    json_decref(obj);
}

static int write_buf(const char *path, char *buf, size_t len)
{
    int rc = fileio_write_atomic(path, buf ? buf : "", len);
    if (rc) log_error("writing '%s': %s", path, err_str(rc));
    free(buf);
    return rc;
}

/* Labels pairs with the coin and writes them to path; returns the share of
 * labels drawn against the gold order (flipped). */
static int write_pairs(const char *path, const Item *pairs, int n, double tau, Rng *coin,
                       double *flipped)
{
    char  *buf = NULL;
    size_t len = 0, cap = 0;
    int    against = 0;
    for (int i = 0; i < n; i++) {
        const Item *p = &pairs[i];
        int         first = gold_label(p->g[0], p->g[1], tau, rng_uniform(coin));
        const char *ch = p->t[first ? 0 : 1], *rj = p->t[first ? 1 : 0];
        double      gc = p->g[first ? 0 : 1], gr = p->g[first ? 1 : 0];
        if (gc < gr) against++;
        json_t *meta = json_pack("{s:s, s:f, s:f, s:f}", "answer", p->answer, "gold_chosen", gc,
                                 "gold_rejected", gr, "p_chosen", gold_prefer_prob(gc, gr, tau));
        append_line(&buf, &len, &cap,
                    json_pack("{s:s, s:s, s:s, s:o}", "prompt", p->prompt, "chosen", ch, "rejected",
                              rj, "meta", meta));
    }
    *flipped = n ? (double)against / n : 0.0;
    return write_buf(path, buf, len);
}

/* Ranks each prompt's distinct samples with the labeller (gold_rank, its
 * own Rng) and writes them to path; returns, over every pair of every
 * ranking, the share ordered against the gold order (flipped), the
 * labeller's ceiling on them and their number. */
static int write_rankings(const char *path, const Item *rk, int n, double tau, Rng *coin,
                          double *flipped, double *ceiling, long *npairs)
{
    char  *buf = NULL;
    size_t len = 0, cap = 0;
    long   against = 0, pairs = 0;
    double agree = 0;
    for (int i = 0; i < n; i++) {
        const Item *r = &rk[i];
        double      u[PREFS_MAX_K];
        int         order[PREFS_MAX_K];
        for (int j = 0; j < r->n; j++) u[j] = rng_uniform(coin);
        gold_rank(r->g, u, r->n, tau, order);
        json_t *cs = json_array(), *rank = json_array(), *golds = json_array();
        for (int j = 0; j < r->n; j++) {
            json_array_append_new(cs, json_string(r->t[j]));
            json_array_append_new(rank, json_integer(order[j]));
            json_array_append_new(golds, json_real(r->g[j]));
            for (int l = j + 1; l < r->n; l++) {
                double dg = r->g[order[j]] - r->g[order[l]];
                against += dg < 0;
                agree += 1.0 - gold_mean_flip(&dg, 1, tau);
                pairs++;
            }
        }
        append_line(&buf, &len, &cap,
                    json_pack("{s:s, s:o, s:o, s:{s:s, s:o}}", "prompt", r->prompt, "completions",
                              cs, "ranking", rank, "meta", "answer", r->answer, "gold", golds));
    }
    *flipped = pairs ? (double)against / (double)pairs : 0.0;
    *ceiling = pairs ? agree / (double)pairs : 0.0;
    *npairs = pairs;
    return write_buf(path, buf, len);
}

static int write_refs(const char *path, const Item *refs, int n)
{
    char  *buf = NULL;
    size_t len = 0, cap = 0;
    for (int i = 0; i < n; i++)
        append_line(&buf, &len, &cap,
                    json_pack("{s:s, s:s, s:{s:s, s:f}}", "prompt", refs[i].prompt, "completion",
                              refs[i].t[0], "meta", "answer", refs[i].answer, "gold",
                              refs[i].g[0]));
    return write_buf(path, buf, len);
}

static double *gaps(const Item *p, int n)
{
    double *dg = xmalloc(sizeof(double) * (size_t)(n ? n : 1));
    for (int i = 0; i < n; i++) dg[i] = p[i].g[0] - p[i].g[1];
    return dg;
}

static void items_free(Item *it, int n)
{
    for (int i = 0; it && i < n; i++) item_free(&it[i]);
    free(it);
}

static int write_labeller(const PrefArgs *a, const Collect *t, const Collect *e, double tau,
                          double flip_t, double flip_e, double ceil_t, double ceil_e,
                          long ranked_pairs)
{
    double gold_ref = 0;
    for (int i = 0; i < t->nref; i++) gold_ref += t->refs[i].g[0];
    if (t->nref) gold_ref /= t->nref;
    json_t *j = json_pack(
        "{s:s, s:s, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:{s:i, s:i, s:i, s:i}, "
        "s:{s:i, s:i, s:i, s:i}, s:i, s:i, s:f, s:I, s:s, s:s, s:I}",
        "policy", a->ckpt ? a->ckpt : a->model, "judge", a->model ? "gold_chat" : "gold_arith",
        "tau", tau, "flip_target", a->flip, "flip_drawn_train", flip_t, "flip_drawn_eval", flip_e,
        "ceiling_train", ceil_t, "ceiling_eval", ceil_e, "gold_mean_policy", gold_ref, "train",
        "pairs", t->got, "prompts", t->tried, "skipped", t->skipped, "cut", t->cut, "eval", "pairs",
        e->got, "prompts", e->tried, "skipped", e->skipped, "cut", e->cut, "k", a->k, "refs",
        t->nref, "temperature", (double)a->temperature, "seed", (json_int_t)a->seed, "pick",
        k_picks[a->pick], "form", k_forms[a->form], "ranked_pairs", (json_int_t)ranked_pairs);
    char *txt = json_dumps(j, JSON_INDENT(2));
    char  path[4096];
    snprintf(path, sizeof path, "%s/labeller.json", a->out);
    size_t n = strlen(txt);
    txt = xrealloc(txt, n + 2);
    txt[n] = '\n';
    txt[n + 1] = '\0';
    fputs(txt, stdout);
    int rc = write_buf(path, txt, n + 1);
    json_decref(j);
    log_info("labeller: tau %.4f, %.1f%% of labels against the judge (asked %.0f%%); "
             "held-out ceiling %.4f; the policy's mean gold reward %.4f",
             tau, 100 * flip_t, 100 * a->flip, ceil_e, gold_ref);
    return rc;
}

static int run(const PrefArgs *a, Model *m, const Tok *tok, const Bpe *bpe)
{
    if (mkdir(a->out, 0755) != 0 && errno != EEXIST) {
        log_error("--out '%s': %s", a->out, strerror(errno));
        return ERR_IO;
    }
    Collect t = {.a = a, .want = a->pairs, .nrefs = a->refs};
    Collect e = {.a = a, .want = a->eval_pairs};
    t.pairs = xcalloc((size_t)a->pairs, sizeof(Item));
    t.ranked = a->form == 1 ? xcalloc((size_t)a->pairs, sizeof(Item)) : NULL;
    t.refs = xcalloc((size_t)(a->refs ? a->refs : 1), sizeof(Item));
    e.pairs = xcalloc((size_t)(a->eval_pairs ? a->eval_pairs : 1), sizeof(Item));
    int rc = collect(m, tok, bpe, true, &t, "train");
    if (rc == 0) rc = collect(m, tok, bpe, false, &e, "eval");
    double *dg_t = gaps(t.pairs, t.got), *dg_e = gaps(e.pairs, e.got);
    double  tau = 0, flip_t = 0, flip_e = 0;
    if (rc == 0) {
        tau = gold_calibrate_tau(dg_t, (size_t)t.got, a->flip);
        if (tau <= 0) {
            log_error("no labeller temperature gives a flip rate of %g on these pairs", a->flip);
            rc = ERR_RANGE;
        }
    }
    char path[4096];
    Rng  coin;
    rng_seed(&coin, a->seed ^ 0xc0ffee);
    /* The pairs are labelled first in either form, so that eval.jsonl's
     * labels are the same draws whichever form train.jsonl takes. */
    if (rc == 0) {
        snprintf(path, sizeof path, "%s/%s", a->out,
                 t.ranked ? "train-pairs.jsonl" : "train.jsonl");
        rc = write_pairs(path, t.pairs, t.got, tau, &coin, &flip_t);
    }
    if (rc == 0) {
        snprintf(path, sizeof path, "%s/eval.jsonl", a->out);
        rc = write_pairs(path, e.pairs, e.got, tau, &coin, &flip_e);
    }
    double ceil_t = rc == 0 ? 1.0 - gold_mean_flip(dg_t, (size_t)t.got, tau) : 0;
    double ceil_e = rc == 0 && e.got ? 1.0 - gold_mean_flip(dg_e, (size_t)e.got, tau) : 0;
    long   ranked_pairs = 0;
    if (rc == 0 && t.ranked) {
        Rng rcoin;
        rng_seed(&rcoin, a->seed ^ 0x7a4bull);
        snprintf(path, sizeof path, "%s/train.jsonl", a->out);
        rc = write_rankings(path, t.ranked, t.got, tau, &rcoin, &flip_t, &ceil_t, &ranked_pairs);
    }
    if (rc == 0) {
        snprintf(path, sizeof path, "%s/ref.jsonl", a->out);
        rc = write_refs(path, t.refs, t.nref);
    }
    if (rc == 0) rc = write_labeller(a, &t, &e, tau, flip_t, flip_e, ceil_t, ceil_e, ranked_pairs);
    free(dg_t);
    free(dg_e);
    items_free(t.pairs, t.got);
    items_free(t.ranked, t.got);
    items_free(t.refs, t.nref);
    items_free(e.pairs, e.got);
    return rc;
}

/* The policy: our checkpoint with its char tokenizer, or a GGUF with its
 * BPE tokenizer and chat template. */
int main(int argc, char **argv)
{
    PrefArgs a = k_defaults;
    Flag     flags[] = {
            FLAG_STRING("ckpt", &a.ckpt, "DIR",
                        "the policy to sample from: an SFT checkpoint of the\n"
                            "built-in arithmetic task (judge gold_arith)",
                        .def = "none"),
            FLAG_STRING("model", &a.model, "FILE.gguf",
                        "or a chat model: the chat arithmetic task, its chat\n"
                            "template (judge gold_chat)",
                        .def = "none"),
            FLAG_STRING("out", &a.out, "DIR",
                        "where train.jsonl, eval.jsonl, ref.jsonl and\nlabeller.json go",
                        .def = "(required)"),
            FLAG_INT("pairs", &a.pairs, 1, 10000000, "N", "train pairs"),
            FLAG_INT("eval-pairs", &a.eval_pairs, 0, 10000000, "N", "held-out pairs"),
            FLAG_INT("refs", &a.refs, 0, 10000000, "N",
                     "reference completions (the policy's own samples)"),
            FLAG_INT("k", &a.k, 2, PREFS_MAX_K, "K",
                     "samples per prompt a pair is chosen from (or ranked)"),
            FLAG_FLOAT("temperature", &a.temperature, 0, 100, "X", "sampling temperature"),
            FLAG_INT("max-new", &a.max_new, 0, 1024, "N",
                     "tokens per completion at most, the end token included;\n"
                         "0 = 8 for the char task, 32 for the chat task"),
            FLAG_DOUBLE("flip", &a.flip, 0, 1, "F",
                        "share of labels against the judge's order, in (0, 0.5)"),
            FLAG_U64("seed", &a.seed, "S", "problems, sampling and the labeller's coin"),
            FLAG_INT("max-digits", &a.max_digits, 0, 6, "D",
                     "operand digits of the task; 0 = 3 for the char task, 2\n"
                         "for the chat task"),
            FLAG_CHOICE("pick", &a.pick, k_picks, "HOW",
                        "which pair of the K samples: first (the first two the\n"
                            "judge tells apart) or widest (the largest gold gap)"),
            FLAG_CHOICE("form", &a.form, k_forms, "FORM",
                        "train.jsonl's records: pairs, or rankings of each\n"
                            "prompt's distinct samples by the same labeller (the\n"
                            "pairs then in train-pairs.jsonl; eval.jsonl is pairs)"),
            FLAG_INT("batch", &a.batch, 1, 4096, "N", "sequences decoded together"),
            FLAG_CHOICE("decode-weights", &a.decode_weights, kern_type_names, "T",
                        "precision sampling decodes in: fp32, bf16, fp16"),
            FLAGS_END,
    };
    FlagsSpec spec = {
        .prog = "rlhf-prefgen",
        .synopsis = "(--ckpt DIR | --model FILE.gguf) --out DIR [flags]",
        .about = "Makes the built-in preference tasks: pairs of completions of an arithmetic\n"
                 "task sampled from a policy, labelled by a hidden gold judge through a noisy\n"
                 "Bradley-Terry coin, so the best held-out pair accuracy is known.\n",
        .flags = flags,
        .check = check,
        .check_ctx = &a,
    };
    int rc = prog_start(&spec, argc, argv, "prefgen", NULL);
    if (rc != PROG_RUN) return rc;
    /* One of --ckpt and --model (check): a GGUF is the chat task's policy. */
    PolicySpec ps = {.ckpt = a.ckpt, .model = a.model, .need_chat = true};
    Policy     pol;
    if ((rc = policy_load(&ps, &pol)) == 0 &&
        (rc = model_set_decode_type(pol.m, (KernType)a.decode_weights)) == 0)
        rc = run(&a, pol.m, pol.tok, pol.bpe);
    policy_free(&pol);
    return rc ? PROG_EXIT_FAIL : PROG_EXIT_OK;
}
