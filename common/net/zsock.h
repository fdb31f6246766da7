/* zsock: ZeroMQ sockets with sane options that carry one protobuf message
 * per frame, receive with the frame structure checked and bad frames
 * counted, and decode with common/net/wire.h's checks in one step.
 *
 * Framing. On a ROUTER socket a message is two frames, [peer routing id,
 * payload]; wire_send_to and wire_recv add and strip the id. On every other
 * socket type it is one payload frame. Nothing else is ever in a frame.
 *
 * Ownership. wire_sock_new's caller owns the WireSock (wire_sock_free) but
 * not the ZeroMQ context it was made in. A WireMsg filled by wire_recv owns
 * its frame until wire_msg_close. A message returned by wire_recv_decode is
 * owned by the caller (protobuf_c_message_free_unpacked(m, NULL)). wire_send
 * packs the message straight into the buffer of a zmq_msg_t, which ZeroMQ
 * owns and frees once the frame is on the wire: packing is the only copy,
 * and the caller keeps its message.
 *
 * Threading. A WireSock and its WireMsgs belong to one thread; sockets never
 * cross threads. A socket's WireRejects counters may be read from another
 * thread (common/net/reject.h).
 *
 * Errors. Functions that can fail return 0 or a negative ERR_* code from
 * common/base/err.h. Socket failures are logged once here, naming the socket
 * and zmq_strerror. Refused frames are counted in the socket's rejects and
 * logged, rate-limited, by wire_recv and wire_recv_decode. */
#ifndef RLHF_ZSOCK_H
#define RLHF_ZSOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <zmq.h>

#include "common/net/reject.h"
#include "common/net/wire.h"

/* libzmq itself drops frames larger than WIRE_MAX_FRAME_RECV on tcp/ipc
 * (ZMQ_MAXMSGSIZE) before allocating what the peer claims, and drops the
 * connection with them; those reach no counter. Frames between
 * WIRE_MAX_FRAME and this reach wire_recv, which counts and refuses them. */
#define WIRE_MAX_FRAME_RECV (2 * WIRE_MAX_FRAME) /* bytes libzmq takes in one frame */
#define WIRE_MAX_IDENTITY 255                    /* bytes of a ZeroMQ routing id */

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
/* Packs m and sends it to peer on ROUTER sockets, or to whoever on other
 * socket types (peer ignored there); log lines name the caller fn. For
 * modules that send over any socket type (wire_snap_send_chunk). Errors as
 * wire_send_to. */
int wire_send_any(WireSock *s, const char *fn, const void *peer, size_t peer_len,
                  const ProtobufCMessage *m, int flags);
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

#endif
