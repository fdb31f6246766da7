/* sft's self-test: a small model overfits 8 arithmetic facts, and greedy
 * decoding then reproduces every answer exactly; a batch is packed to its
 * longest example, so the cap T changes no number, and an example over the
 * cap is refused before anything is stepped. */
#include "learner/sft.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/rng.h"
#include "common/formats/tok.h"
#include "common/nn/gen.h"
#include "tests/support/expect.h"
#include "tests/support/fixtures.h"
#include "tests/test_list.h"

/* The same three steps under caps of 12 and 40 positions: both pack to the
 * batch's longest example (9 positions: BOS + "100-1=" + "99" + EOS is 10
 * tokens, the last only a target), so losses and weights agree bit for bit;
 * a batch of short examples packs shorter; a cap below the longest example
 * is refused and leaves the model and optimizer as they were. */
static void test_pack_to_longest(const Tok *tok, const SftExample *ex, int nx)
{
    ModelConfig c = fixture_model_config(32, 1, 2, 1, 64, tok_vocab_size(tok), 48);
    c.tie_embeddings = true;
    OptimConfig oc = fixture_optim_config(3e-3f, 3e-4f, 0, 10);
    Model      *m[2];
    Optim      *o[2];
    int         caps[2] = {12, 40};
    SftStats    st[2];
    memset(st, 0, sizeof st);
    for (int k = 0; k < 2; k++) {
        m[k] = model_new(&c);
        model_init_random(m[k], 5, 0.05f);
        o[k] = optim_new(&oc, model_num_params(m[k]));
        for (int s = 0; s < 3; s++)
            CHECK(sft_step(m[k], o[k], ex, nx, caps[k], TOK_PAD, &st[k]) == 0);
    }
    EXPECT(st[0].seq_len == 9 && st[1].seq_len == 9,
           "packed to %d and %d positions under caps 12 and 40, expected 9 (the longest example)",
           st[0].seq_len, st[1].seq_len);
    EXPECT(st[0].loss == st[1].loss && st[0].n_tokens == st[1].n_tokens,
           "caps 12 and 40: loss %.9g vs %.9g, %d vs %d tokens; expected identical", st[0].loss,
           st[1].loss, st[0].n_tokens, st[1].n_tokens);
    size_t np = model_num_params(m[0]);
    EXPECT(memcmp(model_params(m[0]), model_params(m[1]), np * sizeof(float)) == 0,
           "caps 12 and 40 left different weights after 3 steps");

    /* "7+8=" "15" and "5-7=" "-2": BOS + 4 + 2 + EOS, 7 positions. */
    SftExample short_ex[2] = {ex[1], ex[3]};
    SftStats   ss = {0};
    CHECK(sft_eval(m[0], short_ex, 2, 40, TOK_PAD, &ss) == 0);
    EXPECT(ss.seq_len == 7 && ss.n_tokens == 6,
           "short batch: %d positions, %d tokens; expected 7, 6", ss.seq_len, ss.n_tokens);

    float *before = xmalloc(np * sizeof(float));
    memcpy(before, model_params(m[0]), np * sizeof(float));
    EXPECT_REFUSED(sft_step(m[0], o[0], ex, nx, 8, TOK_PAD, &ss), ERR_RANGE, "does not fit T=8",
                   "sft_step under a cap of 8 positions");
    EXPECT(optim_step_count(o[0]) == 3 &&
               memcmp(before, model_params(m[0]), np * sizeof(float)) == 0,
           "a refused batch moved the optimizer to step %lld or changed weights",
           (long long)optim_step_count(o[0]));
    free(before);
    for (int k = 0; k < 2; k++) {
        optim_free(&o[k]);
        model_free(&m[k]);
    }
}

int sft_selftest(bool verbose)
{
    /* Overfit: a small model memorises 8 arithmetic facts; greedy decoding
     * then reproduces every answer exactly. */
    static const char *prompts[] = {
        "12+34=", "7+8=", "99-9=", "5-7=", "31+31=", "60-17=", "8+80=", "100-1="};
    static const char *answers[] = {"46", "15", "90", "-2", "62", "43", "88", "99"};
    enum { NX = 8, T = 12 };
    Tok *tok = tok_new(TOK_CHARSET_DEFAULT);
    CHECK(tok);
    ModelConfig c = fixture_model_config(64, 2, 4, 2, 128, tok_vocab_size(tok), T + 4);
    c.tie_embeddings = true;
    Model *m = model_new(&c);
    model_init_random(m, 1, 0.05f);
    OptimConfig oc = fixture_optim_config(3e-3f, 3e-4f, 20, 400);
    oc.beta2 = 0.98f;
    oc.grad_clip = 1.0f;
    Optim     *opt = optim_new(&oc, model_num_params(m));
    int        pbuf[NX][T], cbuf[NX][T];
    SftExample ex[NX];
    for (int i = 0; i < NX; i++) {
        int np = 0, nc = 0;
        CHECK(tok_encode(tok, prompts[i], strlen(prompts[i]), TOK_ENC_BOS, pbuf[i], T, &np) == 0);
        CHECK(tok_encode(tok, answers[i], strlen(answers[i]), TOK_ENC_EOS, cbuf[i], T, &nc) == 0);
        ex[i] = (SftExample){pbuf[i], np, cbuf[i], nc};
    }
    SftStats st = {0};
    int      steps = 400;
    double   first = 0.0;
    for (int s = 0; s < steps; s++) {
        CHECK(sft_step(m, opt, ex, NX, T, TOK_PAD, &st) == 0);
        if (s == 0) first = st.loss;
    }
    CHECK(sft_eval(m, ex, NX, T, TOK_PAD, &st) == 0);
    if (verbose)
        printf("  sft overfit: loss %.4f -> %.5f after %d steps, token acc %.3f\n", first, st.loss,
               steps, st.token_acc);
    EXPECT(st.loss < 0.01, "loss %g after %d steps (from %g), expected below 0.01", st.loss, steps,
           first);

    Generator *g = gen_new(m, NX, T + 4);
    const int *pp[NX];
    int        pl[NX], gt[NX * 8], gn[NX], gf[NX];
    float      l1[NX * 8], l2[NX * 8];
    for (int i = 0; i < NX; i++) {
        pp[i] = ex[i].prompt;
        pl[i] = ex[i].prompt_len;
    }
    GenConfig gc = {.sampler = {.temperature = 0.0f, .top_k = 0, .top_p = 1.0f},
                    .max_new = 8,
                    .stop_id = TOK_EOS};
    GenOutput out = {gt, l1, l2, gn, gf};
    Rng       rng;
    rng_seed(&rng, 3);
    CHECK(gen_run(g, &gc, NX, pp, pl, &rng, &out) == 0);
    int exact = 0;
    for (int i = 0; i < NX; i++) {
        char text[32];
        int  n_text = gn[i] - (gf[i] == GEN_FINISH_STOP);
        CHECK(tok_decode(tok, gt + i * 8, n_text, 0, text, sizeof text, NULL) == 0);
        bool ok = !strcmp(text, answers[i]) && gf[i] == GEN_FINISH_STOP;
        exact += ok;
        EXPECT(ok, "greedy on '%s' gave '%s'%s, expected '%s' then EOS", prompts[i], text,
               gf[i] == GEN_FINISH_STOP ? "" : " without EOS", answers[i]);
    }
    if (verbose) printf("  sft overfit: greedy reproduces %d/%d answers\n", exact, NX);
    test_pack_to_longest(tok, ex, NX);
    gen_free(&g);
    optim_free(&opt);
    model_free(&m);
    tok_free(&tok);
    return expect_end();
}
