/* rm_scorer's self-test: a small random reward model saved to a temp
 * directory and served. Every served reward equals model_forward's value at
 * the last id of prompt ++ completion (cut after its stop token), one
 * sequence at a time; a group scored in one pass equals its completions
 * scored alone and in passes bounded by max_tokens; threads sharing two
 * streams get the same rewards; hostile groups (too long, ids outside the
 * model's vocabulary, no ids) are refused naming the completion and
 * counted; models that are not reward models or read other ids are refused
 * at load, and the transformers layout loads. Then the reward server itself
 * with --reward-model and --scorer rm:1,arith:0.5: each term in the
 * components, the sum, a refused group counted and the next one served. */
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/log.h"
#include "common/formats/bpe.h"
#include "common/formats/ckpt.h"
#include "common/net/zsock.h"
#include "reward_server/reward.h"
#include "reward_server/rm_scorer.h"
#include "tests/support/expect.h"
#include "tests/support/fixtures.h"
#include "tests/support/testfs.h"
#include "tests/test_list.h"

enum { RS_CTX = 40, RS_G = 5, RS_W = 40 };

/* A group of completions as text (a trailing '$' is the stop token, a '#'
 * an id past the vocabulary), held in arrays a ScorerGroup points into. */
typedef struct {
    int32_t        prompt[16];
    size_t         n_prompt;
    int32_t        ids[RS_G][RS_W];
    const int32_t *ptrs[RS_G];
    size_t         n[RS_G];
    bool           cut[RS_G];
    ScorerGroup    g;
} RsGroup;

static void rs_group(RsGroup *t, const Tok *tok, const char *prompt, const char *const *comps,
                     int n)
{
    memset(t, 0, sizeof *t);
    int k = 0;
    CHECK(tok_encode(tok, prompt, strlen(prompt), TOK_ENC_BOS, (int *)t->prompt, 16, &k) == 0);
    t->n_prompt = (size_t)k;
    for (int i = 0; i < n; i++) {
        size_t len = strlen(comps[i]);
        CHECK(len <= RS_W);
        for (size_t j = 0; j < len; j++)
            t->ids[i][j] = comps[i][j] == '$'   ? TOK_EOS
                           : comps[i][j] == '#' ? tok_vocab_size(tok)
                                                : tok_id(tok, comps[i][j]);
        t->n[i] = len;
        t->cut[i] = !strchr(comps[i], '$');
        t->ptrs[i] = t->ids[i];
    }
    t->g = (ScorerGroup){.prompt = t->prompt,
                         .n_prompt = t->n_prompt,
                         .n = n,
                         .completions = t->ptrs,
                         .n_tokens = t->n,
                         .is_truncated = t->cut,
                         .stop_id = TOK_EOS};
}

/* model_forward's value at the last id of prompt ++ completion i, kept up
 * to its first stop id. */
static float rs_direct(Model *m, const RsGroup *t, int i)
{
    int ids[16 + RS_W], tg[16 + RS_W] = {0}, T = (int)t->n_prompt;
    for (size_t k = 0; k < t->n_prompt; k++) ids[k] = t->prompt[k];
    for (size_t k = 0; k < t->n[i]; k++) {
        ids[T++] = t->ids[i][k];
        if (t->ids[i][k] == TOK_EOS) break;
    }
    float mask[16 + RS_W] = {0}, value[16 + RS_W];
    model_forward(m, ids, tg, mask, 1, T, NULL, NULL, value);
    return value[T - 1];
}

static double rs_rel(double a, double b)
{
    return fabs(a - b) / fmax(fabs(b), 1.0);
}

static RmScorer *rs_open(const char *dir, const Tok *tok, int max_tokens, int streams)
{
    RmScorerConfig c = {.dir = dir, .max_tokens = max_tokens, .streams = streams, .tok = tok};
    return rm_scorer_new(&c);
}

/* The reward model of the test: random weights, the head's bias 0.25. */
static Model *rs_model(const Tok *tok, bool with_head)
{
    ModelConfig c = fixture_model_config(32, 2, 4, 2, 48, tok_vocab_size(tok), RS_CTX);
    c.has_value_head = with_head;
    Model *m = model_new(&c);
    model_init_random(m, 17, 0.3f);
    ModelTensor b;
    if (with_head && model_find_tensor(m, "score.bias", &b) == 0) b.data[0] = 0.25f;
    return m;
}

