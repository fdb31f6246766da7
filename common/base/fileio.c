#include "common/base/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/base/log.h"

struct AtomicFile {
    int  fd;             /* the open temp file */
    bool failed;         /* a write failed; commit must not publish */
    char path[PATH_MAX]; /* the target */
    char tmp[PATH_MAX];  /* the temp file beside it */
    char dir[PATH_MAX];  /* the directory holding both, for the fsync */
};

/* Splits path into its directory ("." when there is none) and base name. */
static int split_path(const char *path, char *dir, size_t dir_len, const char **base)
{
    const char *slash = strrchr(path, '/');
    if (!slash) {
        snprintf(dir, dir_len, ".");
        *base = path;
    } else if (slash == path) {
        snprintf(dir, dir_len, "/");
        *base = slash + 1;
    } else {
        size_t n = (size_t)(slash - path);
        if (n >= dir_len) return ERR_RANGE;
        memcpy(dir, path, n);
        dir[n] = '\0';
        *base = slash + 1;
    }
    return **base ? 0 : ERR_ARG;
}

int fileio_atomic_open(const char *path, AtomicFile **out)
{
    CHECK(path && out);
    *out = NULL;
    AtomicFile *f = xcalloc(1, sizeof *f);
    f->fd = -1;
    const char *base = NULL;
    if (strlen(path) >= sizeof f->path || split_path(path, f->dir, sizeof f->dir, &base) != 0) {
        log_error("fileio_atomic_open: path '%s' is empty, ends in '/' or is longer than %d", path,
                  PATH_MAX - 1);
        free(f);
        return ERR_ARG;
    }
    snprintf(f->path, sizeof f->path, "%s", path);
    int n = snprintf(f->tmp, sizeof f->tmp, "%s/.%s" FILEIO_TMP_TAG "XXXXXX", f->dir, base);
    if (n < 0 || (size_t)n >= sizeof f->tmp) {
        log_error("fileio_atomic_open: temp name for '%s' longer than %d", path, PATH_MAX - 1);
        free(f);
        return ERR_ARG;
    }
    f->fd = mkstemp(f->tmp);
    if (f->fd < 0) {
        log_error("fileio_atomic_open: mkstemp '%s': %s", f->tmp, strerror(errno));
        free(f);
        return ERR_IO;
    }
    /* mkstemp creates 0600; checkpoints and configs are meant to be shared. */
    if (fchmod(f->fd, 0644) != 0) {
        log_error("fileio_atomic_open: fchmod '%s': %s", f->tmp, strerror(errno));
        fileio_atomic_abort(&f);
        return ERR_IO;
    }
    *out = f;
    return 0;
}

int fileio_atomic_write(AtomicFile *f, const void *buf, size_t n)
{
    CHECK(f && f->fd >= 0 && (buf || n == 0));
    if (f->failed) return ERR_IO;
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(f->fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            log_error("fileio_atomic_write: write '%s' (for '%s'): %s", f->tmp, f->path,
                      w < 0 ? strerror(errno) : "wrote 0 bytes");
            f->failed = true;
            return ERR_IO;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

void fileio_atomic_abort(AtomicFile **fp)
{
    if (!fp || !*fp) return;
    AtomicFile *f = *fp;
    /* Close and unlink errors change nothing for the caller: the target was
     * never touched and a leftover temp file is only litter. */
    if (f->fd >= 0) close(f->fd);
    unlink(f->tmp);
    free(f);
    *fp = NULL;
}

int fileio_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        log_error("fileio_fsync_dir: open '%s': %s", dir, strerror(errno));
        return ERR_IO;
    }
    int rc = 0;
    if (fsync(fd) != 0) {
        log_error("fileio_fsync_dir: fsync '%s': %s", dir, strerror(errno));
        rc = ERR_IO;
    }
    close(fd); /* read-only directory handle: nothing to lose on close */
    return rc;
}

int fileio_atomic_commit(AtomicFile **fp)
{
    CHECK(fp && *fp);
    AtomicFile *f = *fp;
    if (f->failed) {
        fileio_atomic_abort(fp);
        return ERR_IO;
    }
    /* The data must be on disk before the rename makes it visible, or a crash
     * could leave the target name pointing at an empty file. */
    if (fsync(f->fd) != 0) {
        log_error("fileio_atomic_commit: fsync '%s': %s", f->tmp, strerror(errno));
        fileio_atomic_abort(fp);
        return ERR_IO;
    }
    int fd = f->fd;
    f->fd = -1;
    if (close(fd) != 0) {
        log_error("fileio_atomic_commit: close '%s': %s", f->tmp, strerror(errno));
        fileio_atomic_abort(fp);
        return ERR_IO;
    }
    if (rename(f->tmp, f->path) != 0) {
        log_error("fileio_atomic_commit: rename '%s' -> '%s': %s", f->tmp, f->path,
                  strerror(errno));
        fileio_atomic_abort(fp);
        return ERR_IO;
    }
    int rc = fileio_fsync_dir(f->dir);
    free(f);
    *fp = NULL;
    return rc;
}

