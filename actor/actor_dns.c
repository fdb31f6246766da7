#include "actor/actor_dns.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <zmq.h>

#include "common/base/err.h"
#include "common/base/log.h"

#define DNS_MAX 64 /* connected endpoints at most */
#define DNS_EP 300 /* bytes of one endpoint */

struct ActorDns {
    int  n;
    char eps[DNS_MAX][DNS_EP];  /* connected now */
    char want[DNS_MAX][DNS_EP]; /* scratch of a refresh */
};

ActorDns *actor_dns_new(void)
{
    return xcalloc(1, sizeof(ActorDns));
}

void actor_dns_free(ActorDns **pd)
{
    if (!pd || !*pd) return;
    free(*pd);
    *pd = NULL;
}

int actor_dns_count(const ActorDns *d)
{
    return d->n;
}

const char *actor_dns_endpoint(const ActorDns *d, int i)
{
    return i >= 0 && i < d->n ? d->eps[i] : NULL;
}

/* Appends ep to want[] unless there already; false when full. */
static bool want_add(char (*want)[DNS_EP], int *n, const char *ep)
{
    for (int i = 0; i < *n; i++)
        if (!strcmp(want[i], ep)) return true;
    if (*n == DNS_MAX || strlen(ep) >= DNS_EP) return false;
    snprintf(want[(*n)++], DNS_EP, "%s", ep);
    return true;
}

/* The endpoints one configured endpoint stands for. Returns -1 when a
 * look-up failed (the caller keeps what it has). */
static int expand(const char *ep, char (*want)[DNS_EP], int *n)
{
    const char    *host = strncmp(ep, "tcp://", 6) ? NULL : ep + 6;
    const char    *colon = host ? strrchr(host, ':') : NULL;
    char           name[256];
    struct in_addr a4;
    if (!colon || colon == host || (size_t)(colon - host) >= sizeof name || host[0] == '[')
        return want_add(want, n, ep) ? 0 : -1;
    memcpy(name, host, (size_t)(colon - host));
    name[colon - host] = '\0';
    if (!strcmp(name, "*") || inet_pton(AF_INET, name, &a4) == 1)
        return want_add(want, n, ep) ? 0 : -1;
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int             rc = getaddrinfo(name, NULL, &hints, &res);
    if (rc != 0) {
        log_debug("actor: reward endpoint %s: %s", ep, gai_strerror(rc));
        return -1;
    }
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        char ip[INET_ADDRSTRLEN], one[DNS_EP];
        if (!inet_ntop(AF_INET, &((struct sockaddr_in *)ai->ai_addr)->sin_addr, ip, sizeof ip))
            continue;
        snprintf(one, sizeof one, "tcp://%s%s", ip, colon);
        want_add(want, n, one);
    }
    freeaddrinfo(res);
    return 0;
}

int actor_dns_refresh(ActorDns *d, Auth *auth, WireSock *push, const char *const *eps, int n)
{
    char(*want)[DNS_EP] = d->want;
    int n_want = 0;
    for (int i = 0; i < n; i++) {
        if (expand(eps[i], want, &n_want) != 0) {
            /* Keep this endpoint's current connections: carry over every
             * connected endpoint (the others are re-derived anyway). */
            for (int k = 0; k < d->n; k++) want_add(want, &n_want, d->eps[k]);
        }
    }
    int rc = 0;
    for (int k = 0; k < d->n;) { /* gone from the names: disconnect */
        bool keep = false;
        for (int i = 0; i < n_want && !keep; i++) keep = !strcmp(want[i], d->eps[k]);
        if (keep) {
            k++;
            continue;
        }
        log_info("actor: reward server %s left, disconnecting", d->eps[k]);
        zmq_disconnect(wire_sock_zmq(push), d->eps[k]);
        memmove(d->eps[k], d->eps[d->n - 1], DNS_EP);
        d->n--;
    }
    for (int i = 0; i < n_want; i++) { /* new: connect */
        bool have = false;
        for (int k = 0; k < d->n && !have; k++) have = !strcmp(want[i], d->eps[k]);
        if (have) continue;
        if (auth_connect(auth, push, want[i], AUTH_REWARD) != 0) {
            rc = -1;
            continue;
        }
        log_info("actor: reward server %s joined, connected", want[i]);
        snprintf(d->eps[d->n++], DNS_EP, "%s", want[i]);
    }
    return rc ? rc : d->n;
}