static const char *const k_comps[RS_G] = {
    "12$",                   /* a short answer */
    "7$99",                  /* ids after the stop token: not read */
    "123456",                /* cut off by the length cap: no stop token */
    "$",                     /* stopped at once: empty, scored and counted */
    "1+2+3+4+5+6+7+8+9+10$", /* long */
};

/* Served vs direct, together vs alone vs bounded passes. */
static void test_equal(Model *m, const char *dir, const Tok *tok, bool verbose)
{
    RmScorer *s = rs_open(dir, tok, RM_DEFAULT_MAX_TOKENS, 1);
    RmScorer *small = rs_open(dir, tok, 12, 1);
    if (!EXPECT(s && small, "rm_scorer_new('%s') failed", dir)) {
        rm_scorer_free(&s);
        rm_scorer_free(&small);
        return;
    }
    RsGroup *t = xmalloc(sizeof *t), *one = xmalloc(sizeof *one);
    rs_group(t, tok, "12+34=", k_comps, RS_G);
    ScorerResult out[RS_G] = {0}, part[RS_G] = {0}, alone;
    char         why[200] = "";
    int          bad = 99;
    int          rc = rm_scorer_run(&t->g, s, out, &bad, why, sizeof why);
    EXPECT(rc == 0 && bad == -1, "rm_scorer_run: rc %d bad %d '%s'", rc, bad, why);
    rc = rm_scorer_run(&t->g, small, part, &bad, why, sizeof why);
    EXPECT(rc == 0, "rm_scorer_run with 12 ids a pass: rc %d '%s'", rc, why);
    double d_direct = 0, d_alone = 0, d_part = 0;
    for (int i = 0; i < RS_G; i++) {
        float want = rs_direct(m, t, i);
        d_direct = fmax(d_direct, rs_rel(out[i].reward, want));
        d_part = fmax(d_part, rs_rel(part[i].reward, out[i].reward));
        rs_group(one, tok, "12+34=", &k_comps[i], 1);
        memset(&alone, 0, sizeof alone);
        CHECK(rm_scorer_run(&one->g, s, &alone, &bad, why, sizeof why) == 0);
        d_alone = fmax(d_alone, rs_rel(alone.reward, out[i].reward));
        EXPECT(out[i].n_components == 1 && !strcmp(out[i].components[0].name, "rm") &&
                   out[i].components[0].value == out[i].reward,
               "completion %d: %d components, first '%s' %g (reward %g), expected rm = reward", i,
               out[i].n_components, out[i].components[0].name, (double)out[i].components[0].value,
               (double)out[i].reward);
        if (verbose)
            printf("  '%s': served %+.6f, model_forward %+.6f\n", k_comps[i], (double)out[i].reward,
                   (double)want);
    }
    if (verbose)
        printf("  served vs model_forward at the last id: max rel diff %.2e (tol 1e-5); alone "
               "%.2e, in passes of 12 ids %.2e (tol 1e-5)\n",
               d_direct, d_alone, d_part);
    EXPECT(d_direct <= 1e-5, "served rewards vs model_forward: rel diff %.3g > 1e-5", d_direct);
    EXPECT(d_alone <= 1e-5, "a group vs its completions alone: rel diff %.3g > 1e-5", d_alone);
    EXPECT(d_part <= 1e-5, "one pass vs passes of 12 ids: rel diff %.3g > 1e-5", d_part);
    /* The model in memory, borrowed: the saved one's rewards exactly. */
    RmScorerConfig bc = {.max_tokens = RM_DEFAULT_MAX_TOKENS, .streams = 1};
    RmScorer      *borrowed = rm_scorer_borrow(m, &bc);
    ScorerResult   mem[RS_G] = {0};
    rc = rm_scorer_run(&t->g, borrowed, mem, &bad, why, sizeof why);
    bool same = rc == 0;
    for (int i = 0; i < RS_G; i++) same &= mem[i].reward == out[i].reward;
    EXPECT(same, "rm_scorer_borrow: rc %d, rewards differ from the saved model's", rc);
    rm_scorer_free(&borrowed);
    RmStats st, st_small;
    rm_scorer_stats(s, &st);
    rm_scorer_stats(small, &st_small);
    /* The prompt (7 ids: BOS and 6) once, then 3 + 2 + 6 + 1 + 21 ids. */
    EXPECT(st.groups == 1 + RS_G && st.completions == 2 * RS_G && st.empty == 2 &&
               st.passes == 1 + RS_G && st.rows == (7 + 33) + (5 * 7 + 33) && st.seconds > 0,
           "stats: %llu groups, %llu completions, %llu empty, %llu passes, %llu rows",
           (unsigned long long)st.groups, (unsigned long long)st.completions,
           (unsigned long long)st.empty, (unsigned long long)st.passes,
           (unsigned long long)st.rows);
    EXPECT(st_small.passes == 4,
           "%llu passes of at most 12 ids, expected 4 ({12$, 7$}, {123456}, "
           "{$}, {long})",
           (unsigned long long)st_small.passes);
    /* Short completions and a long one: the rows fit one pass of 40, but
     * a cache of 5 x (7 + 15) positions would pass 2 x 40, so the long one
     * goes alone. */
    RmScorer          *k40 = rs_open(dir, tok, 40, 1);
    static const char *mixed[RS_G] = {"$", "1$", "$", "2$", "12345678901234$"};
    rs_group(t, tok, "12+34=", mixed, RS_G);
    rc = rm_scorer_run(&t->g, k40, out, &bad, why, sizeof why);
    double d_mixed = 0;
    for (int i = 0; i < RS_G && rc == 0; i++)
        d_mixed = fmax(d_mixed, rs_rel(out[i].reward, rs_direct(m, t, i)));
    RmStats st40;
    rm_scorer_stats(k40, &st40);
    EXPECT(rc == 0 && st40.passes == 2 && d_mixed <= 1e-5,
           "mixed lengths under 40 ids a pass: rc %d, %llu passes (expected 2), rel diff %.3g", rc,
           (unsigned long long)st40.passes, d_mixed);
    rm_scorer_free(&k40);
    free(t);
    free(one);
    rm_scorer_free(&small);
    rm_scorer_free(&s);
}

