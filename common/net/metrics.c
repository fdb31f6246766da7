#include "common/net/metrics.h"

#include <arpa/inet.h>
#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "common/base/progress.h"

#define CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define SERVER_MAX_CONNECTIONS 64
#define SERVER_TIMEOUT_S 10 /* an idle or slow client is dropped after this */

/* One labelled value of a family. */
typedef struct {
    char **values; /* (n_labels) owned copies */
    double v;
} Series;

struct MetricsFamily {
    Metrics    *m;
    MetricsType type;
    char       *name;
    char       *help;
    char       *labels[METRICS_MAX_LABELS];
    int         n_labels;
    Series     *series;
    int         n_series, cap_series;
};

struct Metrics {
    pthread_mutex_t    mu; /* recursive: metrics_lock groups updates that lock again */
    MetricsFamily    **families;
    int                n_families, cap_families;
    _Atomic int64_t    tick_ms;  /* monotonic time of the last heartbeat */
    int64_t            stale_ms; /* set before the server starts, read by it */
    struct MHD_Daemon *daemon;
    int                port;
};

static int64_t now_ms(void)
{
    return (int64_t)(progress_now() * 1000.0);
}

/* ---- Registry ---------------------------------------------------------- */

static bool is_name(const char *s, bool allow_colon)
{
    if (!s || !*s) return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                  (allow_colon && c == ':') || (p > s && c >= '0' && c <= '9');
        if (!ok) return false;
    }
    return true;
}

Metrics *metrics_new(void)
{
    Metrics            *m = xcalloc(1, sizeof *m);
    pthread_mutexattr_t a;
    CHECK(pthread_mutexattr_init(&a) == 0);
    CHECK(pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE) == 0);
    CHECK(pthread_mutex_init(&m->mu, &a) == 0);
    pthread_mutexattr_destroy(&a);
    m->stale_ms = (int64_t)(METRICS_STALE_S * 1000.0);
    atomic_store(&m->tick_ms, now_ms());
    return m;
}

static void family_free(MetricsFamily *f)
{
    for (int i = 0; i < f->n_series; i++) {
        for (int k = 0; k < f->n_labels; k++) free(f->series[i].values[k]);
        free(f->series[i].values);
    }
    for (int k = 0; k < f->n_labels; k++) free(f->labels[k]);
    free(f->series);
    free(f->name);
    free(f->help);
    free(f);
}

void metrics_free(Metrics **mp)
{
    if (!mp || !*mp) return;
    Metrics *m = *mp;
    /* The server thread renders the registry: it goes first. */
    if (m->daemon) MHD_stop_daemon(m->daemon);
    for (int i = 0; i < m->n_families; i++) family_free(m->families[i]);
    free(m->families);
    pthread_mutex_destroy(&m->mu);
    free(m);
    *mp = NULL;
}

void metrics_lock(Metrics *m)
{
    CHECK(pthread_mutex_lock(&m->mu) == 0);
}

void metrics_unlock(Metrics *m)
{
    CHECK(pthread_mutex_unlock(&m->mu) == 0);
}

/* The series of f with these values, created at 0 if new; under the lock. */
static Series *series_find(MetricsFamily *f, const char *const *values)
{
    int n = 0;
    while (values && values[n]) n++;
    CHECK(n == f->n_labels);
    for (int i = 0; i < f->n_series; i++) {
        int k = 0;
        while (k < n && !strcmp(f->series[i].values[k], values[k])) k++;
        if (k == n) return &f->series[i];
    }
    if (f->n_series == f->cap_series) {
        f->cap_series = f->cap_series ? 2 * f->cap_series : 8;
        f->series = xrealloc(f->series, (size_t)f->cap_series * sizeof *f->series);
    }
    Series *s = &f->series[f->n_series++];
    s->values = n ? xcalloc((size_t)n, sizeof *s->values) : NULL;
    for (int k = 0; k < n; k++) s->values[k] = xstrdup(values[k]);
    s->v = 0;
    return s;
}

MetricsFamily *metrics_family(Metrics *m, MetricsType type, const char *name, const char *help,
                              const char *label_names)
{
    CHECK(is_name(name, true) && help);
    CHECK(type == METRICS_COUNTER || type == METRICS_GAUGE);
    MetricsFamily *f = xcalloc(1, sizeof *f);
    f->m = m;
    f->type = type;
    f->name = xstrdup(name);
    f->help = xstrdup(help);
    if (label_names && *label_names) {
        char *list = xstrdup(label_names), *save = NULL;
        for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            /* Names starting with "__" are reserved by Prometheus. */
            CHECK(f->n_labels < METRICS_MAX_LABELS && is_name(t, false) && strncmp(t, "__", 2));
            f->labels[f->n_labels++] = xstrdup(t);
        }
        free(list);
    }
    metrics_lock(m);
    for (int i = 0; i < m->n_families; i++) CHECK(strcmp(m->families[i]->name, name) != 0);
    if (m->n_families == m->cap_families) {
        m->cap_families = m->cap_families ? 2 * m->cap_families : 16;
        m->families = xrealloc(m->families, (size_t)m->cap_families * sizeof *m->families);
    }
    m->families[m->n_families++] = f;
    if (f->n_labels == 0) series_find(f, NULL);
    metrics_unlock(m);
    return f;
}

