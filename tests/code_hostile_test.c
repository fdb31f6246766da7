/* Hostile code against a real rlhf-reward: the server runs with CURVE keys,
 * a byte-level BPE tokenizer (a tiny GGUF written here, so any text is a
 * completion) and its code sandbox; the test is the actor (PUSH of
 * SampledGroups of task "code") and the learner (PULL of ScoredGroups). One
 * hostile completion per group: an infinite loop, a fork bomb, a memory hog,
 * endless output, a write outside its directory, a network connection, a
 * kill of its parent and of the server, kill(-1), a daemon escaping its
 * process group, reading /etc/shadow and the server's secret key. For each:
 * the group comes back scored, the verdict (from the server's /metrics) is
 * one of those expected, and the harm did not happen (no file, no
 * connection, no process left, the server alive and /healthz 200). Then an
 * ordinary group is scored right: the server is still healthy. The table
 * printed is the README's ("Code rewards in a sandbox"). */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/formats/bpe.h"
#include "common/formats/bpe_gguf.h"
#include "common/formats/gguf.h"
#include "common/formats/gguf_buf.h"
#include "common/net/auth.h"
#include "common/net/zsock.h"
#include "reward_server/sandbox/sandbox.h"
#include "tests/support/expect.h"
#include "tests/support/fixtures.h"
#include "tests/support/http.h"
#include "tests/support/ports.h"
#include "tests/support/proc.h"
#include "tests/support/testfs.h"
#include "tests/support/wire_fixture.h"
#include "tests/test_list.h"

enum { CH_MAX_TOKENS = 4096, CH_G = 2 };

typedef struct {
    char      tmp[256], keys[300], outside[300], gguf[300], build[256];
    int       port;      /* samples; +1 results, +2 metrics */
    int       listen_fd; /* a TCP server of the test a program would reach without isolation */
    int       listen_port;
    Proc     *reward;
    Bpe      *bpe;
    void     *zctx;
    Auth     *learner_auth, *actor_auth;
    WireSock *push, *pull;
    uint64_t  lease;
} Ch;

/* ---- the tokenizer: 256 byte tokens, so every text encodes ---- */

static int ch_write_gguf(const char *path)
{
    FixtureVocab v = {0};
    fixture_vocab_add(&v, "<|endoftext|>", BPE_TOKEN_CONTROL);
    fixture_vocab_add(&v, "<|im_start|>", BPE_TOKEN_CONTROL);
    fixture_vocab_add(&v, "<|im_end|>", BPE_TOKEN_CONTROL);
    fixture_vocab_add_bytes(&v, "");
    fixture_vocab_add(&v, "ab", BPE_TOKEN_NORMAL);
    const char *merges[] = {"a b"};
    GgufBuf     b = {0};
    gguf_buf_put(&b, "GGUF", 4);
    gguf_buf_u32(&b, 3);
    gguf_buf_u64(&b, 0); /* tensors */
    gguf_buf_u64(&b, 5); /* metadata pairs */
    gguf_buf_kv_str(&b, "tokenizer.ggml.model", "gpt2");
    gguf_buf_kv_str(&b, "tokenizer.ggml.pre", "smollm");
    gguf_buf_kv_array(&b, "tokenizer.ggml.tokens", GGUF_VAL_STRING, (uint64_t)v.n);
    for (int i = 0; i < v.n; i++) gguf_buf_str(&b, v.tok[i]);
    gguf_buf_kv_array(&b, "tokenizer.ggml.merges", GGUF_VAL_STRING, 1);
    gguf_buf_str(&b, merges[0]);
    gguf_buf_kv_array(&b, "tokenizer.ggml.token_type", GGUF_VAL_INT32, (uint64_t)v.n);
    for (int i = 0; i < v.n; i++) gguf_buf_u32(&b, (uint32_t)v.type[i]);
    gguf_buf_kv_u32(&b, "tokenizer.ggml.eos_token_id", 0);
    int rc = fixture_write_file(path, b.p, b.n);
    gguf_buf_free(&b);
    fixture_vocab_free(&v);
    return rc;
}

