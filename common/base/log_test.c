/* log's self-test: the level filter. */
#include "common/base/log.h"

#include <stdio.h>
#include <stdlib.h>

#include "common/base/fileio.h"
#include "tests/support/expect.h"
#include "tests/test_list.h"

int log_selftest(bool verbose)
{
    /* The runner has set the level already, so log_level() is what to restore. */
    int saved = log_level();
    log_init(NULL, LOG_ERROR);
    EXPECT(log_level() == LOG_ERROR, "log_level() is %d after log_init(LOG_ERROR), expected %d",
           log_level(), LOG_ERROR);
    fileio_capture_begin();
    log_debug("this line must not print");
    char *out = fileio_capture_end(verbose);
    EXPECT(out[0] == '\0', "log_debug at level ERROR printed '%s', expected nothing", out);
    free(out);
    log_init(NULL, saved);
    if (verbose) printf("  log: levels ok\n");
    return expect_end();
}
