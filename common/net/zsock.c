#include "common/net/zsock.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/log.h"

struct WireSock {
    void        *zsock;
    int          type;
    char         name[64];
    WireRejects  own_rejects;
    WireRejects *rejects; /* own_rejects or the caller's (wire_sock_use_rejects) */
};

static int set_int_opt(WireSock *s, int opt, const char *opt_name, int value)
{
    if (zmq_setsockopt(s->zsock, opt, &value, sizeof value) != 0) {
        log_error("wire_sock_new: socket '%s': zmq_setsockopt(%s, %d): %s", s->name, opt_name,
                  value, zmq_strerror(zmq_errno()));
        return ERR_IO;
    }
    return 0;
}

WireSock *wire_sock_new(void *zctx, int type, const char *name, const WireSockOpts *opts)
{
    CHECK(zctx && name);
    WireSockOpts o = opts ? *opts : WIRE_SOCK_DEFAULTS;
    WireSock    *s = xcalloc(1, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    s->type = type;
    wire_rejects_init(&s->own_rejects);
    s->rejects = &s->own_rejects;
    s->zsock = zmq_socket(zctx, type);
    if (!s->zsock) {
        log_error("wire_sock_new: socket '%s': zmq_socket(type %d): %s", name, type,
                  zmq_strerror(zmq_errno()));
        free(s);
        return NULL;
    }
    /* Above WIRE_MAX_FRAME, so that wire_recv sees oversized frames to count
     * them; bounded, so that a peer cannot make libzmq allocate any size. */
    int64_t maxmsg = (int64_t)WIRE_MAX_FRAME_RECV;
    int     rc = 0;
    if (zmq_setsockopt(s->zsock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) != 0) {
        log_error("wire_sock_new: socket '%s': zmq_setsockopt(ZMQ_MAXMSGSIZE, %lld): %s", name,
                  (long long)maxmsg, zmq_strerror(zmq_errno()));
        rc = ERR_IO;
    }
    if (!rc) rc = set_int_opt(s, ZMQ_LINGER, "ZMQ_LINGER", o.linger_ms);
    if (!rc) rc = set_int_opt(s, ZMQ_SNDHWM, "ZMQ_SNDHWM", o.sndhwm);
    if (!rc) rc = set_int_opt(s, ZMQ_RCVHWM, "ZMQ_RCVHWM", o.rcvhwm);
    if (!rc) rc = set_int_opt(s, ZMQ_SNDTIMEO, "ZMQ_SNDTIMEO", o.sndtimeo_ms);
    if (!rc) rc = set_int_opt(s, ZMQ_RECONNECT_IVL, "ZMQ_RECONNECT_IVL", o.reconnect_ivl_ms);
    if (!rc)
        rc = set_int_opt(s, ZMQ_RECONNECT_IVL_MAX, "ZMQ_RECONNECT_IVL_MAX", o.reconnect_max_ms);
    if (!rc && o.heartbeat_ms > 0) {
        rc = set_int_opt(s, ZMQ_HEARTBEAT_IVL, "ZMQ_HEARTBEAT_IVL", o.heartbeat_ms);
        /* A peer silent for three heartbeats is dead; libzmq then reconnects. */
        if (!rc)
            rc = set_int_opt(s, ZMQ_HEARTBEAT_TIMEOUT, "ZMQ_HEARTBEAT_TIMEOUT", 3 * o.heartbeat_ms);
    }
    if (!rc && o.immediate) rc = set_int_opt(s, ZMQ_IMMEDIATE, "ZMQ_IMMEDIATE", 1);
    if (!rc && type == ZMQ_ROUTER)
        rc = set_int_opt(s, ZMQ_ROUTER_MANDATORY, "ZMQ_ROUTER_MANDATORY", 1);
    if (!rc && type == ZMQ_SUB && zmq_setsockopt(s->zsock, ZMQ_SUBSCRIBE, "", 0) != 0) {
        log_error("wire_sock_new: socket '%s': zmq_setsockopt(ZMQ_SUBSCRIBE, \"\"): %s", name,
                  zmq_strerror(zmq_errno()));
        rc = ERR_IO;
    }
    if (rc) {
        wire_sock_free(&s);
        return NULL;
    }
    return s;
}

void wire_sock_free(WireSock **sp)
{
    if (!sp || !*sp) return;
    WireSock *s = *sp;
    /* zmq_close only fails on an invalid socket, which would be a bug here. */
    if (s->zsock && zmq_close(s->zsock) != 0)
        log_error("wire_sock_free: socket '%s': zmq_close: %s", s->name, zmq_strerror(zmq_errno()));
    free(s);
    *sp = NULL;
}

/* zmq_bind or zmq_connect (op, named verb in the log line) for fn. */
static int attach(WireSock *s, int (*op)(void *, const char *), const char *fn, const char *verb,
                  const char *endpoint)
{
    if (op(s->zsock, endpoint) != 0) {
        log_error("%s: socket '%s': %s '%s': %s", fn, s->name, verb, endpoint,
                  zmq_strerror(zmq_errno()));
        return ERR_IO;
    }
    return 0;
}

int wire_bind(WireSock *s, const char *endpoint)
{
    return attach(s, zmq_bind, "wire_bind", "bind", endpoint);
}

int wire_connect(WireSock *s, const char *endpoint)
{
    return attach(s, zmq_connect, "wire_connect", "connect", endpoint);
}

int wire_last_endpoint(WireSock *s, char *buf, size_t cap)
{
    CHECK(buf && cap > 0);
    size_t len = cap;
    if (zmq_getsockopt(s->zsock, ZMQ_LAST_ENDPOINT, buf, &len) != 0) {
        int e = zmq_errno();
        log_error("wire_last_endpoint: socket '%s': %s", s->name, zmq_strerror(e));
        buf[0] = '\0';
        return e == EINVAL ? ERR_RANGE : ERR_IO;
    }
    buf[cap - 1] = '\0';
    return 0;
}

void *wire_sock_zmq(WireSock *s)
{
    return s->zsock;
}

const char *wire_sock_name(const WireSock *s)
{
    return s->name;
}

int wire_sock_type(const WireSock *s)
{
    return s->type;
}

WireRejects *wire_sock_rejects(WireSock *s)
{
    return s->rejects;
}

void wire_sock_use_rejects(WireSock *s, WireRejects *c)
{
    CHECK(c);
    s->rejects = c;
}

/* Maps a failed zmq send to an ERR_* code, logging only real failures. */
static int send_error(WireSock *s, const char *fn)
{
    int e = zmq_errno();
    if (e == EAGAIN || e == EINTR) return ERR_AGAIN;
    if (e == EHOSTUNREACH) return ERR_NOTFOUND;
    log_error("%s: socket '%s': send: %s", fn, s->name, zmq_strerror(e));
    return ERR_IO;
}

/* Sends peer (ROUTER) and then the prepared frame; closes the frame on failure. */
static int send_frame(WireSock *s, const char *fn, const void *peer, size_t peer_len,
                      zmq_msg_t *frame, int flags)
{
    if (s->type == ZMQ_ROUTER) {
        CHECK(peer && peer_len > 0 && peer_len <= WIRE_MAX_IDENTITY);
        if (zmq_send(s->zsock, peer, peer_len, flags | ZMQ_SNDMORE) < 0) {
            zmq_msg_close(frame);
            return send_error(s, fn);
        }
    } else {
        CHECK(peer == NULL);
    }
    /* Once the routing id is queued the payload follows in the same atomic
     * multipart message, so a failure here cannot leave half a message. */
    if (zmq_msg_send(frame, s->zsock, flags) < 0) {
        zmq_msg_close(frame);
        return send_error(s, fn);
    }
    return 0;
}

/* Packs m straight into a ZeroMQ-owned buffer: the pack is the only copy. */
static int pack_frame(WireSock *s, const char *fn, const ProtobufCMessage *m, zmq_msg_t *frame)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    if (len > WIRE_MAX_FRAME) {
        log_error("%s: socket '%s': %s packs to %zu bytes, expected <= %zu", fn, s->name,
                  m->descriptor->short_name, len, WIRE_MAX_FRAME);
        return ERR_RANGE;
    }
    if (zmq_msg_init_size(frame, len) != 0) {
        log_error("%s: socket '%s': zmq_msg_init_size(%zu): %s", fn, s->name, len,
                  zmq_strerror(zmq_errno()));
        return ERR_IO;
    }
    size_t packed = protobuf_c_message_pack(m, zmq_msg_data(frame));
    CHECK(packed == len);
    return 0;
}

