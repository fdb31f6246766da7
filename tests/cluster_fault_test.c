/* cluster_fault_test: kill -9 of each kind of daemon in the middle of a
 * run, with real processes on real sockets (tests/support/testcl.h):
 *
 *   fault_actor    one of two actors, frozen while it holds a lease none of
 *                  whose groups has left: the lease is re-issued after its
 *                  deadline and the other actor finishes the run.
 *   fault_learner  the learner past a checkpoint, then a restart with the
 *                  same flags: it resumes from the checkpoint in a new
 *                  epoch and the running actors follow it.
 *   fault_reward   the reward server while groups wait in it, then a
 *                  restart on the same port: the lost groups come back as
 *                  re-issued leases.
 *
 * Every run must end complete, with the accounting identity in every
 * metrics record and the summary. Each function returns the number of
 * failed checks (0 = pass). */
#include "tests/test_list.h"

#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/support/expect.h"
#include "tests/support/proc.h"
#include "tests/support/testcl.h"
#include "tests/support/testfs.h"

/* A test still running after this long fails, and its processes are killed. */
#define FAULT_BUDGET_S 100.0

/* The start of a fault test: testcl_init, the learner and the reward server
 * (testcl_start_core), then n_actors actors named actor-1.. generating 8
 * sequences at a time, the first logging at debug level if is_first_debug.
 * A max_staleness of 0 in o makes the learner's capacity one batch: a step
 * then needs every group out, so a lost group stalls the run until its
 * lease expires. False after a failed check. */
static bool start_run(TestCl *c, const char *test, bool verbose, const TestClRun *o, Proc **learner,
                      Proc **reward, Proc **actors, int n_actors, bool is_first_debug)
{
    if (!testcl_init(c, test, verbose, FAULT_BUDGET_S) || !testcl_start_core(c, o, learner, reward))
        return false;
    for (int a = 0; a < n_actors; a++) {
        char name[32];
        snprintf(name, sizeof name, "actor-%d", a + 1);
        actors[a] = testcl_actor(c, name, 8, a == 0 && is_first_debug);
    }
    for (int a = 0; a < n_actors; a++)
        if (!testcl_start(c, actors[a])) return false;
    return true;
}

/* ---- fault_actor ------------------------------------------------------ */

/* True if the actor's debug log ends waiting for a lease: a "lease request"
 * line with no grant served after it. */
static bool is_requesting(const char *log)
{
    const char *last = testcl_find_last(log, "lease request for");
    return last && !strstr(last, " prompts x ");
}

/* A lease the learner logged as granted to `actor` ("lease ID: N prompts
 * to 'actor'", ID in hex) that the actor's debug log does not show served
 * ("lease ID: N prompts x G", ID in decimal). Returns its prompts (0 if
 * there is none) and its id. */
static int grant_unserved(const Proc *learner, const Proc *actor, uint64_t *id)
{
    char *ltext = proc_read_out(learner);
    char *atext = proc_read_out(actor);
    int   n = 0;
    char  want[96];
    snprintf(want, sizeof want, " prompts to '%s'", proc_name(actor));
    for (const char *p = ltext ? strstr(ltext, "learner: lease ") : NULL; p && !n;
         p = strstr(p + 1, "learner: lease ")) {
        unsigned long long lid = 0;
        int                k = 0, used = 0;
        if (sscanf(p, "learner: lease %llx: %d%n", &lid, &k, &used) != 2 || k <= 0 ||
            strncmp(p + used, want, strlen(want)))
            continue;
        char served[64];
        snprintf(served, sizeof served, ": lease %llu: %d prompts x ", lid, k);
        if (atext && strstr(atext, served)) continue;
        n = k;
        *id = lid;
    }
    free(ltext);
    free(atext);
    return n;
}

