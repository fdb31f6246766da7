#include "actor/actor_weights.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/base/err.h"
#include "common/nn/half.h"
#include "common/base/log.h"
#include "common/base/progress.h"
#include "common/formats/ckpt.h"
#include "common/formats/ckpt_config.h"
#include "common/formats/tok.h"
#include "common/nn/lora.h"

/* Back-off between failed snapshot fetches, doubling from MIN to MAX. */
#define ACTOR_BACKOFF_MIN_MS 100
#define ACTOR_BACKOFF_MAX_MS 2000
/* Seconds between log lines while snapshot fetches keep failing. */
#define ACTOR_FETCH_LOG_S 10.0

void actor_weights_format(const WeightsId *w, char *buf, size_t cap)
{
    snprintf(buf, cap, "run '%s' epoch %llu v%llu", w->run_id, (unsigned long long)w->epoch,
             (unsigned long long)w->version);
}

/* Widens n elements of the wire's type (bf16 or f32) into dst. bf16 widens
 * to f32 exactly: the actor then holds the learner's weights rounded once,
 * and a bf16 decode copy of them is lossless. */
static void from_wire(float *dst, const void *src, size_t n, size_t elem)
{
    if (elem == 2) {
        const uint16_t *h = src;
        for (size_t i = 0; i < n; i++) dst[i] = half_bf16_to_f32(h[i]);
    } else {
        memcpy(dst, src, n * sizeof(float));
    }
}

/* Forgets the base and adapters of a LoRA run: the held weights are whole. */
static void drop_base(Actor *a)
{
    free(a->base);
    a->base = NULL;
    lora_free(&a->lora);
}

static bool lora_config_same(const Lora *lo, const LoraConfig *lc)
{
    const LoraConfig *h = lora_config(lo);
    return h->rank == lc->rank && h->alpha == lc->alpha && h->targets == lc->targets;
}

/* Makes the complete snapshot in a->rx the held weights: checks its config,
 * size and values, then copies the whole block over the parameters (or
 * builds a new model when the config changed). A LoRA run's snapshot holds
 * the frozen base and the adapters, or the adapters alone for the base held
 * already: the base is kept, and the parameters become base + the adapters
 * merged, so a new version replaces the previous merge. Returns 0,
 * ERR_FORMAT, or ERR_MISMATCH for adapters whose base is not held (then the
 * base is forgotten, so the next request asks for it); refusals counted
 * and logged. */
