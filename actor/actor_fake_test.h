/* actor_fake: the fake learner and reward server of the actor's
 * self-tests (actor_test.c, actor_cross_test.c): a lease ROUTER, a PUB and
 * a snapshot ROUTER of a learner and a reward server's PULL, all real
 * sockets on tcp loopback, driven by the test's thread (actor_fake_pump),
 * and an actor run in a thread of its own.
 *
 * Ownership: the test owns the StLearner and what it points to; groups
 * received are the StLearner's until actor_fake_clear_groups. Threading:
 * the StLearner belongs to the test's thread. Errors: sockets that cannot
 * be made are NULL or ERR_IO; the rest CHECKs (test code). */
#ifndef RLHF_ACTOR_FAKE_TEST_H
#define RLHF_ACTOR_FAKE_TEST_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "actor/actor.h"
#include "common/net/wire.h"
#include "common/net/zsock.h"
#include "common/nn/model.h"

/* How the next snapshots served are broken (StLearner.bad_snaps). */
enum { ST_SNAP_GOOD, ST_SNAP_NAN, ST_SNAP_SHORT, ST_SNAP_CHECKSUM };

/* A fake learner (lease ROUTER, PUB, snapshot ROUTER) and a fake reward
 * server (PULL), all real sockets on tcp loopback. */
#define ST_MAX_GROUPS 16
typedef struct {
    void       *zctx;
    WireSock   *lease, *pub, *snap, *pull;
    char        ep_lease[256], ep_pub[256], ep_snap[256], ep_pull[256];
    const char *run_id;
    uint64_t    epoch, version;
    Model      *m; /* the weights served */
    char       *config;
    /* What the actor sent. */
    unsigned char peer[WIRE_MAX_IDENTITY], snap_peer[WIRE_MAX_IDENTITY];
    size_t        peer_len, snap_peer_len;
    int           n_requests, n_snap_requests;
    char          req_run[ACTOR_MAX_RUN_ID], req_actor[ACTOR_MAX_ID];
    uint64_t      req_epoch, req_version, snap_have_epoch, snap_have_version;
    int           req_max_prompts;
    /* The grant for the next request (packed), else a retry. */
    uint8_t            *pending;
    size_t              pending_len;
    uint8_t            *queued; /* a second grant (packed), sent at the request after pending's */
    size_t              queued_len;
    int                 max_new; /* max_new_tokens of the grants made, 0 = 12 */
    Rlhf__SampledGroup *groups[ST_MAX_GROUPS];
    int                 n_groups;
    double              t_announce;
    bool                is_announcing;
    bool                is_announce_after_grant; /* announce right behind the next grant */
    int                 bad_snaps[4];            /* ST_SNAP_* served next, last first */
    int                 n_bad_snaps;
} StLearner;

/* An actor run in a thread (actor_fake_actor_thread): its config, the stop
 * flag, and what actor_run returned with the final counters. */
typedef struct {
    ActorConfig cfg;
    atomic_int  stop;
    int         rc;
    ActorStats  stats;
    bool        is_made;
} StActor;

/* A socket of type bound at ep, its endpoint (resolved) into out. */
WireSock *actor_fake_bind(void *zctx, int type, const char *name, const char *ep, char *out);
/* Binds the learner's sockets: on ephemeral ports the first time, on the
 * same endpoints again after a restart. Returns 0 or ERR_IO. */
int  actor_fake_learner_up(StLearner *L, bool again);
void actor_fake_learner_down(StLearner *L);
/* Publishes a WeightAnnounce of the served model as (epoch, version). */
void actor_fake_announce(StLearner *L, uint64_t epoch, uint64_t version, uint32_t proto);
/* Handles everything the actor sends for up to ms: requests (answered with
 * the pending grant, then the queued one, else a retry), snapshot requests
 * (served), groups (kept). */
void actor_fake_pump(StLearner *L, int ms);
void actor_fake_clear_groups(StLearner *L);
/* Pumps until at least n groups arrived or timeout_ms passed. */
bool actor_fake_wait_groups(StLearner *L, int n, int timeout_ms);
bool actor_fake_wait_snap_requests(StLearner *L, int n, int timeout_ms);
/* A grant of n <= 4 prompts x G, packed, to be sent at the next request;
 * bad_token, when non-zero, replaces a token of the last prompt. */
void actor_fake_grant(StLearner *L, uint64_t lease_id, uint64_t epoch, int n, int G, uint64_t min_v,
                      int bad_token, float temperature);
/* The thread of an StActor (its argument): actor_new, actor_run, stats. */
void *actor_fake_actor_thread(void *p);
/* New random weights for the served model. */
void actor_fake_new_weights(StLearner *L, uint64_t seed);

/* actor_cross_test.c: the same two leases with --cross-lease 0 and 1
 * against L (its current run, epoch and weights). */
void actor_cross_check(StLearner *L, bool verbose);

#endif
