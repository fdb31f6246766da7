/* rlhf-gen: samples completions from a checkpoint, or scores a given text
 * under it, for looking at what a policy does by hand.
 *
 *   rlhf-gen --ckpt DIR --prompt TEXT [sampling flags]   generate
 *   rlhf-gen --ckpt DIR --score TEXT [--prompt TEXT]     score
 *
 * Generation goes through gen_run, the sampling path the actors use, so the
 * reported log-probabilities are the ones an RL learner would receive (from
 * an actor decoding in the same precision: --decode-weights, fp32 here by
 * default so that generation and scoring agree exactly).
 * Scoring runs the training forward (model_forward), so its log-probs are
 * the ones the learner recomputes. Results go to stdout, logs to stderr. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/formats/policy.h"
#include "common/base/err.h"
#include "common/base/prog.h"
#include "common/nn/gen.h"
#include "common/base/log.h"
#include "common/nn/model.h"
#include "common/base/rng.h"
#include "common/nn/sampler.h"
#include "common/formats/tok.h"

typedef struct {
    const char   *ckpt;           /* checkpoint directory, required */
    const char   *prompt;         /* generation: the prompt; scoring: the conditioning prefix */
    const char   *score;          /* text to score; NULL = generate */
    int           prompt_len;     /* scoring: leading characters of score not scored, -1 = unset */
    bool          is_score_eos;   /* scoring: append EOS and score it too */
    int           n;              /* completions to generate */
    int           max_new;        /* tokens per completion at most, EOS included */
    SamplerConfig sampler;        /* temperature, top-k, top-p */
    uint64_t      seed;           /* sampling seed */
    bool          is_verbose_tok; /* print every generated token with its log-probs */
    int           decode_weights; /* KernType generation decodes in */
} GenArgs;

static const GenArgs k_defaults = {
    .ckpt = NULL,
    .prompt = NULL,
    .score = NULL,
    .prompt_len = -1,
    .is_score_eos = false,
    .n = 1,
    .max_new = 32,
    .sampler = {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f},
    .seed = 1,
    .is_verbose_tok = false,
    .decode_weights = KERN_F32,
};

/* The flags that apply to generation only. */
static const char *const k_gen_only[] = {"n",     "max-new", "temperature",    "top-k",
                                         "top-p", "seed",    "verbose-tokens", "decode-weights",
                                         NULL};

/* Validates each sampling flag on its own against the defaults, so the
 * error names the flag; the reason is sampler_config_validate's. */
static int check_sampler(const SamplerConfig *sc)
{
    SamplerConfig one[3] = {k_defaults.sampler, k_defaults.sampler, k_defaults.sampler};
    one[0].temperature = sc->temperature;
    one[1].top_k = sc->top_k;
    one[2].top_p = sc->top_p;
    static const char *flags[3] = {"temperature", "top-k", "top-p"};
    char               why[160];
    for (int i = 0; i < 3; i++) {
        if (sampler_config_validate(&one[i], why, sizeof why) == 0) continue;
        fprintf(stderr, "rlhf-gen: --%s: %s\n", flags[i], why);
        return ERR_ARG;
    }
    /* Each value is fine alone; the combination must be too. */
    if (sampler_config_validate(sc, why, sizeof why)) {
        fprintf(stderr, "rlhf-gen: sampling flags: %s\n", why);
        return ERR_ARG;
    }
    return 0;
}

/* The checks across flags: the mode's required flags, and no flag of the
 * other mode. */
static int check(const FlagsSpec *spec, void *ctx)
{
    GenArgs    *a = ctx;
    const char *gen_only = NULL; /* the first generation-only flag given */
    int         first = 0;
    for (int i = 0; k_gen_only[i]; i++) {
        int at = flags_at(spec, k_gen_only[i]);
        if (at && (!first || at < first)) {
            first = at;
            gen_only = k_gen_only[i];
        }
    }
    if (!a->ckpt) {
        fprintf(stderr, "rlhf-gen: --ckpt DIR is required\n");
        return ERR_ARG;
    }
    if (!a->score) {
        if (!a->prompt) {
            fprintf(stderr, "rlhf-gen: give --prompt TEXT to generate or --score TEXT to score\n");
            return ERR_ARG;
        }
        if (a->prompt_len >= 0 || a->is_score_eos) {
            fprintf(stderr, "rlhf-gen: --%s applies only with --score\n",
                    a->prompt_len >= 0 ? "prompt-len" : "score-eos");
            return ERR_ARG;
        }
        return check_sampler(&a->sampler);
    }
    if (gen_only) {
        fprintf(stderr, "rlhf-gen: --%s applies only to generation, not with --score\n", gen_only);
        return ERR_ARG;
    }
    if (a->prompt && a->prompt_len >= 0) {
        fprintf(stderr, "rlhf-gen: give --prompt or --prompt-len with --score, not both\n");
        return ERR_ARG;
    }
    size_t len = strlen(a->score);
    if (a->prompt_len > (int)(len < (1 << 20) ? len : (1 << 20))) {
        fprintf(stderr, "rlhf-gen: --prompt-len %d exceeds the %zu characters of --score\n",
                a->prompt_len, len);
        return ERR_ARG;
    }
    if (a->prompt_len < 0) a->prompt_len = 0;
    if ((size_t)a->prompt_len == len && !a->is_score_eos) {
        fprintf(stderr, "rlhf-gen: --score leaves no token to score (empty text after the "
                        "prompt; add --score-eos to score EOS alone)\n");
        return ERR_ARG;
    }
    return 0;
}

