/* err's self-test: error strings and the checked allocators. */
#include "common/base/err.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/expect.h"
#include "tests/test_list.h"

int err_selftest(bool verbose)
{
    EXPECT(strcmp(err_str(ERR_FORMAT), "malformed input") == 0,
           "err_str(ERR_FORMAT) is '%s', expected 'malformed input'", err_str(ERR_FORMAT));
    EXPECT(strcmp(err_str(12345), "unknown error") == 0,
           "err_str(12345) is '%s', expected 'unknown error'", err_str(12345));
    float *a = xmalloc_aligned(1000);
    EXPECT(((size_t)a & 63) == 0, "xmalloc_aligned returned %p, expected a 64-byte boundary",
           (void *)a);
    free(a);
    char *s = xstrdup("abc");
    EXPECT(strcmp(s, "abc") == 0, "xstrdup(\"abc\") gave '%s'", s);
    free(s);
    if (verbose) printf("  err: codes and allocators ok\n");
    return expect_end();
}
