/* agg_selftest: the reductions between tokens and sequences on worked
 * examples. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/base/rng.h"
#include "learner/algo/agg.h"
#include "tests/support/expect.h"
#include "tests/support/numcheck.h"
#include "tests/test_list.h"

static void test_seq(bool verbose)
{
    float x[6] = {1, 2, 3, 4, 5, NAN}, m[6] = {1, 1, 0, 1, 1, 0}, out[2];
    agg_seq_sum(out, x, m, 2, 3);
    EXPECT(out[0] == 3.0f && out[1] == 9.0f, "seq sum");
    float dx[6] = {0}, dout[2] = {0.5f, -2.0f};
    agg_seq_sum_backward(dx, dout, m, 2, 3);
    EXPECT(dx[0] == 0.5f && dx[1] == 0.5f && dx[2] == 0.0f && dx[3] == -2.0f && dx[5] == 0.0f,
           "seq sum backward");
    float w[6], m2[6] = {1, 1, 0, 0, 0, 0};
    agg_seq_mean_weights(w, m, 2, 3);
    EXPECT(w[0] == 0.25f && w[4] == 0.25f && w[2] == 0.0f, "seq mean weights");
    agg_seq_mean_weights(w, m2, 2, 3); /* an empty row does not count */
    EXPECT(w[0] == 0.5f && w[3] == 0.0f, "seq mean weights, empty row");
}

int agg_selftest(bool verbose)
{
    test_seq(verbose);
    return expect_end();
}
