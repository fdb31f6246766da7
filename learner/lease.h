/* lease: the learner's table of work leases: which prompts are out, under
 * which lease id, until when, and what became of every group. Pure
 * bookkeeping: no sockets, no clock (callers pass monotonic milliseconds), no
 * model; the learner daemon drives it from its poll loop.
 *
 * Units. A lease carries 1..lease_prompts prompts; the G completions of one
 * prompt come back as one group, so the table accounts in groups, one per
 * prompt per issue (a "slot"). Prompts are identified by their index in the
 * task's train split; fresh ones are drawn in order, and re-issued ones are
 * handed out again before any fresh one.
 *
 * State machine of one slot:
 *
 *   queue --grant--> IN_FLIGHT --arrive--> BUFFERED --settle--> TRAINED
 *                     |    |                   |-----settle--> DROPPED_STALE
 *                     |    |                   '-----settle--> FAILED
 *                     |    '--arrive, too stale----------->   DROPPED_STALE
 *                     '--deadline passed (lease_expire)--->   REISSUED
 *                                         (the prompt goes back to the queue)
 *
 * TRAINED, DROPPED_STALE, FAILED and REISSUED are final. A group that
 * arrives for a slot that is not IN_FLIGHT (already arrived, expired, ...)
 * or for a lease id the table does not hold (finished and forgotten, or
 * never issued) is a duplicate: counted, nothing else changes. A lease is
 * forgotten once none of its slots is IN_FLIGHT or BUFFERED.
 *
 * Accounting, CHECKed after every change (in_flight and buffered recounted
 * from the slots):
 *   issued == trained + dropped_stale + reissued + failed + in_flight + buffered
 *
 * Staleness control: the table never lets more than
 * (max_staleness + 1) * batch_groups groups be IN_FLIGHT or BUFFERED, which
 * is what max_staleness + 1 optimizer steps consume, and a group whose
 * oldest token version is older than current - max_staleness is dropped.
 *
 * Credit: a grant may be charged to up to LEASE_MAX_ACCOUNTS accounts (the
 * learner's are the requesting connection and, with CURVE, its key; see
 * learner/learner_serve.c), each a name of up to LEASE_ACCOUNT_MAX_ID bytes
 * with a credit: the groups it may hold IN_FLIGHT at once. A slot that
 * leaves IN_FLIGHT (arrival, expiry) gives its credit back to every account
 * its lease was charged to. The table keeps a count per account that holds
 * anything (at most capacity accounts) and forgets an account at zero;
 * that each count equals the IN_FLIGHT slots charged to it is CHECKed with
 * the accounting below. A peer that never answers thus holds at most its
 * credit, and gets it back only as its leases expire.
 *
 * Restarts: lease_state_save writes the counters and every prompt not yet
 * finished (queued, in flight, buffered); lease_state_load, on a fresh
 * table, restores them with the unfinished in-flight and buffered groups
 * counted as re-issued (their leases died with the old process) and their
 * prompts queued first.
 *
 * Ownership: lease_new's caller owns the table. Threading: one thread.
 * Errors: misuse (settling a slot that is not BUFFERED, a bad config) is a
 * CHECK; peer-provided ids never are: lease_arrive classifies anything.
 * lease_state_load validates its (file) input and returns ERR_FORMAT. */
#ifndef RLHF_LEASE_H
#define RLHF_LEASE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct {
    int     lease_prompts; /* prompts per lease at most, >= 1 */
    int64_t timeout_ms;    /* a lease's deadline after its grant, > 0 */
    int     max_staleness; /* versions a group's oldest token may lag, >= 0 */
    int     batch_groups;  /* groups one optimizer step consumes, >= 1 */
} LeaseConfig;

typedef struct {
    uint64_t issued;        /* groups handed out, re-issues included */
    uint64_t trained;       /* groups used by an optimizer step */
    uint64_t dropped_stale; /* groups dropped as older than max_staleness */
    uint64_t reissued;      /* groups whose lease expired (prompt queued again) */
    uint64_t failed;        /* groups the update refused (invalid for the model) */
    uint64_t in_flight;     /* groups issued, not yet back */
    uint64_t buffered;      /* groups back, waiting for a batch */
    uint64_t duplicates;    /* late or repeated groups discarded (not part of issued) */
    uint64_t leases;        /* leases granted */
    uint64_t leases_expired;
    uint64_t leases_active; /* leases the table still holds */
} LeaseCounters;

