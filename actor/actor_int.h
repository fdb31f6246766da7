/* actor_int: the actor's internals, shared by its source files (actor.c:
 * life cycle, loop and state machine; actor_weights.c: weight following;
 * actor_work.c: leases and sampling) and its self-test. Not for other
 * modules.
 *
 * Ownership and threading as in actor.h: everything here belongs to the
 * actor's thread. Errors: functions return 0, ACTOR_STOPPED when the stop
 * flag was seen, or a negative code from common/base/err.h; refusals of
 * peer input are counted and logged, never errors of the actor. */
#ifndef RLHF_ACTOR_INT_H
#define RLHF_ACTOR_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "actor/actor.h"
#include "common/net/reactor.h"
#include "common/net/snapshot.h"
#include "common/net/wire.h"
#include "common/net/zsock.h"
#include "common/nn/gen.h"
#include "common/nn/lora.h"
#include "common/nn/model.h"

/* Internal result: the stop flag was seen. */
#define ACTOR_STOPPED 1

/* Recently served leases remembered to drop duplicate grants. */
#define ACTOR_RECENT_LEASES 64

/* The reactor's timers, by name. */
#define ACTOR_TIMER_LEASE "lease" /* IDLE: send a request; REQUESTING: re-send it */
#define ACTOR_TIMER_FETCH "fetch" /* the next snapshot fetch attempt */

/* Where the actor is. Every change goes through actor_set_state. */
typedef enum {
    ACTOR_WAITING_WEIGHTS, /* no weights yet: the fetch timer makes the next attempt */
    ACTOR_FETCHING,        /* a snapshot fetch under way (a blocking call, see actor_weights.h) */
    ACTOR_IDLE,            /* weights held, no request out: the lease timer sends one */
    ACTOR_REQUESTING,      /* a LeaseRequest awaits its reply: the lease timer re-sends it */
    ACTOR_SAMPLING,        /* serving a grant (a blocking call: generation and pushes) */
} ActorState;

/* actor_set_state's delay_ms that leaves the lease timer as it is (a return
 * from FETCHING to the state before it). */
#define ACTOR_KEEP_TIMER (-1)

typedef struct ActorMetrics ActorMetrics;
typedef struct ActorDns     ActorDns;

/* The name of one set of weights. */
typedef struct {
    char     run_id[ACTOR_MAX_RUN_ID];
    uint64_t epoch;
    uint64_t version;
} WeightsId;

typedef struct {
    char     run_id[ACTOR_MAX_RUN_ID];
    uint64_t epoch;
    uint64_t lease_id;
} LeaseSeen;

struct Actor {
    ActorConfig cfg; /* strings point into the copies below */
    char        id[ACTOR_MAX_ID];
    char       *ep_copies[3 + ACTOR_MAX_REWARD];
    uint64_t    seed; /* effective sampling seed */
    void       *zctx;
    Auth       *auth;  /* CURVE keys of the sockets (plaintext without keys) */
    WireSock   *lease; /* DEALER -> learner lease ROUTER */
    WireSock   *sub;   /* SUB <- learner PUB */
    WireSock   *snap;  /* DEALER -> learner snapshot ROUTER */
    WireSock   *push;  /* PUSH -> reward servers */
    ActorDns   *dns;   /* reward host names resolved to every address, or NULL */
    WireRejects local; /* refusals found after decoding (prompts vs model, snapshots) */

    /* The loop (set by actor_run for its duration). */
    Reactor          *reactor;
    const atomic_int *stop;
    ActorState        state;

    /* Weights. */
    Model      *model;         /* NULL before the first snapshot */
    float      *base;          /* LoRA run: the frozen base of held (model_num_params), or NULL */
    Lora       *lora;          /* LoRA run: the held adapters, merged into model, or NULL */
    int         eos_id;        /* stop token of the held model */
    WeightsId   held;          /* identity of the weights in model */
    bool        is_fetch_due;  /* the learner has other weights: fetch at the fetch timer */
    WeightsId   announced;     /* the newest announce that asked for a fetch */
    WeightsId   behind;        /* an announce of the held run and epoch below the held version */
    int         n_behind;      /* times in a row it was announced (actor_on_announce) */
    WireSnapRx *rx;            /* assembles snapshots in its own (spare) buffer */
    int         backoff_ms;    /* wait before the next fetch attempt */
    int         n_fetch_fails; /* failed attempts since the last success */
    double      t_fetch_log;   /* when the last such failure was logged */
    Generator  *gen;
    int         gen_max_len;

    /* Leases. */
    int       group_guess; /* G of the last grant */
    LeaseSeen seen[ACTOR_RECENT_LEASES];
    int       n_seen, seen_at;

    /* Generation buffers for one lease of N = P x G sequences, carved for
     * each grant from one block grown on demand. */
    int        *out_tok;           /* (N, W) */
    float      *out_lps, *out_lpf; /* (N, W) */
    int        *out_n, *out_fin;   /* (N) */
    const int **prompts;           /* (N) */
    int        *plens;             /* (N) */
    Rng        *rngs;              /* (N) one sampling stream per sequence */
    uint64_t   *seq_version;       /* (N) the policy version that made each sequence */
    int        *group_done;        /* (P) completions of each group finished */
    uint64_t   *gb_pv;             /* (G, W) policy versions of the group being pushed */
    void       *buf_block;         /* all of the above */
    size_t      buf_bytes;

    ActorStats st;
    double     t_status; /* monotonic time of the last status line */
    ActorStats st_last;  /* counters at the last status line */
    bool       is_push_warned;
    /* The Prometheus endpoint (actor_metrics), NULL when off. */
    struct ActorMetrics *http_metrics;
};

/* ---- actor.c ---------------------------------------------------------- */

/* The one place the state changes (logged at debug level). It also sets
 * what each state waits for: entering WAITING_WEIGHTS pauses the lease and
 * weights sockets and arms the fetch timer delay_ms ahead; IDLE arms the
 * lease timer delay_ms ahead (ACTOR_KEEP_TIMER: unchanged); REQUESTING arms
 * it reply_timeout_ms ahead unless it returns from FETCHING; IDLE and
 * REQUESTING poll the sockets again. */
void actor_set_state(Actor *a, ActorState to, int delay_ms);
/* Asks for a fetch at the fetch timer's next turn (now). */
void actor_want_fetch(Actor *a);
bool actor_is_stopped(const Actor *a);
/* Whether the actor holds weights (a snapshot was installed). */
bool actor_has_weights(const Actor *a);

/* Receives one message of type desc from s, waiting up to timeout_ms.
 * Returns 0 with *out (caller frees); 1 if the frame was an ErrorReply
 * (logged and counted); ERR_TIMEOUT, ERR_AGAIN (EINTR) or ERR_IO from
 * wire_recv; or a negative code for a frame that was refused (counted in
 * the socket's rejects and logged by wire, rate-limited). */
int actor_recv(Actor *a, WireSock *s, int timeout_ms, const ProtobufCMessageDescriptor *desc,
               ProtobufCMessage **out);
/* Counts and logs a refusal found after decoding. */
void actor_refuse(Actor *a, const char *what, WireReason reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Handles every announce queued on the weights socket without waiting
 * (also between the decode steps of a lease). Returns 0 or ERR_IO. */
int actor_read_announces(Actor *a);
/* Copies src (NULL = "") into dst, truncated to cap. */
void actor_copy_str(char *dst, size_t cap, const char *src);
/* FNV-1a of a string: seeds derived from names. */
uint64_t actor_fnv1a(const char *s);

#endif
