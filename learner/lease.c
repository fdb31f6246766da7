#include "learner/lease.h"

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/log.h"

enum {
    SLOT_IN_FLIGHT = 0,
    SLOT_BUFFERED,
    SLOT_TRAINED,
    SLOT_STALE,
    SLOT_FAILED,
    SLOT_REISSUED,
};

/* An account holding groups in flight (see Credit in lease.h). Allocated
 * one by one, so a lease's pointer stays valid while the table's array of
 * accounts is reordered. */
typedef struct {
    uint8_t id[LEASE_ACCOUNT_MAX_ID];
    size_t  id_len;
    int     held;  /* groups in flight charged to it, > 0 */
    int     check; /* scratch of check_accounting */
} Account;

typedef struct {
    uint64_t  id;
    int64_t   deadline_ms;
    int       n;                        /* slots */
    int       n_open;                   /* slots IN_FLIGHT or BUFFERED */
    int       n_flying;                 /* slots IN_FLIGHT */
    uint64_t *prompt;                   /* (n) prompt indices */
    uint8_t  *state;                    /* (n) SLOT_* */
    Account  *acct[LEASE_MAX_ACCOUNTS]; /* charged while n_flying > 0, else NULL */
} Lease;

struct LeaseTable {
    LeaseConfig   cfg;
    uint64_t      next_id;
    uint64_t      next_prompt; /* first fresh prompt index */
    uint64_t     *queue;       /* prompts to issue before fresh ones, FIFO */
    size_t        queue_head, queue_len, queue_cap;
    Lease       **lease; /* active leases */
    int           n_lease, cap_lease;
    uint64_t     *grant_buf; /* (lease_prompts) the last grant's prompts */
    Account     **acct;      /* accounts holding groups in flight */
    int           n_acct, cap_acct;
    LeaseCounters c;
};

/* Recounts in_flight and buffered from the slots and checks the identity. */
static void check_accounting(const LeaseTable *t)
{
    uint64_t flying = 0, buffered = 0;
    for (int i = 0; i < t->n_lease; i++) {
        const Lease *l = t->lease[i];
        int          f = 0, b = 0;
        for (int s = 0; s < l->n; s++) {
            f += l->state[s] == SLOT_IN_FLIGHT;
            b += l->state[s] == SLOT_BUFFERED;
        }
        CHECK(f == l->n_flying && f + b == l->n_open && l->n_open > 0);
        flying += (uint64_t)f;
        buffered += (uint64_t)b;
        for (int k = 0; k < LEASE_MAX_ACCOUNTS; k++) CHECK(!l->acct[k] || f > 0);
    }
    /* Every account's count is the IN_FLIGHT slots charged to it. */
    for (int a = 0; a < t->n_acct; a++) t->acct[a]->check = 0;
    for (int i = 0; i < t->n_lease; i++)
        for (int k = 0; k < LEASE_MAX_ACCOUNTS; k++)
            if (t->lease[i]->acct[k]) t->lease[i]->acct[k]->check += t->lease[i]->n_flying;
    for (int a = 0; a < t->n_acct; a++)
        CHECK(t->acct[a]->held > 0 && t->acct[a]->check == t->acct[a]->held);
    const LeaseCounters *c = &t->c;
    CHECK(flying == c->in_flight && buffered == c->buffered);
    CHECK(c->issued ==
          c->trained + c->dropped_stale + c->reissued + c->failed + c->in_flight + c->buffered);
    CHECK(c->leases_active == (uint64_t)t->n_lease);
    CHECK(c->in_flight + c->buffered <=
          (uint64_t)(t->cfg.max_staleness + 1) * (uint64_t)t->cfg.batch_groups);
}

LeaseTable *lease_new(const LeaseConfig *cfg, uint64_t first_lease_id, uint64_t first_prompt)
{
    CHECK(cfg && cfg->lease_prompts >= 1 && cfg->timeout_ms > 0 && cfg->max_staleness >= 0 &&
          cfg->batch_groups >= 1);
    /* The bound must admit at least one full lease, or a grant could never happen. */
    CHECK((int64_t)(cfg->max_staleness + 1) * cfg->batch_groups < (int64_t)1 << 30);
    LeaseTable *t = xcalloc(1, sizeof *t);
    t->cfg = *cfg;
    t->next_id = first_lease_id;
    t->next_prompt = first_prompt;
    t->grant_buf = xmalloc(sizeof(uint64_t) * (size_t)cfg->lease_prompts);
    return t;
}

