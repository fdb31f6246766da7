/* log's self-test: the level filter, the sink, control bytes escaped. */
#include "common/base/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/fileio.h"
#include "tests/support/expect.h"
#include "tests/test_list.h"

typedef struct {
    int  n, level;
    char line[256];
} SinkSeen;

static void sink(void *ctx, int level, const char *line)
{
    SinkSeen *s = ctx;
    s->n++;
    s->level = level;
    snprintf(s->line, sizeof s->line, "%s", line);
}

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
    /* A sink takes the lines that pass the level, and nothing reaches stderr. */
    SinkSeen seen = {0};
    log_init(NULL, LOG_WARN);
    log_set_sink(sink, &seen);
    fileio_capture_begin();
    log_info("below the level");
    log_warn("to the sink: %d", 42);
    char *err = fileio_capture_end(verbose);
    EXPECT(seen.n == 1 && seen.level == LOG_WARN && strstr(seen.line, "WARN ") &&
               strstr(seen.line, ": to the sink: 42"),
           "the sink saw %d line(s), the last '%s' at level %d; expected one WARN line", seen.n,
           seen.line, seen.level);
    EXPECT(err[0] == '\0', "with a sink, stderr got '%s'", err);
    free(err);
    /* Control bytes quoted from outside input stay inside the one line. */
    log_warn("role '%s'", "x\nWARN forged\r\x1b[2J\t\x7f");
    EXPECT(seen.n == 2 && strstr(seen.line, "role 'x\\nWARN forged\\r\\x1b[2J\\t\\x7f'"),
           "a message with control bytes was logged as '%s'", seen.line);
    log_set_sink(NULL, NULL);
    log_init(NULL, saved);
    if (verbose) printf("  log: levels ok, sink ok\n");
    return expect_end();
}
