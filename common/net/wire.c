#include "common/net/wire.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/base/err.h"

static const WireLimits k_no_limits = {0};

static int check_version(const char *msg, uint32_t version, WireReject *rej)
{
    if (version != WIRE_PROTOCOL_VERSION)
        return wire_reject_set(rej, ERR_UNSUPPORTED, WIRE_REJ_BAD_VERSION,
                               "%s version %u, expected %d", msg, version, WIRE_PROTOCOL_VERSION);
    return 0;
}

/* A string field of at most max bytes. protobuf-c gives "" for absent
 * strings; NULL only appears in messages built by hand and counts as "". */
static int check_str(const char *msg, const char *field, const char *s, size_t max, bool required,
                     WireReject *rej)
{
    size_t n = s ? strnlen(s, max + 1) : 0;
    if (n > max)
        return wire_reject_set(rej, ERR_FORMAT, WIRE_REJ_BAD_SHAPE, "%s.%s longer than %zu bytes",
                               msg, field, max);
    if (required && n == 0)
        return wire_reject_set(rej, ERR_FORMAT, WIRE_REJ_BAD_SHAPE,
                               "%s.%s is empty, expected 1..%zu bytes", msg, field, max);
    return 0;
}

static int check_run(const char *msg, const char *run_id, const WireLimits *lim, WireReject *rej)
{
    int rc = check_str(msg, "run_id", run_id, WIRE_MAX_NAME, false, rej);
    if (rc) return rc;
    if (lim->run_id && lim->run_id[0] && strcmp(run_id ? run_id : "", lim->run_id) != 0)
        return wire_reject_set(rej, ERR_MISMATCH, WIRE_REJ_BAD_RUN, "%s.run_id '%s', expected '%s'",
                               msg, run_id ? run_id : "", lim->run_id);
    return 0;
}

/* The version and run id every top-level message opens with, in that order. */
static int check_head(const char *msg, uint32_t version, const char *run_id, const WireLimits *lim,
                      WireReject *rej)
{
    int rc = check_version(msg, version, rej);
    return rc ? rc : check_run(msg, run_id, lim, rej);
}

/* The head, then the name of the sender (actor_id, scorer_id, sender) in
 * field: at most WIRE_MAX_NAME bytes, and not empty when required. */
static int check_head_from(const char *msg, uint32_t version, const char *run_id, const char *field,
                           const char *name, bool required, const WireLimits *lim, WireReject *rej)
{
    int rc = check_head(msg, version, run_id, lim, rej);
    return rc ? rc : check_str(msg, field, name, WIRE_MAX_NAME, required, rej);
}

static int check_count(const char *msg, const char *field, size_t n, size_t lo, size_t hi,
                       WireReject *rej)
{
    if (n < lo || n > hi)
        return wire_reject_set(rej, ERR_FORMAT, WIRE_REJ_BAD_SHAPE,
                               "%s.%s has %zu entries, expected %zu..%zu", msg, field, n, lo, hi);
    return 0;
}

static int check_tokens(const char *msg, const int32_t *ids, size_t n, const WireLimits *lim,
                        WireReject *rej)
{
    int32_t vocab = lim->vocab_size > 0 ? lim->vocab_size : WIRE_MAX_VOCAB;
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= vocab)
            return wire_reject_set(rej, ERR_RANGE, WIRE_REJ_BAD_TOKENS,
                                   "%s.tokens[%zu] = %d, expected [0, %d)", msg, i, ids[i], vocab);
    return 0;
}

int wire_check_sampling(const Rlhf__SamplingParams *m, const WireLimits *lim, WireReject *rej)
{
    (void)lim;
    if (!isfinite(m->temperature) || !isfinite(m->top_p))
        return wire_reject_set(rej, ERR_NONFINITE, WIRE_REJ_NONFINITE,
                               "SamplingParams temperature %g top_p %g, expected finite",
                               m->temperature, m->top_p);
    if (m->temperature < 0.0f || m->temperature > WIRE_MAX_TEMPERATURE)
        return wire_reject_set(rej, ERR_RANGE, WIRE_REJ_BAD_VALUE,
                               "SamplingParams.temperature %g, expected [0, %g]", m->temperature,
                               WIRE_MAX_TEMPERATURE);
    if (m->top_k < 0)
        return wire_reject_set(rej, ERR_RANGE, WIRE_REJ_BAD_VALUE,
                               "SamplingParams.top_k %d, expected >= 0", m->top_k);
    if (!(m->top_p > 0.0f && m->top_p <= 1.0f))
        return wire_reject_set(rej, ERR_RANGE, WIRE_REJ_BAD_VALUE,
                               "SamplingParams.top_p %g, expected (0, 1]", m->top_p);
    if (m->max_new_tokens < 1 || m->max_new_tokens > WIRE_MAX_TOKENS)
        return wire_reject_set(rej, ERR_RANGE, WIRE_REJ_BAD_VALUE,
                               "SamplingParams.max_new_tokens %d, expected 1..%d",
                               m->max_new_tokens, WIRE_MAX_TOKENS);
    return 0;
}