void metrics_set(MetricsFamily *f, const char *const *label_values, double v)
{
    metrics_lock(f->m);
    series_find(f, label_values)->v = v;
    metrics_unlock(f->m);
}

void metrics_add(MetricsFamily *f, const char *const *label_values, double delta)
{
    metrics_lock(f->m);
    series_find(f, label_values)->v += delta;
    metrics_unlock(f->m);
}

double metrics_get(MetricsFamily *f, const char *const *label_values)
{
    metrics_lock(f->m);
    double v = series_find(f, label_values)->v;
    metrics_unlock(f->m);
    return v;
}

void metrics_tick(Metrics *m)
{
    atomic_store(&m->tick_ms, now_ms());
}

/* ---- Text exposition format 0.0.4 -------------------------------------- */

typedef struct {
    char  *p;
    size_t len, cap;
} Buf;

static void buf_put(Buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        while (b->len + n + 1 > b->cap) b->cap = b->cap ? 2 * b->cap : 4096;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_str(Buf *b, const char *s)
{
    buf_put(b, s, strlen(s));
}

/* Escapes backslash and newline (HELP text), and the double quote too in
 * label values, as the format requires. */
static void buf_escaped(Buf *b, const char *s, bool is_label)
{
    for (; *s; s++) {
        if (*s == '\\')
            buf_str(b, "\\\\");
        else if (*s == '\n')
            buf_str(b, "\\n");
        else if (*s == '"' && is_label)
            buf_str(b, "\\\"");
        else
            buf_put(b, s, 1);
    }
}

/* Go's float syntax, which Prometheus parses: NaN, +Inf, -Inf; integers
 * without exponent or point while exact; else the shortest %g that round-trips. */
static void buf_value(Buf *b, double v)
{
    char s[40];
    if (isnan(v))
        snprintf(s, sizeof s, "NaN");
    else if (isinf(v))
        snprintf(s, sizeof s, "%s", v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 9007199254740992.0)
        snprintf(s, sizeof s, "%.0f", v);
    else {
        snprintf(s, sizeof s, "%.15g", v);
        if (strtod(s, NULL) != v) snprintf(s, sizeof s, "%.17g", v);
    }
    buf_str(b, s);
}

char *metrics_render(Metrics *m, size_t *len)
{
    Buf b = {0};
    buf_put(&b, "", 0);
    metrics_lock(m);
    for (int i = 0; i < m->n_families; i++) {
        const MetricsFamily *f = m->families[i];
        buf_str(&b, "# HELP ");
        buf_str(&b, f->name);
        buf_str(&b, " ");
        buf_escaped(&b, f->help, false);
        buf_str(&b, "\n# TYPE ");
        buf_str(&b, f->name);
        buf_str(&b, f->type == METRICS_COUNTER ? " counter\n" : " gauge\n");
        for (int j = 0; j < f->n_series; j++) {
            const Series *s = &f->series[j];
            buf_str(&b, f->name);
            for (int k = 0; k < f->n_labels; k++) {
                buf_str(&b, k ? "," : "{");
                buf_str(&b, f->labels[k]);
                buf_str(&b, "=\"");
                buf_escaped(&b, s->values[k], true);
                buf_str(&b, "\"");
            }
            buf_str(&b, f->n_labels ? "} " : " ");
            buf_value(&b, s->v);
            buf_str(&b, "\n");
        }
    }
    metrics_unlock(m);
    if (len) *len = b.len;
    return b.p;
}

/* ---- HTTP server (libmicrohttpd's thread) ------------------------------- */

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, char *body, size_t len,
                             bool is_owned, const char *content_type)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(
        len, body, is_owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!r) {
        if (is_owned) free(body);
        return MHD_NO;
    }
    enum MHD_Result ok = MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    if (ok == MHD_YES && status == MHD_HTTP_METHOD_NOT_ALLOWED)
        ok = MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    if (ok == MHD_YES) ok = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result reply_text(struct MHD_Connection *c, unsigned status, const char *text)
{
    return reply(c, status, (char *)text, strlen(text), false, "text/plain; charset=utf-8");
}

