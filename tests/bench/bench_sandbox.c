/* bench_sandbox: how many solutions per second the code sandbox scores.
 *
 * Prints, with the pool size (default: one worker per CPU) and the
 * isolation in force: the rate of bare `python3 -c pass` processes spawned
 * through libuv, as many at once as the pool runs (the machine's ceiling
 * for a fresh interpreter); the rate of sandboxed runs of a trivial job
 * (the sandbox's own cost is the difference); and the rate of HumanEval's
 * canonical solutions scored against their tests (data/humaneval, `make
 * humaneval`; without it a set of small functions with three asserts each).
 * Writes the figures under "sandbox" in the JSON file given as the first
 * argument (default build/bench.json), keeping other keys.
 *
 *   bench_sandbox [OUT.json] [--runs N] [--workers W] [--isolation MODE] */
#include <jansson.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "reward_server/sandbox/sandbox.h"
#include "reward_server/sandbox_scorer.h"
#include "tests/bench/bench_common.h"

#define HUMANEVAL "data/humaneval/HumanEval.jsonl"

typedef struct {
    const char *out;
    int         runs, workers, isolation;
} Args;

static int parse_args(int argc, char **argv, Args *a)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    *a = (Args){.out = "build/bench.json", .runs = 100, .workers = cpus < 1 ? 1 : (int)cpus};
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "--help")) {
            printf("usage: %s [OUT.json] [--runs N (100)] [--workers W (CPUs)] "
                   "[--isolation auto|namespaces|seccomp|rlimits]\n",
                   argv[0]);
            return 1;
        }
        if (s[0] != '-') {
            a->out = s;
            continue;
        }
        if (i + 1 >= argc) return -1;
        const char *v = argv[++i];
        if (!strcmp(s, "--runs"))
            a->runs = atoi(v);
        else if (!strcmp(s, "--workers"))
            a->workers = atoi(v);
        else if (!strcmp(s, "--isolation")) {
            a->isolation = -1;
            for (int k = 0; sandbox_iso_names[k]; k++)
                if (!strcmp(v, sandbox_iso_names[k])) a->isolation = k;
            if (a->isolation < 0) return -1;
        } else
            return -1;
    }
    return a->runs > 0 && a->workers > 0 && a->workers <= SANDBOX_MAX_WORKERS ? 0 : -1;
}

/* ---- bare python3 spawns through libuv, `workers` at a time ---- */

typedef struct {
    uv_loop_t   *loop;
    const char  *python;
    int          left, running, failed;
    uv_process_t procs[SANDBOX_MAX_WORKERS];
    bool         busy[SANDBOX_MAX_WORKERS];
} Bare;

static void bare_spawn(Bare *b, int slot);

static void bare_closed(uv_handle_t *h)
{
    Bare *b = h->data;
    int   slot = (int)((uv_process_t *)h - b->procs);
    b->busy[slot] = false;
    b->running--;
    if (b->left > 0) bare_spawn(b, slot);
}

static void bare_exit(uv_process_t *p, int64_t status, int sig)
{
    Bare *b = p->data;
    if (status != 0 || sig != 0) b->failed++;
    uv_close((uv_handle_t *)p, bare_closed);
}

static void bare_spawn(Bare *b, int slot)
{
    char                *args[] = {(char *)b->python, "-s", "-B", "-c", "pass", NULL};
    uv_stdio_container_t io[3] = {{.flags = UV_IGNORE}, {.flags = UV_IGNORE}, {.flags = UV_IGNORE}};
    /* The sandbox's environment, so that only the sandbox differs. */
    char                *env[] = {"PATH=/usr/local/bin:/usr/bin:/bin",
                                  "HOME=/tmp",
                                  "LANG=C.UTF-8",
                                  "LC_ALL=C.UTF-8",
                                  "PYTHONHASHSEED=0",
                                  "PYTHONDONTWRITEBYTECODE=1",
                                  NULL};
    uv_process_options_t o = {.exit_cb = bare_exit,
                              .file = b->python,
                              .args = args,
                              .env = env,
                              .stdio_count = 3,
                              .stdio = io};
    b->procs[slot].data = b;
    b->left--;
    if (uv_spawn(b->loop, &b->procs[slot], &o) != 0) {
        b->failed++;
        uv_close((uv_handle_t *)&b->procs[slot], NULL);
        return;
    }
    b->busy[slot] = true;
    b->running++;
}

static double bare_rate(const char *python, int runs, int workers)
{
    uv_loop_t loop;
    CHECK(uv_loop_init(&loop) == 0);
    Bare   b = {.loop = &loop, .python = python, .left = runs};
    double t0 = bench_now_s();
    for (int i = 0; i < workers && b.left > 0; i++) bare_spawn(&b, i);
    uv_run(&loop, UV_RUN_DEFAULT);
    double dt = bench_now_s() - t0;
    CHECK(uv_loop_close(&loop) == 0);
    if (b.failed) fprintf(stderr, "bench_sandbox: %d bare spawns failed\n", b.failed);
    return runs / dt;
}

/* ---- sandboxed jobs ---- */

typedef struct {
    atomic_int n_done, n_passed;
} Batch;

static void on_done(SandboxResult *r, void *arg)
{
    Batch *b = arg;
    if (r->verdict == SANDBOX_PASSED) atomic_fetch_add(&b->n_passed, 1);
    atomic_fetch_add(&b->n_done, 1);
    sandbox_result_free(r);
}

