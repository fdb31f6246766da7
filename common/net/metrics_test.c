#include "tests/test_list.h"
#include "common/net/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/log.h"
#include "tests/support/expect.h"
#include "tests/support/http.h"

#define HTTP_TIMEOUT_S 5.0

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

/* The registry rendered without a server: HELP and TYPE lines, labels,
 * escaping, the number syntax. */
static void test_render(void)
{
    Metrics       *m = metrics_new();
    MetricsFamily *steps = metrics_family(m, METRICS_COUNTER, "t_steps_total", "steps taken", NULL);
    MetricsFamily *leases =
        metrics_family(m, METRICS_GAUGE, "t_leases", "groups by state", "state");
    MetricsFamily *rej =
        metrics_family(m, METRICS_COUNTER, "t_rejects_total",
                       "refused frames\\by \"socket\"\nand reason", "socket,reason");
    MetricsFamily *num = metrics_family(m, METRICS_GAUGE, "t_num", "numbers", "k");
    metrics_set(steps, NULL, 12);
    metrics_set(leases, METRICS_LABELS("trained"), 40);
    metrics_set(leases, METRICS_LABELS("in_flight"), 8);
    metrics_add(leases, METRICS_LABELS("trained"), 2);
    metrics_set(rej, METRICS_LABELS("results", "garbage"), 3);
    metrics_set(rej, METRICS_LABELS("we\"ird\\na\nme", "x"), 1);
    metrics_set(num, METRICS_LABELS("half"), 0.5);
    metrics_set(num, METRICS_LABELS("nan"), NAN);
    metrics_set(num, METRICS_LABELS("inf"), INFINITY);
    metrics_set(num, METRICS_LABELS("ninf"), -INFINITY);
    metrics_set(num, METRICS_LABELS("big"), 1e300);
    metrics_set(num, METRICS_LABELS("neg"), -3);
    metrics_set(num, METRICS_LABELS("third"), 1.0 / 3.0);
    EXPECT(metrics_get(leases, METRICS_LABELS("trained")) == 42,
           "metrics_get trained %g, expected 42 (40 set, 2 added)",
           metrics_get(leases, METRICS_LABELS("trained")));
    size_t len = 0;
    char  *text = metrics_render(m, &len);
    EXPECT(len == strlen(text), "render length %zu, strlen %zu", len, strlen(text));
    static const char *const want[] = {
        "# HELP t_steps_total steps taken\n# TYPE t_steps_total counter\nt_steps_total 12\n",
        "# TYPE t_leases gauge\nt_leases{state=\"trained\"} 42\nt_leases{state=\"in_flight\"} 8\n",
        /* HELP escapes backslash and newline, not the quote. */
        "# HELP t_rejects_total refused frames\\\\by \"socket\"\\nand reason\n",
        "t_rejects_total{socket=\"results\",reason=\"garbage\"} 3\n",
        /* Label values escape the quote as well. */
        "t_rejects_total{socket=\"we\\\"ird\\\\na\\nme\",reason=\"x\"} 1\n",
        "t_num{k=\"half\"} 0.5\n",
        "t_num{k=\"nan\"} NaN\n",
        "t_num{k=\"inf\"} +Inf\n",
        "t_num{k=\"ninf\"} -Inf\n",
        "t_num{k=\"big\"} 1e+300\n",
        "t_num{k=\"neg\"} -3\n",
        "t_num{k=\"third\"} 0.33333333333333331\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        EXPECT(strstr(text, want[i]) != NULL, "render lacks '%s' in:\n%s", want[i], text);
    double v = 0;
    EXPECT(http_prom_value(text, "t_num{k=\"third\"}", &v) && v == 1.0 / 3.0,
           "the rendered third reads back as %.17g, expected %.17g", v, 1.0 / 3.0);
    /* Every line is a comment or "name{labels} value": no blank lines. */
    EXPECT(!strstr(text, "\n\n") && text[len - 1] == '\n',
           "render has blank lines or no final \\n");
    free(text);
    metrics_free(&m);
    EXPECT(m == NULL, "metrics_free did not clear the pointer");
    metrics_free(&m); /* no-op */
}

static void expect_reply(int port, const char *method, const char *path, int status,
                         const char *body_has, const char *what)
{
    HttpReply r;
    int       rc = http_request(port, method, path, NULL, HTTP_TIMEOUT_S, false, &r);
    if (!EXPECT(rc == 0, "%s: %s %s: %s", what, method, path, err_str(rc))) return;
    EXPECT(r.status == status, "%s: %s %s: status %d, expected %d (%s)", what, method, path,
           r.status, status, r.body);
    if (body_has)
        EXPECT(strstr(r.body, body_has) != NULL, "%s: %s %s: body lacks '%s': '%s'", what, method,
               path, body_has, r.body);
    http_reply_free(&r);
}

/* The server on a port of its choosing: the two paths, 404 and 405, HEAD,
 * a value that changes between scrapes, the heartbeat going stale. */
static void test_server(bool verbose)
{
    Metrics       *m = metrics_new();
    MetricsFamily *steps = metrics_family(m, METRICS_COUNTER, "t_steps_total", "steps taken", NULL);
    int            rc = metrics_serve(m, "127.0.0.1:0", 0.4);
    int            port = metrics_port(m);
    if (!EXPECT(rc == 0 && port > 0, "metrics_serve 127.0.0.1:0: rc %d port %d", rc, port)) {
        metrics_free(&m);
        return;
    }
    if (verbose) printf("  serving on port %d\n", port);

    HttpReply r;
    rc = http_request(port, "GET", "/metrics", NULL, HTTP_TIMEOUT_S, false, &r);
    if (EXPECT(rc == 0 && r.status == 200, "GET /metrics: rc %d status %d", rc, r.status)) {
        char ct[128] = "";
        http_header(&r, "Content-Type", ct, sizeof ct);
        EXPECT(strstr(ct, "text/plain") && strstr(ct, "version=0.0.4"),
               "GET /metrics: Content-Type '%s', expected text/plain; version=0.0.4", ct);
        double v = -1;
        EXPECT(http_prom_value(r.body, "t_steps_total", &v) && v == 0,
               "first scrape: t_steps_total %g, expected 0 in '%s'", v, r.body);
        EXPECT(strstr(r.body, "# TYPE t_steps_total counter\n") != NULL,
               "GET /metrics: no TYPE line in '%s'", r.body);
        http_reply_free(&r);
    }
    metrics_set(steps, NULL, 7);
    rc = http_request(port, "GET", "/metrics", NULL, HTTP_TIMEOUT_S, false, &r);
    if (EXPECT(rc == 0 && r.status == 200, "second GET /metrics: rc %d status %d", rc, r.status)) {
        double v = -1;
        EXPECT(http_prom_value(r.body, "t_steps_total", &v) && v == 7,
               "second scrape: t_steps_total %g, expected 7", v);
        http_reply_free(&r);
    }
    rc = http_request(port, "HEAD", "/metrics", NULL, HTTP_TIMEOUT_S, false, &r);
    if (EXPECT(rc == 0 && r.status == 200, "HEAD /metrics: rc %d status %d", rc, r.status)) {
        EXPECT(r.body_len == 0, "HEAD /metrics: %zu body bytes, expected none", r.body_len);
        http_reply_free(&r);
    }
    expect_reply(port, "GET", "/healthz", 200, "ok", "fresh heartbeat");
    expect_reply(port, "GET", "/", 404, NULL, "root");
    expect_reply(port, "GET", "/metrics/x", 404, NULL, "path below /metrics");
    expect_reply(port, "GET", "/favicon.ico", 404, NULL, "other path");
    expect_reply(port, "DELETE", "/metrics", 405, NULL, "DELETE");
    rc = http_request(port, "POST", "/metrics", "a=1&b=2", HTTP_TIMEOUT_S, false, &r);
    if (EXPECT(rc == 0 && r.status == 405, "POST /metrics with a body: rc %d status %d", rc,
               r.status)) {
        char allow[64] = "";
        EXPECT(http_header(&r, "Allow", allow, sizeof allow) && strstr(allow, "GET"),
               "405 without an Allow header naming GET: '%s'", allow);
        http_reply_free(&r);
    }
    /* A request that is not HTTP at all gets an error status, and the
     * server keeps serving. */
    rc = http_request(port, "\x01\x02", "/metrics", NULL, HTTP_TIMEOUT_S, true, &r);
    if (rc == 0) {
        EXPECT(r.status >= 400, "garbage request: status %d, expected an error", r.status);
        http_reply_free(&r);
    }
    expect_reply(port, "GET", "/metrics", 200, "t_steps_total 7", "after bad requests");

    /* No tick for longer than stale_s: 503; a tick brings 200 back. */
    sleep_s(0.6);
    expect_reply(port, "GET", "/healthz", 503, "stale", "silent loop");
    metrics_tick(m);
    expect_reply(port, "GET", "/healthz", 200, "ok", "ticked again");

    /* The port is taken: a second server there fails, logged. */
    Metrics *m2 = metrics_new();
    char     addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    EXPECT_REFUSED(metrics_serve(m2, addr, 1), ERR_IO, "cannot serve", "a port in use");
    EXPECT(metrics_port(m2) == 0, "metrics_port of a server that failed %d", metrics_port(m2));
    metrics_free(&m2);
    metrics_free(&m);
    rc = http_request(port, "GET", "/metrics", NULL, 1.0, true, &r);
    EXPECT(rc != 0, "the server still answers after metrics_free");
    if (rc == 0) http_reply_free(&r);
}

static void test_bad_addresses(void)
{
    static const char *const bad[] = {
        "127.0.0.1",     "127.0.0.1:", "127.0.0.1:65536",          "127.0.0.1:-1",
        "127.0.0.1:80x", "[::1:0",     "no-such-host.invalid:9100"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        Metrics *m = metrics_new();
        EXPECT_REFUSED(metrics_serve(m, bad[i], 1), ERR_ARG, "metrics_serve: address", bad[i]);
        metrics_free(&m);
    }
    /* A host name and the IPv4 wildcard are fine. */
    static const char *const good[] = {"localhost:0", ":0"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        Metrics *m = metrics_new();
        int      rc = metrics_serve(m, good[i], 1);
        int      port = metrics_port(m);
        EXPECT(rc == 0 && port > 0, "metrics_serve %s: rc %d port %d", good[i], rc, port);
        if (rc == 0) expect_reply(port, "GET", "/healthz", 200, "ok", good[i]);
        metrics_free(&m);
    }
}

/* A writer thread updates two counters under one lock (always equal) while
 * scraper threads read: every scrape is whole, consistent and monotonic. */
typedef struct {
    Metrics       *m;
    MetricsFamily *a, *b;
    int            port;
    atomic_int     is_done;
    int            n_scrapes, n_bad, n_errors;
    char           bad[256];
} Race;

static void *writer_main(void *arg)
{
    Race *r = arg;
    for (int i = 1; !atomic_load(&r->is_done); i++) {
        metrics_lock(r->m);
        metrics_set(r->a, NULL, i);
        metrics_set(r->b, METRICS_LABELS("x"), i);
        metrics_unlock(r->m);
        metrics_tick(r->m);
    }
    return NULL;
}

static void *scraper_main(void *arg)
{
    Race  *r = arg;
    double last = 0;
    for (int i = 0; i < 40; i++) {
        HttpReply h;
        if (http_request(r->port, "GET", "/metrics", NULL, HTTP_TIMEOUT_S, true, &h) != 0) {
            r->n_errors++;
            continue;
        }
        double a = -1, b = -2;
        bool   ok = h.status == 200 && http_prom_value(h.body, "t_a_total", &a) &&
                  http_prom_value(h.body, "t_b_total{k=\"x\"}", &b) && a == b && a >= last;
        if (!ok && !r->n_bad)
            snprintf(r->bad, sizeof r->bad, "status %d a %g b %g last %g", h.status, a, b, last);
        r->n_bad += !ok;
        r->n_scrapes++;
        last = a;
        http_reply_free(&h);
    }
    return NULL;
}

static void test_concurrent(bool verbose)
{
    Race r = {.m = metrics_new()};
    r.a = metrics_family(r.m, METRICS_COUNTER, "t_a_total", "a", NULL);
    r.b = metrics_family(r.m, METRICS_COUNTER, "t_b_total", "b", "k");
    /* Both series exist before the first scrape: one the writer has not yet
     * reached (a loaded machine may start the scrapers first) is no tear. */
    metrics_set(r.a, NULL, 0);
    metrics_set(r.b, METRICS_LABELS("x"), 0);
    /* Many series, so a render takes long enough to overlap the writer. */
    MetricsFamily *pad = metrics_family(r.m, METRICS_GAUGE, "t_pad", "padding", "i");
    for (int i = 0; i < 500; i++) {
        char k[16];
        snprintf(k, sizeof k, "%d", i);
        metrics_set(pad, METRICS_LABELS(k), i);
    }
    if (!EXPECT(metrics_serve(r.m, "127.0.0.1:0", 5) == 0, "serve for the race")) {
        metrics_free(&r.m);
        return;
    }
    r.port = metrics_port(r.m);
    enum { N_SCRAPERS = 3 };
    Race      per[N_SCRAPERS];
    pthread_t w, s[N_SCRAPERS];
    CHECK(pthread_create(&w, NULL, writer_main, &r) == 0);
    for (int i = 0; i < N_SCRAPERS; i++) {
        per[i] = (Race){.port = r.port};
        CHECK(pthread_create(&s[i], NULL, scraper_main, &per[i]) == 0);
    }
    for (int i = 0; i < N_SCRAPERS; i++) pthread_join(s[i], NULL);
    atomic_store(&r.is_done, 1);
    pthread_join(w, NULL);
    int n = 0, bad = 0, errors = 0;
    for (int i = 0; i < N_SCRAPERS; i++) {
        n += per[i].n_scrapes;
        bad += per[i].n_bad;
        errors += per[i].n_errors;
        if (per[i].n_bad) EXPECT(false, "scraper %d: inconsistent scrape: %s", i, per[i].bad);
    }
    double final = metrics_get(r.a, NULL);
    if (verbose) printf("  %d concurrent scrapes while the writer reached %g\n", n, final);
    EXPECT(n == N_SCRAPERS * 40 && bad == 0 && errors == 0,
           "concurrent scrapes: %d whole of %d, %d inconsistent, %d failed", n, N_SCRAPERS * 40,
           bad, errors);
    EXPECT(final > 1, "the writer made no progress during the scrapes (%g)", final);
    metrics_free(&r.m);
}

int metrics_selftest(bool verbose)
{
    log_init("metrics_test", verbose ? LOG_INFO : LOG_ERROR);
    test_render();
    test_server(verbose);
    test_bad_addresses();
    test_concurrent(verbose);
    return expect_end();
}
