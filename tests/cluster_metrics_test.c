/* cluster_metrics_test: the Prometheus endpoints of a running cluster, with
 * real processes on real sockets (tests/support/testcl.h). The learner, a
 * reward server and an actor with --metrics-addr train a few steps: each
 * serves /metrics and /healthz; the learner's scraped step and lease
 * counters equal the last record of metrics.jsonl (the actor frozen
 * meanwhile), the accounting identity holds in the scraped values, and the
 * actor's and reward server's counters show the work.
 *
 * Returns the number of failed checks (0 = pass). */
#include "tests/test_list.h"

#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "tests/support/expect.h"
#include "tests/support/http.h"
#include "tests/support/proc.h"
#include "tests/support/testcl.h"

/* A test still running after this long fails, and its processes are killed. */
#define METRICS_BUDGET_S 100.0

/* GET /metrics of the daemon on port: the body (caller frees) or NULL. */
static char *scrape(int port, const char *who)
{
    HttpReply r;
    int       rc = http_request(port, "GET", "/metrics", NULL, 5.0, false, &r);
    if (rc) {
        EXPECT(false, "%s: GET /metrics on port %d: %s", who, port, err_str(rc));
        return NULL;
    }
    char *body = r.body;
    r.body = NULL;
    bool ok = EXPECT(r.status == 200, "%s: GET /metrics: status %d", who, r.status);
    http_reply_free(&r);
    if (!ok) free(body);
    return ok ? body : NULL;
}

/* A scrape of the daemon on port once its sample series is above 0: the
 * daemons copy their counters into the registry a few times a second. */
static char *scrape_when_positive(TestCl *c, int port, const char *who, const char *series)
{
    for (double t0 = testcl_now(); testcl_now() - t0 < 10.0 && !testcl_out_of_time(c);) {
        char  *text = scrape(port, who);
        double v = 0;
        if (!text || (http_prom_value(text, series, &v) && v > 0)) return text;
        free(text);
        testcl_sleep_ms(50);
    }
    return scrape(port, who);
}

/* The value of one sample of a scrape (NaN, after a failed check, if it is missing). */
static double sample(const char *text, const char *series, const char *who)
{
    double v = NAN;
    EXPECT(text && http_prom_value(text, series, &v), "%s: no sample '%s'", who, series);
    return v;
}

static void expect_status(int port, const char *path, int status, const char *who)
{
    HttpReply r;
    int       rc = http_request(port, "GET", path, NULL, 5.0, false, &r);
    if (!EXPECT(rc == 0, "%s: GET %s: %s", who, path, err_str(rc))) return;
    EXPECT(r.status == status, "%s: GET %s: status %d, expected %d (%s)", who, path, r.status,
           status, r.body);
    http_reply_free(&r);
}

/* The scraped learner against a metrics record: the step, the version and
 * every lease counter exactly, the per-step statistics to the record's
 * six significant digits. */
