/* wire_fixture: what the common/net tests share: a valid SampledGroup (and
 * the ScoredGroup around it) built in place, packing and byte comparison of
 * messages, and a connected pair of sockets.
 *
 * Ownership. A WireFixtureGroup holds pointers into itself, so it is filled
 * in place by wire_fixture_group_init and never copied; the strings it
 * points to are literals. The wire_fixture_*_init parts borrow what they
 * are given. wire_fixture_pack returns a buffer the caller
 * frees. wire_fixture_pair's sockets belong to the caller.
 *
 * Threading. Plain data and the caller's sockets: one thread.
 *
 * Errors. wire_fixture_pair returns 0 or the failing call's ERR_* (logged
 * by common/net/zsock); the rest cannot fail (allocation aborts). */
#ifndef RLHF_WIRE_FIXTURE_H
#define RLHF_WIRE_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/net/wire.h"
#include "common/net/zsock.h"

/* Completions per group, tokens per completion, vocab size of the fixture. */
enum { WIRE_FIXTURE_N = 3, WIRE_FIXTURE_T = 5, WIRE_FIXTURE_VOCAB = 20 };

/* A valid SampledGroup `g` of WIRE_FIXTURE_N completions of WIRE_FIXTURE_T
 * tokens (run "run-a", vocab WIRE_FIXTURE_VOCAB, max_new_tokens 8), and a
 * valid ScoredGroup `scored` of it: every score has reward 1 and the one
 * component `comp` ("correct" = 1). Tests break one field to see a check
 * refuse it. */
typedef struct {
    Rlhf__SamplingParams   sp;
    Rlhf__Prompt           prompt;
    int32_t                ptoks[4];
    Rlhf__Completion       comp[WIRE_FIXTURE_N];
    Rlhf__Completion      *compp[WIRE_FIXTURE_N];
    int32_t                toks[WIRE_FIXTURE_N][WIRE_FIXTURE_T];
    float                  lb[WIRE_FIXTURE_N][WIRE_FIXTURE_T]; /* logp_behaviour */
    float                  ls[WIRE_FIXTURE_N][WIRE_FIXTURE_T]; /* logp_sampled */
    uint64_t               pv[WIRE_FIXTURE_N][WIRE_FIXTURE_T]; /* policy_version */
    Rlhf__SampledGroup     g;
    Rlhf__RewardComponent  component;
    Rlhf__RewardComponent *componentp;
    Rlhf__Score            scores[WIRE_FIXTURE_N];
    Rlhf__Score           *scorep[WIRE_FIXTURE_N];
    Rlhf__ScoredGroup      scored;
} WireFixtureGroup;

/* Fills t with the valid group and scored group described above. */
void wire_fixture_group_init(WireFixtureGroup *t);

/* The parts of a group, for a group of another shape (the cluster test's
 * G completions of the char task). Each initialises its message and points
 * it at the caller's arrays and messages (borrowed). */

/* A finished (STOP) completion of the n tokens toks, with their
 * logp_behaviour lb, logp_sampled ls and policy_version pv. */
void wire_fixture_completion_init(Rlhf__Completion *c, int32_t *toks, float *lb, float *ls,
                                  uint64_t *pv, size_t n);
/* A SampledGroup of run_id and epoch at WIRE_PROTOCOL_VERSION: the n
 * completions comps of prompt, sampled with sp. The lease, actor and
 * group_index/count are the caller's to set. */
void wire_fixture_sampled_init(Rlhf__SampledGroup *g, const char *run_id, uint64_t epoch,
                               Rlhf__Prompt *prompt, Rlhf__SamplingParams *sp,
                               Rlhf__Completion **comps, size_t n);
/* The ScoredGroup of g (of g's run) by scorer_id, with the n scores. */
void wire_fixture_scored_init(Rlhf__ScoredGroup *s, Rlhf__SampledGroup *g, Rlhf__Score **scores,
                              size_t n, const char *scorer_id);

/* Packs m into a malloc'd buffer of *len bytes (caller frees). */
uint8_t *wire_fixture_pack(const ProtobufCMessage *m, size_t *len);
/* True if a and b pack to the same bytes. */
bool wire_fixture_same(const ProtobufCMessage *a, const ProtobufCMessage *b);

/* Makes a socket of bind_type named bind_name bound to endpoint, and one of
 * conn_type named conn_name connected to it (to the actual port when
 * endpoint is "tcp://...:*"), whose endpoint goes to ep (ep_cap bytes, may
 * be NULL). Returns 0 with both set, or an ERR_* with both NULL. */
int wire_fixture_pair(void *zctx, const char *endpoint, int bind_type, const char *bind_name,
                      WireSock **bound, int conn_type, const char *conn_name, WireSock **connected,
                      char *ep, size_t ep_cap);

#endif
