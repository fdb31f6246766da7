/* rlhf-bon: best-of-n (rejection sampling) on the built-in arithmetic task
 * (a char checkpoint, --policy; judge gold_arith) or on the chat arithmetic
 * task (a GGUF chat model, --model, its chat template; judge gold_chat).
 * For each prompt, samples n completions from a policy, scores them with a
 * reward model (reward_server/bon.h) and keeps the best; writes the kept
 * completions as an SFT dataset ({"prompt", "completion"} a line, what
 * rlhf-sft --data trains on, with the figures in "meta") and a summary: the
 * best-of-k curve for k = 1, 2, 4, ... n, each pick (by the reward model)
 * measured by the hidden gold judge (common/tasks/gold.h), beside the
 * oracle's pick (by gold) and the mean over all samples; each k's gain over
 * best-of-1 has a paired standard error (the same prompts and samples). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/log.h"
#include "common/base/prog.h"
#include "common/base/progress.h"
#include "common/formats/policy.h"
#include "common/nn/kern.h"
#include "common/tasks/chat_task.h"
#include "common/tasks/gold.h"
#include "common/tasks/task.h"
#include "reward_server/bon.h"

typedef struct {
    const char *policy, *model, *rm, *out, *summary;
    int         n, prompts, max_new, max_digits, decode_weights;
    float       temperature;
    bool        held_out;
    uint64_t    seed;
} BonArgs;

enum { CURVE_MAX = 11 };  /* k = 1, 2, 4, ... 1024 */
enum { TEXT_CAP = 4096 }; /* bytes of a completion's text kept, NUL included */

typedef struct { /* sums over prompts for one k */
    int    k;
    double gold, gold2, rm, oracle;
    double gain, gain2; /* of the pick's gold over best-of-1's, on the same prompt */
} CurvePoint;

static int check(const FlagsSpec *spec, void *ctx)
{
    (void)spec;
    const BonArgs *a = ctx;
    if (!a->policy == !a->model || !a->rm) {
        fprintf(stderr, "rlhf-bon: one policy (--policy DIR or --model FILE.gguf) and "
                        "--reward-model DIR are required\n");
        return ERR_ARG;
    }
    if (!(a->temperature > 0)) {
        fprintf(stderr, "rlhf-bon: --temperature %g: best-of-n needs sampling, expected > 0\n",
                (double)a->temperature);
        return ERR_ARG;
    }
    return 0;
}

/* The completion's text (the stop token dropped); "" for one that did not
 * stop or does not fit (not an answer: gold -1). */
static void text_of(const Tok *tok, const Bpe *bpe, const BonSamples *s, int i, char *out,
                    size_t cap)
{
    size_t     n = 0;
    bool       ok = s->stopped[i];
    const int *ids = s->tokens + (size_t)i * s->max_new;
    if (bpe && ok) { /* the stop token is a control id: bpe_decode skips it */
        ok = bpe_decode_max_bytes(bpe, s->n_tokens[i]) <= cap &&
             bpe_decode(bpe, ids, s->n_tokens[i], 0, out, cap, &n) == 0 && strlen(out) == n;
    }
    for (int t = 0; !bpe && t < s->n_tokens[i] && ok; t++) {
        char c = tok_char(tok, ids[t]);
        if (!c) continue; /* the stop token */
        if (n + 1 >= cap)
            ok = false;
        else
            out[n++] = c;
    }
    out[ok ? n : 0] = '\0';
}

/* Problem i of the task as the policy sees it: its prompt text (for the
 * dataset), answer and ids. */
static void problem_of(const BonArgs *a, const Tok *tok, const Bpe *bpe, uint64_t i, char *prompt,
                       char *answer, int *ids, int cap, int *n_ids)
{
    TaskConfig tc = bpe ? CHAT_TASK_DEFAULTS : TASK_DEFAULTS;
    if (a->max_digits) tc.max_digits = a->max_digits;
    if (bpe) {
        ChatTaskProblem p;
        chat_task_problem(&tc, a->seed, i, a->held_out, &p);
        snprintf(prompt, CHAT_TASK_TEXT_MAX, "%s", p.question);
        snprintf(answer, CHAT_TASK_TEXT_MAX, "%s", p.answer);
        CHECK(chat_task_prompt_ids(bpe, p.question, ids, cap, n_ids) == 0);
    } else {
        TaskProblem p;
        task_problem(&tc, a->seed, i, a->held_out, &p);
        snprintf(prompt, CHAT_TASK_TEXT_MAX, "%s", p.prompt);
        snprintf(answer, CHAT_TASK_TEXT_MAX, "%s", p.answer);
        CHECK(tok_encode(tok, p.prompt, strlen(p.prompt), TOK_ENC_BOS, ids, cap, n_ids) == 0);
    }
}

