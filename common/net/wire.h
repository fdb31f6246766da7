/* wire: the ZeroMQ + protobuf-c helpers every daemon uses: sockets with sane
 * options, one protobuf message per frame, validated decoding with reject
 * counters, and weight snapshots sent as a sequence of WeightChunk frames.
 *
 * Framing. Every message is one protobuf-c message packed into one ZeroMQ
 * frame. On a ROUTER socket a message is two frames, [peer routing id,
 * payload]; wire_send_to and wire_recv add and strip the id. Nothing else is
 * ever in a frame, so a frame is a message.
 *
 * Validation. Nothing received is trusted. wire_decode unpacks a frame and
 * then runs the message's wire_check_* function, which bounds every count,
 * length, token id, float and enum against the WIRE_MAX_* limits and a
 * WireLimits (vocab size, expected run id). A rejection is reported in a
 * WireReject (a reason code from WireReason plus a sentence), never by a
 * crash or a CHECK, and a daemon counts it in its WireRejects and carries on.
 *
 * Ownership. wire_sock_new's caller owns the WireSock (wire_sock_free) but not
 * the ZeroMQ context it was made in. A WireMsg filled by wire_recv owns its
 * frame until wire_msg_close. A message returned by wire_decode is owned by
 * the caller and released with protobuf_c_message_free_unpacked(m, NULL).
 * wire_send packs the message straight into the buffer of a zmq_msg_t, which
 * ZeroMQ owns and frees once the frame is on the wire: packing is the only
 * copy, and the caller keeps its message. wire_snap_send
 * borrows the parameter block only for the duration of the call.
 *
 * Threading. A WireSock, its WireMsgs and a WireSnapRx belong to one thread;
 * sockets never cross threads. WireRejects counters are atomics, so another
 * thread may read them (wire_rejects_get, wire_rejects_format) while the
 * owner counts. The wire_check_* functions and wire_decode are pure and
 * thread-safe.
 *
 * Errors. Functions that can fail return 0 or a negative ERR_* code from
 * common/base/err.h. Socket failures are logged once here, naming the socket and
 * zmq_strerror. Rejections of peer input are not logged by wire_decode or the
 * checks (callers may probe); wire_reject_note and wire_recv_decode log them,
 * rate-limited, and count them. */
#ifndef RLHF_WIRE_H
#define RLHF_WIRE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <zmq.h>

#include "proto/rlhf.pb-c.h"

/* The `version` field every top-level message carries. */
#define WIRE_PROTOCOL_VERSION 1

/* Limits on anything a peer sends. A frame larger than WIRE_MAX_FRAME is
 * refused by wire_recv, which reads it, counts it as oversized and logs it.
 * libzmq itself drops frames larger than WIRE_MAX_FRAME_RECV on tcp/ipc
 * (ZMQ_MAXMSGSIZE) before allocating what the peer claims, and drops the
 * connection with them; those reach no counter. */
#define WIRE_MAX_FRAME ((size_t)32 << 20)           /* bytes of one payload frame */
#define WIRE_MAX_FRAME_RECV (2 * WIRE_MAX_FRAME)    /* bytes libzmq takes in one frame */
#define WIRE_MAX_TOKENS 8192                        /* tokens in one completion */
#define WIRE_MAX_PROMPT_TOKENS 8192                 /* tokens in one prompt */
#define WIRE_MAX_GROUP 256                          /* completions per group (G) */
#define WIRE_MAX_PROMPTS 1024                       /* prompts per lease */
#define WIRE_MAX_COMPONENTS 32                      /* named reward components per score */
#define WIRE_MAX_NAME 128                           /* bytes of an id or name string */
#define WIRE_MAX_TEXT 4096                          /* bytes of an answer or error reason */
#define WIRE_MAX_CONFIG_JSON ((size_t)64 << 10)     /* bytes of a snapshot's config JSON */
#define WIRE_MAX_VOCAB (1 << 24)                    /* token ids when no vocab is given */
#define WIRE_MAX_TEMPERATURE 100.0f                 /* sampling temperature upper bound */
#define WIRE_MAX_SNAPSHOT_BYTES ((uint64_t)1 << 38) /* bytes of a parameter block (256 GiB) */
#define WIRE_MAX_CHUNKS 65536                       /* chunks of one snapshot */
#define WIRE_CHUNK_BYTES ((size_t)8 << 20)          /* default snapshot chunk size */
/* Largest chunk payload: what fits in a frame next to the config and header. */
#define WIRE_MAX_CHUNK_BYTES (WIRE_MAX_FRAME - WIRE_MAX_CONFIG_JSON - 4096)
#define WIRE_MAX_IDENTITY 255 /* bytes of a ZeroMQ routing id */
#define WIRE_LOGP_EPS 1e-4f   /* log-probs may exceed 0 by this much (rounding) */

