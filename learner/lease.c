#include "tests/test_list.h"
#include "learner/lease.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/log.h"
#include "common/base/rng.h"

enum {
    SLOT_IN_FLIGHT = 0,
    SLOT_BUFFERED,
    SLOT_TRAINED,
    SLOT_STALE,
    SLOT_FAILED,
    SLOT_REISSUED,
};

typedef struct {
    uint64_t  id;
    int64_t   deadline_ms;
    int       n;        /* slots */
    int       n_open;   /* slots IN_FLIGHT or BUFFERED */
    int       n_flying; /* slots IN_FLIGHT */
    uint64_t *prompt;   /* (n) prompt indices */
    uint8_t  *state;    /* (n) SLOT_* */
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
    }
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

int lease_grant(LeaseTable *t, int max_prompts, int64_t now_ms, uint64_t *lease_id,
                const uint64_t **prompts)
{
    CHECK(t && lease_id && prompts);
    int n = max_prompts < t->cfg.lease_prompts ? max_prompts : t->cfg.lease_prompts;
    int cap = lease_capacity(t);
    if (n > cap) n = cap;
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
    t->c.issued += (uint64_t)n;
    t->c.in_flight += (uint64_t)n;
    t->c.leases++;
    t->c.leases_active++;
    check_accounting(t);
    *lease_id = l->id;
    *prompts = t->grant_buf;
    return n;
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
        t->c.in_flight -= (uint64_t)l->n_flying;
        t->c.reissued += (uint64_t)l->n_flying;
        l->n_open -= l->n_flying;
        l->n_flying = 0;
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

/* ---- Self-test -------------------------------------------------------- */

typedef struct {
    int  failures;
    bool verbose;
} TestCtx;

static void expect(TestCtx *t, bool ok, const char *what)
{
    if (!ok) {
        t->failures++;
        fprintf(stderr, "lease selftest: FAILED: %s\n", what);
    } else if (t->verbose) {
        printf("  ok: %s\n", what);
    }
}

static const LeaseConfig k_test_cfg = {
    .lease_prompts = 2, .timeout_ms = 100, .max_staleness = 1, .batch_groups = 3};

/* Grant, arrive, duplicate, settle; the capacity bound. */
static void test_basic(TestCtx *t)
{
    LeaseTable     *lt = lease_new(&k_test_cfg, 100, 0);
    uint64_t        id, id2;
    const uint64_t *p;
    expect(t, lease_capacity(lt) == 6, "capacity is (max_staleness + 1) * batch_groups");
    expect(t, lease_grant(lt, 5, 0, &id, &p) == 2 && id == 100 && p[0] == 0 && p[1] == 1,
           "a grant takes lease_prompts fresh prompts in order");
    expect(t, lease_grant(lt, 1, 0, &id2, &p) == 1 && id2 == 101 && p[0] == 2,
           "a grant takes at most max_prompts");
    expect(t, lease_grant(lt, 0, 0, &id2, &p) == 0, "max_prompts 0 grants nothing");
    expect(t, lease_arrive(lt, id, 1, 2, 1, 0, 0) == LEASE_ACCEPTED, "a group is accepted");
    expect(t, lease_arrive(lt, id, 1, 2, 1, 0, 0) == LEASE_DUPLICATE,
           "the same group again is a duplicate");
    expect(t, lease_arrive(lt, id, 0, 2, 7, 0, 0) == LEASE_MISMATCH,
           "a group naming another prompt is a mismatch");
    expect(t, lease_arrive(lt, id, 0, 3, 0, 0, 0) == LEASE_MISMATCH,
           "a group with the wrong count is a mismatch");
    expect(t, lease_arrive(lt, id, 5, 2, 0, 0, 0) == LEASE_MISMATCH,
           "a group index out of range is a mismatch");
    expect(t, lease_arrive(lt, 999, 0, 2, 0, 0, 0) == LEASE_DUPLICATE,
           "an unknown lease is a duplicate");
    expect(t, lease_arrive(lt, id, 0, 2, 0, 3, 5) == LEASE_STALE,
           "a group older than max_staleness is dropped");
    LeaseCounters c;
    lease_counters(lt, &c);
    expect(t,
           c.issued == 3 && c.in_flight == 1 && c.buffered == 1 && c.dropped_stale == 1 &&
               c.duplicates == 2,
           "counters after arrivals");
    lease_settle(lt, id, 1, LEASE_OUT_TRAINED);
    lease_counters(lt, &c);
    expect(t, c.trained == 1 && c.buffered == 0 && c.leases_active == 1,
           "a finished lease is forgotten");
    expect(t, lease_arrive(lt, id, 1, 2, 1, 0, 0) == LEASE_DUPLICATE,
           "a group of a finished lease is a duplicate");
    /* Capacity: 1 in flight of 6. */
    int n = 0, k;
    while ((k = lease_grant(lt, 2, 0, &id2, &p)) > 0) n += k;
    expect(t, n == 5 && lease_capacity(lt) == 0, "grants stop at the staleness bound");
    lease_free(&lt);
    expect(t, lt == NULL, "lease_free NULLs the pointer");
    lease_free(&lt);
}

/* Expiry re-issues the prompts under a new id; the late group is a duplicate. */
static void test_reissue(TestCtx *t)
{
    LeaseTable     *lt = lease_new(&k_test_cfg, 1, 40);
    uint64_t        id, id2, id3;
    const uint64_t *p;
    lease_grant(lt, 2, 1000, &id, &p);
    expect(t, lease_next_deadline(lt) == 1100, "the deadline is grant time + timeout");
    expect(t, lease_arrive(lt, id, 0, 2, 40, 0, 0) == LEASE_ACCEPTED, "first group back");
    expect(t, lease_expire(lt, 1100) == 0, "nothing expires at the deadline itself");
    expect(t, lease_expire(lt, 1101) == 1, "the missing group is re-issued after the deadline");
    LeaseCounters c;
    lease_counters(lt, &c);
    expect(t, c.reissued == 1 && c.in_flight == 0 && c.buffered == 1 && c.leases_expired == 1,
           "counters after expiry");
    expect(t, lease_next_deadline(lt) == INT64_MAX, "no deadline with nothing in flight");
    expect(t, lease_grant(lt, 2, 1200, &id2, &p) == 2 && id2 != id && p[0] == 41 && p[1] == 42,
           "the re-issued prompt goes out first under a new id");
    expect(t, lease_arrive(lt, id, 1, 2, 41, 0, 0) == LEASE_DUPLICATE,
           "the late group of the expired lease is a duplicate");
    expect(t, lease_arrive(lt, id2, 0, 2, 41, 0, 0) == LEASE_ACCEPTED,
           "the re-issued group is accepted");
    lease_settle(lt, id, 0, LEASE_OUT_STALE);
    lease_settle(lt, id2, 0, LEASE_OUT_FAILED);
    lease_counters(lt, &c);
    expect(t, c.dropped_stale == 1 && c.failed == 1 && c.in_flight == 1 && c.issued == 4,
           "settled as stale and failed");

    /* Save and load: the open slot and nothing else comes back first. */
    lease_expire(lt, 5000); /* id2's second slot is re-issued and queued */
    lease_grant(lt, 1, 5000, &id3, &p);
    json_t     *st = lease_state_save(lt);
    LeaseTable *lt2 = lease_new(&k_test_cfg, 1ull << 32, 0);
    expect(t, lease_state_load(lt2, st) == 0, "state loads");
    LeaseCounters c2;
    lease_counters(lt2, &c2);
    lease_counters(lt, &c);
    expect(t,
           c2.issued == c.issued && c2.in_flight == 0 && c2.reissued == c.reissued + 1 &&
               c2.trained == c.trained,
           "the open group of the dead lease counts as re-issued");
    expect(t,
           lease_grant(lt2, 2, 0, &id3, &p) == 2 && id3 == 1ull << 32 && p[0] == 42 && p[1] == 43,
           "pending prompts first, then fresh ones from next_prompt");
    json_decref(st);
    /* A broken state is refused. */
    LeaseTable *lt3 = lease_new(&k_test_cfg, 1, 0);
    json_t     *bad = json_pack("{s:i}", "issued", 5);
    fileio_capture_begin();
    int   rc = lease_state_load(lt3, bad);
    char *log = fileio_capture_end(t->verbose);
    expect(t, rc == ERR_FORMAT && strstr(log, "'trained' missing"),
           "a state without counters is refused, naming the field");
    free(log);
    json_decref(bad);
    bad = json_pack("{s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:[]}", "issued", 5, "trained", 1,
                    "dropped_stale", 0, "reissued", 0, "failed", 0, "in_flight", 0, "buffered", 0,
                    "duplicates", 0, "leases", 1, "leases_expired", 0, "next_prompt", 5, "pending");
    fileio_capture_begin();
    rc = lease_state_load(lt3, bad);
    log = fileio_capture_end(t->verbose);
    expect(t, rc == ERR_FORMAT && strstr(log, "do not add up"),
           "counters that do not add up are refused");
    free(log);
    json_decref(bad);
    lease_free(&lt);
    lease_free(&lt2);
    lease_free(&lt3);
}

typedef struct {
    uint64_t id;
    int      index, count;
    uint64_t prompt;
} Sent;

/* Random sequences of every operation; the table CHECKs the identity after
 * each change and the test checks it from the outside too. */
static void test_random(TestCtx *t)
{
    Rng rng;
    rng_seed(&rng, 7);
    int      bad = 0;
    Sent    *sent = xmalloc(sizeof(Sent) * 4096);
    int      n_sent = 0;
    Sent    *buf = xmalloc(sizeof(Sent) * 4096);
    int      n_buf = 0;
    uint64_t seen_dups = 0;
    for (int round = 0; round < 20; round++) {
        LeaseConfig cfg = {.lease_prompts = 1 + (int)rng_below(&rng, 4),
                           .timeout_ms = 10 + (int64_t)rng_below(&rng, 50),
                           .max_staleness = (int)rng_below(&rng, 3),
                           .batch_groups = 1 + (int)rng_below(&rng, 6)};
        LeaseTable *lt = lease_new(&cfg, 1, 0);
        int64_t     now = 0, version = 0;
        n_sent = n_buf = 0;
        seen_dups = 0;
        for (int step = 0; step < 3000; step++) {
            now += (int64_t)rng_below(&rng, 5);
            int op = (int)rng_below(&rng, 10);
            if (op <= 2) { /* grant */
                uint64_t        id;
                const uint64_t *p;
                int             n = lease_grant(lt, 1 + (int)rng_below(&rng, 5), now, &id, &p);
                for (int i = 0; i < n && n_sent < 4096; i++)
                    sent[n_sent++] = (Sent){id, i, n, p[i]};
            } else if (op <= 5 && n_sent > 0) { /* a group arrives, possibly late or twice */
                int  k = (int)rng_below(&rng, (uint64_t)n_sent);
                Sent s = sent[k];
                if (rng_below(&rng, 4) != 0) sent[k] = sent[--n_sent];
                int64_t      oldest = version - (int64_t)rng_below(&rng, 4);
                LeaseArrival a = lease_arrive(lt, s.id, s.index, s.count, s.prompt,
                                              oldest < 0 ? 0 : oldest, version);
                if (a == LEASE_ACCEPTED) buf[n_buf++] = s;
                if (a == LEASE_DUPLICATE) seen_dups++;
                if (a == LEASE_MISMATCH) bad++;
            } else if (op == 6 && n_sent > 0) { /* a forged group */
                Sent         s = sent[rng_below(&rng, (uint64_t)n_sent)];
                LeaseArrival a =
                    lease_arrive(lt, s.id, s.index, s.count, s.prompt + 1000000, version, version);
                if (a == LEASE_DUPLICATE) seen_dups++;
                if (a == LEASE_ACCEPTED || a == LEASE_STALE) bad++;
            } else if (op == 7 && n_buf >= cfg.batch_groups) { /* a batch */
                for (int i = 0; i < cfg.batch_groups; i++) {
                    int          k = (int)rng_below(&rng, 10);
                    LeaseOutcome o = k == 0   ? LEASE_OUT_FAILED
                                     : k == 1 ? LEASE_OUT_STALE
                                              : LEASE_OUT_TRAINED;
                    lease_settle(lt, buf[i].id, buf[i].index, o);
                }
                memmove(buf, buf + cfg.batch_groups,
                        sizeof(Sent) * (size_t)(n_buf - cfg.batch_groups));
                n_buf -= cfg.batch_groups;
                version++;
            } else if (op == 8) {
                lease_expire(lt, now);
            }
            LeaseCounters c;
            lease_counters(lt, &c);
            if (c.issued != c.trained + c.dropped_stale + c.reissued + c.failed + c.in_flight +
                                c.buffered ||
                c.buffered != (uint64_t)n_buf || c.duplicates != seen_dups ||
                c.in_flight + c.buffered > (uint64_t)((cfg.max_staleness + 1) * cfg.batch_groups))
                bad++;
        }
        /* Drain: expire everything, settle the buffer; nothing may remain. */
        lease_expire(lt, now + 1000);
        for (int i = 0; i < n_buf; i++)
            lease_settle(lt, buf[i].id, buf[i].index, LEASE_OUT_TRAINED);
        LeaseCounters c;
        lease_counters(lt, &c);
        if (c.in_flight || c.buffered || c.leases_active ||
            c.issued != c.trained + c.dropped_stale + c.reissued + c.failed)
            bad++;
        if (t->verbose && round == 0)
            printf("  round 0: issued %llu trained %llu stale %llu reissued %llu failed %llu "
                   "dups %llu\n",
                   (unsigned long long)c.issued, (unsigned long long)c.trained,
                   (unsigned long long)c.dropped_stale, (unsigned long long)c.reissued,
                   (unsigned long long)c.failed, (unsigned long long)c.duplicates);
        lease_free(&lt);
    }
    free(sent);
    free(buf);
    expect(t, bad == 0, "accounting holds over 20 random sequences of 3000 operations");
}

int lease_selftest(bool verbose)
{
    TestCtx t = {.verbose = verbose};
    test_basic(&t);
    test_reissue(&t);
    test_random(&t);
    return t.failures ? 1 : 0;
}
