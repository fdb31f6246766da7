/* progress's self-test: duration formats and the clock. */
#include "common/base/progress.h"

#include <stdio.h>
#include <string.h>

#include "tests/support/expect.h"
#include "tests/test_list.h"

static void expect_duration(double s, const char *want)
{
    char buf[32];
    progress_fmt_duration(s, buf, sizeof buf);
    EXPECT(strcmp(buf, want) == 0, "progress_fmt_duration(%g) is '%s', expected '%s'", s, buf,
           want);
}

int progress_selftest(bool verbose)
{
    expect_duration(42.2, "42s");
    expect_duration(185, "3m05s");
    expect_duration(3720, "1h02m");
    Progress p;
    progress_start(&p, "test", "step", 10);
    double elapsed = progress_elapsed(&p);
    EXPECT(elapsed >= 0, "progress_elapsed right after progress_start is %g, expected >= 0",
           elapsed);
    if (verbose) printf("  progress: duration formats ok\n");
    return expect_end();
}