static void lease_release(Lease **l)
{
    if (!*l) return;
    free((*l)->prompt);
    free((*l)->state);
    free(*l);
    *l = NULL;
}

void lease_free(LeaseTable **t)
{
    if (!t || !*t) return;
    for (int i = 0; i < (*t)->n_lease; i++) lease_release(&(*t)->lease[i]);
    free((*t)->lease);
    free((*t)->queue);
    free((*t)->grant_buf);
    for (int a = 0; a < (*t)->n_acct; a++) free((*t)->acct[a]);
    free((*t)->acct);
    free(*t);
    *t = NULL;
}

int lease_capacity(const LeaseTable *t)
{
    int64_t cap = (int64_t)(t->cfg.max_staleness + 1) * t->cfg.batch_groups;
    int64_t out = (int64_t)(t->c.in_flight + t->c.buffered);
    return cap > out ? (int)(cap - out) : 0;
}

static void queue_push(LeaseTable *t, uint64_t prompt)
{
    if (t->queue_head + t->queue_len == t->queue_cap) {
        if (t->queue_head > 0) {
            memmove(t->queue, t->queue + t->queue_head, sizeof(uint64_t) * t->queue_len);
            t->queue_head = 0;
        }
        if (t->queue_len == t->queue_cap) {
            t->queue_cap = t->queue_cap ? 2 * t->queue_cap : 16;
            t->queue = xrealloc(t->queue, sizeof(uint64_t) * t->queue_cap);
        }
    }
    t->queue[t->queue_head + t->queue_len++] = prompt;
}

static uint64_t next_prompt(LeaseTable *t)
{
    if (t->queue_len > 0) {
        t->queue_len--;
        return t->queue[t->queue_head++];
    }
    return t->next_prompt++;
}

/* The account named like a, or NULL. */
static Account *find_account(const LeaseTable *t, const LeaseAccount *a)
{
    for (int i = 0; i < t->n_acct; i++)
        if (t->acct[i]->id_len == a->id_len && !memcmp(t->acct[i]->id, a->id, a->id_len))
            return t->acct[i];
    return NULL;
}

static void check_accounts(const LeaseAccount *acct, int n_acct)
{
    CHECK(n_acct >= 0 && n_acct <= LEASE_MAX_ACCOUNTS && (n_acct == 0 || acct));
    for (int k = 0; k < n_acct; k++)
        CHECK(acct[k].id && acct[k].id_len >= 1 && acct[k].id_len <= LEASE_ACCOUNT_MAX_ID &&
              acct[k].credit >= 1);
}

int lease_credit_left(const LeaseTable *t, const LeaseAccount *acct, int n_acct)
{
    CHECK(t);
    check_accounts(acct, n_acct);
    int left = INT_MAX;
    for (int k = 0; k < n_acct; k++) {
        const Account *a = find_account(t, &acct[k]);
        int            free_k = acct[k].credit - (a ? a->held : 0);
        if (free_k < left) left = free_k;
    }
    return left > 0 ? left : 0;
}

/* Charges n groups of lease l to the accounts, making them as needed. */
static void charge(LeaseTable *t, Lease *l, const LeaseAccount *acct, int n_acct, int n)
{
    for (int k = 0; k < n_acct; k++) {
        Account *a = find_account(t, &acct[k]);
        if (!a) {
            a = xcalloc(1, sizeof *a);
            memcpy(a->id, acct[k].id, acct[k].id_len);
            a->id_len = acct[k].id_len;
            if (t->n_acct == t->cap_acct) {
                t->cap_acct = t->cap_acct ? 2 * t->cap_acct : 8;
                t->acct = xrealloc(t->acct, sizeof(Account *) * (size_t)t->cap_acct);
            }
            t->acct[t->n_acct++] = a;
        }
        /* The same account twice in one grant is charged once. */
        bool is_dup = false;
        for (int j = 0; j < k; j++) is_dup |= l->acct[j] == a;
        if (is_dup) continue;
        a->held += n;
        l->acct[k] = a;
    }
}

