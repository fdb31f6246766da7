#include "learner/learner_publish.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "common/formats/ckpt.h"
#include "common/formats/ckpt_config.h"
#include "common/net/snapshot.h"
#include "common/nn/half.h"
#include "common/nn/lora.h"
#include "learner/learner_metrics.h"
#include "learner/learner_serve.h"

/* The snapshot config of a GGUF model names its tokenizer, and its
 * eos_token_id is the end-of-turn token, where actors stop generating. */
static void add_bpe_config(Learner *l)
{
    json_t *o = json_loads(l->config_json, 0, NULL);
    CHECK(o); /* our own JSON */
    json_object_set_new(o, "eos_token_id", json_integer(bpe_eot_id(l->bpe)));
    json_object_set_new(o, "bos_token_id", json_integer(bpe_bos_id(l->bpe)));
    json_object_set_new(o, "rlhf_tokenizer", json_string("gguf"));
    json_object_set_new(o, "rlhf_tokenizer_path", json_string(l->cfg.model_path));
    free(l->config_json);
    l->config_json = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    CHECK(l->config_json);
}

Model *learner_publish_model(Learner *l)
{
    Lora *lo = model_lora(l->policy);
    if (!lo) return l->policy;
    if (!l->merged) {
        l->merged = model_new(model_config(l->policy));
        l->merged_version = -1;
    }
    if (l->merged_version != l->version) {
        model_copy_params(l->merged, l->policy);
        lora_merge(lo, l->merged);
        l->merged_version = l->version;
    }
    return l->merged;
}

void learner_publish_config(Learner *l)
{
    l->config_json = ckpt_config_to_json(model_config(l->policy), l->tok);
    if (l->bpe) add_bpe_config(l);
    Lora *lo = model_lora(l->policy);
    if (lo) {
        json_t *o = json_loads(l->config_json, 0, NULL);
        CHECK(o); /* our own JSON */
        ckpt_lora_config_to_json(o, lora_config(lo));
        free(l->config_json);
        l->config_json = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
        json_decref(o);
        CHECK(l->config_json);
    }
}

/* Parameters in a full snapshot (the base's, plus the adapters' with LoRA)
 * and in an adapters-only one (0 without LoRA). */
static size_t full_params(const Learner *l)
{
    const Lora *lo = model_lora(l->policy);
    return model_num_params(l->policy) + (lo ? lora_num_params(lo) : 0);
}

static size_t adapter_params(const Learner *l)
{
    const Lora *lo = model_lora(l->policy);
    return lo ? lora_num_params(lo) : 0;
}

size_t learner_publish_bytes(const Learner *l)
{
    return full_params(l) * wire_dtype_size(l->cfg.snapshot_dtype);
}

size_t learner_publish_adapter_bytes(const Learner *l)
{
    return adapter_params(l) * wire_dtype_size(l->cfg.snapshot_dtype);
}

/* Writes n floats into dst in the wire's element type. */
static void to_wire(void *dst, const float *src, size_t n, int dtype)
{
    if (dtype == RLHF__WEIGHT_DTYPE__WEIGHT_DTYPE_BF16) {
        uint16_t *h = dst;
        for (size_t i = 0; i < n; i++) h[i] = half_f32_to_bf16(src[i]);
    } else {
        memcpy(dst, src, n * sizeof(float));
    }
}

/* The block of a snapshot of kind at the current version in the wire's
 * element type, its bytes and checksum, made once per version. Without LoRA
 * the block is the parameters (or their bf16 copy); with LoRA one buffer
 * holds the frozen base (written once) followed by the adapters (rewritten
 * per version), and an adapters-only snapshot is its tail. */
static const void *current_block(Learner *l, int kind, size_t *bytes, uint64_t *checksum)
{
    int    dtype = l->cfg.snapshot_dtype;
    size_t elem = wire_dtype_size(dtype), n = model_num_params(l->policy);
    Lora  *lo = model_lora(l->policy);
    void  *block;
    if (!lo) {
        block = model_params(l->policy);
        if (dtype == RLHF__WEIGHT_DTYPE__WEIGHT_DTYPE_BF16) {
            if (!l->snap_half) l->snap_half = xmalloc(sizeof(uint16_t) * n);
            block = l->snap_half;
        }
        if (l->checksum_version != l->version) {
            if (l->snap_half) to_wire(l->snap_half, model_params(l->policy), n, dtype);
            l->checksum = wire_snap_checksum(block, n * elem);
            l->checksum_version = l->version;
        }
        *bytes = n * elem;
        *checksum = l->checksum;
        return block;
    }
    size_t na = lora_num_params(lo);
    if (!l->snap_lora) {
        l->snap_lora = xmalloc((n + na) * elem);
        to_wire(l->snap_lora, model_params(l->policy), n, dtype); /* the base never changes */
        l->adapters_version = -1;
    }
    uint8_t *tail = (uint8_t *)l->snap_lora + n * elem;
    if (l->adapters_version != l->version) {
        to_wire(tail, lora_params(lo), na, dtype);
        l->checksum_adapters = wire_snap_checksum(tail, na * elem);
        l->adapters_version = l->version;
    }
    if (kind == RLHF__SNAPSHOT_KIND__SNAPSHOT_ADAPTERS) {
        *bytes = na * elem;
        *checksum = l->checksum_adapters;
        return tail;
    }
    if (l->checksum_version != l->version) {
        l->checksum = wire_snap_checksum(l->snap_lora, (n + na) * elem);
        l->checksum_version = l->version;
    }
    *bytes = (n + na) * elem;
    *checksum = l->checksum;
    return l->snap_lora;
}

