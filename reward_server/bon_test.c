/* bon's self-test: bon_argmax on worked cases (the highest eligible score,
 * the lowest index on a tie, none eligible); then a small random policy and
 * reward model: every score bon_run reports equals model_forward's value at
 * the last id of prompt ++ completion, the pick is the argmax of those
 * independently computed scores over the completions that stopped, the
 * same seed gives the same samples; and bad input is refused: a config out
 * of range, a reward model whose vocabulary is not the policy's, a prompt
 * with an id outside the vocabulary. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "common/formats/tok.h"
#include "reward_server/bon.h"
#include "tests/support/expect.h"
#include "tests/support/fixtures.h"
#include "tests/test_list.h"

enum { BT_CTX = 32, BT_N = 12, BT_W = 24 };

static void test_argmax(bool verbose)
{
    double s[6] = {0.1, 0.7, -2.0, 0.7, 0.69, 5.0};
    bool   all[6] = {true, true, true, true, true, true};
    bool   some[6] = {true, false, true, true, true, false};
    bool   none[6] = {false, false, false, false, false, false};
    EXPECT(bon_argmax(s, all, 6) == 5, "argmax of all 6: %d, expected 5", bon_argmax(s, all, 6));
    EXPECT(bon_argmax(s, all, 5) == 1, "argmax of the first 5 (tie 0.7 at 1 and 3): %d, expected 1",
           bon_argmax(s, all, 5));
    EXPECT(bon_argmax(s, all, 1) == 0, "best-of-1 is the first sample");
    EXPECT(bon_argmax(s, some, 6) == 3, "argmax without 1 and 5: %d, expected 3",
           bon_argmax(s, some, 6));
    EXPECT(bon_argmax(s, some, 2) == 0, "first 2 without 1: %d, expected 0",
           bon_argmax(s, some, 2));
    EXPECT(bon_argmax(s, none, 6) == -1, "none eligible: %d, expected -1", bon_argmax(s, none, 6));
    if (verbose) printf("  bon_argmax: worked cases pass\n");
}

/* model_forward's value at the last id of prompt ++ completion. */
static float bt_direct(Model *rm, const int *prompt, int np, const int *comp, int nc)
{
    int   ids[BT_CTX], tg[BT_CTX] = {0}, T = 0;
    float mask[BT_CTX] = {0}, value[BT_CTX];
    for (int i = 0; i < np; i++) ids[T++] = prompt[i];
    for (int i = 0; i < nc; i++) ids[T++] = comp[i];
    model_forward(rm, ids, tg, mask, 1, T, NULL, NULL, value);
    return value[T - 1];
}

static void bt_sink(void *ctx, int level, const char *line)
{
    if (level == LOG_ERROR) snprintf(ctx, 256, "%s", line);
}

