/* gen_selftest: greedy generation through the KV cache against greedy
 * decoding by full forwards, logp_full against the full forward, stop and
 * length finishes, reproducibility by seed, one generator per sequence
 * (a sequence's sample does not depend on its batch), the caller's stop
 * test, a refused bad prompt; continuous batching: more sequences than
 * slots give each sequence the tokens it gets alone, a worked schedule's
 * slot counters and completion order, and a completion callback that ends
 * the run. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/nn/gen.h"
#include "tests/support/expect.h"
#include "tests/support/fixtures.h"
#include "tests/test_list.h"

/* A stop test that ends every sequence at *ctx tokens. */
static bool stop_at_count(void *ctx, int seq, const int *tokens, int n_tokens)
{
    (void)seq;
    (void)tokens;
    return n_tokens >= *(const int *)ctx;
}

/* A stop test that ends a sequence when it samples the id *ctx (a stop
 * string of one token, so the test sees the same tokens alone or not). */
static bool stop_at_id(void *ctx, int seq, const int *tokens, int n_tokens)
{
    (void)seq;
    return tokens[n_tokens - 1] == *(const int *)ctx;
}

/* The worked schedule's stop test: sequence seq ends at want[seq] tokens
 * unless that is max_new (then it ends by length). */
typedef struct {
    const int *want;
    int        max_new;
    int        order[16], n_done; /* on_done's calls */
    int        stop_after;        /* on_done returns 42 at this many calls, 0 = never */
} Sched;

static bool stop_at_want(void *ctx, int seq, const int *tokens, int n_tokens)
{
    (void)tokens;
    const Sched *sc = ctx;
    return sc->want[seq] < sc->max_new && n_tokens >= sc->want[seq];
}

static int record_done(void *ctx, int seq)
{
    Sched *sc = ctx;
    sc->order[sc->n_done++] = seq;
    return sc->n_done == sc->stop_after ? 42 : 0;
}

/* Continuous batching against generating each sequence alone, and the
 * slot counters and callback order of a schedule worked out by hand. */
