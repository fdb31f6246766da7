/* actor_dns: a host name in a reward endpoint becomes a connection to each
 * of its addresses; literal addresses pass as given; a failed look-up keeps
 * the connections; a group pushed through the resolved endpoint arrives. */
#include <string.h>
#include <zmq.h>

#include "actor/actor_dns.h"
#include "tests/support/expect.h"
#include "tests/support/ports.h"
#include "tests/test_list.h"

int actor_dns_selftest(bool verbose)
{
    expect_begin("actor_dns", verbose);
    int port = ports_pick(1, 21000, 29000);
    EXPECT(port > 0, "a free port (%d)", port);
    void      *zctx = zmq_ctx_new();
    AuthConfig cfg = AUTH_DEFAULTS;
    Auth      *auth = auth_new(zctx, &cfg, "actor", false);
    WireSock  *pull = wire_sock_new(zctx, ZMQ_PULL, "samples", NULL);
    WireSock  *push = wire_sock_new(zctx, ZMQ_PUSH, "samples", NULL);
    char       bound[64], named[64], want[64];
    snprintf(bound, sizeof bound, "tcp://127.0.0.1:%d", port);
    snprintf(named, sizeof named, "tcp://localhost:%d", port);
    EXPECT(auth && pull && push && wire_bind(pull, bound) == 0, "sockets and the bind");

    ActorDns   *d = actor_dns_new();
    const char *eps[] = {named, "ipc:///nonexistent/rlhf-dns-test"};
    EXPECT(actor_dns_refresh(d, auth, push, eps, 2) == 2, "localhost and the ipc endpoint");
    snprintf(want, sizeof want, "tcp://127.0.0.1:%d", port);
    bool has_ip = false;
    for (int i = 0; i < actor_dns_count(d); i++) has_ip |= !strcmp(actor_dns_endpoint(d, i), want);
    EXPECT(has_ip, "localhost resolved to %s", want);
    EXPECT(actor_dns_refresh(d, auth, push, eps, 2) == 2, "a second refresh changes nothing");

    const char *gone[] = {"tcp://no-such-host.invalid:5557"};
    EXPECT(actor_dns_refresh(d, auth, push, gone, 1) == 2,
           "a failed look-up keeps the connections (%d)", actor_dns_count(d));
    const char *only_ipc[] = {"ipc:///nonexistent/rlhf-dns-test"};
    EXPECT(actor_dns_refresh(d, auth, push, only_ipc, 1) == 1, "an address gone is disconnected");
    EXPECT(actor_dns_refresh(d, auth, push, eps, 1) == 1,
           "localhost connected again, the ipc endpoint dropped");

    /* zmq_disconnect is asynchronous: a first push may still go to a pipe
     * being torn down, so push a few times; one must arrive. */
    char msg[8] = "group", got[8] = {0};
    int  rcvtimeo = 300, n_got = -1;
    zmq_setsockopt(wire_sock_zmq(pull), ZMQ_RCVTIMEO, &rcvtimeo, sizeof rcvtimeo);
    for (int i = 0; i < 20 && n_got != 6; i++) {
        zmq_send(wire_sock_zmq(push), msg, 6, ZMQ_DONTWAIT);
        n_got = zmq_recv(wire_sock_zmq(pull), got, sizeof got, 0);
    }
    EXPECT(n_got == 6 && !strcmp(got, "group"), "a group arrived through the resolved endpoint");

    actor_dns_free(&d);
    wire_sock_free(&push);
    wire_sock_free(&pull);
    auth_free(&auth);
    zmq_ctx_term(zctx);
    return expect_end();
}
