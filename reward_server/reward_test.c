/* reward's self-test: the server in this process between a fake actor and a
 * fake learner, with good groups and one bad group per reject reason (a
 * prompt without a task among them: refused, not scored by a default); then
 * a server whose --scorer spec overrides the prompts' task and sees their
 * meta. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/progress.h"
#include "common/net/zsock.h"
#include "common/tasks/task.h"
#include "reward_server/reward.h"
#include "tests/support/expect.h"
#include "tests/test_list.h"

enum { RT_G = 4, RT_MAXT = 16 };

/* One group of RT_G completions for a task problem, built in place. */
typedef struct {
    Rlhf__SamplingParams sp;
    Rlhf__Prompt         prompt;
    int32_t              ptoks[TASK_TEXT_MAX];
    Rlhf__Completion     comp[RT_G];
    Rlhf__Completion    *compp[RT_G];
    int32_t              toks[RT_G][RT_MAXT];
    float                lp[RT_G][RT_MAXT];
    uint64_t             pv[RT_G][RT_MAXT];
    char                 answer[TASK_TEXT_MAX];
    Rlhf__SampledGroup   g;
} RtGroup;

/* Completion i of a problem: 0 the answer, 1 a wrong answer, 2 not a
 * number, 3 the answer but cut off by the length cap. */
static void rt_completion(RtGroup *t, const Tok *tok, int i)
{
    char text[TASK_TEXT_MAX + 2];
    if (i == 1)
        snprintf(text, sizeof text, "%s1", t->answer);
    else if (i == 2)
        snprintf(text, sizeof text, "x%s", t->answer);
    else
        snprintf(text, sizeof text, "%s", t->answer);
    int n = 0;
    int flags = i == 3 ? 0 : TOK_ENC_EOS;
    CHECK(tok_encode(tok, text, strlen(text), flags, (int *)t->toks[i], RT_MAXT, &n) == 0);
    Rlhf__Completion *c = &t->comp[i];
    rlhf__completion__init(c);
    for (int j = 0; j < n; j++) {
        t->lp[i][j] = -0.5f;
        t->pv[i][j] = 3;
    }
    c->tokens = t->toks[i];
    c->logp_behaviour = c->logp_sampled = t->lp[i];
    c->policy_version = t->pv[i];
    c->n_tokens = c->n_logp_behaviour = c->n_logp_sampled = c->n_policy_version = (size_t)n;
    c->finish =
        i == 3 ? RLHF__COMPLETION__FINISH__FINISH_LENGTH : RLHF__COMPLETION__FINISH__FINISH_STOP;
    t->compp[i] = c;
}

static void rt_group(RtGroup *t, const Tok *tok, int index, int count)
{
    memset(t, 0, sizeof *t);
    TaskConfig  tc = TASK_DEFAULTS;
    TaskProblem p;
    task_problem(&tc, 3, (uint64_t)index, false, &p);
    snprintf(t->answer, sizeof t->answer, "%s", p.answer);
    rlhf__sampling_params__init(&t->sp);
    t->sp.temperature = 1.0f;
    t->sp.top_p = 1.0f;
    t->sp.max_new_tokens = RT_MAXT;
    rlhf__prompt__init(&t->prompt);
    int n = 0;
    CHECK(tok_encode(tok, p.prompt, strlen(p.prompt), TOK_ENC_BOS, (int *)t->ptoks, TASK_TEXT_MAX,
                     &n) == 0);
    t->prompt.tokens = t->ptoks;
    t->prompt.n_tokens = (size_t)n;
    t->prompt.prompt_id = (uint64_t)index;
    t->prompt.answer = t->answer;
    t->prompt.task = (char *)"arith";
    for (int i = 0; i < RT_G; i++) rt_completion(t, tok, i);
    rlhf__sampled_group__init(&t->g);
    t->g.version = WIRE_PROTOCOL_VERSION;
    t->g.run_id = (char *)"run-rt";
    t->g.epoch = 1;
    t->g.lease_id = 100 + (uint64_t)index;
    t->g.actor_id = (char *)"actor-rt";
    t->g.prompt = &t->prompt;
    t->g.completions = t->compp;
    t->g.n_completions = RT_G;
    t->g.sampling = &t->sp;
    t->g.group_index = index;
    t->g.group_count = count;
}

static void *rt_run_main(void *arg)
{
    reward_run(arg, NULL);
    return NULL;
}

