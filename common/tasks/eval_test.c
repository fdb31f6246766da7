/* eval's self-test: an untrained model answers nothing right, and the
 * result does not depend on the batch size. */
#include "common/tasks/eval.h"

#include <stdio.h>

#include "common/base/err.h"
#include "tests/support/expect.h"
#include "tests/support/fixtures.h"
#include "tests/test_list.h"

int eval_selftest(bool verbose)
{
    /* An untrained model answers nothing right; the evaluation must say 0,
     * and must be deterministic. */
    Tok *tok = tok_new(TOK_CHARSET_DEFAULT);
    CHECK(tok);
    ModelConfig c = fixture_model_config(32, 1, 2, 1, 64, tok_vocab_size(tok), 64);
    c.tie_embeddings = true;
    Model *m = model_new(&c);
    model_init_random(m, 2, 0.02f);
    TaskConfig tc = TASK_DEFAULTS;
    EvalResult a, b;
    CHECK(eval_arith(m, tok, &tc, 1, 50, 16, &a) == 0);
    CHECK(eval_arith(m, tok, &tc, 1, 50, 7, &b) == 0);
    EXPECT(a.accuracy == b.accuracy && a.format == b.format && a.n == 50,
           "batches of 16 and 7: accuracy %g and %g, format %g and %g, n %d; expected the same "
           "results of 50 problems",
           a.accuracy, b.accuracy, a.format, b.format, a.n);
    EXPECT(a.accuracy <= 0.05, "a random model's accuracy %g, expected at most 0.05", a.accuracy);
    if (verbose) printf("  eval: random model accuracy %.2f format %.2f\n", a.accuracy, a.format);
    model_free(&m);
    tok_free(&tok);
    return expect_end();
}