/* Gives back the credit of k slots of l that left IN_FLIGHT (l->n_flying
 * already lowered); forgets accounts that hold nothing any more, and the
 * lease's accounts once nothing of it flies. */
static void release(LeaseTable *t, Lease *l, int k)
{
    for (int j = 0; j < LEASE_MAX_ACCOUNTS; j++) {
        Account *a = l->acct[j];
        if (!a) continue;
        a->held -= k;
        CHECK(a->held >= 0);
        if (a->held == 0) {
            for (int i = 0; i < t->n_acct; i++)
                if (t->acct[i] == a) {
                    t->acct[i] = t->acct[--t->n_acct];
                    break;
                }
            free(a);
            /* Another lease charged to a has no flying slots left either. */
            l->acct[j] = NULL;
        }
        if (l->n_flying == 0) l->acct[j] = NULL;
    }
}

int lease_grant_to(LeaseTable *t, int max_prompts, int64_t now_ms, const LeaseAccount *acct,
                   int n_acct, uint64_t *lease_id, const uint64_t **prompts)
{
    CHECK(t && lease_id && prompts);
    int n = max_prompts < t->cfg.lease_prompts ? max_prompts : t->cfg.lease_prompts;
    int cap = lease_capacity(t);
    if (n > cap) n = cap;
    int left = lease_credit_left(t, acct, n_acct);
    if (n > left) n = left;
    if (n <= 0) return 0;
    Lease *l = xcalloc(1, sizeof *l);
    l->id = t->next_id++;
    l->deadline_ms = now_ms + t->cfg.timeout_ms;
    l->n = l->n_open = l->n_flying = n;
    l->prompt = xmalloc(sizeof(uint64_t) * (size_t)n);
    l->state = xcalloc((size_t)n, 1); /* SLOT_IN_FLIGHT == 0 */
    for (int i = 0; i < n; i++) l->prompt[i] = t->grant_buf[i] = next_prompt(t);
    if (t->n_lease == t->cap_lease) {
        t->cap_lease = t->cap_lease ? 2 * t->cap_lease : 8;
        t->lease = xrealloc(t->lease, sizeof(Lease *) * (size_t)t->cap_lease);
    }
    t->lease[t->n_lease++] = l;
    charge(t, l, acct, n_acct, n);
    t->c.issued += (uint64_t)n;
    t->c.in_flight += (uint64_t)n;
    t->c.leases++;
    t->c.leases_active++;
    check_accounting(t);
    *lease_id = l->id;
    *prompts = t->grant_buf;
    return n;
}

int lease_grant(LeaseTable *t, int max_prompts, int64_t now_ms, uint64_t *lease_id,
                const uint64_t **prompts)
{
    return lease_grant_to(t, max_prompts, now_ms, NULL, 0, lease_id, prompts);
}

void lease_holders(const LeaseTable *t, int *n_accounts, int *max_held)
{
    CHECK(t);
    int most = 0;
    for (int i = 0; i < t->n_acct; i++)
        if (t->acct[i]->held > most) most = t->acct[i]->held;
    if (n_accounts) *n_accounts = t->n_acct;
    if (max_held) *max_held = most;
}

static int find_lease(const LeaseTable *t, uint64_t id)
{
    for (int i = 0; i < t->n_lease; i++)
        if (t->lease[i]->id == id) return i;
    return -1;
}

/* Forgets lease i if nothing of it is open any more. */
static void maybe_forget(LeaseTable *t, int i)
{
    if (t->lease[i]->n_open > 0) return;
    lease_release(&t->lease[i]);
    t->lease[i] = t->lease[--t->n_lease];
    t->c.leases_active--;
}

bool lease_is_stale(const LeaseTable *t, int64_t oldest_version, int64_t current_version)
{
    return oldest_version < current_version - t->cfg.max_staleness;
}

