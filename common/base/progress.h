/* progress: one live status line for long jobs, with rate and ETA.
 *
 * On a terminal the line is redrawn in place (carriage return); otherwise a
 * full line is printed at most every `every_s` seconds, so logs stay short.
 * Writes to stderr. A Progress is plain data owned by its one thread. */
#ifndef RLHF_PROGRESS_H
#define RLHF_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    const char *label;   /* e.g. "sft" */
    const char *unit;    /* what is counted, e.g. "step" */
    int64_t     total;   /* expected count, 0 if unknown (no ETA) */
    double      every_s; /* minimum seconds between lines when not a tty */
    double      t_start, t_last;
    bool        is_tty;
} Progress;

void progress_start(Progress *p, const char *label, const char *unit, int64_t total);
/* Reports done units so far, with an optional extra text (e.g. "loss 0.31").
 * Prints only when enough time has passed, unless force. */
void progress_update(Progress *p, int64_t done, const char *extra, bool force);
/* Ends the live line with a newline (terminal only). */
void progress_end(Progress *p);
/* Seconds since progress_start. */
double progress_elapsed(const Progress *p);
/* Monotonic seconds, for callers that time things. */
double progress_now(void);
/* Formats seconds as "1h02m", "3m05s" or "42s" into buf. */
void progress_fmt_duration(double s, char *buf, int cap);

#endif
