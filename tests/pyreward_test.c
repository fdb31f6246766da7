/* pyreward_test: the Python reward server (reward_server/python, README "A
 * reward server in Python"), run from the venv deploy/install-pydeps.sh
 * makes (make test runs it), with the score functions of
 * tests/fixtures/pyreward_scores.py:
 *
 *   usage   --help names every flag with its default; a bad flag, a module
 *           that is not there and a non-loopback bind without keys are
 *           refused (exit 2), naming what is wrong.
 *   probe   the test as actor and learner around one server: the hostile
 *           frames of tests/support/frames.c are counted under rlhf-reward's
 *           reasons; each way a score goes wrong (it raises, for all or one
 *           completion; NaN; an infinity; a reward over --reward-max; not a
 *           number; a NaN component; metadata not an object) refuses its
 *           group under rlhf-reward's reason, logged; good groups come back
 *           as ScoredGroups that pass the learner's wire checks, with the
 *           rewards in completion order and the prompt, completion, answer
 *           and metadata the function saw; /metrics counts what the status
 *           line does and /healthz answers; SIGTERM ends it with exit 0.
 *   bpe     with --model, a GGUF's byte-level BPE (ChatML, a user-defined
 *           token, a token outside the byte alphabet, multi-byte UTF-8):
 *           the prompt and completion texts the function gets are the ones
 *           rlhf-reward's decoding gives (reward_completion_text_bpe).
 *   learn   the only reward server of a real cluster (an rlhf-sft warm
 *           start, rlhf-learner, rlhf-actor) with a score function that
 *           raises on every tenth call: held-out accuracy rises clearly, the
 *           accounting identity holds in every record and the summary, the
 *           raises are counted as bad_value and their leases re-issued, and
 *           the learner refuses nothing the server sent.
 *   keys    the cluster with CURVE keys from rlhf-keygen, the server started
 *           from a script of one's own (rlhf_reward.serve): it trains; a
 *           plaintext client and a client whose key is not on the allow-list
 *           are refused on the samples socket and counted as unauthorized;
 *           SIGTERM ends serve(), which returns the counters.
 *
 * Returns the number of failed checks (0 = pass). */
#include "tests/test_list.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/formats/bpe.h"
#include "common/formats/bpe_gguf.h"
#include "common/formats/gguf.h"
#include "common/formats/gguf_buf.h"
#include "common/formats/tok.h"
#include "common/net/auth.h"
#include "common/net/wire.h"
#include "common/net/zsock.h"
#include "reward_server/reward.h"
#include "tests/support/expect.h"
#include "tests/support/fixtures.h"
#include "tests/support/frames.h"
#include "tests/support/http.h"
#include "tests/support/proc.h"
#include "tests/support/testcl.h"
#include "tests/support/testfs.h"
#include "tests/support/wire_fixture.h"

/* A test still running after this long fails, and its processes are killed. */
#define PYR_BUDGET_S 240.0
/* The server, relative to the build directory (deploy/install-pydeps.sh). */
#define PYR_PROG "pyenv/bin/rlhf-reward-py"
#define PYR_FIXTURE "tests/fixtures/pyreward_scores.py"
#define PYR_RUN "probe-run"

/* The flags --help must list, each with its default (--module is required). */
static const char *const k_flags[] = {
    "--samples",         "--results",    "--id",           "--scorer-id", "--charset",
    "--reward-min",      "--reward-max", "--status-every", "--log-level", "--metrics-addr",
    "--metrics-stale-s", "--keys",       "--key-name",     "--insecure",  "--model"};

typedef struct {
    TestCl c;
    char   prog[PATH_MAX + 32]; /* the server's entry script */
    char   fixture[PATH_MAX];   /* absolute path of the score functions */
    int    vocab;               /* of the char tokenizer */
} Pyr;

/* The server scoring with fixture function fn, on the given endpoints. */
static Proc *py_reward(Pyr *t, const char *name, const char *fn, const char *samples,
                       const char *results)
{
    Proc *p = testcl_proc(&t->c, name, PYR_PROG, NULL, NULL);
    proc_arg(p, "--module=%s:%s", t->fixture, fn);
    proc_arg(p, "--samples=%s", samples);
    proc_arg(p, "--results=%s", results);
    proc_arg(p, "--id=%s", name);
    proc_arg(p, "--status-every=0.25");
    if (t->c.keys[0]) proc_arg(p, "--keys=%s", t->c.keys);
    return p;
}

static bool py_start(Pyr *t, Proc *p)
{
    return testcl_start(&t->c, p) && EXPECT(testcl_wait_log(&t->c, p, "samples bound at", 30.0),
                                            "%s did not bind its samples socket", proc_name(p));
}

/* Counts of a reasons string ("garbage=2 bad_value=1") by WireReason. */
static void reasons_parse(const char *s, long long n[WIRE_REJ_COUNT])
{
    memset(n, 0, sizeof(long long) * WIRE_REJ_COUNT);
    char      name[64];
    long long v;
    int       used;
    for (const char *p = s; p && sscanf(p, " %63[a-z_]=%lld%n", name, &v, &used) == 2; p += used)
        for (int k = 0; k < WIRE_REJ_COUNT; k++)
            if (!strcmp(name, wire_reason_name((WireReason)k))) n[k] += v;
}