static void continuous(Model *m, bool verbose)
{
    enum { N = 7, MAXNEW = 10 };
    Generator *g = gen_new(m, 3, 24), *g1 = gen_new(m, 1, 24);
    int        p[N][6] = {{1},       {1, 4, 4, 4, 9, 3},  {1, 7}, {1, 3, 8, 8},
                          {1, 6, 6}, {1, 11, 12, 13, 14}, {1, 5}};
    int        lens[N] = {1, 6, 2, 4, 3, 5, 2}, stop_tok = 5;
    const int *prompts[N];
    for (int i = 0; i < N; i++) prompts[i] = p[i];
    GenConfig cfg = {.sampler = {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f},
                     .max_new = MAXNEW,
                     .stop_id = 2,
                     .is_stop = stop_at_id,
                     .stop_ctx = &stop_tok,
                     .is_rng_each = true};
    int       toks[N * MAXNEW], ntok[N], fin[N], t1[MAXNEW], n1, f1;
    float     lps[N * MAXNEW], lpf[N * MAXNEW], s1[MAXNEW], l1[MAXNEW];
    GenOutput out = {toks, lps, lpf, ntok, fin}, o1 = {t1, s1, l1, &n1, &f1};
    Rng       each[N];
    for (int i = 0; i < N; i++) rng_seed(&each[i], 500 + (uint64_t)i);
    GenStats a, b;
    gen_stats(g, &a);
    CHECK(gen_run(g, &cfg, N, prompts, lens, each, &out) == 0);
    gen_stats(g, &b);
    double worst = 0.0;
    int    n_fin[4] = {0}, total = 0;
    for (int i = 0; i < N; i++) {
        Rng r;
        rng_seed(&r, 500 + (uint64_t)i);
        CHECK(gen_run(g1, &cfg, 1, prompts + i, lens + i, &r, &o1) == 0);
        bool same = n1 == ntok[i] && f1 == fin[i] &&
                    !memcmp(t1, toks + i * MAXNEW, sizeof(int) * (size_t)n1);
        EXPECT(same,
               "sequence %d: %d tokens (finish %d) among %d in 3 slots, %d (finish %d) alone; "
               "expected the same completion",
               i, ntok[i], fin[i], N, n1, f1);
        for (int t = 0; same && t < n1; t++) {
            worst = fmax(worst, fabs(l1[t] - lpf[i * MAXNEW + t]));
            worst = fmax(worst, fabs(s1[t] - lps[i * MAXNEW + t]));
        }
        n_fin[fin[i]]++;
        total += ntok[i];
        int last = toks[i * MAXNEW + ntok[i] - 1];
        EXPECT((fin[i] == GEN_FINISH_STOP) == (last == 2) &&
                   (fin[i] == GEN_FINISH_CALLER) == (last == stop_tok) &&
                   (fin[i] != GEN_FINISH_LENGTH || ntok[i] == MAXNEW),
               "sequence %d: finish %d with %d tokens, last %d", i, fin[i], ntok[i], last);
    }
    /* The first run again, queued in two parts (3, then 4 after the first
     * step, as a caller's second batch of work arriving mid-run): each
     * sequence gets the same completion as in the single run. */
    int       tk2[N * MAXNEW], nt2[N], fn2[N];
    float     ls2[N * MAXNEW], lf2[N * MAXNEW];
    GenOutput out2 = {tk2, ls2, lf2, nt2, fn2};
    for (int i = 0; i < N; i++) rng_seed(&each[i], 500 + (uint64_t)i);
    CHECK(gen_open(g, &cfg, N, prompts, lens, each, &out2) == 0);
    CHECK(gen_add(g, 0, 3) == 0);
    CHECK(gen_step(g, true) == 0);
    CHECK(gen_add(g, 3, N - 3) == 0);
    while (gen_pending(g) > 0) CHECK(gen_step(g, true) == 0);
    for (int i = 0; i < N; i++)
        EXPECT(nt2[i] == ntok[i] && fn2[i] == fin[i] &&
                   !memcmp(tk2 + i * MAXNEW, toks + i * MAXNEW, sizeof(int) * (size_t)nt2[i]),
               "sequence %d added mid-run: %d tokens (finish %d), in one run %d (finish %d); "
               "expected the same completion",
               i, nt2[i], fn2[i], ntok[i], fin[i]);
    EXPECT(worst <= 1e-5, "continuous vs alone: log-prob max diff %.3g > 1e-5", worst);
    EXPECT(b.rows_used - a.rows_used == (uint64_t)total,
           "rows used %llu, expected one per generated token (%d)",
           (unsigned long long)(b.rows_used - a.rows_used), total);
    EXPECT(b.slot_steps - a.slot_steps == 3 * (b.steps - a.steps),
           "slot steps %llu for %llu steps of 3 slots",
           (unsigned long long)(b.slot_steps - a.slot_steps),
           (unsigned long long)(b.steps - a.steps));
    if (verbose)
        printf(
            "  gen: %d sequences through 3 slots == each alone (log-prob max diff %.2e, tol "
            "1e-5); finishes stop %d, caller %d, length %d; %llu steps, %llu of %llu slots used\n",
            N, worst, n_fin[GEN_FINISH_STOP], n_fin[GEN_FINISH_CALLER], n_fin[GEN_FINISH_LENGTH],
            (unsigned long long)(b.steps - a.steps),
            (unsigned long long)(b.rows_used - a.rows_used),
            (unsigned long long)(b.slot_steps - a.slot_steps));

    /* A worked schedule, 6 sequences of 1, 4, 2, 3, 1, 2 tokens in 2 slots
     * (the 4 by max_new, the rest by the stop test):
     *   step 1: slots {0,1}  0 ends          step 5: {3,4}  4 ends
     *   step 2: {2,1}                        step 6: {3,5}  3 ends
     *   step 3: {2,1}  2 ends                step 7: {-,5}  5 ends
     *   step 4: {3,1}  1 ends
     * 7 steps, 14 slot steps, 13 used: 1 wasted. In chunks of 2 (gen_run
     * on 0-1, 2-3, 4-5) the same takes 4 + 3 + 2 = 9 steps, 18 slot
     * steps, 5 wasted. */
    Generator *g2 = gen_new(m, 2, 24);
    int        want[6] = {1, 4, 2, 3, 1, 2}, wlens[6] = {2, 3, 1, 4, 2, 5};
    Sched      sc = {.want = want, .max_new = 4};
    GenConfig  wc = {.sampler = {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f},
                     .max_new = 4,
                     .stop_id = -1,
                     .is_stop = stop_at_want,
                     .stop_ctx = &sc,
                     .is_rng_each = true,
                     .on_done = record_done,
                     .done_ctx = &sc};
    for (int i = 0; i < 6; i++) rng_seed(&each[i], 9 + (uint64_t)i);
    gen_stats(g2, &a);
    CHECK(gen_run(g2, &wc, 6, prompts, wlens, each, &out) == 0);
    gen_stats(g2, &b);
    int order[6] = {0, 2, 1, 4, 3, 5};
    EXPECT(b.steps - a.steps == 7 && b.slot_steps - a.slot_steps == 14 &&
               b.rows_used - a.rows_used == 13,
           "worked schedule: %llu steps, %llu slot steps, %llu used; expected 7, 14, 13",
           (unsigned long long)(b.steps - a.steps),
           (unsigned long long)(b.slot_steps - a.slot_steps),
           (unsigned long long)(b.rows_used - a.rows_used));
    EXPECT(b.prefill_rows - a.prefill_rows == 17, "prefill rows %llu, expected 2+3+1+4+2+5 = 17",
           (unsigned long long)(b.prefill_rows - a.prefill_rows));
    EXPECT(sc.n_done == 6 && !memcmp(sc.order, order, sizeof order),
           "completion order %d %d %d %d %d %d (%d calls), expected 0 2 1 4 3 5", sc.order[0],
           sc.order[1], sc.order[2], sc.order[3], sc.order[4], sc.order[5], sc.n_done);
    for (int i = 0; i < 6; i++)
        EXPECT(ntok[i] == want[i] &&
                   fin[i] == (want[i] == 4 ? GEN_FINISH_LENGTH : GEN_FINISH_CALLER),
               "worked schedule sequence %d: %d tokens, finish %d; expected %d, %d", i, ntok[i],
               fin[i], want[i], want[i] == 4 ? GEN_FINISH_LENGTH : GEN_FINISH_CALLER);
    /* The same in chunks of two, the way a caller without continuous
     * batching would run it. */
    gen_stats(g2, &a);
    for (int c = 0; c < 6; c += 2) {
        sc.want = want + c; /* the stop test sees the chunk's own indices */
        CHECK(gen_run(g2, &wc, 2, prompts + c, wlens + c, each + c, &out) == 0);
    }
    sc.want = want;
    gen_stats(g2, &b);
    EXPECT(b.steps - a.steps == 9 && b.slot_steps - a.slot_steps == 18 &&
               b.rows_used - a.rows_used == 13,
           "worked schedule in chunks: %llu steps, %llu slot steps, %llu used; expected 9, 18, 13",
           (unsigned long long)(b.steps - a.steps),
           (unsigned long long)(b.slot_steps - a.slot_steps),
           (unsigned long long)(b.rows_used - a.rows_used));
    if (verbose)
        printf("  gen: worked schedule: 7 steps, 1 of 14 slots wasted continuous; 9 steps, 5 of 18 "
               "in chunks; completions in order 0 2 1 4 3 5\n");

    /* on_done's non-zero ends the run there, and gen_run returns it. */
    sc.n_done = 0;
    sc.stop_after = 3;
    CHECK(gen_start(g2, &wc, 6, prompts, wlens, each, &out) == 0);
    int rc = 0;
    while (rc == 0 && gen_pending(g2) > 0) rc = gen_step(g2, true);
    EXPECT(rc == 42 && sc.n_done == 3 && gen_pending(g2) == 0 && gen_running(g2) == 0,
           "on_done returning 42 at the 3rd completion: step returned %d after %d calls, %d "
           "pending; expected 42, 3, 0",
           rc, sc.n_done, gen_pending(g2));
    /* Without admission, a step runs the slots' sequences to their end and
     * starts none: then nothing is running and a step does nothing. */
    sc.n_done = 0;
    sc.stop_after = 0;
    CHECK(gen_start(g2, &wc, 6, prompts, wlens, each, &out) == 0);
    CHECK(gen_step(g2, true) == 0); /* 0 and 1 start, 0 ends */
    while (gen_running(g2) > 0) CHECK(gen_step(g2, false) == 0);
    gen_stats(g2, &a);
    CHECK(gen_step(g2, false) == 0);
    gen_stats(g2, &b);
    EXPECT(sc.n_done == 2 && gen_pending(g2) == 4 && b.steps == a.steps,
           "drained without admission: %d done, %d pending, %llu steps taken idle; expected 2, 4, "
           "0",
           sc.n_done, gen_pending(g2), (unsigned long long)(b.steps - a.steps));
    while (gen_pending(g2) > 0) CHECK(gen_step(g2, true) == 0);
    EXPECT(sc.n_done == 6, "after draining and admitting again: %d done, expected 6", sc.n_done);

    gen_free(&g2);
    gen_free(&g1);
    gen_free(&g);
}