/* Hostile groups: refused with the completion named, counted by reason. */
static void test_hostile(const char *dir, const Tok *tok, bool verbose)
{
    RmScorer *s = rs_open(dir, tok, RM_DEFAULT_MAX_TOKENS, 1);
    if (!EXPECT(s != NULL, "%s", "rm_scorer_new")) return;
    char long_c[RS_W + 1];
    memset(long_c, '5', 34);
    long_c[34] = '\0';
    struct {
        const char *comps[2];
        int         n_empty; /* make completion 1 hold no ids */
        bool        bad_prompt;
        int         want_bad;
        const char *want;
    } cases[] = {
        {{"12$", long_c}, 0, false, 1, "completion 1: prompt 7 + completion 34 ids"},
        {{"1#2$", "12$"}, 0, false, 0, "completion 0 id 1 is"},
        {{"12$", "3$"}, 1, false, 1, "completion 1 has no ids"},
        {{"12$", "3$"}, 0, true, -1, "prompt id 2 is -4"},
    };
    RsGroup *t = xmalloc(sizeof *t);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        rs_group(t, tok, "12+34=", cases[k].comps, 2);
        if (cases[k].n_empty) t->n[1] = 0;
        if (cases[k].bad_prompt) t->prompt[2] = -4;
        ScorerResult out[2] = {0};
        char         why[200] = "";
        int          bad = 99, rc = rm_scorer_run(&t->g, s, out, &bad, why, sizeof why);
        if (verbose) printf("  hostile %zu: rc %d, completion %d: %s\n", k, rc, bad, why);
        EXPECT(rc == ERR_RANGE && bad == cases[k].want_bad && strstr(why, cases[k].want),
               "hostile case %zu: rc %d bad %d '%s', expected ERR_RANGE, %d, '%s'", k, rc, bad, why,
               cases[k].want_bad, cases[k].want);
    }
    RmStats st;
    rm_scorer_stats(s, &st);
    EXPECT(st.refused[RM_REFUSED_TOO_LONG] == 1 && st.refused[RM_REFUSED_BAD_TOKEN] == 2 &&
               st.refused[RM_REFUSED_EMPTY] == 1 && st.completions == 0 && st.passes == 0,
           "refusals counted: too_long %llu bad_token %llu empty %llu, %llu passes",
           (unsigned long long)st.refused[RM_REFUSED_TOO_LONG],
           (unsigned long long)st.refused[RM_REFUSED_BAD_TOKEN],
           (unsigned long long)st.refused[RM_REFUSED_EMPTY], (unsigned long long)st.passes);
    free(t);
    rm_scorer_free(&s);
}

