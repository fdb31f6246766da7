/* fileio's self-test: atomic writes and aborts, bounded reads, the logged
 * refusals, and that no temp file is left behind. */
#include "common/base/fileio.h"

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "tests/support/expect.h"
#include "tests/test_list.h"

/* Entries in a directory other than . and .., or -1. */
static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return -1;
    int            n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

/* Reads path and expects it to hold exactly want. */
static void expect_contents(const char *path, const char *want)
{
    char  *buf = NULL;
    size_t len = 0;
    int    rc = fileio_read_all(path, 100, false, &buf, &len);
    EXPECT(rc == 0 && len == strlen(want) && !strcmp(buf, want),
           "fileio_read_all('%s'): rc %d, %zu bytes '%s', expected 0, '%s'", path, rc, len,
           buf ? buf : "", want);
    free(buf);
}

int fileio_selftest(bool verbose)
{
    char tmpl[] = "/tmp/rlhf-fileio-XXXXXX";
    char path[PATH_MAX];
    if (!EXPECT(mkdtemp(tmpl) != NULL, "mkdtemp('%s') failed", tmpl)) return expect_end();
    snprintf(path, sizeof path, "%s/a.txt", tmpl);

    int rc = fileio_write_atomic(path, "hello", 5);
    EXPECT(rc == 0, "fileio_write_atomic('%s'): %s, expected ok", path, err_str(rc));
    expect_contents(path, "hello");

    /* Overwrite; an aborted write leaves the committed contents alone. */
    rc = fileio_write_atomic(path, "world!", 6);
    EXPECT(rc == 0, "fileio_write_atomic('%s') over a file: %s, expected ok", path, err_str(rc));
    AtomicFile *f = NULL;
    rc = fileio_atomic_open(path, &f);
    if (EXPECT(rc == 0, "fileio_atomic_open('%s'): %s, expected ok", path, err_str(rc))) {
        rc = fileio_atomic_write(f, "partial", 7);
        EXPECT(rc == 0, "fileio_atomic_write: %s, expected ok", err_str(rc));
        fileio_atomic_abort(&f);
        EXPECT(f == NULL, "fileio_atomic_abort left the pointer set");
    }
    expect_contents(path, "world!");

    /* Size limit, missing file, missing directory; and nothing left behind. */
    char  *buf = NULL;
    size_t len = 0;
    fileio_capture_begin();
    int  r1 = fileio_read_all(path, 3, false, &buf, &len);
    int  r2 = fileio_read_all("/nonexistent-rlhf/x", 100, true, &buf, &len);
    char bad[PATH_MAX + 32];
    snprintf(bad, sizeof bad, "%s/no-such-dir/x", tmpl);
    int   r3 = fileio_write_atomic(bad, "x", 1);
    char *log = fileio_capture_end(verbose);
    bool  logged = strstr(log, "limit 3") && strstr(log, "no-such-dir");
    free(log);
    EXPECT(r1 == ERR_RANGE && r2 == ERR_NOTFOUND && r3 == ERR_IO && logged,
           "over the limit, missing file, missing directory: %d %d %d, expected %d %d %d; "
           "log %s 'limit 3' and 'no-such-dir'",
           r1, r2, r3, ERR_RANGE, ERR_NOTFOUND, ERR_IO, logged ? "names" : "lacks");
    free(buf);
    /* Only the target may remain: no temp file from the commits or the aborts. */
    int n = count_entries(tmpl);
    EXPECT(n == 1, "%d entries in '%s', expected only the target", n, tmpl);
    rc = fileio_remove_tree(tmpl);
    EXPECT(rc == 0, "fileio_remove_tree('%s'): %s, expected ok", tmpl, err_str(rc));
    if (verbose)
        printf("  fileio: atomic write, abort, bounded read %s\n",
               expect_fails() ? "FAILED" : "ok");
    return expect_end();
}