static void reasons_format(const long long n[WIRE_REJ_COUNT], char *buf, size_t cap)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int k = 0; k < WIRE_REJ_COUNT && used < cap; k++)
        if (n[k])
            used += (size_t)snprintf(buf + used, cap - used, "%s%s=%lld", used ? " " : "",
                                     wire_reason_name((WireReason)k), n[k]);
    if (!used) snprintf(buf, cap, "none");
}

/* --help, bad usage. */
static void test_usage(Pyr *t)
{
    ProcResult  r;
    const char *help[] = {PYR_PROG, "--help", NULL};
    int         rc = proc_run(t->prog, help, NULL, 60.0, &r);
    EXPECT_RUN(rc == 0 && r.status == 0 && strstr(r.out, "--module"), &r, "--help: exit %d",
               r.status);
    for (size_t i = 0; rc == 0 && i < sizeof k_flags / sizeof k_flags[0]; i++) {
        /* The flag's entry runs from "  --flag" to the next entry. */
        char key[64];
        snprintf(key, sizeof key, "  %s ", k_flags[i]);
        const char *at = strstr(r.out, key);
        if (!at) {
            snprintf(key, sizeof key, "  %s\n", k_flags[i]);
            at = strstr(r.out, key);
        }
        const char *next = at ? strstr(at + 3, "\n  -") : NULL;
        size_t      n = at ? (next ? (size_t)(next - at) : strlen(at)) : 0;
        EXPECT(at && memmem(at, n, "default", 7), "--help: %s %s", k_flags[i],
               at ? "has no default" : "is missing");
    }
    proc_result_free(&r);

    const char *bad_flag[] = {PYR_PROG, "--module=x", "--no-such-flag", NULL};
    rc = proc_run(t->prog, bad_flag, NULL, 60.0, &r);
    EXPECT_RUN(rc == 0 && r.status == 2 && strstr(r.err, "--no-such-flag"), &r,
               "a bad flag: exit %d, expected 2 naming it", r.status);
    proc_result_free(&r);

    const char *no_module[] = {PYR_PROG, "--module=no_such_module_here:score", NULL};
    rc = proc_run(t->prog, no_module, NULL, 60.0, &r);
    EXPECT_RUN(rc == 0 && r.status == 2 && strstr(r.err, "no module 'no_such_module_here'"), &r,
               "a missing module: exit %d, expected 2 naming it", r.status);
    proc_result_free(&r);

    char module[PATH_MAX + 32];
    snprintf(module, sizeof module, "--module=%s:score", t->fixture);
    const char *open_bind[] = {PYR_PROG, module, "--samples=tcp://0.0.0.0:19998", NULL};
    rc = proc_run(t->prog, open_bind, NULL, 60.0, &r);
    EXPECT_RUN(rc == 0 && r.status == 2 && strstr(r.err, "not loopback") && strstr(r.err, "--keys"),
               &r, "a non-loopback bind without keys: exit %d, expected 2 naming --keys", r.status);
    proc_result_free(&r);
}

/* One probe group: the valid group of frames.c with answer, meta and
 * lease id set (and completion 2's first token, when tok2 > 0). */
static int probe_send(WireSock *s, const char *answer, const char *meta, uint64_t lease, int tok2)
{
    FramesGroup g;
    frames_group_init(&g, PYR_RUN, 1);
    g.prompt.answer = (char *)answer;
    g.prompt.meta_json = (char *)meta;
    g.group.lease_id = lease;
    if (tok2 > 0) g.tok[2][0] = tok2;
    return wire_send(s, &g.group.base, 0);
}

/* The component of s named name, or NULL. */
static const Rlhf__RewardComponent *component(const Rlhf__Score *s, const char *name)
{
    for (size_t j = 0; j < s->n_components; j++)
        if (!strcmp(s->components[j]->name, name)) return s->components[j];
    return NULL;
}

