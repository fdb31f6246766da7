#include "tests/test_list.h"
#include "learner/eval.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/nn/gen.h"
#include "common/base/log.h"

/* Longest completion worth waiting for: the answer, a sign and EOS. */
#define EVAL_MAX_NEW 10

int eval_arith(Model *m, const Tok *tok, const TaskConfig *task, uint64_t seed, int n, int batch,
               EvalResult *out)
{
    CHECK(n > 0 && batch > 0);
    int         T = TASK_TEXT_MAX + EVAL_MAX_NEW + 2;
    Generator  *g = gen_new(m, batch, T);
    int        *pbuf = xmalloc(sizeof(int) * (size_t)batch * TASK_TEXT_MAX);
    int        *plen = xmalloc(sizeof(int) * (size_t)batch);
    const int **pp = xmalloc(sizeof(int *) * (size_t)batch);
    int        *gt = xmalloc(sizeof(int) * (size_t)batch * EVAL_MAX_NEW);
    float      *l1 = xmalloc(sizeof(float) * (size_t)batch * EVAL_MAX_NEW);
    float      *l2 = xmalloc(sizeof(float) * (size_t)batch * EVAL_MAX_NEW);
    int *gn = xmalloc(sizeof(int) * (size_t)batch), *gf = xmalloc(sizeof(int) * (size_t)batch);
    TaskProblem *probs = xmalloc(sizeof(TaskProblem) * (size_t)batch);
    GenConfig    gc = {.sampler = {.temperature = 0.0f, .top_k = 0, .top_p = 1.0f},
                       .max_new = EVAL_MAX_NEW,
                       .stop_id = TOK_EOS};
    GenOutput    go = {gt, l1, l2, gn, gf};
    Rng          rng;
    rng_seed(&rng, seed);
    int    rc = 0;
    double correct = 0, format = 0;
    for (int start = 0; start < n && rc == 0; start += batch) {
        int nb = n - start < batch ? n - start : batch;
        for (int i = 0; i < nb; i++) {
            task_problem(task, seed, (uint64_t)(start + i), true, &probs[i]);
            int *ids = pbuf + (size_t)i * TASK_TEXT_MAX;
            rc = tok_encode(tok, probs[i].prompt, strlen(probs[i].prompt), TOK_ENC_BOS, ids,
                            TASK_TEXT_MAX, &plen[i]);
            if (rc) break;
            pp[i] = ids;
        }
        if (rc) break;
        rc = gen_run(g, &gc, nb, pp, plen, &rng, &go);
        if (rc) break;
        for (int i = 0; i < nb; i++) {
            char text[TOK_DECODE_MAX_BYTES(EVAL_MAX_NEW)];
            int  nt = gn[i] - (gf[i] == GEN_FINISH_STOP);
            /* Special ids are skipped when decoding, so BOS or PAD cannot fake an answer. */
            if (tok_decode(tok, gt + (size_t)i * EVAL_MAX_NEW, nt, 0, text, sizeof text, NULL))
                text[0] = '\0';
            TaskScore s;
            task_score(text, probs[i].answer, &s);
            correct += s.correct * (gf[i] == GEN_FINISH_STOP);
            format += s.format * (gf[i] == GEN_FINISH_STOP);
        }
    }
    out->accuracy = correct / n;
    out->format = format / n;
    out->reward = out->accuracy;
    out->n = n;
    free(probs);
    free(gn);
    free(gf);
    free(gt);
    free(l1);
    free(l2);
    free(pp);
    free(plen);
    free(pbuf);
    gen_free(&g);
    return rc;
}