/* Every request is answered on its first call, from the headers alone: the
 * two paths take no body, so none is read (libmicrohttpd closes the
 * connection of a request whose body was not consumed). */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_len, void **req_state)
{
    Metrics *m = cls;
    bool     is_metrics = !strcmp(url, "/metrics"), is_health = !strcmp(url, "/healthz");
    if (!is_metrics && !is_health) return reply_text(c, MHD_HTTP_NOT_FOUND, "not found\n");
    if (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD))
        return reply_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
    if (is_health) {
        int64_t silent = now_ms() - atomic_load(&m->tick_ms);
        if (silent <= m->stale_ms) return reply_text(c, MHD_HTTP_OK, "ok\n");
        char text[96];
        int  n = snprintf(text, sizeof text, "stale: the loop has not ticked for %.1f s\n",
                          (double)silent / 1000.0);
        return reply(c, MHD_HTTP_SERVICE_UNAVAILABLE, xstrdup(text), (size_t)n, true,
                     "text/plain; charset=utf-8");
    }
    size_t len;
    char  *text = metrics_render(m, &len);
    return reply(c, MHD_HTTP_OK, text, len, true, CONTENT_TYPE);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && line[n - 1] == '\n') line[--n] = '\0';
    log_warn("metrics: %s", line);
}

/* Splits "HOST:PORT" ("[v6]:PORT") into host (NULL for "") and port. */
static int parse_addr(const char *addr, char *host, size_t cap, char *port, size_t port_cap)
{
    const char *colon = addr ? strrchr(addr, ':') : NULL;
    if (!colon) return ERR_ARG;
    const char *h = addr;
    size_t      hn = (size_t)(colon - addr);
    if (hn >= 2 && h[0] == '[' && h[hn - 1] == ']') {
        h++;
        hn -= 2;
    }
    if (hn >= cap || memchr(h, '[', hn) || memchr(h, ']', hn)) return ERR_ARG;
    memcpy(host, h, hn);
    host[hn] = '\0';
    const char *p = colon + 1;
    size_t      pn = strlen(p);
    if (pn == 0 || pn > 5 || pn >= port_cap || strspn(p, "0123456789") != pn || atoi(p) > 65535)
        return ERR_ARG;
    memcpy(port, p, pn + 1);
    return 0;
}

int metrics_serve(Metrics *m, const char *addr, double stale_s)
{
    CHECK(m && !m->daemon && stale_s > 0);
    char host[256], port[8];
    if (parse_addr(addr, host, sizeof host, port, sizeof port)) {
        log_error("metrics_serve: address '%.100s', expected HOST:PORT with PORT in 0..65535",
                  addr ? addr : "(null)");
        return ERR_ARG;
    }
    struct addrinfo  hints = {.ai_family = AF_UNSPEC,
                              .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    if (!host[0]) hints.ai_family = AF_INET; /* ":PORT": every IPv4 interface */
    int gai = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
    if (gai != 0 || !res) {
        log_error("metrics_serve: address '%.100s': host '%s' does not resolve (%s)", addr, host,
                  gai_strerror(gai));
        if (res) freeaddrinfo(res);
        return ERR_ARG;
    }
    /* IPv4 first when a name has both ("localhost"): what clients try first. */
    const struct addrinfo *ai = res;
    for (const struct addrinfo *p = res; p; p = p->ai_next)
        if (p->ai_family == AF_INET) {
            ai = p;
            break;
        }
    m->stale_ms = (int64_t)(stale_s * 1000.0);
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    /* The server thread inherits the signal mask: SIGINT and SIGTERM stay
     * with the daemon's own threads and their stop flag. */
    sigset_t block, saved;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &saved);
    /* The logger first, so that it sees the other options' complaints.
     * libmicrohttpd sets SO_REUSEADDR itself (a restarted daemon rebinds
     * its port at once); MHD_OPTION_LISTENING_ADDRESS_REUSE would add
     * SO_REUSEPORT and let two daemons share a port, so it is not set. */
    m->daemon =
        MHD_start_daemon(flags, (uint16_t)atoi(port), NULL, NULL, on_request, m,
                         MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, (void *)NULL, MHD_OPTION_SOCK_ADDR,
                         ai->ai_addr, MHD_OPTION_CONNECTION_LIMIT, (unsigned)SERVER_MAX_CONNECTIONS,
                         MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)SERVER_TIMEOUT_S, MHD_OPTION_END);
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    freeaddrinfo(res);
    if (!m->daemon) {
        log_error("metrics_serve: cannot serve HTTP on '%.100s' (port in use?)", addr);
        return ERR_IO;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(m->daemon, MHD_DAEMON_INFO_BIND_PORT);
    m->port = info ? info->port : atoi(port);
    bool is_v6 = strchr(host, ':') != NULL;
    log_info("metrics: serving http://%s%s%s:%d/metrics and /healthz", is_v6 ? "[" : "",
             host[0] ? host : "0.0.0.0", is_v6 ? "]" : "", m->port);
    return 0;
}

int metrics_port(const Metrics *m)
{
    return m->daemon ? m->port : 0;
}