static int run(const BonArgs *a, Model *policy, const Tok *tok, const Bpe *bpe, RmScorer *rm)
{
    BonConfig bc = {.n = a->n,
                    .temperature = a->temperature,
                    .max_new = a->max_new ? a->max_new : (bpe ? 32 : 8),
                    .stop_id = bpe ? bpe_eot_id(bpe) : TOK_EOS};
    Bon      *b = bon_new(policy, rm, &bc);
    if (!b) return ERR_ARG;
    CurvePoint cv[CURVE_MAX];
    int        ncv = 0;
    for (int k = 1; k <= a->n && ncv < CURVE_MAX; k *= 2) cv[ncv++] = (CurvePoint){.k = k};
    if (cv[ncv - 1].k != a->n && ncv < CURVE_MAX) cv[ncv++] = (CurvePoint){.k = a->n};
    Rng rng;
    rng_seed(&rng, a->seed ^ 0x5eedb0b0ull);
    char(*texts)[TEXT_CAP] = xmalloc(sizeof *texts * (size_t)a->n);
    double  *gold = xmalloc(sizeof(double) * (size_t)a->n);
    bool    *any = xmalloc(sizeof(bool) * (size_t)a->n);
    char    *buf = NULL;
    size_t   len = 0, cap = 0;
    double   gold_all = 0;
    int      kept = 0, none = 0, rc = 0, done = 0;
    Progress pr;
    progress_start(&pr, "bon", "prompt", a->prompts);
    for (; done < a->prompts && rc == 0; done++) {
        struct {
            char prompt[CHAT_TASK_TEXT_MAX], answer[CHAT_TASK_TEXT_MAX];
        } p;
        int ids[CHAT_TASK_PROMPT_MAX_IDS], n_ids = 0;
        problem_of(a, tok, bpe, (uint64_t)done, p.prompt, p.answer, ids, CHAT_TASK_PROMPT_MAX_IDS,
                   &n_ids);
        if ((rc = bon_run(b, ids, n_ids, &rng))) break;
        const BonSamples *s = bon_samples(b);
        for (int i = 0; i < a->n; i++) {
            text_of(tok, bpe, s, i, texts[i], TEXT_CAP);
            gold[i] = bpe ? gold_chat(texts[i], p.answer) : gold_arith(texts[i], p.answer);
            gold_all += gold[i] / a->n;
            any[i] = true;
        }
        double g1 = 0;
        for (int c = 0; c < ncv; c++) {
            int    k = cv[c].k, pick = bon_argmax(s->score, s->stopped, k);
            double g = pick >= 0 ? gold[pick] : -1.0; /* none stopped: no answer */
            if (c == 0) g1 = g;
            cv[c].gold += g;
            cv[c].gold2 += g * g;
            cv[c].gain += g - g1;
            cv[c].gain2 += (g - g1) * (g - g1);
            cv[c].rm += s->score[pick >= 0 ? pick : 0];
            cv[c].oracle += gold[bon_argmax(gold, any, k)];
        }
        if (s->best < 0) {
            none++;
        } else if (a->out) {
            int     i = s->best;
            json_t *o = json_pack("{s:s, s:s, s:{s:s, s:f, s:f, s:i}}", "prompt", p.prompt,
                                  "completion", texts[i], "meta", "answer", p.answer, "score",
                                  s->score[i], "gold", gold[i], "n", a->n);
            char   *line = json_dumps(o, JSON_COMPACT);
            size_t  nl = strlen(line);
            if (len + nl + 2 > cap) buf = xrealloc(buf, cap = 2 * (len + nl + 2));
            memcpy(buf + len, line, nl);
            len += nl;
            buf[len++] = '\n';
            free(line);
            json_decref(o);
            kept++;
        }
        char extra[96];
        snprintf(extra, sizeof extra, "gold best-of-%d %.3f", a->n, cv[ncv - 1].gold / (done + 1));
        progress_update(&pr, done + 1, extra, done + 1 == a->prompts);
    }
    progress_end(&pr);
    if (rc == 0 && a->out) {
        /* Nothing kept (every prompt's samples ran out of room) is still a
         * file: an empty one, and the count says why. */
        if ((rc = fileio_write_atomic(a->out, buf ? buf : "", len)))
            log_error("writing '%s': %s", a->out, err_str(rc));
    }
    if (rc == 0) {
        int     P = a->prompts;
        json_t *curve = json_array();
        for (int c = 0; c < ncv; c++) {
            double m = cv[c].gold / P, var = P > 1 ? (cv[c].gold2 - P * m * m) / (P - 1) : 0;
            double d = cv[c].gain / P, dv = P > 1 ? (cv[c].gain2 - P * d * d) / (P - 1) : 0;
            json_array_append_new(curve, json_pack("{s:i, s:f, s:f, s:f, s:f, s:f, s:f}", "n",
                                                   cv[c].k, "gold", m, "gold_se",
                                                   sqrt(var > 0 ? var / P : 0), "gain_vs_1", d,
                                                   "gain_vs_1_se", sqrt(dv > 0 ? dv / P : 0), "rm",
                                                   cv[c].rm / P, "gold_oracle", cv[c].oracle / P));
            log_info("best-of-%d: gold %.4f (oracle %.4f), reward model %+.3f", cv[c].k, m,
                     cv[c].oracle / P, cv[c].rm / P);
        }
        json_t *j =
            json_pack("{s:s, s:s, s:i, s:i, s:s, s:f, s:f, s:i, s:i, s:o, s:s?}", "policy",
                      a->policy ? a->policy : a->model, "reward_model", a->rm, "n", a->n, "prompts",
                      P, "split", a->held_out ? "held_out" : "train", "temperature",
                      (double)a->temperature, "gold_mean_sample", gold_all / P, "kept", kept,
                      "no_stopped_sample", none, "curve", curve, "out", a->out);
        char *txt = json_dumps(j, JSON_INDENT(1));
        puts(txt);
        if (a->summary) {
            size_t n = strlen(txt);
            txt = xrealloc(txt, n + 2);
            txt[n] = '\n';
            txt[n + 1] = '\0';
            if ((rc = fileio_write_atomic(a->summary, txt, n + 1)))
                log_error("writing '%s': %s", a->summary, err_str(rc));
        }
        free(txt);
        json_decref(j);
    }
    free(buf);
    free(any);
    free(gold);
    free(texts);
    bon_free(&b);
    return rc;
}

