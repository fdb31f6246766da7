/* learner_int: the Learner's state, shared by the learner's own modules
 * (learner/learner_*.c: setup, task, intake, publish, serve, train, record)
 * and by nothing else: programs and tests use learner/learner.h.
 *
 * It also fixes the shape of a row of the dispatch table (learner_serve.c),
 * because its handlers live in the modules that own what they change, with
 * ONE rule for who frees a message: the dispatcher frees the decoded message
 * after its handler returns; a handler that keeps it sets *msg to NULL, and
 * only a row marked LEARNER_HANDLER_MAY_KEEP may do so (CHECKed).
 *
 * Ownership: the Learner owns everything it points to (learner_free); the
 * config's strings are borrowed. Threading: the thread that runs the Learner
 * (see learner.h). */
#ifndef RLHF_LEARNER_INT_H
#define RLHF_LEARNER_INT_H

#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <time.h>

#include "common/base/progress.h"
#include "common/formats/bpe.h"
#include "common/formats/tok.h"
#include "common/net/snapshot.h"
#include "common/net/wire.h"
#include "common/net/zsock.h"
#include "common/tasks/chat_task.h"
#include "common/tasks/task.h"
#include "learner/learner.h"

/* One scored group accepted for a lease and waiting for a batch. */
typedef struct {
    Rlhf__ScoredGroup *msg; /* owned (protobuf_c_message_free_unpacked) */
    uint64_t           lease_id;
    int                group_index;
    uint64_t           prompt_id;
    int64_t            oldest; /* version of the group's oldest token */
} LearnerPending;

/* A message handler: m is the received frame (its peer, for a reply on a
 * ROUTER socket), *msg the decoded message of the row's type. See the rule
 * at the top for who frees *msg. */
typedef void (*LearnerHandler)(Learner *l, const WireMsg *m, ProtobufCMessage **msg);

/* Who frees a row's message: the dispatcher always, or the dispatcher unless
 * the handler kept it. */
typedef enum {
    LEARNER_DISPATCH_FREES,
    LEARNER_HANDLER_MAY_KEEP,
} LearnerFrees;

/* One row of the dispatch table: a socket, the one message it takes, and
 * who handles it. */
typedef struct {
    Learner                          *l;
    WireSock                         *sock; /* borrowed from the Learner */
    const ProtobufCMessageDescriptor *desc;
    const WireLimits                 *lim; /* what the message is validated against */
    LearnerHandler                    handler;
    LearnerFrees                      frees;
} LearnerRoute;

enum { LEARNER_N_ROUTES = 3 }; /* results, lease, snapshot */

typedef struct LearnerMetrics LearnerMetrics;
typedef struct LearnerPrompts LearnerPrompts; /* learner_task.c: the prompt source, datasets */

struct Learner {
    LearnerConfig  cfg;
    TaskConfig     task;
    uint64_t       prompt_seed; /* train problems */
    uint64_t       eval_seed;   /* held-out problems (the SFT trainer's choice) */
    Tok           *tok;         /* the char task's tokenizer, or NULL with bpe */
    Bpe           *bpe;         /* a GGUF model's tokenizer (cfg.model_path): the chat task */
    ChatTaskConfig chat;
    Model         *policy, *ref, *critic;
    Optim         *opt, *critic_opt;
    Algo          *algo;
    LeaseTable    *leases;

    LearnerPrompts *prompts; /* the prompt source, datasets (learner_task_open) */

    void        *zctx;
    Auth        *auth; /* CURVE keys and ZAP of the sockets (plaintext without keys) */
    WireSock    *s_lease, *s_results, *s_weights, *s_snap;
    WireSnapOut *snap_out;     /* snapshots queued on s_snap: one per peer, a budget in all */
    int          lease_credit; /* groups one connection may hold in flight (learner_lease_credit) */
    WireLimits   lim_req;     /* lease and snapshot requests: any run (the actor may not know it) */
    WireLimits   lim_results; /* scored groups: this run, this vocabulary */
    LearnerRoute
        routes[LEARNER_N_ROUTES]; /* the dispatch table, filled by learner_serve_register */

    char      run_id[33];
    uint64_t  epoch;
    int64_t   version;
    int64_t   step;
    int64_t   last_ckpt_step;
    char      init_dir[PATH_MAX]; /* where the reference came from ("" = random init) */
    char     *config_json;        /* the policy's config, sent in snapshot chunk 0 */
    uint16_t *snap_half;          /* the bf16 snapshot block at checksum_version, or NULL */
    uint64_t  checksum;           /* of the snapshot block at checksum_version */
    int64_t   checksum_version;
    /* With LoRA, the policy's base with the adapters merged (what actors
     * and the held-out evaluation decode), made once per version. */
    Model  *merged;
    int64_t merged_version;
    /* With LoRA, the snapshot block: the frozen base in the wire's type,
     * written once, then the adapters at adapters_version. */
    void    *snap_lora;
    uint64_t checksum_adapters; /* of the adapters' part at adapters_version */
    int64_t  adapters_version;
    uint64_t snapshots_adapters; /* snapshots served as adapters alone */
    bool     memory_logged;      /* the training memory has been logged (first step) */

    LearnerPending *pend;
    int             n_pend, cap_pend;

    /* Scratch for one batch. */
    AlgoTrajectory *traj;
    int             cap_traj;
    int            *prompt_tok; /* (groups, LEARNER_PROMPT_IDS_MAX) */
    int             cap_groups;
    int64_t        *tok_version;
    size_t          cap_versions;

    uint64_t dup_epoch, snapshots_served, grants_empty;
    uint64_t grants_credit;     /* of grants_empty: the peer held its lease credit */
    uint64_t groups_flat;       /* dropped by dynamic sampling (all rewards equal) */
    json_t  *resume_algo_state; /* the checkpoint's "algo_state" until the algo takes it */
    uint64_t samples_total, tokens_total; /* trained by this incarnation */
    double   t_start, t_loop, t_last_step;
    double   accuracy_before, accuracy_start, accuracy_after;
    double   reward_before, reward_start, reward_after; /* held-out mean reward */
    double   last_reward, last_accuracy, last_kl, last_stale;
    FILE    *metrics;
    FILE    *trained_log; /* cfg.trained_log_path, open for appending; NULL = none */
    /* The Prometheus endpoint (learner_metrics), NULL when off. */
    struct LearnerMetrics *http_metrics;
};

/* Wall-clock milliseconds (lease deadlines sent to actors, run id entropy). */
static inline int64_t learner_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Monotonic milliseconds: the lease table's clock. */
static inline int64_t learner_mono_ms(void)
{
    return (int64_t)(progress_now() * 1000.0);
}

static inline const char *learner_algo_name(AlgoKind k)
{
    return algo_kind_name(k);
}

#endif