/* Checks that every character of text (given as --flag) is in the
 * tokenizer, so the error names the flag and the checkpoint. */
static int check_text(const Tok *tok, const char *flag, const char *text, const char *dir)
{
    for (size_t i = 0; text[i]; i++) {
        unsigned char ch = (unsigned char)text[i];
        if (tok_id(tok, (char)ch) >= 0) continue;
        if (ch >= 0x20 && ch < 0x7f)
            log_error("--%s: character '%c' at position %zu is not in the tokenizer of '%s'", flag,
                      ch, i, dir);
        else
            log_error("--%s: byte 0x%02x at position %zu is not in the tokenizer of '%s' (it "
                      "holds printable ASCII only)",
                      flag, ch, i, dir);
        return ERR_RANGE;
    }
    return 0;
}

/* Prints text in double quotes with '"' and '\' escaped, so leading and
 * trailing spaces stay visible and the output parses. */
static void print_quoted(const char *text)
{
    putchar('"');
    for (const char *p = text; *p; p++) {
        if (*p == '"' || *p == '\\') putchar('\\');
        putchar(*p);
    }
    putchar('"');
}

/* One token as text: 'c' for a character, <eos> etc. for special ids, and
 * <id N> for an id the model has but the tokenizer lacks (a checkpoint's
 * vocab_size may exceed its charset). */
static void token_text(const Tok *tok, int id, char *out, size_t cap)
{
    char c = tok_char(tok, id);
    if (c)
        snprintf(out, cap, "'%c'", c);
    else if (id >= 0 && id < TOK_N_SPECIAL)
        CHECK(tok_decode(tok, &id, 1, TOK_DEC_SPECIAL, out, cap, NULL) == 0);
    else
        snprintf(out, cap, "<id %d>", id);
}