static void test_pick(bool verbose)
{
    Tok        *tok = tok_new(TOK_CHARSET_DEFAULT);
    int         V = tok_vocab_size(tok);
    ModelConfig pc = fixture_model_config(32, 2, 4, 2, 48, V, BT_CTX);
    Model      *policy = model_new(&pc);
    model_init_random(policy, 5, 0.3f);
    ModelConfig rc = pc;
    rc.has_value_head = true;
    Model *rm = model_new(&rc);
    model_init_random(rm, 9, 0.3f);
    RmScorerConfig sc = {.max_tokens = RM_DEFAULT_MAX_TOKENS, .streams = 1};
    RmScorer      *scorer = rm_scorer_borrow(rm, &sc);
    BonConfig      c = {.n = BT_N, .temperature = 1.0f, .max_new = BT_W, .stop_id = TOK_EOS};
    Bon           *b = bon_new(policy, scorer, &c);
    int            prompt[8], np = 0;
    CHECK(tok_encode(tok, "12+34=", 6, TOK_ENC_BOS, prompt, 8, &np) == 0);
    Rng    rng;
    int    stopped_total = 0, rounds = 0, contested = 0;
    double worst = 0;
    bool   pick_ok = true;
    for (int round = 0; round < 8 && b; round++, rounds++) {
        rng_seed(&rng, 100 + (uint64_t)round);
        int rc2 = bon_run(b, prompt, np, &rng);
        if (!EXPECT(rc2 == 0, "bon_run: %s", err_str(rc2))) break;
        const BonSamples *s = bon_samples(b);
        double            mine[BT_N];
        int               want = -1;
        for (int i = 0; i < BT_N; i++) {
            mine[i] = bt_direct(rm, prompt, np, s->tokens + (size_t)i * BT_W, s->n_tokens[i]);
            worst = fmax(worst, fabs(mine[i] - s->score[i]) / fmax(fabs(mine[i]), 1.0));
            bool st =
                s->n_tokens[i] > 0 && s->tokens[(size_t)i * BT_W + s->n_tokens[i] - 1] == TOK_EOS;
            EXPECT(st == s->stopped[i], "round %d completion %d: stopped %d, its ids say %d", round,
                   i, s->stopped[i], st);
            stopped_total += st;
            if (st && (want < 0 || mine[i] > mine[want])) want = i;
        }
        int stopped_here = 0;
        for (int i = 0; i < BT_N; i++) stopped_here += s->stopped[i];
        contested += stopped_here >= 2;
        pick_ok &= s->best == want;
        EXPECT(s->best == want, "round %d: picked %d, the argmax of the scores is %d", round,
               s->best, want);
    }
    if (verbose)
        printf("  %d rounds of %d samples (%d stopped, %d rounds with a choice): scores vs "
               "model_forward max rel diff "
               "%.2e (tol 1e-4); picks %s\n",
               rounds, BT_N, stopped_total, contested, worst, pick_ok ? "all the argmax" : "WRONG");
    EXPECT(worst <= 1e-4, "scores vs model_forward: rel diff %.3g > 1e-4", worst);
    EXPECT(contested >= 3, "only %d rounds had two or more stopped samples to choose from",
           contested);
    EXPECT(stopped_total > 0 && stopped_total < rounds * BT_N,
           "%d of %d samples stopped: the case must hold both kinds", stopped_total, rounds * BT_N);
    /* The same seed, the same samples and pick. */
    if (b) {
        rng_seed(&rng, 100);
        CHECK(bon_run(b, prompt, np, &rng) == 0);
        int    first[BT_N * BT_W], best = bon_samples(b)->best;
        size_t bytes = sizeof(int) * BT_N * BT_W;
        memcpy(first, bon_samples(b)->tokens, bytes);
        rng_seed(&rng, 100);
        CHECK(bon_run(b, prompt, np, &rng) == 0);
        EXPECT(!memcmp(first, bon_samples(b)->tokens, bytes) && best == bon_samples(b)->best,
               "the same seed gave other samples or another pick");
        /* A prompt with an id outside the vocabulary. */
        int bad_prompt[3] = {prompt[0], V + 3, prompt[1]};
        rng_seed(&rng, 1);
        int rc3 = bon_run(b, bad_prompt, 3, &rng);
        EXPECT(rc3 == ERR_RANGE, "a prompt with id %d (vocabulary %d): %s, expected ERR_RANGE",
               V + 3, V, err_str(rc3));
    }
    bon_free(&b);
    EXPECT(b == NULL, "bon_free clears the pointer");

    /* Refusals at bon_new. */
    char last[256] = "";
    log_set_sink(bt_sink, last);
    BonConfig bad[4] = {c, c, c, c};
    bad[0].n = 0;
    bad[1].temperature = 0.0f;
    bad[2].max_new = 0;
    bad[3].stop_id = V;
    for (int i = 0; i < 4; i++) {
        Bon *x = bon_new(policy, scorer, &bad[i]);
        EXPECT(x == NULL, "bad config %d accepted", i);
        bon_free(&x);
    }
    ModelConfig oc = rc;
    oc.vocab_size = V + 5;
    Model    *other = model_new(&oc);
    RmScorer *other_s = rm_scorer_borrow(other, &sc);
    Bon      *x = bon_new(policy, other_s, &c);
    EXPECT(x == NULL && strstr(last, "vocabulary of 90 ids, the policy 85"),
           "a reward model with %d ids for a policy with %d: accepted or said '%s'", V + 5, V,
           last);
    bon_free(&x);
    log_set_sink(NULL, NULL);
    rm_scorer_free(&other_s);
    model_free(&other);
    rm_scorer_free(&scorer);
    model_free(&rm);
    model_free(&policy);
    tok_free(&tok);
}

int bon_selftest(bool verbose)
{
    test_argmax(verbose);
    test_pick(verbose);
    return 0;
}