static int install_snapshot(Actor *a)
{
    size_t      bytes = 0;
    const void *data = wire_snap_rx_data(a->rx, &bytes);
    CHECK(data);
    WeightsId id;
    actor_copy_str(id.run_id, sizeof id.run_id, wire_snap_rx_run_id(a->rx));
    id.epoch = wire_snap_rx_epoch(a->rx);
    id.version = wire_snap_rx_policy_version(a->rx);
    char name[200];
    actor_weights_format(&id, name, sizeof name);
    if (actor_has_weights(a) && !strcmp(id.run_id, a->held.run_id) && id.epoch == a->held.epoch &&
        id.version == a->held.version) {
        log_debug("actor %s: snapshot %s is the one held", a->id, name);
        return 0;
    }
    ModelConfig mc;
    LoraConfig  lc = {0};
    int         eos = TOK_EOS, kind = wire_snap_rx_kind(a->rx);
    bool        is_lora = kind != RLHF__SNAPSHOT_KIND__SNAPSHOT_FULL;
    /* The same rules as a checkpoint's config.json; the reason is logged there. */
    if (ckpt_config_from_json(name, wire_snap_rx_config(a->rx), &mc, &eos) != 0 ||
        (is_lora && ckpt_lora_config_from_json(name, wire_snap_rx_config(a->rx), &mc, &lc))) {
        actor_refuse(a, "snapshot", WIRE_REJ_BAD_VALUE, "%s: config refused", name);
        return ERR_FORMAT;
    }
    if (kind == RLHF__SNAPSHOT_KIND__SNAPSHOT_ADAPTERS &&
        !(a->base && a->lora && actor_held_matches(a, id.run_id, id.epoch) &&
          model_config_equal(model_config(a->model), &mc) && lora_config_same(a->lora, &lc))) {
        drop_base(a);
        actor_refuse(a, "snapshot", WIRE_REJ_BAD_RUN,
                     "%s: adapters for a base this actor does not hold; asking for the base", name);
        return ERR_MISMATCH;
    }
    /* Weighed before any model is built from it: a peer cannot make the
     * actor allocate for a config it did not send the weights of. */
    uint64_t n = model_config_num_params(&mc), na = is_lora ? lora_config_num_params(&lc, &mc) : 0;
    uint64_t want = kind == RLHF__SNAPSHOT_KIND__SNAPSHOT_ADAPTERS ? na : n + na;
    int      dtype = wire_snap_rx_dtype(a->rx);
    size_t   elem = wire_dtype_size(dtype);
    if (want * elem != bytes) {
        actor_refuse(a, "snapshot", WIRE_REJ_BAD_SHAPE,
                     "%s: %zu bytes of %s, but its config implies %llu parameters (%llu bytes)",
                     name, bytes, elem == 2 ? "bf16" : "f32", (unsigned long long)want,
                     (unsigned long long)(want * elem));
        return ERR_FORMAT;
    }
    /* Every value finite, checked in the wire's own type before any is used. */
    for (size_t i = 0; i < want; i++) {
        float v =
            elem == 2 ? half_bf16_to_f32(((const uint16_t *)data)[i]) : ((const float *)data)[i];
        if (!isfinite(v)) {
            actor_refuse(a, "snapshot", WIRE_REJ_NONFINITE, "%s: parameter %zu is %g", name, i,
                         (double)v);
            return ERR_FORMAT;
        }
    }
    if (!a->model || !model_config_equal(model_config(a->model), &mc)) {
        Model *m = model_new(&mc);
        if (model_num_params(m) != n) {
            /* config_num_params disagrees with model.h's layout: a bug here. */
            actor_refuse(a, "snapshot", WIRE_REJ_BAD_SHAPE,
                         "%s: model has %zu parameters, expected %llu", name, model_num_params(m),
                         (unsigned long long)n);
            model_free(&m);
            return ERR_FORMAT;
        }
        gen_free(&a->gen);
        a->gen_max_len = 0;
        model_free(&a->model);
        drop_base(a);
        a->model = m;
        log_info("actor %s: model: dim %d, %d layers, %d heads (%d kv), hidden %d, vocab %d, "
                 "max_seq_len %d, %zu parameters",
                 a->id, mc.dim, mc.n_layers, mc.n_heads, mc.n_kv_heads, mc.hidden_dim,
                 mc.vocab_size, mc.max_seq_len, model_num_params(m));
    }
    /* The swap: whole, while no sequence is being generated (actor_work). */
    float *w = model_params(a->model);
    if (!is_lora) {
        drop_base(a);
        from_wire(w, data, n, elem);
    } else {
        const uint8_t *adapters = data;
        if (kind == RLHF__SNAPSHOT_KIND__SNAPSHOT_BASE_ADAPTERS) {
            if (!a->base) a->base = xmalloc(n * sizeof(float));
            from_wire(a->base, data, n, elem);
            adapters += n * elem;
            if (a->lora && !lora_config_same(a->lora, &lc)) lora_free(&a->lora);
            if (!a->lora) a->lora = lora_new(&lc, &mc);
        }
        from_wire(lora_params(a->lora), adapters, na, elem);
        memcpy(w, a->base, n * sizeof(float));
        lora_merge(a->lora, a->model);
    }
    /* Decoding reads its own copy in the configured precision (fp32 if the
     * weights do not fit it, logged there). */
    model_set_decode_type(a->model, (KernType)a->cfg.decode_weights);
    /* A new version of the same run and epoch is routine; anything else is news. */
    bool is_routine =
        actor_has_weights(a) && !strcmp(id.run_id, a->held.run_id) && id.epoch == a->held.epoch;
    a->eos_id = eos;
    a->held = id;
    a->st.snapshots++;
    a->st.snapshot_bytes += bytes;
    if (kind == RLHF__SNAPSHOT_KIND__SNAPSHOT_ADAPTERS) a->st.snapshots_adapters++;
    log_msg(is_routine ? LOG_DEBUG : LOG_INFO, "actor %s: weights %s installed (%zu bytes%s)",
            a->id, name, bytes,
            kind == RLHF__SNAPSHOT_KIND__SNAPSHOT_ADAPTERS        ? ", LoRA adapters alone"
            : kind == RLHF__SNAPSHOT_KIND__SNAPSHOT_BASE_ADAPTERS ? ", LoRA base and adapters"
                                                                  : "");
    return 0;
}

