#include "tests/chaos/chaos_check.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"

#define MAX_PROBLEMS 8 /* violations quoted in "problems"; all are counted */

/* The result object of a check being built. */
typedef struct {
    json_t  *o;
    json_t  *problems;
    uint64_t n_bad;
} Verdict;

static void verdict_init(Verdict *v)
{
    v->o = json_object();
    v->problems = json_array();
    v->n_bad = 0;
}

static void bad(Verdict *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bad(Verdict *v, const char *fmt, ...)
{
    v->n_bad++;
    if (json_array_size(v->problems) >= MAX_PROBLEMS) return;
    char    buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    json_array_append_new(v->problems, json_string(buf));
}

static void set_int(Verdict *v, const char *k, int64_t x)
{
    json_object_set_new(v->o, k, json_integer((json_int_t)x));
}

static bool verdict_end(Verdict *v, json_t **out)
{
    bool ok = v->n_bad == 0;
    json_object_set_new(v->o, "ok", json_boolean(ok));
    set_int(v, "violations", (int64_t)v->n_bad);
    json_object_set_new(v->o, "problems", v->problems);
    *out = v->o;
    return ok;
}

/* An integer member, -1 when missing or not an integer. */
static int64_t jint(const json_t *o, const char *k)
{
    const json_t *x = json_object_get(o, k);
    return json_is_integer(x) ? (int64_t)json_integer_value(x) : -1;
}

/* Calls fn on each line of path (without its newline). False if the file
 * cannot be opened. */
static bool each_line(const char *path, void (*fn)(void *ctx, const char *line), void *ctx)
{
    FILE *f = fopen(path, "r");
    if (!f) return false;
    char   *line = NULL;
    size_t  cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) >= 0) {
        if (n > 0 && line[n - 1] == '\n') line[n - 1] = '\0';
        fn(ctx, line);
    }
    free(line);
    fclose(f);
    return true;
}

/* ---- accounting -------------------------------------------------------- */

static const char *const k_counters[] = {"issued", "trained",   "dropped_stale", "reissued",
                                         "failed", "in_flight", "buffered"};
enum { N_COUNTERS = 7 };

typedef struct {
    Verdict *v;
    int64_t  records, torn, epochs;
    int64_t  epoch, prev[N_COUNTERS]; /* the previous record's epoch and counters */
    bool     has_prev;
} AcctCtx;

static void acct_line(void *ctx, const char *line)
{
    AcctCtx *a = ctx;
    if (!line[0]) return;
    json_t *r = json_loads(line, 0, NULL);
    if (!json_is_object(r)) {
        /* A learner killed mid-write leaves at most a partial last record. */
        a->torn++;
        json_decref(r);
        return;
    }
    a->records++;
    int64_t c[N_COUNTERS], step = jint(r, "step"), epoch = jint(r, "epoch");
    bool    whole = step >= 0 && epoch >= 0;
    for (int i = 0; i < N_COUNTERS; i++) whole = whole && (c[i] = jint(r, k_counters[i])) >= 0;
    json_decref(r);
    if (!whole) {
        bad(a->v, "metrics record %" PRId64 " lacks a counter", a->records);
        return;
    }
    if (c[0] != c[1] + c[2] + c[3] + c[4] + c[5] + c[6])
        bad(a->v,
            "step %" PRId64 " epoch %" PRId64 ": issued %" PRId64 " != trained %" PRId64
            " + stale %" PRId64 " + reissued %" PRId64 " + failed %" PRId64 " + in flight %" PRId64
            " + buffered %" PRId64,
            step, epoch, c[0], c[1], c[2], c[3], c[4], c[5], c[6]);
    if (!a->has_prev || epoch != a->epoch) {
        a->epochs++;
    } else {
        /* Within an epoch the final counters only grow. */
        for (int i = 0; i < 5; i++)
            if (c[i] < a->prev[i])
                bad(a->v,
                    "step %" PRId64 " epoch %" PRId64 ": %s fell from %" PRId64 " to %" PRId64,
                    step, epoch, k_counters[i], a->prev[i], c[i]);
    }
    a->has_prev = true;
    a->epoch = epoch;
    memcpy(a->prev, c, sizeof c);
}

