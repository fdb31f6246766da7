/* lease's self-test: grants, arrivals, duplicates and settling; expiry and
 * re-issue; saving and loading the state; credit per account; and the
 * accounting identity over random sequences of every operation. */
#include "learner/lease.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/rng.h"
#include "tests/support/expect.h"
#include "tests/test_list.h"

static const LeaseConfig k_test_cfg = {
    .lease_prompts = 2, .timeout_ms = 100, .max_staleness = 1, .batch_groups = 3};

/* Grant, arrive, duplicate, settle; the capacity bound. */
static void test_basic(void)
{
    LeaseTable     *lt = lease_new(&k_test_cfg, 100, 0);
    uint64_t        id, id2;
    const uint64_t *p;
    EXPECT(lease_capacity(lt) == 6, "capacity %d, expected 6: (max_staleness + 1) * batch_groups",
           lease_capacity(lt));
    EXPECT(lease_grant(lt, 5, 0, &id, &p) == 2 && id == 100 && p[0] == 0 && p[1] == 1,
           "a grant takes lease_prompts fresh prompts in order");
    EXPECT(lease_grant(lt, 1, 0, &id2, &p) == 1 && id2 == 101 && p[0] == 2,
           "a grant takes at most max_prompts");
    EXPECT(lease_grant(lt, 0, 0, &id2, &p) == 0, "max_prompts 0 grants nothing");
    EXPECT(lease_arrive(lt, id, 1, 2, 1, 0, 0) == LEASE_ACCEPTED, "a group is accepted");
    EXPECT(lease_arrive(lt, id, 1, 2, 1, 0, 0) == LEASE_DUPLICATE,
           "the same group again is a duplicate");
    EXPECT(lease_arrive(lt, id, 0, 2, 7, 0, 0) == LEASE_MISMATCH,
           "a group naming another prompt is a mismatch");
    EXPECT(lease_arrive(lt, id, 0, 3, 0, 0, 0) == LEASE_MISMATCH,
           "a group with the wrong count is a mismatch");
    EXPECT(lease_arrive(lt, id, 5, 2, 0, 0, 0) == LEASE_MISMATCH,
           "a group index out of range is a mismatch");
    EXPECT(lease_arrive(lt, 999, 0, 2, 0, 0, 0) == LEASE_DUPLICATE,
           "an unknown lease is a duplicate");
    EXPECT(lease_arrive(lt, id, 0, 2, 0, 3, 5) == LEASE_STALE,
           "a group older than max_staleness is dropped");
    LeaseCounters c;
    lease_counters(lt, &c);
    EXPECT(c.issued == 3 && c.in_flight == 1 && c.buffered == 1 && c.dropped_stale == 1 &&
               c.duplicates == 2,
           "counters after arrivals");
    lease_settle(lt, id, 1, LEASE_OUT_TRAINED);
    lease_counters(lt, &c);
    EXPECT(c.trained == 1 && c.buffered == 0 && c.leases_active == 1,
           "a finished lease is forgotten");
    EXPECT(lease_arrive(lt, id, 1, 2, 1, 0, 0) == LEASE_DUPLICATE,
           "a group of a finished lease is a duplicate");
    /* Capacity: 1 in flight of 6. */
    int n = 0, k;
    while ((k = lease_grant(lt, 2, 0, &id2, &p)) > 0) n += k;
    EXPECT(n == 5 && lease_capacity(lt) == 0,
           "grants stop at the staleness bound: %d more prompts granted, capacity %d left, "
           "expected 5 and 0",
           n, lease_capacity(lt));
    lease_free(&lt);
    EXPECT(lt == NULL, "lease_free NULLs the pointer");
    lease_free(&lt);
}