/* Packs m and sends it to peer (NULL on sockets other than ROUTER). */
static int pack_send(WireSock *s, const char *fn, const void *peer, size_t peer_len,
                     const ProtobufCMessage *m, int flags)
{
    zmq_msg_t frame;
    int       rc = pack_frame(s, fn, m, &frame);
    if (rc) return rc;
    return send_frame(s, fn, peer, peer_len, &frame, flags);
}

int wire_send(WireSock *s, const ProtobufCMessage *m, int flags)
{
    CHECK(s->type != ZMQ_ROUTER);
    return pack_send(s, "wire_send", NULL, 0, m, flags);
}

int wire_send_to(WireSock *s, const void *peer, size_t peer_len, const ProtobufCMessage *m,
                 int flags)
{
    CHECK(s->type == ZMQ_ROUTER);
    return pack_send(s, "wire_send_to", peer, peer_len, m, flags);
}

int wire_send_any(WireSock *s, const char *fn, const void *peer, size_t peer_len,
                  const ProtobufCMessage *m, int flags)
{
    return pack_send(s, fn, s->type == ZMQ_ROUTER ? peer : NULL, peer_len, m, flags);
}

int wire_send_raw(WireSock *s, const void *peer, size_t peer_len, const void *data, size_t len,
                  int flags)
{
    zmq_msg_t frame;
    if (zmq_msg_init_size(&frame, len) != 0) {
        log_error("wire_send_raw: socket '%s': zmq_msg_init_size(%zu): %s", s->name, len,
                  zmq_strerror(zmq_errno()));
        return ERR_IO;
    }
    if (len) memcpy(zmq_msg_data(&frame), data, len);
    return send_frame(s, "wire_send_raw", peer, peer_len, &frame, flags);
}

