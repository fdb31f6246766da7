#include "common/base/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *err_str(int code)
{
    switch (code) {
    case ERR_OK:
        return "ok";
    case ERR_ARG:
        return "bad argument";
    case ERR_IO:
        return "i/o error";
    case ERR_FORMAT:
        return "malformed input";
    case ERR_MISMATCH:
        return "mismatch";
    case ERR_RANGE:
        return "value out of range";
    case ERR_NOTFOUND:
        return "not found";
    case ERR_UNSUPPORTED:
        return "unsupported";
    case ERR_AGAIN:
        return "try again";
    case ERR_TIMEOUT:
        return "timed out";
    case ERR_NONFINITE:
        return "non-finite number";
    }
    return "unknown error";
}

void err_why(char *why, size_t why_len, const char *fmt, ...)
{
    if (!why || why_len == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, why_len, fmt, ap);
    va_end(ap);
}

void err_check_failed(const char *expr, const char *file, int line)
{
    fprintf(stderr, "CHECK failed: %s at %s:%d\n", expr, file, line);
    fflush(stderr);
    abort();
}

static _Noreturn void oom(size_t n, const char *file, int line)
{
    fprintf(stderr, "out of memory: %zu bytes at %s:%d\n", n, file, line);
    fflush(stderr);
    abort();
}

void *err_xmalloc(size_t n, const char *file, int line)
{
    void *p = malloc(n ? n : 1);
    if (!p) oom(n, file, line);
    return p;
}

void *err_xcalloc(size_t count, size_t size, const char *file, int line)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) oom(count * size, file, line);
    return p;
}

void *err_xrealloc(void *p, size_t n, const char *file, int line)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) oom(n, file, line);
    return q;
}

char *err_xstrdup(const char *s, const char *file, int line)
{
    size_t n = strlen(s) + 1;
    char  *p = err_xmalloc(n, file, line);
    memcpy(p, s, n);
    return p;
}

void *err_xmalloc_aligned(size_t n, const char *file, int line)
{
    void *p = NULL;
    /* Round up so the size is a multiple of the alignment, as C11 requires. */
    size_t rounded = (n + 63) & ~(size_t)63;
    if (posix_memalign(&p, 64, rounded ? rounded : 64) != 0) oom(n, file, line);
    return p;
}