/* Checks a ScoredGroup of score_probe: lease, rewards, what it saw. */
static void probe_check(Pyr *t, const Rlhf__ScoredGroup *sg, uint64_t lease, double meta_k)
{
    /* frames.c's prompt is BOS 20 21 22, every completion 20 EOS. */
    const char *cs = TOK_CHARSET_DEFAULT;
    char        prompt[64], completion[64];
    snprintf(prompt, sizeof prompt, "prompt=%c%c%c", cs[20 - TOK_N_SPECIAL], cs[21 - TOK_N_SPECIAL],
             cs[22 - TOK_N_SPECIAL]);
    snprintf(completion, sizeof completion, "completion=%c", cs[20 - TOK_N_SPECIAL]);
    EXPECT(sg->group->lease_id == lease && !strcmp(sg->run_id, PYR_RUN) &&
               !strcmp(sg->scorer_id, "python:pyreward_scores.score_probe") &&
               sg->n_scores == TESTCL_GROUP && sg->group->n_completions == TESTCL_GROUP,
           "scored group: lease %llu run '%s' scorer '%s' %zu scores, expected lease %llu run "
           "'%s' scorer python:pyreward_scores.score_probe %d scores",
           (unsigned long long)sg->group->lease_id, sg->run_id, sg->scorer_id, sg->n_scores,
           (unsigned long long)lease, PYR_RUN, TESTCL_GROUP);
    for (size_t i = 0; i < sg->n_scores && i < TESTCL_GROUP; i++) {
        const Rlhf__Score           *s = sg->scores[i];
        const Rlhf__RewardComponent *p = component(s, prompt), *c = component(s, completion);
        const Rlhf__RewardComponent *a = component(s, "answer=ok"), *k = component(s, "meta_k");
        EXPECT(s->reward == 0.25f && s->n_components == 4 && p && c && a && k &&
                   k->value == (float)meta_k,
               "lease %llu score %zu: reward %g (expected 0.25), %zu components (%s %s %s, "
               "meta_k %g expected %g)",
               (unsigned long long)lease, i, s->reward, s->n_components, p ? "prompt" : "NO prompt",
               c ? "completion" : "NO completion", a ? "answer" : "NO answer", k ? k->value : NAN,
               meta_k);
    }
}

/* The probe server's /healthz and /metrics (port 0: the one it logged)
 * against what the test sent. */
static void probe_metrics(Pyr *t, const Proc *py, const long long n_want[WIRE_REJ_COUNT],
                          int n_sent)
{
    char       *log = proc_read_out(py);
    const char *at = log ? strstr(log, "metrics: serving http://127.0.0.1:") : NULL;
    int         port = 0;
    if (!EXPECT(at && sscanf(at, "metrics: serving http://127.0.0.1:%d", &port) == 1 && port > 0,
                "the probe server did not log its metrics port")) {
        free(log);
        return;
    }
    free(log);
    HttpReply r;
    int       rc = http_request(port, "GET", "/healthz", NULL, 10.0, false, &r);
    EXPECT(rc == 0 && r.status == 200 && !strcmp(r.body, "ok\n"), "/healthz: %d '%s'",
           rc ? rc : r.status, rc ? "" : r.body);
    if (rc == 0) http_reply_free(&r);
    rc = http_request(port, "GET", "/nope", NULL, 10.0, false, &r);
    EXPECT(rc == 0 && r.status == 404, "/nope: %d, expected 404", rc ? rc : r.status);
    if (rc == 0) http_reply_free(&r);
    rc = http_request(port, "GET", "/metrics", NULL, 10.0, false, &r);
    if (!EXPECT(rc == 0 && r.status == 200, "/metrics: %d", rc ? rc : r.status)) return;
    double v;
    EXPECT(http_prom_value(r.body, "rlhf_reward_groups_received_total", &v) && v == n_sent,
           "/metrics groups received %g, expected %d", v, n_sent);
    EXPECT(http_prom_value(r.body, "rlhf_reward_groups_scored_total", &v) && v == 2,
           "/metrics groups scored %g, expected 2", v);
    EXPECT(http_prom_value(r.body, "rlhf_reward_completions_scored_total", &v) &&
               v == 2 * TESTCL_GROUP,
           "/metrics completions scored %g, expected %d", v, 2 * TESTCL_GROUP);
    for (int k = 0; k < WIRE_REJ_COUNT; k++) {
        char series[96];
        snprintf(series, sizeof series, "rlhf_reward_rejects_total{reason=\"%s\"}",
                 wire_reason_name((WireReason)k));
        EXPECT(http_prom_value(r.body, series, &v) && v == (double)n_want[k],
               "/metrics %s = %g, expected %lld", series, v, n_want[k]);
    }
    http_reply_free(&r);
}

