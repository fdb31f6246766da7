#include "common/net/auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "common/net/curve.h"
#include "common/net/zap.h"

struct Auth {
    char       role[32];
    AuthConfig cfg;
    char       keys_dir[4096]; /* copy of cfg.keys_dir ("" = no keys) */
    CurveCert  own;            /* this daemon's key pair (with keys) */
    Zap       *zap;            /* servers with keys */
};

bool auth_is_loopback(const char *ep)
{
    if (!strncmp(ep, "inproc://", 9) || !strncmp(ep, "ipc://", 6)) return true;
    if (strncmp(ep, "tcp://", 6) != 0) return false;
    const char *host = ep + 6;
    /* A "source;destination" connect names the destination after ';'. */
    const char *semi = strchr(host, ';');
    if (semi) host = semi + 1;
    const char *colon = strrchr(host, ':');
    size_t      n = colon ? (size_t)(colon - host) : strlen(host);
    if (n == 5 && !strncmp(host, "[::1]", 5)) return true;
    if (n == 9 && !strncmp(host, "localhost", 9)) return true;
    return n >= 4 && !strncmp(host, "127.", 4);
}

int auth_check_bind(const AuthConfig *cfg, const char *endpoint, char *why, size_t why_len)
{
    if (cfg->keys_dir || cfg->is_insecure || auth_is_loopback(endpoint)) return 0;
    err_why(why, why_len,
            "bind '%s' is not loopback and there are no keys: give --keys DIR (README "
            "\"Keys\"), or --insecure to let anyone who reaches it in",
            endpoint);
    return ERR_ARG;
}

static bool is_inproc(const char *ep)
{
    return !strncmp(ep, "inproc://", 9);
}

Auth *auth_new(void *zctx, const AuthConfig *cfg, const char *role, bool is_server)
{
    CHECK(zctx && cfg && role);
    Auth *a = xcalloc(1, sizeof *a);
    snprintf(a->role, sizeof a->role, "%s", role);
    a->cfg = *cfg;
    if (!cfg->keys_dir) return a;
    snprintf(a->keys_dir, sizeof a->keys_dir, "%s", cfg->keys_dir);
    a->cfg.keys_dir = a->keys_dir; /* the caller's strings are not kept */
    a->cfg.key_name = NULL;
    if (!curve_is_available()) {
        log_error("%s: --keys %s: this libzmq has no CURVE (zmq_has(\"curve\") is false)", role,
                  cfg->keys_dir);
        goto fail;
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/%s.key", cfg->keys_dir, cfg->key_name ? cfg->key_name : role);
    if (curve_cert_load(path, true, &a->own) != 0) goto fail;
    if (is_server) {
        snprintf(path, sizeof path, "%s/authorized", cfg->keys_dir);
        a->zap = zap_new(zctx, path, role);
        if (!a->zap) goto fail;
    }
    return a;
fail:
    auth_free(&a);
    return NULL;
}

void auth_free(Auth **pa)
{
    if (!pa || !*pa) return;
    zap_free(&(*pa)->zap);
    free(*pa);
    *pa = NULL;
}

static int set_opt(WireSock *s, int opt, const char *opt_name, const void *v, size_t n)
{
    if (zmq_setsockopt(wire_sock_zmq(s), opt, v, n) != 0) {
        log_error("auth: socket '%s': zmq_setsockopt(%s): %s", wire_sock_name(s), opt_name,
                  zmq_strerror(zmq_errno()));
        return ERR_IO;
    }
    return 0;
}

int auth_bind(Auth *a, WireSock *s, const char *endpoint)
{
    char why[384];
    if (auth_check_bind(&a->cfg, endpoint, why, sizeof why) != 0) {
        log_error("%s: socket '%s': %s", a->role, wire_sock_name(s), why);
        return ERR_ARG;
    }
    if (a->keys_dir[0] && !is_inproc(endpoint)) {
        int yes = 1, rc;
        if ((rc = set_opt(s, ZMQ_CURVE_SERVER, "ZMQ_CURVE_SERVER", &yes, sizeof yes)) ||
            (rc = set_opt(s, ZMQ_CURVE_SECRETKEY, "ZMQ_CURVE_SECRETKEY", a->own.secret_z85,
                          CURVE_Z85_LEN)))
            return rc;
        if (a->zap &&
            (rc = zap_watch(a->zap, wire_sock_zmq(s), wire_sock_name(s), wire_sock_rejects(s))))
            return rc;
    } else if (!auth_is_loopback(endpoint)) {
        log_warn("%s: socket '%s': bound to %s without keys (--insecure): anyone who reaches it "
                 "is let in",
                 a->role, wire_sock_name(s), endpoint);
    }
    return wire_bind(s, endpoint);
}

int auth_connect(Auth *a, WireSock *s, const char *endpoint, const char *server)
{
    if (a->keys_dir[0] && !is_inproc(endpoint)) {
        char      path[4200];
        CurveCert srv;
        snprintf(path, sizeof path, "%s/%s.pub", a->keys_dir, server);
        int rc = curve_cert_load(path, false, &srv);
        if (rc) return rc;
        if ((rc = set_opt(s, ZMQ_CURVE_SERVERKEY, "ZMQ_CURVE_SERVERKEY", srv.public_z85,
                          CURVE_Z85_LEN)) ||
            (rc = set_opt(s, ZMQ_CURVE_PUBLICKEY, "ZMQ_CURVE_PUBLICKEY", a->own.public_z85,
                          CURVE_Z85_LEN)) ||
            (rc = set_opt(s, ZMQ_CURVE_SECRETKEY, "ZMQ_CURVE_SECRETKEY", a->own.secret_z85,
                          CURVE_Z85_LEN)))
            return rc;
    }
    return wire_connect(s, endpoint);
}

bool auth_has_keys(const Auth *a)
{
    return a->keys_dir[0] != '\0';
}

uint64_t auth_refused(const Auth *a)
{
    return a && a->zap ? zap_refused(a->zap) : 0;
}