int cluster_fault_actor_selftest(bool verbose)
{
    /* A step takes four leases, so actor-1 often gets one; without its
     * lease no step can be completed, so the run waits for the re-issue. */
    const TestClRun o = {
        .steps = 30, .ckpt_every = 0, .max_staleness = 0, .batch_groups = 8, .is_debug = true};
    TestCl c;
    Proc  *learner, *reward, *actors[2];
    if (!start_run(&c, "fault_actor", verbose, &o, &learner, &reward, actors, 2, true))
        return testcl_finish(&c);
    Proc *victim = actors[0], *other = actors[1];
    if (!testcl_wait_step(&c, learner, 3, 40.0)) return testcl_finish(&c);

    /* Catch the victim waiting for a lease and freeze it; if the learner
     * grants it one it has not served, the lease is the victim's and not one
     * of its groups can have left: kill -9 it there. Otherwise (the learner
     * had no work for it) let it go on and try again. actor-2 is stopped
     * meanwhile, so the run cannot end before the victim is caught: the
     * learner's work goes to the victim (actor-2's leases come back to it
     * when they expire). */
    if (!testcl_pause(other)) return testcl_finish(&c);
    uint64_t lease = 0;
    int      n_prompts = 0, looks = 0, requests_seen = 0;
    double   t0 = testcl_now();
    while (!n_prompts && testcl_now() - t0 < 30.0 && !testcl_out_of_time(&c) &&
           proc_is_running(learner)) {
        /* A fresh request: its answer is yet to come. */
        int n_requests = testcl_count(victim, "lease request for");
        if (n_requests == requests_seen) {
            testcl_sleep_ms(1);
            continue;
        }
        requests_seen = n_requests;
        if (!testcl_pause(victim)) break;
        looks++;
        char *text = proc_read_out(victim);
        bool  is_waiting = text && is_requesting(text);
        free(text);
        for (double t1 = testcl_now(); is_waiting && !n_prompts && testcl_now() - t1 < 0.5;) {
            n_prompts = grant_unserved(learner, victim, &lease);
            if (!n_prompts) testcl_sleep_ms(5);
        }
        if (!n_prompts) proc_signal(victim, SIGCONT);
    }
    int64_t step_at_kill = testcl_step(&c);
    proc_kill(victim);
    proc_signal(other, SIGCONT);
    if (!EXPECT(n_prompts > 0, "actor-1 never seen granted a lease while frozen (%d tries)", looks))
        return testcl_finish(&c);
    testcl_note(&c,
                "kill -9 of actor-1 holding lease %" PRIx64
                " (%d prompts, none served) at step %" PRId64 " (try %d)",
                lease, n_prompts, step_at_kill, looks);

    testcl_wait_done(&c, learner, 60.0);
    json_t        *metrics = testcl_check_metrics(&c);
    TestClCounters k = {0};
    json_t        *sum = testcl_check_summary(&c, o.steps, &k);
    if (sum) {
        EXPECT(k.reissued >= n_prompts,
               "summary: reissued %" PRId64 ", expected >= %d (the dead actor's lease)", k.reissued,
               n_prompts);
        testcl_note_counters(&c, &k);
    }
    size_t  n = json_array_size(metrics);
    json_t *last = n ? json_array_get(metrics, n - 1) : NULL;
    EXPECT(n == (size_t)o.steps, "%zu metrics records, expected %d", n, o.steps);
    EXPECT(last && testcl_jint(last, "leases_expired") >= 1,
           "metrics: leases_expired %" PRId64 ", expected >= 1",
           last ? testcl_jint(last, "leases_expired") : -1);
    /* Every step after the kill was served by the other actor alone. */
    EXPECT(proc_is_running(other), "actor-2 died");
    EXPECT(step_at_kill < o.steps, "the run had finished before the kill");
    json_decref(metrics);
    json_decref(sum);
    testcl_end(&c, other);
    testcl_end(&c, reward);
    return testcl_finish(&c);
}

/* ---- fault_learner ---------------------------------------------------- */

/* The checkpoint's trainer state: step, version, run id, epoch and lease
 * counters, as the restarted learner will find them. */
typedef struct {
    int64_t step, version, epoch, in_flight, buffered, reissued;
    char    run_id[64];
} CkptState;

static bool read_ckpt_state(TestCl *c, CkptState *s)
{
    char path[PATH_MAX + 32];
    testfs_path(path, sizeof path, "%s/trainer_state.json", c->ckpt);
    json_error_t err;
    json_t      *o = json_load_file(path, 0, &err);
    json_t      *x = json_object_get(o, "extra");
    json_t      *ls = json_object_get(x, "lease");
    const char  *run = json_string_value(json_object_get(o, "run_id"));
    bool         ok = json_is_object(ls) && run;
    if (ok) {
        s->step = testcl_jint(o, "step");
        s->version = testcl_jint(o, "policy_version");
        s->epoch = testcl_jint(x, "epoch");
        s->in_flight = testcl_jint(ls, "in_flight");
        s->buffered = testcl_jint(ls, "buffered");
        s->reissued = testcl_jint(ls, "reissued");
        snprintf(s->run_id, sizeof s->run_id, "%s", run);
        ok = s->step >= 0 && s->version >= 0 && s->epoch >= 0 && s->in_flight >= 0 &&
             s->buffered >= 0 && s->reissued >= 0;
    }
    EXPECT(ok, "checkpoint state '%s' unreadable or incomplete (%s)", path, err.text);
    json_decref(o);
    return ok;
}