typedef enum {
    LEASE_ACCEPTED = 0, /* the slot is now BUFFERED: the caller keeps the group */
    LEASE_STALE,        /* too old: the slot is DROPPED_STALE, discard the group */
    LEASE_DUPLICATE,    /* not expected (any more): discard, counted */
    LEASE_MISMATCH,     /* the lease exists but the group does not fit it (index,
                           count or prompt differs): nothing changed; a bad peer */
} LeaseArrival;

typedef enum {
    LEASE_OUT_TRAINED = 0,
    LEASE_OUT_STALE,
    LEASE_OUT_FAILED,
} LeaseOutcome;

typedef struct LeaseTable LeaseTable;

#define LEASE_MAX_ACCOUNTS 2     /* accounts one grant is charged to at most */
#define LEASE_ACCOUNT_MAX_ID 272 /* bytes of an account's name */

/* An account a grant is charged to (see Credit at the top). */
typedef struct {
    const void *id;     /* its name, borrowed */
    size_t      id_len; /* 1..LEASE_ACCOUNT_MAX_ID bytes */
    int         credit; /* groups it may hold in flight at once, >= 1 */
} LeaseAccount;

/* A table whose lease ids start at first_lease_id (the learner folds its
 * restart epoch into the high bits so ids never repeat within a run) and
 * whose fresh prompts start at index first_prompt. CHECKs the config.
 * Caller owns. */
LeaseTable *lease_new(const LeaseConfig *cfg, uint64_t first_lease_id, uint64_t first_prompt);
void        lease_free(LeaseTable **t);

/* Groups that may still be granted under the staleness bound. */
int lease_capacity(const LeaseTable *t);

/* Grants a lease of min(max_prompts, lease_prompts, capacity) prompts with
 * deadline now_ms + timeout_ms. Returns the number of prompts (0 if there
 * is no capacity or max_prompts <= 0: nothing is granted) with *lease_id and
 * *prompts (prompt indices, borrowed until the next call that changes the
 * table) set. */
int lease_grant(LeaseTable *t, int max_prompts, int64_t now_ms, uint64_t *lease_id,
                const uint64_t **prompts);

/* Groups the n accounts (0..LEASE_MAX_ACCOUNTS; a bad account is a
 * CHECK) may still take: the least credit left among them, INT_MAX for
 * none. 0 means a grant to them would be refused for credit. */
int lease_credit_left(const LeaseTable *t, const LeaseAccount *acct, int n_acct);

/* lease_grant, charged to the n accounts: at most lease_credit_left
 * prompts (0, nothing granted, when that is 0). */
int lease_grant_to(LeaseTable *t, int max_prompts, int64_t now_ms, const LeaseAccount *acct,
                   int n_acct, uint64_t *lease_id, const uint64_t **prompts);

/* Accounts that hold groups in flight now, and the most one of them holds. */
void lease_holders(const LeaseTable *t, int *n_accounts, int *max_held);

/* A group came back for slot group_index of lease_id (the group says the
 * lease has group_count prompts and this one is prompt_id); its oldest token
 * was sampled at oldest_version and the learner is at current_version. */
LeaseArrival lease_arrive(LeaseTable *t, uint64_t lease_id, int group_index, int group_count,
                          uint64_t prompt_id, int64_t oldest_version, int64_t current_version);

/* True if a group whose oldest token is oldest_version is too stale at
 * current_version. */
bool lease_is_stale(const LeaseTable *t, int64_t oldest_version, int64_t current_version);

/* Final state of a BUFFERED slot (CHECKed). */
void lease_settle(LeaseTable *t, uint64_t lease_id, int group_index, LeaseOutcome out);

/* Expires every lease whose deadline is before now_ms: its IN_FLIGHT slots
 * become REISSUED and their prompts are queued again. Returns the number of
 * groups re-issued. */
int lease_expire(LeaseTable *t, int64_t now_ms);

/* The earliest deadline of a lease with slots in flight, or INT64_MAX. */
int64_t lease_next_deadline(const LeaseTable *t);

void lease_counters(const LeaseTable *t, LeaseCounters *out);

/* The table's persistent state as a new JSON object (caller owns). */
json_t *lease_state_save(const LeaseTable *t);
/* Restores a saved state into a table fresh from lease_new (CHECKed: nothing
 * granted yet), as described at the top. Returns 0 or ERR_FORMAT (logged)
 * for a missing or ill-typed field or inconsistent counters; then the table
 * is unchanged. */
int lease_state_load(LeaseTable *t, const json_t *state);

#endif
