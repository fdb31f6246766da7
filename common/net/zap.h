/* zap: the ZeroMQ authentication handler (ZAP, RFC 27) of one daemon: a
 * thread on inproc://zeromq.zap.01 in the daemon's ZeroMQ context that
 * lets a CURVE client in only when its public key is on an allow-list, and
 * counts and logs every refused connection.
 *
 * The allow-list is every NAME.pub certificate (common/net/curve.h) in one
 * directory, read once at zap_new; a change takes a restart. A server
 * socket is watched (zap_watch) under a name: libzmq then asks the handler
 * about each CURVE client of that socket (its ZAP domain is the name), and
 * a monitor on the socket reports handshakes that failed before ZAP could
 * be asked: a plaintext client (mechanism mismatch) or a client holding a
 * wrong server key (the HELLO does not decrypt). Both kinds of refusal are
 * counted in the socket's WireRejects as WIRE_REJ_UNAUTHORIZED (so they show
 * beside the other rejects of the socket) and in the handler's total, and
 * logged (rate-limited) with the peer's address and key.
 *
 * Ownership: zap_new's caller owns the Zap (zap_free) but not the context,
 * which must outlive it; WireRejects given to zap_watch are borrowed and
 * must outlive the Zap. Free the Zap before closing the watched sockets and
 * before zmq_ctx_term (zap_free closes the handler's own sockets).
 *
 * Threading: zap_watch may be called from any thread (it is called from the
 * thread that owns the watched socket, before binding it); zap_refused from
 * any thread. Errors: zap_new returns NULL after logging (a bad certificate
 * in the allow-list names its file and line); zap_watch returns 0 or a
 * negative ERR_* code, logged. */
#ifndef RLHF_ZAP_H
#define RLHF_ZAP_H

#include <stdint.h>

#include "common/net/reject.h"

#define ZAP_MAX_WATCH 16  /* server sockets one handler watches at most */
#define ZAP_MAX_KEYS 4096 /* allow-list entries at most */

typedef struct Zap Zap;

/* Loads the allow-list from allow_dir (every *.pub; an empty or missing
 * directory refuses everyone, with a warning) and starts the handler thread
 * in zctx. who names the daemon in log lines (copied). Returns NULL after
 * logging. */
Zap *zap_new(void *zctx, const char *allow_dir, const char *who);
/* Stops the thread and closes its sockets. No-op on NULL; sets *z to NULL. */
void zap_free(Zap **z);

/* Watches server socket zsock (a libzmq socket, not yet bound) under name
 * (copied, e.g. "results"): sets its ZMQ_ZAP_DOMAIN to name and starts a
 * monitor of failed handshakes; refusals are counted in rejects (may be
 * NULL). Returns once the handler listens to the monitor: 0, ERR_RANGE
 * (more than ZAP_MAX_WATCH sockets) or ERR_IO (logged). */
int zap_watch(Zap *z, void *zsock, const char *name, WireRejects *rejects);

/* Connections refused so far, every socket and kind. */
uint64_t zap_refused(const Zap *z);
/* Connections let in so far (ZAP requests allowed). */
uint64_t zap_allowed(const Zap *z);
/* Allow-list entries loaded. */
int zap_n_keys(const Zap *z);

#endif