int wire_check_prompt(const Rlhf__Prompt *m, const WireLimits *lim, WireReject *rej)
{
    if (!lim) lim = &k_no_limits;
    int rc;
    if ((rc = check_count("Prompt", "tokens", m->n_tokens, 1, WIRE_MAX_PROMPT_TOKENS, rej)) ||
        (rc = check_tokens("Prompt", m->tokens, m->n_tokens, lim, rej)) ||
        (rc = check_str("Prompt", "answer", m->answer, WIRE_MAX_TEXT, false, rej)) ||
        /* The task names the scorer: a prompt without one cannot be scored
         * rightly, and guessing a default would score it by the wrong rules. */
        (rc = check_str("Prompt", "task", m->task, WIRE_MAX_NAME, true, rej)) ||
        (rc = check_str("Prompt", "meta_json", m->meta_json, WIRE_MAX_META, false, rej)))
        return rc;
    return 0;
}

int wire_check_completion(const Rlhf__Completion *m, const WireLimits *lim, WireReject *rej)
{
    if (!lim) lim = &k_no_limits;
    size_t n = m->n_tokens;
    int    rc;
    if ((rc = check_count("Completion", "tokens", n, 1, WIRE_MAX_TOKENS, rej))) return rc;
    /* The learner indexes the three per-token arrays with one index. */
    if (m->n_logp_behaviour != n || m->n_logp_sampled != n || m->n_policy_version != n)
        return wire_reject_set(
            rej, ERR_FORMAT, WIRE_REJ_BAD_SHAPE,
            "Completion arrays tokens %zu, logp_behaviour %zu, logp_sampled %zu, "
            "policy_version %zu, expected equal lengths",
            n, m->n_logp_behaviour, m->n_logp_sampled, m->n_policy_version);
    if ((rc = check_tokens("Completion", m->tokens, n, lim, rej))) return rc;
    for (size_t i = 0; i < n; i++) {
        float lb = m->logp_behaviour[i], ls = m->logp_sampled[i];
        if (!isfinite(lb) || !isfinite(ls))
            return wire_reject_set(
                rej, ERR_NONFINITE, WIRE_REJ_NONFINITE,
                "Completion token %zu: logp_behaviour %g logp_sampled %g, expected finite", i, lb,
                ls);
        if (lb > WIRE_LOGP_EPS || ls > WIRE_LOGP_EPS)
            return wire_reject_set(
                rej, ERR_RANGE, WIRE_REJ_BAD_VALUE,
                "Completion token %zu: logp_behaviour %g logp_sampled %g, expected <= 0", i, lb,
                ls);
    }
    if (m->finish != RLHF__COMPLETION__FINISH__FINISH_STOP &&
        m->finish != RLHF__COMPLETION__FINISH__FINISH_LENGTH)
        return wire_reject_set(rej, ERR_RANGE, WIRE_REJ_BAD_VALUE,
                               "Completion.finish %d, expected STOP (1) or LENGTH (2)",
                               (int)m->finish);
    return 0;
}

