/* actor_dns: reward endpoints named by a host name that resolves to several
 * reward servers (a scaled service behind one DNS name, e.g. Docker's
 * `reward`).
 *
 * ZeroMQ resolves a host name in a connect endpoint to its first address
 * only. With ActorConfig.reward_resolve_ms > 0 the actor instead resolves
 * each tcp://HOST:PORT reward endpoint to all of HOST's IPv4 addresses and
 * connects its PUSH socket to each (CURVE as for any reward endpoint), then
 * re-resolves every reward_resolve_ms: new addresses are connected, those
 * gone from the name are disconnected, so servers joining or leaving a
 * running job are followed. Endpoints whose host is an address already, and
 * other transports, are connected once as given. A failed look-up keeps the
 * current set (a DNS hiccup does not cut the actor off).
 *
 * Ownership: ActorDns belongs to its actor; the sockets and Auth are the
 * caller's. Threading: the actor's loop thread only. Errors: a failed connect
 * is logged and returned as -1 (the endpoint is retried at the next refresh).
 */
#ifndef RLHF_ACTOR_DNS_H
#define RLHF_ACTOR_DNS_H

#include "common/net/auth.h"
#include "common/net/zsock.h"

typedef struct ActorDns ActorDns;

ActorDns *actor_dns_new(void);
void      actor_dns_free(ActorDns **pd);

/* Resolves eps[0..n) and brings push's connections in line with the result.
 * Returns the number of addresses connected after the refresh, or -1 when a
 * connect failed. */
int actor_dns_refresh(ActorDns *d, Auth *auth, WireSock *push, const char *const *eps, int n);

/* The endpoints connected now (tcp://ADDRESS:PORT or as given), for logs and tests. */
int         actor_dns_count(const ActorDns *d);
const char *actor_dns_endpoint(const ActorDns *d, int i);

#endif