/* The step of the newest checkpoint, -1 before the first. */
static int64_t ckpt_step(TestCl *c)
{
    char path[PATH_MAX + 32];
    testfs_path(path, sizeof path, "%s/trainer_state.json", c->ckpt);
    json_t *o = json_load_file(path, 0, NULL);
    int64_t step = o ? testcl_jint(o, "step") : -1;
    json_decref(o);
    return step;
}

/* The actor's last status line's weights, "run 'R' epoch E vV". */
static bool actor_holds(const Proc *p, const char *run_id, int64_t epoch)
{
    char *text = proc_read_out(p);
    if (!text) return false;
    char want[128];
    snprintf(want, sizeof want, "weights run '%s' epoch %" PRId64 " v", run_id, epoch);
    const char *last = testcl_find_last(text, "weights run '");
    bool        ok = last && !strncmp(last, want, strlen(want));
    free(text);
    return ok;
}

/* The groups an actor's status lines count ("; groups N (") in the last
 * line before the first occurrence of mark, and in its last line. */
static bool actor_groups_around(const Proc *p, const char *mark, long long *before,
                                long long *after)
{
    char *text = proc_read_out(p);
    if (!text) return false;
    const char *at = strstr(text, mark);
    bool        ok = at != NULL;
    *before = *after = 0;
    for (const char *q = strstr(text, "; groups "); q; q = strstr(q + 1, "; groups ")) {
        long long n;
        if (sscanf(q, "; groups %lld (", &n) != 1) continue;
        if (at && q < at) *before = n;
        *after = n;
    }
    free(text);
    return ok;
}