int wire_check_sampled_group(const Rlhf__SampledGroup *m, const WireLimits *lim, WireReject *rej)
{
    if (!lim) lim = &k_no_limits;
    int rc;
    if ((rc = check_head_from("SampledGroup", m->version, m->run_id, "actor_id", m->actor_id, false,
                              lim, rej)))
        return rc;
    if (!m->prompt || !m->sampling)
        return wire_reject_set(rej, ERR_FORMAT, WIRE_REJ_BAD_SHAPE, "SampledGroup without %s",
                               !m->prompt ? "prompt" : "sampling");
    if ((rc = wire_check_prompt(m->prompt, lim, rej)) ||
        (rc = wire_check_sampling(m->sampling, lim, rej)) ||
        (rc = check_count("SampledGroup", "completions", m->n_completions, 1, WIRE_MAX_GROUP, rej)))
        return rc;
    if (m->group_count < 1 || m->group_count > WIRE_MAX_PROMPTS || m->group_index < 0 ||
        m->group_index >= m->group_count)
        return wire_reject_set(
            rej, ERR_FORMAT, WIRE_REJ_BAD_SHAPE,
            "SampledGroup group_index %d of group_count %d, expected 0 <= index < "
            "count <= %d",
            m->group_index, m->group_count, WIRE_MAX_PROMPTS);
    for (size_t i = 0; i < m->n_completions; i++) {
        const Rlhf__Completion *c = m->completions[i];
        if (!c)
            return wire_reject_set(rej, ERR_FORMAT, WIRE_REJ_BAD_SHAPE, "completion %zu is NULL",
                                   i);
        if ((rc = wire_check_completion(c, lim, rej))) {
            if (rej) {
                /* Say which completion; the nested check named the field. */
                char inner[sizeof rej->why];
                memcpy(inner, rej->why, sizeof inner);
                snprintf(rej->why, sizeof rej->why, "completion %zu: %.150s", i, inner);
            }
            return rc;
        }
        if (c->n_tokens > (size_t)m->sampling->max_new_tokens)
            return wire_reject_set(rej, ERR_FORMAT, WIRE_REJ_BAD_SHAPE,
                                   "completion %zu has %zu tokens, expected <= max_new_tokens %d",
                                   i, c->n_tokens, m->sampling->max_new_tokens);
    }
    return 0;
}

int wire_check_scored_group(const Rlhf__ScoredGroup *m, const WireLimits *lim, WireReject *rej)
{
    if (!lim) lim = &k_no_limits;
    int rc;
    if ((rc = check_head_from("ScoredGroup", m->version, m->run_id, "scorer_id", m->scorer_id,
                              false, lim, rej)))
        return rc;
    if (!m->group)
        return wire_reject_set(rej, ERR_FORMAT, WIRE_REJ_BAD_SHAPE, "ScoredGroup without group");
    if ((rc = wire_check_sampled_group(m->group, lim, rej))) return rc;
    if (strcmp(m->run_id ? m->run_id : "", m->group->run_id ? m->group->run_id : "") != 0)
        return wire_reject_set(rej, ERR_MISMATCH, WIRE_REJ_BAD_RUN,
                               "ScoredGroup.run_id '%s' differs from its group's '%s'", m->run_id,
                               m->group->run_id);
    if (m->n_scores != m->group->n_completions)
        return wire_reject_set(rej, ERR_FORMAT, WIRE_REJ_BAD_SHAPE,
                               "ScoredGroup has %zu scores for %zu completions, expected one each",
                               m->n_scores, m->group->n_completions);
    for (size_t i = 0; i < m->n_scores; i++) {
        const Rlhf__Score *s = m->scores[i];
        if (!s) return wire_reject_set(rej, ERR_FORMAT, WIRE_REJ_BAD_SHAPE, "score %zu is NULL", i);
        if (!isfinite(s->reward))
            return wire_reject_set(rej, ERR_NONFINITE, WIRE_REJ_NONFINITE, "score %zu reward %g", i,
                                   s->reward);
        if (s->n_components > WIRE_MAX_COMPONENTS)
            return wire_reject_set(rej, ERR_FORMAT, WIRE_REJ_BAD_SHAPE,
                                   "score %zu has %zu components, expected <= %d", i,
                                   s->n_components, WIRE_MAX_COMPONENTS);
        for (size_t j = 0; j < s->n_components; j++) {
            const Rlhf__RewardComponent *c = s->components[j];
            if (!c)
                return wire_reject_set(rej, ERR_FORMAT, WIRE_REJ_BAD_SHAPE, "component is NULL");
            if ((rc = check_str("RewardComponent", "name", c->name, WIRE_MAX_NAME, true, rej)))
                return rc;
            if (!isfinite(c->value))
                return wire_reject_set(rej, ERR_NONFINITE, WIRE_REJ_NONFINITE,
                                       "score %zu component '%s' = %g, expected finite", i, c->name,
                                       c->value);
        }
    }
    return 0;
}

int wire_check_lease_request(const Rlhf__LeaseRequest *m, const WireLimits *lim, WireReject *rej)
{
    if (!lim) lim = &k_no_limits;
    int rc;
    if ((rc = check_head_from("LeaseRequest", m->version, m->run_id, "actor_id", m->actor_id, true,
                              lim, rej)))
        return rc;
    if (m->max_prompts < 0 || m->max_prompts > WIRE_MAX_PROMPTS)
        return wire_reject_set(rej, ERR_RANGE, WIRE_REJ_BAD_VALUE,
                               "LeaseRequest.max_prompts %d, expected 0..%d", m->max_prompts,
                               WIRE_MAX_PROMPTS);
    return 0;
}

