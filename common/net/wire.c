#include "tests/test_list.h"
#include "common/net/wire.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xxhash.h>

#include "common/base/err.h"
#include "common/base/log.h"

/* ---- Rejections ------------------------------------------------------- */

static const char *const k_reason_names[WIRE_REJ_COUNT] = {
    "garbage",   "oversized", "bad_version", "bad_run",  "bad_shape", "bad_tokens",
    "nonfinite", "bad_value", "bad_chunk",   "checksum", "unknown",
};

/* The first WIRE_LOG_BURST rejections of a reason are logged each; after
 * that one line per WIRE_LOG_EVERY_S seconds, so a flood of bad frames
 * cannot flood the log. */
#define WIRE_LOG_BURST 5
#define WIRE_LOG_EVERY_S 5.0

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

const char *wire_reason_name(WireReason r)
{
    if ((int)r < 0 || r >= WIRE_REJ_COUNT) return "?";
    return k_reason_names[r];
}

void wire_rejects_init(WireRejects *c)
{
    for (int i = 0; i < WIRE_REJ_COUNT; i++) {
        atomic_init(&c->n[i], 0);
        c->last_log_s[i] = 0.0;
        c->suppressed[i] = 0;
    }
}

uint64_t wire_rejects_get(const WireRejects *c, WireReason r)
{
    CHECK((int)r >= 0 && r < WIRE_REJ_COUNT);
    return atomic_load_explicit(&((WireRejects *)c)->n[r], memory_order_relaxed);
}

uint64_t wire_rejects_total(const WireRejects *c)
{
    uint64_t t = 0;
    for (int i = 0; i < WIRE_REJ_COUNT; i++) t += wire_rejects_get(c, (WireReason)i);
    return t;
}

void wire_rejects_add(WireRejects *dst, const WireRejects *src)
{
    for (int i = 0; i < WIRE_REJ_COUNT; i++)
        atomic_fetch_add_explicit(&dst->n[i], wire_rejects_get(src, (WireReason)i),
                                  memory_order_relaxed);
}

void wire_rejects_format(const WireRejects *c, char *buf, size_t cap)
{
    CHECK(buf && cap > 0);
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < WIRE_REJ_COUNT; i++) {
        uint64_t n = wire_rejects_get(c, (WireReason)i);
        if (!n || used >= cap) continue;
        int w = snprintf(buf + used, cap - used, "%s%s=%llu", used ? " " : "", k_reason_names[i],
                         (unsigned long long)n);
        if (w < 0) break;
        used += (size_t)w;
    }
    if (used == 0) snprintf(buf, cap, "none");
}

void wire_reject_note(WireRejects *c, const char *where, const char *what, const WireReject *rej)
{
    WireReason r = rej && (int)rej->reason >= 0 && rej->reason < WIRE_REJ_COUNT ? rej->reason
                                                                                : WIRE_REJ_UNKNOWN;
    uint64_t   n = atomic_fetch_add_explicit(&c->n[r], 1, memory_order_relaxed) + 1;
    double     now = mono_s();
    if (n > WIRE_LOG_BURST && now - c->last_log_s[r] < WIRE_LOG_EVERY_S) {
        c->suppressed[r]++;
        return;
    }
    char more[64] = "";
    if (c->suppressed[r])
        snprintf(more, sizeof more, " (%llu more %s since the last line)",
                 (unsigned long long)c->suppressed[r], k_reason_names[r]);
    log_warn("%s: rejected %s: %s: %s%s", where ? where : "wire", what ? what : "frame",
             k_reason_names[r], rej ? rej->why : "", more);
    c->last_log_s[r] = now;
    c->suppressed[r] = 0;
}

/* ---- Validation ------------------------------------------------------- */

/* Fills rej and returns code: the one exit of every failed check. */
__attribute__((format(printf, 4, 5))) static int reject(WireReject *rej, int code,
                                                        WireReason reason, const char *fmt, ...)
{
    if (rej) {
        rej->reason = reason;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(rej->why, sizeof rej->why, fmt, ap);
        va_end(ap);
    }
    return code;
}

static const WireLimits k_no_limits = {0};

static int check_version(const char *msg, uint32_t version, WireReject *rej)
{
    if (version != WIRE_PROTOCOL_VERSION)
        return reject(rej, ERR_UNSUPPORTED, WIRE_REJ_BAD_VERSION, "%s version %u, expected %d", msg,
                      version, WIRE_PROTOCOL_VERSION);
    return 0;
}

/* A string field of at most max bytes. protobuf-c gives "" for absent
 * strings; NULL only appears in messages built by hand and counts as "". */
static int check_str(const char *msg, const char *field, const char *s, size_t max, bool required,
                     WireReject *rej)
{
    size_t n = s ? strnlen(s, max + 1) : 0;
    if (n > max)
        return reject(rej, ERR_FORMAT, WIRE_REJ_BAD_SHAPE, "%s.%s longer than %zu bytes", msg,
                      field, max);
    if (required && n == 0)
        return reject(rej, ERR_FORMAT, WIRE_REJ_BAD_SHAPE, "%s.%s is empty, expected 1..%zu bytes",
                      msg, field, max);
    return 0;
}

static int check_run(const char *msg, const char *run_id, const WireLimits *lim, WireReject *rej)
{
    int rc = check_str(msg, "run_id", run_id, WIRE_MAX_NAME, false, rej);
    if (rc) return rc;
    if (lim->run_id && lim->run_id[0] && strcmp(run_id ? run_id : "", lim->run_id) != 0)
        return reject(rej, ERR_MISMATCH, WIRE_REJ_BAD_RUN, "%s.run_id '%s', expected '%s'", msg,
                      run_id ? run_id : "", lim->run_id);
    return 0;
}

static int check_count(const char *msg, const char *field, size_t n, size_t lo, size_t hi,
                       WireReject *rej)
{
    if (n < lo || n > hi)
        return reject(rej, ERR_FORMAT, WIRE_REJ_BAD_SHAPE,
                      "%s.%s has %zu entries, expected %zu..%zu", msg, field, n, lo, hi);
    return 0;
}

static int check_tokens(const char *msg, const int32_t *ids, size_t n, const WireLimits *lim,
                        WireReject *rej)
{
    int32_t vocab = lim->vocab_size > 0 ? lim->vocab_size : WIRE_MAX_VOCAB;
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= vocab)
            return reject(rej, ERR_RANGE, WIRE_REJ_BAD_TOKENS,
                          "%s.tokens[%zu] = %d, expected [0, %d)", msg, i, ids[i], vocab);
    return 0;
}

int wire_check_sampling(const Rlhf__SamplingParams *m, const WireLimits *lim, WireReject *rej)
{
    (void)lim;
    if (!isfinite(m->temperature) || !isfinite(m->top_p))
        return reject(rej, ERR_NONFINITE, WIRE_REJ_NONFINITE,
                      "SamplingParams temperature %g top_p %g, expected finite", m->temperature,
                      m->top_p);
    if (m->temperature < 0.0f || m->temperature > WIRE_MAX_TEMPERATURE)
        return reject(rej, ERR_RANGE, WIRE_REJ_BAD_VALUE,
                      "SamplingParams.temperature %g, expected [0, %g]", m->temperature,
                      WIRE_MAX_TEMPERATURE);
    if (m->top_k < 0)
        return reject(rej, ERR_RANGE, WIRE_REJ_BAD_VALUE, "SamplingParams.top_k %d, expected >= 0",
                      m->top_k);
    if (!(m->top_p > 0.0f && m->top_p <= 1.0f))
        return reject(rej, ERR_RANGE, WIRE_REJ_BAD_VALUE,
                      "SamplingParams.top_p %g, expected (0, 1]", m->top_p);
    if (m->max_new_tokens < 1 || m->max_new_tokens > WIRE_MAX_TOKENS)
        return reject(rej, ERR_RANGE, WIRE_REJ_BAD_VALUE,
                      "SamplingParams.max_new_tokens %d, expected 1..%d", m->max_new_tokens,
                      WIRE_MAX_TOKENS);
    return 0;
}

int wire_check_prompt(const Rlhf__Prompt *m, const WireLimits *lim, WireReject *rej)
{
    if (!lim) lim = &k_no_limits;
    int rc;
    if ((rc = check_count("Prompt", "tokens", m->n_tokens, 1, WIRE_MAX_PROMPT_TOKENS, rej)) ||
        (rc = check_tokens("Prompt", m->tokens, m->n_tokens, lim, rej)) ||
        (rc = check_str("Prompt", "answer", m->answer, WIRE_MAX_TEXT, false, rej)) ||
        (rc = check_str("Prompt", "task", m->task, WIRE_MAX_NAME, false, rej)))
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
        return reject(rej, ERR_FORMAT, WIRE_REJ_BAD_SHAPE,
                      "Completion arrays tokens %zu, logp_behaviour %zu, logp_sampled %zu, "
                      "policy_version %zu, expected equal lengths",
                      n, m->n_logp_behaviour, m->n_logp_sampled, m->n_policy_version);
    if ((rc = check_tokens("Completion", m->tokens, n, lim, rej))) return rc;
    for (size_t i = 0; i < n; i++) {
        float lb = m->logp_behaviour[i], ls = m->logp_sampled[i];
        if (!isfinite(lb) || !isfinite(ls))
            return reject(
                rej, ERR_NONFINITE, WIRE_REJ_NONFINITE,
                "Completion token %zu: logp_behaviour %g logp_sampled %g, expected finite", i, lb,
                ls);
        if (lb > WIRE_LOGP_EPS || ls > WIRE_LOGP_EPS)
            return reject(rej, ERR_RANGE, WIRE_REJ_BAD_VALUE,
                          "Completion token %zu: logp_behaviour %g logp_sampled %g, expected <= 0",
                          i, lb, ls);
    }
    if (m->finish != RLHF__COMPLETION__FINISH__FINISH_STOP &&
        m->finish != RLHF__COMPLETION__FINISH__FINISH_LENGTH)
        return reject(rej, ERR_RANGE, WIRE_REJ_BAD_VALUE,
                      "Completion.finish %d, expected STOP (1) or LENGTH (2)", (int)m->finish);
    return 0;
}

int wire_check_sampled_group(const Rlhf__SampledGroup *m, const WireLimits *lim, WireReject *rej)
{
    if (!lim) lim = &k_no_limits;
    int rc;
    if ((rc = check_version("SampledGroup", m->version, rej)) ||
        (rc = check_run("SampledGroup", m->run_id, lim, rej)) ||
        (rc = check_str("SampledGroup", "actor_id", m->actor_id, WIRE_MAX_NAME, false, rej)))
        return rc;
    if (!m->prompt || !m->sampling)
        return reject(rej, ERR_FORMAT, WIRE_REJ_BAD_SHAPE, "SampledGroup without %s",
                      !m->prompt ? "prompt" : "sampling");
    if ((rc = wire_check_prompt(m->prompt, lim, rej)) ||
        (rc = wire_check_sampling(m->sampling, lim, rej)) ||
        (rc = check_count("SampledGroup", "completions", m->n_completions, 1, WIRE_MAX_GROUP, rej)))
        return rc;
    if (m->group_count < 1 || m->group_count > WIRE_MAX_PROMPTS || m->group_index < 0 ||
        m->group_index >= m->group_count)
        return reject(rej, ERR_FORMAT, WIRE_REJ_BAD_SHAPE,
                      "SampledGroup group_index %d of group_count %d, expected 0 <= index < "
                      "count <= %d",
                      m->group_index, m->group_count, WIRE_MAX_PROMPTS);
    for (size_t i = 0; i < m->n_completions; i++) {
        const Rlhf__Completion *c = m->completions[i];
        if (!c) return reject(rej, ERR_FORMAT, WIRE_REJ_BAD_SHAPE, "completion %zu is NULL", i);
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
            return reject(rej, ERR_FORMAT, WIRE_REJ_BAD_SHAPE,
                          "completion %zu has %zu tokens, expected <= max_new_tokens %d", i,
                          c->n_tokens, m->sampling->max_new_tokens);
    }
    return 0;
}