int cluster_fault_learner_selftest(bool verbose)
{
    /* Four leases a step and no staleness: every step waits for groups
     * made with its own weights. After the restart the actors find the new
     * learner one at a time, the other one stopped (SIGSTOP), so the run
     * cannot end before each has followed it however slowly its sockets
     * reconnect (libzmq's reconnect back-off plus the actor's own). */
    const TestClRun o = {
        .steps = 60, .ckpt_every = 4, .max_staleness = 0, .batch_groups = 8, .is_debug = true};
    TestCl c;
    Proc  *learner, *reward, *actors[2];
    if (!start_run(&c, "fault_learner", verbose, &o, &learner, &reward, actors, 2, false))
        return testcl_finish(&c);
    pid_t pids[2] = {proc_pid(actors[0]), proc_pid(actors[1])};

    /* Kill it past a checkpoint, so the restart goes back to an older
     * version, once both actors work for it. */
    for (int a = 0; a < 2; a++)
        if (!EXPECT(testcl_wait_log(&c, actors[a], "weights run '", 30.0),
                    "%s never installed weights", proc_name(actors[a])))
            return testcl_finish(&c);
    if (!testcl_wait_step(&c, learner, 6, 40.0)) return testcl_finish(&c);
    double t0 = testcl_now();
    while (ckpt_step(&c) < 4 && testcl_now() - t0 < 10.0) testcl_sleep_ms(20);
    proc_kill(learner);
    int64_t   step_at_kill = testcl_step(&c);
    CkptState ck;
    if (!read_ckpt_state(&c, &ck)) return testcl_finish(&c);
    testcl_note(&c,
                "kill -9 of the learner at step %" PRId64 "; checkpoint: run %s epoch %" PRId64
                " step %" PRId64 " version %" PRId64 ", %" PRId64 " groups in flight",
                step_at_kill, ck.run_id, ck.epoch, ck.step, ck.version, ck.in_flight);
    EXPECT(ck.epoch == 0 && ck.step >= 4 && ck.step <= step_at_kill && ck.version == ck.step,
           "checkpoint at kill: epoch %" PRId64 " step %" PRId64 " version %" PRId64
           ", expected epoch 0, step 4..%" PRId64,
           ck.epoch, ck.step, ck.version, step_at_kill);

    /* Down for a second: the actors' requests go unanswered and time out.
     * actor-1 sleeps through it and the restart. */
    if (!testcl_pause(actors[0])) return testcl_finish(&c);
    testcl_sleep_ms(1000);
    Proc *again = testcl_proc(&c, "learner-2", NULL, NULL, learner);
    if (!testcl_start(&c, again)) return testcl_finish(&c);
    char resumed[PATH_MAX + 256];
    snprintf(resumed, sizeof resumed,
             "resumed run %s from '%s': step %" PRId64 " version %" PRId64 " epoch ", ck.run_id,
             c.ckpt, ck.step, ck.version);
    EXPECT(testcl_wait_log(&c, again, resumed, 30.0), "learner-2 did not log \"%s\"", resumed);
    /* The new epoch: one restart more in its high half, a random low half
     * (learner/epoch.h); learner-2 has written it to the checkpoint. */
    CkptState ck2 = {0};
    int64_t   e1 = -1;
    if (testcl_wait_log(&c, again, " params, ", 30.0) && read_ckpt_state(&c, &ck2)) e1 = ck2.epoch;
    EXPECT(e1 >> 32 == 1 && (e1 & 0xffffffff) != 0,
           "learner-2's epoch %#" PRIx64 ", expected one restart and a nonce", e1);
    char installed[160];
    snprintf(installed, sizeof installed, "weights run '%s' epoch %" PRId64 " v", ck.run_id, e1);
    /* actor-2 alone until it has the new weights and two steps trained on
     * its groups; then actor-1 alone the same way; then both. */
    for (int k = 0; k < 2; k++) {
        Proc *on = actors[1 - k], *off = actors[k];
        if (k == 1) {
            if (!testcl_pause(actors[1])) return testcl_finish(&c);
            proc_signal(actors[0], SIGCONT);
        }
        if (!EXPECT(testcl_wait_log(&c, on, installed, 30.0),
                    "%s never installed weights of the new epoch (the other actor stopped)",
                    proc_name(on)))
            return testcl_finish(&c);
        if (!testcl_wait_step(&c, again, testcl_step(&c) + 2, 30.0)) return testcl_finish(&c);
        testcl_note(&c, "%s followed learner-2 alone (%s stopped); step %" PRId64, proc_name(on),
                    proc_name(off), testcl_step(&c));
    }
    proc_signal(actors[1], SIGCONT);
    testcl_wait_done(&c, again, 60.0);

    /* The metrics go on where the checkpoint left off, in the new epoch. */
    json_t *metrics = testcl_check_metrics(&c);
    size_t  i;
    json_t *m, *first1 = NULL, *last = NULL;
    int64_t n0 = 0, n1 = 0, last0 = 0;
    json_array_foreach(metrics, i, m)
    {
        if (testcl_jint(m, "epoch") == 0) {
            n0++;
            last0 = testcl_jint(m, "step");
        } else if (testcl_jint(m, "epoch") == e1) {
            if (!first1) first1 = m;
            n1++;
        }
        last = m;
    }
    testcl_note(&c,
                "metrics: %" PRId64 " records of epoch 0 (last step %" PRId64 "), %" PRId64
                " of the new epoch (first step %" PRId64 " version %" PRId64 ")",
                n0, last0, n1, first1 ? testcl_jint(first1, "step") : -1,
                first1 ? testcl_jint(first1, "version") : -1);
    EXPECT(n0 + n1 == (int64_t)json_array_size(metrics), "metrics records of another epoch");
    EXPECT(first1 && testcl_jint(first1, "step") == ck.step + 1 &&
               testcl_jint(first1, "version") == ck.version + 1,
           "the first step after the restart is step %" PRId64 " version %" PRId64
           ", expected %" PRId64 " (the checkpoint's + 1)",
           first1 ? testcl_jint(first1, "step") : -1, first1 ? testcl_jint(first1, "version") : -1,
           ck.step + 1);
    EXPECT(last && testcl_jint(last, "epoch") == e1 && testcl_jint(last, "step") == o.steps,
           "the last metrics record is not the new epoch's step %d", o.steps);
    EXPECT(n1 == o.steps - ck.step, "%" PRId64 " steps in the new epoch, expected %" PRId64, n1,
           o.steps - ck.step);

    TestClCounters k = {0};
    json_t        *sum = testcl_check_summary(&c, o.steps, &k);
    if (sum) {
        const char *run = json_string_value(json_object_get(sum, "run_id"));
        EXPECT(run && !strcmp(run, ck.run_id), "summary run id '%s', expected '%s'", run ? run : "",
               ck.run_id);
        EXPECT(testcl_jint(sum, "epoch") == e1, "summary epoch %" PRId64 ", expected %" PRId64,
               testcl_jint(sum, "epoch"), e1);
        /* The groups out or buffered at the checkpoint died with the old
         * learner: the new one counts them as re-issued. */
        EXPECT(k.reissued >= ck.reissued + ck.in_flight + ck.buffered,
               "summary: reissued %" PRId64 ", expected >= %" PRId64 " + %" PRId64 " + %" PRId64
               " (the checkpoint's re-issued, in flight and buffered)",
               k.reissued, ck.reissued, ck.in_flight, ck.buffered);
        testcl_note_counters(&c, &k);
    }

    /* The same actor processes followed the new incarnation: each got
     * leases from it, installed its weights and sent groups with them. */
    for (int a = 0; a < 2; a++) {
        EXPECT(proc_is_running(actors[a]) && proc_pid(actors[a]) == pids[a],
               "%s (pid %d) did not survive the learner's restart", proc_name(actors[a]),
               (int)pids[a]);
        char granted[96];
        snprintf(granted, sizeof granted, " prompts to '%s'", proc_name(actors[a]));
        int n_grants = testcl_count(again, granted);
        EXPECT(n_grants > 0, "learner-2 granted %s no lease", proc_name(actors[a]));
        EXPECT(proc_output_has(actors[a], installed), "%s never installed weights of the new epoch",
               proc_name(actors[a]));
        testcl_note(&c, "%s (pid %d, never restarted): %d leases from learner-2",
                    proc_name(actors[a]), (int)pids[a], n_grants);
    }
    json_decref(metrics);
    json_decref(sum);
    for (int a = 0; a < 2; a++) {
        testcl_end(&c, actors[a]);
        /* Its final status line: groups sent since it took the new epoch's weights. */
        long long before = 0, after = 0;
        bool      ok = actor_groups_around(actors[a], installed, &before, &after);
        EXPECT(ok && after > before,
               "%s sent no groups with the new epoch's weights (%lld before, %lld at the end)",
               proc_name(actors[a]), before, after);
        EXPECT(actor_holds(actors[a], ck.run_id, e1),
               "%s's last status line does not hold the new epoch's weights", proc_name(actors[a]));
        testcl_note(&c, "%s: %lld groups sent before the new epoch's weights, %lld at the end",
                    proc_name(actors[a]), before, after);
    }
    testcl_end(&c, reward);
    return testcl_finish(&c);
}

