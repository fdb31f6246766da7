#include "common/net/snapshot.h"

#include <errno.h>
#include <stdatomic.h>
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

/* Fills c with chunk `index` of block (its data borrowed from block),
 * after checking the block, the chunk size and meta. Returns 0 or ERR_ARG
 * (logged, naming fn and socket). */
static int chunk_of(const char *fn, const char *sock, const WireSnapMeta *meta, const void *block,
                    size_t bytes, size_t chunk_bytes, uint32_t index, Rlhf__WeightChunk *c)
{
    if (chunk_bytes == 0) chunk_bytes = WIRE_CHUNK_BYTES;
    size_t   cfg_len = meta->config_json ? strlen(meta->config_json) : 0;
    uint64_t count = bytes && chunk_bytes ? (bytes + chunk_bytes - 1) / chunk_bytes : 0;
    size_t   elem = wire_dtype_size(meta->dtype);
    if (elem == 0 || bytes == 0 || bytes % elem || bytes > WIRE_MAX_SNAPSHOT_BYTES ||
        chunk_bytes % 4 || chunk_bytes > WIRE_MAX_CHUNK_BYTES || count > WIRE_MAX_CHUNKS ||
        index >= count || !meta->has_checksum || cfg_len > WIRE_MAX_CONFIG_JSON ||
        (meta->run_id && strlen(meta->run_id) > WIRE_MAX_NAME)) {
        log_error("%s: socket '%s': chunk %u of %zu bytes at %zu per chunk "
                  "(%llu chunks, config %zu bytes, checksum %s, dtype %d): expected a known "
                  "dtype, a positive multiple of its size up to %llu bytes, chunk size a "
                  "multiple of 4 up to %zu, at most %d chunks, config up to %zu bytes and a "
                  "checksum",
                  fn, sock, index, bytes, chunk_bytes, (unsigned long long)count, cfg_len,
                  meta->has_checksum ? "set" : "missing", meta->dtype,
                  (unsigned long long)WIRE_MAX_SNAPSHOT_BYTES, WIRE_MAX_CHUNK_BYTES,
                  WIRE_MAX_CHUNKS, WIRE_MAX_CONFIG_JSON);
        return ERR_ARG;
    }
    size_t offset = (size_t)index * chunk_bytes;
    size_t len = bytes - offset < chunk_bytes ? bytes - offset : chunk_bytes;

    *c = (Rlhf__WeightChunk)RLHF__WEIGHT_CHUNK__INIT;
    c->version = WIRE_PROTOCOL_VERSION;
    /* protobuf-c's pack only reads these strings and the data. */
    c->run_id = (char *)(meta->run_id ? meta->run_id : "");
    c->epoch = meta->epoch;
    c->policy_version = meta->policy_version;
    c->chunk_index = index;
    c->chunk_count = (uint32_t)count;
    c->total_bytes = bytes;
    c->offset = offset;
    c->data.data = block ? (uint8_t *)block + offset : NULL; /* NULL: only sized */
    c->data.len = len;
    c->config_json = (char *)(index == 0 && meta->config_json ? meta->config_json : "");
    c->checksum = meta->checksum;
    c->dtype = (Rlhf__WeightDtype)meta->dtype;
    c->kind = (Rlhf__SnapshotKind)meta->kind;
    return 0;
}