/* Threads sharing two streams score alike. */
typedef struct {
    RmScorer  *s;
    const Tok *tok;
    float      want[RS_G];
    int        rounds;
    double     worst;
    int        failures;
    pthread_t  th;
} RsThread;

static void *rs_thread(void *arg)
{
    RsThread *a = arg;
    RsGroup  *t = xmalloc(sizeof *t);
    rs_group(t, a->tok, "12+34=", k_comps, RS_G);
    for (int r = 0; r < a->rounds; r++) {
        ScorerResult out[RS_G] = {0};
        char         why[200];
        int          bad;
        if (rm_scorer_run(&t->g, a->s, out, &bad, why, sizeof why)) {
            a->failures++;
            continue;
        }
        for (int i = 0; i < RS_G; i++) a->worst = fmax(a->worst, rs_rel(out[i].reward, a->want[i]));
    }
    free(t);
    return NULL;
}

static void test_threads(const char *dir, const Tok *tok, bool verbose)
{
    RmScorer *s = rs_open(dir, tok, RM_DEFAULT_MAX_TOKENS, 2);
    if (!EXPECT(s != NULL, "%s", "rm_scorer_new, 2 streams")) return;
    RsGroup *t = xmalloc(sizeof *t);
    rs_group(t, tok, "12+34=", k_comps, RS_G);
    ScorerResult ref[RS_G] = {0};
    char         why[200];
    int          bad;
    CHECK(rm_scorer_run(&t->g, s, ref, &bad, why, sizeof why) == 0);
    enum { N = 4 };
    RsThread a[N];
    for (int k = 0; k < N; k++) {
        a[k] = (RsThread){.s = s, .tok = tok, .rounds = 25};
        for (int i = 0; i < RS_G; i++) a[k].want[i] = ref[i].reward;
        CHECK(pthread_create(&a[k].th, NULL, rs_thread, &a[k]) == 0);
    }
    double worst = 0;
    int    failures = 0;
    for (int k = 0; k < N; k++) {
        pthread_join(a[k].th, NULL);
        worst = fmax(worst, a[k].worst);
        failures += a[k].failures;
    }
    RmStats st;
    rm_scorer_stats(s, &st);
    if (verbose)
        printf("  %d threads x 25 groups on 2 streams: max rel diff %.2e (tol 1e-5), %llu groups\n",
               N, worst, (unsigned long long)st.groups);
    EXPECT(failures == 0 && worst <= 1e-5 && st.groups == 1 + N * 25,
           "threads: %d failures, rel diff %.3g, %llu groups", failures, worst,
           (unsigned long long)st.groups);
    free(t);
    rm_scorer_free(&s);
}

/* Rewrites dir's config.json as transformers' classifier into hf (weights
 * linked), without our tokenizer keys. */
static bool rs_as_transformers(const char *dir, const char *hf)
{
    char    src[PATH_MAX + 32], dst[PATH_MAX + 32];
    json_t *o = NULL;
    testfs_path(src, sizeof src, "%s/%s", dir, CKPT_CONFIG_FILE);
    o = json_load_file(src, 0, NULL);
    if (!o || mkdir(hf, 0755)) {
        json_decref(o);
        return false;
    }
    json_object_set_new(o, "architectures", json_pack("[s]", CKPT_ARCH_CLASSIFIER));
    json_object_set_new(o, "num_labels", json_integer(1));
    const char *drop[] = {"rlhf_has_value_head", "rlhf_tokenizer", "rlhf_tokenizer_charset"};
    for (int i = 0; i < 3; i++) json_object_del(o, drop[i]);
    testfs_path(dst, sizeof dst, "%s/%s", hf, CKPT_CONFIG_FILE);
    bool ok = json_dump_file(o, dst, JSON_INDENT(2)) == 0;
    json_decref(o);
    testfs_path(src, sizeof src, "%s/%s", dir, CKPT_MODEL_FILE);
    testfs_path(dst, sizeof dst, "%s/%s", hf, CKPT_MODEL_FILE);
    return ok && link(src, dst) == 0;
}

/* Loading: not a reward model, another charset, a BPE server, and the
 * transformers layout. */
