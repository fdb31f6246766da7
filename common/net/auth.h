/* auth: how a daemon secures its sockets: CURVE encryption with its key
 * pair, a ZAP allow-list on the sockets it binds, and the rule that a
 * socket without keys binds only to loopback unless the operator says
 * --insecure.
 *
 * Keys directory (rlhf-keygen makes one; see README "Keys"):
 *   DIR/<name>.key      this daemon's key pair (<name> = key_name, by
 *                       default the daemon's role: learner, reward, actor)
 *   DIR/learner.pub     the learner's public key (actors, reward servers)
 *   DIR/reward.pub      the reward servers' public key (actors)
 *   DIR/authorized/     NAME.pub of every client a server lets in
 * Without a keys directory every socket is plaintext, as before.
 *
 * With keys, every socket bound or connected through auth_bind and
 * auth_connect on a transport other than inproc runs CURVE: a bound socket
 * is a CURVE server with the daemon's secret key, watched by the daemon's
 * ZAP handler (common/net/zap.h), which lets in only allow-listed client
 * keys and counts refusals as the socket's WIRE_REJ_UNAUTHORIZED rejects;
 * a connected socket is a CURVE client holding the daemon's key pair and
 * the server's public key DIR/<server>.pub.
 *
 * Ownership: auth_new's caller owns the Auth (auth_free, before the
 * sockets it watches are closed and before zmq_ctx_term); the config's
 * strings are borrowed. Threading: after auth_new, auth_bind and
 * auth_connect may be called from any thread (each on sockets that thread
 * owns). Errors: 0 or a negative ERR_* code, logged once here naming the
 * endpoint and the file. */
#ifndef RLHF_AUTH_H
#define RLHF_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/base/flags.h"
#include "common/net/zsock.h"

/* Plain-data configuration of one daemon's security; AUTH_DEFAULTS is
 * plaintext on loopback. */
typedef struct {
    const char *keys_dir;    /* keys directory (layout above); NULL = no keys, plaintext */
    const char *key_name;    /* this daemon's key pair DIR/<key_name>.key; NULL = the role */
    bool        is_insecure; /* without keys, allow binding to non-loopback endpoints */
} AuthConfig;

#define AUTH_DEFAULTS ((AuthConfig){.keys_dir = NULL, .key_name = NULL, .is_insecure = false})

/* The flag rows of a daemon's security (cfg: AuthConfig *), one block at the
 * end of its table; what_ says what the key pair is for. */
#define AUTH_FLAGS(cfg_, role_)                                                                    \
    FLAG_SECTION("Security:"),                                                                     \
        FLAG_PATH("keys", &(cfg_)->keys_dir, "DIR",                                                \
                  "CURVE keys (README \"Keys\"): DIR/<key-name>.key, the servers'\n"               \
                  "DIR/learner.pub, DIR/reward.pub, allow-list DIR/authorized/*.pub",              \
                  .def = "none: plaintext"),                                                       \
        FLAG_STRING("key-name", &(cfg_)->key_name, "NAME", "this daemon's key pair DIR/NAME.key",  \
                    .lo = 1, .hi = 63, .def = role_),                                              \
        FLAG_BOOL("insecure", &(cfg_)->is_insecure,                                                \
                  "without --keys, bind non-loopback endpoints anyway\n(anyone who reaches them "  \
                  "is let in)")

/* The server names whose public keys clients look up (DIR/<name>.pub). */
#define AUTH_LEARNER "learner"
#define AUTH_REWARD "reward"

typedef struct Auth Auth;

/* True for endpoints only this machine reaches: inproc://, ipc://, and
 * tcp:// on 127.x.x.x, [::1] or localhost. */
bool auth_is_loopback(const char *endpoint);

/* Checks that cfg may bind endpoint: with keys anything, without keys only
 * loopback unless is_insecure. Returns 0 or ERR_ARG with the reason (naming
 * the endpoint and the flags that fix it) in why. Does not log. */
int auth_check_bind(const AuthConfig *cfg, const char *endpoint, char *why, size_t why_len);

/* The security of a daemon of role ("learner", "reward", "actor") in zctx.
 * With keys: loads DIR/<key_name or role>.key and, when is_server, starts
 * the ZAP handler with the allow-list DIR/authorized. Without keys: an Auth
 * that binds plaintext (loopback unless is_insecure). Returns NULL after
 * logging (missing or bad key file, named with its line; no CURVE in
 * libzmq). */
Auth *auth_new(void *zctx, const AuthConfig *cfg, const char *role, bool is_server);
/* Stops the ZAP handler; no-op on NULL. */
void auth_free(Auth **a);

/* Binds s to endpoint as described at the top (CURVE server watched by ZAP
 * under the socket's name with keys; refuses a non-loopback endpoint
 * without keys or is_insecure). Returns 0, ERR_ARG (refused, logged) or
 * wire_bind's errors. */
int auth_bind(Auth *a, WireSock *s, const char *endpoint);
/* Connects s to endpoint, as a CURVE client of server (its public key is
 * DIR/<server>.pub) when there are keys. Returns 0, a key file's error
 * (logged) or wire_connect's errors. */
int auth_connect(Auth *a, WireSock *s, const char *endpoint, const char *server);

/* True when this Auth runs CURVE. */
bool auth_has_keys(const Auth *a);
/* Connections refused so far by this daemon's ZAP handler (0 without keys). */
uint64_t auth_refused(const Auth *a);

#endif