/* Expiry re-issues the prompts under a new id; the late group is a duplicate. */
static void test_reissue(void)
{
    LeaseTable     *lt = lease_new(&k_test_cfg, 1, 40);
    uint64_t        id, id2, id3;
    const uint64_t *p;
    lease_grant(lt, 2, 1000, &id, &p);
    EXPECT(lease_next_deadline(lt) == 1100, "the deadline is grant time + timeout");
    EXPECT(lease_arrive(lt, id, 0, 2, 40, 0, 0) == LEASE_ACCEPTED, "first group back");
    EXPECT(lease_expire(lt, 1100) == 0, "nothing expires at the deadline itself");
    EXPECT(lease_expire(lt, 1101) == 1, "the missing group is re-issued after the deadline");
    LeaseCounters c;
    lease_counters(lt, &c);
    EXPECT(c.reissued == 1 && c.in_flight == 0 && c.buffered == 1 && c.leases_expired == 1,
           "counters after expiry");
    EXPECT(lease_next_deadline(lt) == INT64_MAX, "no deadline with nothing in flight");
    EXPECT(lease_grant(lt, 2, 1200, &id2, &p) == 2 && id2 != id && p[0] == 41 && p[1] == 42,
           "the re-issued prompt goes out first under a new id");
    EXPECT(lease_arrive(lt, id, 1, 2, 41, 0, 0) == LEASE_DUPLICATE,
           "the late group of the expired lease is a duplicate");
    EXPECT(lease_arrive(lt, id2, 0, 2, 41, 0, 0) == LEASE_ACCEPTED,
           "the re-issued group is accepted");
    lease_settle(lt, id, 0, LEASE_OUT_STALE);
    lease_settle(lt, id2, 0, LEASE_OUT_FAILED);
    lease_counters(lt, &c);
    EXPECT(c.dropped_stale == 1 && c.failed == 1 && c.in_flight == 1 && c.issued == 4,
           "settled as stale and failed");

    /* Save and load: the open slot and nothing else comes back first. */
    lease_expire(lt, 5000); /* id2's second slot is re-issued and queued */
    lease_grant(lt, 1, 5000, &id3, &p);
    json_t     *st = lease_state_save(lt);
    LeaseTable *lt2 = lease_new(&k_test_cfg, 1ull << 32, 0);
    EXPECT(lease_state_load(lt2, st) == 0, "state loads");
    LeaseCounters c2;
    lease_counters(lt2, &c2);
    lease_counters(lt, &c);
    EXPECT(c2.issued == c.issued && c2.in_flight == 0 && c2.reissued == c.reissued + 1 &&
               c2.trained == c.trained,
           "the open group of the dead lease counts as re-issued");
    EXPECT(lease_grant(lt2, 2, 0, &id3, &p) == 2 && id3 == 1ull << 32 && p[0] == 42 && p[1] == 43,
           "pending prompts first, then fresh ones from next_prompt");
    json_decref(st);
    /* A broken state is refused. */
    LeaseTable *lt3 = lease_new(&k_test_cfg, 1, 0);
    json_t     *bad = json_pack("{s:i}", "issued", 5);
    EXPECT_REFUSED(lease_state_load(lt3, bad), ERR_FORMAT, "'trained' missing",
                   "a state without counters is refused, naming the field");
    json_decref(bad);
    bad = json_pack("{s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:[]}", "issued", 5, "trained", 1,
                    "dropped_stale", 0, "reissued", 0, "failed", 0, "in_flight", 0, "buffered", 0,
                    "duplicates", 0, "leases", 1, "leases_expired", 0, "next_prompt", 5, "pending");
    EXPECT_REFUSED(lease_state_load(lt3, bad), ERR_FORMAT, "do not add up",
                   "counters that do not add up are refused");
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
static void test_random(bool verbose)
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
        int         credit[4];
        for (int i = 0; i < 4; i++) credit[i] = 1 + (int)rng_below(&rng, 6);
        n_sent = n_buf = 0;
        seen_dups = 0;
        for (int step = 0; step < 3000; step++) {
            now += (int64_t)rng_below(&rng, 5);
            int op = (int)rng_below(&rng, 10);
            if (op <= 2) { /* grant */
                uint64_t        id;
                const uint64_t *p;
                /* Charged to one of three connections and, half the time, a key. */
                char         conn[2] = {(char)('a' + rng_below(&rng, 3)), 0};
                LeaseAccount acct[2] = {{conn, 1, credit[conn[0] - 'a']}, {"key", 3, credit[3]}};
                int          n_acct = (int)rng_below(&rng, 3);
                int          left = lease_credit_left(lt, acct, n_acct);
                int n = lease_grant_to(lt, 1 + (int)rng_below(&rng, 5), now, acct, n_acct, &id, &p);
                if (n > left) bad++;
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
        int n_holders = 0;
        lease_holders(lt, &n_holders, NULL);
        if (c.in_flight || c.buffered || c.leases_active || n_holders ||
            c.issued != c.trained + c.dropped_stale + c.reissued + c.failed)
            bad++;
        if (verbose && round == 0)
            printf("  round 0: issued %llu trained %llu stale %llu reissued %llu failed %llu "
                   "dups %llu\n",
                   (unsigned long long)c.issued, (unsigned long long)c.trained,
                   (unsigned long long)c.dropped_stale, (unsigned long long)c.reissued,
                   (unsigned long long)c.failed, (unsigned long long)c.duplicates);
        lease_free(&lt);
    }
    free(sent);
    free(buf);
    EXPECT(bad == 0, "accounting broke %d times over 20 random sequences of 3000 operations", bad);
}

/* Credit: what an account holds in flight is bounded, given back on
 * arrival and expiry; a grant charged to two accounts takes the smaller
 * credit left. */
static void test_credit(void)
{
    LeaseTable        *lt = lease_new(&k_test_cfg, 1, 0); /* capacity 6, leases of 2 */
    uint64_t           id1, id2, id3, id;
    const uint64_t    *p;
    const LeaseAccount a = {"conn-a", 6, 3}, b = {"conn-b", 6, 3}, key = {"key", 3, 4};
    const LeaseAccount ak[2] = {a, key}, bk[2] = {b, key}, aa[2] = {a, a};
    EXPECT(lease_credit_left(lt, &a, 1) == 3 && lease_credit_left(lt, NULL, 0) > 1000,
           "an account that holds nothing has its whole credit; no account, no limit");
    EXPECT(lease_grant_to(lt, 5, 0, ak, 2, &id1, &p) == 2, "a grant of lease_prompts");
    EXPECT(lease_credit_left(lt, &a, 1) == 1 && lease_credit_left(lt, &key, 1) == 2 &&
               lease_credit_left(lt, &b, 1) == 3 && lease_credit_left(lt, bk, 2) == 2,
           "credit left: a %d key %d b %d b+key %d, expected 1 2 3 2", lease_credit_left(lt, &a, 1),
           lease_credit_left(lt, &key, 1), lease_credit_left(lt, &b, 1),
           lease_credit_left(lt, bk, 2));
    EXPECT(lease_grant_to(lt, 5, 0, ak, 2, &id2, &p) == 1, "the second grant is cut to a's credit");
    EXPECT(lease_credit_left(lt, ak, 2) == 0 && lease_grant_to(lt, 5, 0, ak, 2, &id, &p) == 0,
           "a grant beyond the credit gives nothing");
    EXPECT(lease_grant_to(lt, 5, 0, bk, 2, &id3, &p) == 1,
           "b is cut to the credit its key has left (4 - 3)");
    int n_acct = 0, most = 0;
    lease_holders(lt, &n_acct, &most);
    EXPECT(n_acct == 3 && most == 4, "holders: %d accounts, the most %d; expected 3 and 4 (key)",
           n_acct, most);
    EXPECT(lease_capacity(lt) == 2, "capacity left %d, expected 2", lease_capacity(lt));
    /* An arrival gives one group of credit back to both accounts. */
    EXPECT(lease_arrive(lt, id1, 0, 2, 0, 0, 0) == LEASE_ACCEPTED, "a's first group arrives");
    EXPECT(lease_credit_left(lt, &a, 1) == 1 && lease_credit_left(lt, &key, 1) == 1,
           "after an arrival: a %d key %d, expected 1 1", lease_credit_left(lt, &a, 1),
           lease_credit_left(lt, &key, 1));
    /* Expiry gives back the rest; accounts that hold nothing are forgotten. */
    EXPECT(lease_expire(lt, 1000) == 3, "the three groups still in flight expire");
    lease_holders(lt, &n_acct, &most);
    EXPECT(n_acct == 0 && most == 0 && lease_credit_left(lt, ak, 2) == 3,
           "after expiry: %d accounts, most %d, a+key %d left; expected 0, 0, 3", n_acct, most,
           lease_credit_left(lt, ak, 2));
    /* The same account named twice in one grant is charged once. */
    EXPECT(lease_grant_to(lt, 2, 1000, aa, 2, &id, &p) == 2 && lease_credit_left(lt, &a, 1) == 1,
           "a twice: credit left %d, expected 1", lease_credit_left(lt, &a, 1));
    lease_settle(lt, id1, 0, LEASE_OUT_TRAINED);
    lease_free(&lt);
}

int lease_selftest(bool verbose)
{
    test_basic();
    test_credit();
    test_reissue();
    test_random(verbose);
    return expect_end();
}