/* ---- fault_reward ----------------------------------------------------- */

int cluster_fault_reward_selftest(bool verbose)
{
    const TestClRun o = {.steps = 30, .ckpt_every = 0, .max_staleness = 0, .batch_groups = 4};
    TestCl          c;
    Proc           *learner, *reward, *actors[2];
    if (!start_run(&c, "fault_reward", verbose, &o, &learner, &reward, actors, 2, false))
        return testcl_finish(&c);
    if (!testcl_wait_step(&c, learner, 4, 40.0)) return testcl_finish(&c);

    /* Frozen, the server takes groups into its socket buffers and queues
     * without scoring them; kill -9 then loses them. */
    if (!testcl_pause(reward)) return testcl_finish(&c);
    testcl_sleep_ms(600);
    int64_t step_at_kill = testcl_step(&c);
    proc_kill(reward);
    testcl_note(&c, "kill -9 of the reward server at step %" PRId64, step_at_kill);
    testcl_sleep_ms(500);
    Proc *again = testcl_proc(&c, "reward-2", NULL, NULL, reward);
    bool  up = false;
    /* Its port was ours a moment ago; give the kernel a few tries. */
    for (int tries = 0; tries < 10 && !up && !testcl_out_of_time(&c); tries++) {
        if (tries) {
            testcl_note(&c, "reward-2 could not bind yet; again");
            testcl_sleep_ms(300);
        }
        if (!testcl_start(&c, again)) break;
        up = testcl_wait_log(&c, again, "samples bound at", 15.0);
        if (!up) proc_kill(again);
    }
    EXPECT(up, "reward-2 did not start on the same port");
    testcl_wait_done(&c, learner, 60.0);

    json_t        *metrics = testcl_check_metrics(&c);
    TestClCounters k = {0};
    json_t        *sum = testcl_check_summary(&c, o.steps, &k);
    if (sum) {
        EXPECT(k.reissued >= 1,
               "summary: reissued %" PRId64 ", expected >= 1 (groups lost with the server)",
               k.reissued);
        testcl_note_counters(&c, &k);
    }
    size_t n = json_array_size(metrics);
    EXPECT(n == (size_t)o.steps, "%zu metrics records, expected %d", n, o.steps);
    EXPECT(step_at_kill + 1 < o.steps, "the run was almost over at the kill (step %" PRId64 ")",
           step_at_kill);
    json_decref(metrics);
    json_decref(sum);
    testcl_end(&c, actors[0]);
    testcl_end(&c, actors[1]);
    if (up) {
        testcl_end(&c, again);
        long long scored = 0, received = 0;
        EXPECT(testcl_reward_status(again, &scored, &received, NULL, 0) && scored > 0,
               "reward-2 scored no groups (%lld received)", received);
        testcl_note(&c, "reward-2 scored %lld groups of %lld received", scored, received);
    }
    return testcl_finish(&c);
}
