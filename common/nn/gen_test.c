/* gen_selftest: greedy generation through the KV cache against greedy
 * decoding by full forwards, logp_full against the full forward, stop and
 * length finishes, reproducibility by seed, one generator per sequence
 * (a sequence's sample does not depend on its batch), the caller's stop
 * test, and a refused bad prompt. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/nn/gen.h"
#include "tests/support/expect.h"
#include "tests/support/fixtures.h"
#include "tests/test_list.h"

/* A stop test that ends every sequence at *ctx tokens. */
static bool stop_at_count(void *ctx, int seq, const int *tokens, int n_tokens)
{
    (void)seq;
    (void)tokens;
    return n_tokens >= *(const int *)ctx;
}

int gen_selftest(bool verbose)
{
    /* Greedy generation through the cache must equal greedy decoding by
     * repeated full forwards, and the recorded logp_full must equal the
     * full forward's log-probability of each generated token. */
    ModelConfig c = fixture_model_config(32, 2, 4, 2, 48, 17, 32);
    Model      *m = model_new(&c);
    model_init_random(m, 4, 0.5f);
    Generator *g = gen_new(m, 3, 24);
    int        p0[] = {1, 5, 6}, p1[] = {1, 9}, p2[] = {1, 3, 3, 3, 7};
    const int *prompts[] = {p0, p1, p2};
    int        lens[] = {3, 2, 5}, max_new = 10;
    GenConfig  cfg = {.sampler = {.temperature = 0.0f, .top_k = 0, .top_p = 1.0f},
                      .max_new = max_new,
                      .stop_id = 2};
    int        toks[3 * 10], ntok[3], fin[3];
    float      lps[3 * 10], lpf[3 * 10];
    GenOutput  out = {toks, lps, lpf, ntok, fin};
    Rng        rng;
    rng_seed(&rng, 1);
    CHECK(gen_run(g, &cfg, 3, prompts, lens, &rng, &out) == 0);
    double worst = 0.0;
    for (int i = 0; i < 3; i++) {
        int seq[32], tgt[32];
        int L = lens[i];
        memcpy(seq, prompts[i], sizeof(int) * L);
        for (int s = 0; s < ntok[i]; s++) {
            /* Full forward over the prefix; the argmax of the last position. */
            for (int t = 0; t < L; t++) tgt[t] = t + 1 < L ? seq[t + 1] : 0;
            model_forward(m, seq, tgt, NULL, 1, L, NULL, NULL, NULL);
            const float *lg = model_last_logits(m, NULL) + (size_t)(L - 1) * c.vocab_size;
            int          best = 0;
            for (int v = 1; v < c.vocab_size; v++) best = lg[v] > lg[best] ? v : best;
            if (!EXPECT(best == toks[i * max_new + s],
                        "seq %d step %d: cache path chose %d, full forward argmax %d", i, s,
                        toks[i * max_new + s], best))
                break;
            double mx = lg[0], sum = 0.0;
            for (int v = 1; v < c.vocab_size; v++) mx = fmax(mx, lg[v]);
            for (int v = 0; v < c.vocab_size; v++) sum += exp(lg[v] - mx);
            double lp = lg[best] - mx - log(sum);
            worst = fmax(worst, fabs(lp - lpf[i * max_new + s]));
            seq[L++] = best;
        }
        EXPECT(fin[i] != GEN_FINISH_STOP || toks[i * max_new + ntok[i] - 1] == 2,
               "seq %d finished on stop with last token %d, expected the stop id 2", i,
               toks[i * max_new + ntok[i] - 1]);
        EXPECT(fin[i] != GEN_FINISH_LENGTH || ntok[i] == max_new,
               "seq %d finished on length with %d tokens, expected max_new %d", i, ntok[i],
               max_new);
    }
    if (verbose)
        printf("  gen: greedy cache == greedy full forward, logp_full max diff %.2e (tol 1e-5); "
               "lengths %d %d %d\n",
               worst, ntok[0], ntok[1], ntok[2]);
    EXPECT(worst <= 1e-5, "logp_full vs the full forward's log-prob: max diff %.3g > 1e-5", worst);
    /* Same seed, same sampled completions. */
    cfg.sampler.temperature = 1.0f;
    int toks2[30], ntok2[3];
    rng_seed(&rng, 77);
    CHECK(gen_run(g, &cfg, 3, prompts, lens, &rng, &out) == 0);
    memcpy(toks2, toks, sizeof toks);
    memcpy(ntok2, ntok, sizeof ntok);
    rng_seed(&rng, 77);
    CHECK(gen_run(g, &cfg, 3, prompts, lens, &rng, &out) == 0);
    for (int i = 0; i < 3; i++)
        EXPECT(ntok[i] == ntok2[i] && !memcmp(toks + i * 10, toks2 + i * 10, sizeof(int) * ntok[i]),
               "seq %d sampled twice with seed 77: %d and %d tokens, expected the same completion",
               i, ntok[i], ntok2[i]);
    /* One generator per sequence: sequence 2 alone, drawing from the
     * generator it had in the batch of three, samples the same completion. */
    Rng each[3];
    for (int i = 0; i < 3; i++) rng_seed(&each[i], 100 + (uint64_t)i);
    cfg.is_rng_each = true;
    CHECK(gen_run(g, &cfg, 3, prompts, lens, each, &out) == 0);
    int n2 = ntok[2], t2[10];
    memcpy(t2, toks + 2 * 10, sizeof(int) * (size_t)n2);
    rng_seed(&each[0], 102);
    CHECK(gen_run(g, &cfg, 1, prompts + 2, lens + 2, each, &out) == 0);
    EXPECT(ntok[0] == n2 && !memcmp(toks, t2, sizeof(int) * (size_t)n2),
           "sequence 2 with its own generator: %d tokens in a batch of 3, %d alone; expected the "
           "same completion",
           n2, ntok[0]);
    cfg.is_rng_each = false;
    /* The caller's stop test ends a completion where it says, the token kept. */
    int stop_after = 3;
    cfg.stop_id = -1;
    cfg.is_stop = stop_at_count;
    cfg.stop_ctx = &stop_after;
    rng_seed(&rng, 5);
    CHECK(gen_run(g, &cfg, 3, prompts, lens, &rng, &out) == 0);
    for (int i = 0; i < 3; i++)
        EXPECT(ntok[i] == 3 && fin[i] == GEN_FINISH_CALLER,
               "seq %d with a stop test at 3 tokens: %d tokens, finish %d; expected 3 and %d", i,
               ntok[i], fin[i], GEN_FINISH_CALLER);
    cfg.is_stop = NULL;
    /* Bad prompts are refused. */
    int        bad[] = {1, 99};
    const int *bp[] = {bad};
    int        bl[] = {2};
    EXPECT_REFUSED(gen_run(g, &cfg, 1, bp, bl, &rng, &out), ERR_RANGE, "is id 99",
                   "prompt with token id 99 (V 17)");
    gen_free(&g);
    model_free(&m);
    return expect_end();
}
