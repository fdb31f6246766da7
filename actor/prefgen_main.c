/* rlhf-prefgen: the built-in preference task. Samples pairs of completions
 * of the arithmetic task from a policy (the SFT warm start), and has the
 * hidden gold judge (common/tasks/gold.h) label each pair through a noisy
 * Bradley-Terry coin, as annotators who disagree would. Writes, into --out:
 *
 *   train.jsonl   {"prompt","chosen","rejected","meta":{...}} pairs to train
 *                 a reward model or DPO on (train split of the task)
 *   eval.jsonl    held-out pairs (the task's evaluation split), same labeller
 *   ref.jsonl     {"prompt","completion"}: the policy's own samples on train
 *                 prompts, the reference completions a reward model's scores
 *                 are centred on
 *   labeller.json tau, the flip rate asked for and the one drawn, and the
 *                 labeller's ceiling: the best held-out pair accuracy any
 *                 reward model can expect (1 - the mean flip chance)
 *
 * Each record's meta carries the answer and both gold rewards, so that what
 * a learned reward agrees with can be checked against the judge; trainers
 * must not read it. A pair is two completions that differ in text and in
 * gold reward (a tie gives an annotator nothing to choose); prompts whose K
 * samples hold no such pair are counted and skipped. */
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
#include "common/formats/ckpt.h"
#include "common/formats/ckpt_config.h"
#include "common/formats/tok.h"
#include "common/nn/gen.h"
#include "common/nn/model.h"
#include "common/tasks/gold.h"
#include "common/tasks/task.h"

typedef struct {
    const char *ckpt;        /* the policy the pairs are sampled from */
    const char *out;         /* output directory */
    int         pairs;       /* train pairs */
    int         eval_pairs;  /* held-out pairs */
    int         refs;        /* reference completions */
    int         k;           /* samples per prompt a pair is picked from */
    float       temperature; /* sampling temperature */
    int         max_new;     /* tokens per completion at most, EOS included */
    double      flip;        /* share of labels against the gold order */
    uint64_t    seed;        /* problems, sampling and the coin */
    int         max_digits;  /* the task's operand digits */
    int         pick;        /* which pair of the k samples: k_picks[pick] */
} PrefArgs;

static const char *const k_picks[] = {"first", "widest", NULL};

static const PrefArgs k_defaults = {
    .ckpt = NULL,
    .out = NULL,
    .pairs = 4000,
    .eval_pairs = 500,
    .refs = 1000,
    .k = 4,
    .temperature = 1.0f,
    .max_new = 8,
    .flip = GOLD_FLIP_DEFAULT,
    .seed = 3000,
    .max_digits = 3,
    .pick = 0,
};

/* One candidate pair before labelling. */
typedef struct {
    TaskProblem prob;
    char        a[TASK_TEXT_MAX], b[TASK_TEXT_MAX];
    double      ga, gb;
} Pair;

typedef struct {
    Model     *m;
    const Tok *tok;
    Generator *g;
    int        batch; /* prompts per gen_run */
    int        k, max_new;
    GenConfig  gc;
    Rng        rng;
    /* per-run buffers for batch * k sequences */
    int        *prompt_ids, *plens, *toks, *ntok, *fin;
    const int **prompts;
    float      *lps, *lpf;
} Sampler;