/* ---- Rejections ------------------------------------------------------- */

/* Why a frame was refused. Appended to only; the names (wire_reason_name)
 * appear in logs and status lines. */
typedef enum {
    WIRE_REJ_GARBAGE = 0, /* not a protobuf of the expected type (garbage, truncated) */
    WIRE_REJ_OVERSIZED,   /* frame larger than WIRE_MAX_FRAME */
    WIRE_REJ_BAD_VERSION, /* `version` != WIRE_PROTOCOL_VERSION */
    WIRE_REJ_BAD_RUN,     /* run id differs from the expected one, or is inconsistent */
    WIRE_REJ_BAD_SHAPE, /* a count or length out of bounds, parallel arrays differ, field missing */
    WIRE_REJ_BAD_TOKENS, /* a token id outside [0, vocab) */
    WIRE_REJ_NONFINITE,  /* NaN/inf where a finite number is required */
    WIRE_REJ_BAD_VALUE,  /* a number out of range: log-prob > 0, top_p, enum, ... */
    WIRE_REJ_BAD_CHUNK,  /* snapshot chunk index/offset/size/version inconsistent */
    WIRE_REJ_CHECKSUM,   /* snapshot checksum mismatch */
    WIRE_REJ_UNKNOWN,    /* unexpected frame structure or message type */
    WIRE_REJ_COUNT
} WireReason;

/* Detail of one rejection: filled by the checks and wire_decode. */
typedef struct {
    WireReason reason;
    char       why[192]; /* one sentence: field, bad value, expected value */
} WireReject;

/* Rejection counters of one socket (or any other input), by reason. The
 * counters are atomics (see Threading); the rate-limit state is touched only
 * by the thread that calls wire_reject_note. Zero-initialise, or use
 * wire_rejects_init. */
typedef struct {
    _Atomic uint64_t n[WIRE_REJ_COUNT];          /* rejections so far, per reason */
    double           last_log_s[WIRE_REJ_COUNT]; /* monotonic time of the last log line */
    uint64_t         suppressed[WIRE_REJ_COUNT]; /* rejections not logged since then */
} WireRejects;

/* Short lower-case name of a reason ("garbage", "bad_tokens"); "?" if out of range. */
const char *wire_reason_name(WireReason r);
void        wire_rejects_init(WireRejects *c);
/* Counter of one reason (relaxed atomic load). */
uint64_t wire_rejects_get(const WireRejects *c, WireReason r);
/* Sum over all reasons. */
uint64_t wire_rejects_total(const WireRejects *c);
/* Adds src's counters into dst (for aggregating per-thread counters). */
void wire_rejects_add(WireRejects *dst, const WireRejects *src);
/* Writes "garbage=1 bad_tokens=3" (only non-zero reasons; "none" if all are
 * zero) into buf (cap bytes, NUL-terminated, truncated if needed). */
void wire_rejects_format(const WireRejects *c, char *buf, size_t cap);
/* Counts one rejection and logs it at WARN as "<where>: rejected <what>:
 * <reason>: <why>". The first few of each reason are logged; after that at
 * most one line per reason every few seconds, with the number suppressed.
 * where/what may be NULL. */
void wire_reject_note(WireRejects *c, const char *where, const char *what, const WireReject *rej);

/* ---- Validation ------------------------------------------------------- */

/* What the receiver knows about valid input. Zero-initialised = only the
 * WIRE_MAX_* bounds apply. */
typedef struct {
    int         vocab_size; /* token ids must lie in [0, vocab_size); 0 = [0, WIRE_MAX_VOCAB) */
    const char *run_id;     /* if non-NULL and non-empty, messages must carry exactly this
                               run id (messages with an empty run id are refused too) */
} WireLimits;

