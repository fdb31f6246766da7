/* cross_lease_test: the actor's --cross-lease with real processes on real
 * sockets (tests/support/testcl.h). The same small run (a learner, a
 * reward server and one actor of 16 slots; leases of 2 prompts x 4, so a
 * lease fills half the slots) is made with --cross-lease 0 and 1. Each
 * completes with the accounting identity intact, no duplicate, failed or
 * re-issued group and every group the learner issued pushed by the actor
 * once; with --cross-lease 1 leases were joined into a running generation
 * and fewer slots were wasted than with 0 (counts from the actor's
 * /metrics, not times). A third run with --cross-lease 1 against a
 * learner whose lease credit allows one lease at a time: no lease joins,
 * the early requests are answered without work and the actor waits as
 * told, a bounded number of requests, none logged (but one re-sent as the
 * learner ends).
 *
 * Returns the number of failed checks (0 = pass). */
#include "tests/test_list.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/base/err.h"
#include "tests/support/expect.h"
#include "tests/support/http.h"
#include "tests/support/testcl.h"

/* Each run still going after this long fails, and its processes are killed. */
#define CROSS_BUDGET_S 120.0
#define CROSS_STEPS 8
#define CROSS_SLOTS 16

/* What the actor's /metrics said at the end of a run. */
typedef struct {
    double  groups, slot_steps, slot_used, joined, abandoned, refused, stale, requests, retries;
    int64_t issued, grants_credit; /* the learner's summary */
    int     noise; /* lines of the actor's log on re-sent requests or error replies */
} CrossCounts;

/* The value of series in the actor's /metrics on port; NaN if missing. */
static double scrape_value(int port, const char *series)
{
    HttpReply r;
    double    v = NAN;
    if (http_request(port, "GET", "/metrics", NULL, 5.0, false, &r) != 0) return v;
    if (r.status != 200 || !http_prom_value(r.body, series, &v)) v = NAN;
    http_reply_free(&r);
    return v;
}

static void scrape_counts(int port, CrossCounts *k)
{
    k->groups = scrape_value(port, "rlhf_actor_groups_total");
    k->slot_steps = scrape_value(port, "rlhf_actor_slot_steps_total");
    k->slot_used = scrape_value(port, "rlhf_actor_slot_used_total");
    k->joined = scrape_value(port, "rlhf_actor_leases_joined_total");
    k->abandoned = scrape_value(port, "rlhf_actor_leases_total{outcome=\"abandoned\"}");
    k->refused = scrape_value(port, "rlhf_actor_leases_total{outcome=\"refused\"}");
    k->stale = scrape_value(port, "rlhf_actor_leases_total{outcome=\"stale\"}");
    k->requests = scrape_value(port, "rlhf_actor_lease_requests_total");
}

/* One run with --cross-lease cross (and the learner's --lease-credit
 * credit, 0 = its default); the actor's counters into k. */