static int run_generate(const GenArgs *a, Model *m, const Tok *tok)
{
    const ModelConfig *mc = model_config(m);
    int                rc = check_text(tok, "prompt", a->prompt, a->ckpt);
    if (rc) return rc;
    size_t len = strlen(a->prompt);
    if (len + 1 >= (size_t)mc->max_seq_len) {
        log_error("--prompt: %zu characters plus BOS, but the model in '%s' takes at most %d "
                  "tokens and needs room for one generated token",
                  len, a->ckpt, mc->max_seq_len);
        return ERR_RANGE;
    }
    int P = (int)len + 1;
    /* The model was built for max_seq_len positions; completions that would
     * run past it end there with finish "length". */
    int max_len = P + a->max_new;
    if (max_len > mc->max_seq_len) {
        log_warn("--max-new %d: prompt of %d tokens plus completion exceeds the model's "
                 "max_seq_len %d; completions stop at %d new tokens",
                 a->max_new, P, mc->max_seq_len, mc->max_seq_len - P);
        max_len = mc->max_seq_len;
    }
    if ((rc = model_set_decode_type(m, (KernType)a->decode_weights)) != 0) return rc;
    int         n = a->n, W = a->max_new, np;
    int        *prompt = xmalloc(sizeof(int) * (size_t)P);
    const int **prompts = xmalloc(sizeof(int *) * (size_t)n);
    int        *plens = xmalloc(sizeof(int) * (size_t)n);
    int        *toks = xmalloc(sizeof(int) * (size_t)n * W);
    float      *lps = xmalloc(sizeof(float) * (size_t)n * W);
    float      *lpf = xmalloc(sizeof(float) * (size_t)n * W);
    int        *ntok = xmalloc(sizeof(int) * (size_t)n);
    int        *fin = xmalloc(sizeof(int) * (size_t)n);
    char       *text = xmalloc(TOK_DECODE_MAX_BYTES(W));
    CHECK(tok_encode(tok, a->prompt, len, TOK_ENC_BOS, prompt, P, &np) == 0 && np == P);
    for (int i = 0; i < n; i++) {
        prompts[i] = prompt;
        plens[i] = P;
    }
    Generator *g = gen_new(m, n, max_len);
    GenConfig  gc = {.sampler = a->sampler, .max_new = W, .stop_id = TOK_EOS};
    GenOutput  go = {toks, lps, lpf, ntok, fin};
    Rng        rng;
    rng_seed(&rng, a->seed);
    rc = gen_run(g, &gc, n, prompts, plens, &rng, &go);
    for (int i = 0; i < n && rc == 0; i++) {
        const int *ti = toks + (size_t)i * W;
        double     sum = 0.0;
        for (int k = 0; k < ntok[i]; k++) sum += lpf[(size_t)i * W + k];
        /* The text holds the characters only, as tok_decode renders it; ids
         * without a character (EOS, other specials, ids past the charset)
         * show in --verbose-tokens. */
        int nc = 0;
        for (int k = 0; k < ntok[i]; k++)
            if (tok_char(tok, ti[k])) text[nc++] = tok_char(tok, ti[k]);
        text[nc] = '\0';
        printf("completion %d ", i);
        print_quoted(text);
        printf(" sum_logp %.6f n_tokens %d finish %s\n", sum, ntok[i],
               fin[i] == GEN_FINISH_STOP ? "stop" : "length");
        if (!a->is_verbose_tok) continue;
        for (int k = 0; k < ntok[i]; k++) {
            char tt[16];
            token_text(tok, ti[k], tt, sizeof tt);
            printf("  token %d %s id %d logp_full %.6f logp_sampled %.6f\n", k, tt, ti[k],
                   lpf[(size_t)i * W + k], lps[(size_t)i * W + k]);
        }
    }
    gen_free(&g);
    free(text);
    free(fin);
    free(ntok);
    free(lpf);
    free(lps);
    free(toks);
    free(plens);
    free(prompts);
    free(prompt);
    return rc;
}

static int run_score(const GenArgs *a, Model *m, const Tok *tok)
{
    const ModelConfig *mc = model_config(m);
    int                rc = 0;
    if (a->prompt && (rc = check_text(tok, "prompt", a->prompt, a->ckpt))) return rc;
    if ((rc = check_text(tok, "score", a->score, a->ckpt))) return rc;
    /* The sequence is BOS + prompt + text (+ EOS); positions before
     * first_scored only condition. */
    size_t plen = a->prompt ? strlen(a->prompt) : 0, slen = strlen(a->score);
    size_t total = 1 + plen + slen + (a->is_score_eos ? 1 : 0);
    if (total > (size_t)mc->max_seq_len) {
        log_error("--score: the sequence is %zu tokens (BOS%s + text%s), but the model in '%s' "
                  "takes at most %d",
                  total, a->prompt ? " + prompt" : "", a->is_score_eos ? " + EOS" : "", a->ckpt,
                  mc->max_seq_len);
        return ERR_RANGE;
    }
    int    n = (int)total, T = n - 1, k;
    int    first_scored = 1 + (int)plen + a->prompt_len;
    int   *seq = xmalloc(sizeof(int) * (size_t)n);
    float *mask = xmalloc(sizeof(float) * (size_t)T);
    float *logp = xmalloc(sizeof(float) * (size_t)T);
    float *ent = xmalloc(sizeof(float) * (size_t)T);
    seq[0] = TOK_BOS;
    CHECK(tok_encode(tok, a->prompt ? a->prompt : "", plen, 0, seq + 1, n - 1, &k) == 0);
    CHECK(tok_encode(tok, a->score, slen, a->is_score_eos ? TOK_ENC_EOS : 0, seq + 1 + plen,
                     n - 1 - (int)plen, &k) == 0);
    /* Position t of the forward reads seq[t] and predicts seq[t + 1]. */
    for (int t = 0; t < T; t++) mask[t] = t + 1 >= first_scored ? 1.0f : 0.0f;
    model_forward(m, seq, seq + 1, mask, 1, T, logp, ent, NULL);
    printf("%5s  %-7s  %11s  %9s\n", "pos", "token", "logp", "entropy");
    double sum = 0.0;
    int    count = 0;
    for (int p = first_scored; p < n; p++) {
        if (!isfinite(logp[p - 1]) || !isfinite(ent[p - 1])) {
            log_error("--score: the model in '%s' gives a non-finite log-prob at position %d",
                      a->ckpt, p);
            rc = ERR_NONFINITE;
            break;
        }
        char tt[16];
        token_text(tok, seq[p], tt, sizeof tt);
        printf("%5d  %-7s  %11.6f  %9.6f\n", p, tt, logp[p - 1], ent[p - 1]);
        sum += logp[p - 1];
        count++;
    }
    if (rc == 0) printf("total_logp %.6f mean_logp %.6f n_tokens %d\n", sum, sum / count, count);
    free(ent);
    free(logp);
    free(mask);
    free(seq);
    return rc;
}