/* Reads and discards frames left on the snapshot socket by an earlier
 * request (the rest of an answer that came too late), validating each. */
static void drain_snapshot(Actor *a)
{
    for (;;) {
        ProtobufCMessage *m = NULL;
        int               rc = actor_recv(a, a->snap, 0, &rlhf__weight_chunk__descriptor, &m);
        if (m) protobuf_c_message_free_unpacked(m, NULL);
        if (rc == ERR_TIMEOUT || rc == ERR_AGAIN || rc == ERR_IO) return;
    }
}

/* One fetch: SnapshotRequest, then chunks until the snapshot is complete
 * and installed. Returns 0, ACTOR_STOPPED, or a negative code when this
 * attempt failed (no learner, silence, a refused snapshot). */
static int fetch_once(Actor *a)
{
    drain_snapshot(a);
    wire_snap_rx_reset(a->rx);
    Rlhf__SnapshotRequest req = RLHF__SNAPSHOT_REQUEST__INIT;
    req.version = WIRE_PROTOCOL_VERSION;
    req.run_id = a->held.run_id;
    req.actor_id = a->id;
    req.have_policy_version = a->held.version;
    req.have_epoch = a->held.epoch;
    /* The base is kept only with the held weights of its run and epoch. */
    req.have_base = a->base != NULL;
    int rc = wire_send(a->snap, &req.base, ZMQ_DONTWAIT);
    if (rc == ERR_AGAIN) return ERR_TIMEOUT; /* no learner connected yet */
    if (rc) return rc;
    double t_last = progress_now();
    while (!actor_is_stopped(a)) {
        Rlhf__WeightChunk *c = NULL;
        rc = actor_recv(a, a->snap, a->cfg.poll_ms, &rlhf__weight_chunk__descriptor,
                        (ProtobufCMessage **)&c);
        if (rc == 1) return ERR_UNSUPPORTED; /* the learner refused: try again later */
        if (rc == ERR_IO) return rc;
        if (rc) { /* nothing yet, EINTR, or a refused frame */
            if (progress_now() - t_last > a->cfg.snapshot_timeout_ms / 1000.0) {
                uint32_t have, count;
                wire_snap_rx_progress(a->rx, &have, &count);
                log_warn("actor %s: snapshot: no chunk for %d ms (%u of %u received); asking "
                         "again",
                         a->id, a->cfg.snapshot_timeout_ms, have, count);
                return ERR_TIMEOUT;
            }
            continue;
        }
        t_last = progress_now();
        WireReject rej;
        uint32_t   have, count;
        wire_snap_rx_progress(a->rx, &have, &count);
        rc = wire_snap_rx_accept(a->rx, c, &rej);
        if (rc < 0 && rej.reason == WIRE_REJ_BAD_CHUNK && c->chunk_index == 0 && have > 0) {
            /* A whole new answer began (an earlier request's, or the same
             * snapshot sent again): assemble that one instead. */
            wire_snap_rx_reset(a->rx);
            rc = wire_snap_rx_accept(a->rx, c, &rej);
        }
        protobuf_c_message_free_unpacked(&c->base, NULL);
        if (rc < 0) {
            wire_reject_note(wire_sock_rejects(a->snap), wire_sock_name(a->snap), "WeightChunk",
                             &rej);
            if (rej.reason == WIRE_REJ_CHECKSUM) return ERR_MISMATCH;
            continue;
        }
        if (rc == 1) return install_snapshot(a);
    }
    return ACTOR_STOPPED;
}

int actor_fetch_attempt(Actor *a, int *retry_ms)
{
    double t0 = progress_now();
    int    rc = fetch_once(a);
    if (rc == 0) {
        if (a->n_fetch_fails > 0)
            log_info("actor %s: snapshot received after %d failed attempt(s)", a->id,
                     a->n_fetch_fails);
        a->is_fetch_due = false;
        a->backoff_ms = ACTOR_BACKOFF_MIN_MS;
        a->n_fetch_fails = 0;
        log_debug("actor %s: snapshot fetched in %.3f s", a->id, progress_now() - t0);
        return 0;
    }
    if (rc == ACTOR_STOPPED || rc == ERR_IO) return rc;
    a->st.snapshot_failures++;
    /* Once when the learner goes missing, then every few seconds. */
    if (a->n_fetch_fails++ == 0 || progress_now() - a->t_fetch_log > ACTOR_FETCH_LOG_S) {
        log_info("actor %s: waiting for the learner's snapshot at %s (%s; %d attempt(s))", a->id,
                 a->cfg.snapshot_ep, rc == ERR_TIMEOUT ? "no learner or no answer" : err_str(rc),
                 a->n_fetch_fails);
        a->t_fetch_log = progress_now();
    }
    *retry_ms = a->backoff_ms;
    a->backoff_ms =
        a->backoff_ms * 2 > ACTOR_BACKOFF_MAX_MS ? ACTOR_BACKOFF_MAX_MS : a->backoff_ms * 2;
    return rc;
}