static void expect_agrees(const char *text, const json_t *rec)
{
    static const struct {
        const char *key, *series;
    } exact[] = {
        {"step", "rlhf_learner_step"},
        {"version", "rlhf_learner_policy_version"},
        {"epoch", "rlhf_learner_epoch"},
        {"issued", "rlhf_learner_groups_total{state=\"issued\"}"},
        {"trained", "rlhf_learner_groups_total{state=\"trained\"}"},
        {"dropped_stale", "rlhf_learner_groups_total{state=\"dropped_stale\"}"},
        {"reissued", "rlhf_learner_groups_total{state=\"reissued\"}"},
        {"failed", "rlhf_learner_groups_total{state=\"failed\"}"},
        {"duplicates", "rlhf_learner_groups_total{state=\"duplicates\"}"},
        {"in_flight", "rlhf_learner_groups{state=\"in_flight\"}"},
        {"buffered", "rlhf_learner_groups{state=\"buffered\"}"},
        {"leases", "rlhf_learner_leases_total"},
        {"leases_expired", "rlhf_learner_leases_expired_total"},
        {"staleness_max", "rlhf_learner_staleness_max"},
    };
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++) {
        double got = sample(text, exact[i].series, "learner");
        EXPECT(got == (double)testcl_jint(rec, exact[i].key),
               "learner: /metrics %s = %.17g, metrics.jsonl %s = %" PRId64, exact[i].series, got,
               exact[i].key, testcl_jint(rec, exact[i].key));
    }
    static const struct {
        const char *key, *series;
    } reals[] = {
        {"samples_per_s", "rlhf_learner_samples_per_second"},
        {"reward_mean", "rlhf_learner_reward_mean"},
        {"accuracy", "rlhf_learner_accuracy"},
        {"kl_ref", "rlhf_learner_kl_ref"},
        {"staleness_mean", "rlhf_learner_staleness_mean"},
        {"step_s", "rlhf_learner_step_seconds"},
        {"entropy", "rlhf_learner_entropy"},
        {"lr", "rlhf_learner_lr"},
    };
    for (size_t i = 0; i < sizeof reals / sizeof reals[0]; i++) {
        double got = sample(text, reals[i].series, "learner");
        double want = json_number_value(json_object_get(rec, reals[i].key));
        EXPECT(fabs(got - want) <= 1e-5 * fabs(want) + 1e-9,
               "learner: /metrics %s = %.9g, metrics.jsonl %s = %.9g", reals[i].series, got,
               reals[i].key, want);
    }
    /* The accounting identity, in the scraped values alone. */
    double issued = sample(text, "rlhf_learner_groups_total{state=\"issued\"}", "learner");
    double sum = 0;
    static const char *const parts[] = {
        "rlhf_learner_groups_total{state=\"trained\"}",
        "rlhf_learner_groups_total{state=\"dropped_stale\"}",
        "rlhf_learner_groups_total{state=\"reissued\"}",
        "rlhf_learner_groups_total{state=\"failed\"}",
        "rlhf_learner_groups{state=\"in_flight\"}",
        "rlhf_learner_groups{state=\"buffered\"}",
    };
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        sum += sample(text, parts[i], "learner");
    EXPECT(issued == sum && issued > 0,
           "learner: scraped issued %g != trained + dropped_stale + reissued + failed + "
           "in_flight + buffered = %g",
           issued, sum);
}

/* The last metrics record with the scraped step: the actor is frozen, so
 * the learner soon stops stepping and a scrape and the file's last record
 * describe the same step. Returns the scrape (caller frees) and the record
 * (a new reference), or NULL. */
static char *scrape_at_record(TestCl *c, int port, json_t **rec)
{
    *rec = NULL;
    for (int tries = 0; tries < 50 && !testcl_out_of_time(c); tries++) {
        char *text = scrape(port, "learner");
        if (!text) return NULL;
        json_t *arr = testcl_metrics(c);
        size_t  n = json_array_size(arr);
        json_t *last = n ? json_array_get(arr, n - 1) : NULL;
        double  step = NAN;
        http_prom_value(text, "rlhf_learner_step", &step);
        if (last && step == (double)testcl_jint(last, "step")) {
            *rec = json_incref(last);
            json_decref(arr);
            return text;
        }
        json_decref(arr);
        free(text);
        testcl_sleep_ms(100);
    }
    EXPECT(false, "the learner's scraped step never matched the last metrics record");
    return NULL;
}

