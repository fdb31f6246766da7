#include "tests/test_list.h"
#include "common/net/wire.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "tests/support/expect.h"
#include "tests/support/wire_fixture.h"

enum { N = WIRE_FIXTURE_N, T = WIRE_FIXTURE_T, VOCAB = WIRE_FIXTURE_VOCAB };

/* Expects a check's rc and, on failure, its reason. */
#define EXPECT_CHECK(call, want_rc, want_reason, what)                                             \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        EXPECT(rc_ == (want_rc) && (rc_ == 0 || rej.reason == (want_reason)),                      \
               "%s: rc %d reason %s (%s), expected rc %d reason %s", (what), rc_,                  \
               rc_ ? wire_reason_name(rej.reason) : "-", rc_ ? rej.why : "", (want_rc),            \
               (want_rc) ? wire_reason_name(want_reason) : "-");                                   \
    } while (0)

/* Expects a check's rc, whatever the reason. */
#define EXPECT_RC(call, want_rc, what)                                                             \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        EXPECT(rc_ == (want_rc), "%s: rc %d (%s), expected %d", (what), rc_, rc_ ? rej.why : "",   \
               (want_rc));                                                                         \
    } while (0)

/* A SampledGroup with each field broken in turn gives its reason. */
static void test_sampled_group(bool verbose)
{
    WireFixtureGroup t;
    WireLimits       lim = {.vocab_size = VOCAB, .run_id = "run-a"};
    WireReject       rej;
    struct {
        const char *name;
        int         want_rc;
        WireReason  want;
    } cases[] = {
        {"valid", 0, 0},
        {"version", ERR_UNSUPPORTED, WIRE_REJ_BAD_VERSION},
        {"run", ERR_MISMATCH, WIRE_REJ_BAD_RUN},
        {"token", ERR_RANGE, WIRE_REJ_BAD_TOKENS},
        {"negative token", ERR_RANGE, WIRE_REJ_BAD_TOKENS},
        {"prompt token", ERR_RANGE, WIRE_REJ_BAD_TOKENS},
        {"nan logp", ERR_NONFINITE, WIRE_REJ_NONFINITE},
        {"inf logp", ERR_NONFINITE, WIRE_REJ_NONFINITE},
        {"positive logp", ERR_RANGE, WIRE_REJ_BAD_VALUE},
        {"array lengths", ERR_FORMAT, WIRE_REJ_BAD_SHAPE},
        {"no completions", ERR_FORMAT, WIRE_REJ_BAD_SHAPE},
        {"too long", ERR_FORMAT, WIRE_REJ_BAD_SHAPE},
        {"finish", ERR_RANGE, WIRE_REJ_BAD_VALUE},
        {"top_p", ERR_RANGE, WIRE_REJ_BAD_VALUE},
        {"temperature nan", ERR_NONFINITE, WIRE_REJ_NONFINITE},
        {"group index", ERR_FORMAT, WIRE_REJ_BAD_SHAPE},
        {"no prompt", ERR_FORMAT, WIRE_REJ_BAD_SHAPE},
        {"meta too long", ERR_FORMAT, WIRE_REJ_BAD_SHAPE},
        {"meta at bound", 0, 0},
    };
    static char meta[WIRE_MAX_META + 2];
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        wire_fixture_group_init(&t);
        switch (k) {
        case 1:
            t.g.version = 2;
            break;
        case 2:
            t.g.run_id = (char *)"run-b";
            break;
        case 3:
            t.toks[1][2] = VOCAB;
            break;
        case 4:
            t.toks[2][0] = -1;
            break;
        case 5:
            t.ptoks[3] = 1000;
            break;
        case 6:
            t.lb[0][1] = NAN;
            break;
        case 7:
            t.ls[2][4] = -INFINITY;
            break;
        case 8:
            t.lb[1][1] = 0.01f;
            break;
        case 9:
            t.comp[1].n_logp_sampled = T - 1;
            break;
        case 10:
            t.g.n_completions = 0;
            break;
        case 11:
            t.sp.max_new_tokens = T - 1;
            break;
        case 12:
            t.comp[0].finish = RLHF__COMPLETION__FINISH__FINISH_UNSPECIFIED;
            break;
        case 13:
            t.sp.top_p = 0.0f;
            break;
        case 14:
            t.sp.temperature = NAN;
            break;
        case 15:
            t.g.group_index = 2;
            break;
        case 16:
            t.g.prompt = NULL;
            break;
        case 17: /* one byte over, then exactly at the bound */
        case 18:
            memset(meta, ' ', WIRE_MAX_META + 1);
            meta[WIRE_MAX_META + (k == 17)] = '\0';
            t.prompt.meta_json = meta;
            break;
        }
        memset(&rej, 0, sizeof rej);
        int rc = wire_check_sampled_group(&t.g, &lim, &rej);
        if (verbose)
            printf("  check %-16s rc %3d reason %-11s %s\n", cases[k].name, rc,
                   rc ? wire_reason_name(rej.reason) : "-", rc ? rej.why : "");
        EXPECT_CHECK(rc, cases[k].want_rc, cases[k].want, cases[k].name);
    }
    /* A tiny positive log-prob from rounding is allowed; a zero vocab means no vocab known. */
    wire_fixture_group_init(&t);
    t.lb[0][0] = 0.5f * WIRE_LOGP_EPS;
    t.toks[0][0] = 1000;
    EXPECT_RC(wire_check_sampled_group(&t.g, NULL, &rej), 0, "eps logp, no vocab");
}

