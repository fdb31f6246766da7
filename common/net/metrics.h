/* metrics: a daemon's Prometheus endpoint. A registry of counters and
 * gauges (families with optional labels, e.g. rlhf_learner_leases{state=
 * "trained"}) that the daemon updates from its own loop, and an HTTP server
 * (libmicrohttpd, on its own internal polling thread) that renders it:
 *
 *   GET /metrics   200, text exposition format 0.0.4 (HELP and TYPE lines,
 *                  label values and help text escaped as the format says)
 *   GET /healthz   200 "ok" while the daemon's loop ticks its heartbeat
 *                  (metrics_tick); 503 once it has not ticked for stale_s
 *   other paths    404; other methods than GET and HEAD on the two paths 405
 *
 *     Metrics       *m = metrics_new();
 *     MetricsFamily *steps = metrics_family(m, METRICS_COUNTER, "x_steps_total", "steps", NULL);
 *     MetricsFamily *rej = metrics_family(m, METRICS_COUNTER, "x_rejects_total", "refused",
 *                                         "socket,reason");
 *     metrics_serve(m, "127.0.0.1:9100", 60);           // or ":0", then metrics_port(m)
 *     ... in the loop:
 *     metrics_tick(m);
 *     metrics_set(steps, NULL, 12);
 *     metrics_set(rej, METRICS_LABELS("results", "garbage"), 3);
 *
 * Ownership: metrics_new's caller owns the Metrics (metrics_free stops the
 * server first); families belong to it and live as long as it. Strings
 * given are copied.
 *
 * Threading: the registry is guarded by one mutex. The daemon's thread
 * defines families and sets values; the server thread only renders under
 * the mutex and reads the heartbeat (an atomic). metrics_lock/unlock group
 * several updates so that a scrape sees all of them or none (a step's
 * counters together). No socket or loop handle of the daemon is touched by
 * the server thread, and the server's own handles never leave it.
 *
 * Errors: a bad metric or label name, a duplicate family or a wrong count
 * of label values is a bug (CHECK). metrics_serve validates its address
 * (outside input) and returns ERR_ARG or ERR_IO after logging. */
#ifndef RLHF_METRICS_H
#define RLHF_METRICS_H

#include <stddef.h>

#include "common/base/flags.h"

#define METRICS_MAX_LABELS 4 /* label names of one family at most */
/* Seconds without a heartbeat before /healthz answers 503, unless the
 * daemon says otherwise (a learner step or an actor's batch may be long). */
#define METRICS_STALE_S 60.0

typedef enum {
    METRICS_COUNTER, /* only goes up (a restarted daemon starts again from 0) */
    METRICS_GAUGE,   /* any value */
} MetricsType;

typedef struct Metrics       Metrics;
typedef struct MetricsFamily MetricsFamily;

/* Label values for metrics_set / metrics_add, in the order of the family's
 * label names: METRICS_LABELS("results", "garbage"). */
#define METRICS_LABELS(...) ((const char *const[]){__VA_ARGS__, NULL})

/* A daemon's flag rows (common/base/flags.h), the same in every program:
 * a "Metrics:" heading, --metrics-addr HOST:PORT into *addr (NULL = off)
 * and --metrics-stale-s into *stale_s. */
#define METRICS_FLAGS(addr, stale_s)                                                               \
    FLAG_SECTION("Metrics:"),                                                                      \
        FLAG_STRING("metrics-addr", addr, "HOST:PORT",                                             \
                    "serve Prometheus /metrics and /healthz over HTTP here\n"                      \
                    "(port 0 picks one, logged)",                                                  \
                    .def = "off"),                                                                 \
        FLAG_DOUBLE("metrics-stale-s", stale_s, 0.1, 86400, "S",                                   \
                    "/healthz answers 503 after S s without a loop pass")

/* An empty registry whose heartbeat has just ticked. Caller owns. */
Metrics *metrics_new(void);
/* Stops the server (waiting for its thread), frees the registry and sets
 * *m to NULL. No-op on NULL. */
void metrics_free(Metrics **m);

/* Declares a family: name [a-zA-Z_:][a-zA-Z0-9_:]*, counters ending in
 * "_total" by convention; label_names comma-separated ("socket,reason"),
 * NULL or "" for none. A family without labels has its one series at 0
 * from the start; a labelled series appears when first set. Returns the
 * family (borrowed from m). CHECKs the names and that name is new. */
MetricsFamily *metrics_family(Metrics *m, MetricsType type, const char *name, const char *help,
                              const char *label_names);

/* The series of f with these label values (NULL-terminated, as many as the
 * family's label names, CHECKed; NULL for a family without labels) := v,
 * or += delta. NaN and infinities are rendered as the format spells them. */
void metrics_set(MetricsFamily *f, const char *const *label_values, double v);
void metrics_add(MetricsFamily *f, const char *const *label_values, double delta);
/* The value of a series, 0 if it was never set (tests, and daemons that
 * derive a rate from it). */
double metrics_get(MetricsFamily *f, const char *const *label_values);

/* Holds the registry's mutex across several updates (recursive: the
 * updates inside take it again). Every lock needs its unlock. */
void metrics_lock(Metrics *m);
void metrics_unlock(Metrics *m);

/* The daemon's loop is alive: /healthz answers 200 for stale_s from now. */
void metrics_tick(Metrics *m);

/* The registry in text exposition format 0.0.4, NUL-terminated, its length
 * in *len when len is not NULL. Caller frees. */
char *metrics_render(Metrics *m, size_t *len);

/* Starts the HTTP server on addr, "HOST:PORT" (HOST a name or address,
 * "[v6]" in brackets, empty for every IPv4 interface; PORT 0 picks a free
 * one, see metrics_port). /healthz turns 503 after stale_s (> 0) seconds
 * without a tick. Returns 0; ERR_ARG for a malformed address or a host
 * that does not resolve, ERR_IO when the server cannot start (port in use),
 * both logged; CHECKs that it is not already serving. */
int metrics_serve(Metrics *m, const char *addr, double stale_s);
/* The port the server listens on, 0 when it does not serve. */
int metrics_port(const Metrics *m);

#endif
