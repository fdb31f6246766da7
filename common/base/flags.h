/* flags: parsing of command-line values, the one place every program's main
 * turns a flag's text into a number. On a bad value each function prints
 * "<prog>: --<flag> '<text>': expected ..." to stderr (the program name set
 * by flags_set_prog) and returns ERR_ARG; the caller prints usage and exits
 * with status 2. Not thread-safe (mains only). */
#ifndef RLHF_FLAGS_H
#define RLHF_FLAGS_H

#include <stdbool.h>
#include <stdint.h>

/* Name used in messages, e.g. "rlhf-actor" (borrowed; default "rlhf"). */
void flags_set_prog(const char *prog);

/* A decimal integer in [lo, hi]. */
int flags_int(const char *flag, const char *text, long lo, long hi, int *out);
int flags_long(const char *flag, const char *text, long lo, long hi, long *out);
/* A decimal integer in [0, 2^64). */
int flags_u64(const char *flag, const char *text, uint64_t *out);
/* A finite number in [lo, hi]. */
int flags_float(const char *flag, const char *text, double lo, double hi, float *out);
int flags_double(const char *flag, const char *text, double lo, double hi, double *out);
/* error, warn, info or debug -> LOG_ERROR..LOG_DEBUG. */
int flags_log_level(const char *flag, const char *text, int *out);

#endif
