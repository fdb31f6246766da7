/* reject: why a peer's frame was refused, and per-socket counters of the
 * refusals, so that bad input is counted and logged instead of crashing a
 * daemon.
 *
 * A refusal is described by a WireReject (a WireReason and one sentence
 * naming the field, the bad value and the expected one); wire_reject_set
 * fills one and is the single exit of every check in common/net. A daemon
 * counts refusals by reason in a WireRejects and logs them, rate-limited,
 * through wire_reject_note.
 *
 * Ownership. WireRejects and WireReject are plain structs the caller owns
 * (usually inside a socket or a daemon's state); nothing here allocates.
 *
 * Threading. The counters are atomics, so another thread may read them
 * (wire_rejects_get, wire_rejects_total, wire_rejects_format) while the
 * owner counts; the rate-limit state is touched only by the one thread that
 * calls wire_reject_note on a WireRejects.
 *
 * Errors. Nothing here fails. wire_reject_note logs at WARN; the other
 * functions log nothing. */
#ifndef RLHF_REJECT_H
#define RLHF_REJECT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Why a frame was refused. Appended to only; the names (wire_reason_name)
 * appear in logs and status lines. */
typedef enum {
    WIRE_REJ_GARBAGE = 0, /* not a protobuf of the expected type (garbage, truncated) */
    WIRE_REJ_OVERSIZED,   /* frame larger than WIRE_MAX_FRAME */
    WIRE_REJ_BAD_VERSION, /* `version` != WIRE_PROTOCOL_VERSION */
    WIRE_REJ_BAD_RUN,     /* run id differs from the expected one, or is inconsistent */
    WIRE_REJ_BAD_SHAPE, /* a count or length out of bounds, parallel arrays differ, field missing */
    WIRE_REJ_BAD_TOKENS,   /* a token id outside [0, vocab) */
    WIRE_REJ_NONFINITE,    /* NaN/inf where a finite number is required */
    WIRE_REJ_BAD_VALUE,    /* a number out of range: log-prob > 0, top_p, enum, ... */
    WIRE_REJ_BAD_CHUNK,    /* snapshot chunk index/offset/size/version inconsistent */
    WIRE_REJ_CHECKSUM,     /* snapshot checksum mismatch */
    WIRE_REJ_UNKNOWN,      /* unexpected frame structure or message type */
    WIRE_REJ_UNAUTHORIZED, /* a connection refused by CURVE/ZAP (key not allowed, plaintext) */
    /* Well-formed requests refused by a per-peer limit (snapshot.h; a lease
     * request beyond the peer's credit is flow control, not a reject): */
    WIRE_REJ_BUSY,        /* an earlier answer to the same peer is still queued */
    WIRE_REJ_OVER_BUDGET, /* the output queued for all peers would exceed its memory budget */
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
/* Counts one rejection of reason r without logging; safe from any thread
 * (the ZAP handler counts refused connections of a socket it does not own). */
void wire_rejects_count(WireRejects *c, WireReason r);
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

/* Fills rej (when non-NULL) with reason and the printf-style sentence
 * (truncated to fit) and returns code: the one exit of every failed check
 * and refused frame in common/net, e.g.
 *   return wire_reject_set(rej, ERR_RANGE, WIRE_REJ_BAD_VALUE, "x %d, expected >= 0", x); */
__attribute__((format(printf, 4, 5))) int wire_reject_set(WireReject *rej, int code,
                                                          WireReason reason, const char *fmt, ...);

#endif