/* Every way a score can go wrong, hostile frames, and two good groups. */
static void test_probe(Pyr *t)
{
    TestCl *c = &t->c;
    int     port = testcl_ports(c, 2);
    if (!port) return;
    char ep_samples[64], ep_results[64];
    snprintf(ep_samples, sizeof ep_samples, "tcp://127.0.0.1:%d", port);
    snprintf(ep_results, sizeof ep_results, "tcp://127.0.0.1:%d", port + 1);
    void        *zctx = zmq_ctx_new();
    WireSockOpts so = WIRE_SOCK_DEFAULTS;
    so.linger_ms = 0;
    so.immediate = false;
    so.sndtimeo_ms = 5000;
    WireSock *pull = wire_sock_new(zctx, ZMQ_PULL, "test-results", &so);
    WireSock *push = wire_sock_new(zctx, ZMQ_PUSH, "test-samples", &so);
    Proc     *py = py_reward(t, "probe", "score_probe", ep_samples, ep_results);
    proc_arg(py, "--reward-max=10");
    proc_arg(py, "--metrics-addr=127.0.0.1:0");
    FrameSet f = {0};
    if (!EXPECT(pull && push && !wire_bind(pull, ep_results), "the test's sockets") ||
        !py_start(t, py) || !EXPECT(!wire_connect(push, ep_samples), "connect to the server"))
        goto done;

    WireLimits lim = {.vocab_size = t->vocab};
    frames_group(&f, PYR_RUN, 1, false);
    frames_check(&f, &rlhf__sampled_group__descriptor, &lim, false);
    char error[256] = "";
    frames_send(push, NULL, 0, &f, error, sizeof error);
    EXPECT(!error[0], "hostile frames: %s", error);
    /* In order: what comes back is lease 1 then lease 10. */
    int rc = probe_send(push, "ok", "{\"k\": 7}", 1, 0);
    rc = rc ? rc : probe_send(push, "raise", "", 2, 0);
    rc = rc ? rc : probe_send(push, "raise-paren", "", 3, 21); /* '(' in completion 2 only */
    rc = rc ? rc : probe_send(push, "nan", "", 4, 0);
    rc = rc ? rc : probe_send(push, "inf", "", 5, 0);
    rc = rc ? rc : probe_send(push, "big", "", 6, 0);
    rc = rc ? rc : probe_send(push, "str", "", 7, 0);
    rc = rc ? rc : probe_send(push, "comp-nan", "", 8, 0);
    rc = rc ? rc : probe_send(push, "ok", "[1]", 9, 0);
    rc = rc ? rc : probe_send(push, "ok", "", 10, 0);
    EXPECT(rc == 0, "sending the probe groups: %s", err_str(rc));
    const int n_sent = f.n + 10;

    /* The two good groups, and nothing else. */
    const uint64_t want_lease[2] = {1, 10};
    const double   want_k[2] = {7.0, -1.0};
    for (int i = 0; i < 3; i++) {
        WireMsg            m;
        Rlhf__ScoredGroup *sg = NULL;
        WireReject         rej = {0};
        rc = wire_recv_decode(pull, i < 2 ? (int)(1000 * testcl_budget(c, 20.0)) : 1000,
                              &rlhf__scored_group__descriptor, &lim, &m, (ProtobufCMessage **)&sg,
                              &rej);
        if (i == 2) {
            EXPECT(rc == ERR_TIMEOUT, "a third scored group came back (lease %llu)",
                   sg ? (unsigned long long)sg->group->lease_id : 0ULL);
        } else if (EXPECT(rc == 0, "scored group %d: %s (%s: %s)", i + 1, err_str(rc),
                          wire_reason_name(rej.reason), rej.why)) {
            probe_check(t, sg, want_lease[i], want_k[i]);
        }
        if (sg) protobuf_c_message_free_unpacked(&sg->base, NULL);
        if (rc == 0) wire_msg_close(&m);
    }

    /* Every refusal under rlhf-reward's reason: the hostile frames', and
     * bad_value for raise, raise-paren, big, str and "[1]", nonfinite for
     * nan, inf and comp-nan. */
    long long n_want[WIRE_REJ_COUNT], n_got[WIRE_REJ_COUNT];
    char      want[256], got[256] = "";
    frames_expected((const FrameSet *[]){&f}, 1, 3, want, sizeof want);
    reasons_parse(want, n_want);
    n_want[WIRE_REJ_BAD_VALUE] += 5;
    reasons_format(n_want, want, sizeof want);
    long long scored = -1, received = -1;
    double    t0 = testcl_now();
    while (!(testcl_reward_status(py, &scored, &received, got, sizeof got) && received == n_sent &&
             !strcmp(got, want)) &&
           testcl_now() - t0 < 20.0 && !testcl_out_of_time(c))
        testcl_sleep_ms(50);
    reasons_parse(got, n_got);
    EXPECT(scored == 2 && received == n_sent && !strcmp(got, want),
           "probe server: scored %lld received %lld rejects '%s', expected 2, %d, '%s'", scored,
           received, got, n_sent, want);
    testcl_note(c, "probe: %d frames, 2 scored, rejects %s", n_sent, got);
    probe_metrics(t, py, n_want, n_sent);
    static const char *const logged[] = {
        "lease 2 group 0 completion 0: score raised RuntimeError: probe asked to raise",
        "lease 3 group 0 completion 2: score raised KeyError",
        "nonfinite: lease 4 group 0 completion 0: reward nan",
        "nonfinite: lease 5 group 0 completion 0: reward -inf",
        "reward 11 is outside the valid range [-10000, 10] (--reward-min, --reward-max)",
        "lease 7 group 0 completion 0: score returned str, expected a number",
        "component 'x' = nan",
        "lease 9 group 0: meta_json is a list, expected an object",
        "rejected frame: oversized",
        "rejected SampledGroup: bad_tokens",
    };
    for (size_t i = 0; i < sizeof logged / sizeof logged[0]; i++)
        EXPECT(proc_output_has(py, logged[i]), "the probe server did not log '%s'", logged[i]);
    testcl_end(c, py);
    EXPECT(proc_output_has(py, "shut down"), "the probe server did not log its shutdown");
done:
    frames_free(&f);
    wire_sock_free(&push);
    wire_sock_free(&pull);
    if (zctx) zmq_ctx_term(zctx);
}

/* ---- bpe: a GGUF's tokenizer, decoded as rlhf-reward decodes it ---- */

#define BPE_T 12 /* tokens of a completion */