int wire_check_scored_group(const Rlhf__ScoredGroup *m, const WireLimits *lim, WireReject *rej)
{
    if (!lim) lim = &k_no_limits;
    int rc;
    if ((rc = check_version("ScoredGroup", m->version, rej)) ||
        (rc = check_run("ScoredGroup", m->run_id, lim, rej)) ||
        (rc = check_str("ScoredGroup", "scorer_id", m->scorer_id, WIRE_MAX_NAME, false, rej)))
        return rc;
    if (!m->group) return reject(rej, ERR_FORMAT, WIRE_REJ_BAD_SHAPE, "ScoredGroup without group");
    if ((rc = wire_check_sampled_group(m->group, lim, rej))) return rc;
    if (strcmp(m->run_id ? m->run_id : "", m->group->run_id ? m->group->run_id : "") != 0)
        return reject(rej, ERR_MISMATCH, WIRE_REJ_BAD_RUN,
                      "ScoredGroup.run_id '%s' differs from its group's '%s'", m->run_id,
                      m->group->run_id);
    if (m->n_scores != m->group->n_completions)
        return reject(rej, ERR_FORMAT, WIRE_REJ_BAD_SHAPE,
                      "ScoredGroup has %zu scores for %zu completions, expected one each",
                      m->n_scores, m->group->n_completions);
    for (size_t i = 0; i < m->n_scores; i++) {
        const Rlhf__Score *s = m->scores[i];
        if (!s) return reject(rej, ERR_FORMAT, WIRE_REJ_BAD_SHAPE, "score %zu is NULL", i);
        if (!isfinite(s->reward))
            return reject(rej, ERR_NONFINITE, WIRE_REJ_NONFINITE, "score %zu reward %g", i,
                          s->reward);
        if (s->n_components > WIRE_MAX_COMPONENTS)
            return reject(rej, ERR_FORMAT, WIRE_REJ_BAD_SHAPE,
                          "score %zu has %zu components, expected <= %d", i, s->n_components,
                          WIRE_MAX_COMPONENTS);
        for (size_t j = 0; j < s->n_components; j++) {
            const Rlhf__RewardComponent *c = s->components[j];
            if (!c) return reject(rej, ERR_FORMAT, WIRE_REJ_BAD_SHAPE, "component is NULL");
            if ((rc = check_str("RewardComponent", "name", c->name, WIRE_MAX_NAME, true, rej)))
                return rc;
            if (!isfinite(c->value))
                return reject(rej, ERR_NONFINITE, WIRE_REJ_NONFINITE,
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
    if ((rc = check_version("LeaseRequest", m->version, rej)) ||
        (rc = check_run("LeaseRequest", m->run_id, lim, rej)) ||
        (rc = check_str("LeaseRequest", "actor_id", m->actor_id, WIRE_MAX_NAME, true, rej)))
        return rc;
    if (m->max_prompts < 0 || m->max_prompts > WIRE_MAX_PROMPTS)
        return reject(rej, ERR_RANGE, WIRE_REJ_BAD_VALUE,
                      "LeaseRequest.max_prompts %d, expected 0..%d", m->max_prompts,
                      WIRE_MAX_PROMPTS);
    return 0;
}

int wire_check_lease_grant(const Rlhf__LeaseGrant *m, const WireLimits *lim, WireReject *rej)
{
    if (!lim) lim = &k_no_limits;
    int rc;
    if ((rc = check_version("LeaseGrant", m->version, rej)) ||
        (rc = check_run("LeaseGrant", m->run_id, lim, rej)) ||
        (rc = check_count("LeaseGrant", "prompts", m->n_prompts, 0, WIRE_MAX_PROMPTS, rej)))
        return rc;
    if (m->retry_after_ms < 0)
        return reject(rej, ERR_RANGE, WIRE_REJ_BAD_VALUE,
                      "LeaseGrant.retry_after_ms %d, expected >= 0", m->retry_after_ms);
    if (m->n_prompts == 0) return 0;
    if (m->group_size < 1 || m->group_size > WIRE_MAX_GROUP)
        return reject(rej, ERR_RANGE, WIRE_REJ_BAD_VALUE,
                      "LeaseGrant.group_size %d, expected 1..%d", m->group_size, WIRE_MAX_GROUP);
    if (!m->sampling)
        return reject(rej, ERR_FORMAT, WIRE_REJ_BAD_SHAPE,
                      "LeaseGrant with prompts but no sampling");
    if ((rc = wire_check_sampling(m->sampling, lim, rej))) return rc;
    for (size_t i = 0; i < m->n_prompts; i++) {
        if (!m->prompts[i])
            return reject(rej, ERR_FORMAT, WIRE_REJ_BAD_SHAPE, "prompt %zu is NULL", i);
        if ((rc = wire_check_prompt(m->prompts[i], lim, rej))) return rc;
    }
    return 0;
}

static int check_snapshot_bytes(const char *msg, uint64_t total, WireReject *rej)
{
    if (total % 4 != 0 || total > WIRE_MAX_SNAPSHOT_BYTES)
        return reject(rej, ERR_RANGE, WIRE_REJ_BAD_VALUE,
                      "%s.total_bytes %llu, expected a multiple of 4 up to %llu", msg,
                      (unsigned long long)total, (unsigned long long)WIRE_MAX_SNAPSHOT_BYTES);
    return 0;
}

int wire_check_weight_announce(const Rlhf__WeightAnnounce *m, const WireLimits *lim,
                               WireReject *rej)
{
    if (!lim) lim = &k_no_limits;
    int rc;
    if ((rc = check_version("WeightAnnounce", m->version, rej)) ||
        (rc = check_run("WeightAnnounce", m->run_id, lim, rej)) ||
        (rc = check_snapshot_bytes("WeightAnnounce", m->total_bytes, rej)))
        return rc;
    return 0;
}

int wire_check_snapshot_request(const Rlhf__SnapshotRequest *m, const WireLimits *lim,
                                WireReject *rej)
{
    if (!lim) lim = &k_no_limits;
    int rc;
    if ((rc = check_version("SnapshotRequest", m->version, rej)) ||
        (rc = check_run("SnapshotRequest", m->run_id, lim, rej)) ||
        (rc = check_str("SnapshotRequest", "actor_id", m->actor_id, WIRE_MAX_NAME, true, rej)))
        return rc;
    return 0;
}

int wire_check_weight_chunk(const Rlhf__WeightChunk *m, const WireLimits *lim, WireReject *rej)
{
    if (!lim) lim = &k_no_limits;
    int rc;
    if ((rc = check_version("WeightChunk", m->version, rej)) ||
        (rc = check_run("WeightChunk", m->run_id, lim, rej)) ||
        (rc = check_snapshot_bytes("WeightChunk", m->total_bytes, rej)) ||
        (rc = check_str("WeightChunk", "config_json", m->config_json, WIRE_MAX_CONFIG_JSON, false,
                        rej)))
        return rc;
    if (m->total_bytes == 0)
        return reject(rej, ERR_RANGE, WIRE_REJ_BAD_CHUNK,
                      "WeightChunk.total_bytes 0, expected > 0");
    if (m->chunk_count < 1 || m->chunk_count > WIRE_MAX_CHUNKS || m->chunk_index >= m->chunk_count)
        return reject(rej, ERR_RANGE, WIRE_REJ_BAD_CHUNK,
                      "WeightChunk chunk_index %u of chunk_count %u, expected index < count <= %d",
                      m->chunk_index, m->chunk_count, WIRE_MAX_CHUNKS);
    if (m->data.len < 1 || m->data.len > WIRE_MAX_CHUNK_BYTES || (m->data.len && !m->data.data))
        return reject(rej, ERR_RANGE, WIRE_REJ_BAD_CHUNK,
                      "WeightChunk %u data %zu bytes, expected 1..%zu", m->chunk_index, m->data.len,
                      WIRE_MAX_CHUNK_BYTES);
    /* Written so that it cannot overflow: total_bytes is bounded above. */
    if (m->offset > m->total_bytes || m->data.len > m->total_bytes - m->offset)
        return reject(rej, ERR_RANGE, WIRE_REJ_BAD_CHUNK,
                      "WeightChunk %u covers [%llu, +%zu), beyond total_bytes %llu", m->chunk_index,
                      (unsigned long long)m->offset, m->data.len,
                      (unsigned long long)m->total_bytes);
    return 0;
}

int wire_check_heartbeat(const Rlhf__Heartbeat *m, const WireLimits *lim, WireReject *rej)
{
    if (!lim) lim = &k_no_limits;
    int rc;
    if ((rc = check_version("Heartbeat", m->version, rej)) ||
        (rc = check_run("Heartbeat", m->run_id, lim, rej)) ||
        (rc = check_str("Heartbeat", "sender", m->sender, WIRE_MAX_NAME, false, rej)))
        return rc;
    return 0;
}

int wire_check_error_reply(const Rlhf__ErrorReply *m, const WireLimits *lim, WireReject *rej)
{
    int rc;
    (void)lim;
    if ((rc = check_version("ErrorReply", m->version, rej)) ||
        (rc = check_str("ErrorReply", "reason", m->reason, WIRE_MAX_TEXT, false, rej)))
        return rc;
    return 0;
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
    return reject(rej, ERR_UNSUPPORTED, WIRE_REJ_UNKNOWN, "no check for message type %s",
                  d ? d->name : "(null)");
}

int wire_decode(const ProtobufCMessageDescriptor *desc, const void *data, size_t len,
                const WireLimits *lim, ProtobufCMessage **out, WireReject *rej)
{
    *out = NULL;
    if (len > WIRE_MAX_FRAME)
        return reject(rej, ERR_RANGE, WIRE_REJ_OVERSIZED, "%s frame of %zu bytes, expected <= %zu",
                      desc->short_name, len, WIRE_MAX_FRAME);
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, len, data);
    if (!m)
        return reject(rej, ERR_FORMAT, WIRE_REJ_GARBAGE,
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

/* ---- Sockets ---------------------------------------------------------- */

struct WireSock {
    void        *zsock;
    int          type;
    char         name[64];
    WireRejects  own_rejects;
    WireRejects *rejects; /* own_rejects or the caller's (wire_sock_use_rejects) */
};

static int set_int_opt(WireSock *s, int opt, const char *opt_name, int value)
{
    if (zmq_setsockopt(s->zsock, opt, &value, sizeof value) != 0) {
        log_error("wire_sock_new: socket '%s': zmq_setsockopt(%s, %d): %s", s->name, opt_name,
                  value, zmq_strerror(zmq_errno()));
        return ERR_IO;
    }
    return 0;
}

WireSock *wire_sock_new(void *zctx, int type, const char *name, const WireSockOpts *opts)
{
    CHECK(zctx && name);
    WireSockOpts o = opts ? *opts : WIRE_SOCK_DEFAULTS;
    WireSock    *s = xcalloc(1, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    s->type = type;
    wire_rejects_init(&s->own_rejects);
    s->rejects = &s->own_rejects;
    s->zsock = zmq_socket(zctx, type);
    if (!s->zsock) {
        log_error("wire_sock_new: socket '%s': zmq_socket(type %d): %s", name, type,
                  zmq_strerror(zmq_errno()));
        free(s);
        return NULL;
    }
    /* Above WIRE_MAX_FRAME, so that wire_recv sees oversized frames to count
     * them; bounded, so that a peer cannot make libzmq allocate any size. */
    int64_t maxmsg = (int64_t)WIRE_MAX_FRAME_RECV;
    int     rc = 0;
    if (zmq_setsockopt(s->zsock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) != 0) {
        log_error("wire_sock_new: socket '%s': zmq_setsockopt(ZMQ_MAXMSGSIZE, %lld): %s", name,
                  (long long)maxmsg, zmq_strerror(zmq_errno()));
        rc = ERR_IO;
    }
    if (!rc) rc = set_int_opt(s, ZMQ_LINGER, "ZMQ_LINGER", o.linger_ms);
    if (!rc) rc = set_int_opt(s, ZMQ_SNDHWM, "ZMQ_SNDHWM", o.sndhwm);
    if (!rc) rc = set_int_opt(s, ZMQ_RCVHWM, "ZMQ_RCVHWM", o.rcvhwm);
    if (!rc) rc = set_int_opt(s, ZMQ_SNDTIMEO, "ZMQ_SNDTIMEO", o.sndtimeo_ms);
    if (!rc) rc = set_int_opt(s, ZMQ_RECONNECT_IVL, "ZMQ_RECONNECT_IVL", o.reconnect_ivl_ms);
    if (!rc)
        rc = set_int_opt(s, ZMQ_RECONNECT_IVL_MAX, "ZMQ_RECONNECT_IVL_MAX", o.reconnect_max_ms);
    if (!rc && o.heartbeat_ms > 0) {
        rc = set_int_opt(s, ZMQ_HEARTBEAT_IVL, "ZMQ_HEARTBEAT_IVL", o.heartbeat_ms);
        /* A peer silent for three heartbeats is dead; libzmq then reconnects. */
        if (!rc)
            rc = set_int_opt(s, ZMQ_HEARTBEAT_TIMEOUT, "ZMQ_HEARTBEAT_TIMEOUT", 3 * o.heartbeat_ms);
    }
    if (!rc && o.immediate) rc = set_int_opt(s, ZMQ_IMMEDIATE, "ZMQ_IMMEDIATE", 1);
    if (!rc && type == ZMQ_ROUTER)
        rc = set_int_opt(s, ZMQ_ROUTER_MANDATORY, "ZMQ_ROUTER_MANDATORY", 1);
    if (!rc && type == ZMQ_SUB && zmq_setsockopt(s->zsock, ZMQ_SUBSCRIBE, "", 0) != 0) {
        log_error("wire_sock_new: socket '%s': zmq_setsockopt(ZMQ_SUBSCRIBE, \"\"): %s", name,
                  zmq_strerror(zmq_errno()));
        rc = ERR_IO;
    }
    if (rc) {
        wire_sock_free(&s);
        return NULL;
    }
    return s;
}

void wire_sock_free(WireSock **sp)
{
    if (!sp || !*sp) return;
    WireSock *s = *sp;
    /* zmq_close only fails on an invalid socket, which would be a bug here. */
    if (s->zsock && zmq_close(s->zsock) != 0)
        log_error("wire_sock_free: socket '%s': zmq_close: %s", s->name, zmq_strerror(zmq_errno()));
    free(s);
    *sp = NULL;
}

int wire_bind(WireSock *s, const char *endpoint)
{
    if (zmq_bind(s->zsock, endpoint) != 0) {
        log_error("wire_bind: socket '%s': bind '%s': %s", s->name, endpoint,
                  zmq_strerror(zmq_errno()));
        return ERR_IO;
    }
    return 0;
}

int wire_connect(WireSock *s, const char *endpoint)
{
    if (zmq_connect(s->zsock, endpoint) != 0) {
        log_error("wire_connect: socket '%s': connect '%s': %s", s->name, endpoint,
                  zmq_strerror(zmq_errno()));
        return ERR_IO;
    }
    return 0;
}

int wire_last_endpoint(WireSock *s, char *buf, size_t cap)
{
    CHECK(buf && cap > 0);
    size_t len = cap;
    if (zmq_getsockopt(s->zsock, ZMQ_LAST_ENDPOINT, buf, &len) != 0) {
        int e = zmq_errno();
        log_error("wire_last_endpoint: socket '%s': %s", s->name, zmq_strerror(e));
        buf[0] = '\0';
        return e == EINVAL ? ERR_RANGE : ERR_IO;
    }
    buf[cap - 1] = '\0';
    return 0;
}

void *wire_sock_zmq(WireSock *s)
{
    return s->zsock;
}

const char *wire_sock_name(const WireSock *s)
{
    return s->name;
}

int wire_sock_type(const WireSock *s)
{
    return s->type;
}

WireRejects *wire_sock_rejects(WireSock *s)
{
    return s->rejects;
}

void wire_sock_use_rejects(WireSock *s, WireRejects *c)
{
    CHECK(c);
    s->rejects = c;
}

/* Maps a failed zmq send to an ERR_* code, logging only real failures. */
static int send_error(WireSock *s, const char *fn)
{
    int e = zmq_errno();
    if (e == EAGAIN || e == EINTR) return ERR_AGAIN;
    if (e == EHOSTUNREACH) return ERR_NOTFOUND;
    log_error("%s: socket '%s': send: %s", fn, s->name, zmq_strerror(e));
    return ERR_IO;
}

/* Sends peer (ROUTER) and then the prepared frame; closes the frame on failure. */
static int send_frame(WireSock *s, const char *fn, const void *peer, size_t peer_len,
                      zmq_msg_t *frame, int flags)
{
    if (s->type == ZMQ_ROUTER) {
        CHECK(peer && peer_len > 0 && peer_len <= WIRE_MAX_IDENTITY);
        if (zmq_send(s->zsock, peer, peer_len, flags | ZMQ_SNDMORE) < 0) {
            zmq_msg_close(frame);
            return send_error(s, fn);
        }
    } else {
        CHECK(peer == NULL);
    }
    /* Once the routing id is queued the payload follows in the same atomic
     * multipart message, so a failure here cannot leave half a message. */
    if (zmq_msg_send(frame, s->zsock, flags) < 0) {
        zmq_msg_close(frame);
        return send_error(s, fn);
    }
    return 0;
}

/* Packs m straight into a ZeroMQ-owned buffer: the pack is the only copy. */
static int pack_frame(WireSock *s, const char *fn, const ProtobufCMessage *m, zmq_msg_t *frame)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    if (len > WIRE_MAX_FRAME) {
        log_error("%s: socket '%s': %s packs to %zu bytes, expected <= %zu", fn, s->name,
                  m->descriptor->short_name, len, WIRE_MAX_FRAME);
        return ERR_RANGE;
    }
    if (zmq_msg_init_size(frame, len) != 0) {
        log_error("%s: socket '%s': zmq_msg_init_size(%zu): %s", fn, s->name, len,
                  zmq_strerror(zmq_errno()));
        return ERR_IO;
    }
    size_t packed = protobuf_c_message_pack(m, zmq_msg_data(frame));
    CHECK(packed == len);
    return 0;
}

int wire_send(WireSock *s, const ProtobufCMessage *m, int flags)
{
    CHECK(s->type != ZMQ_ROUTER);
    zmq_msg_t frame;
    int       rc = pack_frame(s, "wire_send", m, &frame);
    if (rc) return rc;
    return send_frame(s, "wire_send", NULL, 0, &frame, flags);
}

int wire_send_to(WireSock *s, const void *peer, size_t peer_len, const ProtobufCMessage *m,
                 int flags)
{
    CHECK(s->type == ZMQ_ROUTER);
    zmq_msg_t frame;
    int       rc = pack_frame(s, "wire_send_to", m, &frame);
    if (rc) return rc;
    return send_frame(s, "wire_send_to", peer, peer_len, &frame, flags);
}

int wire_send_raw(WireSock *s, const void *peer, size_t peer_len, const void *data, size_t len,
                  int flags)
{
    zmq_msg_t frame;
    if (zmq_msg_init_size(&frame, len) != 0) {
        log_error("wire_send_raw: socket '%s': zmq_msg_init_size(%zu): %s", s->name, len,
                  zmq_strerror(zmq_errno()));
        return ERR_IO;
    }
    if (len) memcpy(zmq_msg_data(&frame), data, len);
    return send_frame(s, "wire_send_raw", peer, peer_len, &frame, flags);
}

int wire_send_msg(WireSock *s, const void *peer, size_t peer_len, WireMsg *m, int flags)
{
    CHECK(m->is_open);
    if (s->type != ZMQ_ROUTER) {
        CHECK(peer == NULL);
        /* zmq_msg_send moves the frame's content (no copy) and leaves it
         * empty; a failed send leaves it untouched, ready for a retry. */
        if (zmq_msg_send(&m->frame, s->zsock, flags) >= 0) {
            wire_msg_close(m);
            return 0;
        }
        int rc = send_error(s, "wire_send_msg");
        if (rc != ERR_AGAIN) wire_msg_close(m);
        return rc;
    }
    /* On ROUTER the routing id goes first, so a half-sent message cannot be
     * retried; send_frame closes the frame on failure. */
    m->is_open = false;
    return send_frame(s, "wire_send_msg", peer, peer_len, &m->frame, flags);
}

const void *wire_msg_data(WireMsg *m)
{
    CHECK(m->is_open);
    return zmq_msg_data(&m->frame);
}

size_t wire_msg_size(WireMsg *m)
{
    CHECK(m->is_open);
    return zmq_msg_size(&m->frame);
}

void wire_msg_close(WireMsg *m)
{
    if (!m || !m->is_open) return;
    zmq_msg_close(&m->frame);
    m->is_open = false;
}

/* Reads and drops the rest of a multipart message. */
static void drain_more(WireSock *s)
{
    int    more = 0;
    size_t sz = sizeof more;
    while (zmq_getsockopt(s->zsock, ZMQ_RCVMORE, &more, &sz) == 0 && more) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        int rc = zmq_msg_recv(&part, s->zsock, 0);
        zmq_msg_close(&part);
        if (rc < 0) break;
    }
}

static bool has_more(WireSock *s)
{
    int    more = 0;
    size_t sz = sizeof more;
    return zmq_getsockopt(s->zsock, ZMQ_RCVMORE, &more, &sz) == 0 && more;
}

/* Receives one frame into f; 0, ERR_TIMEOUT (nothing queued), ERR_AGAIN or ERR_IO. */
static int recv_part(WireSock *s, zmq_msg_t *f, int flags)
{
    zmq_msg_init(f);
    if (zmq_msg_recv(f, s->zsock, flags) >= 0) return 0;
    int e = zmq_errno();
    zmq_msg_close(f);
    if (e == EAGAIN) return ERR_TIMEOUT;
    if (e == EINTR) return ERR_AGAIN;
    log_error("wire_recv: socket '%s': recv: %s", s->name, zmq_strerror(e));
    return ERR_IO;
}

int wire_recv(WireSock *s, int timeout_ms, WireMsg *m)
{
    memset(m, 0, sizeof *m);
    zmq_pollitem_t it = {.socket = s->zsock, .events = ZMQ_POLLIN};
    int            n = zmq_poll(&it, 1, timeout_ms);
    if (n < 0) {
        int e = zmq_errno();
        if (e == EINTR) return ERR_AGAIN;
        log_error("wire_recv: socket '%s': zmq_poll: %s", s->name, zmq_strerror(e));
        return ERR_IO;
    }
    if (n == 0) return ERR_TIMEOUT;
    WireReject rej = {.reason = WIRE_REJ_UNKNOWN};
    int        rc;
    if (s->type == ZMQ_ROUTER) {
        zmq_msg_t id;
        if ((rc = recv_part(s, &id, ZMQ_DONTWAIT))) return rc;
        size_t idn = zmq_msg_size(&id);
        bool   more = has_more(s);
        /* libzmq routing ids are 1..255 bytes, so only a missing payload is possible. */
        if (idn > WIRE_MAX_IDENTITY || !more) {
            zmq_msg_close(&id);
            reject(&rej, ERR_FORMAT, WIRE_REJ_UNKNOWN,
                   "message of one frame, expected [id, payload]");
            wire_reject_note(s->rejects, s->name, "frame", &rej);
            return ERR_FORMAT;
        }
        memcpy(m->peer, zmq_msg_data(&id), idn);
        m->peer_len = idn;
        zmq_msg_close(&id);
        /* The parts of a multipart message arrive together, so this never waits. */
        if ((rc = recv_part(s, &m->frame, 0))) return rc == ERR_TIMEOUT ? ERR_IO : rc;
    } else {
        if ((rc = recv_part(s, &m->frame, ZMQ_DONTWAIT))) return rc;
    }
    m->is_open = true;
    if (has_more(s)) {
        drain_more(s);
        wire_msg_close(m);
        reject(&rej, ERR_FORMAT, WIRE_REJ_UNKNOWN, "multipart message, expected %s",
               s->type == ZMQ_ROUTER ? "[id, payload]" : "one frame");
        wire_reject_note(s->rejects, s->name, "frame", &rej);
        return ERR_FORMAT;
    }
    size_t len = zmq_msg_size(&m->frame);
    if (len > WIRE_MAX_FRAME) {
        /* Over tcp libzmq drops only frames above WIRE_MAX_FRAME_RECV itself. */
        wire_msg_close(m);
        reject(&rej, ERR_RANGE, WIRE_REJ_OVERSIZED, "frame of %zu bytes, expected <= %zu", len,
               WIRE_MAX_FRAME);
        wire_reject_note(s->rejects, s->name, "frame", &rej);
        return ERR_RANGE;
    }
    return 0;
}

int wire_recv_decode(WireSock *s, int timeout_ms, const ProtobufCMessageDescriptor *desc,
                     const WireLimits *lim, WireMsg *m, ProtobufCMessage **out, WireReject *rej)
{
    *out = NULL;
    int rc = wire_recv(s, timeout_ms, m);
    if (rc) return rc;
    WireReject local;
    if (!rej) rej = &local;
    rc = wire_decode(desc, wire_msg_data(m), wire_msg_size(m), lim, out, rej);
    if (rc) {
        wire_reject_note(s->rejects, s->name, desc->short_name, rej);
        wire_msg_close(m);
    }
    return rc;
}

/* ---- Weight snapshots ------------------------------------------------- */

uint64_t wire_snap_checksum(const void *block, size_t bytes)
{
    return XXH3_64bits(block, bytes);
}

uint32_t wire_snap_chunk_count(size_t bytes, size_t chunk_bytes)
{
    if (chunk_bytes == 0) chunk_bytes = WIRE_CHUNK_BYTES;
    return (uint32_t)((bytes + chunk_bytes - 1) / chunk_bytes);
}

int wire_snap_send_chunk(WireSock *s, const void *peer, size_t peer_len, const WireSnapMeta *meta,
                         const void *block, size_t bytes, size_t chunk_bytes, uint32_t index)
{
    if (chunk_bytes == 0) chunk_bytes = WIRE_CHUNK_BYTES;
    size_t   cfg_len = meta->config_json ? strlen(meta->config_json) : 0;
    uint64_t count = bytes && chunk_bytes ? (bytes + chunk_bytes - 1) / chunk_bytes : 0;
    if (bytes == 0 || bytes % 4 || bytes > WIRE_MAX_SNAPSHOT_BYTES || chunk_bytes % 4 ||
        chunk_bytes > WIRE_MAX_CHUNK_BYTES || count > WIRE_MAX_CHUNKS || index >= count ||
        !meta->has_checksum || cfg_len > WIRE_MAX_CONFIG_JSON ||
        (meta->run_id && strlen(meta->run_id) > WIRE_MAX_NAME)) {
        log_error("wire_snap_send_chunk: socket '%s': chunk %u of %zu bytes at %zu per chunk "
                  "(%llu chunks, config %zu bytes, checksum %s): expected a positive multiple "
                  "of 4 up to %llu bytes, chunk size a multiple of 4 up to %zu, at most %d "
                  "chunks, config up to %zu bytes and a checksum",
                  s->name, index, bytes, chunk_bytes, (unsigned long long)count, cfg_len,
                  meta->has_checksum ? "set" : "missing",
                  (unsigned long long)WIRE_MAX_SNAPSHOT_BYTES, WIRE_MAX_CHUNK_BYTES,
                  WIRE_MAX_CHUNKS, WIRE_MAX_CONFIG_JSON);
        return ERR_ARG;
    }
    size_t offset = (size_t)index * chunk_bytes;
    size_t len = bytes - offset < chunk_bytes ? bytes - offset : chunk_bytes;

    Rlhf__WeightChunk c = RLHF__WEIGHT_CHUNK__INIT;
    c.version = WIRE_PROTOCOL_VERSION;
    /* protobuf-c's pack only reads these strings and the data. */
    c.run_id = (char *)(meta->run_id ? meta->run_id : "");
    c.epoch = meta->epoch;
    c.policy_version = meta->policy_version;
    c.chunk_index = index;
    c.chunk_count = (uint32_t)count;
    c.total_bytes = bytes;
    c.offset = offset;
    c.data.data = (uint8_t *)block + offset;
    c.data.len = len;
    c.config_json = (char *)(index == 0 && meta->config_json ? meta->config_json : "");
    c.checksum = meta->checksum;

    zmq_msg_t frame;
    int       rc = pack_frame(s, "wire_snap_send_chunk", &c.base, &frame);
    if (rc) return rc;
    return send_frame(s, "wire_snap_send_chunk", s->type == ZMQ_ROUTER ? peer : NULL, peer_len,
                      &frame, 0);
}

int wire_snap_send(WireSock *s, const void *peer, size_t peer_len, const WireSnapMeta *meta,
                   const void *block, size_t bytes, size_t chunk_bytes)
{
    WireSnapMeta m = *meta;
    if (!m.has_checksum) {
        m.checksum = wire_snap_checksum(block, bytes);
        m.has_checksum = true;
    }
    uint32_t count = wire_snap_chunk_count(bytes, chunk_bytes);
    if (count == 0) count = 1; /* let send_chunk report the empty block */
    for (uint32_t i = 0; i < count; i++) {
        int rc = wire_snap_send_chunk(s, peer, peer_len, &m, block, bytes, chunk_bytes, i);
        if (rc) return rc;
    }
    return 0;
}

struct WireSnapRx {
    uint8_t *buf;        /* the block being assembled */
    size_t   cap;        /* bytes buf may hold (caller's) or the allocation limit (owned) */
    size_t   alloc;      /* bytes allocated, owned mode */
    bool     is_owned;   /* buf is ours */
    bool     is_started; /* a first chunk fixed the snapshot */
    bool     is_complete;
    char     run_id[WIRE_MAX_NAME + 1];
    uint64_t epoch, policy_version, total, checksum;
    uint32_t count;  /* chunks expected */
    uint32_t n_have; /* chunks received */
    uint64_t stride; /* bytes per chunk but the last, 0 until known */
    uint8_t *have;   /* (count) 1 where a chunk arrived */
    char    *config; /* chunk 0's config JSON, NULL until then */
};

WireSnapRx *wire_snap_rx_new(void *buf, size_t cap)
{
    CHECK(cap > 0);
    WireSnapRx *rx = xcalloc(1, sizeof *rx);
    rx->buf = buf;
    rx->cap = cap;
    rx->is_owned = buf == NULL;
    return rx;
}

void wire_snap_rx_reset(WireSnapRx *rx)
{
    rx->is_started = rx->is_complete = false;
    rx->n_have = rx->count = 0;
    rx->stride = rx->total = 0;
    rx->run_id[0] = '\0';
    free(rx->have);
    rx->have = NULL;
    free(rx->config);
    rx->config = NULL;
}

void wire_snap_rx_free(WireSnapRx **rxp)
{
    if (!rxp || !*rxp) return;
    WireSnapRx *rx = *rxp;
    wire_snap_rx_reset(rx);
    if (rx->is_owned) free(rx->buf);
    free(rx);
    *rxp = NULL;
}

/* Fixes the snapshot from its first chunk. */
static int rx_start(WireSnapRx *rx, const Rlhf__WeightChunk *c, WireReject *rej)
{
    if (c->total_bytes > rx->cap)
        return reject(rej, ERR_RANGE, WIRE_REJ_BAD_CHUNK,
                      "snapshot of %llu bytes, expected at most %zu",
                      (unsigned long long)c->total_bytes, rx->cap);
    if (rx->is_owned && rx->alloc != c->total_bytes) {
        free(rx->buf);
        rx->alloc = 0;
        /* Plain malloc: a peer-chosen size must not abort the process. */
        rx->buf = malloc((size_t)c->total_bytes);
        if (!rx->buf)
            return reject(rej, ERR_RANGE, WIRE_REJ_BAD_CHUNK,
                          "cannot allocate %llu bytes for the snapshot",
                          (unsigned long long)c->total_bytes);
        rx->alloc = (size_t)c->total_bytes;
    }
    rx->have = xcalloc(c->chunk_count, 1);
    snprintf(rx->run_id, sizeof rx->run_id, "%s", c->run_id ? c->run_id : "");
    rx->epoch = c->epoch;
    rx->policy_version = c->policy_version;
    rx->total = c->total_bytes;
    rx->checksum = c->checksum;
    rx->count = c->chunk_count;
    rx->is_started = true;
    return 0;
}

int wire_snap_rx_accept(WireSnapRx *rx, const Rlhf__WeightChunk *c, WireReject *rej)
{
    int rc = wire_check_weight_chunk(c, NULL, rej);
    if (rc) return rc;
    if (rx->is_complete)
        return reject(rej, ERR_MISMATCH, WIRE_REJ_BAD_CHUNK,
                      "chunk %u after the snapshot was complete (reset first)", c->chunk_index);
    if (rx->is_started &&
        (strcmp(rx->run_id, c->run_id ? c->run_id : "") || rx->epoch != c->epoch ||
         rx->policy_version != c->policy_version || rx->total != c->total_bytes ||
         rx->count != c->chunk_count || rx->checksum != c->checksum))
        return reject(rej, ERR_MISMATCH, WIRE_REJ_BAD_CHUNK,
                      "chunk %u of snapshot (run '%s' epoch %llu v%llu, %llu bytes in %u chunks) "
                      "while assembling (run '%s' epoch %llu v%llu, %llu bytes in %u chunks)",
                      c->chunk_index, c->run_id, (unsigned long long)c->epoch,
                      (unsigned long long)c->policy_version, (unsigned long long)c->total_bytes,
                      c->chunk_count, rx->run_id, (unsigned long long)rx->epoch,
                      (unsigned long long)rx->policy_version, (unsigned long long)rx->total,
                      rx->count);
    /* The chunk grid: every chunk but the last has `stride` bytes at
     * index * stride. This chunk implies a stride; it must agree with the
     * one already known and with chunk_count, which rules out gaps and
     * overlaps whatever order the chunks come in. */
    uint64_t len = c->data.len, stride;
    bool     is_last = c->chunk_index + 1 == c->chunk_count;
    if (!is_last)
        stride = len;
    else if (c->chunk_count == 1)
        stride = c->total_bytes;
    else if (c->offset % (c->chunk_count - 1) == 0)
        stride = c->offset / (c->chunk_count - 1);
    else
        stride = 0;
    bool fits = stride > 0 && (rx->stride == 0 || rx->stride == stride) &&
                c->offset == (uint64_t)c->chunk_index * stride &&
                (c->total_bytes + stride - 1) / stride == c->chunk_count &&
                (!is_last || c->offset + len == c->total_bytes);
    if (!fits)
        return reject(rej, ERR_MISMATCH, WIRE_REJ_BAD_CHUNK,
                      "chunk %u/%u at offset %llu with %llu bytes does not fit the chunk grid "
                      "(stride %llu, total %llu)",
                      c->chunk_index, c->chunk_count, (unsigned long long)c->offset,
                      (unsigned long long)len, (unsigned long long)rx->stride,
                      (unsigned long long)c->total_bytes);
    if (!rx->is_started && (rc = rx_start(rx, c, rej))) return rc;
    if (rx->have[c->chunk_index])
        return reject(rej, ERR_MISMATCH, WIRE_REJ_BAD_CHUNK, "chunk %u/%u arrived twice",
                      c->chunk_index, c->chunk_count);
    rx->stride = stride;
    if (c->chunk_index == 0) rx->config = xstrdup(c->config_json ? c->config_json : "");
    memcpy(rx->buf + c->offset, c->data.data, (size_t)len);
    rx->have[c->chunk_index] = 1;
    rx->n_have++;
    if (rx->n_have < rx->count) return 0;
    uint64_t got = wire_snap_checksum(rx->buf, (size_t)rx->total);
    if (got != rx->checksum) {
        reject(rej, ERR_MISMATCH, WIRE_REJ_CHECKSUM,
               "snapshot v%llu of %llu bytes: checksum %016llx, expected %016llx",
               (unsigned long long)rx->policy_version, (unsigned long long)rx->total,
               (unsigned long long)got, (unsigned long long)rx->checksum);
        wire_snap_rx_reset(rx);
        return ERR_MISMATCH;
    }
    rx->is_complete = true;
    return 1;
}

bool wire_snap_rx_is_complete(const WireSnapRx *rx)
{
    return rx->is_complete;
}

void wire_snap_rx_progress(const WireSnapRx *rx, uint32_t *have, uint32_t *count)
{
    if (have) *have = rx->n_have;
    if (count) *count = rx->count;
}

const void *wire_snap_rx_data(const WireSnapRx *rx, size_t *bytes)
{
    if (bytes) *bytes = rx->is_complete ? (size_t)rx->total : 0;
    return rx->is_complete ? rx->buf : NULL;
}

const char *wire_snap_rx_run_id(const WireSnapRx *rx)
{
    return rx->run_id;
}

uint64_t wire_snap_rx_epoch(const WireSnapRx *rx)
{
    return rx->epoch;
}

uint64_t wire_snap_rx_policy_version(const WireSnapRx *rx)
{
    return rx->policy_version;
}

const char *wire_snap_rx_config(const WireSnapRx *rx)
{
    return rx->config ? rx->config : "";
}

void *wire_snap_rx_take(WireSnapRx *rx, size_t *bytes)
{
    if (!rx->is_complete || !rx->is_owned) {
        if (bytes) *bytes = 0;
        return NULL;
    }
    void *p = rx->buf;
    if (bytes) *bytes = (size_t)rx->total;
    rx->buf = NULL;
    rx->alloc = 0;
    wire_snap_rx_reset(rx);
    return p;
}

/* ---- Self-test -------------------------------------------------------- */

/* A valid SampledGroup of 3 completions built in place (holds pointers into
 * itself, so it is never copied). Vocab 20, run "run-a". */
enum { TG_N = 3, TG_T = 5, TG_VOCAB = 20 };
typedef struct {
    Rlhf__SamplingParams sp;
    Rlhf__Prompt         prompt;
    int32_t              ptoks[4];
    Rlhf__Completion     comp[TG_N];
    Rlhf__Completion    *compp[TG_N];
    int32_t              toks[TG_N][TG_T];
    float                lb[TG_N][TG_T], ls[TG_N][TG_T];
    uint64_t             pv[TG_N][TG_T];
    Rlhf__SampledGroup   g;
} TestGroup;

static void tg_init(TestGroup *t)
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
    for (int i = 0; i < TG_N; i++) {
        Rlhf__Completion *c = &t->comp[i];
        rlhf__completion__init(c);
        for (int j = 0; j < TG_T; j++) {
            t->toks[i][j] = j + 1 == TG_T ? 2 : 3 + (i + j) % 10;
            t->lb[i][j] = -0.25f * (float)(j + 1);
            t->ls[i][j] = -0.125f * (float)(j + 1);
            t->pv[i][j] = 7;
        }
        c->tokens = t->toks[i];
        c->logp_behaviour = t->lb[i];
        c->logp_sampled = t->ls[i];
        c->policy_version = t->pv[i];
        c->n_tokens = c->n_logp_behaviour = c->n_logp_sampled = c->n_policy_version = TG_T;
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
    t->g.n_completions = TG_N;
    t->g.sampling = &t->sp;
    t->g.group_index = 1;
    t->g.group_count = 2;
}

/* Packs m into a malloc'd buffer (caller frees). */
static uint8_t *st_pack(const ProtobufCMessage *m, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *b = xmalloc(*len ? *len : 1);
    protobuf_c_message_pack(m, b);
    return b;
}

/* True if a and b pack to the same bytes. */
static bool st_same(const ProtobufCMessage *a, const ProtobufCMessage *b)
{
    size_t   la, lb;
    uint8_t *pa = st_pack(a, &la), *pb = st_pack(b, &lb);
    bool     same = la == lb && memcmp(pa, pb, la) == 0;
    free(pa);
    free(pb);
    return same;
}

static int st_expect(bool ok, const char *what)
{
    if (!ok) fprintf(stderr, "wire_selftest: FAILED: %s\n", what);
    return ok ? 0 : 1;
}

/* The checks on in-memory messages: each broken field gives its reason. */
static int st_checks(bool verbose)
{
    int        fails = 0;
    TestGroup  t;
    WireLimits lim = {.vocab_size = TG_VOCAB, .run_id = "run-a"};
    WireReject rej;
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
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        tg_init(&t);
        switch (k) {
        case 1:
            t.g.version = 2;
            break;
        case 2:
            t.g.run_id = (char *)"run-b";
            break;
        case 3:
            t.toks[1][2] = TG_VOCAB;
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
            t.comp[1].n_logp_sampled = TG_T - 1;
            break;
        case 10:
            t.g.n_completions = 0;
            break;
        case 11:
            t.sp.max_new_tokens = TG_T - 1;
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
        }
        memset(&rej, 0, sizeof rej);
        int  rc = wire_check_sampled_group(&t.g, &lim, &rej);
        bool ok = rc == cases[k].want_rc && (rc == 0 || rej.reason == cases[k].want);
        if (verbose || !ok)
            printf("  check %-16s rc %3d reason %-11s %s\n", cases[k].name, rc,
                   rc ? wire_reason_name(rej.reason) : "-", rc ? rej.why : "");
        fails += st_expect(ok, cases[k].name);
    }
    /* A tiny positive log-prob from rounding is allowed; a zero vocab means no vocab known. */
    tg_init(&t);
    t.lb[0][0] = 0.5f * WIRE_LOGP_EPS;
    t.toks[0][0] = 1000;
    fails += st_expect(wire_check_sampled_group(&t.g, NULL, &rej) == 0, "eps logp, no vocab");

    /* ScoredGroup: one score per completion, finite values, same run. */
    tg_init(&t);
    Rlhf__RewardComponent comp = RLHF__REWARD_COMPONENT__INIT, *compp = &comp;
    comp.name = (char *)"correct";
    comp.value = 1.0f;
    Rlhf__Score scores[TG_N], *scorep[TG_N];
    for (int i = 0; i < TG_N; i++) {
        rlhf__score__init(&scores[i]);
        scores[i].reward = 1.0f;
        scores[i].components = &compp;
        scores[i].n_components = 1;
        scorep[i] = &scores[i];
    }
    Rlhf__ScoredGroup sg = RLHF__SCORED_GROUP__INIT;
    sg.version = WIRE_PROTOCOL_VERSION;
    sg.run_id = (char *)"run-a";
    sg.group = &t.g;
    sg.scores = scorep;
    sg.n_scores = TG_N;
    sg.scorer_id = (char *)"arith";
    fails += st_expect(wire_check_scored_group(&sg, &lim, &rej) == 0, "scored ok");
    sg.n_scores = TG_N - 1;
    fails += st_expect(wire_check_scored_group(&sg, &lim, &rej) == ERR_FORMAT &&
                           rej.reason == WIRE_REJ_BAD_SHAPE,
                       "scored count");
    sg.n_scores = TG_N;
    scores[1].reward = INFINITY;
    fails += st_expect(wire_check_scored_group(&sg, &lim, &rej) == ERR_NONFINITE, "scored inf");
    scores[1].reward = 0.0f;
    comp.name = (char *)"";
    fails += st_expect(wire_check_scored_group(&sg, &lim, &rej) == ERR_FORMAT, "component name");
    comp.name = (char *)"correct";
    sg.run_id = (char *)"run-b";
    fails += st_expect(wire_check_scored_group(&sg, NULL, &rej) == ERR_MISMATCH &&
                           rej.reason == WIRE_REJ_BAD_RUN,
                       "scored run differs from group");

    /* Leases. */
    Rlhf__LeaseRequest lr = RLHF__LEASE_REQUEST__INIT;
    lr.version = 1;
    lr.actor_id = (char *)"a";
    lr.max_prompts = 4;
    fails += st_expect(wire_check_lease_request(&lr, NULL, &rej) == 0, "lease request ok");
    lr.max_prompts = WIRE_MAX_PROMPTS + 1;
    fails += st_expect(wire_check_lease_request(&lr, NULL, &rej) == ERR_RANGE, "max_prompts");
    Rlhf__LeaseGrant lg = RLHF__LEASE_GRANT__INIT;
    Rlhf__Prompt    *pp = &t.prompt;
    lg.version = 1;
    lg.retry_after_ms = 100;
    fails += st_expect(wire_check_lease_grant(&lg, NULL, &rej) == 0, "empty grant ok");
    lg.prompts = &pp;
    lg.n_prompts = 1;
    lg.group_size = 4;
    fails += st_expect(wire_check_lease_grant(&lg, NULL, &rej) == ERR_FORMAT, "grant no sampling");
    lg.sampling = &t.sp;
    fails += st_expect(wire_check_lease_grant(&lg, NULL, &rej) == 0, "grant ok");
    lg.group_size = 0;
    fails += st_expect(wire_check_lease_grant(&lg, NULL, &rej) == ERR_RANGE, "grant group 0");

    /* Chunks and announcements. */
    uint8_t           data[8] = {0};
    Rlhf__WeightChunk wc = RLHF__WEIGHT_CHUNK__INIT;
    wc.version = 1;
    wc.chunk_count = 2;
    wc.chunk_index = 1;
    wc.total_bytes = 16;
    wc.offset = 8;
    wc.data.data = data;
    wc.data.len = 8;
    fails += st_expect(wire_check_weight_chunk(&wc, NULL, &rej) == 0, "chunk ok");
    wc.offset = 12;
    fails += st_expect(wire_check_weight_chunk(&wc, NULL, &rej) == ERR_RANGE &&
                           rej.reason == WIRE_REJ_BAD_CHUNK,
                       "chunk beyond total");
    wc.offset = 8;
    wc.chunk_index = 2;
    fails += st_expect(wire_check_weight_chunk(&wc, NULL, &rej) == ERR_RANGE, "chunk index");
    wc.chunk_index = 1;
    wc.total_bytes = 18;
    fails += st_expect(wire_check_weight_chunk(&wc, NULL, &rej) == ERR_RANGE, "chunk total % 4");
    Rlhf__WeightAnnounce wa = RLHF__WEIGHT_ANNOUNCE__INIT;
    wa.version = 1;
    wa.total_bytes = WIRE_MAX_SNAPSHOT_BYTES + 4;
    fails += st_expect(wire_check_weight_announce(&wa, NULL, &rej) == ERR_RANGE, "announce size");
    Rlhf__Heartbeat hb = RLHF__HEARTBEAT__INIT;
    fails += st_expect(wire_check(&hb.base, NULL, &rej) == ERR_UNSUPPORTED &&
                           rej.reason == WIRE_REJ_BAD_VERSION,
                       "heartbeat version 0");
    fails += st_expect(wire_check(&t.sp.base, NULL, &rej) == ERR_UNSUPPORTED &&
                           rej.reason == WIRE_REJ_UNKNOWN,
                       "no check for nested type");
    return fails;
}

/* Sends m on tx, receives it on rx as desc, and checks it decodes to the same bytes. */
static int st_roundtrip_one(WireSock *tx, WireSock *rx, const ProtobufCMessage *m,
                            const WireLimits *lim)
{
    int rc = wire_send(tx, m, 0);
    if (rc) return st_expect(false, "round trip send");
    WireMsg           msg;
    ProtobufCMessage *got = NULL;
    WireReject        rej;
    rc = wire_recv_decode(rx, 2000, m->descriptor, lim, &msg, &got, &rej);
    if (rc) {
        fprintf(stderr, "wire_selftest: round trip %s: %s (%s)\n", m->descriptor->short_name,
                err_str(rc), rc == ERR_TIMEOUT ? "" : rej.why);
        return 1;
    }
    int fails = st_expect(st_same(m, got), m->descriptor->short_name);
    protobuf_c_message_free_unpacked(got, NULL);
    wire_msg_close(&msg);
    return fails;
}

/* Every message type through a PUSH/PULL pair at endpoint (bound by the PULL). */
static int st_roundtrips(void *zctx, const char *endpoint, bool verbose)
{
    int       fails = 0;
    WireSock *pull = wire_sock_new(zctx, ZMQ_PULL, "rt-pull", NULL);
    WireSock *push = wire_sock_new(zctx, ZMQ_PUSH, "rt-push", NULL);
    char      ep[256];
    if (!pull || !push || wire_bind(pull, endpoint) || wire_last_endpoint(pull, ep, sizeof ep) ||
        wire_connect(push, ep)) {
        wire_sock_free(&push);
        wire_sock_free(&pull);
        return st_expect(false, "round trip sockets");
    }
    if (verbose) printf("  round trips over %s\n", ep);
    WireLimits lim = {.vocab_size = TG_VOCAB, .run_id = "run-a"};
    TestGroup  t;
    tg_init(&t);

    Rlhf__LeaseRequest lr = RLHF__LEASE_REQUEST__INIT;
    lr.version = 1;
    lr.run_id = (char *)"run-a";
    lr.actor_id = (char *)"actor-0";
    lr.max_prompts = 8;
    lr.policy_version = 3;
    lr.epoch = 2;
    fails += st_roundtrip_one(push, pull, &lr.base, &lim);

    Rlhf__Prompt    *prompts[2] = {&t.prompt, &t.prompt};
    Rlhf__LeaseGrant lg = RLHF__LEASE_GRANT__INIT;
    lg.version = 1;
    lg.run_id = (char *)"run-a";
    lg.epoch = 2;
    lg.lease_id = 77;
    lg.deadline_unix_ms = 1700000000000;
    lg.min_policy_version = 3;
    lg.group_size = 4;
    lg.sampling = &t.sp;
    lg.prompts = prompts;
    lg.n_prompts = 2;
    fails += st_roundtrip_one(push, pull, &lg.base, &lim);

    fails += st_roundtrip_one(push, pull, &t.g.base, &lim);

    Rlhf__RewardComponent comp = RLHF__REWARD_COMPONENT__INIT, *compp = &comp;
    comp.name = (char *)"format";
    comp.value = 0.5f;
    Rlhf__Score scores[TG_N], *scorep[TG_N];
    for (int i = 0; i < TG_N; i++) {
        rlhf__score__init(&scores[i]);
        scores[i].reward = (float)i;
        scores[i].components = &compp;
        scores[i].n_components = 1;
        scorep[i] = &scores[i];
    }
    Rlhf__ScoredGroup sg = RLHF__SCORED_GROUP__INIT;
    sg.version = 1;
    sg.run_id = (char *)"run-a";
    sg.group = &t.g;
    sg.scores = scorep;
    sg.n_scores = TG_N;
    sg.scorer_id = (char *)"arith";
    fails += st_roundtrip_one(push, pull, &sg.base, &lim);

    Rlhf__WeightAnnounce wa = RLHF__WEIGHT_ANNOUNCE__INIT;
    wa.version = 1;
    wa.run_id = (char *)"run-a";
    wa.epoch = 2;
    wa.policy_version = 5;
    wa.total_bytes = 4096;
    fails += st_roundtrip_one(push, pull, &wa.base, &lim);

    Rlhf__SnapshotRequest sr = RLHF__SNAPSHOT_REQUEST__INIT;
    sr.version = 1;
    sr.run_id = (char *)"run-a";
    sr.actor_id = (char *)"actor-0";
    sr.have_policy_version = 4;
    sr.have_epoch = 2;
    fails += st_roundtrip_one(push, pull, &sr.base, &lim);

    float             w[4] = {1, 2, 3, 4};
    Rlhf__WeightChunk wc = RLHF__WEIGHT_CHUNK__INIT;
    wc.version = 1;
    wc.run_id = (char *)"run-a";
    wc.chunk_count = 1;
    wc.total_bytes = sizeof w;
    wc.data.data = (uint8_t *)w;
    wc.data.len = sizeof w;
    wc.config_json = (char *)"{\"dim\": 8}";
    wc.checksum = wire_snap_checksum(w, sizeof w);
    fails += st_roundtrip_one(push, pull, &wc.base, &lim);

    Rlhf__Heartbeat hb = RLHF__HEARTBEAT__INIT;
    hb.version = 1;
    hb.run_id = (char *)"run-a";
    hb.sender = (char *)"reward-0";
    hb.unix_ms = 123;
    fails += st_roundtrip_one(push, pull, &hb.base, &lim);

    Rlhf__ErrorReply er = RLHF__ERROR_REPLY__INIT;
    er.version = 1;
    er.code = ERR_RANGE;
    er.reason = (char *)"no";
    fails += st_roundtrip_one(push, pull, &er.base, &lim);

    fails +=
        st_expect(wire_rejects_total(wire_sock_rejects(pull)) == 0, "no rejects on round trips");
    wire_sock_free(&push);
    wire_sock_free(&pull);
    return fails;
}

/* ROUTER/DEALER over tcp: the routing id comes back, replies reach the
 * sender, and an unknown peer is ERR_NOTFOUND. */
static int st_router(void *zctx, bool verbose)
{
    int       fails = 0;
    WireSock *router = wire_sock_new(zctx, ZMQ_ROUTER, "lease", NULL);
    WireSock *dealer = wire_sock_new(zctx, ZMQ_DEALER, "actor", NULL);
    char      ep[256];
    if (!router || !dealer || wire_bind(router, "tcp://127.0.0.1:*") ||
        wire_last_endpoint(router, ep, sizeof ep) || wire_connect(dealer, ep)) {
        wire_sock_free(&dealer);
        wire_sock_free(&router);
        return st_expect(false, "router sockets");
    }
    Rlhf__LeaseRequest lr = RLHF__LEASE_REQUEST__INIT;
    lr.version = 1;
    lr.actor_id = (char *)"actor-7";
    lr.max_prompts = 2;
    fails += st_expect(wire_send(dealer, &lr.base, 0) == 0, "dealer send");
    WireMsg             m;
    Rlhf__LeaseRequest *got = NULL;
    int rc = wire_recv_decode(router, 2000, &rlhf__lease_request__descriptor, NULL, &m,
                              (ProtobufCMessage **)&got, NULL);
    fails += st_expect(rc == 0 && m.peer_len > 0 && got && !strcmp(got->actor_id, "actor-7"),
                       "router receives with peer id");
    if (rc == 0) {
        Rlhf__LeaseGrant lg = RLHF__LEASE_GRANT__INIT;
        lg.version = 1;
        lg.lease_id = 5;
        lg.retry_after_ms = 50;
        fails += st_expect(wire_send_to(router, m.peer, m.peer_len, &lg.base, 0) == 0, "reply");
        WireMsg           r;
        Rlhf__LeaseGrant *g = NULL;
        rc = wire_recv_decode(dealer, 2000, &rlhf__lease_grant__descriptor, NULL, &r,
                              (ProtobufCMessage **)&g, NULL);
        fails += st_expect(rc == 0 && g && g->lease_id == 5 && g->retry_after_ms == 50,
                           "dealer gets the reply");
        if (g) protobuf_c_message_free_unpacked(&g->base, NULL);
        wire_msg_close(&r);
        protobuf_c_message_free_unpacked(&got->base, NULL);
        wire_msg_close(&m);
    }
    fails +=
        st_expect(wire_send_to(router, "nobody", 6, &lr.base, 0) == ERR_NOTFOUND, "unknown peer");
    WireMsg idle;
    fails += st_expect(wire_recv(dealer, 10, &idle) == ERR_TIMEOUT, "timeout when idle");
    if (verbose) printf("  router/dealer over %s ok\n", ep);
    wire_sock_free(&dealer);
    wire_sock_free(&router);
    return fails;
}

/* Every kind of bad frame is refused with its counter, and good frames still
 * get through afterwards. */
static int st_rejects(void *zctx, bool verbose)
{
    int       fails = 0;
    WireSock *pull = wire_sock_new(zctx, ZMQ_PULL, "samples", NULL);
    WireSock *push = wire_sock_new(zctx, ZMQ_PUSH, "actor", NULL);
    if (!pull || !push || wire_bind(pull, "inproc://wire-rejects") ||
        wire_connect(push, "inproc://wire-rejects")) {
        wire_sock_free(&push);
        wire_sock_free(&pull);
        return st_expect(false, "reject sockets");
    }
    WireLimits lim = {.vocab_size = TG_VOCAB, .run_id = "run-a"};
    TestGroup  t;
    size_t     len;
    uint8_t   *good;
    tg_init(&t);
    good = st_pack(&t.g.base, &len);

    uint8_t garbage[64];
    memset(garbage, 0xff, sizeof garbage);
    wire_send_raw(push, NULL, 0, garbage, sizeof garbage, 0);
    wire_send_raw(push, NULL, 0, good, len / 2, 0); /* truncated */
    size_t   big_len = WIRE_MAX_FRAME + 1;
    uint8_t *big = xcalloc(big_len, 1);
    wire_send_raw(push, NULL, 0, big, big_len, 0);
    free(big);
    zmq_send(wire_sock_zmq(push), "a", 1, ZMQ_SNDMORE); /* two frames */
    zmq_send(wire_sock_zmq(push), "b", 1, 0);
    t.g.version = 7;
    wire_send(push, &t.g.base, 0);
    tg_init(&t);
    t.toks[0][0] = TG_VOCAB + 5;
    wire_send(push, &t.g.base, 0);
    tg_init(&t);
    t.lb[2][3] = NAN;
    wire_send(push, &t.g.base, 0);
    tg_init(&t);
    t.comp[0].n_policy_version = 2;
    wire_send(push, &t.g.base, 0);
    tg_init(&t);
    t.g.run_id = (char *)"run-z";
    wire_send(push, &t.g.base, 0);
    tg_init(&t);
    t.ls[1][0] = 3.0f;
    wire_send(push, &t.g.base, 0);
    wire_send_raw(push, NULL, 0, good, len, 0);

    int want_ok = 1, got_ok = 0, got_bad = 0;
    for (int i = 0; i < 11; i++) {
        WireMsg             m;
        Rlhf__SampledGroup *g = NULL;
        int rc = wire_recv_decode(pull, 2000, &rlhf__sampled_group__descriptor, &lim, &m,
                                  (ProtobufCMessage **)&g, NULL);
        if (rc == ERR_TIMEOUT) break;
        if (rc == 0) {
            got_ok++;
            fails += st_expect(g->n_completions == TG_N && g->completions[1]->n_tokens == TG_T,
                               "good group after bad ones");
            protobuf_c_message_free_unpacked(&g->base, NULL);
            wire_msg_close(&m);
        } else {
            got_bad++;
        }
    }
    const WireRejects *c = wire_sock_rejects(pull);
    char               line[256];
    wire_rejects_format(c, line, sizeof line);
    if (verbose) printf("  rejects: %s (%d bad, %d good)\n", line, got_bad, got_ok);
    fails += st_expect(got_ok == want_ok && got_bad == 10, "10 bad frames, 1 good");
    static const WireReason want[] = {WIRE_REJ_OVERSIZED,  WIRE_REJ_UNKNOWN,   WIRE_REJ_BAD_VERSION,
                                      WIRE_REJ_BAD_TOKENS, WIRE_REJ_NONFINITE, WIRE_REJ_BAD_SHAPE,
                                      WIRE_REJ_BAD_RUN,    WIRE_REJ_BAD_VALUE};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        fails += st_expect(wire_rejects_get(c, want[i]) == 1, wire_reason_name(want[i]));
    fails += st_expect(wire_rejects_get(c, WIRE_REJ_GARBAGE) == 2, "garbage and truncated");
    fails += st_expect(wire_rejects_total(c) == 10, "10 rejects in all");
    fails += st_expect(strstr(line, "garbage=2") && strstr(line, "bad_tokens=1"), "format line");
    WireRejects sum = {0};
    wire_rejects_add(&sum, c);
    wire_rejects_add(&sum, c);
    fails += st_expect(wire_rejects_total(&sum) == 20, "rejects add");
    WireRejects zero;
    wire_rejects_init(&zero);
    wire_rejects_format(&zero, line, sizeof line);
    fails += st_expect(!strcmp(line, "none"), "format none");

    /* Over tcp a frame just over WIRE_MAX_FRAME reaches wire_recv, which
     * refuses and counts it; one over WIRE_MAX_FRAME_RECV is dropped by
     * libzmq (ZMQ_MAXMSGSIZE) with the connection and never reaches it; the
     * sender reconnects and later frames pass. */
    WireSock *tpull = wire_sock_new(zctx, ZMQ_PULL, "tcp-samples", NULL);
    WireSock *tpush = wire_sock_new(zctx, ZMQ_PUSH, "tcp-actor", NULL);
    char      ep[256];
    if (!tpull || !tpush || wire_bind(tpull, "tcp://127.0.0.1:*") ||
        wire_last_endpoint(tpull, ep, sizeof ep) || wire_connect(tpush, ep)) {
        fails += st_expect(false, "tcp reject sockets");
    } else {
        big = xcalloc(big_len, 1);
        fails += st_expect(wire_send_raw(tpush, NULL, 0, big, big_len, 0) == 0, "tcp big send");
        free(big);
        WireMsg m;
        fails += st_expect(wire_recv(tpull, 10000, &m) == ERR_RANGE &&
                               wire_rejects_get(wire_sock_rejects(tpull), WIRE_REJ_OVERSIZED) == 1,
                           "tcp oversized frame refused and counted");
        wire_msg_close(&m);
        size_t huge_len = WIRE_MAX_FRAME_RECV + 1;
        big = xcalloc(huge_len, 1);
        fails += st_expect(wire_send_raw(tpush, NULL, 0, big, huge_len, 0) == 0, "tcp huge send");
        free(big);
        fails += st_expect(wire_recv(tpull, 300, &m) == ERR_TIMEOUT,
                           "tcp frame over WIRE_MAX_FRAME_RECV dropped by libzmq");
        wire_msg_close(&m);
        int rc = ERR_AGAIN;
        for (int tries = 0; tries < 20 && rc; tries++)
            rc = wire_send_raw(tpush, NULL, 0, good, len, 0);
        Rlhf__SampledGroup *g = NULL;
        rc = wire_recv_decode(tpull, 3000, &rlhf__sampled_group__descriptor, &lim, &m,
                              (ProtobufCMessage **)&g, NULL);
        fails += st_expect(rc == 0, "tcp good frame after oversized");
        if (g) protobuf_c_message_free_unpacked(&g->base, NULL);
        wire_msg_close(&m);
    }
    wire_sock_free(&tpush);
    wire_sock_free(&tpull);
    free(good);
    wire_sock_free(&push);
    wire_sock_free(&pull);
    return fails;
}

/* wire_send_msg forwards a received frame untouched, and a socket can count
 * into counters the caller owns. */
static int st_forward(void *zctx, bool verbose)
{
    int         fails = 0;
    WireSock   *in_push = wire_sock_new(zctx, ZMQ_PUSH, "fw-in-push", NULL);
    WireSock   *in_pull = wire_sock_new(zctx, ZMQ_PULL, "fw-in-pull", NULL);
    WireSock   *out_push = wire_sock_new(zctx, ZMQ_PUSH, "fw-out-push", NULL);
    WireSock   *out_pull = wire_sock_new(zctx, ZMQ_PULL, "fw-out-pull", NULL);
    WireRejects ext;
    wire_rejects_init(&ext);
    if (!in_push || !in_pull || !out_push || !out_pull || wire_bind(in_pull, "inproc://fw-in") ||
        wire_connect(in_push, "inproc://fw-in") || wire_bind(out_pull, "inproc://fw-out") ||
        wire_connect(out_push, "inproc://fw-out")) {
        fails += st_expect(false, "forward sockets");
        goto out;
    }
    wire_sock_use_rejects(in_pull, &ext);
    fails += st_expect(wire_sock_rejects(in_pull) == &ext, "external counters");
    TestGroup t;
    tg_init(&t);
    uint8_t junk[3] = {0xff, 0xff, 0xff};
    wire_send_raw(in_push, NULL, 0, junk, sizeof junk, 0);
    wire_send(in_push, &t.g.base, 0);
    WireMsg           m;
    ProtobufCMessage *got = NULL;
    int               rc =
        wire_recv_decode(in_pull, 2000, &rlhf__sampled_group__descriptor, NULL, &m, &got, NULL);
    fails += st_expect(rc == ERR_FORMAT && wire_rejects_get(&ext, WIRE_REJ_GARBAGE) == 1,
                       "junk counted in external counters");
    rc = wire_recv(in_pull, 2000, &m);
    fails += st_expect(rc == 0, "receive to forward");
    if (rc == 0) {
        fails += st_expect(wire_send_msg(out_push, NULL, 0, &m, 0) == 0 && !m.is_open, "forward");
        wire_msg_close(&m); /* a no-op: already closed */
        rc = wire_recv_decode(out_pull, 2000, &rlhf__sampled_group__descriptor, NULL, &m, &got,
                              NULL);
        fails += st_expect(rc == 0 && got && st_same(got, &t.g.base), "forwarded intact");
        if (got) protobuf_c_message_free_unpacked(got, NULL);
        wire_msg_close(&m);
    }
    if (verbose) printf("  forward and external counters ok\n");
out:
    wire_sock_free(&in_push);
    wire_sock_free(&in_pull);
    wire_sock_free(&out_push);
    wire_sock_free(&out_pull);
    return fails;
}

/* A block of n floats with a recognisable pattern. */
static float *st_block(size_t n, uint32_t seed)
{
    float *b = xmalloc(n * sizeof *b);
    for (size_t i = 0; i < n; i++) b[i] = (float)((i * 2654435761u + seed) % 100003) * 1e-3f;
    return b;
}

/* Snapshot in memory: chunks out of order, duplicates, strays, corruption. */
static int st_snapshot_rx(void *zctx, bool verbose)
{
    int       fails = 0;
    WireSock *pull = wire_sock_new(zctx, ZMQ_PULL, "snap-pull", NULL);
    WireSock *push = wire_sock_new(zctx, ZMQ_PUSH, "snap-push", NULL);
    if (!pull || !push || wire_bind(pull, "inproc://wire-snap") ||
        wire_connect(push, "inproc://wire-snap")) {
        wire_sock_free(&push);
        wire_sock_free(&pull);
        return st_expect(false, "snapshot sockets");
    }
    enum { N_FLOATS = 250000 + 3, CHUNK = 256 << 10 }; /* 4 chunks, the last one short */
    size_t       bytes = (size_t)N_FLOATS * 4;
    float       *block = st_block(N_FLOATS, 1);
    WireSnapMeta meta = {
        .run_id = "run-a", .epoch = 1, .policy_version = 9, .config_json = "{\"dim\": 64}"};
    uint32_t count = wire_snap_chunk_count(bytes, CHUNK);
    fails += st_expect(count == 4, "chunk count");
    fails += st_expect(wire_snap_send(push, NULL, 0, &meta, block, bytes, CHUNK) == 0, "snap send");
    Rlhf__WeightChunk *ch[4] = {0};
    WireMsg            m;
    for (uint32_t i = 0; i < count; i++) {
        int rc = wire_recv_decode(pull, 2000, &rlhf__weight_chunk__descriptor, NULL, &m,
                                  (ProtobufCMessage **)&ch[i], NULL);
        wire_msg_close(&m);
        if (rc) {
            fails += st_expect(false, "receive chunk");
            goto out;
        }
    }
    WireRejects rej_counts;
    wire_rejects_init(&rej_counts);
    WireSnapRx *rx = wire_snap_rx_new(NULL, bytes);
    WireReject  rej;
    int         rc;
    /* Out of order: 3, 1, 0, 2. */
    int order[4] = {3, 1, 0, 2}, last = -99;
    for (int k = 0; k < 4; k++) last = wire_snap_rx_accept(rx, ch[order[k]], &rej);
    size_t      got_bytes = 0;
    const void *got = wire_snap_rx_data(rx, &got_bytes);
    fails += st_expect(last == 1 && got && got_bytes == bytes && !memcmp(got, block, bytes),
                       "out-of-order snapshot intact");
    fails += st_expect(!strcmp(wire_snap_rx_config(rx), "{\"dim\": 64}") &&
                           wire_snap_rx_policy_version(rx) == 9 && wire_snap_rx_epoch(rx) == 1 &&
                           !strcmp(wire_snap_rx_run_id(rx), "run-a"),
                       "snapshot meta");
    rc = wire_snap_rx_accept(rx, ch[0], &rej);
    fails += st_expect(rc == ERR_MISMATCH && rej.reason == WIRE_REJ_BAD_CHUNK, "chunk after done");
    size_t taken_bytes;
    void  *taken = wire_snap_rx_take(rx, &taken_bytes);
    fails += st_expect(taken && taken_bytes == bytes && !memcmp(taken, block, bytes), "take");
    free(taken);

    /* Duplicate, another version, a shifted offset. */
    fails += st_expect(wire_snap_rx_accept(rx, ch[0], &rej) == 0, "first chunk");
    rc = wire_snap_rx_accept(rx, ch[0], &rej);
    if (rc) wire_reject_note(&rej_counts, "selftest", "WeightChunk", &rej);
    fails += st_expect(rc == ERR_MISMATCH && rej.reason == WIRE_REJ_BAD_CHUNK, "duplicate");
    ch[1]->policy_version = 10;
    rc = wire_snap_rx_accept(rx, ch[1], &rej);
    if (rc) wire_reject_note(&rej_counts, "selftest", "WeightChunk", &rej);
    fails += st_expect(rc == ERR_MISMATCH && rej.reason == WIRE_REJ_BAD_CHUNK, "other version");
    ch[1]->policy_version = 9;
    ch[1]->offset += 4;
    rc = wire_snap_rx_accept(rx, ch[1], &rej);
    if (rc) wire_reject_note(&rej_counts, "selftest", "WeightChunk", &rej);
    fails += st_expect(rc == ERR_MISMATCH && rej.reason == WIRE_REJ_BAD_CHUNK, "shifted offset");
    ch[1]->offset -= 4;
    uint32_t have, cnt;
    wire_snap_rx_progress(rx, &have, &cnt);
    fails += st_expect(have == 1 && cnt == 4, "progress after rejects");

    /* A corrupted byte: every chunk fits, the checksum refuses the block. */
    ch[2]->data.data[100] ^= 0x40;
    rc = 0;
    for (int k = 1; k < 4 && rc >= 0; k++) rc = wire_snap_rx_accept(rx, ch[k], &rej);
    if (rc < 0) wire_reject_note(&rej_counts, "selftest", "snapshot", &rej);
    fails += st_expect(rc == ERR_MISMATCH && rej.reason == WIRE_REJ_CHECKSUM, "corrupt chunk");
    wire_snap_rx_progress(rx, &have, &cnt);
    fails +=
        st_expect(have == 0 && !wire_snap_rx_is_complete(rx) && wire_snap_rx_data(rx, NULL) == NULL,
                  "reset after checksum");
    ch[2]->data.data[100] ^= 0x40;
    fails += st_expect(wire_rejects_get(&rej_counts, WIRE_REJ_BAD_CHUNK) == 3 &&
                           wire_rejects_get(&rej_counts, WIRE_REJ_CHECKSUM) == 1,
                       "snapshot reject counters");

    /* Too big for the receiver's buffer. */
    WireSnapRx *small = wire_snap_rx_new(NULL, bytes - 4);
    rc = wire_snap_rx_accept(small, ch[0], &rej);
    fails += st_expect(rc == ERR_RANGE && rej.reason == WIRE_REJ_BAD_CHUNK, "over capacity");
    wire_snap_rx_free(&small);
    if (verbose) printf("  snapshot rx: out-of-order, duplicate, stray, corrupt, capacity ok\n");
    wire_snap_rx_free(&rx);
out:
    for (int i = 0; i < 4; i++)
        if (ch[i]) protobuf_c_message_free_unpacked(&ch[i]->base, NULL);
    free(block);
    wire_sock_free(&push);
    wire_sock_free(&pull);
    return fails;
}

/* A 20 MB snapshot from a ROUTER to a DEALER over tcp, the clone pattern's fetch. */
static int st_snapshot_tcp(void *zctx, bool verbose)
{
    int       fails = 0;
    WireSock *router = wire_sock_new(zctx, ZMQ_ROUTER, "snapshot", NULL);
    WireSock *dealer = wire_sock_new(zctx, ZMQ_DEALER, "follower", NULL);
    char      ep[256];
    if (!router || !dealer || wire_bind(router, "tcp://127.0.0.1:*") ||
        wire_last_endpoint(router, ep, sizeof ep) || wire_connect(dealer, ep)) {
        wire_sock_free(&dealer);
        wire_sock_free(&router);
        return st_expect(false, "snapshot tcp sockets");
    }
    size_t n = 5 * 1000 * 1000, bytes = n * 4;
    float *block = st_block(n, 7);
    float *dest = xmalloc(bytes);
    for (int round = 0; round < 2; round++) {
        /* Round 0: 4 MiB chunks into an owned block; round 1: default chunks into dest. */
        size_t                chunk = round == 0 ? (size_t)4 << 20 : 0;
        Rlhf__SnapshotRequest sr = RLHF__SNAPSHOT_REQUEST__INIT;
        sr.version = 1;
        sr.actor_id = (char *)"actor-1";
        fails += st_expect(wire_send(dealer, &sr.base, 0) == 0, "snapshot request");
        WireMsg                m;
        Rlhf__SnapshotRequest *req = NULL;
        if (wire_recv_decode(router, 2000, &rlhf__snapshot_request__descriptor, NULL, &m,
                             (ProtobufCMessage **)&req, NULL)) {
            fails += st_expect(false, "router gets snapshot request");
            break;
        }
        double       t0 = mono_s();
        WireSnapMeta meta = {
            .run_id = "run-a", .epoch = 3, .policy_version = 40 + round, .config_json = "{}"};
        fails +=
            st_expect(wire_snap_send(router, m.peer, m.peer_len, &meta, block, bytes, chunk) == 0,
                      "snapshot send");
        protobuf_c_message_free_unpacked(&req->base, NULL);
        wire_msg_close(&m);
        WireSnapRx *rx =
            round == 0 ? wire_snap_rx_new(NULL, (size_t)64 << 20) : wire_snap_rx_new(dest, bytes);
        int rc = 0, chunks = 0;
        while (rc == 0) {
            Rlhf__WeightChunk *c = NULL;
            WireReject         rej;
            rc = wire_recv_decode(dealer, 3000, &rlhf__weight_chunk__descriptor, NULL, &m,
                                  (ProtobufCMessage **)&c, &rej);
            if (rc) break;
            chunks++;
            rc = wire_snap_rx_accept(rx, c, &rej);
            if (rc < 0) fprintf(stderr, "wire_selftest: chunk refused: %s\n", rej.why);
            protobuf_c_message_free_unpacked(&c->base, NULL);
            wire_msg_close(&m);
        }
        size_t      got_bytes = 0;
        const void *got = wire_snap_rx_data(rx, &got_bytes);
        fails += st_expect(rc == 1 && got_bytes == bytes && !memcmp(got, block, bytes) &&
                               wire_snap_rx_policy_version(rx) == (uint64_t)(40 + round),
                           "20 MB snapshot intact");
        fails += st_expect(round == 0 || got == dest, "caller's buffer used");
        if (verbose)
            printf("  snapshot %zu bytes in %d chunks over %s: %.1f ms\n", bytes, chunks, ep,
                   1e3 * (mono_s() - t0));
        wire_snap_rx_free(&rx);
    }
    free(dest);
    free(block);
    wire_sock_free(&dealer);
    wire_sock_free(&router);
    return fails;
}

int wire_selftest(bool verbose)
{
    void *zctx = zmq_ctx_new();
    if (!zctx) {
        fprintf(stderr, "wire_selftest: zmq_ctx_new: %s\n", zmq_strerror(zmq_errno()));
        return 1;
    }
    int fails = 0;
    fails += st_checks(verbose);
    fails += st_roundtrips(zctx, "inproc://wire-rt", verbose);
    fails += st_roundtrips(zctx, "tcp://127.0.0.1:*", verbose);
    fails += st_router(zctx, verbose);
    fails += st_rejects(zctx, verbose);
    fails += st_forward(zctx, verbose);
    fails += st_snapshot_rx(zctx, verbose);
    fails += st_snapshot_tcp(zctx, verbose);
    zmq_ctx_term(zctx);
    if (verbose) printf("  wire: %d failures\n", fails);
    return fails ? 1 : 0;
}