/* ScoredGroup: one score per completion, finite values, same run. */
static void test_scored_group(void)
{
    WireFixtureGroup   t;
    WireLimits         lim = {.vocab_size = VOCAB, .run_id = "run-a"};
    WireReject         rej;
    Rlhf__ScoredGroup *sg = &t.scored;
    wire_fixture_group_init(&t);
    EXPECT_RC(wire_check_scored_group(sg, &lim, &rej), 0, "scored ok");
    sg->n_scores = N - 1;
    EXPECT_CHECK(wire_check_scored_group(sg, &lim, &rej), ERR_FORMAT, WIRE_REJ_BAD_SHAPE,
                 "scored count");
    sg->n_scores = N;
    t.scores[1].reward = INFINITY;
    EXPECT_RC(wire_check_scored_group(sg, &lim, &rej), ERR_NONFINITE, "scored inf");
    t.scores[1].reward = 0.0f;
    t.component.name = (char *)"";
    EXPECT_RC(wire_check_scored_group(sg, &lim, &rej), ERR_FORMAT, "component name");
    t.component.name = (char *)"correct";
    sg->run_id = (char *)"run-b";
    EXPECT_CHECK(wire_check_scored_group(sg, NULL, &rej), ERR_MISMATCH, WIRE_REJ_BAD_RUN,
                 "scored run differs from group");
}

static void test_leases(void)
{
    WireFixtureGroup t;
    WireReject       rej;
    wire_fixture_group_init(&t);
    Rlhf__LeaseRequest lr = RLHF__LEASE_REQUEST__INIT;
    lr.version = 1;
    lr.actor_id = (char *)"a";
    lr.max_prompts = 4;
    EXPECT_RC(wire_check_lease_request(&lr, NULL, &rej), 0, "lease request ok");
    lr.max_prompts = WIRE_MAX_PROMPTS + 1;
    EXPECT_RC(wire_check_lease_request(&lr, NULL, &rej), ERR_RANGE, "max_prompts");
    Rlhf__LeaseGrant lg = RLHF__LEASE_GRANT__INIT;
    Rlhf__Prompt    *pp = &t.prompt;
    lg.version = 1;
    lg.retry_after_ms = 100;
    EXPECT_RC(wire_check_lease_grant(&lg, NULL, &rej), 0, "empty grant ok");
    lg.prompts = &pp;
    lg.n_prompts = 1;
    lg.group_size = 4;
    EXPECT_RC(wire_check_lease_grant(&lg, NULL, &rej), ERR_FORMAT, "grant no sampling");
    lg.sampling = &t.sp;
    EXPECT_RC(wire_check_lease_grant(&lg, NULL, &rej), 0, "grant ok");
    lg.group_size = 0;
    EXPECT_RC(wire_check_lease_grant(&lg, NULL, &rej), ERR_RANGE, "grant group 0");
}