static void run_once(bool verbose, int cross, int credit, CrossCounts *k)
{
    char credit_flag[32];
    snprintf(credit_flag, sizeof credit_flag, "--lease-credit=%d", credit);
    const TestClRun o = {.steps = CROSS_STEPS,
                         .max_staleness = 1,
                         .batch_groups = 4,
                         .lease_prompts = 2,
                         .lease_timeout_ms = 10000,
                         .eval_n = -1,
                         .dim = 128,
                         .layers = 2,
                         .hidden = 256,
                         .extra = {"--max-new-tokens=48", credit_flag}};
    TestCl          c;
    Proc           *learner, *reward;
    *k = (CrossCounts){NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, -1, -1, -1};
    const char *name = credit ? "cross_lease_credit" : cross ? "cross_lease_on" : "cross_lease_off";
    if (!testcl_init(&c, name, verbose, CROSS_BUDGET_S) ||
        !testcl_start_core(&c, &o, &learner, &reward)) {
        testcl_finish(&c);
        return;
    }
    int http_a = testcl_ports(&c, 1);
    if (!http_a) {
        testcl_finish(&c);
        return;
    }
    Proc *actor = testcl_actor(&c, "actor-1", CROSS_SLOTS, false);
    proc_arg(actor, "--cross-lease=%d", cross);
    proc_arg(actor, "--seed=11");
    proc_arg(actor, "--metrics-addr=127.0.0.1:%d", http_a);
    if (!testcl_start(&c, actor) || !testcl_wait_log(&c, actor, "metrics: serving", 15.0)) {
        testcl_finish(&c);
        return;
    }
    testcl_wait_done(&c, learner, 90.0);
    /* Re-sent requests: one when the learner stops answering as it ends
     * (its last records and checkpoint) is expected, more are not. */
    int resent = testcl_count(actor, "no lease reply"), errs = testcl_count(actor, "error reply");
    k->noise = resent + errs;
    EXPECT(resent <= 1 && errs == 0,
           "cross-lease %d: %d lines on re-sent requests (at most 1) and %d on error replies (0) "
           "in the actor's log",
           cross, resent, errs);
    TestClCounters kc = {0};
    json_t        *sum = testcl_check_summary(&c, CROSS_STEPS, &kc);
    k->issued = kc.issued;
    k->grants_credit = testcl_jint(sum, "grants_credit");
    json_decref(sum);
    testcl_note_counters(&c, &kc);
    EXPECT(kc.duplicates == 0 && kc.failed == 0 && kc.reissued == 0,
           "cross-lease %d: duplicates %" PRId64 ", failed %" PRId64 ", reissued %" PRId64
           ", expected none",
           cross, kc.duplicates, kc.failed, kc.reissued);
    /* Every group issued and not in flight when the learner ended is pushed
     * once; those in flight then (granted to an early request as the run
     * ended) may be pushed or, if the grant never reached the actor, not:
     * the actor finishes what it holds and its counters settle. */
    int64_t settled = kc.issued - kc.in_flight;
    for (double t0 = testcl_now(); testcl_now() - t0 < 15.0 && !testcl_out_of_time(&c);) {
        scrape_counts(http_a, k);
        if (k->groups >= (double)settled && k->groups <= (double)kc.issued) break;
        testcl_sleep_ms(100);
    }
    testcl_note(&c,
                "cross-lease %d: groups %g, slots %g of %g used (%.1f%% wasted), leases joined "
                "%g, abandoned %g; lease requests %g, answered without work for credit %" PRId64,
                cross, k->groups, k->slot_used, k->slot_steps,
                100.0 * (1.0 - k->slot_used / k->slot_steps), k->joined, k->abandoned, k->requests,
                k->grants_credit);
    EXPECT(k->groups >= (double)settled && k->groups <= (double)kc.issued,
           "cross-lease %d: the actor pushed %g groups, the learner issued %" PRId64
           " with %" PRId64 " in flight at its end",
           cross, k->groups, kc.issued, kc.in_flight);
    EXPECT(k->abandoned == 0 && k->refused == 0 && k->stale == 0,
           "cross-lease %d: leases abandoned %g, refused %g, stale %g, expected none", cross,
           k->abandoned, k->refused, k->stale);
    EXPECT(k->slot_steps > 0 && k->slot_used > 0 && k->slot_used <= k->slot_steps,
           "cross-lease %d: slots %g of %g used", cross, k->slot_used, k->slot_steps);
    testcl_end(&c, actor);
    testcl_end(&c, reward);
    testcl_finish(&c);
}

int cross_lease_selftest(bool verbose)
{
    CrossCounts off, on, cr;
    run_once(verbose, 0, 0, &off);
    run_once(verbose, 1, 0, &on);
    /* A learner whose credit (2 groups, one lease) never allows a second
     * lease: every early request is answered without work; the actor
     * waits as told, doubling the wait, quietly, and serves one lease at
     * a time. */
    run_once(verbose, 1, 2, &cr);
    EXPECT(cr.joined == 0 && cr.grants_credit > 0,
           "--lease-credit 2: %g leases joined, %" PRId64
           " requests answered for credit, expected 0 and > 0",
           cr.joined, cr.grants_credit);
    /* Leases are groups / 2; a spinning actor would ask hundreds of times each. */
    EXPECT(cr.requests <= 12.0 * cr.groups / 2.0,
           "--lease-credit 2: %g lease requests for %g leases, expected at most 12 each",
           cr.requests, cr.groups / 2.0);
    EXPECT(off.joined == 0, "cross-lease 0: %g leases joined, expected none", off.joined);
    EXPECT(on.joined > 0, "cross-lease 1: no lease joined a running generation");
    double waste_off = 1.0 - off.slot_used / off.slot_steps;
    double waste_on = 1.0 - on.slot_used / on.slot_steps;
    EXPECT(waste_on < waste_off, "slots wasted: %.1f%% with --cross-lease 1, %.1f%% with 0",
           100.0 * waste_on, 100.0 * waste_off);
    if (verbose)
        printf("  cross_lease: slots wasted %.1f%% (%g of %g) with --cross-lease 0, %.1f%% (%g of "
               "%g) with 1; %g leases joined\n",
               100.0 * waste_off, off.slot_steps - off.slot_used, off.slot_steps, 100.0 * waste_on,
               on.slot_steps - on.slot_used, on.slot_steps, on.joined);
    return expect_end();
}