/* Checks one ScoredGroup against what rt_group sent. */
static void rt_check_scored(const Rlhf__ScoredGroup *sg)
{
    static const float want_correct[RT_G] = {1, 0, 0, 0}, want_format[RT_G] = {1, 1, 0, 0};
    EXPECT(!strcmp(sg->scorer_id, "arith") && !strcmp(sg->run_id, "run-rt"),
           "scorer id '%s' run id '%s', expected arith and run-rt", sg->scorer_id, sg->run_id);
    EXPECT(sg->group->lease_id == 100 + (uint64_t)sg->group->group_index &&
               sg->group->n_completions == RT_G,
           "group passed through: lease %llu index %d, %zu completions, expected lease 100 + "
           "index and %d",
           (unsigned long long)sg->group->lease_id, sg->group->group_index,
           sg->group->n_completions, RT_G);
    if (!EXPECT(sg->n_scores == RT_G, "%zu scores, expected %d", sg->n_scores, RT_G)) return;
    for (int i = 0; i < RT_G; i++) {
        const Rlhf__Score *s = sg->scores[i];
        bool               ok = s->reward == want_correct[i] && s->n_components == 2 &&
                  !strcmp(s->components[0]->name, "correct") &&
                  s->components[0]->value == want_correct[i] &&
                  !strcmp(s->components[1]->name, "format") &&
                  s->components[1]->value == want_format[i];
        EXPECT(ok,
               "completion %d: reward %g, %zu components, expected reward %g (correct %g, "
               "format %g)",
               i, (double)s->reward, s->n_components, (double)want_correct[i],
               (double)want_correct[i], (double)want_format[i]);
    }
}

/* A server with --scorer "number:1,regex:0.5": every group is scored with
 * that spec whatever its task says, and the prompt's meta (the regex) reaches
 * the scorer. A --scorer naming no scorer is refused at start. */
static void test_forced_scorer(void *zctx, WireSock *learner, const char *results_ep,
                               const Tok *tok, bool verbose)
{
    RewardConfig cfg = {.samples = "tcp://127.0.0.1:*",
                        .results = results_ep,
                        .threads = 1,
                        .id = "reward-spec",
                        .scorer = "number:1,nope"};
    fileio_capture_begin();
    Reward *r = reward_new(&cfg);
    char   *errs = fileio_capture_end(verbose);
    EXPECT(!r && strstr(errs, "--scorer") && strstr(errs, "unknown scorer 'nope'"),
           "--scorer number:1,nope: started, or logged '%s'", errs);
    free(errs);
    cfg.scorer = "number:1,regex:0.5";
    r = reward_new(&cfg);
    if (!EXPECT(r != NULL, "reward_new with --scorer %s", cfg.scorer)) return;
    pthread_t runner;
    CHECK(pthread_create(&runner, NULL, rt_run_main, r) == 0);
    WireSock *actor = wire_sock_new(zctx, ZMQ_PUSH, "actor", NULL);
    CHECK(actor && wire_connect(actor, reward_samples_endpoint(r)) == 0);
    RtGroup *t = xmalloc(sizeof *t);
    /* A problem with a non-negative answer (a '-' is not a digit for the regex). */
    for (int k = 2; k < 40; k++) {
        rt_group(t, tok, k, 40);
        if (t->answer[0] != '-') break;
    }
    t->prompt.meta_json = (char *)"{\"regex\": \"^[0-9]+$\"}";
    EXPECT(wire_send(actor, &t->g.base, 0) == 0, "send group");
    WireLimits         lim = {.vocab_size = tok_vocab_size(tok), .run_id = "run-rt"};
    WireMsg            m;
    Rlhf__ScoredGroup *sg = NULL;
    int rc = wire_recv_decode(learner, 3000, &rlhf__scored_group__descriptor, &lim, &m,
                              (ProtobufCMessage **)&sg, NULL);
    /* Completions: the answer; the answer and a 1 (another number, digits
     * only); "x" and the answer (its last number is right, not digits
     * only); the answer cut off (the number still counts). */
    static const float want[RT_G] = {1.5f, 0.5f, 1.0f, 1.5f};
    if (EXPECT(rc == 0 && sg->n_scores == RT_G, "no scored group back (%s)", err_str(rc))) {
        EXPECT(!strcmp(sg->scorer_id, "number:1,regex:0.5") &&
                   !strcmp(sg->group->prompt->meta_json, t->prompt.meta_json),
               "scorer id '%s', meta passed through '%s'", sg->scorer_id,
               sg->group->prompt->meta_json);
        for (int i = 0; i < RT_G; i++) {
            const Rlhf__Score *sc = sg->scores[i];
            EXPECT(fabsf(sc->reward - want[i]) < 1e-6f && sc->n_components == 2 &&
                       !strcmp(sc->components[0]->name, "number") &&
                       !strcmp(sc->components[1]->name, "regex"),
                   "forced spec, completion %d: reward %g, expected %g", i, (double)sc->reward,
                   (double)want[i]);
            if (verbose)
                printf("  --scorer number:1,regex:0.5: completion %d reward %.2f\n", i,
                       (double)sc->reward);
        }
        protobuf_c_message_free_unpacked(&sg->base, NULL);
        wire_msg_close(&m);
    }
    reward_stop(r);
    pthread_join(runner, NULL);
    reward_free(&r);
    wire_sock_free(&actor);
    free(t);
}

