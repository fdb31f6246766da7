/* learner_serve: the learner's sockets and the one dispatch table that says
 * which message each takes and who handles it:
 *
 *   socket    type    message          handler                    frees
 *   results   PULL    ScoredGroup      learner_intake_group       handler may keep
 *   lease     ROUTER  LeaseRequest     a grant (here)             dispatcher
 *   snapshot  ROUTER  SnapshotRequest  learner_publish_snapshot   dispatcher
 *   weights   PUB     (sends only: learner_publish_announce)
 *
 * Every frame goes through wire validation (counted per socket and reason,
 * logged rate-limited); a request refused on a ROUTER socket is answered
 * with an ErrorReply naming the reason, so the peer need not wait for a
 * timeout. Who frees a message: see learner_int.h (one rule). A lease
 * request is always answered: with work, or with none and a retry delay;
 * a peer that holds its lease credit (learner.h, "Per-peer limits") gets
 * none and a short retry delay: flow control, counted in grants_credit.
 *
 * Ownership: the Learner owns the ZeroMQ context and sockets
 * (learner_serve_close). Threading: the Learner's thread. Errors: binds
 * report an ERR_* (logged); a socket that fails for good ends the loop with
 * ERR_IO; nothing a peer sends is CHECKed. */
#ifndef RLHF_LEARNER_SERVE_H
#define RLHF_LEARNER_SERVE_H

#include "common/net/reactor.h"
#include "learner/learner_int.h"

/* Creates the context and the four sockets and binds them to the config's
 * endpoints. Returns 0 or an error (logged); learner_serve_close undoes a
 * partial open. */
int learner_serve_open(Learner *l);
/* Registers the readable sockets with r, each to take at most burst
 * messages per pass, through the dispatch table. */
void learner_serve_register(Learner *l, Reactor *r, int burst);
/* Closes the sockets (short linger) and terminates the context; no-op when
 * closed. */
void learner_serve_close(Learner *l);
/* Refuses the request m received on ROUTER socket s: counts rej on the
 * socket (logged, rate-limited) and answers the peer with an ErrorReply of
 * code naming what was refused and why (best effort, never blocks). */
void learner_serve_refuse(WireSock *s, const WireMsg *m, const char *what, int code,
                          const WireReject *rej);

#endif
