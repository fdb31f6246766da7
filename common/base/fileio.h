/* fileio: crash-safe file writing and bounded file reading.
 *
 * An AtomicFile is written to a hidden temp file in the target's directory
 * (".<name>.tmp-XXXXXX"); commit fsyncs it, renames it over the target and
 * fsyncs the directory, so after a crash the target holds either its old
 * contents or the complete new ones, never a mix. Readers never see the temp
 * file under the target's name.
 *
 * Ownership: fileio_atomic_open's caller owns the AtomicFile until commit or
 * abort, which free it and NULL the caller's pointer. Threading: an
 * AtomicFile belongs to one thread; the capture helpers change the process's
 * stderr and are for single-threaded self-tests only. Errors: every function
 * that can fail returns 0 or a negative ERR_* code and logs the failing call,
 * the path and errno once. */
#ifndef RLHF_FILEIO_H
#define RLHF_FILEIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Prefix of every temp file name fileio creates is "." + target name + this. */
#define FILEIO_TMP_TAG ".tmp-"

typedef struct AtomicFile AtomicFile;

/* Creates the temp file for target path (mode 0644). Returns 0 with *out set,
 * or ERR_IO (directory missing or not writable; logged). */
int fileio_atomic_open(const char *path, AtomicFile **out);
/* Appends n bytes, retrying short writes and EINTR. Returns 0 or ERR_IO. */
int fileio_atomic_write(AtomicFile *f, const void *buf, size_t n);
/* Makes the written bytes the target's contents: fsync, close, rename,
 * fsync of the directory. Always frees *f and sets it to NULL. Returns 0 or
 * ERR_IO: if the fsync, close or rename fails, the temp file is removed and
 * the target is untouched; if only the final directory fsync fails, the new
 * contents are in place but may not survive a crash. */
int fileio_atomic_commit(AtomicFile **f);
/* Discards the temp file and frees *f; no-op on NULL. The target is untouched. */
void fileio_atomic_abort(AtomicFile **f);

/* Writes buf as the whole new contents of path, atomically as above. */
int fileio_write_atomic(const char *path, const void *buf, size_t n);

/* fsyncs a directory so renames and unlinks inside it are durable. Returns 0
 * or ERR_IO. */
int fileio_fsync_dir(const char *dir);

/* Reads a whole file of at most max_len bytes into a new buffer with one
 * extra NUL byte after the contents (caller owns, free()). Returns 0;
 * ERR_NOTFOUND if the file does not exist; ERR_RANGE if it is larger than
 * max_len; ERR_IO otherwise. Every failure is logged except ERR_NOTFOUND
 * when quiet_missing is set, for callers to whom an absent file is normal. */
int fileio_read_all(const char *path, size_t max_len, bool quiet_missing, char **buf, size_t *len);

/* Opens path read-only (close-on-exec) and checks it is a regular file;
 * writes the descriptor to *fd and the size to *size. fn names the caller in
 * the log line. Returns 0; ERR_NOTFOUND if it does not exist; ERR_IO
 * otherwise (not a regular file, fstat failed). Every failure is logged and
 * leaves *fd at -1. */
int fileio_open_regular(const char *fn, const char *path, int *fd, uint64_t *size);

/* Reads exactly n bytes at file offset off of fd into buf with pread,
 * retrying short reads and EINTR. Returns 0; ERR_IO if a read fails (errno
 * says why); ERR_FORMAT if the file ends first. *got (if got is not NULL)
 * is set to the bytes read, n on success. Not logged: the caller knows what
 * it was reading and names it. */
int fileio_pread_exact(int fd, void *buf, size_t n, uint64_t off, size_t *got);

/* Removes a directory tree created by a self-test (files and directories
 * only, no symlinks followed). Returns 0 or ERR_IO (logged). */
int fileio_remove_tree(const char *path);

/* Self-test helpers: redirect stderr into a temp file until
 * fileio_capture_end, which restores stderr and returns what was written
 * (caller owns, free()). With echo set the captured text is also copied to
 * the restored stderr, so verbose runs still show logged errors. Lets a test
 * check that a refused input was logged with the right details while keeping
 * expected errors out of quiet runs. CHECKs on misuse (nested capture). */
void  fileio_capture_begin(void);
char *fileio_capture_end(bool echo);

#endif