int reward_selftest(bool verbose)
{
    Tok *tok = tok_new(TOK_CHARSET_DEFAULT);

    /* Text of a completion: stop token and what follows are not part of it. */
    int32_t ids[8];
    int     n = 0;
    char    text[TOK_DECODE_MAX_BYTES(8)];
    CHECK(tok_encode(tok, "-12", 3, TOK_ENC_BOS | TOK_ENC_EOS, (int *)ids, 8, &n) == 0);
    ids[n++] = tok_id(tok, '7'); /* after EOS: ignored */
    EXPECT(reward_completion_text(tok, ids, (size_t)n, text, sizeof text) == 0 &&
               !strcmp(text, "-12"),
           "completion text");

    /* A fake learner's results socket, and the server in this process. */
    void     *zctx = zmq_ctx_new();
    WireSock *learner = wire_sock_new(zctx, ZMQ_PULL, "learner", NULL);
    char      results_ep[256];
    if (!learner || wire_bind(learner, "tcp://127.0.0.1:*") ||
        wire_last_endpoint(learner, results_ep, sizeof results_ep)) {
        wire_sock_free(&learner);
        zmq_ctx_term(zctx);
        tok_free(&tok);
        return 1;
    }
    /* Refused configs and a samples endpoint already in use fail cleanly. */
    fileio_capture_begin();
    RewardConfig bad = {
        .samples = "tcp://127.0.0.1:*", .results = results_ep, .threads = 0, .id = "r"};
    Reward *r0 = reward_new(&bad);
    bad.threads = 2;
    bad.samples = results_ep;
    Reward *r1 = reward_new(&bad);
    char   *errs = fileio_capture_end(verbose);
    EXPECT(!r0 && !r1 && strstr(errs, "threads 0") && strstr(errs, "bind"),
           "bad config and busy endpoint refused");
    free(errs);
    reward_free(&r0);
    reward_free(&r1);

    RewardConfig cfg = {.samples = "tcp://127.0.0.1:*",
                        .results = results_ep,
                        .threads = 2,
                        .id = "reward-test",
                        .format_bonus = 0.0f,
                        .status_every_s = 0.1};
    Reward      *r = reward_new(&cfg);
    if (!r) {
        wire_sock_free(&learner);
        zmq_ctx_term(zctx);
        tok_free(&tok);
        return 1;
    }
    pthread_t runner;
    CHECK(pthread_create(&runner, NULL, rt_run_main, r) == 0);
    WireSock *actor = wire_sock_new(zctx, ZMQ_PUSH, "actor", NULL);
    CHECK(actor && wire_connect(actor, reward_samples_endpoint(r)) == 0);

    /* 5 good groups, 7 bad ones, then one more good group. */
    enum { N_GOOD = 6 };
    RtGroup *t = xmalloc(sizeof *t);
    double   t0 = progress_now();
    for (int k = 0; k < N_GOOD - 1; k++) {
        rt_group(t, tok, k, N_GOOD);
        EXPECT(wire_send(actor, &t->g.base, 0) == 0, "send group");
    }
    uint8_t junk[40];
    memset(junk, 0xff, sizeof junk);
    wire_send_raw(actor, NULL, 0, junk, sizeof junk, 0); /* garbage */
    rt_group(t, tok, 0, N_GOOD);
    t->toks[1][0] = 200; /* out of the vocab */
    wire_send(actor, &t->g.base, 0);
    rt_group(t, tok, 0, N_GOOD);
    t->lp[2][1] = NAN;
    wire_send(actor, &t->g.base, 0);
    rt_group(t, tok, 0, N_GOOD);
    t->prompt.task = (char *)"nope"; /* no such scorer */
    wire_send(actor, &t->g.base, 0);
    rt_group(t, tok, 0, N_GOOD);
    t->g.version = 9;
    wire_send(actor, &t->g.base, 0);
    rt_group(t, tok, 0, N_GOOD);
    t->prompt.answer = (char *)""; /* arith cannot verify it */
    wire_send(actor, &t->g.base, 0);
    rt_group(t, tok, 0, N_GOOD);
    t->prompt.task = (char *)""; /* no task: refused, not scored by a default scorer */
    wire_send(actor, &t->g.base, 0);
    rt_group(t, tok, N_GOOD - 1, N_GOOD);
    wire_send(actor, &t->g.base, 0);

    int        got = 0, seen[N_GOOD] = {0};
    WireLimits lim = {.vocab_size = tok_vocab_size(tok), .run_id = "run-rt"};
    while (got < N_GOOD) {
        WireMsg            m;
        Rlhf__ScoredGroup *sg = NULL;
        int rc = wire_recv_decode(learner, 3000, &rlhf__scored_group__descriptor, &lim, &m,
                                  (ProtobufCMessage **)&sg, NULL);
        if (rc == ERR_TIMEOUT) break;
        if (rc) continue;
        got++;
        rt_check_scored(sg);
        int gi = sg->group->group_index;
        if (gi >= 0 && gi < N_GOOD) seen[gi]++;
        protobuf_c_message_free_unpacked(&sg->base, NULL);
        wire_msg_close(&m);
    }
    double dt = progress_now() - t0;
    for (int k = 0; k < N_GOOD; k++)
        EXPECT(seen[k] == 1, "group %d scored %d times, expected once", k, seen[k]);
    EXPECT(got == N_GOOD, "%d good groups scored, expected %d", got, N_GOOD);

    /* Rejects are counted by whichever worker saw them, and a group as
     * scored once its send returned (after the learner may have read it):
     * wait for the last of both. */
    RewardStats st;
    for (int i = 0; i < 100; i++) {
        reward_stats(r, &st);
        if (st.rejects_total >= 7 && st.groups_scored >= N_GOOD) break;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    double ts0 = progress_now();
    reward_stop(r);
    pthread_join(runner, NULL);
    double stop_s = progress_now() - ts0;
    char   line[512];
    reward_status_line(r, line, sizeof line); /* the run thread is gone: this thread's turn */
    if (verbose) printf("  reward: %d groups back in %.1f ms; %s\n", got, 1e3 * dt, line);
    EXPECT(st.groups_scored == N_GOOD && st.completions_scored == N_GOOD * RT_G &&
               st.groups_received == N_GOOD + 7 && st.groups_unsent == 0,
           "stats: scored %llu (%llu completions), received %llu, unsent %llu; "
           "expected %d (%d), %d, 0",
           (unsigned long long)st.groups_scored, (unsigned long long)st.completions_scored,
           (unsigned long long)st.groups_received, (unsigned long long)st.groups_unsent, N_GOOD,
           N_GOOD * RT_G, N_GOOD + 7);
    EXPECT(st.rejects[WIRE_REJ_GARBAGE] == 1 && st.rejects[WIRE_REJ_BAD_TOKENS] == 1 &&
               st.rejects[WIRE_REJ_NONFINITE] == 1 && st.rejects[WIRE_REJ_UNKNOWN] == 1 &&
               st.rejects[WIRE_REJ_BAD_VERSION] == 1 && st.rejects[WIRE_REJ_BAD_VALUE] == 1 &&
               st.rejects[WIRE_REJ_BAD_SHAPE] == 1 && st.rejects_total == 7,
           "rejects by reason: %llu in all (bad_shape %llu: the empty task), expected one of "
           "each of 7 reasons",
           (unsigned long long)st.rejects_total,
           (unsigned long long)st.rejects[WIRE_REJ_BAD_SHAPE]);
    EXPECT(strstr(line, "scored 6 groups (24 completions)") && strstr(line, "bad_tokens=1"),
           "status line '%s', expected 'scored 6 groups (24 completions)' and "
           "'bad_tokens=1'",
           line);

    ts0 = progress_now();
    reward_free(&r);
    stop_s += progress_now() - ts0;
    EXPECT(stop_s < 2.0, "shutdown took %.3f s, expected < 2 s", stop_s);
    if (verbose) printf("  reward: stopped in %.0f ms\n", 1e3 * stop_s);
    free(t);
    wire_sock_free(&actor);
    test_forced_scorer(zctx, learner, results_ep, tok, verbose);
    wire_sock_free(&learner);
    zmq_ctx_term(zctx);
    tok_free(&tok);
    return expect_end();
}