/* Submits the n programs (repeated to reach runs) and waits; returns runs/s. */
static double sandbox_rate(Sandbox *sb, char **codes, int n, int runs, int *passed)
{
    Batch  b = {0};
    double t0 = bench_now_s();
    for (int i = 0; i < runs; i++) {
        SandboxJob job = {.code = codes[i % n]};
        CHECK(sandbox_submit(sb, &job, on_done, &b) == 0);
    }
    while (atomic_load(&b.n_done) < runs) usleep(2000);
    *passed = atomic_load(&b.n_passed);
    return runs / (bench_now_s() - t0);
}

/* HumanEval's canonical programs (prompt + solution + test + check), or
 * small stand-ins; returns how many, with *what naming them. */
static int load_programs(char ***out, const char **what)
{
    int    n = 0;
    char **codes = xcalloc(200, sizeof *codes);
    FILE  *f = fopen(HUMANEVAL, "r");
    char  *line = NULL;
    size_t cap = 0;
    while (f && getline(&line, &cap, f) > 0 && n < 200) {
        json_t *o = json_loads(line, 0, NULL);
        json_t *m =
            json_pack("{s:s?, s:s?}", "tests", json_string_value(json_object_get(o, "test")),
                      "entry_point", json_string_value(json_object_get(o, "entry_point")));
        char          *mj = json_dumps(m, JSON_COMPACT);
        SandboxProgram p;
        char           why[256];
        if (mj && sandbox_program_build(json_string_value(json_object_get(o, "prompt")),
                                        json_string_value(json_object_get(o, "canonical_solution")),
                                        mj, &p, why, sizeof why) == 0) {
            codes[n++] = p.code;
            p.code = NULL;
            sandbox_program_free(&p);
        }
        free(mj);
        json_decref(m);
        json_decref(o);
    }
    free(line);
    if (f) fclose(f);
    *what = "HumanEval canonical solutions";
    if (n == 0) {
        *what = "stand-in functions (no " HUMANEVAL ": make humaneval)";
        for (int i = 0; i < 20; i++) {
            char buf[512];
            snprintf(buf, sizeof buf,
                     "def f(x):\n    return sum(range(x)) + %d\n\n"
                     "assert f(3) == %d\nassert f(4) == %d\nassert f(0) == %d\n",
                     i, 3 + i, 6 + i, i);
            codes[n++] = xstrdup(buf);
        }
    }
    *out = codes;
    return n;
}

int main(int argc, char **argv)
{
    Args a;
    int  rc = parse_args(argc, argv, &a);
    if (rc > 0) return 0;
    if (rc < 0) {
        fprintf(stderr, "bench_sandbox: bad arguments (see --help)\n");
        return 2;
    }
    log_init("bench", LOG_WARN);
    /* rlhf-sandbox-exec sits one directory up, beside the programs. */
    char    self[PATH_MAX], exec_path[PATH_MAX + 32];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return 1;
    self[n] = '\0';
    *strrchr(self, '/') = '\0';
    snprintf(exec_path, sizeof exec_path, "%s/../rlhf-sandbox-exec", self);

    SandboxConfig cfg = SANDBOX_DEFAULTS;
    cfg.workers = a.workers;
    cfg.isolation = a.isolation;
    cfg.exec_path = exec_path;
    Sandbox *sb = sandbox_new(&cfg);
    if (!sb) {
        fprintf(stderr, "bench_sandbox: the sandbox did not start (above)\n");
        return 1;
    }
    char      **codes;
    const char *what;
    int         np = load_programs(&codes, &what);
    int         runs = a.runs > np ? a.runs : np;

    /* Each rate is the better of two rounds, interleaved, so that a warm
     * page cache or a burst of load elsewhere favours neither. */
    char  *trivial[] = {"pass\n"};
    int    passed = 0;
    double bare = 0, triv = 0, sol = 0;
    for (int round = 0; round < 2; round++) {
        bare = fmax(bare, bare_rate(cfg.python, a.runs, a.workers));
        triv = fmax(triv, sandbox_rate(sb, trivial, 1, a.runs, &passed));
        sol = fmax(sol, sandbox_rate(sb, codes, np, runs, &passed));
    }
    printf("sandbox: %d workers, %s\n", a.workers, sandbox_isolation_detail(sb));
    printf("  bare python3 -c pass through libuv:  %6.1f processes/s\n", bare);
    printf("  sandboxed trivial job:               %6.1f runs/s (%.0f%% of bare)\n", triv,
           100.0 * triv / bare);
    printf("  %s: %6.1f solutions/s (%d runs, %d passed)\n", what, sol, runs, passed);

    json_t *res = json_pack("{s:i, s:s, s:f, s:f, s:f, s:s, s:i}", "workers", a.workers,
                            "isolation", sandbox_iso_names[sandbox_isolation(sb)],
                            "bare_python_per_s", bare, "trivial_runs_per_s", triv,
                            "solutions_per_s", sol, "solutions", what, "runs", runs);
    for (int i = 0; i < np; i++) free(codes[i]);
    free(codes);
    sandbox_free(&sb);
    return bench_json_write("bench_sandbox", a.out, "sandbox", res) ? 1 : 0;
}