static int check(const FlagsSpec *spec, void *ctx)
{
    (void)spec;
    PrefArgs *a = ctx;
    if (!a->ckpt || !a->out) {
        fprintf(stderr, "rlhf-prefgen: --ckpt DIR and --out DIR are required\n");
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

enum { PROMPT_CAP = TASK_TEXT_MAX + 1 };

static void sampler_init(Sampler *s, Model *m, const Tok *tok, const PrefArgs *a)
{
    memset(s, 0, sizeof *s);
    s->m = m;
    s->tok = tok;
    s->k = a->k;
    s->max_new = a->max_new;
    s->batch = 16;
    int                n = s->batch * s->k, W = a->max_new;
    const ModelConfig *mc = model_config(m);
    int max_len = PROMPT_CAP + W < mc->max_seq_len ? PROMPT_CAP + W : mc->max_seq_len;
    s->g = gen_new(m, n, max_len);
    s->gc = (GenConfig){.sampler = {.temperature = a->temperature, .top_k = 0, .top_p = 1.0f},
                        .max_new = W,
                        .stop_id = TOK_EOS};
    rng_seed(&s->rng, a->seed ^ 0x9e3779b97f4a7c15ull);
    s->prompt_ids = xmalloc(sizeof(int) * (size_t)s->batch * PROMPT_CAP);
    s->plens = xmalloc(sizeof(int) * (size_t)n);
    s->prompts = xmalloc(sizeof(int *) * (size_t)n);
    s->toks = xmalloc(sizeof(int) * (size_t)n * W);
    s->lps = xmalloc(sizeof(float) * (size_t)n * W);
    s->lpf = xmalloc(sizeof(float) * (size_t)n * W);
    s->ntok = xmalloc(sizeof(int) * (size_t)n);
    s->fin = xmalloc(sizeof(int) * (size_t)n);
}

static void sampler_free(Sampler *s)
{
    gen_free(&s->g);
    free(s->prompt_ids);
    free(s->plens);
    free(s->prompts);
    free(s->toks);
    free(s->lps);
    free(s->lpf);
    free(s->ntok);
    free(s->fin);
}

/* Samples k completions of each of np <= batch problems into texts
 * (np * k strings of TASK_TEXT_MAX bytes); a completion cut by the length
 * cap, or longer than a task text, becomes "" (not an answer: gold -1).
 * Returns 0 or gen_run's error. */
static int sample(Sampler *s, const TaskProblem *probs, int np, char (*texts)[TASK_TEXT_MAX])
{
    int W = s->max_new;
    for (int i = 0; i < np; i++) {
        int *ids = s->prompt_ids + (size_t)i * PROMPT_CAP, n_ids = 0;
        CHECK(tok_encode(s->tok, probs[i].prompt, strlen(probs[i].prompt), TOK_ENC_BOS, ids,
                         PROMPT_CAP, &n_ids) == 0);
        for (int j = 0; j < s->k; j++) {
            s->prompts[i * s->k + j] = ids;
            s->plens[i * s->k + j] = n_ids;
        }
    }
    GenOutput go = {s->toks, s->lps, s->lpf, s->ntok, s->fin};
    int       rc = gen_run(s->g, &s->gc, np * s->k, s->prompts, s->plens, &s->rng, &go);
    if (rc) return rc;
    for (int q = 0; q < np * s->k; q++) {
        const int *t = s->toks + (size_t)q * W;
        int        nc = 0;
        bool       ok = s->fin[q] == GEN_FINISH_STOP;
        for (int j = 0; j < s->ntok[q] && ok; j++) {
            char c = tok_char(s->tok, t[j]);
            if (!c) continue; /* EOS */
            if (nc + 1 >= TASK_TEXT_MAX)
                ok = false;
            else
                texts[q][nc++] = c;
        }
        texts[q][ok ? nc : 0] = '\0';
    }
    return 0;
}

/* Picks a pair of a prompt's k samples that differ in text and in gold
 * reward; false when there is none. With widest false, the first such pair
 * in sampling order: the pairs keep the policy's own mix of easy and hard
 * choices. With widest, the pair with the largest gold gap (the first on a
 * tie), as a labelling budget spent on the comparisons that say the most
 * would be: fewer near-misses whose label is close to a coin flip. The
 * labeller's tau and ceiling are calibrated on whichever pairs are made. */
static bool pick_pair(const TaskProblem *p, char (*texts)[TASK_TEXT_MAX], int k, bool widest,
                      Pair *out)
{
    double g[64], best = 0;
    int    bx = -1, by = -1;
    CHECK(k <= 64);
    for (int x = 0; x < k; x++) g[x] = gold_arith(texts[x], p->answer);
    for (int x = 0; x < k && (widest || bx < 0); x++) {
        for (int y = x + 1; y < k && (widest || bx < 0); y++) {
            if (!strcmp(texts[x], texts[y])) continue;
            double gap = fabs(g[x] - g[y]);
            if (gap < 1e-9 || gap <= best) continue;
            best = gap;
            bx = x;
            by = y;
        }
    }
    if (bx < 0) return false;
    out->prob = *p;
    snprintf(out->a, sizeof out->a, "%s", texts[bx]);
    snprintf(out->b, sizeof out->b, "%s", texts[by]);
    out->ga = g[bx];
    out->gb = g[by];
    return true;
}

/* Collects want pairs from the split (held_out), counting prompts tried and
 * skipped; refs (if non-NULL, nrefs wanted) takes each prompt's first
 * sample. */
static int collect(Sampler *s, const PrefArgs *a, bool held_out, Pair *pairs, int want, int *tried,
                   int *skipped, Pair *refs, int nrefs, const char *label)
{
    char(*texts)[TASK_TEXT_MAX] = xmalloc(sizeof *texts * (size_t)s->batch * s->k);
    TaskProblem *probs = xmalloc(sizeof *probs * (size_t)s->batch);
    TaskConfig   tc = TASK_DEFAULTS;
    tc.max_digits = a->max_digits;
    Progress pr;
    progress_start(&pr, label, "pair", want);
    int      got = 0, nref = 0, rc = 0;
    uint64_t next = 0;
    *tried = *skipped = 0;
    while (got < want || (refs && nref < nrefs)) {
        if (*tried > 50 * (want + nrefs) + 1000) {
            log_error("%s: %d prompts gave only %d of %d pairs: the policy in '%s' rarely "
                      "samples two completions the judge tells apart (try a higher "
                      "--temperature or --k)",
                      label, *tried, got, want, a->ckpt);
            rc = ERR_RANGE;
            break;
        }
        for (int i = 0; i < s->batch; i++) task_problem(&tc, a->seed, next++, held_out, &probs[i]);
        if ((rc = sample(s, probs, s->batch, texts))) break;
        for (int i = 0; i < s->batch; i++) {
            (*tried)++;
            if (refs && nref < nrefs) {
                refs[nref].prob = probs[i];
                snprintf(refs[nref].a, sizeof refs[nref].a, "%s", texts[i * s->k]);
                nref++;
            }
            if (got >= want) continue;
            if (pick_pair(&probs[i], texts + i * s->k, s->k, a->pick == 1, &pairs[got]))
                got++;
            else
                (*skipped)++;
        }
        progress_update(&pr, got, NULL, false);
    }
    progress_update(&pr, got, NULL, true);
    progress_end(&pr);
    free(probs);
    free(texts);
    return rc;
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

/* Labels pairs with the coin and writes them to path; returns the share of
 * labels drawn against the gold order (flipped). */
static int write_pairs(const char *path, const Pair *pairs, int n, double tau, Rng *coin,
                       double *flipped)
{
    char  *buf = NULL;
    size_t len = 0, cap = 0;
    int    against = 0;
    for (int i = 0; i < n; i++) {
        const Pair *p = &pairs[i];
        int         first = gold_label(p->ga, p->gb, tau, rng_uniform(coin));
        const char *ch = first ? p->a : p->b, *rj = first ? p->b : p->a;
        double      gc = first ? p->ga : p->gb, gr = first ? p->gb : p->ga;
        if (gc < gr) against++;
        json_t *meta =
            json_pack("{s:s, s:f, s:f, s:f}", "answer", p->prob.answer, "gold_chosen", gc,
                      "gold_rejected", gr, "p_chosen", gold_prefer_prob(gc, gr, tau));
        append_line(&buf, &len, &cap,
                    json_pack("{s:s, s:s, s:s, s:o}", "prompt", p->prob.prompt, "chosen", ch,
                              "rejected", rj, "meta", meta));
    }
    int rc = fileio_write_atomic(path, buf ? buf : "", len);
    if (rc) log_error("writing '%s': %s", path, err_str(rc));
    free(buf);
    *flipped = n ? (double)against / n : 0.0;
    return rc;
}

static int write_refs(const char *path, const Pair *refs, int n)
{
    char  *buf = NULL;
    size_t len = 0, cap = 0;
    for (int i = 0; i < n; i++)
        append_line(&buf, &len, &cap,
                    json_pack("{s:s, s:s, s:{s:s, s:f}}", "prompt", refs[i].prob.prompt,
                              "completion", refs[i].a, "meta", "answer", refs[i].prob.answer,
                              "gold", gold_arith(refs[i].a, refs[i].prob.answer)));
    int rc = fileio_write_atomic(path, buf ? buf : "", len);
    if (rc) log_error("writing '%s': %s", path, err_str(rc));
    free(buf);
    return rc;
}

static double *gaps(const Pair *p, int n)
{
    double *dg = xmalloc(sizeof(double) * (size_t)(n ? n : 1));
    for (int i = 0; i < n; i++) dg[i] = p[i].ga - p[i].gb;
    return dg;
}

static int run(const PrefArgs *a, Model *m, const Tok *tok)
{
    if (mkdir(a->out, 0755) != 0 && errno != EEXIST) {
        log_error("--out '%s': %s", a->out, strerror(errno));
        return ERR_IO;
    }
    Sampler s;
    sampler_init(&s, m, tok, a);
    Pair *train = xmalloc(sizeof(Pair) * (size_t)a->pairs);
    Pair *eval = xmalloc(sizeof(Pair) * (size_t)(a->eval_pairs ? a->eval_pairs : 1));
    Pair *refs = xmalloc(sizeof(Pair) * (size_t)(a->refs ? a->refs : 1));
    int   tried_t, skip_t, tried_e = 0, skip_e = 0;
    int   rc = collect(&s, a, false, train, a->pairs, &tried_t, &skip_t, refs, a->refs, "train");
    if (rc == 0 && a->eval_pairs)
        rc = collect(&s, a, true, eval, a->eval_pairs, &tried_e, &skip_e, NULL, 0, "eval");
    double *dg_t = gaps(train, a->pairs), *dg_e = gaps(eval, a->eval_pairs);
    double  tau = 0, flip_t = 0, flip_e = 0;
    if (rc == 0) {
        tau = gold_calibrate_tau(dg_t, (size_t)a->pairs, a->flip);
        if (tau <= 0) {
            log_error("no labeller temperature gives a flip rate of %g on these pairs", a->flip);
            rc = ERR_RANGE;
        }
    }
    char path[4096];
    Rng  coin;
    rng_seed(&coin, a->seed ^ 0xc0ffee);
    if (rc == 0) {
        snprintf(path, sizeof path, "%s/train.jsonl", a->out);
        rc = write_pairs(path, train, a->pairs, tau, &coin, &flip_t);
    }
    if (rc == 0) {
        snprintf(path, sizeof path, "%s/eval.jsonl", a->out);
        rc = write_pairs(path, eval, a->eval_pairs, tau, &coin, &flip_e);
    }
    if (rc == 0) {
        snprintf(path, sizeof path, "%s/ref.jsonl", a->out);
        rc = write_refs(path, refs, a->refs);
    }
    if (rc == 0) {
        double ceil_t = 1.0 - gold_mean_flip(dg_t, (size_t)a->pairs, tau);
        double ceil_e = a->eval_pairs ? 1.0 - gold_mean_flip(dg_e, (size_t)a->eval_pairs, tau) : 0;
        double gold_ref = 0;
        for (int i = 0; i < a->refs; i++) gold_ref += gold_arith(refs[i].a, refs[i].prob.answer);
        if (a->refs) gold_ref /= a->refs;
        json_t *j = json_pack(
            "{s:s, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:{s:i, s:i, s:i}, s:{s:i, s:i, s:i}, "
            "s:i, s:i, s:f, s:I, s:s}",
            "policy", a->ckpt, "tau", tau, "flip_target", a->flip, "flip_drawn_train", flip_t,
            "flip_drawn_eval", flip_e, "ceiling_train", ceil_t, "ceiling_eval", ceil_e,
            "gold_mean_policy", gold_ref, "train", "pairs", a->pairs, "prompts", tried_t, "skipped",
            skip_t, "eval", "pairs", a->eval_pairs, "prompts", tried_e, "skipped", skip_e, "k",
            a->k, "refs", a->refs, "temperature", (double)a->temperature, "seed",
            (json_int_t)a->seed, "pick", k_picks[a->pick]);
        char *txt = json_dumps(j, JSON_INDENT(2));
        snprintf(path, sizeof path, "%s/labeller.json", a->out);
        size_t n = strlen(txt);
        txt = xrealloc(txt, n + 2);
        txt[n] = '\n';
        txt[n + 1] = '\0';
        rc = fileio_write_atomic(path, txt, n + 1);
        if (rc) log_error("writing '%s': %s", path, err_str(rc));
        fputs(txt, stdout);
        free(txt);
        json_decref(j);
        log_info("labeller: tau %.4f, %.1f%% of labels against the judge (asked %.0f%%); "
                 "held-out ceiling %.4f; the policy's mean gold reward %.4f",
                 tau, 100 * flip_t, 100 * a->flip, ceil_e, gold_ref);
    }
    free(dg_t);
    free(dg_e);
    free(refs);
    free(eval);
    free(train);
    sampler_free(&s);
    return rc;
}

int main(int argc, char **argv)
{
    PrefArgs a = k_defaults;
    Flag     flags[] = {
            FLAG_STRING("ckpt", &a.ckpt, "DIR", "the policy to sample from (an SFT checkpoint)",
                        .def = "(required)"),
            FLAG_STRING("out", &a.out, "DIR",
                        "where train.jsonl, eval.jsonl, ref.jsonl and\nlabeller.json go",
                        .def = "(required)"),
            FLAG_INT("pairs", &a.pairs, 1, 10000000, "N", "train pairs"),
            FLAG_INT("eval-pairs", &a.eval_pairs, 0, 10000000, "N", "held-out pairs"),
            FLAG_INT("refs", &a.refs, 0, 10000000, "N",
                     "reference completions (the policy's own samples)"),
            FLAG_INT("k", &a.k, 2, 64, "K", "samples per prompt a pair is chosen from"),
            FLAG_FLOAT("temperature", &a.temperature, 0, 100, "X", "sampling temperature"),
            FLAG_INT("max-new", &a.max_new, 2, 64, "N", "tokens per completion at most, EOS included"),
            FLAG_DOUBLE("flip", &a.flip, 0, 1, "F",
                        "share of labels against the judge's order, in (0, 0.5)"),
            FLAG_U64("seed", &a.seed, "S", "problems, sampling and the labeller's coin"),
            FLAG_INT("max-digits", &a.max_digits, 1, 6, "D", "operand digits of the task"),
            FLAG_CHOICE("pick", &a.pick, k_picks, "HOW",
                        "which pair of the K samples: first (the first two the\n"
                            "judge tells apart) or widest (the largest gold gap)"),
            FLAGS_END,
    };
    FlagsSpec spec = {
        .prog = "rlhf-prefgen",
        .synopsis = "--ckpt DIR --out DIR [flags]",
        .about = "Makes the built-in preference task: pairs of completions of the arithmetic\n"
                 "task sampled from a policy, labelled by a hidden gold judge through a noisy\n"
                 "Bradley-Terry coin, so the best held-out pair accuracy is known.\n",
        .flags = flags,
        .check = check,
        .check_ctx = &a,
    };
    int rc = prog_start(&spec, argc, argv, "prefgen", NULL);
    if (rc != PROG_RUN) return rc;
    ModelConfig mc;
    Tok        *tok = NULL;
    Model      *m = NULL;
    if (ckpt_load_config(a.ckpt, &mc) || ckpt_load_tok(a.ckpt, &tok)) return PROG_EXIT_FAIL;
    m = model_new(&mc);
    for (int attempt = 0; attempt < 3; attempt++)
        if ((rc = ckpt_load(a.ckpt, m)) != ERR_AGAIN) break;
    if (rc == 0) rc = run(&a, m, tok);
    model_free(&m);
    tok_free(&tok);
    return rc ? PROG_EXIT_FAIL : PROG_EXIT_OK;
}