/* ---- the harm detectors ---- */

/* Processes whose command line holds needle (a sandboxed runner, a sleeper). */
static int ch_count_procs(const char *needle, size_t needle_len)
{
    DIR *d = opendir("/proc");
    if (!d) return -1;
    int            n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
        char path[64], buf[4096];
        snprintf(path, sizeof path, "/proc/%.20s/cmdline", e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t got = read(fd, buf, sizeof buf);
        close(fd);
        if (got > 0 && memmem(buf, (size_t)got, needle, needle_len)) n++;
    }
    closedir(d);
    return n;
}

static int ch_runners(void)
{
    return ch_count_procs("_rlhf_runner", 12);
}

static int ch_sleepers(void)
{
    return ch_count_procs("sleep\0"
                          "61.5",
                          11);
}

/* Connections waiting on the test's listener (each accepted and closed). */
static int ch_accepts(Ch *c)
{
    int n = 0, fd;
    while ((fd = accept4(c->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
        close(fd);
        n++;
    }
    return n;
}

static bool ch_metric(Ch *c, const char *series, double *v)
{
    HttpReply r;
    if (http_request(c->port + 2, "GET", "/metrics", NULL, 5.0, true, &r) != 0) return false;
    bool ok = r.status == 200 && http_prom_value(r.body, series, v);
    http_reply_free(&r);
    return ok;
}

static void ch_verdicts(Ch *c, double out[SANDBOX_VERDICT_COUNT])
{
    for (int v = 0; v < SANDBOX_VERDICT_COUNT; v++) {
        char series[128];
        snprintf(series, sizeof series, "rlhf_reward_code_runs_total{verdict=\"%s\"}",
                 sandbox_verdict_name((SandboxVerdict)v));
        out[v] = 0;
        ch_metric(c, series, &out[v]);
    }
}

static double ch_runs(const double v[SANDBOX_VERDICT_COUNT])
{
    double n = 0;
    for (int i = 0; i < SANDBOX_VERDICT_COUNT; i++) n += v[i];
    return n;
}

/* ---- groups ---- */

typedef struct {
    Rlhf__SamplingParams sp;
    Rlhf__Prompt         prompt;
    int32_t              ptoks[16];
    Rlhf__Completion     comp[CH_G];
    Rlhf__Completion    *compp[CH_G];
    int32_t              toks[CH_G][CH_MAX_TOKENS];
    float                lp[CH_G][CH_MAX_TOKENS];
    uint64_t             pv[CH_G][CH_MAX_TOKENS];
    Rlhf__SampledGroup   g;
} ChGroup;

/* Sends a group of n completions of task "code" with meta; fills rewards
 * from the ScoredGroup. Returns false (after a failed check) when it does
 * not come back within timeout_s. */
static bool ch_score(Ch *c, const char *const *completions, int n, const char *meta, float *rewards,
                     double timeout_s)
{
    ChGroup *t = xcalloc(1, sizeof *t);
    rlhf__sampling_params__init(&t->sp);
    t->sp.temperature = 1.0f;
    t->sp.top_p = 1.0f;
    t->sp.max_new_tokens = CH_MAX_TOKENS;
    rlhf__prompt__init(&t->prompt);
    t->prompt.prompt_id = c->lease;
    int np = 0;
    CHECK(bpe_encode(c->bpe, "# code", 6, 0, (int *)t->ptoks, 16, &np) == 0);
    t->prompt.tokens = t->ptoks;
    t->prompt.n_tokens = (size_t)np;
    t->prompt.answer = (char *)"";
    t->prompt.task = (char *)"code";
    t->prompt.meta_json = (char *)meta;
    for (int i = 0; i < n; i++) {
        int k = 0;
        CHECK(bpe_encode(c->bpe, completions[i], strlen(completions[i]), 0, (int *)t->toks[i],
                         CH_MAX_TOKENS - 1, &k) == 0);
        t->toks[i][k++] = 0; /* the end-of-text token */
        for (int j = 0; j < k; j++) {
            t->lp[i][j] = -1.0f;
            t->pv[i][j] = 1;
        }
        wire_fixture_completion_init(&t->comp[i], t->toks[i], t->lp[i], t->lp[i], t->pv[i],
                                     (size_t)k);
        t->compp[i] = &t->comp[i];
    }
    wire_fixture_sampled_init(&t->g, "run-code", 1, &t->prompt, &t->sp, t->compp, (size_t)n);
    t->g.lease_id = ++c->lease;
    t->g.actor_id = (char *)"actor-test";
    t->g.group_index = 0;
    t->g.group_count = 1;
    bool ok = EXPECT(wire_send(c->push, &t->g.base, 0) == 0, "send group %llu",
                     (unsigned long long)t->g.lease_id);
    free(t);
    if (!ok) return false;
    WireLimits         lim = {.vocab_size = bpe_vocab_size(c->bpe)};
    WireMsg            m;
    Rlhf__ScoredGroup *sg = NULL;
    WireReject         rej;
    /* zmq_poll may wake without a message (CURVE handshakes): wait on to the deadline. */
    int    rc = ERR_TIMEOUT;
    double left_ms = timeout_s * 1000;
    while ((rc == ERR_TIMEOUT || rc == ERR_AGAIN) && left_ms > 0) {
        rc = wire_recv_decode(c->pull, 100, &rlhf__scored_group__descriptor, &lim, &m,
                              (ProtobufCMessage **)&sg, &rej);
        left_ms -= 100;
    }
    if (!EXPECT(rc == 0, "no ScoredGroup for lease %llu within %.0f s: %s",
                (unsigned long long)c->lease, timeout_s, err_str(rc))) {
        proc_report(c->reward, 30);
        return false;
    }
    ok = EXPECT(sg->group && sg->group->lease_id == c->lease && sg->n_scores == (size_t)n &&
                    !strcmp(sg->scorer_id, "code"),
                "ScoredGroup: lease %llu, %zu scores, scorer '%s'",
                (unsigned long long)(sg->group ? sg->group->lease_id : 0), sg->n_scores,
                sg->scorer_id);
    for (int i = 0; i < n && ok; i++) rewards[i] = sg->scores[i]->reward;
    protobuf_c_message_free_unpacked(&sg->base, NULL);
    wire_msg_close(&m);
    return ok;
}

/* ---- the cases ---- */

typedef struct {
    const char *name;   /* the README row */
    const char *code;   /* the completion; %d: reward pid, %s: see fill */
    const char *expect; /* acceptable verdicts, '|'-separated */
    float       reward; /* expected; -1 = depends on the isolation mode */
    const char *harm;   /* what is checked beyond the verdict */
} ChCase;

static const ChCase ch_cases[] = {
    {"infinite loop", "while True:\n    pass\n", "cpu_limit|timeout", 0,
     "killed at its CPU limit (2 s) or the wall clock (4 s)"},
    {"fork bomb",
     "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
     "timeout|cpu_limit|killed", 0, "RLIMIT_NPROC; every process killed with the group"},
    {"memory hog", "x = []\nwhile True:\n    x.append(bytearray(1 << 24))\n", "error", 0,
     "MemoryError at RLIMIT_AS (512 MB)"},
    {"huge output", "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n",
     "error|timeout|killed|exited", 0, "64 KiB kept, the rest counted, the pipe cut at 16 MiB"},
    {"write outside its directory", "open('OUTSIDE/pwned', 'w').write('x')\n", "error", 0,
     "no file in a world-writable directory outside"},
    {"network socket",
     "import socket\ns = socket.create_connection(('127.0.0.1', PORT), timeout=2)\n"
     "s.sendall(b'pwned')\n",
     "error", 0, "no connection reached the test's listener"},
    {"kill its parent and the server",
     "import os\nos.kill(os.getppid(), 9)\nos.kill(REWARDPID, 9)\n", "error", 0,
     "the server lives on"},
    {"kill every process it may", "import os\nos.kill(-1, 9)\n", "error|killed|passed", -1,
     "the server lives on (namespaces: nothing else in sight; seccomp: refused)"},
    {"daemon escaping its group",
     "import os\nif os.fork() == 0:\n    os.setsid()\n    os.execv('/bin/sleep', ['sleep', "
     "'61.5'])\n",
     "passed", 1, "no process left after the run"},
    {"read /etc/shadow", "print(open('/etc/shadow').read())\n", "error", 0,
     "PermissionError (uid 65534, landlock)"},
    {"read the server's key", "print(open('KEYS/reward.key').read())\n", "error", 0,
     "hidden: an empty mount (namespaces), landlock"},
};

/* Replaces every needle in s by with (into out). */
static void ch_subst(const char *s, const char *needle, const char *with, char *out, size_t cap)
{
    size_t at = 0, nl = strlen(needle), wl = strlen(with);
    while (*s && at + 1 < cap) {
        if (!strncmp(s, needle, nl) && at + wl + 1 < cap) {
            memcpy(out + at, with, wl);
            at += wl;
            s += nl;
        } else {
            out[at++] = *s++;
        }
    }
    out[at] = '\0';
}

static void ch_fill(const Ch *c, const char *code, char *out, size_t cap)
{
    char a[2048], b[2048], num[32];
    ch_subst(code, "OUTSIDE", c->outside, a, sizeof a);
    ch_subst(a, "KEYS", c->keys, b, sizeof b);
    snprintf(num, sizeof num, "%d", c->listen_port);
    ch_subst(b, "PORT", num, a, sizeof a);
    snprintf(num, sizeof num, "%d", (int)proc_pid(c->reward));
    ch_subst(a, "REWARDPID", num, out, cap);
}

/* ---- setup ---- */

static bool ch_listen(Ch *c)
{
    c->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t          len = sizeof a;
    return EXPECT(c->listen_fd >= 0 && bind(c->listen_fd, (struct sockaddr *)&a, sizeof a) == 0 &&
                      listen(c->listen_fd, 16) == 0 &&
                      getsockname(c->listen_fd, (struct sockaddr *)&a, &len) == 0,
                  "listener: %s", strerror(errno)) &&
           (c->listen_port = ntohs(a.sin_port)) > 0;
}

static bool ch_setup(Ch *c, const char *isolation)
{
    if (!EXPECT(testfs_tmpdir_new("code-hostile", c->tmp, sizeof c->tmp) == 0, "temp dir"))
        return false;
    proc_build_dir(c->build, sizeof c->build);
    testfs_path(c->keys, sizeof c->keys, "%s/keys", c->tmp);
    testfs_path(c->outside, sizeof c->outside, "%s/outside", c->tmp);
    testfs_path(c->gguf, sizeof c->gguf, "%s/tok.gguf", c->tmp);
    /* The directory a program must not write: writable by everyone, so only
     * the sandbox stands in the way; its parent searchable. */
    if (!EXPECT(chmod(c->tmp, 0711) == 0 && mkdir(c->outside, 0777) == 0 &&
                    chmod(c->outside, 0777) == 0,
                "mkdir %s", c->outside))
        return false;
    if (!EXPECT(ch_write_gguf(c->gguf) == 0 && bpe_load(c->gguf, &c->bpe) == 0, "tokenizer"))
        return false;
    char kg[300];
    testfs_path(kg, sizeof kg, "%s/rlhf-keygen", c->build);
    const char *kargv[] = {"rlhf-keygen", "--dir", c->keys, NULL};
    ProcResult  kr;
    int         rc = proc_run(kg, kargv, NULL, 30, &kr);
    bool        ok = EXPECT_RUN(rc == 0 && kr.status == 0, &kr, "rlhf-keygen");
    proc_result_free(&kr);
    if (!ok || !ch_listen(c)) return false;

    c->port = ports_pick(3, 31000, 39000);
    if (!EXPECT(c->port > 0, "no free ports")) return false;
    char ep_samples[64], ep_results[64];
    snprintf(ep_samples, sizeof ep_samples, "tcp://127.0.0.1:%d", c->port);
    snprintf(ep_results, sizeof ep_results, "tcp://127.0.0.1:%d", c->port + 1);
    /* The learner's side first: the reward server connects its results to it. */
    c->zctx = zmq_ctx_new();
    AuthConfig la = {.keys_dir = c->keys, .key_name = NULL};
    c->learner_auth = auth_new(c->zctx, &la, AUTH_LEARNER, true);
    c->actor_auth = auth_new(c->zctx, &(AuthConfig){.keys_dir = c->keys}, "actor", false);
    c->pull = wire_sock_new(c->zctx, ZMQ_PULL, "results", NULL);
    c->push = wire_sock_new(c->zctx, ZMQ_PUSH, "samples", NULL);
    if (!EXPECT(c->learner_auth && c->actor_auth && c->pull && c->push &&
                    auth_bind(c->learner_auth, c->pull, ep_results) == 0,
                "the test's sockets"))
        return false;

    char log[320], path[300];
    testfs_path(log, sizeof log, "%s/reward.log", c->tmp);
    testfs_path(path, sizeof path, "%s/rlhf-reward", c->build);
    c->reward = proc_new(path, NULL, &(ProcOpts){.name = "reward", .log_path = log});
    proc_arg(c->reward, "rlhf-reward");
    proc_arg(c->reward, "--samples=%s", ep_samples);
    proc_arg(c->reward, "--results=%s", ep_results);
    proc_arg(c->reward, "--keys=%s", c->keys);
    proc_arg(c->reward, "--model=%s", c->gguf);
    proc_arg(c->reward, "--threads=2");
    proc_arg(c->reward, "--code-workers=2");
    proc_arg(c->reward, "--code-timeout-ms=4000");
    proc_arg(c->reward, "--code-cpu-s=2");
    proc_arg(c->reward, "--metrics-addr=127.0.0.1:%d", c->port + 2);
    proc_arg(c->reward, "--status-every=1");
    proc_arg(c->reward, "--code-isolation=%s", isolation);
    if (!EXPECT(proc_start(c->reward) == 0, "rlhf-reward did not start")) return false;
    if (!EXPECT(proc_wait_output(c->reward, "samples bound at", 30), "rlhf-reward not up")) {
        proc_report(c->reward, 40);
        return false;
    }
    return EXPECT(auth_connect(c->actor_auth, c->push, ep_samples, AUTH_REWARD) == 0,
                  "connect to the reward server");
}

static void ch_teardown(Ch *c)
{
    wire_sock_free(&c->push);
    wire_sock_free(&c->pull);
    auth_free(&c->actor_auth);
    auth_free(&c->learner_auth);
    if (c->zctx) zmq_ctx_term(c->zctx);
    if (c->reward) {
        proc_signal(c->reward, SIGTERM);
        EXPECT(proc_wait(c->reward, 15) == 0 && proc_exited_ok(c->reward),
               "rlhf-reward did not shut down cleanly");
        proc_free(&c->reward);
    }
    if (c->listen_fd > 0) close(c->listen_fd);
    bpe_free(&c->bpe);
    testfs_tmpdir_remove(c->tmp);
}

static bool ch_verdict_ok(const char *expect, const char *got)
{
    char list[128];
    snprintf(list, sizeof list, "%s", expect);
    char *save = NULL;
    for (char *v = strtok_r(list, "|", &save); v; v = strtok_r(NULL, "|", &save))
        if (!strcmp(v, got)) return true;
    return false;
}

/* The cases against a server whose sandbox runs in mode isolation. */
static void ch_mode(const char *isolation, bool verbose)
{
    Ch c = {.listen_fd = -1};
    if (!ch_setup(&c, isolation)) {
        ch_teardown(&c);
        return;
    }
    double isolated = -1;
    for (double t0 = 0; t0 < 5 && !ch_metric(&c, "rlhf_reward_code_network_isolated", &isolated);
         t0 += 0.1)
        usleep(100000);
    EXPECT(isolated == 1, "rlhf_reward_code_network_isolated %g, expected 1", isolated);
    const char *meta = "{\"tests\": [\"pass\"], \"prefix\": \"\"}";
    int         sleepers0 = ch_sleepers();
    printf("code_hostile: isolation %s\n| hostile completion | verdict | reward | contained |\n"
           "|---|---|---|---|\n",
           isolation);
    double before[SANDBOX_VERDICT_COUNT], after[SANDBOX_VERDICT_COUNT];
    ch_verdicts(&c, before);
    for (size_t i = 0; i < sizeof ch_cases / sizeof ch_cases[0]; i++) {
        const ChCase *k = &ch_cases[i];
        char          code[2048];
        ch_fill(&c, k->code, code, sizeof code);
        const char *comp[] = {code};
        float       reward = -1;
        if (!ch_score(&c, comp, 1, meta, &reward, 30)) break;
        /* The verdict: the counter that moved (the metrics lag up to 250 ms). */
        const char *verdict = "?";
        for (int tries = 0; tries < 40; tries++) {
            ch_verdicts(&c, after);
            if (ch_runs(after) >= ch_runs(before) + 1) break;
            usleep(100000);
        }
        for (int v = 0; v < SANDBOX_VERDICT_COUNT; v++)
            if (after[v] > before[v]) verdict = sandbox_verdict_name((SandboxVerdict)v);
        memcpy(before, after, sizeof before);
        EXPECT(ch_verdict_ok(k->expect, verdict), "%s: verdict %s, expected %s", k->name, verdict,
               k->expect);
        if (k->reward >= 0)
            EXPECT(reward == k->reward, "%s: reward %g, expected %g", k->name, reward, k->reward);
        /* The harm that did not happen. */
        EXPECT(proc_is_running(c.reward), "%s: the reward server died", k->name);
        HttpReply h;
        EXPECT(http_request(c.port + 2, "GET", "/healthz", NULL, 5, true, &h) == 0 &&
                   h.status == 200,
               "%s: /healthz not 200", k->name);
        http_reply_free(&h);
        char pwned[320];
        testfs_path(pwned, sizeof pwned, "%s/pwned", c.outside);
        EXPECT(access(pwned, F_OK) != 0, "%s: %s was written", k->name, pwned);
        EXPECT(ch_accepts(&c) == 0, "%s: a connection reached the test's listener", k->name);
        /* Nothing of the run is left: runners and the daemon's sleep die with it. */
        int runners = -1, sleepers = -1;
        for (int tries = 0; tries < 50; tries++) {
            runners = ch_runners();
            sleepers = ch_sleepers();
            if (runners == 0 && sleepers == sleepers0) break;
            usleep(100000);
        }
        EXPECT(runners == 0 && sleepers == sleepers0, "%s: %d runners and %d sleepers left",
               k->name, runners, sleepers - sleepers0);
        printf("| %s | %s | %g | %s |\n", k->name, verdict, reward, k->harm);
    }
    double capped = 0;
    EXPECT(ch_metric(&c, "rlhf_reward_code_output_capped_total", &capped) && capped >= 1,
           "output capped %g times, expected >= 1", capped);

    /* Still serving: two completions scored right, a fraction each. */
    const char *good[] = {"def add(a, b):\n    return a + b\n",
                          "def add(a, b):\n    return a + b if a else 0\n"};
    float       rewards[2] = {-1, -1};
    const char *gmeta =
        "{\"tests\": [\"assert add(1, 2) == 3\", \"assert add(0, 5) == 5\"], \"prefix\": \"\"}";
    if (ch_score(&c, good, 2, gmeta, rewards, 30))
        EXPECT(rewards[0] == 1.0f && rewards[1] == 0.5f,
               "after the hostile ones: rewards %g %g, expected 1 and 0.5", rewards[0], rewards[1]);
    if (verbose)
        printf("  code_hostile: then an ordinary group: rewards %g %g\n", rewards[0], rewards[1]);
    ch_teardown(&c);
}

int code_hostile_selftest(bool verbose)
{
    expect_begin("code_hostile", verbose);
    /* The strongest mode here (namespaces on this kind of machine), then the
     * one Docker's default seccomp profile leaves (no namespaces at all). */
    ch_mode("auto", verbose);
    ch_mode("seccomp", verbose);
    return expect_end();
}