/* Each check validates one decoded message (including `version` and the
 * nested messages) against the WIRE_MAX_* bounds and lim (NULL = zero
 * limits). Returns 0, or a negative ERR_* with rej (non-NULL) filled:
 *   ERR_UNSUPPORTED  bad protocol version       (WIRE_REJ_BAD_VERSION)
 *   ERR_MISMATCH     run id differs              (WIRE_REJ_BAD_RUN)
 *   ERR_FORMAT       shape, count or length      (WIRE_REJ_BAD_SHAPE)
 *   ERR_RANGE        token id or other value     (WIRE_REJ_BAD_TOKENS, WIRE_REJ_BAD_VALUE,
 *                                                 WIRE_REJ_BAD_CHUNK)
 *   ERR_NONFINITE    NaN or infinity             (WIRE_REJ_NONFINITE)
 * Nothing is logged. What each one checks beyond the bounds:
 *   sampling params  temperature finite in [0, WIRE_MAX_TEMPERATURE], top_k >= 0,
 *                    top_p in (0, 1], max_new_tokens in [1, WIRE_MAX_TOKENS]
 *   prompt           1..WIRE_MAX_PROMPT_TOKENS ids in the vocab; answer, task bounded
 *   completion       1..WIRE_MAX_TOKENS tokens; logp_behaviour, logp_sampled and
 *                    policy_version exactly as long as tokens; log-probs finite and
 *                    <= WIRE_LOGP_EPS; finish is STOP or LENGTH
 *   sampled group    prompt and sampling present; 1..WIRE_MAX_GROUP completions,
 *                    each no longer than sampling.max_new_tokens;
 *                    0 <= group_index < group_count <= WIRE_MAX_PROMPTS
 *   scored group     the group as above; one score per completion; reward and
 *                    component values finite; component names 1..WIRE_MAX_NAME
 *                    bytes; run_id equal to the group's
 *   lease request    max_prompts in [0, WIRE_MAX_PROMPTS]
 *   lease grant      prompts <= WIRE_MAX_PROMPTS; with prompts: group_size in
 *                    [1, WIRE_MAX_GROUP] and sampling present; retry_after_ms >= 0
 *   weight announce  total_bytes a multiple of 4, <= WIRE_MAX_SNAPSHOT_BYTES
 *   weight chunk     0 <= chunk_index < chunk_count <= WIRE_MAX_CHUNKS; total_bytes as
 *                    above and > 0; 1 <= data bytes <= WIRE_MAX_CHUNK_BYTES;
 *                    offset + data <= total_bytes; config_json bounded
 *   others           strings bounded */
int wire_check_sampling(const Rlhf__SamplingParams *m, const WireLimits *lim, WireReject *rej);
int wire_check_prompt(const Rlhf__Prompt *m, const WireLimits *lim, WireReject *rej);
int wire_check_completion(const Rlhf__Completion *m, const WireLimits *lim, WireReject *rej);
int wire_check_lease_request(const Rlhf__LeaseRequest *m, const WireLimits *lim, WireReject *rej);
int wire_check_lease_grant(const Rlhf__LeaseGrant *m, const WireLimits *lim, WireReject *rej);
int wire_check_sampled_group(const Rlhf__SampledGroup *m, const WireLimits *lim, WireReject *rej);
int wire_check_scored_group(const Rlhf__ScoredGroup *m, const WireLimits *lim, WireReject *rej);
int wire_check_weight_announce(const Rlhf__WeightAnnounce *m, const WireLimits *lim,
                               WireReject *rej);
int wire_check_snapshot_request(const Rlhf__SnapshotRequest *m, const WireLimits *lim,
                                WireReject *rej);
int wire_check_weight_chunk(const Rlhf__WeightChunk *m, const WireLimits *lim, WireReject *rej);
int wire_check_heartbeat(const Rlhf__Heartbeat *m, const WireLimits *lim, WireReject *rej);
int wire_check_error_reply(const Rlhf__ErrorReply *m, const WireLimits *lim, WireReject *rej);

/* Dispatches to the wire_check_* of m's type (by descriptor). A type without
 * a check (not a top-level message of rlhf.proto) is ERR_UNSUPPORTED,
 * WIRE_REJ_UNKNOWN. */
int wire_check(const ProtobufCMessage *m, const WireLimits *lim, WireReject *rej);

