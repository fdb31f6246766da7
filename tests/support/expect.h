/* expect: the assertions every test uses, written once.
 *
 * A test calls expect_begin with its name, makes its checks with EXPECT and
 * friends, and returns expect_end(), which is 0 when every check held. A
 * failed check prints "<test>: <file>:<line>: <message>" to stderr and the
 * test goes on, so one run shows every failure. With verbose set,
 * EXPECT_NEAR also prints the measured difference beside its tolerance.
 *
 * The runner forks one process per test, so the counts are per-process
 * state; when the runner has called expect_share (before forking), every
 * check is also counted in memory it reads after the child exits, which is
 * how it reports the number of checks of a run. Not thread-safe: make the
 * checks on the test's own thread. */
#ifndef RLHF_EXPECT_H
#define RLHF_EXPECT_H

#include <stdbool.h>
#include <stdint.h>

/* Starts a test: resets the counts and names the test in messages. */
void expect_begin(const char *test, bool verbose);
/* Ends the test; returns the number of failed checks (0 = pass). */
int expect_end(void);

/* Counts one check; when ok is false prints the message and counts a
 * failure. Returns ok. Use through EXPECT. */
bool expect_check(bool ok, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* |got - want| <= tol (and both finite); the message names what, both
 * values and the tolerance. Verbose runs print the difference either way. */
bool expect_near(double got, double want, double tol, const char *file, int line, const char *what);

/* Whether the test runs verbosely (measurements go to stdout then). */
bool expect_verbose(void);
/* Checks and failures so far in this process. */
int expect_checks(void);
int expect_fails(void);

/* The runner's side: counts of every check in every child process, kept in
 * shared memory mapped once before the first fork. */
void     expect_share(void);
uint64_t expect_shared_checks(void);

#define EXPECT(cond, ...) expect_check((cond), __FILE__, __LINE__, __VA_ARGS__)
#define EXPECT_NEAR(got, want, tol, what)                                                          \
    expect_near((got), (want), (tol), __FILE__, __LINE__, (what))

/* Runs call with stderr captured and expects it to return want and to have
 * logged a line containing text (the "name the input and the problem" rule). */
#define EXPECT_REFUSED(call, want, text, what)                                                     \
    do {                                                                                           \
        fileio_capture_begin();                                                                    \
        int   rc_ = (call);                                                                        \
        char *log_ = fileio_capture_end(expect_verbose());                                         \
        bool  has_ = strstr(log_, (text)) != NULL;                                                 \
        EXPECT(rc_ == (want) && has_, "%s: returned %d (%s), expected %d; log %s '%s'", (what),    \
               rc_, err_str(rc_), (want), has_ ? "has" : "lacks", (text));                         \
        free(log_);                                                                                \
    } while (0)

#endif
