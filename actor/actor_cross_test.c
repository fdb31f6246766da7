/* actor_cross_test: a section of the actor's self-test (actor_test.c
 * calls it with its fake learner): the actor's --cross-lease against
 * --cross-lease 0 on the same two leases. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actor/actor_fake_test.h"
#include "common/base/err.h"
#include "tests/support/expect.h"

#define ST_CROSS_NEW 48 /* new tokens of the cross-lease leases: long enough to join */

/* One completion of the cross-lease check. */
typedef struct {
    int     n;
    int32_t tok[ST_CROSS_NEW];
    float   lp[ST_CROSS_NEW];
} StComp;

/* One actor of 16 slots (seed 5, --cross-lease cross) given leases 30 and
 * 31 of 4 prompts x 4 back to back (31 answers the request after 30's):
 * their completions into out[lease - 30][group * 4 + c]. Returns the
 * leases it joined into a running generation, or -1 after a failed check. */
static int st_cross_run(StLearner *L, int cross, StComp out[2][16])
{
    StActor *T = xcalloc(1, sizeof *T);
    T->cfg = ACTOR_DEFAULTS;
    T->cfg.lease_ep = L->ep_lease;
    T->cfg.weights_ep = L->ep_pub;
    T->cfg.snapshot_ep = L->ep_snap;
    T->cfg.reward_eps[0] = L->ep_pull;
    T->cfg.id = "actor-cross";
    T->cfg.batch = 16;
    T->cfg.cross_lease = cross;
    T->cfg.seed = 5;
    T->cfg.reply_timeout_ms = 400;
    T->cfg.status_every_s = 0;
    T->cfg.decode_weights = KERN_F32;
    pthread_t th;
    CHECK(pthread_create(&th, NULL, actor_fake_actor_thread, T) == 0);
    int  snaps = L->n_snap_requests;
    bool ok = EXPECT(actor_fake_wait_snap_requests(L, snaps + 1, 5000),
                     "cross %d: snapshot request", cross);
    actor_fake_pump(L, 50);
    L->max_new = ST_CROSS_NEW;
    actor_fake_grant(L, 31, L->epoch, 4, 4, L->version, 0, 1.0f);
    L->queued = L->pending;
    L->queued_len = L->pending_len;
    L->pending = NULL;
    actor_fake_grant(L, 30, L->epoch, 4, 4, L->version, 0, 1.0f);
    L->max_new = 0;
    ok = ok && EXPECT(actor_fake_wait_groups(L, 8, 8000),
                      "cross %d: 8 groups of leases 30 and 31 "
                      "arrive (%d did)",
                      cross, L->n_groups);
    memset(out, 0, 2 * 16 * sizeof out[0][0]);
    for (int i = 0; ok && i < L->n_groups; i++) {
        const Rlhf__SampledGroup *g = L->groups[i];
        int                       li = (int)g->lease_id - 30, gi = g->group_index;
        ok = EXPECT(li >= 0 && li < 2 && gi >= 0 && gi < 4 && g->n_completions == 4,
                    "cross %d: group of lease %llu index %d", cross,
                    (unsigned long long)g->lease_id, gi);
        for (int c = 0; ok && c < 4; c++) {
            const Rlhf__Completion *cp = g->completions[c];
            StComp                 *o = &out[li][gi * 4 + c];
            ok = EXPECT(cp->n_tokens >= 1 && cp->n_tokens <= ST_CROSS_NEW && o->n == 0,
                        "cross %d: completion of %zu tokens, seen once", cross, cp->n_tokens);
            o->n = ok ? (int)cp->n_tokens : 0;
            for (int k = 0; k < o->n; k++) {
                o->tok[k] = cp->tokens[k];
                o->lp[k] = cp->logp_behaviour[k];
            }
        }
    }
    actor_fake_clear_groups(L);
    free(L->pending); /* not asked for if something failed */
    free(L->queued);
    L->pending = L->queued = NULL;
    atomic_store(&T->stop, 1);
    pthread_join(th, NULL);
    ok = ok && EXPECT(T->rc == 0 && T->stats.leases_done == 2 && T->stats.leases_abandoned == 0,
                      "cross %d: actor returned %d, %llu leases done and %llu abandoned, expected "
                      "0, 2 and 0",
                      cross, T->rc, (unsigned long long)T->stats.leases_done,
                      (unsigned long long)T->stats.leases_abandoned);
    int joined = (int)T->stats.leases_joined;
    free(T);
    return ok ? joined : -1;
}

/* The same two leases with --cross-lease 0 and 1: lease 31 joins lease
 * 30's generation (tried up to 5 times: whether its grant arrives before
 * 30's sequences end is a matter of timing), and every completion is the
 * same token for token, its log-probs up to the rounding of batches of
 * other rows: a sequence's stream comes from its lease, not from its
 * place or when it got a slot. */
void actor_cross_check(StLearner *L, bool verbose)
{
    static StComp off[2][16], on[2][16];
    if (st_cross_run(L, 0, off) != 0) return;
    int joined = 0, tries = 0;
    while (joined == 0 && tries++ < 5) joined = st_cross_run(L, 1, on);
    if (joined < 0) return;
    EXPECT(joined == 1, "--cross-lease 1: %d leases joined in %d tries, expected 1", joined, tries);
    int    n_diff = 0, n_tok = 0;
    double worst = 0.0;
    for (int li = 0; li < 2; li++)
        for (int q = 0; q < 16; q++) {
            const StComp *x = &off[li][q], *y = &on[li][q];
            n_tok += x->n;
            bool same = x->n == y->n && !memcmp(x->tok, y->tok, sizeof(int32_t) * (size_t)x->n);
            n_diff += !same;
            for (int k = 0; same && k < x->n; k++)
                worst = fmax(worst, fabs((double)x->lp[k] - (double)y->lp[k]));
        }
    EXPECT(n_diff == 0 && n_tok > 0,
           "%d of 32 completions differ between --cross-lease 0 and 1 (%d tokens)", n_diff, n_tok);
    EXPECT(worst <= 1e-4, "logp_behaviour: --cross-lease 0 and 1 differ by up to %.2e, tol 1e-4",
           worst);
    if (verbose)
        printf("  actor: cross-lease: lease 31 joined lease 30's generation (try %d); 32 "
               "completions, %d tokens, %d differ with --cross-lease 0 and 1; logp_behaviour "
               "max diff %.2e (the batch's rows change the rounding; tol 1e-4)\n",
               tries, n_tok, n_diff, worst);
}