static void test_loading(const char *root, const char *dir, const Tok *tok, bool verbose)
{
    char causal[PATH_MAX], other[PATH_MAX], hf[PATH_MAX];
    testfs_path(causal, sizeof causal, "%s/causal", root);
    testfs_path(other, sizeof other, "%s/other", root);
    testfs_path(hf, sizeof hf, "%s/hf", root);
    Model *m = rs_model(tok, false);
    CHECK(ckpt_save(causal, m, tok, NULL, NULL) == 0);
    model_free(&m);
    Tok *digits = tok_new("0123456789+=");
    m = rs_model(tok, true);
    CHECK(digits && ckpt_save(other, m, digits, NULL, NULL) == 0);
    model_free(&m);
    struct {
        const char *dir, *want;
    } cases[] = {{causal, "is not a reward model: no scalar head"},
                 {other, "saved with the char tokenizer '0123456789+='"}};
    for (int k = 0; k < 2; k++) {
        fileio_capture_begin();
        RmScorer *s = rs_open(cases[k].dir, tok, 64, 1);
        char     *log = fileio_capture_end(verbose);
        EXPECT(!s && strstr(log, cases[k].want), "loading '%s': expected a refusal '%s', got '%s'",
               cases[k].dir, cases[k].want, log);
        free(log);
        rm_scorer_free(&s);
    }
    /* The reward-model trainer's layout, as transformers reads it. */
    EXPECT(rs_as_transformers(dir, hf), "%s", "writing the transformers layout");
    RmScorer *a = rs_open(dir, tok, 64, 1), *b = rs_open(hf, tok, 64, 1);
    if (EXPECT(a && b, "%s", "the transformers layout did not load as a reward model")) {
        RsGroup *t = xmalloc(sizeof *t);
        rs_group(t, tok, "1+1=", k_comps, RS_G);
        ScorerResult ra[RS_G] = {0}, rb[RS_G] = {0};
        char         why[200];
        int          bad;
        CHECK(rm_scorer_run(&t->g, a, ra, &bad, why, sizeof why) == 0);
        CHECK(rm_scorer_run(&t->g, b, rb, &bad, why, sizeof why) == 0);
        bool same = true;
        for (int i = 0; i < RS_G; i++) same &= ra[i].reward == rb[i].reward;
        EXPECT(same, "%s", "the transformers layout scores differently");
        free(t);
    }
    rm_scorer_free(&a);
    rm_scorer_free(&b);
    tok_free(&digits);
    /* A server decoding with a BPE (--model): a model saved with the char
     * tokenizer is refused; one without a tokenizer of its own loads, with
     * a warning that its vocabulary is the smaller. */
    FixtureVocab fv = {0};
    fixture_vocab_add(&fv, "<|endoftext|>", BPE_TOKEN_CONTROL);
    fixture_vocab_add(&fv, "<|im_end|>", BPE_TOKEN_CONTROL);
    fixture_vocab_add_bytes(&fv, "");
    Bpe *bpe = fixture_vocab_bpe(&fv, NULL, 0, NULL);
    fixture_vocab_free(&fv);
    CHECK(bpe);
    RmScorerConfig bc = {.dir = dir, .max_tokens = 64, .streams = 1, .bpe = bpe};
    fileio_capture_begin();
    RmScorer *x = rm_scorer_new(&bc);
    bc.dir = hf;
    RmScorer *y = rm_scorer_new(&bc);
    char     *log = fileio_capture_end(verbose);
    EXPECT(!x && strstr(log, "but the server decodes with a BPE"),
           "a char model under a BPE server: loaded, or '%s'", log);
    /* The warning shows when warnings do (verbose runs). */
    EXPECT(y && (log_level() < LOG_WARN ||
                 strstr(log, "has a vocabulary of 85 ids, the server's tokenizer 258")),
           "a model without a tokenizer under a BPE server: not loaded, or no warning: '%s'", log);
    free(log);
    rm_scorer_free(&x);
    rm_scorer_free(&y);
    bpe_free(&bpe);
}

/* The reward server hosting the model: --scorer rm:1,arith:0.5. */
typedef struct {
    Rlhf__SamplingParams sp;
    Rlhf__Prompt         prompt;
    Rlhf__Completion     comp[RS_G], *compp[RS_G];
    float                lp[RS_G][RS_W];
    uint64_t             pv[RS_G][RS_W];
    Rlhf__SampledGroup   g;
    RsGroup              ids;
} RsWire;

