/* snapshot: weight snapshots sent as a sequence of WeightChunk frames and
 * assembled, checked and checksummed on the other side (the weight path's
 * clone pattern: a follower fetches the current snapshot from a ROUTER, then
 * follows updates).
 *
 * Ownership. wire_snap_send and wire_snap_send_chunk borrow the parameter
 * block only for the duration of the call. A WireSnapRx is owned by its
 * caller (wire_snap_rx_free); it writes into the caller's buffer or owns a
 * block it allocates, which wire_snap_rx_take hands over.
 *
 * Threading. A WireSnapRx, like the WireSock it is fed from, belongs to one
 * thread. A WireSnapOut belongs to the thread of its socket, but ZeroMQ's
 * I/O threads release its frames: its byte and frame counts are atomics.
 *
 * Errors. Functions that can fail return 0 or a negative ERR_* code from
 * common/base/err.h. Sending failures are logged as in common/net/zsock.h;
 * refused chunks are reported in a WireReject and not logged (the caller
 * counts them with wire_reject_note). */
#ifndef RLHF_SNAPSHOT_H
#define RLHF_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/net/reject.h"
#include "common/net/wire.h"
#include "common/net/zsock.h"

#define WIRE_CHUNK_BYTES ((size_t)8 << 20) /* default snapshot chunk size */

/* The block is cut into chunk_count = ceil(total_bytes / S) WeightChunks of
 * S bytes each, the last one shorter or equal; chunk i has offset i * S.
 * Every chunk carries the run id, epoch, policy version, total_bytes,
 * chunk_count and the XXH3-64 checksum of the whole block; chunk 0 also
 * carries the config JSON. */
typedef struct {
    const char *run_id; /* borrowed */
    uint64_t    epoch;
    uint64_t    policy_version;
    const char *config_json;  /* model config, sent in chunk 0; NULL = "" */
    uint64_t    checksum;     /* wire_snap_checksum of the block, if has_checksum */
    bool        has_checksum; /* false: wire_snap_send computes it */
    int         dtype;        /* the block's element type, a Rlhf__WeightDtype (0 = f32) */
    int         kind;         /* what the block holds, a Rlhf__SnapshotKind (0 = full) */
} WireSnapMeta;

/* XXH3-64 of a block, the checksum WeightChunk carries. */
uint64_t wire_snap_checksum(const void *block, size_t bytes);
/* Chunks a block of bytes takes at chunk_bytes per chunk (0 = WIRE_CHUNK_BYTES). */
uint32_t wire_snap_chunk_count(size_t bytes, size_t chunk_bytes);

/* Sends chunk `index` of block (bytes, a positive multiple of the element
 * size of meta->dtype, wire_dtype_size) to peer on a
 * ROUTER socket, or to whoever on other socket types (peer NULL). chunk_bytes
 * (0 = WIRE_CHUNK_BYTES) must be a multiple of 4 and <= WIRE_MAX_CHUNK_BYTES;
 * meta->has_checksum must be set. The chunk's data is copied once, into the
 * packed frame that ZeroMQ then owns. Returns 0 or an error as wire_send_to;
 * ERR_ARG (logged) for a bad index, size or meta. */
int wire_snap_send_chunk(WireSock *s, const void *peer, size_t peer_len, const WireSnapMeta *meta,
                         const void *block, size_t bytes, size_t chunk_bytes, uint32_t index);
/* Sends every chunk in order (computing the checksum unless meta has it).
 * Blocks as sending does (up to the socket's send timeout per chunk); each
 * chunk is queued in ZeroMQ, so the whole block may sit in memory once more
 * until it is on the wire. Returns 0 or the first chunk's error. */
int wire_snap_send(WireSock *s, const void *peer, size_t peer_len, const WireSnapMeta *meta,
                   const void *block, size_t bytes, size_t chunk_bytes);

/* Bytes the frames of a whole snapshot pack to (what wire_snap_out_send
 * queues in ZeroMQ): exact when meta has its checksum, else an upper
 * bound; 0 if the block or meta is invalid (logged). */
size_t wire_snap_packed_bytes(const WireSnapMeta *meta, size_t bytes, size_t chunk_bytes);

/* ---- Queued output ------------------------------------------------------
 *
 * A WireSnapOut is the ledger of the snapshots a ROUTER socket has queued
 * for its peers: every chunk frame is packed into a buffer ZeroMQ releases
 * through a callback once the frame is on the wire (or dropped with its
 * peer's connection), so the ledger knows, per peer and in all, how many
 * bytes ZeroMQ still holds. It enforces two limits: at most one transfer
 * per peer is queued at once (a peer that does not read cannot stack up
 * snapshots), and the bytes queued over all peers stay within a budget.
 * A peer that stops reading keeps its one transfer until its connection
 * goes (heartbeat timeout, hang-up): the budget bounds what such peers
 * hold together. */
typedef struct WireSnapOut WireSnapOut;

