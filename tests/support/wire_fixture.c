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
        for (int j = 0; j < WIRE_FIXTURE_T; j++) {
            t->toks[i][j] = j + 1 == WIRE_FIXTURE_T ? 2 : 3 + (i + j) % 10;
            t->lb[i][j] = -0.25f * (float)(j + 1);
            t->ls[i][j] = -0.125f * (float)(j + 1);
            t->pv[i][j] = 7;
        }
        wire_fixture_completion_init(&t->comp[i], t->toks[i], t->lb[i], t->ls[i], t->pv[i],
                                     WIRE_FIXTURE_T);
        t->compp[i] = &t->comp[i];
    }
    wire_fixture_sampled_init(&t->g, "run-a", 2, &t->prompt, &t->sp, t->compp, WIRE_FIXTURE_N);
    t->g.lease_id = 9;
    t->g.actor_id = (char *)"actor-0";
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
    wire_fixture_scored_init(&t->scored, &t->g, t->scorep, WIRE_FIXTURE_N, "arith");
}

void wire_fixture_completion_init(Rlhf__Completion *c, int32_t *toks, float *lb, float *ls,
                                  uint64_t *pv, size_t n)
{
    rlhf__completion__init(c);
    c->tokens = toks;
    c->logp_behaviour = lb;
    c->logp_sampled = ls;
    c->policy_version = pv;
    c->n_tokens = c->n_logp_behaviour = c->n_logp_sampled = c->n_policy_version = n;
    c->finish = RLHF__COMPLETION__FINISH__FINISH_STOP;
}

void wire_fixture_sampled_init(Rlhf__SampledGroup *g, const char *run_id, uint64_t epoch,
                               Rlhf__Prompt *prompt, Rlhf__SamplingParams *sp,
                               Rlhf__Completion **comps, size_t n)
{
    rlhf__sampled_group__init(g);
    g->version = WIRE_PROTOCOL_VERSION;
    g->run_id = (char *)run_id;
    g->epoch = epoch;
    g->prompt = prompt;
    g->completions = comps;
    g->n_completions = n;
    g->sampling = sp;
}

void wire_fixture_scored_init(Rlhf__ScoredGroup *s, Rlhf__SampledGroup *g, Rlhf__Score **scores,
                              size_t n, const char *scorer_id)
{
    rlhf__scored_group__init(s);
    s->version = WIRE_PROTOCOL_VERSION;
    s->run_id = g->run_id;
    s->group = g;
    s->scores = scores;
    s->n_scores = n;
    s->scorer_id = (char *)scorer_id;
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
