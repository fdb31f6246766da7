/* sft's self-test: a small model overfits 8 arithmetic facts, and greedy
 * decoding then reproduces every answer exactly. */
#include "learner/sft.h"

#include <stdio.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/rng.h"
#include "common/formats/tok.h"
#include "common/nn/gen.h"
#include "tests/support/expect.h"
#include "tests/support/fixtures.h"
#include "tests/test_list.h"

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
    gen_free(&g);
    optim_free(&opt);
    model_free(&m);
    tok_free(&tok);
    return expect_end();
}