int wire_send_msg(WireSock *s, const void *peer, size_t peer_len, WireMsg *m, int flags)
{
    CHECK(m->is_open);
    if (s->type != ZMQ_ROUTER) {
        CHECK(peer == NULL);
        /* zmq_msg_send moves the frame's content (no copy) and leaves it
         * empty; a failed send leaves it untouched, ready for a retry. */
        if (zmq_msg_send(&m->frame, s->zsock, flags) >= 0) {
            wire_msg_close(m);
            return 0;
        }
        int rc = send_error(s, "wire_send_msg");
        if (rc != ERR_AGAIN) wire_msg_close(m);
        return rc;
    }
    /* On ROUTER the routing id goes first, so a half-sent message cannot be
     * retried; send_frame closes the frame on failure. */
    m->is_open = false;
    return send_frame(s, "wire_send_msg", peer, peer_len, &m->frame, flags);
}

const void *wire_msg_data(WireMsg *m)
{
    CHECK(m->is_open);
    return zmq_msg_data(&m->frame);
}

size_t wire_msg_size(WireMsg *m)
{
    CHECK(m->is_open);
    return zmq_msg_size(&m->frame);
}

void wire_msg_close(WireMsg *m)
{
    if (!m || !m->is_open) return;
    zmq_msg_close(&m->frame);
    m->is_open = false;
}

/* Reads and drops the rest of a multipart message. */
static void drain_more(WireSock *s)
{
    int    more = 0;
    size_t sz = sizeof more;
    while (zmq_getsockopt(s->zsock, ZMQ_RCVMORE, &more, &sz) == 0 && more) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        int rc = zmq_msg_recv(&part, s->zsock, 0);
        zmq_msg_close(&part);
        if (rc < 0) break;
    }
}

static bool has_more(WireSock *s)
{
    int    more = 0;
    size_t sz = sizeof more;
    return zmq_getsockopt(s->zsock, ZMQ_RCVMORE, &more, &sz) == 0 && more;
}