int cluster_metrics_selftest(bool verbose)
{
    const TestClRun o = {.steps = 10000,
                         .ckpt_every = 0,
                         .max_staleness = 1,
                         .batch_groups = 4,
                         .is_metrics = true,
                         .is_reward_metrics = true};
    TestCl          c;
    Proc           *learner, *reward;
    if (!testcl_init(&c, "metrics_cluster", verbose, METRICS_BUDGET_S) ||
        !testcl_start_core(&c, &o, &learner, &reward))
        return testcl_finish(&c);
    int http_l = c.port + TESTCL_PORT_HTTP, http_r = c.port + TESTCL_PORT_HTTP_REWARD;
    int http_a = testcl_ports(&c, 1);
    if (!http_a) return testcl_finish(&c);
    Proc *actor = testcl_actor(&c, "actor-1", 8, false);
    proc_arg(actor, "--metrics-addr=127.0.0.1:%d", http_a);
    if (!testcl_start(&c, actor) || !testcl_wait_log(&c, actor, "metrics: serving", 15.0) ||
        !testcl_wait_step(&c, learner, 3, 60.0))
        return testcl_finish(&c);
    testcl_note(&c, "HTTP ports: learner %d, reward %d, actor %d", http_l, http_r, http_a);
    expect_status(http_l, "/healthz", 200, "learner");
    expect_status(http_r, "/healthz", 200, "reward");
    expect_status(http_a, "/healthz", 200, "actor");
    expect_status(http_l, "/nope", 404, "learner");

    char *ta = scrape_when_positive(&c, http_a, "actor", "rlhf_actor_groups_total");
    if (ta) {
        double groups = sample(ta, "rlhf_actor_groups_total", "actor");
        double samples = sample(ta, "rlhf_actor_samples_total", "actor");
        EXPECT(groups > 0 && samples == groups * TESTCL_GROUP,
               "actor: groups %g and samples %g, expected > 0 and %d per group", groups, samples,
               TESTCL_GROUP);
        EXPECT(sample(ta, "rlhf_actor_has_weights", "actor") == 1 &&
                   sample(ta, "rlhf_actor_snapshot_fetches_total", "actor") >= 1 &&
                   sample(ta, "rlhf_actor_snapshot_bytes_total", "actor") > 0,
               "actor: no snapshot counted");
        static const char *const states[] = {"waiting_weights", "fetching", "idle", "requesting",
                                             "sampling"};
        double                   n_on = 0;
        for (size_t i = 0; i < sizeof states / sizeof states[0]; i++) {
            char series[64];
            snprintf(series, sizeof series, "rlhf_actor_state{state=\"%s\"}", states[i]);
            n_on += sample(ta, series, "actor");
        }
        EXPECT(n_on == 1, "actor: %g states at 1, expected one", n_on);
        EXPECT(sample(ta, "rlhf_actor_rejects_total{socket=\"lease\",reason=\"garbage\"}",
                      "actor") == 0,
               "actor: rejects counted in a clean run");
        free(ta);
    }
    char *tr = scrape_when_positive(&c, http_r, "reward", "rlhf_reward_groups_scored_total");
    if (tr) {
        double scored = sample(tr, "rlhf_reward_groups_scored_total", "reward");
        double score_s = sample(tr, "rlhf_reward_score_seconds_total", "reward");
        EXPECT(scored > 0 && score_s > 0, "reward: %g groups scored in %g s, expected > 0 both",
               scored, score_s);
        EXPECT(sample(tr, "rlhf_reward_rejects_total{reason=\"garbage\"}", "reward") == 0,
               "reward: rejects counted in a clean run");
        free(tr);
    }

    /* Freeze the actor: the learner's step settles, and its scrape must
     * equal the last record of metrics.jsonl. */
    if (!testcl_pause(actor)) return testcl_finish(&c);
    testcl_sleep_ms(500);
    json_t *rec = NULL;
    char   *tl = scrape_at_record(&c, http_l, &rec);
    if (tl) {
        testcl_note(
            &c, "learner scraped at step %" PRId64 " (issued %" PRId64 ", trained %" PRId64 ")",
            testcl_jint(rec, "step"), testcl_jint(rec, "issued"), testcl_jint(rec, "trained"));
        expect_agrees(tl, rec);
        EXPECT(sample(tl, "rlhf_learner_snapshots_served_total", "learner") >= 1 &&
                   sample(tl, "rlhf_learner_snapshot_sent_bytes_total", "learner") > 0,
               "learner: no snapshot counted");
    }
    int64_t step = rec ? testcl_jint(rec, "step") : 0;
    free(tl);
    json_decref(rec);

    /* Going on: the scraped step moves with the run. */
    proc_signal(actor, SIGCONT);
    if (testcl_wait_step(&c, learner, step + 2, 60.0)) {
        char *t2 = scrape(http_l, "learner");
        EXPECT(t2 && sample(t2, "rlhf_learner_step", "learner") >= (double)(step + 1),
               "learner: the scraped step did not move past %" PRId64, step);
        free(t2);
    }
    testcl_end(&c, actor);
    testcl_end(&c, reward);
    testcl_end(&c, learner);
    return testcl_finish(&c);
}
