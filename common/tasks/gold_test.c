/* gold's self-test: the gold reward, the labeller's probability and the
 * calibration of tau on worked examples with hand-computed numbers, and the
 * labeller's coin against its probability over many draws. */
#include "common/tasks/gold.h"

#include <math.h>
#include <stdio.h>

#include "common/base/rng.h"
#include "tests/support/expect.h"
#include "tests/test_list.h"

int gold_selftest(bool verbose)
{
    /* The gold reward: exp(-|x - a| / (1 + |a|/10)), -1 for a non-integer. */
    struct {
        const char *completion, *answer;
        double      want;
    } ex[] = {
        {"82", "82", 1.0},
        {"80", "82", 0.8046150583253528},    /* exp(-2 / 9.2) */
        {"13", "3", 0.00045632390058103137}, /* exp(-10 / 1.3) */
        {"-3", "-3", 1.0},
        {"3", "-3", 0.00989837560720391}, /* exp(-6 / 1.3) */
        {"", "82", -1.0},
        {"abc", "82", -1.0},
        {"8 2", "82", -1.0},
        {"+82", "82", -1.0},
        {" 82", "82", -1.0},
        {"-", "82", -1.0},
        {"1234567890123", "1", -1.0}, /* 13 digits */
        {"82", "x", -1.0},
    };
    for (size_t i = 0; i < sizeof ex / sizeof ex[0]; i++) {
        double g = gold_arith(ex[i].completion, ex[i].answer);
        if (verbose) printf("  gold('%s' for %s) = %.12g\n", ex[i].completion, ex[i].answer, g);
        EXPECT_NEAR(g, ex[i].want, 1e-12, "gold_arith");
    }

    /* The chat judge: the last integer's closeness, halved over more lines. */
    struct {
        const char *completion, *answer;
        double      want;
    } cx[] = {
        {"82", "82", 1.0},
        {"  The answer is 82.\n", "82", 1.0},
        {"37 + 45 = 80", "82", 0.8046150583253528}, /* exp(-2 / 9.2) */
        {"37 + 45 = 82\nSo the answer is 82.", "82", 0.5},
        {"It is -3", "-3", 1.0},
        {"1,234", "1234", 1.0},
        {"I cannot say.", "82", -1.0},
        {"", "82", -1.0},
        {"82", "x", -1.0},
    };
    for (size_t i = 0; i < sizeof cx / sizeof cx[0]; i++) {
        double g = gold_chat(cx[i].completion, cx[i].answer);
        if (verbose)
            printf("  gold_chat('%s' for %s) = %.12g\n", cx[i].completion, cx[i].answer, g);
        EXPECT_NEAR(g, cx[i].want, 1e-12, "gold_chat");
    }

    /* The labeller: sigmoid((g1 - g2) / tau). */
    EXPECT_NEAR(gold_prefer_prob(1.0, 0.0, 0.5), 0.8807970779778823, 1e-12, "sigmoid(2)");
    EXPECT_NEAR(gold_prefer_prob(0.0, 1.0, 0.5), 1 - 0.8807970779778823, 1e-12, "sigmoid(-2)");
    EXPECT_NEAR(gold_prefer_prob(0.3, 0.3, 0.1), 0.5, 0, "a tie is a fair coin");

    /* Calibration: equal gaps d give sigmoid(-d/tau) = flip, tau = d / ln((1-f)/f):
     * d = 0.5, f = 0.25 -> 0.5 / ln 3. */
    double same[4] = {0.5, -0.5, 0.5, 0.5};
    double tau = gold_calibrate_tau(same, 4, 0.25);
    EXPECT_NEAR(tau, 0.45511961331341866, 1e-9, "tau for equal gaps");
    /* Mixed gaps: the mean flip at the calibrated tau is the target. */
    double mixed[6] = {0.01, 0.2, 0.7, 1.5, 2.0, 0.05};
    tau = gold_calibrate_tau(mixed, 6, 0.25);
    EXPECT(tau > 0, "calibrated tau %g", tau);
    EXPECT_NEAR(gold_mean_flip(mixed, 6, tau), 0.25, 1e-9, "mean flip at the calibrated tau");
    /* Out of range asks get 0. */
    EXPECT(gold_calibrate_tau(mixed, 6, 0.5) == 0 && gold_calibrate_tau(mixed, 6, 0) == 0 &&
               gold_calibrate_tau(mixed, 0, 0.25) == 0,
           "flip 0.5, flip 0 and no pairs are refused");

    /* The coin: over many draws the first is preferred at the rate p. */
    Rng r;
    rng_seed(&r, 7);
    int    n = 200000, first = 0;
    double p = gold_prefer_prob(0.8, 0.2, 0.4); /* sigmoid(1.5) */
    for (int i = 0; i < n; i++) first += gold_label(0.8, 0.2, 0.4, rng_uniform(&r));
    double sd = sqrt(p * (1 - p) / n);
    if (verbose) printf("  label rate %.5f vs p %.5f (sd %.5f)\n", (double)first / n, p, sd);
    EXPECT_NEAR((double)first / n, p, 5 * sd, "label rate");

    /* The ranking: a permutation whose every pair is ordered at the pair
     * coin's rate sigmoid((gi - gj) / tau), here for 4 completions. */
    double g[4] = {0.9, -1.0, 0.3, 0.35}, u[4];
    int    before[4][4] = {{0}}, order[4], m = 100000;
    for (int t = 0; t < m; t++) {
        for (int i = 0; i < 4; i++) u[i] = rng_uniform(&r);
        gold_rank(g, u, 4, 0.4, order);
        int seen[4] = {0};
        for (int i = 0; i < 4; i++) {
            EXPECT(order[i] >= 0 && order[i] < 4 && !seen[order[i]], "ranking is a permutation");
            seen[order[i]] = 1;
            for (int j = i + 1; j < 4; j++) before[order[i]][order[j]]++;
        }
    }
    for (int i = 0; i < 4; i++)
        for (int j = i + 1; j < 4; j++) {
            double q = gold_prefer_prob(g[i], g[j], 0.4), s = sqrt(q * (1 - q) / m);
            double got = (double)before[i][j] / m;
            if (verbose) printf("  rank %d before %d: %.5f vs %.5f\n", i, j, got, q);
            EXPECT_NEAR(got, q, 5 * s + 1e-9, "ranking's pair rate");
        }
    /* The extremes of u stay finite and ordered by gold. */
    double u0[3] = {0, 0, 0};
    gold_rank((double[]){0.1, 0.9, 0.5}, u0, 3, 0.4, order);
    EXPECT(order[0] == 1 && order[1] == 2 && order[2] == 0, "u = 0 everywhere: the gold order");
    return 0;
}