/* 3 control tokens, GPT-2's 256 byte tokens (ids 3..258), then "ab" (a
 * merge), "<tool>" (user-defined: its own text) and "€x" (outside the byte
 * alphabet: its UTF-8 bytes), and a ChatML template, so <|im_end|> (id 2)
 * ends a completion. */
enum { BPE_IM_START = 1, BPE_IM_END = 2, BPE_BYTE0 = 3, BPE_AB = 259, BPE_TOOL, BPE_EURO };

static int bpe_write_gguf(const char *path)
{
    FixtureVocab v = {0};
    fixture_vocab_add(&v, "<|endoftext|>", BPE_TOKEN_CONTROL);
    fixture_vocab_add(&v, "<|im_start|>", BPE_TOKEN_CONTROL);
    fixture_vocab_add(&v, "<|im_end|>", BPE_TOKEN_CONTROL);
    fixture_vocab_add_bytes(&v, "");
    CHECK(fixture_vocab_add(&v, "ab", BPE_TOKEN_NORMAL) == BPE_AB);
    CHECK(fixture_vocab_add(&v, "<tool>", BPE_TOKEN_USER_DEFINED) == BPE_TOOL);
    CHECK(fixture_vocab_add(&v, "\xe2\x82\xacx", BPE_TOKEN_NORMAL) == BPE_EURO);
    GgufBuf b = {0};
    gguf_buf_put(&b, "GGUF", 4);
    gguf_buf_u32(&b, 3);
    gguf_buf_u64(&b, 0); /* tensors */
    gguf_buf_u64(&b, 8); /* metadata pairs */
    gguf_buf_kv_str(&b, "general.name", "pyreward-bpe");
    gguf_buf_kv_str(&b, "tokenizer.ggml.model", "gpt2");
    gguf_buf_kv_str(&b, "tokenizer.ggml.pre", "smollm");
    gguf_buf_kv_array(&b, "tokenizer.ggml.tokens", GGUF_VAL_STRING, (uint64_t)v.n);
    for (int i = 0; i < v.n; i++) gguf_buf_str(&b, v.tok[i]);
    gguf_buf_kv_array(&b, "tokenizer.ggml.merges", GGUF_VAL_STRING, 1);
    gguf_buf_str(&b, "a b");
    gguf_buf_kv_array(&b, "tokenizer.ggml.token_type", GGUF_VAL_INT32, (uint64_t)v.n);
    for (int i = 0; i < v.n; i++) gguf_buf_u32(&b, (uint32_t)v.type[i]);
    gguf_buf_kv_u32(&b, "tokenizer.ggml.eos_token_id", 0);
    gguf_buf_kv_str(&b, "tokenizer.chat_template",
                    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
                    "{% endfor %}");
    int rc = fixture_write_file(path, b.p, b.n);
    gguf_buf_free(&b);
    fixture_vocab_free(&v);
    return rc;
}

/* The byte tokens of s, from ids[k]; returns the new k. */
static int bpe_put_text(int32_t *ids, int k, const char *s)
{
    for (; *s; s++) ids[k++] = BPE_BYTE0 + (uint8_t)*s;
    return k;
}