bool chaos_check_accounting(const char *metrics_path, const json_t *summary, json_t **out)
{
    Verdict v;
    verdict_init(&v);
    AcctCtx a = {.v = &v};
    if (!each_line(metrics_path, acct_line, &a)) bad(&v, "cannot read '%s'", metrics_path);
    if (a.records == 0) bad(&v, "'%s' holds no records", metrics_path);
    const json_t *ok = summary ? json_object_get(summary, "accounting_ok") : NULL;
    if (!json_is_true(ok)) bad(&v, "summary: accounting_ok is %s", ok ? "false" : "missing");
    set_int(&v, "records_checked", a.records);
    set_int(&v, "records_torn", a.torn);
    set_int(&v, "epochs", a.epochs);
    json_object_set_new(v.o, "summary_accounting_ok", json_boolean(json_is_true(ok)));
    if (summary)
        for (int i = 0; i < N_COUNTERS; i++)
            set_int(&v, k_counters[i], jint(summary, k_counters[i]));
    return verdict_end(&v, out);
}

/* ---- trained groups ---------------------------------------------------- */

typedef struct {
    int      run; /* index into the runs seen */
    uint64_t epoch, lease;
    int      slot;
} GroupKey;

typedef struct {
    int64_t  step;
    uint64_t prompt;
} Committed;

#define MAX_RUNS 64

typedef struct {
    Verdict   *v;
    char       runs[MAX_RUNS][40];
    int        n_runs, run; /* run: the current incarnation's run, -1 before the first header */
    uint64_t   epoch;       /* the current incarnation's epoch */
    int64_t    last_step;   /* the current incarnation's last step logged */
    GroupKey  *keys;
    size_t     n_keys, cap_keys;
    Committed *com;
    size_t     n_com, cap_com;
    int64_t    headers, lines, lost;
    json_t    *incarnations;
} TrainedCtx;

static void trained_header(TrainedCtx *t, const char *line)
{
    char     run[40];
    uint64_t epoch;
    int64_t  step;
    if (sscanf(line, "# run %39s epoch %" SCNu64 " step %" SCNd64, run, &epoch, &step) != 3) {
        bad(t->v, "trained log: bad header '%.80s'", line);
        return;
    }
    t->headers++;
    int r = 0;
    while (r < t->n_runs && strcmp(t->runs[r], run)) r++;
    if (r == t->n_runs) {
        if (t->n_runs == MAX_RUNS) {
            bad(t->v, "trained log: more than %d runs", MAX_RUNS);
            return;
        }
        snprintf(t->runs[t->n_runs++], sizeof t->runs[0], "%s", run);
        /* A new run (nothing to resume) starts the lineage over. */
        if (step != 0) bad(t->v, "trained log: run %s starts at step %" PRId64, run, step);
        t->n_com = 0;
    } else if (r != t->run) {
        bad(t->v, "trained log: run %s comes back after run %s", run, t->runs[t->run]);
    }
    /* What earlier incarnations trained after this one's starting step died
     * with them; a start beyond what was ever trained would be a step from
     * nowhere. */
    int64_t top = t->n_com ? t->com[t->n_com - 1].step : 0;
    if (step > top)
        bad(t->v,
            "trained log: epoch %" PRIu64 " resumes at step %" PRId64
            " but the lineage reached only step %" PRId64,
            epoch, step, top);
    while (t->n_com && t->com[t->n_com - 1].step > step) {
        t->n_com--;
        t->lost++;
    }
    t->run = r;
    t->epoch = epoch;
    t->last_step = step;
    json_array_append_new(t->incarnations,
                          json_pack("{s:s, s:I, s:I}", "run", run, "epoch", (json_int_t)epoch,
                                    "from_step", (json_int_t)step));
}

static void trained_line(void *ctx, const char *line)
{
    TrainedCtx *t = ctx;
    if (!line[0]) return;
    if (line[0] == '#') {
        trained_header(t, line);
        return;
    }
    int64_t  step;
    uint64_t epoch, lease, prompt;
    int      slot;
    if (sscanf(line, "%" SCNd64 " %" SCNu64 " %" SCNx64 " %d %" SCNu64, &step, &epoch, &lease,
               &slot, &prompt) != 5) {
        bad(t->v, "trained log: bad line '%.80s'", line);
        return;
    }
    t->lines++;
    if (t->run < 0) {
        bad(t->v, "trained log: a group before the first header");
        return;
    }
    if (epoch != t->epoch)
        bad(t->v, "trained log: a group of epoch %" PRIu64 " under the header of epoch %" PRIu64,
            epoch, t->epoch);
    if (step != t->last_step && step != t->last_step + 1)
        bad(t->v, "trained log: epoch %" PRIu64 " jumps from step %" PRId64 " to %" PRId64, epoch,
            t->last_step, step);
    t->last_step = step;
    if (t->n_keys == t->cap_keys) {
        t->cap_keys = t->cap_keys ? 2 * t->cap_keys : 1024;
        t->keys = xrealloc(t->keys, t->cap_keys * sizeof *t->keys);
    }
    t->keys[t->n_keys++] = (GroupKey){t->run, epoch, lease, slot};
    if (t->n_com == t->cap_com) {
        t->cap_com = t->cap_com ? 2 * t->cap_com : 1024;
        t->com = xrealloc(t->com, t->cap_com * sizeof *t->com);
    }
    t->com[t->n_com++] = (Committed){step, prompt};
}

