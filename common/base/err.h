/* err: error codes, invariant checks and checked allocation for all of rlhf.c.
 *
 * Functions that can fail return int: 0 on success or a negative ERR_* code,
 * which err_str turns into text. CHECK guards invariants and API misuse: it
 * stays on in release builds, prints the expression, file and line, and
 * aborts. It is never used on input from files, flags or peers; that input is
 * validated, logged and returned as an error. The x-allocators abort with the
 * size and call site on failure, the one sanctioned exit outside main.
 * Everything here is thread-safe. */
#ifndef RLHF_ERR_H
#define RLHF_ERR_H

#include <stdbool.h>
#include <stddef.h>

enum {
    ERR_OK = 0,
    ERR_ARG = -1,      /* bad argument or flag value */
    ERR_IO = -2,       /* a system call on a file or socket failed */
    ERR_FORMAT = -3,   /* input is malformed, truncated or inconsistent */
    ERR_MISMATCH = -4, /* input is well formed but does not fit (shape, name, dtype) */
    ERR_RANGE = -5,    /* a value is out of its allowed range */
    ERR_NOTFOUND = -6, /* a named file, tensor or key is missing */
    ERR_UNSUPPORTED = -7,
    ERR_AGAIN = -8, /* nothing to do now; try later */
    ERR_TIMEOUT = -9,
    ERR_NONFINITE = -10, /* NaN or infinity where a finite number is required */
};

/* Static text for an ERR_* code; never NULL. */
const char *err_str(int code);

/* Writes the reason a validator refused its input into why (why_len bytes,
 * truncated to fit, always terminated); a no-op when why is NULL or why_len
 * is 0, so callers may pass no buffer. */
void err_why(char *why, size_t why_len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Aborts with the failed expression, file and line. Used via CHECK. */
_Noreturn void err_check_failed(const char *expr, const char *file, int line);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) err_check_failed(#cond, __FILE__, __LINE__);                                  \
    } while (0)

void *err_xmalloc(size_t n, const char *file, int line);
void *err_xcalloc(size_t count, size_t size, const char *file, int line);
void *err_xrealloc(void *p, size_t n, const char *file, int line);
char *err_xstrdup(const char *s, const char *file, int line);
/* 64-byte aligned, for the big numeric blocks; release with free(). */
void *err_xmalloc_aligned(size_t n, const char *file, int line);

#define xmalloc(n) err_xmalloc((n), __FILE__, __LINE__)
#define xcalloc(c, s) err_xcalloc((c), (s), __FILE__, __LINE__)
#define xrealloc(p, n) err_xrealloc((p), (n), __FILE__, __LINE__)
#define xstrdup(s) err_xstrdup((s), __FILE__, __LINE__)
#define xmalloc_aligned(n) err_xmalloc_aligned((n), __FILE__, __LINE__)

#endif
