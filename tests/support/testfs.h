/* testfs: the files of a test: a temp directory of its own, paths in it,
 * whole files read and written.
 *
 * A test makes its directory with testfs_tmpdir_new and removes it with
 * testfs_tmpdir_remove whatever the outcome (RLHF_TEST_KEEP=1 in the
 * environment keeps it, for a look at the files of a failed run).
 * Ownership: texts returned are the caller's (free). Errors: 0 or a
 * negative ERR_* code, printed on stderr where they happen; a path too long
 * for its buffer is a failed check (tests/support/expect.h). Thread-safe. */
#ifndef RLHF_TEST_TESTFS_H
#define RLHF_TEST_TESTFS_H

#include <stdbool.h>
#include <stddef.h>

/* Makes a new directory $TMPDIR/rlhf-TAG-XXXXXX (TMPDIR default /tmp) and
 * writes its path to out. Returns 0, ERR_RANGE if the path does not fit in
 * cap, or ERR_IO. */
int testfs_tmpdir_new(const char *tag, char *out, size_t cap);
/* Removes dir and everything in it, or with RLHF_TEST_KEEP set says on
 * stderr that it is left. Returns 0 or ERR_IO. */
int testfs_tmpdir_remove(const char *dir);

/* snprintf for paths. Returns true if it fit; if not, fails a check naming
 * the start of the path (which, truncated, then names nothing that exists)
 * and returns false. */
bool testfs_path(char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The whole file of at most max_len bytes as it is when opened (a file that
 * grows meanwhile is read to its size then), NUL-terminated (caller frees),
 * or NULL if it is missing (silently), larger or unreadable (logged). */
char *testfs_read(const char *path, size_t max_len);
/* Writes len bytes to path (created or truncated). Returns 0 or ERR_IO. */
int testfs_write(const char *path, const void *data, size_t len);

#endif
