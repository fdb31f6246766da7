#include "tests/support/testfs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "tests/support/expect.h"

int testfs_tmpdir_new(const char *tag, char *out, size_t cap)
{
    const char *tmp = getenv("TMPDIR");
    int         n = snprintf(out, cap, "%s/rlhf-%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", tag);
    if (n < 0 || (size_t)n >= cap) {
        fprintf(stderr, "testfs_tmpdir_new: '%s...' is too long\n", out);
        return ERR_RANGE;
    }
    if (!mkdtemp(out)) {
        fprintf(stderr, "testfs_tmpdir_new: mkdtemp '%s': %s\n", out, strerror(errno));
        return ERR_IO;
    }
    return 0;
}

int testfs_tmpdir_remove(const char *dir)
{
    const char *keep = getenv("RLHF_TEST_KEEP");
    if (keep && *keep) {
        fprintf(stderr, "  RLHF_TEST_KEEP: files left in '%s'\n", dir);
        return 0;
    }
    return fileio_remove_tree(dir);
}

bool testfs_path(char *out, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, cap, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < cap) return true;
    EXPECT(false, "path too long: '%s...'", out);
    return false;
}

char *testfs_read(const char *path, size_t max_len)
{
    /* Not fileio_read_all: a running program's file (a log, metrics.jsonl)
     * may grow while it is read, and what it held at the start is wanted. */
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno != ENOENT) fprintf(stderr, "testfs: open '%s': %s\n", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > max_len) {
        fprintf(stderr, "testfs: '%s' is not a regular file of at most %zu bytes\n", path, max_len);
        close(fd);
        return NULL;
    }
    size_t n = (size_t)st.st_size, got = 0;
    char  *buf = xmalloc(n + 1);
    while (got < n) {
        ssize_t r = pread(fd, buf + got, n - got, (off_t)got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break; /* shorter than it was: take what is there */
        got += (size_t)r;
    }
    close(fd);
    buf[got] = '\0';
    return buf;
}

int testfs_write(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "testfs_write: '%s': %s\n", path, strerror(errno));
        return ERR_IO;
    }
    size_t w = fwrite(data, 1, len, f);
    int    rc = fclose(f);
    if (w != len || rc != 0) {
        fprintf(stderr, "testfs_write: '%s': %zu of %zu bytes written\n", path, w, len);
        return ERR_IO;
    }
    return 0;
}