static void rs_wire(RsWire *w, const Tok *tok, const char *const *comps, int n, int index)
{
    memset(w, 0, sizeof *w);
    rs_group(&w->ids, tok, "12+34=", comps, n);
    rlhf__sampling_params__init(&w->sp);
    w->sp.temperature = 1.0f;
    w->sp.top_p = 1.0f;
    w->sp.max_new_tokens = RS_W;
    rlhf__prompt__init(&w->prompt);
    w->prompt.tokens = w->ids.prompt;
    w->prompt.n_tokens = w->ids.n_prompt;
    w->prompt.answer = (char *)"46";
    w->prompt.task = (char *)"arith";
    for (int i = 0; i < n; i++) {
        Rlhf__Completion *c = &w->comp[i];
        rlhf__completion__init(c);
        for (int j = 0; j < RS_W; j++) w->lp[i][j] = -0.5f, w->pv[i][j] = 1;
        c->tokens = w->ids.ids[i];
        c->logp_behaviour = c->logp_sampled = w->lp[i];
        c->policy_version = w->pv[i];
        c->n_tokens = c->n_logp_behaviour = c->n_logp_sampled = c->n_policy_version = w->ids.n[i];
        c->finish = w->ids.cut[i] ? RLHF__COMPLETION__FINISH__FINISH_LENGTH
                                  : RLHF__COMPLETION__FINISH__FINISH_STOP;
        w->compp[i] = c;
    }
    rlhf__sampled_group__init(&w->g);
    w->g.version = WIRE_PROTOCOL_VERSION;
    w->g.run_id = (char *)"run-rs";
    w->g.epoch = 1;
    w->g.lease_id = 7;
    w->g.actor_id = (char *)"actor-rs";
    w->g.prompt = &w->prompt;
    w->g.completions = w->compp;
    w->g.n_completions = (size_t)n;
    w->g.sampling = &w->sp;
    w->g.group_index = index;
    w->g.group_count = 3;
}

static void *rs_run_main(void *arg)
{
    reward_run(arg, NULL);
    return NULL;
}