int fileio_write_atomic(const char *path, const void *buf, size_t n)
{
    AtomicFile *f = NULL;
    int         rc = fileio_atomic_open(path, &f);
    if (rc != 0) return rc;
    rc = fileio_atomic_write(f, buf, n);
    if (rc != 0) {
        fileio_atomic_abort(&f);
        return rc;
    }
    return fileio_atomic_commit(&f);
}

int fileio_open_regular(const char *fn, const char *path, int *fd, uint64_t *size)
{
    *fd = open(path, O_RDONLY | O_CLOEXEC);
    if (*fd < 0) {
        int rc = errno == ENOENT ? ERR_NOTFOUND : ERR_IO;
        log_error("%s: '%s': %s", fn, path, strerror(errno));
        return rc;
    }
    struct stat st;
    const char *bad = NULL;
    if (fstat(*fd, &st) != 0)
        bad = strerror(errno);
    else if (!S_ISREG(st.st_mode))
        bad = "not a regular file";
    if (bad) {
        log_error("%s: '%s': %s", fn, path, bad);
        close(*fd);
        *fd = -1;
        return ERR_IO;
    }
    *size = (uint64_t)st.st_size;
    return 0;
}

int fileio_pread_exact(int fd, void *buf, size_t n, uint64_t off, size_t *got)
{
    char  *p = buf;
    size_t done = 0;
    int    rc = 0;
    while (done < n) {
        ssize_t r = pread(fd, p + done, n - done, (off_t)(off + done));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            rc = r < 0 ? ERR_IO : ERR_FORMAT;
            break;
        }
        done += (size_t)r;
    }
    if (got) *got = done;
    return rc;
}

int fileio_read_all(const char *path, size_t max_len, bool quiet_missing, char **buf, size_t *len)
{
    CHECK(path && buf && len);
    *buf = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            if (!quiet_missing) log_error("fileio_read_all: '%s' does not exist", path);
            return ERR_NOTFOUND;
        }
        log_error("fileio_read_all: open '%s': %s", path, strerror(errno));
        return ERR_IO;
    }
    int         rc = 0;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        log_error("fileio_read_all: fstat '%s': %s", path, strerror(errno));
        rc = ERR_IO;
        goto close_fd;
    }
    if (!S_ISREG(st.st_mode)) {
        log_error("fileio_read_all: '%s' is not a regular file", path);
        rc = ERR_IO;
        goto close_fd;
    }
    if ((unsigned long long)st.st_size > max_len) {
        log_error("fileio_read_all: '%s' is %lld bytes, limit %zu", path, (long long)st.st_size,
                  max_len);
        rc = ERR_RANGE;
        goto close_fd;
    }
    /* Read up to one byte past the expected size to notice a file that grew. */
    size_t cap = (size_t)st.st_size + 1, got = 0;
    char  *p = xmalloc(cap + 1);
    for (;;) {
        ssize_t r = read(fd, p + got, cap - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            log_error("fileio_read_all: read '%s': %s", path, strerror(errno));
            free(p);
            rc = ERR_IO;
            goto close_fd;
        }
        if (r == 0) break;
        got += (size_t)r;
        if (got == cap) {
            log_error("fileio_read_all: '%s' grew past %zu bytes while being read", path, cap - 1);
            free(p);
            rc = ERR_IO;
            goto close_fd;
        }
    }
    p[got] = '\0';
    *buf = p;
    *len = got;
close_fd:
    close(fd); /* read-only: nothing to lose on close */
    return rc;
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    int rc = type == FTW_DP ? rmdir(path) : unlink(path);
    if (rc != 0) log_error("fileio_remove_tree: remove '%s': %s", path, strerror(errno));
    return rc;
}

int fileio_remove_tree(const char *path)
{
    if (nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0) {
        log_error("fileio_remove_tree: '%s' not fully removed", path);
        return ERR_IO;
    }
    return 0;
}

static int   g_capture_saved = -1; /* the real stderr while capturing */
static FILE *g_capture_file = NULL;

void fileio_capture_begin(void)
{
    CHECK(g_capture_saved < 0);
    g_capture_file = tmpfile();
    CHECK(g_capture_file);
    fflush(stderr);
    g_capture_saved = dup(STDERR_FILENO);
    CHECK(g_capture_saved >= 0);
    CHECK(dup2(fileno(g_capture_file), STDERR_FILENO) >= 0);
}

char *fileio_capture_end(bool echo)
{
    CHECK(g_capture_saved >= 0);
    fflush(stderr);
    CHECK(dup2(g_capture_saved, STDERR_FILENO) >= 0);
    close(g_capture_saved);
    g_capture_saved = -1;
    /* Bound what a self-test can capture; a runaway logger is a bug there. */
    size_t cap = 1 << 16, n = 0;
    char  *text = xmalloc(cap + 1);
    rewind(g_capture_file);
    n = fread(text, 1, cap, g_capture_file);
    text[n] = '\0';
    fclose(g_capture_file);
    g_capture_file = NULL;
    if (echo) fputs(text, stderr);
    return text;
}