/* Receives one frame into f; 0, ERR_TIMEOUT (nothing queued), ERR_AGAIN or ERR_IO. */
static int recv_part(WireSock *s, zmq_msg_t *f, int flags)
{
    zmq_msg_init(f);
    if (zmq_msg_recv(f, s->zsock, flags) >= 0) return 0;
    int e = zmq_errno();
    zmq_msg_close(f);
    if (e == EAGAIN) return ERR_TIMEOUT;
    if (e == EINTR) return ERR_AGAIN;
    log_error("wire_recv: socket '%s': recv: %s", s->name, zmq_strerror(e));
    return ERR_IO;
}

int wire_recv(WireSock *s, int timeout_ms, WireMsg *m)
{
    memset(m, 0, sizeof *m);
    zmq_pollitem_t it = {.socket = s->zsock, .events = ZMQ_POLLIN};
    int            n = zmq_poll(&it, 1, timeout_ms);
    if (n < 0) {
        int e = zmq_errno();
        if (e == EINTR) return ERR_AGAIN;
        log_error("wire_recv: socket '%s': zmq_poll: %s", s->name, zmq_strerror(e));
        return ERR_IO;
    }
    if (n == 0) return ERR_TIMEOUT;
    WireReject rej = {.reason = WIRE_REJ_UNKNOWN};
    int        rc;
    if (s->type == ZMQ_ROUTER) {
        zmq_msg_t id;
        if ((rc = recv_part(s, &id, ZMQ_DONTWAIT))) return rc;
        size_t idn = zmq_msg_size(&id);
        bool   more = has_more(s);
        /* libzmq routing ids are 1..255 bytes, so only a missing payload is possible. */
        if (idn > WIRE_MAX_IDENTITY || !more) {
            zmq_msg_close(&id);
            wire_reject_set(&rej, ERR_FORMAT, WIRE_REJ_UNKNOWN,
                            "message of one frame, expected [id, payload]");
            wire_reject_note(s->rejects, s->name, "frame", &rej);
            return ERR_FORMAT;
        }
        memcpy(m->peer, zmq_msg_data(&id), idn);
        m->peer_len = idn;
        zmq_msg_close(&id);
        /* The parts of a multipart message arrive together, so this never waits. */
        if ((rc = recv_part(s, &m->frame, 0))) return rc == ERR_TIMEOUT ? ERR_IO : rc;
    } else {
        if ((rc = recv_part(s, &m->frame, ZMQ_DONTWAIT))) return rc;
    }
    m->is_open = true;
    if (has_more(s)) {
        drain_more(s);
        wire_msg_close(m);
        wire_reject_set(&rej, ERR_FORMAT, WIRE_REJ_UNKNOWN, "multipart message, expected %s",
                        s->type == ZMQ_ROUTER ? "[id, payload]" : "one frame");
        wire_reject_note(s->rejects, s->name, "frame", &rej);
        return ERR_FORMAT;
    }
    size_t len = zmq_msg_size(&m->frame);
    if (len > WIRE_MAX_FRAME) {
        /* Over tcp libzmq drops only frames above WIRE_MAX_FRAME_RECV itself. */
        wire_msg_close(m);
        wire_reject_set(&rej, ERR_RANGE, WIRE_REJ_OVERSIZED, "frame of %zu bytes, expected <= %zu",
                        len, WIRE_MAX_FRAME);
        wire_reject_note(s->rejects, s->name, "frame", &rej);
        return ERR_RANGE;
    }
    return 0;
}

int wire_recv_decode(WireSock *s, int timeout_ms, const ProtobufCMessageDescriptor *desc,
                     const WireLimits *lim, WireMsg *m, ProtobufCMessage **out, WireReject *rej)
{
    *out = NULL;
    int rc = wire_recv(s, timeout_ms, m);
    if (rc) return rc;
    WireReject local;
    if (!rej) rej = &local;
    rc = wire_decode(desc, wire_msg_data(m), wire_msg_size(m), lim, out, rej);
    if (rc) {
        wire_reject_note(s->rejects, s->name, desc->short_name, rej);
        wire_msg_close(m);
    }
    return rc;
}