/* What a SnapshotRequest gets: the whole model without LoRA; with LoRA the
 * adapters alone when the actor holds the base of this run and epoch (the
 * base is frozen for an incarnation), else the base and the adapters. */
static int snapshot_kind(const Learner *l, const Rlhf__SnapshotRequest *req)
{
    if (!model_lora(l->policy)) return RLHF__SNAPSHOT_KIND__SNAPSHOT_FULL;
    bool has_base = req->have_base && req->have_epoch == l->epoch && req->run_id &&
                    !strcmp(req->run_id, l->run_id);
    return has_base ? RLHF__SNAPSHOT_KIND__SNAPSHOT_ADAPTERS
                    : RLHF__SNAPSHOT_KIND__SNAPSHOT_BASE_ADAPTERS;
}

void learner_publish_snapshot(Learner *l, const WireMsg *m, ProtobufCMessage **msg)
{
    const Rlhf__SnapshotRequest *req = (const Rlhf__SnapshotRequest *)*msg;
    int                          kind = snapshot_kind(l, req);
    size_t                       bytes = 0;
    uint64_t                     checksum = 0;
    const void                  *block = current_block(l, kind, &bytes, &checksum);
    WireSnapMeta                 meta = {.run_id = l->run_id,
                                         .epoch = l->epoch,
                                         .policy_version = (uint64_t)l->version,
                                         .config_json = l->config_json,
                                         .checksum = checksum,
                                         .has_checksum = true,
                                         .dtype = l->cfg.snapshot_dtype,
                                         .kind = kind};
    size_t                       chunk = (size_t)l->cfg.chunk_bytes;
    double                       t0 = progress_now();
    /* One snapshot queued per peer, and a budget over all of them: a peer
     * that asks again and again without reading is refused, not fed. */
    WireReject rej;
    int        rc = wire_snap_out_admit(l->snap_out, m->peer, m->peer_len,
                                        wire_snap_packed_bytes(&meta, bytes, chunk), &rej);
    if (rc) {
        learner_serve_refuse(l->s_snap, m, "SnapshotRequest", rc, &rej);
        return;
    }
    rc = wire_snap_out_send(l->snap_out, l->s_snap, m->peer, m->peer_len, &meta, block, bytes,
                            chunk);
    if (rc) {
        log_warn("snapshot: version %" PRId64 " to '%.64s' not sent (%s)", l->version,
                 req->actor_id, err_str(rc));
        return;
    }
    l->snapshots_served++;
    if (kind == RLHF__SNAPSHOT_KIND__SNAPSHOT_ADAPTERS) l->snapshots_adapters++;
    learner_metrics_snapshot(l, bytes, progress_now() - t0);
    log_debug("snapshot: version %" PRId64 " (%zu bytes, %s) to '%.64s'", l->version, bytes,
              kind == RLHF__SNAPSHOT_KIND__SNAPSHOT_ADAPTERS        ? "adapters only"
              : kind == RLHF__SNAPSHOT_KIND__SNAPSHOT_BASE_ADAPTERS ? "base and adapters"
                                                                    : "full",
              req->actor_id);
}

void learner_publish_announce(Learner *l)
{
    Rlhf__WeightAnnounce a = RLHF__WEIGHT_ANNOUNCE__INIT;
    a.version = WIRE_PROTOCOL_VERSION;
    a.run_id = l->run_id;
    a.epoch = l->epoch;
    a.policy_version = (uint64_t)l->version;
    a.total_bytes = learner_publish_bytes(l);
    int rc = wire_send(l->s_weights, &a.base, ZMQ_DONTWAIT);
    if (rc && rc != ERR_AGAIN) log_warn("weights: announce not sent (%s)", err_str(rc));
}