/* Unpacks len bytes as a message of type desc and validates it with
 * wire_check. On success *out (caller owns; protobuf_c_message_free_unpacked)
 * is the message and 0 is returned. On failure *out is NULL, rej is filled
 * and nothing is logged: ERR_RANGE (WIRE_REJ_OVERSIZED) if len >
 * WIRE_MAX_FRAME, ERR_FORMAT (WIRE_REJ_GARBAGE) if protobuf-c cannot unpack
 * it, or the check's error. Example:
 *   Rlhf__SampledGroup *g;
 *   rc = wire_decode(&rlhf__sampled_group__descriptor, data, len, &lim,
 *                    (ProtobufCMessage **)&g, &rej); */
int wire_decode(const ProtobufCMessageDescriptor *desc, const void *data, size_t len,
                const WireLimits *lim, ProtobufCMessage **out, WireReject *rej);

/* ---- Sockets ---------------------------------------------------------- */

/* Socket options; WIRE_SOCK_DEFAULTS is what NULL means. */
typedef struct {
    int  linger_ms;        /* ZMQ_LINGER: how long close waits for unsent frames */
    int  sndhwm;           /* ZMQ_SNDHWM, messages */
    int  rcvhwm;           /* ZMQ_RCVHWM, messages */
    int  sndtimeo_ms;      /* ZMQ_SNDTIMEO for blocking sends; -1 = forever */
    int  reconnect_ivl_ms; /* ZMQ_RECONNECT_IVL */
    int  reconnect_max_ms; /* ZMQ_RECONNECT_IVL_MAX (exponential backoff cap) */
    int  heartbeat_ms;     /* ZMQ_HEARTBEAT_IVL (ZMTP pings); 0 = off */
    bool immediate;        /* ZMQ_IMMEDIATE: queue only on completed connections */
} WireSockOpts;

#define WIRE_SOCK_DEFAULTS                                                                         \
    ((WireSockOpts){.linger_ms = 200,                                                              \
                    .sndhwm = 1000,                                                                \
                    .rcvhwm = 1000,                                                                \
                    .sndtimeo_ms = 1000,                                                           \
                    .reconnect_ivl_ms = 100,                                                       \
                    .reconnect_max_ms = 2000,                                                      \
                    .heartbeat_ms = 2000,                                                          \
                    .immediate = true})

typedef struct WireSock WireSock;

/* A socket of ZeroMQ type (ZMQ_PUSH, ZMQ_ROUTER, ...) in zctx, named for log
 * lines (copied, e.g. "samples"), with opts (NULL = WIRE_SOCK_DEFAULTS) and
 * ZMQ_MAXMSGSIZE = WIRE_MAX_FRAME_RECV. ROUTER sockets also get
 * ZMQ_ROUTER_MANDATORY, so sending to an unknown peer is an error instead of
 * a silent drop; SUB sockets subscribe to everything. Returns NULL after
 * logging if libzmq refuses. Caller owns; zctx must outlive the socket. */
WireSock *wire_sock_new(void *zctx, int type, const char *name, const WireSockOpts *opts);
/* Closes the socket (waiting at most linger_ms for unsent frames). No-op on NULL. */
void wire_sock_free(WireSock **s);

/* Bind or connect to endpoint ("tcp://127.0.0.1:5557", "tcp://127.0.0.1:*",
 * "inproc://x"). Returns 0, or ERR_IO logged with the endpoint and
 * zmq_strerror. May be called several times. */
int wire_bind(WireSock *s, const char *endpoint);
int wire_connect(WireSock *s, const char *endpoint);
/* The endpoint last bound, with the actual port after binding "tcp://...:*"
 * (ZMQ_LAST_ENDPOINT), into buf. Returns 0 or ERR_IO / ERR_RANGE (too small). */
int wire_last_endpoint(WireSock *s, char *buf, size_t cap);

/* The libzmq socket, for zmq_poll items and extra options; borrowed. */
void       *wire_sock_zmq(WireSock *s);
const char *wire_sock_name(const WireSock *s);
int         wire_sock_type(const WireSock *s);
/* This socket's rejection counters; borrowed, live as long as the socket. */
WireRejects *wire_sock_rejects(WireSock *s);
/* Makes s count its rejections in c (borrowed, must outlive s) instead of
 * its own counters, so the counts outlive the socket or can be read by a
 * status thread; wire_sock_rejects then returns c. */
void wire_sock_use_rejects(WireSock *s, WireRejects *c);