static void test_bpe(Pyr *t)
{
    TestCl *c = &t->c;
    char    gguf[PATH_MAX + 32];
    testfs_path(gguf, sizeof gguf, "%s/bpe.gguf", c->tmp);
    Bpe *bpe = NULL;
    if (!EXPECT(bpe_write_gguf(gguf) == 0 && bpe_load(gguf, &bpe) == 0, "the test's GGUF")) return;
    /* The prompt as a chat model sees it; completions with every kind of
     * token, ended by <|im_end|> and followed by what must not count. */
    int32_t ptok[16], tok[TESTCL_GROUP][BPE_T];
    int     np = 0;
    ptok[np++] = BPE_IM_START;
    np = bpe_put_text(ptok, np, "user\nq\xc3\xa9?");
    ptok[np++] = BPE_IM_END;
    for (int i = 0; i < TESTCL_GROUP; i++) {
        int k = 0;
        tok[i][k++] = BPE_IM_START;
        k = bpe_put_text(tok[i], k, i % 2 ? "h\xc3\xa9" : "ok ");
        tok[i][k++] = BPE_AB;
        tok[i][k++] = BPE_TOOL;
        tok[i][k++] = BPE_EURO;
        k = bpe_put_text(tok[i], k, i == 3 ? "\n" : " ");
        tok[i][k++] = BPE_IM_END;
        while (k < BPE_T) k = bpe_put_text(tok[i], k, "z");
    }
    float                lp[TESTCL_GROUP][BPE_T];
    uint64_t             pv[TESTCL_GROUP][BPE_T] = {{0}};
    Rlhf__Completion     comp[TESTCL_GROUP], *comp_p[TESTCL_GROUP];
    Rlhf__Prompt         prompt = RLHF__PROMPT__INIT;
    Rlhf__SamplingParams sp = RLHF__SAMPLING_PARAMS__INIT;
    Rlhf__SampledGroup   g;
    for (int i = 0; i < TESTCL_GROUP; i++) {
        for (int k = 0; k < BPE_T; k++) lp[i][k] = -0.5f;
        wire_fixture_completion_init(&comp[i], tok[i], lp[i], lp[i], pv[i], BPE_T);
        comp_p[i] = &comp[i];
    }
    prompt.tokens = ptok;
    prompt.n_tokens = (size_t)np;
    prompt.answer = "ok";
    prompt.task = "arith_chat";
    sp.temperature = 1.0f;
    sp.top_p = 1.0f;
    sp.max_new_tokens = BPE_T;
    wire_fixture_sampled_init(&g, PYR_RUN, 1, &prompt, &sp, comp_p, TESTCL_GROUP);
    g.lease_id = 42;
    g.group_count = 1;

    /* What rlhf-reward --model gives its scorers. */
    char want_prompt[160], want_comp[TESTCL_GROUP][160], text[128];
    bool ok = bpe_decode(bpe, (const int *)ptok, np, 0, text, sizeof text, NULL) == 0;
    snprintf(want_prompt, sizeof want_prompt, "prompt=%s", text);
    for (int i = 0; ok && i < TESTCL_GROUP; i++) {
        ok = reward_completion_text_bpe(bpe, tok[i], BPE_T, text, sizeof text) == 0;
        snprintf(want_comp[i], sizeof want_comp[i], "completion=%s", text);
    }
    int vocab = bpe_vocab_size(bpe);
    bpe_free(&bpe);
    if (!EXPECT(ok, "rlhf-reward's decoding of the test's ids")) return;

    int port = testcl_ports(c, 2);
    if (!port) return;
    char ep_samples[64], ep_results[64];
    snprintf(ep_samples, sizeof ep_samples, "tcp://127.0.0.1:%d", port);
    snprintf(ep_results, sizeof ep_results, "tcp://127.0.0.1:%d", port + 1);
    void        *zctx = zmq_ctx_new();
    WireSockOpts so = WIRE_SOCK_DEFAULTS;
    so.linger_ms = 0;
    so.immediate = false;
    so.sndtimeo_ms = 5000;
    WireSock *pull = wire_sock_new(zctx, ZMQ_PULL, "test-results", &so);
    WireSock *push = wire_sock_new(zctx, ZMQ_PUSH, "test-samples", &so);
    Proc     *py = py_reward(t, "bpe", "score_probe", ep_samples, ep_results);
    proc_arg(py, "--model=%s", gguf);
    if (EXPECT(pull && push && !wire_bind(pull, ep_results), "the test's sockets") &&
        py_start(t, py) && EXPECT(!wire_connect(push, ep_samples), "connect to the server") &&
        EXPECT(proc_output_has(py, "the BPE of"), "the server did not say it decodes BPE")) {
        int rc = wire_send(push, &g.base, 0);
        EXPECT(rc == 0, "sending the BPE group: %s", err_str(rc));
        WireMsg            m;
        Rlhf__ScoredGroup *sg = NULL;
        WireReject         rej = {0};
        WireLimits         lim = {.vocab_size = vocab};
        rc = wire_recv_decode(pull, (int)(1000 * testcl_budget(c, 20.0)),
                              &rlhf__scored_group__descriptor, &lim, &m, (ProtobufCMessage **)&sg,
                              &rej);
        if (EXPECT(rc == 0, "the BPE group: %s (%s: %s)", err_str(rc), wire_reason_name(rej.reason),
                   rej.why) &&
            EXPECT(sg->n_scores == TESTCL_GROUP, "%zu scores", sg->n_scores)) {
            for (int i = 0; i < TESTCL_GROUP; i++) {
                const Rlhf__Score *sc = sg->scores[i];
                EXPECT(component(sc, want_prompt) && component(sc, want_comp[i]),
                       "completion %d: the function saw other texts than rlhf-reward's '%s' and "
                       "'%s' (it saw %zu components, the first '%s')",
                       i, want_prompt, want_comp[i], sc->n_components,
                       sc->n_components ? sc->components[0]->name : "");
            }
            testcl_note(c, "bpe: '%s', '%s' as rlhf-reward decodes them", want_prompt,
                        want_comp[1]);
        }
        if (sg) protobuf_c_message_free_unpacked(&sg->base, NULL);
        if (rc == 0) wire_msg_close(&m);
        testcl_end(c, py);
    }
    wire_sock_free(&push);
    wire_sock_free(&pull);
    if (zctx) zmq_ctx_term(zctx);
}

/* A warm start that answers one-digit sums about a quarter right. */
static bool warm_start(Pyr *t, char *sft, size_t cap)
{
    testfs_path(sft, cap, "%s/sft", t->c.tmp);
    Proc *s = testcl_proc(&t->c, "sft", "rlhf-sft", NULL, NULL);
    proc_arg(s, "--out=%s", sft);
    const char *args[] = {"--steps=600",       "--batch=32",     "--dim=64",
                          "--layers=2",        "--hidden=128",   "--max-digits=1",
                          "--label-noise=0.6", "--eval-every=0", "--seed=1"};
    for (size_t i = 0; i < sizeof args / sizeof args[0]; i++) proc_arg(s, "%s", args[i]);
    if (!testcl_start(&t->c, s)) return false;
    int rc = proc_wait(s, testcl_budget(&t->c, 120.0));
    return EXPECT(rc == 0 && proc_exited_ok(s), "rlhf-sft did not finish");
}

