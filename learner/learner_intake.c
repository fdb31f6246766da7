#include "learner/learner_intake.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "learner/algo/advantage.h"
#include "learner/learner_task.h"

/* Refuses a group that does not fit this learner's lease terms. */
static void reject_group(Learner *l, WireReason reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void reject_group(Learner *l, WireReason reason, const char *fmt, ...)
{
    WireReject rej = {.reason = reason};
    va_list    ap;
    va_start(ap, fmt);
    vsnprintf(rej.why, sizeof rej.why, fmt, ap);
    va_end(ap);
    wire_reject_note(wire_sock_rejects(l->s_results), "learner", "scored group", &rej);
}

/* Checks what wire validation cannot know: the lease's terms and the
 * learner's reward range. Returns the group's oldest token version, or -1
 * after counting a rejection. */
static int64_t check_group(Learner *l, const Rlhf__ScoredGroup *sg)
{
    const Rlhf__SampledGroup   *g = sg->group;
    const Rlhf__SamplingParams *s = g->sampling;
    if ((int)g->n_completions != l->cfg.group_size) {
        reject_group(l, WIRE_REJ_BAD_SHAPE, "%zu completions, the lease asked for %d",
                     g->n_completions, l->cfg.group_size);
        return -1;
    }
    if (s->temperature != l->cfg.algo.temperature || s->top_k != 0 || s->top_p != 1.0f ||
        s->max_new_tokens != l->cfg.max_new_tokens) {
        reject_group(l, WIRE_REJ_BAD_VALUE,
                     "sampling T=%g top_k=%d top_p=%g max_new=%d differs from the lease's "
                     "T=%g top_k=0 top_p=1 max_new=%d",
                     (double)s->temperature, s->top_k, (double)s->top_p, s->max_new_tokens,
                     (double)l->cfg.algo.temperature, l->cfg.max_new_tokens);
        return -1;
    }
    /* Wire validation saw finite rewards; a finite one can still be large
     * enough to overflow the update's float arithmetic (advantages, value
     * losses), so the learner keeps to its configured range. The slot stays
     * in flight and is re-issued at its deadline. */
    for (size_t c = 0; c < sg->n_scores; c++) {
        float r = sg->scores[c]->reward;
        if (!(r >= l->cfg.reward_min && r <= l->cfg.reward_max)) {
            reject_group(l, WIRE_REJ_BAD_VALUE,
                         "completion %zu: reward %g is outside the valid range [%g, %g] "
                         "(--reward-min, --reward-max)",
                         c, (double)r, (double)l->cfg.reward_min, (double)l->cfg.reward_max);
            return -1;
        }
    }
    int ids[LEARNER_PROMPT_IDS_MAX];
    int n = learner_task_prompt(l, g->prompt->prompt_id, ids, NULL);
    if ((int)g->prompt->n_tokens != n || memcmp(ids, g->prompt->tokens, sizeof(int) * (size_t)n)) {
        reject_group(l, WIRE_REJ_BAD_VALUE, "prompt tokens differ from prompt %" PRIu64 "'s",
                     g->prompt->prompt_id);
        return -1;
    }
    int     max_seq = model_config(l->policy)->max_seq_len;
    int64_t oldest = INT64_MAX;
    for (size_t c = 0; c < g->n_completions; c++) {
        const Rlhf__Completion *cp = g->completions[c];
        if (n + (int)cp->n_tokens > max_seq + 1) {
            reject_group(l, WIRE_REJ_BAD_SHAPE, "completion %zu: %d + %zu tokens exceed %d", c, n,
                         cp->n_tokens, max_seq + 1);
            return -1;
        }
        for (size_t t = 0; t < cp->n_tokens; t++) {
            uint64_t v = cp->policy_version[t];
            if (v > (uint64_t)l->version) {
                reject_group(l, WIRE_REJ_BAD_VALUE,
                             "completion %zu token %zu: version %" PRIu64
                             " is newer than the learner's %" PRId64,
                             c, t, v, l->version);
                return -1;
            }
            if ((int64_t)v < oldest) oldest = (int64_t)v;
        }
    }
    return oldest;
}

/* DAPO's dynamic sampling: true if the group's rewards, after the overlong
 * penalty the update will add, are all equal, so it carries no signal. */
static bool group_is_flat(const Learner *l, const Rlhf__ScoredGroup *sg)
{
    const AlgoConfig *a = &l->cfg.algo;
    float             r[WIRE_MAX_GROUP];
    size_t            G = sg->group->n_completions;
    /* Wire validation bounded G and matched the scores to it: not peer data now. */
    CHECK(G >= 1 && G <= WIRE_MAX_GROUP && sg->n_scores == G);
    for (size_t c = 0; c < G; c++)
        r[c] = sg->scores[c]->reward +
               adv_overlong_penalty((int)sg->group->completions[c]->n_tokens, l->cfg.max_new_tokens,
                                    a->overlong_buffer, a->overlong_coef);
    return adv_group_is_flat(r, (int)G);
}

void learner_intake_group(Learner *l, const WireMsg *m, ProtobufCMessage **msg)
{
    Rlhf__ScoredGroup        *sg = (Rlhf__ScoredGroup *)*msg;
    const Rlhf__SampledGroup *g = sg->group;
    if (g->epoch != l->epoch) {
        /* Leased by an earlier incarnation: its lease is gone. */
        l->dup_epoch++;
        log_debug("results: group of epoch %" PRIu64 " (now %" PRIu64 ") discarded", g->epoch,
                  l->epoch);
        return;
    }
    int64_t oldest = check_group(l, sg);
    if (oldest < 0) return;
    LeaseArrival a = lease_arrive(l->leases, g->lease_id, g->group_index, g->group_count,
                                  g->prompt->prompt_id, oldest, l->version);
    switch (a) {
    case LEASE_ACCEPTED:
        if (l->cfg.algo.dynamic_sampling && group_is_flat(l, sg)) {
            /* No signal: settled now (as trained: the update would have
             * given it zero advantage), which frees its place under the
             * staleness bound, so another prompt is leased instead. */
            lease_settle(l->leases, g->lease_id, g->group_index, LEASE_OUT_TRAINED);
            l->groups_flat++;
            log_debug("results: group of lease %" PRIx64 " slot %d dropped: all rewards equal",
                      g->lease_id, g->group_index);
            return;
        }
        if (l->n_pend == l->cap_pend) {
            l->cap_pend = l->cap_pend ? 2 * l->cap_pend : 32;
            l->pend = xrealloc(l->pend, sizeof(LearnerPending) * (size_t)l->cap_pend);
        }
        l->pend[l->n_pend++] =
            (LearnerPending){sg, g->lease_id, g->group_index, g->prompt->prompt_id, oldest};
        *msg = NULL; /* kept until its batch is settled */
        return;
    case LEASE_MISMATCH:
        reject_group(l, WIRE_REJ_BAD_VALUE,
                     "lease %" PRIx64 " slot %d/%d does not hold prompt %" PRIu64, g->lease_id,
                     g->group_index, g->group_count, g->prompt->prompt_id);
        return;
    case LEASE_STALE:
        log_debug("results: group of lease %" PRIx64 " dropped: version %" PRId64 " at %" PRId64,
                  g->lease_id, oldest, l->version);
        return;
    case LEASE_DUPLICATE:
        log_debug("results: duplicate group of lease %" PRIx64 " slot %d discarded", g->lease_id,
                  g->group_index);
        return;
    }
}

/* Removes pend[i] (keeping arrival order). */
static void pend_remove(Learner *l, int i)
{
    memmove(l->pend + i, l->pend + i + 1, sizeof(LearnerPending) * (size_t)(l->n_pend - i - 1));
    l->n_pend--;
}

void learner_intake_drop_stale(Learner *l)
{
    for (int i = 0; i < l->n_pend;) {
        LearnerPending *p = &l->pend[i];
        if (!lease_is_stale(l->leases, p->oldest, l->version)) {
            i++;
            continue;
        }
        lease_settle(l->leases, p->lease_id, p->group_index, LEASE_OUT_STALE);
        protobuf_c_message_free_unpacked(&p->msg->base, NULL);
        pend_remove(l, i);
    }
}

static void add_components(LearnerBatchInfo *bi, const Rlhf__Score *sc)
{
    for (size_t i = 0; i < sc->n_components; i++) {
        const Rlhf__RewardComponent *rc = sc->components[i];
        if (!rc->name || !isfinite(rc->value)) continue;
        int k = 0;
        while (k < bi->n_comp && strncmp(bi->comp_name[k], rc->name, sizeof bi->comp_name[k] - 1))
            k++;
        if (k == bi->n_comp) {
            if (k == LEARNER_COMPONENTS_MAX) continue;
            snprintf(bi->comp_name[k], sizeof bi->comp_name[k], "%s", rc->name);
            bi->n_comp++;
        }
        bi->comp_sum[k] += rc->value;
        bi->comp_n[k]++;
    }
}

int learner_intake_build_batch(Learner *l, int ng, LearnerBatchInfo *bi)
{
    int G = l->cfg.group_size;
    int n = ng * G;
    if (n > l->cap_traj) {
        l->cap_traj = n;
        l->traj = xrealloc(l->traj, sizeof(AlgoTrajectory) * (size_t)n);
    }
    if (ng > l->cap_groups) {
        l->cap_groups = ng;
        l->prompt_tok = xrealloc(l->prompt_tok, sizeof(int) * (size_t)ng * LEARNER_PROMPT_IDS_MAX);
    }
    size_t ntok = 0;
    for (int gi = 0; gi < ng; gi++) {
        const Rlhf__SampledGroup *g = l->pend[gi].msg->group;
        for (size_t c = 0; c < g->n_completions; c++) ntok += g->completions[c]->n_tokens;
    }
    if (ntok > l->cap_versions) {
        l->cap_versions = ntok;
        l->tok_version = xrealloc(l->tok_version, sizeof(int64_t) * ntok);
    }
    memset(bi, 0, sizeof *bi);
    size_t off = 0;
    int    k = 0;
    for (int gi = 0; gi < ng; gi++) {
        const Rlhf__ScoredGroup  *sg = l->pend[gi].msg;
        const Rlhf__SampledGroup *g = sg->group;
        int                      *pt = l->prompt_tok + (size_t)gi * LEARNER_PROMPT_IDS_MAX;
        char                      answer[LEARNER_ANSWER_MAX];
        int                       plen = learner_task_prompt(l, l->pend[gi].prompt_id, pt, answer);
        for (size_t c = 0; c < g->n_completions; c++, k++) {
            const Rlhf__Completion *cp = g->completions[c];
            int64_t                *ver = l->tok_version + off;
            for (size_t t = 0; t < cp->n_tokens; t++) {
                ver[t] = (int64_t)cp->policy_version[t];
                int64_t st = l->version - ver[t];
                bi->stale_sum += (double)st;
                if (st > bi->stale_max) bi->stale_max = st;
            }
            off += cp->n_tokens;
            float r = sg->scores[c]->reward;
            l->traj[k] = (AlgoTrajectory){.prompt = pt,
                                          .prompt_len = plen,
                                          .completion = (const int *)cp->tokens,
                                          .completion_len = (int)cp->n_tokens,
                                          .logp_behaviour = cp->logp_behaviour,
                                          .version = ver,
                                          .group_id = (int64_t)gi,
                                          .reward = r,
                                          .temperature = g->sampling->temperature};
            bi->reward_sum += r;
            bi->reward_sq += (double)r * r;
            add_components(bi, sg->scores[c]);
            bi->tokens += (int64_t)cp->n_tokens;
            /* Task accuracy from the learner's own check: the answer, then the stop token. */
            bi->n_correct += learner_task_is_correct(l, l->pend[gi].prompt_id, cp, sg->scores[c]);
        }
    }
    bi->n_samples = k;
    return k;
}

void learner_intake_settle(Learner *l, int ng, LeaseOutcome out)
{
    for (int i = 0; i < ng; i++) {
        lease_settle(l->leases, l->pend[i].lease_id, l->pend[i].group_index, out);
        protobuf_c_message_free_unpacked(&l->pend[i].msg->base, NULL);
    }
    memmove(l->pend, l->pend + ng, sizeof(LearnerPending) * (size_t)(l->n_pend - ng));
    l->n_pend -= ng;
}

void learner_intake_free(Learner *l)
{
    for (int i = 0; i < l->n_pend; i++)
        protobuf_c_message_free_unpacked(&l->pend[i].msg->base, NULL);
    free(l->pend);
    l->pend = NULL;
    l->n_pend = l->cap_pend = 0;
}