/* Packs m into one frame and sends it. flags: 0 or ZMQ_DONTWAIT. Returns 0;
 * ERR_AGAIN if it could not be queued now (high-water mark, send timeout,
 * no peer yet with immediate, EINTR: retry or drop, not logged); ERR_RANGE
 * if the packed message exceeds WIRE_MAX_FRAME (logged, a bug of the
 * sender); ERR_IO for other failures (logged). Must not be used on ROUTER
 * sockets (CHECK): use wire_send_to. */
int wire_send(WireSock *s, const ProtobufCMessage *m, int flags);
/* ROUTER only (CHECK): sends [peer, payload]. Errors as wire_send, plus
 * ERR_NOTFOUND if no connected peer has that routing id (not logged: peers
 * come and go). */
int wire_send_to(WireSock *s, const void *peer, size_t peer_len, const ProtobufCMessage *m,
                 int flags);
/* Sends already packed bytes as a frame (copied once), to peer on ROUTER
 * sockets (peer NULL otherwise). For forwarding and tests; errors as above. */
int wire_send_raw(WireSock *s, const void *peer, size_t peer_len, const void *data, size_t len,
                  int flags);

typedef struct WireMsg WireMsg;
/* Sends the payload frame of an open WireMsg (received on any socket of this
 * thread) without copying it, to peer on ROUTER sockets (NULL otherwise).
 * For forwarding; errors as wire_send_to. On ERR_AGAIN from a non-ROUTER
 * socket m stays open, so the caller can retry or close it; otherwise m is
 * closed afterwards whatever the outcome. */
int wire_send_msg(WireSock *s, const void *peer, size_t peer_len, WireMsg *m, int flags);

/* One received message: the payload frame and, on ROUTER sockets, the
 * sender's routing id. Zero-initialised or filled by wire_recv; release with
 * wire_msg_close (safe on a closed or zeroed WireMsg). */
struct WireMsg {
    zmq_msg_t     frame;                   /* the payload; see wire_msg_data */
    unsigned char peer[WIRE_MAX_IDENTITY]; /* ROUTER only: routing id of the sender */
    size_t        peer_len;                /* 0 on other socket types */
    bool          is_open;                 /* frame holds a message */
};

/* Waits up to timeout_ms (0 = poll once, -1 = forever) for a message and
 * receives it into m (which the caller then closes). Returns 0 with m open;
 * ERR_TIMEOUT if nothing arrived; ERR_AGAIN on EINTR (check the stop flag);
 * ERR_IO on socket failures (logged). A message of the wrong frame structure
 * (not [id, payload] on ROUTER, more than one frame elsewhere) or a frame over
 * WIRE_MAX_FRAME is read in full, dropped, counted in the socket's rejects
 * and logged, and ERR_FORMAT / ERR_RANGE is returned with m closed: the caller
 * simply goes on. */
int wire_recv(WireSock *s, int timeout_ms, WireMsg *m);
/* Payload bytes of an open WireMsg (borrowed until wire_msg_close). */
const void *wire_msg_data(WireMsg *m);
size_t      wire_msg_size(WireMsg *m);
void        wire_msg_close(WireMsg *m);

/* wire_recv, then wire_decode as desc, in one step: what a daemon loop
 * calls. Returns 0 with *out (caller owns) and m holding the peer (and the
 * frame, which the caller closes). Timeouts and EINTR as wire_recv. A frame
 * that fails decoding is counted in the socket's rejects, logged (rate
 * limited) with the reason, closed, and its error returned with *out NULL;
 * rej (may be NULL) gets the detail. */
int wire_recv_decode(WireSock *s, int timeout_ms, const ProtobufCMessageDescriptor *desc,
                     const WireLimits *lim, WireMsg *m, ProtobufCMessage **out, WireReject *rej);

/* ---- Weight snapshots ------------------------------------------------- */

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
} WireSnapMeta;

/* XXH3-64 of a block, the checksum WeightChunk carries. */
uint64_t wire_snap_checksum(const void *block, size_t bytes);
/* Chunks a block of bytes takes at chunk_bytes per chunk (0 = WIRE_CHUNK_BYTES). */
uint32_t wire_snap_chunk_count(size_t bytes, size_t chunk_bytes);

/* Sends chunk `index` of block (bytes, a positive multiple of 4) to peer on a
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
 * checksum); every later chunk must agree. Returns:
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
/* Once complete, hands an owned block to the caller (free()) and resets the
 * receiver; NULL if incomplete or if the block is the caller's buf. */
void *wire_snap_rx_take(WireSnapRx *rx, size_t *bytes);

#endif
