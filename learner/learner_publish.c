#include "learner/learner_publish.h"

#include <inttypes.h>
#include <stdlib.h>

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
}

size_t learner_publish_bytes(const Learner *l)
{
    return model_num_params(l->policy) * wire_dtype_size(l->cfg.snapshot_dtype);
}

/* The block of the current version in the wire's element type, and its
 * checksum, made once per version. */
static const void *current_block(Learner *l)
{
    size_t       n = model_num_params(l->policy);
    const float *w = model_params(learner_publish_model(l));
    const void  *block = w;
    if (l->cfg.snapshot_dtype == RLHF__WEIGHT_DTYPE__WEIGHT_DTYPE_BF16) {
        if (!l->snap_half) l->snap_half = xmalloc(sizeof(uint16_t) * n);
        block = l->snap_half;
    }
    if (l->checksum_version == l->version) return block;
    if (l->snap_half) {
        for (size_t i = 0; i < n; i++) l->snap_half[i] = half_f32_to_bf16(w[i]);
    }
    l->checksum = wire_snap_checksum(block, learner_publish_bytes(l));
    l->checksum_version = l->version;
    return block;
}

void learner_publish_snapshot(Learner *l, const WireMsg *m, ProtobufCMessage **msg)
{
    const Rlhf__SnapshotRequest *req = (const Rlhf__SnapshotRequest *)*msg;
    const void                  *block = current_block(l);
    WireSnapMeta                 meta = {.run_id = l->run_id,
                                         .epoch = l->epoch,
                                         .policy_version = (uint64_t)l->version,
                                         .config_json = l->config_json,
                                         .checksum = l->checksum,
                                         .has_checksum = true,
                                         .dtype = l->cfg.snapshot_dtype};
    size_t                       bytes = learner_publish_bytes(l);
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
    learner_metrics_snapshot(l, bytes, progress_now() - t0);
    log_debug("snapshot: version %" PRId64 " (%zu bytes) to '%.64s'", l->version, bytes,
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