static int cmp_key(const void *a, const void *b)
{
    const GroupKey *x = a, *y = b;
    if (x->run != y->run) return x->run < y->run ? -1 : 1;
    if (x->epoch != y->epoch) return x->epoch < y->epoch ? -1 : 1;
    if (x->lease != y->lease) return x->lease < y->lease ? -1 : 1;
    return (x->slot > y->slot) - (x->slot < y->slot);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

bool chaos_check_trained(const char *trained_path, int batch_groups, const json_t *summary,
                         json_t **out)
{
    Verdict v;
    verdict_init(&v);
    TrainedCtx t = {.v = &v, .run = -1, .incarnations = json_array()};
    if (!each_line(trained_path, trained_line, &t)) bad(&v, "cannot read '%s'", trained_path);
    if (t.headers == 0) bad(&v, "'%s' holds no incarnation", trained_path);

    /* No group twice, over every incarnation. */
    qsort(t.keys, t.n_keys, sizeof *t.keys, cmp_key);
    int64_t repeats = 0;
    for (size_t i = 1; i < t.n_keys; i++) {
        if (cmp_key(&t.keys[i - 1], &t.keys[i])) continue;
        repeats++;
        bad(&v, "group trained twice: run %s epoch %" PRIu64 " lease %016" PRIx64 " slot %d",
            t.runs[t.keys[i].run], t.keys[i].epoch, t.keys[i].lease, t.keys[i].slot);
    }

    /* The final model's lineage: B groups for each of its steps, each
     * prompt once. */
    int64_t final_step = t.n_com ? t.com[t.n_com - 1].step : 0;
    int64_t steps_short = 0;
    size_t  i = 0;
    for (int64_t s = 1; s <= final_step; s++) {
        int64_t n = 0;
        while (i < t.n_com && t.com[i].step == s) n++, i++;
        if (n != batch_groups) {
            steps_short++;
            bad(&v, "lineage: step %" PRId64 " trained %" PRId64 " groups, expected %d", s, n,
                batch_groups);
        }
    }
    if (i != t.n_com) bad(&v, "lineage: steps out of order at entry %zu", i);
    uint64_t *prompts = xmalloc((t.n_com + 1) * sizeof *prompts);
    for (size_t k = 0; k < t.n_com; k++) prompts[k] = t.com[k].prompt;
    qsort(prompts, t.n_com, sizeof *prompts, cmp_u64);
    int64_t prompt_repeats = 0;
    for (size_t k = 1; k < t.n_com; k++)
        if (prompts[k] == prompts[k - 1]) {
            prompt_repeats++;
            bad(&v, "lineage: prompt %" PRIu64 " trained twice", prompts[k]);
        }
    free(prompts);

    int64_t sum_steps = summary ? jint(summary, "steps") : -1;
    int64_t sum_trained = summary ? jint(summary, "trained") : -1;
    if (sum_steps != final_step)
        bad(&v, "summary: steps %" PRId64 ", the trained log's lineage ends at step %" PRId64,
            sum_steps, final_step);
    if (sum_trained != (int64_t)t.n_com)
        bad(&v, "summary: trained %" PRId64 ", the lineage holds %zu groups", sum_trained, t.n_com);

    set_int(&v, "groups_logged", (int64_t)t.n_keys);
    set_int(&v, "groups_repeated", repeats);
    set_int(&v, "incarnations", t.headers);
    set_int(&v, "runs", t.n_runs);
    set_int(&v, "groups_lost_with_a_killed_learner", t.lost);
    set_int(&v, "lineage_steps", final_step);
    set_int(&v, "lineage_groups", (int64_t)t.n_com);
    set_int(&v, "lineage_steps_not_batch_groups", steps_short);
    set_int(&v, "lineage_prompts_repeated", prompt_repeats);
    set_int(&v, "summary_trained", sum_trained);
    json_object_set_new(v.o, "learner_incarnations", t.incarnations);
    free(t.keys);
    free(t.com);
    return verdict_end(&v, out);
}

/* ---- versions ---------------------------------------------------------- */

#define MAX_EPOCHS 1024

/* The highest version seen per (run, epoch). */
typedef struct {
    char     run[40];
    uint64_t epoch;
    int64_t  top;
} EpochTop;

typedef struct {
    Verdict    *v;
    const char *who;
    EpochTop   *tops;
    int         n_tops;
    int64_t     seen, backward;
} VerCtx;

/* Records version ver of (run, epoch) for ctx->who; a violation if below
 * the highest seen (strictly: rising is true only of the learner). */
static void ver_see(VerCtx *c, const char *run, uint64_t epoch, int64_t ver, bool strict)
{
    c->seen++;
    int i = 0;
    while (i < c->n_tops && !(c->tops[i].epoch == epoch && !strcmp(c->tops[i].run, run))) i++;
    if (i == c->n_tops) {
        if (c->n_tops == MAX_EPOCHS) {
            bad(c->v, "%s: more than %d epochs", c->who, MAX_EPOCHS);
            return;
        }
        c->tops[c->n_tops] = (EpochTop){.epoch = epoch, .top = ver};
        snprintf(c->tops[c->n_tops].run, sizeof c->tops[0].run, "%s", run);
        c->n_tops++;
        return;
    }
    if (ver < c->tops[i].top || (strict && ver == c->tops[i].top)) {
        c->backward++;
        bad(c->v, "%s: epoch %" PRIu64 " version %" PRId64 " after version %" PRId64, c->who, epoch,
            ver, c->tops[i].top);
    }
    if (ver > c->tops[i].top) c->tops[i].top = ver;
}

static void learner_ver_line(void *ctx, const char *line)
{
    VerCtx *c = ctx;
    json_t *r = json_loads(line, 0, NULL);
    int64_t epoch = jint(r, "epoch"), ver = jint(r, "version");
    if (json_is_object(r) && epoch >= 0 && ver >= 0) ver_see(c, "", (uint64_t)epoch, ver, true);
    json_decref(r);
}

static void actor_ver_line(void *ctx, const char *line)
{
    VerCtx     *c = ctx;
    const char *p = strstr(line, ": weights run '");
    if (!p || !strstr(line, " installed")) return;
    p += strlen(": weights run '");
    const char *q = strchr(p, '\'');
    uint64_t    epoch, ver;
    if (!q || q - p >= 40 || sscanf(q, "' epoch %" SCNu64 " v%" SCNu64, &epoch, &ver) != 2) {
        bad(c->v, "%s: unreadable install line '%.100s'", c->who, line);
        return;
    }
    char run[40];
    memcpy(run, p, (size_t)(q - p));
    run[q - p] = '\0';
    ver_see(c, run, epoch, (int64_t)ver, false);
}

bool chaos_check_versions(const char *metrics_path, const char *const *actor_logs, int n,
                          json_t **out)
{
    Verdict v;
    verdict_init(&v);
    EpochTop *tops = xmalloc(MAX_EPOCHS * sizeof *tops);
    VerCtx    lc = {.v = &v, .who = "learner", .tops = tops};
    if (!each_line(metrics_path, learner_ver_line, &lc)) bad(&v, "cannot read '%s'", metrics_path);
    set_int(&v, "learner_records", lc.seen);
    set_int(&v, "learner_epochs", lc.n_tops);
    set_int(&v, "learner_backward", lc.backward);
    int64_t installs = 0, backward = 0;
    for (int i = 0; i < n; i++) {
        VerCtx ac = {.v = &v, .who = actor_logs[i], .tops = tops};
        if (!each_line(actor_logs[i], actor_ver_line, &ac))
            bad(&v, "cannot read '%s'", actor_logs[i]);
        installs += ac.seen;
        backward += ac.backward;
    }
    if (n > 0 && installs == 0) bad(&v, "no actor log records an installed snapshot");
    set_int(&v, "actor_installs", installs);
    set_int(&v, "actor_backward", backward);
    free(tops);
    return verdict_end(&v, out);
}