/* Chunks, announcements, and the dispatch by type. */
static void test_snapshot_messages(void)
{
    WireReject        rej;
    uint8_t           data[8] = {0};
    Rlhf__WeightChunk wc = RLHF__WEIGHT_CHUNK__INIT;
    wc.version = 1;
    wc.chunk_count = 2;
    wc.chunk_index = 1;
    wc.total_bytes = 16;
    wc.offset = 8;
    wc.data.data = data;
    wc.data.len = 8;
    EXPECT_RC(wire_check_weight_chunk(&wc, NULL, &rej), 0, "chunk ok");
    wc.offset = 12;
    EXPECT_CHECK(wire_check_weight_chunk(&wc, NULL, &rej), ERR_RANGE, WIRE_REJ_BAD_CHUNK,
                 "chunk beyond total");
    wc.offset = 8;
    wc.chunk_index = 2;
    EXPECT_RC(wire_check_weight_chunk(&wc, NULL, &rej), ERR_RANGE, "chunk index");
    wc.chunk_index = 1;
    wc.total_bytes = 18;
    EXPECT_RC(wire_check_weight_chunk(&wc, NULL, &rej), ERR_RANGE, "chunk total % 4");
    Rlhf__WeightAnnounce wa = RLHF__WEIGHT_ANNOUNCE__INIT;
    wa.version = 1;
    wa.total_bytes = WIRE_MAX_SNAPSHOT_BYTES + 4;
    EXPECT_RC(wire_check_weight_announce(&wa, NULL, &rej), ERR_RANGE, "announce size");
    Rlhf__Heartbeat hb = RLHF__HEARTBEAT__INIT;
    EXPECT_CHECK(wire_check(&hb.base, NULL, &rej), ERR_UNSUPPORTED, WIRE_REJ_BAD_VERSION,
                 "heartbeat version 0");
    WireFixtureGroup t;
    wire_fixture_group_init(&t);
    EXPECT_CHECK(wire_check(&t.sp.base, NULL, &rej), ERR_UNSUPPORTED, WIRE_REJ_UNKNOWN,
                 "no check for nested type");
}

/* wire_decode: a packed group comes back, garbage, truncated and oversized
 * frames are refused with their reasons and no message. */
static void test_decode(void)
{
    WireFixtureGroup t;
    WireLimits       lim = {.vocab_size = VOCAB, .run_id = "run-a"};
    WireReject       rej;
    wire_fixture_group_init(&t);
    size_t                            len;
    uint8_t                          *good = wire_fixture_pack(&t.g.base, &len);
    Rlhf__SampledGroup               *g = NULL;
    const ProtobufCMessageDescriptor *d = &rlhf__sampled_group__descriptor;
    EXPECT_RC(wire_decode(d, good, len, &lim, (ProtobufCMessage **)&g, &rej), 0, "decode good");
    EXPECT(g && wire_fixture_same(&g->base, &t.g.base), "decoded group differs from the sent one");
    if (g) protobuf_c_message_free_unpacked(&g->base, NULL);
    uint8_t garbage[64];
    memset(garbage, 0xff, sizeof garbage);
    EXPECT_CHECK(wire_decode(d, garbage, sizeof garbage, &lim, (ProtobufCMessage **)&g, &rej),
                 ERR_FORMAT, WIRE_REJ_GARBAGE, "decode garbage");
    EXPECT_CHECK(wire_decode(d, good, len / 2, &lim, (ProtobufCMessage **)&g, &rej), ERR_FORMAT,
                 WIRE_REJ_GARBAGE, "decode truncated");
    EXPECT_CHECK(wire_decode(d, good, WIRE_MAX_FRAME + 1, &lim, (ProtobufCMessage **)&g, &rej),
                 ERR_RANGE, WIRE_REJ_OVERSIZED, "decode oversized (length only, not read)");
    EXPECT(g == NULL, "a refused frame left a message behind");
    free(good);
}

int wire_selftest(bool verbose)
{
    test_sampled_group(verbose);
    test_scored_group();
    test_leases();
    test_snapshot_messages();
    test_decode();
    return expect_end();
}