int main(int argc, char **argv)
{
    BonArgs a = {.n = 16,
                 .prompts = 500,
                 .max_new = 0,
                 .max_digits = 0,
                 .decode_weights = KERN_F32,
                 .temperature = 1.0f,
                 .held_out = false,
                 .seed = 1};
    Flag    flags[] = {
           FLAG_PATH("policy", &a.policy, "DIR",
                     "the policy to sample from: a checkpoint of the built-in\n"
                        "arithmetic task (judge gold_arith)",
                     .def = "none"),
           FLAG_PATH("model", &a.model, "FILE.gguf",
                     "or a chat model: the chat arithmetic task, its chat\n"
                        "template (judge gold_chat)",
                     .def = "none"),
           FLAG_PATH("reward-model", &a.rm, "DIR", "the reward model that picks (rlhf-rm's output)",
                     .def = "(required)"),
           FLAG_INT("n", &a.n, 1, BON_MAX_N, "N", "completions sampled per prompt"),
           FLAG_INT("prompts", &a.prompts, 1, 10000000, "N", "prompts of the arithmetic task"),
           FLAG_BOOL("held-out", &a.held_out,
                     "prompts from the task's held-out split (to measure),\n"
                        "not its training split (to make a dataset)"),
           FLAG_FLOAT("temperature", &a.temperature, 0, 100, "T", "sampling temperature"),
           FLAG_INT("max-new", &a.max_new, 0, 1024, "N",
                    "tokens per completion at most, the end token included;\n"
                       "0 = 8 for the char task, 32 for the chat task"),
           FLAG_INT("max-digits", &a.max_digits, 0, 6, "D",
                    "operand digits of the task; 0 = 3 for the char task, 2\n"
                       "for the chat task"),
           FLAG_CHOICE("decode-weights", &a.decode_weights, kern_type_names, "T",
                       "precision sampling decodes in: fp32, bf16, fp16"),
           FLAG_U64("seed", &a.seed, "S", "problems and sampling"),
           FLAG_PATH("out", &a.out, "FILE.jsonl",
                     "the kept completions, {\"prompt\", \"completion\", \"meta\"}\n"
                        "a line: an SFT dataset for rlhf-sft --data",
                     .def = "none"),
           FLAG_PATH("summary", &a.summary, "FILE", "also write the JSON summary here",
                     .def = "stdout only"),
           FLAGS_END,
    };
    FlagsSpec spec = {
        .prog = "rlhf-bon",
        .synopsis = "(--policy DIR | --model FILE.gguf) --reward-model DIR [flags]",
        .about = "Best-of-n (rejection sampling): samples n completions per prompt of the\n"
                 "arithmetic task from a policy, keeps the one the reward model scores best,\n"
                 "and reports the gold reward of best-of-k for k = 1, 2, 4, ... n.\n",
        .flags = flags,
        .check = check,
        .check_ctx = &a,
    };
    int rc = prog_start(&spec, argc, argv, "bon", NULL);
    if (rc != PROG_RUN) return rc;
    /* One of --policy and --model (check): a GGUF is the chat task's policy. */
    PolicySpec ps = {
        .ckpt = a.policy, .model = a.model, .need_chat = true, .ckpt_flag = "--policy"};
    Policy pol;
    if ((rc = policy_load(&ps, &pol)) == 0)
        rc = model_set_decode_type(pol.m, (KernType)a.decode_weights);
    if (rc == 0) {
        RmScorerConfig sc = {.dir = a.rm,
                             .max_tokens = RM_DEFAULT_MAX_TOKENS,
                             .streams = 1,
                             .tok = pol.tok,
                             .bpe = pol.bpe};
        RmScorer      *rm = rm_scorer_new(&sc);
        rc = rm ? run(&a, pol.m, pol.tok, pol.bpe, rm) : ERR_ARG;
        rm_scorer_free(&rm);
    }
    policy_free(&pol);
    return rc ? PROG_EXIT_FAIL : PROG_EXIT_OK;
}