/* Work added to a running run, over places recycled once done: three
 * "leases" of two sequences in 2 slots, A = places 0,1 (1 and 4 tokens),
 * B = places 2,3 (2, 2), queued after A's first step, and C = places 0,1
 * again (1, 1), queued once A is done and B all admitted:
 *   step 1: {0,1} 0 ends; B queued     step 4: {3,1} 1 ends; C queued
 *   step 2: {2,1}                      step 5: {3,0} 3, 0 end
 *   step 3: {2,1} 2 ends               step 6: {1,-} 1 ends
 * 6 steps, 12 slot steps, 11 used (1 wasted), completions 0 2 1 3 0 1;
 * lease by lease (a run each) 4 + 2 + 1 = 7 steps, 14 slot steps, 3
 * wasted. A step taken while work waits uses every slot, and every
 * sequence gets the tokens its lease gets run alone. */
static void added(Model *m, bool verbose)
{
    Generator *g = gen_new(m, 2, 24);
    int        p[6][4] = {{1, 4}, {1, 7, 7}, {1, 3}, {1, 8, 9, 10}, {1, 6}, {1, 5, 5}};
    int        lens_l[6] = {2, 3, 2, 4, 2, 3}, want_l[6] = {1, 4, 2, 2, 1, 1};
    const int *pr_l[6];
    for (int i = 0; i < 6; i++) pr_l[i] = p[i];
    /* Place arrays: 4 places; lease L's sequence c sits at place pl[L][c]. */
    int        pl[3][2] = {{0, 1}, {2, 3}, {0, 1}};
    const int *prompts[4];
    int        lens[4], want[4];
    Rng        rng[4];
    Sched      sc = {.want = want, .max_new = 4};
    GenConfig  cfg = {.sampler = {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f},
                      .max_new = 4,
                      .stop_id = -1,
                      .is_stop = stop_at_want,
                      .stop_ctx = &sc,
                      .is_rng_each = true,
                      .on_done = record_done,
                      .done_ctx = &sc};
    int        toks[4 * 4], ntok[4], fin[4], got[6][4], got_n[6];
    float      lps[4 * 4], lpf[4 * 4];
    GenOutput  out = {toks, lps, lpf, ntok, fin};
    int        wasted_waiting = 0;
    /* Queues lease L into its places. */
#define QUEUE(L)                                                                                   \
    do {                                                                                           \
        for (int c = 0; c < 2; c++) {                                                              \
            int at = pl[L][c], j = 2 * (L) + c;                                                    \
            prompts[at] = pr_l[j];                                                                 \
            lens[at] = lens_l[j];                                                                  \
            want[at] = want_l[j];                                                                  \
            rng_seed(&rng[at], 70 + (uint64_t)j);                                                  \
        }                                                                                          \
        CHECK(gen_add(g, pl[L][0], 2) == 0);                                                       \
    } while (0)
    /* Keeps lease L's outputs (before its places are reused). */
#define KEEP(L)                                                                                    \
    for (int c = 0; c < 2; c++) {                                                                  \
        int at = pl[L][c], j = 2 * (L) + c;                                                        \
        got_n[j] = ntok[at];                                                                       \
        memcpy(got[j], toks + at * 4, sizeof(int) * (size_t)ntok[at]);                             \
    }
    GenStats a, b, s0, s1;
    gen_stats(g, &a);
    CHECK(gen_open(g, &cfg, 4, prompts, lens, rng, &out) == 0);
    QUEUE(0);
    for (int step = 1; gen_pending(g) > 0; step++) {
        /* Running plus waiting sequences could fill this many slots. */
        int could = gen_running(g) + gen_waiting(g) < 2 ? gen_running(g) + gen_waiting(g) : 2;
        gen_stats(g, &s0);
        CHECK(gen_step(g, true) == 0);
        gen_stats(g, &s1);
        if (s1.rows_used - s0.rows_used < (uint64_t)could) wasted_waiting++;
        if (step == 1) QUEUE(1);
        if (step == 4) {
            KEEP(0);
            QUEUE(2);
        }
    }
    KEEP(1);
    KEEP(2);
    gen_stats(g, &b);
    int order[6] = {0, 2, 1, 3, 0, 1};
    EXPECT(b.steps - a.steps == 6 && b.slot_steps - a.slot_steps == 12 &&
               b.rows_used - a.rows_used == 11,
           "added work: %llu steps, %llu slot steps, %llu used; expected 6, 12, 11",
           (unsigned long long)(b.steps - a.steps),
           (unsigned long long)(b.slot_steps - a.slot_steps),
           (unsigned long long)(b.rows_used - a.rows_used));
    EXPECT(sc.n_done == 6 && !memcmp(sc.order, order, sizeof order),
           "added work: completion order %d %d %d %d %d %d (%d calls), expected 0 2 1 3 0 1",
           sc.order[0], sc.order[1], sc.order[2], sc.order[3], sc.order[4], sc.order[5], sc.n_done);
    EXPECT(wasted_waiting == 0, "%d steps left a slot empty while work waited", wasted_waiting);
    /* Lease by lease, a run each: the same completions, more waste. */
    gen_stats(g, &a);
    sc.n_done = 0;
    for (int L = 0; L < 3; L++) {
        for (int c = 0; c < 2; c++) {
            int j = 2 * L + c;
            prompts[c] = pr_l[j];
            lens[c] = lens_l[j];
            want[c] = want_l[j];
            rng_seed(&rng[c], 70 + (uint64_t)j);
        }
        CHECK(gen_run(g, &cfg, 2, prompts, lens, rng, &out) == 0);
        for (int c = 0; c < 2; c++) {
            int j = 2 * L + c;
            EXPECT(ntok[c] == got_n[j] &&
                       !memcmp(toks + c * 4, got[j], sizeof(int) * (size_t)ntok[c]),
                   "lease %d sequence %d: %d tokens alone, %d added mid-run; expected the same", L,
                   c, ntok[c], got_n[j]);
        }
    }
    gen_stats(g, &b);
    EXPECT(b.steps - a.steps == 7 && b.slot_steps - a.slot_steps == 14 &&
               b.rows_used - a.rows_used == 11,
           "lease by lease: %llu steps, %llu slot steps, %llu used; expected 7, 14, 11",
           (unsigned long long)(b.steps - a.steps),
           (unsigned long long)(b.slot_steps - a.slot_steps),
           (unsigned long long)(b.rows_used - a.rows_used));
    if (verbose)
        printf("  gen: three leases added to one run over recycled places: 6 steps, 1 of 12 slots "
               "wasted; lease by lease 7 steps, 3 of 14; same completions\n");
#undef QUEUE
#undef KEEP
    gen_free(&g);
}