/* A ledger with a budget of budget_bytes (> 0, CHECK). Caller owns. */
WireSnapOut *wire_snap_out_new(size_t budget_bytes);
/* Frees the ledger. Call once ZeroMQ has released every frame: after the
 * socket's context was terminated (zmq_ctx_term). Frames still held are
 * logged and their records leaked rather than freed under ZeroMQ. No-op on
 * NULL; sets *o to NULL. */
void wire_snap_out_free(WireSnapOut **o);

/* Whether a snapshot of frame_bytes (wire_snap_packed_bytes) may be queued
 * for peer now: 0, or a refusal with rej filled (nothing logged):
 * ERR_AGAIN (WIRE_REJ_BUSY) while an earlier transfer to the same peer is
 * still queued; ERR_RANGE (WIRE_REJ_OVER_BUDGET) when the bytes queued for
 * all peers plus frame_bytes would exceed the budget. */
int wire_snap_out_admit(WireSnapOut *o, const void *peer, size_t peer_len, size_t frame_bytes,
                        WireReject *rej);
/* Sends a whole snapshot to peer on ROUTER socket s as wire_snap_send
 * does (chunks in order, each send blocking up to the socket's send
 * timeout), every frame tracked in the ledger. Does not check the limits
 * (wire_snap_out_admit does). Returns 0 or the first chunk's error, as
 * wire_send_to; frames queued before a failure stay queued. */
int wire_snap_out_send(WireSnapOut *o, WireSock *s, const void *peer, size_t peer_len,
                       const WireSnapMeta *meta, const void *block, size_t bytes,
                       size_t chunk_bytes);
/* Bytes ZeroMQ holds of queued snapshots now, all peers. Any thread. */
size_t wire_snap_out_queued(const WireSnapOut *o);
/* Transfers with frames still queued (peers served but not yet drained). */
int    wire_snap_out_transfers(WireSnapOut *o);
size_t wire_snap_out_budget(const WireSnapOut *o);

typedef struct WireSnapRx WireSnapRx;

/* A receiver that assembles one snapshot at a time. With buf non-NULL the
 * block is written into buf (cap bytes, borrowed, must outlive the receiver);
 * with buf NULL the receiver allocates a block of total_bytes <= cap on the
 * first chunk and owns it. cap > 0 (CHECK) is the largest snapshot accepted,
 * normally the model's parameter bytes: a peer cannot make it allocate more.
 * Each chunk's data is copied once into the block (protobuf-c's unpack has
 * already copied it out of the frame). Caller owns. */
WireSnapRx *wire_snap_rx_new(void *buf, size_t cap);
void        wire_snap_rx_free(WireSnapRx **rx);
/* Forgets a partial or complete snapshot (an owned block is kept for reuse
 * when the next one has the same size). Call before asking for a new one. */
void wire_snap_rx_reset(WireSnapRx *rx);

/* Takes one decoded chunk. The first chunk after new/reset fixes the
 * snapshot (run id, epoch, policy version, total bytes, chunk count,
 * checksum, element type and kind); every later chunk must agree. Returns:
 *   0  accepted, more chunks to come
 *   1  accepted and the snapshot is complete: all chunks arrived and the
 *      checksum matches; the data stays until reset
 *   <0 rejected with rej filled, nothing logged: wire_check_weight_chunk's
 *      errors; ERR_MISMATCH (WIRE_REJ_BAD_CHUNK) for a chunk of another
 *      snapshot, a duplicate, or an index/offset/size that does not fit the
 *      chunk grid; ERR_RANGE (WIRE_REJ_BAD_CHUNK) if total_bytes exceeds cap;
 *      ERR_MISMATCH (WIRE_REJ_CHECKSUM) if the complete block does not match
 *      its checksum, after which the receiver is reset.
 * A rejected chunk leaves an in-progress snapshot as it was. */
int  wire_snap_rx_accept(WireSnapRx *rx, const Rlhf__WeightChunk *c, WireReject *rej);
bool wire_snap_rx_is_complete(const WireSnapRx *rx);
/* Chunks received so far and expected (0 before the first chunk). */
void wire_snap_rx_progress(const WireSnapRx *rx, uint32_t *have, uint32_t *count);
/* The assembled block and its size, once complete (NULL before); borrowed. */
const void *wire_snap_rx_data(const WireSnapRx *rx, size_t *bytes);
/* The snapshot's identity and config JSON ("" if none); borrowed. Valid after
 * the first accepted chunk; the config after chunk 0 has arrived. */
const char *wire_snap_rx_run_id(const WireSnapRx *rx);
uint64_t    wire_snap_rx_epoch(const WireSnapRx *rx);
uint64_t    wire_snap_rx_policy_version(const WireSnapRx *rx);
const char *wire_snap_rx_config(const WireSnapRx *rx);
/* The block's element type, a Rlhf__WeightDtype, and what it holds, a
 * Rlhf__SnapshotKind (valid as the identity is). */
int wire_snap_rx_dtype(const WireSnapRx *rx);
int wire_snap_rx_kind(const WireSnapRx *rx);
/* Once complete, hands an owned block to the caller (free()) and resets the
 * receiver; NULL if incomplete or if the block is the caller's buf. */
void *wire_snap_rx_take(WireSnapRx *rx, size_t *bytes);

#endif
