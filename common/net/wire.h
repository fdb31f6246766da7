/* wire: the protocol every daemon speaks, and the validation of every
 * message a peer sends: the protocol version, the WIRE_MAX_* bounds, one
 * wire_check_* per top-level message of proto/rlhf.proto, and wire_decode,
 * which unpacks one frame and checks it.
 *
 * Framing. Every message is one protobuf-c message packed into one ZeroMQ
 * frame (common/net/zsock.h sends and receives them), so a frame is a
 * message.
 *
 * Validation. Nothing received is trusted. wire_decode unpacks a frame and
 * then runs the message's wire_check_* function, which bounds every count,
 * length, token id, float and enum against the WIRE_MAX_* limits and a
 * WireLimits (vocab size, expected run id). A rejection is reported in a
 * WireReject (a reason code from WireReason plus a sentence, see
 * common/net/reject.h), never by a crash or a CHECK, and a daemon counts it
 * in its WireRejects and carries on.
 *
 * Ownership. A message returned by wire_decode is owned by the caller and
 * released with protobuf_c_message_free_unpacked(m, NULL). The checks only
 * read the message they are given.
 *
 * Threading. The wire_check_* functions and wire_decode are pure and
 * thread-safe.
 *
 * Errors. They return 0 or a negative ERR_* code from common/base/err.h
 * with the WireReject filled. Rejections of peer input are not logged here
 * (callers may probe); wire_reject_note and wire_recv_decode log them,
 * rate-limited, and count them. */
#ifndef RLHF_WIRE_H
#define RLHF_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/net/reject.h"
#include "proto/rlhf.pb-c.h"

/* The `version` field every top-level message carries. */
#define WIRE_PROTOCOL_VERSION 1

/* Limits on anything a peer sends. A frame larger than WIRE_MAX_FRAME is
 * refused by wire_decode, and by wire_recv (common/net/zsock.h), which
 * reads it, counts it as oversized and logs it. */
#define WIRE_MAX_FRAME ((size_t)32 << 20)           /* bytes of one payload frame */
#define WIRE_MAX_TOKENS 8192                        /* tokens in one completion */
#define WIRE_MAX_PROMPT_TOKENS 8192                 /* tokens in one prompt */
#define WIRE_MAX_GROUP 256                          /* completions per group (G) */
#define WIRE_MAX_PROMPTS 1024                       /* prompts per lease */
#define WIRE_MAX_COMPONENTS 32                      /* named reward components per score */
#define WIRE_MAX_NAME 128                           /* bytes of an id or name string */
#define WIRE_MAX_TEXT 4096                          /* bytes of an answer or error reason */
#define WIRE_MAX_META ((size_t)64 << 10)            /* bytes of a prompt's meta_json */
#define WIRE_MAX_CONFIG_JSON ((size_t)64 << 10)     /* bytes of a snapshot's config JSON */
#define WIRE_MAX_VOCAB (1 << 24)                    /* token ids when no vocab is given */
#define WIRE_MAX_TEMPERATURE 100.0f                 /* sampling temperature upper bound */
#define WIRE_MAX_SNAPSHOT_BYTES ((uint64_t)1 << 38) /* bytes of a parameter block (256 GiB) */
#define WIRE_MAX_CHUNKS 65536                       /* chunks of one snapshot */
/* Largest chunk payload: what fits in a frame next to the config and header. */
#define WIRE_MAX_CHUNK_BYTES (WIRE_MAX_FRAME - WIRE_MAX_CONFIG_JSON - 4096)
#define WIRE_LOGP_EPS 1e-4f /* log-probs may exceed 0 by this much (rounding) */

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
 *   prompt           1..WIRE_MAX_PROMPT_TOKENS ids in the vocab; answer bounded; task
 *                    1..WIRE_MAX_NAME bytes (it names the scorer; there is no default);
 *                    meta_json 0..WIRE_MAX_META bytes (its JSON is the scorer's to parse)
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
 *   weight announce  total_bytes a multiple of 2, <= WIRE_MAX_SNAPSHOT_BYTES
 *   weight chunk     dtype f32 or bf16; 0 <= chunk_index < chunk_count <=
 *                    WIRE_MAX_CHUNKS; total_bytes a multiple of the dtype's
 *                    size as above and > 0; 1 <= data bytes <= WIRE_MAX_CHUNK_BYTES;
 *                    offset + data <= total_bytes; config_json bounded
 *   others           strings bounded */
/* Bytes of one element of a snapshot block of dtype (a Rlhf__WeightDtype):
 * 4 for f32, 2 for bf16, 0 for anything else. */
size_t wire_dtype_size(int dtype);

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

#endif