int wire_snap_send_chunk(WireSock *s, const void *peer, size_t peer_len, const WireSnapMeta *meta,
                         const void *block, size_t bytes, size_t chunk_bytes, uint32_t index)
{
    Rlhf__WeightChunk c;
    int rc = chunk_of("wire_snap_send_chunk", wire_sock_name(s), meta, block, bytes, chunk_bytes,
                      index, &c);
    if (rc) return rc;
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

size_t wire_snap_packed_bytes(const WireSnapMeta *meta, size_t bytes, size_t chunk_bytes)
{
    WireSnapMeta m = *meta;
    if (!m.has_checksum) {
        /* Varints: the largest value packs longest, so this is a bound. */
        m.checksum = UINT64_MAX;
        m.has_checksum = true;
    }
    uint32_t count = wire_snap_chunk_count(bytes, chunk_bytes);
    size_t   total = 0;
    for (uint32_t i = 0; i < count; i++) {
        Rlhf__WeightChunk c;
        /* Validated again when sent; a bad block packs to nothing here. */
        if (bytes == 0 || bytes > WIRE_MAX_SNAPSHOT_BYTES ||
            chunk_of("wire_snap_packed_bytes", "-", &m, NULL, bytes, chunk_bytes, i, &c))
            return 0;
        total += protobuf_c_message_get_packed_size(&c.base);
    }
    return total;
}

/* ---- Queued output ------------------------------------------------------ */

typedef struct WireSnapOut WireSnapOut;

/* One transfer to one peer: what ZeroMQ still holds of it. The counts are
 * lowered by the frames' free callback on ZeroMQ's I/O threads; the record
 * is freed by the ledger's thread once frames reaches 0 (the callback's
 * last touch of it). */
typedef struct {
    WireSnapOut     *out;
    uint8_t          peer[WIRE_MAX_IDENTITY];
    size_t           peer_len;
    _Atomic size_t   bytes;  /* packed bytes ZeroMQ holds */
    _Atomic uint32_t frames; /* frames ZeroMQ holds */
} Transfer;

struct WireSnapOut {
    size_t         budget;
    _Atomic size_t queued; /* bytes ZeroMQ holds, all transfers */
    Transfer     **x;      /* transfers with frames queued (and done ones not yet reaped) */
    int            n, cap;
};

/* What precedes every packed frame in its buffer: the free callback's hint. */
typedef struct {
    Transfer *x;
    size_t    len;
} FrameHead;

/* ZeroMQ is done with a frame (sent, or dropped with its connection): may
 * run on an I/O thread. */
static void on_frame_free(void *data, void *hint)
{
    (void)data;
    FrameHead *h = hint;
    Transfer  *x = h->x;
    atomic_fetch_sub(&x->out->queued, h->len);
    atomic_fetch_sub(&x->bytes, h->len);
    atomic_fetch_sub_explicit(&x->frames, 1, memory_order_release); /* last touch of x */
    free(h);
}

WireSnapOut *wire_snap_out_new(size_t budget_bytes)
{
    CHECK(budget_bytes > 0);
    WireSnapOut *o = xcalloc(1, sizeof *o);
    o->budget = budget_bytes;
    atomic_init(&o->queued, 0);
    return o;
}

/* Frees the records of transfers ZeroMQ has let go of entirely. */
static void reap(WireSnapOut *o)
{
    for (int i = 0; i < o->n;) {
        if (atomic_load_explicit(&o->x[i]->frames, memory_order_acquire) == 0) {
            free(o->x[i]);
            o->x[i] = o->x[--o->n];
        } else {
            i++;
        }
    }
}

void wire_snap_out_free(WireSnapOut **op)
{
    if (!op || !*op) return;
    WireSnapOut *o = *op;
    *op = NULL;
    reap(o);
    if (o->n > 0) {
        /* Freeing them would leave ZeroMQ's callbacks writing freed memory. */
        log_warn("wire_snap_out_free: %d transfer(s) still hold %zu bytes in ZeroMQ; the ledger "
                 "is left allocated",
                 o->n, atomic_load(&o->queued));
        return;
    }
    free(o->x);
    free(o);
}

static Transfer *find_transfer(WireSnapOut *o, const void *peer, size_t peer_len)
{
    for (int i = 0; i < o->n; i++)
        if (o->x[i]->peer_len == peer_len && !memcmp(o->x[i]->peer, peer, peer_len)) return o->x[i];
    return NULL;
}

/* Up to 8 bytes of a routing id in hex, for messages. */
static void peer_hex(const void *peer, size_t len, char out[20])
{
    size_t n = len < 8 ? len : 8;
    for (size_t i = 0; i < n; i++) snprintf(out + 2 * i, 3, "%02x", ((const uint8_t *)peer)[i]);
    if (len > 8) snprintf(out + 16, 4, "..");
    if (n == 0) out[0] = '\0';
}

int wire_snap_out_admit(WireSnapOut *o, const void *peer, size_t peer_len, size_t frame_bytes,
                        WireReject *rej)
{
    reap(o);
    char      hex[20];
    Transfer *x = find_transfer(o, peer, peer_len);
    if (x) {
        peer_hex(peer, peer_len, hex);
        return wire_reject_set(rej, ERR_AGAIN, WIRE_REJ_BUSY,
                               "peer %s: its last snapshot is still queued (%zu bytes in %u "
                               "frames); one at a time per peer",
                               hex, atomic_load(&x->bytes), atomic_load(&x->frames));
    }
    size_t queued = atomic_load(&o->queued);
    if (queued + frame_bytes > o->budget) {
        peer_hex(peer, peer_len, hex);
        return wire_reject_set(rej, ERR_RANGE, WIRE_REJ_OVER_BUDGET,
                               "peer %s: a snapshot of %zu bytes on top of %zu queued for %d "
                               "peer(s) exceeds the budget of %zu bytes",
                               hex, frame_bytes, queued, o->n, o->budget);
    }
    return 0;
}

/* Sends one packed frame to peer through the ledger: the buffer goes to
 * ZeroMQ, which frees it through on_frame_free. */
static int send_tracked(WireSnapOut *o, Transfer *x, WireSock *s, const void *peer, size_t peer_len,
                        const Rlhf__WeightChunk *c)
{
    size_t     len = protobuf_c_message_get_packed_size(&c->base);
    FrameHead *h = xmalloc(sizeof *h + len);
    h->x = x;
    h->len = len;
    uint8_t *data = (uint8_t *)(h + 1);
    CHECK(protobuf_c_message_pack(&c->base, data) == len);
    atomic_fetch_add(&o->queued, len);
    atomic_fetch_add(&x->bytes, len);
    atomic_fetch_add(&x->frames, 1);
    zmq_msg_t frame;
    /* From here ZeroMQ owns the buffer: on_frame_free runs even if the send fails. */
    CHECK(zmq_msg_init_data(&frame, data, len, on_frame_free, h) == 0);
    void *zs = wire_sock_zmq(s);
    int   e = 0;
    if (zmq_send(zs, peer, peer_len, ZMQ_SNDMORE) < 0)
        e = zmq_errno();
    else if (zmq_msg_send(&frame, zs, 0) < 0)
        e = zmq_errno();
    if (!e) return 0;
    zmq_msg_close(&frame);
    if (e == EAGAIN || e == EINTR) return ERR_AGAIN;
    if (e == EHOSTUNREACH) return ERR_NOTFOUND;
    log_error("wire_snap_out_send: socket '%s': send: %s", wire_sock_name(s), zmq_strerror(e));
    return ERR_IO;
}

int wire_snap_out_send(WireSnapOut *o, WireSock *s, const void *peer, size_t peer_len,
                       const WireSnapMeta *meta, const void *block, size_t bytes,
                       size_t chunk_bytes)
{
    CHECK(wire_sock_type(s) == ZMQ_ROUTER && peer && peer_len > 0 && peer_len <= WIRE_MAX_IDENTITY);
    WireSnapMeta m = *meta;
    if (!m.has_checksum) {
        m.checksum = wire_snap_checksum(block, bytes);
        m.has_checksum = true;
    }
    uint32_t count = wire_snap_chunk_count(bytes, chunk_bytes);
    if (count == 0) count = 1; /* let chunk_of report the empty block */
    reap(o);
    Transfer *x = xcalloc(1, sizeof *x);
    x->out = o;
    memcpy(x->peer, peer, peer_len);
    x->peer_len = peer_len;
    atomic_init(&x->bytes, 0);
    atomic_init(&x->frames, 0);
    if (o->n == o->cap) {
        o->cap = o->cap ? 2 * o->cap : 8;
        o->x = xrealloc(o->x, sizeof(Transfer *) * (size_t)o->cap);
    }
    o->x[o->n++] = x; /* reaped once ZeroMQ lets go of its frames */
    for (uint32_t i = 0; i < count; i++) {
        Rlhf__WeightChunk c;
        int               rc =
            chunk_of("wire_snap_out_send", wire_sock_name(s), &m, block, bytes, chunk_bytes, i, &c);
        if (!rc) rc = send_tracked(o, x, s, peer, peer_len, &c);
        if (rc) return rc;
    }
    return 0;
}

size_t wire_snap_out_queued(const WireSnapOut *o)
{
    return atomic_load(&((WireSnapOut *)o)->queued);
}

int wire_snap_out_transfers(WireSnapOut *o)
{
    reap(o);
    return o->n;
}

size_t wire_snap_out_budget(const WireSnapOut *o)
{
    return o->budget;
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
    int      dtype;  /* Rlhf__WeightDtype of the block */
    int      kind;   /* Rlhf__SnapshotKind of the block */
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
    rx->dtype = (int)c->dtype;
    rx->kind = (int)c->kind;
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
         rx->count != c->chunk_count || rx->checksum != c->checksum || rx->dtype != (int)c->dtype ||
         rx->kind != (int)c->kind))
        return wire_reject_set(
            rej, ERR_MISMATCH, WIRE_REJ_BAD_CHUNK,
            "chunk %u of snapshot (run '%s' epoch %llu v%llu, %llu bytes in %u chunks, dtype "
            "%d) while assembling (run '%s' epoch %llu v%llu, %llu bytes in %u chunks, dtype %d)",
            c->chunk_index, c->run_id, (unsigned long long)c->epoch,
            (unsigned long long)c->policy_version, (unsigned long long)c->total_bytes,
            c->chunk_count, (int)c->dtype, rx->run_id, (unsigned long long)rx->epoch,
            (unsigned long long)rx->policy_version, (unsigned long long)rx->total, rx->count,
            rx->dtype);
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

int wire_snap_rx_dtype(const WireSnapRx *rx)
{
    return rx->dtype;
}

int wire_snap_rx_kind(const WireSnapRx *rx)
{
    return rx->kind;
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