static void test_server(Model *m, const char *dir, const Tok *tok, bool verbose)
{
    void     *zctx = zmq_ctx_new();
    WireSock *learner = wire_sock_new(zctx, ZMQ_PULL, "learner", NULL);
    char      results_ep[256];
    CHECK(learner && wire_bind(learner, "tcp://127.0.0.1:*") == 0 &&
          wire_last_endpoint(learner, results_ep, sizeof results_ep) == 0);
    RewardConfig cfg = {.samples = "tcp://127.0.0.1:*",
                        .results = results_ep,
                        .threads = 2,
                        .id = "reward-rm",
                        .scorer = "rm:1,arith:0.5",
                        .reward_model = "/nonexistent/rm"};
    fileio_capture_begin();
    Reward *r = reward_new(&cfg);
    char   *log = fileio_capture_end(verbose);
    EXPECT(!r && strstr(log, "/nonexistent/rm"), "--reward-model /nonexistent/rm: started, or '%s'",
           log);
    free(log);
    cfg.reward_model = NULL;
    fileio_capture_begin();
    r = reward_new(&cfg);
    log = fileio_capture_end(verbose);
    EXPECT(!r && strstr(log, "unknown scorer 'rm'"), "--scorer rm without a model: '%s'", log);
    free(log);
    cfg.reward_model = dir;
    r = reward_new(&cfg);
    if (!EXPECT(r != NULL, "reward_new --reward-model %s", dir)) goto done;
    pthread_t runner;
    CHECK(pthread_create(&runner, NULL, rs_run_main, r) == 0);
    WireSock *actor = wire_sock_new(zctx, ZMQ_PUSH, "actor", NULL);
    CHECK(actor && wire_connect(actor, reward_samples_endpoint(r)) == 0);
    static const char *const good[4] = {"46$", "45$", "4", "$"};
    static const float       correct[4] = {1, 0, 0, 0};
    char                     long_c[RS_W + 1];
    memset(long_c, '4', 34);
    long_c[34] = '\0';
    const char *hostile[2] = {"46$", long_c};
    RsWire     *w = xmalloc(sizeof *w);
    rs_wire(w, tok, hostile, 2, 1);
    EXPECT(wire_send(actor, &w->g.base, 0) == 0, "%s", "send the hostile group");
    rs_wire(w, tok, good, 4, 0);
    EXPECT(wire_send(actor, &w->g.base, 0) == 0, "%s", "send the good group");
    WireLimits         lim = {.vocab_size = tok_vocab_size(tok), .run_id = "run-rs"};
    WireMsg            msg;
    Rlhf__ScoredGroup *sg = NULL;
    int rc = wire_recv_decode(learner, 10000, &rlhf__scored_group__descriptor, &lim, &msg,
                              (ProtobufCMessage **)&sg, NULL);
    if (EXPECT(rc == 0 && sg->n_scores == 4 && sg->group->group_index == 0,
               "no scored group back (%s), or not the good one", err_str(rc))) {
        for (int i = 0; i < 4; i++) {
            const Rlhf__Score *sc = sg->scores[i];
            float              rm = rs_direct(m, &w->ids, i);
            bool ok = sc->n_components == 2 && !strcmp(sc->components[0]->name, "rm") &&
                      rs_rel(sc->components[0]->value, rm) <= 1e-5 &&
                      !strcmp(sc->components[1]->name, "arith") &&
                      sc->components[1]->value == correct[i] &&
                      fabs(sc->reward - (sc->components[0]->value + 0.5 * correct[i])) <= 1e-6;
            if (verbose)
                printf("  rm:1,arith:0.5 '%s': reward %+.6f = rm %+.6f (model_forward %+.6f) + "
                       "0.5 x arith %g\n",
                       good[i], (double)sc->reward,
                       sc->n_components ? (double)sc->components[0]->value : NAN, (double)rm,
                       (double)correct[i]);
            EXPECT(ok, "completion %d: reward %g, %zu components; expected rm %g + 0.5 x %g", i,
                   (double)sc->reward, sc->n_components, (double)rm, (double)correct[i]);
        }
        EXPECT(!strcmp(sg->scorer_id, "rm:1,arith:0.5"), "scorer id '%s'", sg->scorer_id);
        protobuf_c_message_free_unpacked(&sg->base, NULL);
        wire_msg_close(&msg);
    }
    RewardStats st;
    for (int i = 0; i < 100; i++) {
        reward_stats(r, &st);
        /* The counters move after the send and the refusal: wait for both. */
        if (st.rejects_total >= 1 && st.groups_scored >= 1) break;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    reward_stop(r);
    pthread_join(runner, NULL);
    char line[512];
    reward_status_line(r, line, sizeof line);
    if (verbose) printf("  %s\n", line);
    EXPECT(st.has_rm && st.rm.completions == 4 && st.rm.refused[RM_REFUSED_TOO_LONG] == 1 &&
               st.rejects[WIRE_REJ_BAD_VALUE] == 1 && st.groups_scored == 1,
           "server stats: rm %llu completions, too_long %llu, bad_value rejects %llu, %llu "
           "scored",
           (unsigned long long)st.rm.completions,
           (unsigned long long)st.rm.refused[RM_REFUSED_TOO_LONG],
           (unsigned long long)st.rejects[WIRE_REJ_BAD_VALUE],
           (unsigned long long)st.groups_scored);
    EXPECT(strstr(line, "rm 4 completions in "), "status line '%s' lacks the reward model", line);
    reward_free(&r);
    wire_sock_free(&actor);
    free(w);
done:
    wire_sock_free(&learner);
    zmq_ctx_term(zctx);
}

int rm_scorer_selftest(bool verbose)
{
    char root[64], dir[PATH_MAX];
    if (testfs_tmpdir_new("rm_scorer", root, sizeof root) != 0) return 1;
    testfs_path(dir, sizeof dir, "%s/rm", root);
    Tok   *tok = tok_new(TOK_CHARSET_DEFAULT);
    Model *m = rs_model(tok, true);
    CHECK(tok && ckpt_save(dir, m, tok, NULL, NULL) == 0);
    test_equal(m, dir, tok, verbose);
    test_hostile(dir, tok, verbose);
    test_threads(dir, tok, verbose);
    test_loading(root, dir, tok, verbose);
    test_server(m, dir, tok, verbose);
    model_free(&m);
    tok_free(&tok);
    EXPECT(testfs_tmpdir_remove(root) == 0, "removing %s", root);
    return expect_end();
}