/* Waits ms, looking at the stop flag every poll_ms. Returns ACTOR_STOPPED or 0. */
static int wait_ms(Actor *a, int ms)
{
    double end = progress_now() + ms / 1000.0;
    while (!actor_is_stopped(a)) {
        double left = end - progress_now();
        if (left <= 0) return 0;
        int             step = (int)(left * 1000.0) + 1;
        int             nap = step < a->cfg.poll_ms ? step : a->cfg.poll_ms;
        struct timespec ts = {nap / 1000, (long)(nap % 1000) * 1000000L};
        /* An interrupted sleep is fine: the loop looks at the stop flag. */
        nanosleep(&ts, NULL);
    }
    return ACTOR_STOPPED;
}

int actor_fetch(Actor *a, int max_attempts)
{
    for (int k = 0; max_attempts == 0 || k < max_attempts; k++) {
        int retry_ms = 0;
        int rc = actor_fetch_attempt(a, &retry_ms);
        if (rc == 0 || rc == ACTOR_STOPPED || rc == ERR_IO) return rc;
        if (wait_ms(a, retry_ms)) return ACTOR_STOPPED;
        if (k + 1 == max_attempts) return rc;
    }
    return ERR_TIMEOUT;
}

bool actor_held_matches(const Actor *a, const char *run_id, uint64_t epoch)
{
    return actor_has_weights(a) && !strcmp(a->held.run_id, run_id) && a->held.epoch == epoch;
}

/* Whether an announce of (run, epoch, version) asks for a fetch: whenever
 * the learner's weights differ from the held ones in any direction. Another
 * run or epoch is another incarnation of the learner (epochs never repeat
 * within a run and are compared for equality only: learner/epoch.h), be its
 * numbers higher or lower. Within one incarnation versions only grow, so a
 * higher version is news at once; a lower one is usually an announce that
 * waited in the queue while a fetch got a newer snapshot, so it asks for a
 * fetch only when the learner repeats it (it re-announces its current
 * version every second): a learner really behind the held weights (an
 * incarnation that reused an epoch) is still followed. */
static bool announce_differs(Actor *a, const char *run, uint64_t epoch, uint64_t version)
{
    bool is_same = !strcmp(run, a->held.run_id) && epoch == a->held.epoch;
    if (!is_same || version > a->held.version) {
        a->n_behind = 0;
        return true;
    }
    if (version == a->held.version) {
        a->n_behind = 0;
        return false;
    }
    if (a->n_behind > 0 && a->behind.version == version && a->behind.epoch == epoch &&
        !strcmp(a->behind.run_id, run))
        return ++a->n_behind >= 2;
    actor_copy_str(a->behind.run_id, sizeof a->behind.run_id, run);
    a->behind.epoch = epoch;
    a->behind.version = version;
    a->n_behind = 1;
    return false;
}

int actor_on_announce(Actor *a, const ProtobufCMessage *msg)
{
    const Rlhf__WeightAnnounce *w = (const Rlhf__WeightAnnounce *)msg;
    const char                 *run = w->run_id ? w->run_id : "";
    if (!actor_has_weights(a)) return 0; /* the first fetch is under way anyway */
    if (!announce_differs(a, run, w->epoch, w->policy_version)) return 0;
    /* The same announcement twice (or a bogus one the learner's snapshot
     * did not confirm) triggers one fetch, not one per repeat. */
    if (!strcmp(run, a->announced.run_id) && w->epoch == a->announced.epoch &&
        w->policy_version == a->announced.version)
        return 0;
    actor_copy_str(a->announced.run_id, sizeof a->announced.run_id, run);
    a->announced.epoch = w->epoch;
    a->announced.version = w->policy_version;
    actor_want_fetch(a);
    log_debug("actor %s: announce run '%s' epoch %llu v%llu", a->id, run,
              (unsigned long long)w->epoch, (unsigned long long)w->policy_version);
    return 0;
}