static double summary_num(TestCl *c, const char *key)
{
    json_error_t e;
    json_t      *o = json_load_file(c->summary, 0, &e);
    json_t      *v = json_object_get(o, key);
    double       x = json_is_number(v) ? json_number_value(v) : -1;
    json_decref(o);
    return x;
}

/* A cluster whose only reward server is the Python one. */
static void test_learn(Pyr *t, const char *sft)
{
    TestCl *c = &t->c;
    char    f_init[PATH_MAX + 64];
    snprintf(f_init, sizeof f_init, "--init=%s", sft);
    const int steps = 40;
    TestClRun o = {.steps = steps,
                   .batch_groups = 8,
                   .max_staleness = 2,
                   .lease_prompts = 4,
                   .eval_n = 200,
                   .extra = {f_init, "--max-digits=1", "--lr=1e-4", NULL}};
    Proc     *learner;
    if (!testcl_start_learner(c, &o, "learner", &learner)) return;
    Proc *py = py_reward(t, "reward-py", "score_flaky", c->ep_samples, c->ep_results);
    if (!py_start(t, py)) return;
    Proc *actor = testcl_actor(c, "actor", 32, false);
    if (!testcl_start(c, actor)) return;
    testcl_wait_done(c, learner, 150.0);

    TestClCounters k;
    json_t        *sum = testcl_check_summary(c, steps, &k);
    json_decref(sum);
    json_decref(testcl_check_metrics(c));
    testcl_note_counters(c, &k);
    double before = summary_num(c, "accuracy_before"), after = summary_num(c, "accuracy_after");
    double refused = summary_num(c, "rejects_results");
    testcl_note(c, "held-out accuracy %.3f -> %.3f with the Python server alone", before, after);
    EXPECT(before >= 0 && after >= before + 0.3,
           "held-out accuracy %.3f -> %.3f: the run did not learn from the Python server", before,
           after);
    EXPECT(refused == 0, "the learner refused %g groups the Python server sent", refused);
    testcl_end(c, actor);
    testcl_end(c, py);
    long long scored = -1, received = -1, n[WIRE_REJ_COUNT];
    char      reasons[256] = "";
    testcl_reward_status(py, &scored, &received, reasons, sizeof reasons);
    reasons_parse(reasons, n);
    testcl_note(c, "Python server: scored %lld of %lld groups, rejects %s; learner re-issued %lld",
                scored, received, reasons, (long long)k.reissued);
    EXPECT(scored >= k.trained && n[WIRE_REJ_BAD_VALUE] > 0 &&
               received == scored + n[WIRE_REJ_BAD_VALUE] &&
               n[WIRE_REJ_BAD_VALUE] <= k.reissued + k.in_flight,
           "Python server: scored %lld received %lld rejects '%s'; learner trained %lld "
           "re-issued %lld in flight %lld: expected every raise refused and re-issued",
           scored, received, reasons, (long long)k.trained, (long long)k.reissued,
           (long long)k.in_flight);
    EXPECT(proc_output_has(py, "score raised ValueError: fixture bug on call 4"),
           "the first raise was not logged");
}