int wire_check_lease_grant(const Rlhf__LeaseGrant *m, const WireLimits *lim, WireReject *rej)
{
    if (!lim) lim = &k_no_limits;
    int rc;
    if ((rc = check_head("LeaseGrant", m->version, m->run_id, lim, rej)) ||
        (rc = check_count("LeaseGrant", "prompts", m->n_prompts, 0, WIRE_MAX_PROMPTS, rej)))
        return rc;
    if (m->retry_after_ms < 0)
        return wire_reject_set(rej, ERR_RANGE, WIRE_REJ_BAD_VALUE,
                               "LeaseGrant.retry_after_ms %d, expected >= 0", m->retry_after_ms);
    if (m->n_prompts == 0) return 0;
    if (m->group_size < 1 || m->group_size > WIRE_MAX_GROUP)
        return wire_reject_set(rej, ERR_RANGE, WIRE_REJ_BAD_VALUE,
                               "LeaseGrant.group_size %d, expected 1..%d", m->group_size,
                               WIRE_MAX_GROUP);
    if (!m->sampling)
        return wire_reject_set(rej, ERR_FORMAT, WIRE_REJ_BAD_SHAPE,
                               "LeaseGrant with prompts but no sampling");
    if ((rc = wire_check_sampling(m->sampling, lim, rej))) return rc;
    for (size_t i = 0; i < m->n_prompts; i++) {
        if (!m->prompts[i])
            return wire_reject_set(rej, ERR_FORMAT, WIRE_REJ_BAD_SHAPE, "prompt %zu is NULL", i);
        if ((rc = wire_check_prompt(m->prompts[i], lim, rej))) return rc;
    }
    return 0;
}

size_t wire_dtype_size(int dtype)
{
    switch (dtype) {
    case RLHF__WEIGHT_DTYPE__WEIGHT_DTYPE_F32:
        return 4;
    case RLHF__WEIGHT_DTYPE__WEIGHT_DTYPE_BF16:
        return 2;
    default:
        return 0;
    }
}

/* elem: the element size the block must be a whole number of. */
static int check_snapshot_bytes(const char *msg, uint64_t total, size_t elem, WireReject *rej)
{
    if (total % elem != 0 || total > WIRE_MAX_SNAPSHOT_BYTES)
        return wire_reject_set(rej, ERR_RANGE, WIRE_REJ_BAD_VALUE,
                               "%s.total_bytes %llu, expected a multiple of %zu up to %llu", msg,
                               (unsigned long long)total, elem,
                               (unsigned long long)WIRE_MAX_SNAPSHOT_BYTES);
    return 0;
}

int wire_check_weight_announce(const Rlhf__WeightAnnounce *m, const WireLimits *lim,
                               WireReject *rej)
{
    if (!lim) lim = &k_no_limits;
    int rc = check_head("WeightAnnounce", m->version, m->run_id, lim, rej);
    return rc ? rc : check_snapshot_bytes("WeightAnnounce", m->total_bytes, 2, rej);
}

int wire_check_snapshot_request(const Rlhf__SnapshotRequest *m, const WireLimits *lim,
                                WireReject *rej)
{
    if (!lim) lim = &k_no_limits;
    return check_head_from("SnapshotRequest", m->version, m->run_id, "actor_id", m->actor_id, true,
                           lim, rej);
}