LeaseArrival lease_arrive(LeaseTable *t, uint64_t lease_id, int group_index, int group_count,
                          uint64_t prompt_id, int64_t oldest_version, int64_t current_version)
{
    CHECK(t);
    int i = find_lease(t, lease_id);
    if (i < 0) {
        t->c.duplicates++;
        return LEASE_DUPLICATE;
    }
    Lease *l = t->lease[i];
    if (group_count != l->n || group_index < 0 || group_index >= l->n ||
        l->prompt[group_index] != prompt_id)
        return LEASE_MISMATCH;
    if (l->state[group_index] != SLOT_IN_FLIGHT) {
        t->c.duplicates++;
        return LEASE_DUPLICATE;
    }
    l->n_flying--;
    t->c.in_flight--;
    release(t, l, 1);
    LeaseArrival r;
    if (lease_is_stale(t, oldest_version, current_version)) {
        l->state[group_index] = SLOT_STALE;
        l->n_open--;
        t->c.dropped_stale++;
        r = LEASE_STALE;
    } else {
        l->state[group_index] = SLOT_BUFFERED;
        t->c.buffered++;
        r = LEASE_ACCEPTED;
    }
    maybe_forget(t, i);
    check_accounting(t);
    return r;
}

void lease_settle(LeaseTable *t, uint64_t lease_id, int group_index, LeaseOutcome out)
{
    CHECK(t);
    int i = find_lease(t, lease_id);
    CHECK(i >= 0);
    Lease *l = t->lease[i];
    CHECK(group_index >= 0 && group_index < l->n && l->state[group_index] == SLOT_BUFFERED);
    switch (out) {
    case LEASE_OUT_TRAINED:
        l->state[group_index] = SLOT_TRAINED;
        t->c.trained++;
        break;
    case LEASE_OUT_STALE:
        l->state[group_index] = SLOT_STALE;
        t->c.dropped_stale++;
        break;
    case LEASE_OUT_FAILED:
        l->state[group_index] = SLOT_FAILED;
        t->c.failed++;
        break;
    default:
        CHECK(!"lease_settle: unknown outcome");
    }
    t->c.buffered--;
    l->n_open--;
    maybe_forget(t, i);
    check_accounting(t);
}

int lease_expire(LeaseTable *t, int64_t now_ms)
{
    CHECK(t);
    int n = 0;
    for (int i = 0; i < t->n_lease;) {
        Lease *l = t->lease[i];
        if (l->n_flying == 0 || l->deadline_ms >= now_ms) {
            i++;
            continue;
        }
        for (int s = 0; s < l->n; s++) {
            if (l->state[s] != SLOT_IN_FLIGHT) continue;
            l->state[s] = SLOT_REISSUED;
            queue_push(t, l->prompt[s]);
            n++;
        }
        int k = l->n_flying;
        t->c.in_flight -= (uint64_t)k;
        t->c.reissued += (uint64_t)k;
        l->n_open -= k;
        l->n_flying = 0;
        release(t, l, k);
        t->c.leases_expired++;
        int before = t->n_lease;
        maybe_forget(t, i);
        if (t->n_lease == before) i++; /* kept (buffered slots); else i holds another lease */
    }
    if (n) check_accounting(t);
    return n;
}

int64_t lease_next_deadline(const LeaseTable *t)
{
    int64_t d = INT64_MAX;
    for (int i = 0; i < t->n_lease; i++)
        if (t->lease[i]->n_flying > 0 && t->lease[i]->deadline_ms < d) d = t->lease[i]->deadline_ms;
    return d;
}

void lease_counters(const LeaseTable *t, LeaseCounters *out)
{
    CHECK(t && out);
    *out = t->c;
}

/* ---- Persistence ------------------------------------------------------ */

