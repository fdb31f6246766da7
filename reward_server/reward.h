/* reward: the reward server context. It binds a PULL socket for SampledGroups
 * from actors, scores every completion with the scorer its prompt's task
 * names, and pushes a ScoredGroup per group to the learner's results PULL.
 *
 *   actors PUSH --tcp--> [samples PULL] front thread [work PUSH] --inproc-->
 *       [PULL] worker thread x N [results PUSH] --tcp--> learner PULL
 *
 * The front thread only moves frames (no copy, no decoding); each worker
 * owns its two sockets, decodes and validates a group with the wire checks
 * (token ids against the char tokenizer's vocab), decodes the token ids to
 * text, scores with the spec its prompt's task names (cfg.scorer's, if set,
 * for every group; scorer_id says which) and forwards. Every refused frame
 * or group is logged (rate limited) with its reason and counted; the server
 * keeps serving. When the learner is slow, sends block for a bounded time
 * and back-pressure reaches the actors through the high-water marks.
 *
 * Ownership: reward_new's caller owns the Reward and frees it with
 * reward_free; config strings are copied. Threading: reward_new starts all
 * threads and returns once every socket is bound or connected; reward_run,
 * reward_stop, reward_stats and reward_status_line may be called from any
 * one thread (reward_stop from any thread at all), and reward_free from the
 * thread that called reward_new. Sockets never leave the thread that made
 * them. Errors: reward_new logs the failure and returns NULL. */
#ifndef RLHF_REWARD_H
#define RLHF_REWARD_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/formats/bpe.h"
#include "common/formats/tok.h"
#include "common/net/auth.h"
#include "common/net/wire.h"
#include "reward_server/rm_scorer.h"
#include "reward_server/sandbox_scorer.h"

#define REWARD_MAX_THREADS 64

typedef struct {
    const char *samples;        /* bind for SampledGroups (default ENDPOINT_SAMPLES) */
    const char *results;        /* learner results to connect (default ENDPOINT_RESULTS) */
    int         threads;        /* scoring threads, 1..REWARD_MAX_THREADS */
    const char *id;             /* this server's name in logs, 1..WIRE_MAX_NAME bytes */
    float       format_bonus;   /* arith: reward added for an integer-shaped answer, [0, 1] */
    const char *model_path;     /* GGUF of the BPE tokenizer (chat task); NULL = char tokenizer */
    const char *scorer;         /* spec for every group (score.h); NULL = each prompt's task */
    double      status_every_s; /* seconds between status lines in reward_run; 0 = none */
    /* Metrics: */
    const char *metrics_addr;    /* HOST:PORT of the Prometheus endpoint; NULL or "" = off */
    double      metrics_stale_s; /* /healthz answers 503 after this long without a pass of
                                    reward_run's loop; 0 = METRICS_STALE_S */
    /* Security: with keys, samples is a CURVE server allowing the keys in DIR/authorized and
       results a CURVE client of DIR/learner.pub (common/net/auth.h); AUTH_DEFAULTS = plaintext. */
    AuthConfig auth;
    /* The "code" scorer's sandbox (reward_server/sandbox_scorer.h); code.sandbox.workers 0 = no
       code scorer. Not required: a pool that cannot start is a warning, and "code" is then
       unknown. The keys directory is hidden from the programs. */
    SandboxScorerConfig code;
    /* The "rm" scorer (reward_server/rm_scorer.h): the reward model's
       checkpoint directory, NULL or "" = none (then "rm" is unknown). */
    const char *reward_model;
    int         rm_max_tokens; /* rows of one forward pass; 0 = RM_DEFAULT_MAX_TOKENS */
    int         rm_streams;    /* forward passes at once; 0 = 1. Above 1, OpenBLAS gets one
                                  thread per product (the streams run side by side) */
} RewardConfig;

typedef struct {
    uint64_t groups_received;         /* frames taken from the samples socket */
    uint64_t groups_scored;           /* ScoredGroups handed to the results socket */
    uint64_t completions_scored;      /* completions in those groups */
    uint64_t groups_unsent;           /* scored but dropped at shutdown (no learner) */
    uint64_t rejects[WIRE_REJ_COUNT]; /* refused frames and groups, by reason */
    uint64_t rejects_total;
    double   score_seconds; /* time the workers spent scoring (decode, scorers) */
    uint64_t refused_auth;  /* connections refused by CURVE/ZAP (also rejects "unauthorized") */
    /* The code scorer's sandbox: */
    bool         has_code;             /* the "code" scorer is registered */
    int          code_isolation;       /* SandboxIsolation in force */
    bool         is_code_net_isolated; /* programs cannot reach the network */
    SandboxStats code;                 /* its runs by verdict */
    /* The reward model: */
    bool    has_rm; /* the "rm" scorer is registered */
    RmStats rm;     /* its completions, passes, time and refusals */
} RewardStats;

typedef struct Reward Reward;

/* Checks cfg (logging what is wrong), creates the ZeroMQ context, the
 * tokenizer and the scorers, starts the threads and waits until the samples
 * endpoint is bound and the results endpoint connected. Returns NULL on any
 * failure, after logging it. Caller owns. */
Reward *reward_new(const RewardConfig *cfg);
/* Stops the threads (a group being scored is finished or dropped), closes
 * the sockets with their short linger, terminates the context and frees
 * everything. No-op on NULL. */
void reward_free(Reward **r);

/* The samples endpoint actually bound, with the port filled in after
 * binding "tcp://...:*"; borrowed. */
const char *reward_samples_endpoint(const Reward *r);

/* Blocks until *stop (a stop flag such as prog_stop_atomic's; may be
 * NULL) becomes non-zero or reward_stop is called, logging a status line
 * every status_every_s and a final one. Wakes at least every 100 ms. Returns 0. */
int reward_run(Reward *r, atomic_int *stop);
/* Makes reward_run return soon. Thread-safe and async-signal-safe. */
void reward_stop(Reward *r);

/* Counters so far (consistent per counter, not across counters). */
void reward_stats(const Reward *r, RewardStats *out);
/* "scored 12 groups (48 completions), 3.1 groups/s, received 14, rejects:
 * garbage=1 bad_tokens=1" with the rate since the previous call (or since
 * start) into buf; with a reward model, "rm 48 completions in 1.2 s, " goes
 * before "received". */
void reward_status_line(Reward *r, char *buf, size_t cap);

/* Renders a completion's ids as text for a scorer: the ids before the first
 * TOK_EOS (the stop token is not part of the text), special ids skipped.
 * out needs TOK_DECODE_MAX_BYTES(n) bytes at most. Returns 0 or tok_decode's
 * ERR_RANGE for an id outside the vocab (logged by tok_decode). */
int reward_completion_text(const Tok *tok, const int32_t *ids, size_t n, char *out, size_t cap);
/* The same for a BPE tokenizer: the ids before the first end-of-turn token
 * (bpe_eot_id), control ids skipped. out needs bpe_decode_max_bytes(b, n)
 * bytes at most. Returns 0 or bpe_decode's ERR_RANGE (logged). */
int reward_completion_text_bpe(const Bpe *b, const int32_t *ids, size_t n, char *out, size_t cap);

#endif
