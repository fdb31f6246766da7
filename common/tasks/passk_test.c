/* passk's self-test: pass@k on worked examples computed by hand (and with
 * exact binomials), its edges, a large n; vote keys and ties. */
#include "common/tasks/passk.h"

#include <stdio.h>
#include <string.h>

#include "tests/support/expect.h"
#include "tests/test_list.h"

int passk_selftest(bool verbose)
{
    /* n = 5, c = 2: pass@1 = 2/5; pass@2 = 1 - C(3,2)/C(5,2) = 1 - 3/10;
     * pass@3 = 1 - C(3,3)/C(5,3) = 1 - 1/10; pass@4 = 1 (3 wrong < 4). */
    struct {
        int    n, c, k;
        double want;
    } ex[] = {
        {5, 2, 1, 0.4},   {5, 2, 2, 0.7},  {5, 2, 3, 0.9}, {5, 2, 4, 1.0},
        {5, 2, 5, 1.0},   {5, 0, 1, 0.0},  {5, 0, 5, 0.0}, {5, 5, 1, 1.0},
        {1, 1, 1, 1.0},   {1, 0, 1, 0.0},  {10, 3, 5, 0.9166666666666666},
        /* C(199,100)/C(200,100) = 100/200 */
        {200, 1, 100, 0.5},
        /* 1 - C(193,10)/C(200,10), from exact binomials */
        {200, 7, 10, 0.3055988116177335},
    };
    for (size_t i = 0; i < sizeof ex / sizeof ex[0]; i++) {
        double got = passk_estimate(ex[i].n, ex[i].c, ex[i].k);
        if (verbose)
            printf("  pass@%d of n=%d c=%d: %.12f\n", ex[i].k, ex[i].n, ex[i].c, got);
        EXPECT_NEAR(got, ex[i].want, 1e-12, "pass@k");
    }
    /* pass@1 is the share of correct samples, for every c. */
    for (int c = 0; c <= 16; c++)
        EXPECT_NEAR(passk_estimate(16, c, 1), c / 16.0, 1e-15, "pass@1 = c/n");
    /* pass@k rises with k. */
    for (int k = 1; k < 20; k++)
        EXPECT(passk_estimate(20, 3, k + 1) >= passk_estimate(20, 3, k), "pass@%d < pass@%d",
               k + 1, k);

    /* Vote keys: numbers by value, the <answer> block, normalised text. */
    struct {
        const char *completion, *key;
    } kx[] = {
        {"82", "82"},
        {"The answer is 82.0", "82"},
        {"<answer>1,000</answer>", "1000"},
        {"x = 3, so <answer>7</answer>", "7"},
        {"<answer>Paris!</answer>", "paris"},
        {"  Paris ", "paris"},
        {"-0", "0"},
        {"", ""},
        {"!!", ""},
    };
    for (size_t i = 0; i < sizeof kx / sizeof kx[0]; i++) {
        char key[64];
        passk_vote_key(kx[i].completion, key, sizeof key);
        EXPECT(!strcmp(key, kx[i].key), "vote key of '%s': '%s', expected '%s'",
               kx[i].completion, key, kx[i].key);
    }
    /* Votes: the most frequent key; a tie to the key sampled first; empty
     * keys do not vote. */
    const char *v1[] = {"3", "4", "4", "", "3", "4"};
    EXPECT(passk_vote(v1, 6) == 1, "vote 3,4,4,-,3,4: %d, expected 1", passk_vote(v1, 6));
    const char *v2[] = {"", "5", "6", "6", "5"};
    EXPECT(passk_vote(v2, 5) == 1, "tie 5,6,6,5: %d, expected 1 (5 first)", passk_vote(v2, 5));
    const char *v3[] = {"", NULL, ""};
    EXPECT(passk_vote(v3, 3) == -1, "no votes: %d, expected -1", passk_vote(v3, 3));
    return 0;
}