json_t *lease_state_save(const LeaseTable *t)
{
    CHECK(t);
    json_t *pending = json_array();
    CHECK(pending);
    /* Unfinished leases first, in slot order, then the queue: the order a
     * restarted learner hands them out again. */
    for (int i = 0; i < t->n_lease; i++) {
        const Lease *l = t->lease[i];
        for (int s = 0; s < l->n; s++)
            if (l->state[s] == SLOT_IN_FLIGHT || l->state[s] == SLOT_BUFFERED)
                json_array_append_new(pending, json_integer((json_int_t)l->prompt[s]));
    }
    for (size_t q = 0; q < t->queue_len; q++)
        json_array_append_new(pending, json_integer((json_int_t)t->queue[t->queue_head + q]));
    const LeaseCounters *c = &t->c;
    json_t              *o =
        json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o}", "issued",
                  (json_int_t)c->issued, "trained", (json_int_t)c->trained, "dropped_stale",
                  (json_int_t)c->dropped_stale, "reissued", (json_int_t)c->reissued, "failed",
                  (json_int_t)c->failed, "in_flight", (json_int_t)c->in_flight, "buffered",
                  (json_int_t)c->buffered, "duplicates", (json_int_t)c->duplicates, "leases",
                  (json_int_t)c->leases, "leases_expired", (json_int_t)c->leases_expired,
                  "next_prompt", (json_int_t)t->next_prompt, "pending", pending);
    CHECK(o);
    return o;
}

static int get_count(const json_t *o, const char *key, uint64_t *out)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        log_error("lease_state_load: '%s' missing or not a non-negative integer", key);
        return ERR_FORMAT;
    }
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

int lease_state_load(LeaseTable *t, const json_t *state)
{
    CHECK(t && t->c.issued == 0 && t->n_lease == 0 && t->queue_len == 0);
    if (!json_is_object(state)) {
        log_error("lease_state_load: state is not a JSON object");
        return ERR_FORMAT;
    }
    LeaseCounters c = {0};
    uint64_t      next = 0;
    int           rc;
    if ((rc = get_count(state, "issued", &c.issued)) ||
        (rc = get_count(state, "trained", &c.trained)) ||
        (rc = get_count(state, "dropped_stale", &c.dropped_stale)) ||
        (rc = get_count(state, "reissued", &c.reissued)) ||
        (rc = get_count(state, "failed", &c.failed)) ||
        (rc = get_count(state, "in_flight", &c.in_flight)) ||
        (rc = get_count(state, "buffered", &c.buffered)) ||
        (rc = get_count(state, "duplicates", &c.duplicates)) ||
        (rc = get_count(state, "leases", &c.leases)) ||
        (rc = get_count(state, "leases_expired", &c.leases_expired)) ||
        (rc = get_count(state, "next_prompt", &next)))
        return rc;
    if (c.issued !=
        c.trained + c.dropped_stale + c.reissued + c.failed + c.in_flight + c.buffered) {
        log_error("lease_state_load: counters do not add up: issued %" PRIu64 " != trained %" PRIu64
                  " + dropped_stale %" PRIu64 " + reissued %" PRIu64 " + failed %" PRIu64
                  " + in_flight %" PRIu64 " + buffered %" PRIu64,
                  c.issued, c.trained, c.dropped_stale, c.reissued, c.failed, c.in_flight,
                  c.buffered);
        return ERR_FORMAT;
    }
    json_t *pending = json_object_get(state, "pending");
    if (!json_is_array(pending)) {
        log_error("lease_state_load: 'pending' missing or not an array");
        return ERR_FORMAT;
    }
    size_t n = json_array_size(pending);
    if (n < c.in_flight + c.buffered) {
        log_error("lease_state_load: %zu pending prompts, expected at least in_flight + "
                  "buffered = %" PRIu64,
                  n, c.in_flight + c.buffered);
        return ERR_FORMAT;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(pending, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0) {
            log_error("lease_state_load: pending[%zu] is not a non-negative integer", i);
            return ERR_FORMAT;
        }
    }
    for (size_t i = 0; i < n; i++)
        queue_push(t, (uint64_t)json_integer_value(json_array_get(pending, i)));
    /* The old process's leases are gone: what they had out is re-issued. */
    c.reissued += c.in_flight + c.buffered;
    c.in_flight = c.buffered = 0;
    c.leases_active = 0;
    t->c = c;
    t->next_prompt = next;
    check_accounting(t);
    return 0;
}
