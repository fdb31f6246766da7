#include "tests/support/wire_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"

void wire_fixture_group_init(WireFixtureGroup *t)
{
    memset(t, 0, sizeof *t);
    rlhf__sampling_params__init(&t->sp);
    t->sp.temperature = 1.0f;
    t->sp.top_k = 0;
    t->sp.top_p = 1.0f;
    t->sp.max_new_tokens = 8;
    rlhf__prompt__init(&t->prompt);
    t->prompt.prompt_id = 42;
    int32_t ptoks[4] = {1, 5, 6, 7};
    memcpy(t->ptoks, ptoks, sizeof ptoks);
    t->prompt.tokens = t->ptoks;
    t->prompt.n_tokens = 4;
    t->prompt.answer = (char *)"12";
    t->prompt.task = (char *)"arith";
    for (int i = 0; i < WIRE_FIXTURE_N; i++) {
        Rlhf__Completion *c = &t->comp[i];
        rlhf__completion__init(c);
        for (int j = 0; j < WIRE_FIXTURE_T; j++) {
            t->toks[i][j] = j + 1 == WIRE_FIXTURE_T ? 2 : 3 + (i + j) % 10;
            t->lb[i][j] = -0.25f * (float)(j + 1);
            t->ls[i][j] = -0.125f * (float)(j + 1);
            t->pv[i][j] = 7;
        }
        c->tokens = t->toks[i];
        c->logp_behaviour = t->lb[i];
        c->logp_sampled = t->ls[i];
        c->policy_version = t->pv[i];
        c->n_tokens = c->n_logp_behaviour = c->n_logp_sampled = c->n_policy_version =
            WIRE_FIXTURE_T;
        c->finish = RLHF__COMPLETION__FINISH__FINISH_STOP;
        t->compp[i] = c;
    }
    rlhf__sampled_group__init(&t->g);
    t->g.version = WIRE_PROTOCOL_VERSION;
    t->g.run_id = (char *)"run-a";
    t->g.epoch = 2;
    t->g.lease_id = 9;
    t->g.actor_id = (char *)"actor-0";
    t->g.prompt = &t->prompt;
    t->g.completions = t->compp;
    t->g.n_completions = WIRE_FIXTURE_N;
    t->g.sampling = &t->sp;
    t->g.group_index = 1;
    t->g.group_count = 2;

    rlhf__reward_component__init(&t->component);
    t->component.name = (char *)"correct";
    t->component.value = 1.0f;
    t->componentp = &t->component;
    for (int i = 0; i < WIRE_FIXTURE_N; i++) {
        rlhf__score__init(&t->scores[i]);
        t->scores[i].reward = 1.0f;
        t->scores[i].components = &t->componentp;
        t->scores[i].n_components = 1;
        t->scorep[i] = &t->scores[i];
    }
    rlhf__scored_group__init(&t->scored);
    t->scored.version = WIRE_PROTOCOL_VERSION;
    t->scored.run_id = (char *)"run-a";
    t->scored.group = &t->g;
    t->scored.scores = t->scorep;
    t->scored.n_scores = WIRE_FIXTURE_N;
    t->scored.scorer_id = (char *)"arith";
}

uint8_t *wire_fixture_pack(const ProtobufCMessage *m, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *b = xmalloc(*len ? *len : 1);
    protobuf_c_message_pack(m, b);
    return b;
}

bool wire_fixture_same(const ProtobufCMessage *a, const ProtobufCMessage *b)
{
    size_t   la, lb;
    uint8_t *pa = wire_fixture_pack(a, &la), *pb = wire_fixture_pack(b, &lb);
    bool     same = la == lb && memcmp(pa, pb, la) == 0;
    free(pa);
    free(pb);
    return same;
}

int wire_fixture_pair(void *zctx, const char *endpoint, int bind_type, const char *bind_name,
                      WireSock **bound, int conn_type, const char *conn_name, WireSock **connected,
                      char *ep, size_t ep_cap)
{
    char where[256];
    *bound = wire_sock_new(zctx, bind_type, bind_name, NULL);
    *connected = wire_sock_new(zctx, conn_type, conn_name, NULL);
    int rc = !*bound || !*connected ? ERR_IO : 0;
    if (!rc) rc = wire_bind(*bound, endpoint);
    if (!rc) rc = wire_last_endpoint(*bound, where, sizeof where);
    if (!rc) rc = wire_connect(*connected, where);
    if (rc) {
        wire_sock_free(connected);
        wire_sock_free(bound);
        return rc;
    }
    if (ep) snprintf(ep, ep_cap, "%s", where);
    return 0;
}