int gen_selftest(bool verbose)
{
    /* Greedy generation through the cache must equal greedy decoding by
     * repeated full forwards, and the recorded logp_full must equal the
     * full forward's log-probability of each generated token. */
    ModelConfig c = fixture_model_config(32, 2, 4, 2, 48, 17, 32);
    Model      *m = model_new(&c);
    model_init_random(m, 4, 0.5f);
    Generator *g = gen_new(m, 3, 24);
    int        p0[] = {1, 5, 6}, p1[] = {1, 9}, p2[] = {1, 3, 3, 3, 7};
    const int *prompts[] = {p0, p1, p2};
    int        lens[] = {3, 2, 5}, max_new = 10;
    GenConfig  cfg = {.sampler = {.temperature = 0.0f, .top_k = 0, .top_p = 1.0f},
                      .max_new = max_new,
                      .stop_id = 2};
    int        toks[3 * 10], ntok[3], fin[3];
    float      lps[3 * 10], lpf[3 * 10];
    GenOutput  out = {toks, lps, lpf, ntok, fin};
    Rng        rng;
    rng_seed(&rng, 1);
    CHECK(gen_run(g, &cfg, 3, prompts, lens, &rng, &out) == 0);
    double worst = 0.0;
    for (int i = 0; i < 3; i++) {
        int seq[32], tgt[32];
        int L = lens[i];
        memcpy(seq, prompts[i], sizeof(int) * L);
        for (int s = 0; s < ntok[i]; s++) {
            /* Full forward over the prefix; the argmax of the last position. */
            for (int t = 0; t < L; t++) tgt[t] = t + 1 < L ? seq[t + 1] : 0;
            model_forward(m, seq, tgt, NULL, 1, L, NULL, NULL, NULL);
            const float *lg = model_last_logits(m, NULL) + (size_t)(L - 1) * c.vocab_size;
            int          best = 0;
            for (int v = 1; v < c.vocab_size; v++) best = lg[v] > lg[best] ? v : best;
            if (!EXPECT(best == toks[i * max_new + s],
                        "seq %d step %d: cache path chose %d, full forward argmax %d", i, s,
                        toks[i * max_new + s], best))
                break;
            double mx = lg[0], sum = 0.0;
            for (int v = 1; v < c.vocab_size; v++) mx = fmax(mx, lg[v]);
            for (int v = 0; v < c.vocab_size; v++) sum += exp(lg[v] - mx);
            double lp = lg[best] - mx - log(sum);
            worst = fmax(worst, fabs(lp - lpf[i * max_new + s]));
            seq[L++] = best;
        }
        EXPECT(fin[i] != GEN_FINISH_STOP || toks[i * max_new + ntok[i] - 1] == 2,
               "seq %d finished on stop with last token %d, expected the stop id 2", i,
               toks[i * max_new + ntok[i] - 1]);
        EXPECT(fin[i] != GEN_FINISH_LENGTH || ntok[i] == max_new,
               "seq %d finished on length with %d tokens, expected max_new %d", i, ntok[i],
               max_new);
    }
    if (verbose)
        printf("  gen: greedy cache == greedy full forward, logp_full max diff %.2e (tol 1e-5); "
               "lengths %d %d %d\n",
               worst, ntok[0], ntok[1], ntok[2]);
    EXPECT(worst <= 1e-5, "logp_full vs the full forward's log-prob: max diff %.3g > 1e-5", worst);
    /* Same seed, same sampled completions. */
    cfg.sampler.temperature = 1.0f;
    int toks2[30], ntok2[3];
    rng_seed(&rng, 77);
    CHECK(gen_run(g, &cfg, 3, prompts, lens, &rng, &out) == 0);
    memcpy(toks2, toks, sizeof toks);
    memcpy(ntok2, ntok, sizeof ntok);
    rng_seed(&rng, 77);
    CHECK(gen_run(g, &cfg, 3, prompts, lens, &rng, &out) == 0);
    for (int i = 0; i < 3; i++)
        EXPECT(ntok[i] == ntok2[i] && !memcmp(toks + i * 10, toks2 + i * 10, sizeof(int) * ntok[i]),
               "seq %d sampled twice with seed 77: %d and %d tokens, expected the same completion",
               i, ntok[i], ntok2[i]);
    /* One generator per sequence: sequence 2 alone, drawing from the
     * generator it had in the batch of three, samples the same completion. */
    Rng each[3];
    for (int i = 0; i < 3; i++) rng_seed(&each[i], 100 + (uint64_t)i);
    cfg.is_rng_each = true;
    CHECK(gen_run(g, &cfg, 3, prompts, lens, each, &out) == 0);
    int n2 = ntok[2], t2[10];
    memcpy(t2, toks + 2 * 10, sizeof(int) * (size_t)n2);
    rng_seed(&each[0], 102);
    CHECK(gen_run(g, &cfg, 1, prompts + 2, lens + 2, each, &out) == 0);
    EXPECT(ntok[0] == n2 && !memcmp(toks, t2, sizeof(int) * (size_t)n2),
           "sequence 2 with its own generator: %d tokens in a batch of 3, %d alone; expected the "
           "same completion",
           n2, ntok[0]);
    cfg.is_rng_each = false;
    /* The caller's stop test ends a completion where it says, the token kept. */
    int stop_after = 3;
    cfg.stop_id = -1;
    cfg.is_stop = stop_at_count;
    cfg.stop_ctx = &stop_after;
    rng_seed(&rng, 5);
    CHECK(gen_run(g, &cfg, 3, prompts, lens, &rng, &out) == 0);
    for (int i = 0; i < 3; i++)
        EXPECT(ntok[i] == 3 && fin[i] == GEN_FINISH_CALLER,
               "seq %d with a stop test at 3 tokens: %d tokens, finish %d; expected 3 and %d", i,
               ntok[i], fin[i], GEN_FINISH_CALLER);
    cfg.is_stop = NULL;
    /* Bad prompts are refused. */
    int        bad[] = {1, 99};
    const int *bp[] = {bad};
    int        bl[] = {2};
    EXPECT_REFUSED(gen_run(g, &cfg, 1, bp, bl, &rng, &out), ERR_RANGE, "is id 99",
                   "prompt with token id 99 (V 17)");
    gen_free(&g);
    continuous(m, verbose);
    added(m, verbose);
    model_free(&m);
    return expect_end();
}