int wire_check_weight_chunk(const Rlhf__WeightChunk *m, const WireLimits *lim, WireReject *rej)
{
    if (!lim) lim = &k_no_limits;
    int    rc;
    size_t elem = wire_dtype_size((int)m->dtype);
    if (elem == 0)
        return wire_reject_set(rej, ERR_RANGE, WIRE_REJ_BAD_VALUE,
                               "WeightChunk.dtype %d, expected 0 (f32) or 1 (bf16)", (int)m->dtype);
    if ((int)m->kind < 0 || (int)m->kind > RLHF__SNAPSHOT_KIND__SNAPSHOT_ADAPTERS)
        return wire_reject_set(rej, ERR_RANGE, WIRE_REJ_BAD_VALUE,
                               "WeightChunk.kind %d, expected 0 (full), 1 (base and adapters) or "
                               "2 (adapters)",
                               (int)m->kind);
    if ((rc = check_head("WeightChunk", m->version, m->run_id, lim, rej)) ||
        (rc = check_snapshot_bytes("WeightChunk", m->total_bytes, elem, rej)) ||
        (rc = check_str("WeightChunk", "config_json", m->config_json, WIRE_MAX_CONFIG_JSON, false,
                        rej)))
        return rc;
    if (m->total_bytes == 0)
        return wire_reject_set(rej, ERR_RANGE, WIRE_REJ_BAD_CHUNK,
                               "WeightChunk.total_bytes 0, expected > 0");
    if (m->chunk_count < 1 || m->chunk_count > WIRE_MAX_CHUNKS || m->chunk_index >= m->chunk_count)
        return wire_reject_set(
            rej, ERR_RANGE, WIRE_REJ_BAD_CHUNK,
            "WeightChunk chunk_index %u of chunk_count %u, expected index < count <= %d",
            m->chunk_index, m->chunk_count, WIRE_MAX_CHUNKS);
    if (m->data.len < 1 || m->data.len > WIRE_MAX_CHUNK_BYTES || (m->data.len && !m->data.data))
        return wire_reject_set(rej, ERR_RANGE, WIRE_REJ_BAD_CHUNK,
                               "WeightChunk %u data %zu bytes, expected 1..%zu", m->chunk_index,
                               m->data.len, WIRE_MAX_CHUNK_BYTES);
    /* Written so that it cannot overflow: total_bytes is bounded above. */
    if (m->offset > m->total_bytes || m->data.len > m->total_bytes - m->offset)
        return wire_reject_set(rej, ERR_RANGE, WIRE_REJ_BAD_CHUNK,
                               "WeightChunk %u covers [%llu, +%zu), beyond total_bytes %llu",
                               m->chunk_index, (unsigned long long)m->offset, m->data.len,
                               (unsigned long long)m->total_bytes);
    return 0;
}

int wire_check_heartbeat(const Rlhf__Heartbeat *m, const WireLimits *lim, WireReject *rej)
{
    if (!lim) lim = &k_no_limits;
    return check_head_from("Heartbeat", m->version, m->run_id, "sender", m->sender, false, lim,
                           rej);
}

int wire_check_error_reply(const Rlhf__ErrorReply *m, const WireLimits *lim, WireReject *rej)
{
    (void)lim;
    int rc = check_version("ErrorReply", m->version, rej);
    return rc ? rc : check_str("ErrorReply", "reason", m->reason, WIRE_MAX_TEXT, false, rej);
}

int wire_check(const ProtobufCMessage *m, const WireLimits *lim, WireReject *rej)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    if (d == &rlhf__sampled_group__descriptor)
        return wire_check_sampled_group((const Rlhf__SampledGroup *)m, lim, rej);
    if (d == &rlhf__scored_group__descriptor)
        return wire_check_scored_group((const Rlhf__ScoredGroup *)m, lim, rej);
    if (d == &rlhf__lease_request__descriptor)
        return wire_check_lease_request((const Rlhf__LeaseRequest *)m, lim, rej);
    if (d == &rlhf__lease_grant__descriptor)
        return wire_check_lease_grant((const Rlhf__LeaseGrant *)m, lim, rej);
    if (d == &rlhf__weight_announce__descriptor)
        return wire_check_weight_announce((const Rlhf__WeightAnnounce *)m, lim, rej);
    if (d == &rlhf__snapshot_request__descriptor)
        return wire_check_snapshot_request((const Rlhf__SnapshotRequest *)m, lim, rej);
    if (d == &rlhf__weight_chunk__descriptor)
        return wire_check_weight_chunk((const Rlhf__WeightChunk *)m, lim, rej);
    if (d == &rlhf__heartbeat__descriptor)
        return wire_check_heartbeat((const Rlhf__Heartbeat *)m, lim, rej);
    if (d == &rlhf__error_reply__descriptor)
        return wire_check_error_reply((const Rlhf__ErrorReply *)m, lim, rej);
    return wire_reject_set(rej, ERR_UNSUPPORTED, WIRE_REJ_UNKNOWN, "no check for message type %s",
                           d ? d->name : "(null)");
}

int wire_decode(const ProtobufCMessageDescriptor *desc, const void *data, size_t len,
                const WireLimits *lim, ProtobufCMessage **out, WireReject *rej)
{
    *out = NULL;
    if (len > WIRE_MAX_FRAME)
        return wire_reject_set(rej, ERR_RANGE, WIRE_REJ_OVERSIZED,
                               "%s frame of %zu bytes, expected <= %zu", desc->short_name, len,
                               WIRE_MAX_FRAME);
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, len, data);
    if (!m)
        return wire_reject_set(rej, ERR_FORMAT, WIRE_REJ_GARBAGE,
                               "%zu bytes do not unpack as %s (garbage or truncated)", len,
                               desc->short_name);
    int rc = wire_check(m, lim, rej);
    if (rc) {
        protobuf_c_message_free_unpacked(m, NULL);
        return rc;
    }
    *out = m;
    return 0;
}