/* The cluster with keys; refused clients on the samples socket. */
static void test_keys(Pyr *t, const char *sft)
{
    TestCl *c = &t->c;
    testfs_path(c->keys, sizeof c->keys, "%s/keys", c->tmp);
    if (!testcl_keygen(c, c->keys, NULL) || !testcl_keygen_unlisted(c, c->keys, "stranger")) return;
    fileio_remove_tree(c->ckpt);
    unlink(c->metrics);
    unlink(c->summary);
    char f_init[PATH_MAX + 64];
    snprintf(f_init, sizeof f_init, "--init=%s", sft);
    const int steps = 10;
    TestClRun o = {.steps = steps,
                   .batch_groups = 8,
                   .max_staleness = 2,
                   .lease_prompts = 4,
                   .eval_n = -1,
                   .extra = {f_init, "--max-digits=1", "--lr=1e-4", NULL}};
    Proc     *learner;
    if (!testcl_start_learner(c, &o, "learner-keys", &learner)) return;
    /* This one from a script of the user's own, through rlhf_reward.serve. */
    char python[PATH_MAX + 32], script[PATH_MAX + 32];
    testfs_path(python, sizeof python, "%s/pyenv/bin/python", c->build);
    snprintf(script, sizeof script, "%s", t->fixture);
    char *slash = strrchr(script, '/');
    snprintf(slash ? slash + 1 : script, sizeof script - (size_t)(slash ? slash + 1 - script : 0),
             "pyreward_serve.py");
    Proc *py = testcl_proc_at(c, "reward-py-keys", python, NULL);
    proc_arg(py, "%s", script);
    proc_arg(py, "%s", c->ep_samples);
    proc_arg(py, "%s", c->ep_results);
    proc_arg(py, "%s", c->keys);
    if (!py_start(t, py)) return;
    Proc *actor = testcl_actor(c, "actor-keys", 32, false);
    if (!testcl_start(c, actor)) return;

    /* A plaintext client and one with a key off the allow-list push a
     * valid group each; neither may get in. */
    void        *zctx = zmq_ctx_new();
    AuthConfig   plain = AUTH_DEFAULTS, stranger = {.keys_dir = c->keys, .key_name = "stranger"};
    Auth        *a_plain = auth_new(zctx, &plain, "actor", false);
    Auth        *a_str = auth_new(zctx, &stranger, "actor", false);
    WireSockOpts so = WIRE_SOCK_DEFAULTS;
    so.linger_ms = 0;
    so.immediate = false; /* queue until connected: refused clients never are */
    WireSock   *s_plain = wire_sock_new(zctx, ZMQ_PUSH, "test-plain", &so);
    WireSock   *s_str = wire_sock_new(zctx, ZMQ_PUSH, "test-stranger", &so);
    FramesGroup g;
    frames_group_init(&g, PYR_RUN, 1);
    if (EXPECT(a_plain && a_str && s_plain && s_str &&
                   !auth_connect(a_plain, s_plain, c->ep_samples, AUTH_REWARD) &&
                   !auth_connect(a_str, s_str, c->ep_samples, AUTH_REWARD),
               "the test's refused clients")) {
        (void)wire_send(s_plain, &g.group.base, ZMQ_DONTWAIT);
        (void)wire_send(s_str, &g.group.base, ZMQ_DONTWAIT);
    }
    double t0 = testcl_now();
    while (!(proc_output_has(py, "is not in the allow-list") &&
             proc_output_has(py, "handshake failed")) &&
           testcl_now() - t0 < 20.0 && !testcl_out_of_time(c))
        testcl_sleep_ms(50);
    EXPECT(proc_output_has(py, "is not in the allow-list"),
           "the stranger's key was not refused by name");
    EXPECT(proc_output_has(py, "handshake failed"), "the plaintext client was not refused");
    wire_sock_free(&s_plain);
    wire_sock_free(&s_str);
    auth_free(&a_plain);
    auth_free(&a_str);
    zmq_ctx_term(zctx);

    testcl_wait_done(c, learner, 120.0);
    TestClCounters k;
    json_decref(testcl_check_summary(c, steps, &k));
    EXPECT(summary_num(c, "rejects_results") == 0, "the learner refused groups with keys");
    testcl_end(c, actor);
    testcl_end(c, py);
    long long scored = -1, received = -1, n[WIRE_REJ_COUNT];
    char      reasons[256] = "";
    testcl_reward_status(py, &scored, &received, reasons, sizeof reasons);
    reasons_parse(reasons, n);
    long long other = 0;
    for (int r = 0; r < WIRE_REJ_COUNT; r++)
        if (r != WIRE_REJ_UNAUTHORIZED) other += n[r];
    testcl_note(c, "with keys: trained %lld; Python server scored %lld of %lld, rejects %s",
                (long long)k.trained, scored, received, reasons);
    EXPECT(scored >= k.trained && k.trained > 0 && received == scored &&
               n[WIRE_REJ_UNAUTHORIZED] >= 2 && other == 0,
           "with keys: scored %lld received %lld rejects '%s' (trained %lld): expected every "
           "group scored and the two clients refused as unauthorized",
           scored, received, reasons, (long long)k.trained);
    char returned[160];
    snprintf(returned, sizeof returned,
             "serve returned groups_scored=%lld groups_received=%lld refused_auth=%lld "
             "unauthorized=%lld",
             scored, received, n[WIRE_REJ_UNAUTHORIZED], n[WIRE_REJ_UNAUTHORIZED]);
    EXPECT(proc_output_has(py, returned), "serve() did not return '%s'", returned);
    c->keys[0] = '\0';
}

int pyreward_selftest(bool verbose)
{
    Pyr t = {0};
    if (!testcl_init(&t.c, "pyreward", verbose, PYR_BUDGET_S)) return testcl_finish(&t.c);
    testfs_path(t.prog, sizeof t.prog, "%s/%s", t.c.build, PYR_PROG);
    if (!EXPECT(access(t.prog, X_OK) == 0,
                "'%s' not found: deploy/install-pydeps.sh %s makes it (make test runs it)", t.prog,
                t.c.build) ||
        !EXPECT(realpath(PYR_FIXTURE, t.fixture) != NULL, "'%s' not found (run from the tree)",
                PYR_FIXTURE))
        return testcl_finish(&t.c);
    Tok *tok = tok_new(TOK_CHARSET_DEFAULT);
    t.vocab = tok ? tok_vocab_size(tok) : 0;
    tok_free(&tok);

    test_usage(&t);
    test_probe(&t);
    test_bpe(&t);
    char sft[PATH_MAX + 16];
    if (!testcl_out_of_time(&t.c) && warm_start(&t, sft, sizeof sft)) {
        test_learn(&t, sft);
        if (!testcl_out_of_time(&t.c)) test_keys(&t, sft);
    }
    return testcl_finish(&t.c);
}