int main(int argc, char **argv)
{
    GenArgs a = k_defaults;

    Flag flags[] = {
        FLAG_STRING("ckpt", &a.ckpt, "DIR", "checkpoint directory", .def = "(required)"),
        FLAG_STRING("prompt", &a.prompt, "TEXT",
                    "prompt to complete; with --score, the prefix the scored\n"
                    "text is conditioned on"),
        FLAG_STRING("score", &a.score, "TEXT",
                    "score TEXT instead of generating: per token its log-prob\n"
                    "given the prefix and the entropy there",
                    .def = "off"),
        FLAG_INT("prompt-len", &a.prompt_len, 0, 1 << 20, "N",
                 "with --score: treat the first N characters of TEXT as the\n"
                 "prompt and score the rest",
                 .def = "0"),
        FLAG_BOOL("score-eos", &a.is_score_eos, "with --score: append EOS and score it too"),
        FLAG_SECTION("Generation only:"),
        FLAG_INT("n", &a.n, 1, 4096, "N", "completions to generate"),
        FLAG_INT("max-new", &a.max_new, 1, 1 << 20, "N",
                 "tokens per completion at most, EOS included"),
        FLAG_FLOAT("temperature", &a.sampler.temperature, -HUGE_VAL, HUGE_VAL, "X",
                   "sampling temperature, 0 = greedy"),
        FLAG_INT("top-k", &a.sampler.top_k, -(1L << 30), 1L << 30, "K",
                 "keep the K most likely tokens, 0 = off"),
        FLAG_FLOAT("top-p", &a.sampler.top_p, -HUGE_VAL, HUGE_VAL, "P",
                   "nucleus mass in (0, 1], 1 = off"),
        FLAG_U64("seed", &a.seed, "S", "sampling seed"),
        FLAG_BOOL("verbose-tokens", &a.is_verbose_tok,
                  "print each generated token with logp_full and\nlogp_sampled"),
        FLAG_CHOICE("decode-weights", &a.decode_weights, kern_type_names, "T",
                    "precision of the weights generation decodes with: fp32,\n"
                    "or bf16 / fp16 as actors use (log-probs then differ from\n"
                    "--score's by the rounding)"),
        FLAGS_END,
    };
    FlagsSpec spec = {
        .prog = "rlhf-gen",
        .synopsis = "--ckpt DIR --prompt TEXT [generation flags]\n"
                    "--ckpt DIR --score TEXT [--prompt TEXT | --prompt-len N] [--score-eos]",
        .about = "Generates completions of a prompt (BOS prepended), or scores a text, under a\n"
                 "checkpoint written by rlhf-sft or a learner.\n",
        .epilog = "Each completion prints as: completion I \"TEXT\" sum_logp X n_tokens K finish\n"
                  "stop|length, where sum_logp adds logp_full (the log-prob under "
                  "softmax(logits/T),\ntemperature 1 when greedy) over the generated tokens, EOS "
                  "included.\n",
        .flags = flags,
        .check = check,
        .check_ctx = &a,
    };
    int rc = prog_start(&spec, argc, argv, "gen", NULL);
    if (rc != PROG_RUN) return rc;

    PolicySpec ps = {.ckpt = a.ckpt};
    Policy     pol;
    if ((rc = policy_load(&ps, &pol)) == 0) {
        const ModelConfig *mc = model_config(pol.m);
        log_info("loaded '%s': dim=%d layers=%d heads=%d/%d hidden=%d vocab=%d max_seq_len=%d",
                 a.ckpt, mc->dim, mc->n_layers, mc->n_heads, mc->n_kv_heads, mc->hidden_dim,
                 mc->vocab_size, mc->max_seq_len);
        rc = a.score ? run_score(&a, pol.m, pol.tok) : run_generate(&a, pol.m, pol.tok);
    }
    if (fflush(stdout) != 0 && rc == 0) {
        log_error("writing the results to stdout: %s", strerror(errno));
        rc = ERR_IO;
    }
    policy_free(&pol);
    return rc ? PROG_EXIT_FAIL : PROG_EXIT_OK;
}