int eval_chat(Model *m, const Bpe *bpe, const ChatTaskConfig *task, uint64_t seed, int n, int batch,
              int max_new, EvalResult *out)
{
    CHECK(n > 0 && batch > 0 && max_new > 0);
    int P = CHAT_TASK_PROMPT_MAX_IDS;
    int T = P + max_new;
    if (T > model_config(m)->max_seq_len) T = model_config(m)->max_seq_len;
    Generator       *g = gen_new(m, batch, T);
    int             *pbuf = xmalloc(sizeof(int) * (size_t)batch * (size_t)P);
    int             *plen = xmalloc(sizeof(int) * (size_t)batch);
    const int      **pp = xmalloc(sizeof(int *) * (size_t)batch);
    int             *gt = xmalloc(sizeof(int) * (size_t)batch * (size_t)max_new);
    float           *l1 = xmalloc(sizeof(float) * (size_t)batch * (size_t)max_new);
    float           *l2 = xmalloc(sizeof(float) * (size_t)batch * (size_t)max_new);
    int             *gn = xmalloc(sizeof(int) * (size_t)batch);
    int             *gf = xmalloc(sizeof(int) * (size_t)batch);
    ChatTaskProblem *probs = xmalloc(sizeof(ChatTaskProblem) * (size_t)batch);
    size_t           tcap = bpe_decode_max_bytes(bpe, max_new);
    char            *text = xmalloc(tcap);
    GenConfig        gc = {.sampler = {.temperature = 0.0f, .top_k = 0, .top_p = 1.0f},
                           .max_new = max_new,
                           .stop_id = bpe_eot_id(bpe)};
    GenOutput        go = {gt, l1, l2, gn, gf};
    Rng              rng;
    rng_seed(&rng, seed);
    int    rc = 0;
    double correct = 0, format = 0, reward = 0;
    for (int start = 0; start < n && rc == 0; start += batch) {
        int nb = n - start < batch ? n - start : batch;
        for (int i = 0; i < nb && rc == 0; i++) {
            chat_task_problem(task, seed, (uint64_t)(start + i), true, &probs[i]);
            int *ids = pbuf + (size_t)i * (size_t)P;
            rc = chat_task_prompt_ids(bpe, probs[i].question, ids, P, &plen[i]);
            pp[i] = ids;
        }
        if (rc) break;
        rc = gen_run(g, &gc, nb, pp, plen, &rng, &go);
        if (rc) break;
        for (int i = 0; i < nb; i++) {
            bool cut = gf[i] != GEN_FINISH_STOP;
            /* Without BPE_DEC_SPECIAL, control tokens cannot fake an answer. */
            if (bpe_decode(bpe, gt + (size_t)i * (size_t)max_new, gn[i] - !cut, 0, text, tcap,
                           NULL))
                continue;
            ChatTaskScore s;
            chat_task_score(text, probs[i].answer, cut, &s);
            if (start + i < 4)
                log_debug("eval_chat: '%s' -> '%s' (answer %s)", probs[i].question, text,
                          probs[i].answer);
            correct += s.correct;
            format += s.format;
            reward += chat_task_reward(&s);
        }
    }
    out->accuracy = correct / n;
    out->format = format / n;
    out->reward = reward / n;
    out->n = n;
    free(text);
    free(probs);
    free(gn);
    free(gf);
    free(gt);
    free(l1);
    free(l2);
    free(pp);
    free(plen);
    free(pbuf);
    gen_free(&g);
    return rc;
}

int eval_selftest(bool verbose)
{
    /* An untrained model answers nothing right; the evaluation must say 0,
     * and must be deterministic. */
    Tok *tok = tok_new(TOK_CHARSET_DEFAULT);
    CHECK(tok);
    ModelConfig c = {.dim = 32,
                     .n_layers = 1,
                     .n_heads = 2,
                     .n_kv_heads = 1,
                     .hidden_dim = 64,
                     .vocab_size = tok_vocab_size(tok),
                     .max_seq_len = 64,
                     .rope_theta = 10000.0f,
                     .norm_eps = 1e-5f,
                     .tie_embeddings = true};
    Model      *m = model_new(&c);
    model_init_random(m, 2, 0.02f);
    TaskConfig tc = TASK_DEFAULTS;
    EvalResult a, b;
    int        fails = 0;
    CHECK(eval_arith(m, tok, &tc, 1, 50, 16, &a) == 0);
    CHECK(eval_arith(m, tok, &tc, 1, 50, 7, &b) == 0);
    if (a.accuracy != b.accuracy || a.format != b.format || a.n != 50) fails++;
    if (a.accuracy > 0.05) fails++;
    if (verbose) printf("  eval: random model accuracy %.2f format %.2f\n", a.accuracy, a.format);
    model_free(&m);
    tok_free(&tok);
    return fails;
}
