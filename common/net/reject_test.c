#include "tests/test_list.h"
#include "common/net/reject.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/log.h"
#include "tests/support/expect.h"

/* Counts of the socket test's ten bad frames: two garbage, one of each other. */
static void note_ten(WireRejects *c)
{
    static const WireReason reasons[] = {
        WIRE_REJ_GARBAGE,     WIRE_REJ_GARBAGE,    WIRE_REJ_OVERSIZED, WIRE_REJ_UNKNOWN,
        WIRE_REJ_BAD_VERSION, WIRE_REJ_BAD_TOKENS, WIRE_REJ_NONFINITE, WIRE_REJ_BAD_SHAPE,
        WIRE_REJ_BAD_RUN,     WIRE_REJ_BAD_VALUE};
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++) {
        WireReject rej;
        wire_reject_set(&rej, ERR_FORMAT, reasons[i], "frame %zu", i);
        wire_reject_note(c, "reject_test", "frame", &rej);
    }
}

static size_t count_lines(const char *log, const char *text)
{
    size_t n = 0;
    for (const char *p = log; (p = strstr(p, text)); p += strlen(text)) n++;
    return n;
}

int reject_selftest(bool verbose)
{
    /* The log lines are part of the contract; quiet runs log only errors. */
    log_init("wire_reject", LOG_WARN);
    EXPECT(!strcmp(wire_reason_name(WIRE_REJ_GARBAGE), "garbage") &&
               !strcmp(wire_reason_name(WIRE_REJ_BAD_TOKENS), "bad_tokens") &&
               !strcmp(wire_reason_name(WIRE_REJ_UNKNOWN), "unknown"),
           "reason names '%s' '%s' '%s', expected garbage bad_tokens unknown",
           wire_reason_name(WIRE_REJ_GARBAGE), wire_reason_name(WIRE_REJ_BAD_TOKENS),
           wire_reason_name(WIRE_REJ_UNKNOWN));
    EXPECT(!strcmp(wire_reason_name(WIRE_REJ_BUSY), "busy") &&
               !strcmp(wire_reason_name(WIRE_REJ_OVER_BUDGET), "over_budget"),
           "per-peer limit reasons '%s' '%s', expected busy over_budget",
           wire_reason_name(WIRE_REJ_BUSY), wire_reason_name(WIRE_REJ_OVER_BUDGET));
    for (int r = 0; r < WIRE_REJ_COUNT; r++)
        EXPECT(wire_reason_name((WireReason)r) && strlen(wire_reason_name((WireReason)r)) > 1,
               "reason %d has no name", r);
    EXPECT(!strcmp(wire_reason_name(WIRE_REJ_COUNT), "?"),
           "name of WIRE_REJ_COUNT '%s', expected ?", wire_reason_name(WIRE_REJ_COUNT));

    /* wire_reject_set fills the detail and returns the code; NULL is allowed. */
    WireReject rej = {0};
    int        rc = wire_reject_set(&rej, ERR_RANGE, WIRE_REJ_BAD_VALUE, "x %d, expected >= 0", -3);
    EXPECT(rc == ERR_RANGE && rej.reason == WIRE_REJ_BAD_VALUE &&
               !strcmp(rej.why, "x -3, expected >= 0"),
           "wire_reject_set: rc %d reason %s why '%s', expected %d bad_value 'x -3, expected >= 0'",
           rc, wire_reason_name(rej.reason), rej.why, ERR_RANGE);
    EXPECT(wire_reject_set(NULL, ERR_FORMAT, WIRE_REJ_GARBAGE, "no detail") == ERR_FORMAT,
           "wire_reject_set(NULL, ...) did not return its code");

    /* Counting: every note counts, the log is rate-limited. */
    WireRejects c;
    wire_rejects_init(&c);
    fileio_capture_begin();
    note_ten(&c);
    char *log = fileio_capture_end(verbose);
    EXPECT(wire_rejects_get(&c, WIRE_REJ_GARBAGE) == 2 &&
               wire_rejects_get(&c, WIRE_REJ_BAD_RUN) == 1,
           "garbage %llu bad_run %llu, expected 2 and 1",
           (unsigned long long)wire_rejects_get(&c, WIRE_REJ_GARBAGE),
           (unsigned long long)wire_rejects_get(&c, WIRE_REJ_BAD_RUN));
    EXPECT(wire_rejects_total(&c) == 10, "total %llu, expected 10",
           (unsigned long long)wire_rejects_total(&c));
    EXPECT(strstr(log, "reject_test: rejected frame: garbage: frame 0") != NULL,
           "log lacks 'reject_test: rejected frame: garbage: frame 0': %s", log);
    free(log);

    char line[256];
    wire_rejects_format(&c, line, sizeof line);
    EXPECT(strstr(line, "garbage=2") && strstr(line, "bad_tokens=1"),
           "format line '%s', expected garbage=2 and bad_tokens=1", line);
    char small[8];
    wire_rejects_format(&c, small, sizeof small);
    EXPECT(strlen(small) < sizeof small && !strncmp(small, "garbage", 7),
           "format into 8 bytes '%s', expected a truncated 'garbage'", small);
    WireRejects sum = {0};
    wire_rejects_add(&sum, &c);
    wire_rejects_add(&sum, &c);
    EXPECT(wire_rejects_total(&sum) == 20, "rejects add: total %llu, expected 20",
           (unsigned long long)wire_rejects_total(&sum));
    WireRejects zero;
    wire_rejects_init(&zero);
    wire_rejects_format(&zero, line, sizeof line);
    EXPECT(!strcmp(line, "none"), "format of zero counters '%s', expected none", line);

    /* A flood of one reason: all counted, only the first few logged. */
    WireRejects flood;
    wire_rejects_init(&flood);
    wire_reject_set(&rej, ERR_FORMAT, WIRE_REJ_BAD_SHAPE, "flood");
    fileio_capture_begin();
    for (int i = 0; i < 50; i++) wire_reject_note(&flood, "reject_test", "frame", &rej);
    log = fileio_capture_end(false);
    size_t lines = count_lines(log, "rejected frame: bad_shape: flood");
    EXPECT(wire_rejects_get(&flood, WIRE_REJ_BAD_SHAPE) == 50, "flood counted %llu, expected 50",
           (unsigned long long)wire_rejects_get(&flood, WIRE_REJ_BAD_SHAPE));
    EXPECT(lines >= 1 && lines < 50, "flood of 50 logged %zu lines, expected 1..49", lines);
    if (verbose) printf("  reject: flood of 50 logged in %zu lines\n", lines);
    free(log);
    return expect_end();
}
