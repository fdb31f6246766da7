#include "common/net/snapshot.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "common/base/err.h"
#include "common/base/log.h"

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
                  wire_sock_name(s), index, bytes, chunk_bytes, (unsigned long long)count, cfg_len,
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

    return wire_send_any(s, "wire_snap_send_chunk", peer, peer_len, &c.base, 0);
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
        return wire_reject_set(rej, ERR_RANGE, WIRE_REJ_BAD_CHUNK,
                               "snapshot of %llu bytes, expected at most %zu",
                               (unsigned long long)c->total_bytes, rx->cap);
    if (rx->is_owned && rx->alloc != c->total_bytes) {
        free(rx->buf);
        rx->alloc = 0;
        /* Plain malloc: a peer-chosen size must not abort the process. */
        rx->buf = malloc((size_t)c->total_bytes);
        if (!rx->buf)
            return wire_reject_set(rej, ERR_RANGE, WIRE_REJ_BAD_CHUNK,
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
        return wire_reject_set(rej, ERR_MISMATCH, WIRE_REJ_BAD_CHUNK,
                               "chunk %u after the snapshot was complete (reset first)",
                               c->chunk_index);
    if (rx->is_started &&
        (strcmp(rx->run_id, c->run_id ? c->run_id : "") || rx->epoch != c->epoch ||
         rx->policy_version != c->policy_version || rx->total != c->total_bytes ||
         rx->count != c->chunk_count || rx->checksum != c->checksum))
        return wire_reject_set(
            rej, ERR_MISMATCH, WIRE_REJ_BAD_CHUNK,
            "chunk %u of snapshot (run '%s' epoch %llu v%llu, %llu bytes in %u chunks) "
            "while assembling (run '%s' epoch %llu v%llu, %llu bytes in %u chunks)",
            c->chunk_index, c->run_id, (unsigned long long)c->epoch,
            (unsigned long long)c->policy_version, (unsigned long long)c->total_bytes,
            c->chunk_count, rx->run_id, (unsigned long long)rx->epoch,
            (unsigned long long)rx->policy_version, (unsigned long long)rx->total, rx->count);
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
        return wire_reject_set(
            rej, ERR_MISMATCH, WIRE_REJ_BAD_CHUNK,
            "chunk %u/%u at offset %llu with %llu bytes does not fit the chunk grid "
            "(stride %llu, total %llu)",
            c->chunk_index, c->chunk_count, (unsigned long long)c->offset, (unsigned long long)len,
            (unsigned long long)rx->stride, (unsigned long long)c->total_bytes);
    if (!rx->is_started && (rc = rx_start(rx, c, rej))) return rc;
    if (rx->have[c->chunk_index])
        return wire_reject_set(rej, ERR_MISMATCH, WIRE_REJ_BAD_CHUNK, "chunk %u/%u arrived twice",
                               c->chunk_index, c->chunk_count);
    rx->stride = stride;
    if (c->chunk_index == 0) rx->config = xstrdup(c->config_json ? c->config_json : "");
    memcpy(rx->buf + c->offset, c->data.data, (size_t)len);
    rx->have[c->chunk_index] = 1;
    rx->n_have++;
    if (rx->n_have < rx->count) return 0;
    uint64_t got = wire_snap_checksum(rx->buf, (size_t)rx->total);
    if (got != rx->checksum) {
        wire_reject_set(rej, ERR_MISMATCH, WIRE_REJ_CHECKSUM,
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
