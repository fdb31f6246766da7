#include "tests/test_list.h"
#include "common/net/curve.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/log.h"
#include "common/net/auth.h"
#include "common/net/zap.h"
#include "tests/support/expect.h"
#include "tests/support/testfs.h"

/* A valid key pair's Z85 text, for the bad-file table. */
static CurveCert g_pair;

static void test_round_trip(const char *dir)
{
    CurveCert c, k, p;
    EXPECT(curve_keypair(&c) == 0 && strlen(c.public_z85) == CURVE_Z85_LEN, "curve_keypair");
    EXPECT(curve_cert_save(&c, dir, "learner") == 0, "curve_cert_save learner");
    char key[512], pub[512];
    testfs_path(key, sizeof key, "%s/learner.key", dir);
    testfs_path(pub, sizeof pub, "%s/learner.pub", dir);
    EXPECT(curve_cert_load(key, true, &k) == 0 && k.has_secret &&
               !strcmp(k.public_z85, c.public_z85) && !strcmp(k.secret_z85, c.secret_z85),
           "learner.key read back differs");
    EXPECT(curve_cert_load(pub, false, &p) == 0 && !p.has_secret &&
               !strcmp(p.public_z85, c.public_z85),
           "learner.pub read back differs");
    struct stat st;
    EXPECT(stat(key, &st) == 0 && (st.st_mode & 0777) == 0600,
           "learner.key mode %04o, expected 0600", (unsigned)(st.st_mode & 0777));
    EXPECT_REFUSED(curve_cert_save(&c, dir, "learner"), ERR_ARG, "refusing to overwrite",
                   "saving over an existing key pair");
    EXPECT_REFUSED(curve_cert_save(&c, dir, "../x"), ERR_ARG, "certificate name", "a bad name");
    chmod(pub, 0600); /* past the mode check, to the contents */
    EXPECT_REFUSED(curve_cert_load(pub, true, &p), ERR_FORMAT, "no secret-key",
                   "a public certificate as a key pair");
    chmod(pub, 0644);
    chmod(key, 0644);
    EXPECT_REFUSED(curve_cert_load(key, true, &k), ERR_ARG, "mode 0644",
                   "a secret file readable by others");
    chmod(key, 0600);
    g_pair = c;
}

typedef struct {
    const char *text; /* with %P for the public key, %S for the secret key */
    bool        need_secret;
    int         line; /* the line the error names (the last one for what is missing) */
    const char *why;  /* part of the message */
} BadCert;

static void expand(const char *in, char *out, size_t cap)
{
    size_t n = 0;
    for (const char *p = in; *p && n + CURVE_Z85_LEN + 1 < cap; p++) {
        if (p[0] == '%' && (p[1] == 'P' || p[1] == 'S')) {
            const char *k = p[1] == 'P' ? g_pair.public_z85 : g_pair.secret_z85;
            memcpy(out + n, k, CURVE_Z85_LEN);
            n += CURVE_Z85_LEN;
            p++;
        } else {
            out[n++] = *p;
        }
    }
    out[n] = '\0';
}

static void test_bad_files(const char *dir)
{
    CurveCert other;
    CHECK(curve_keypair(&other) == 0);
    char mismatch[256];
    snprintf(mismatch, sizeof mismatch,
             "curve\n    public-key = \"%s\"\n    secret-key = \"%%S\"\n", other.public_z85);
    const BadCert bad[] = {
        {"metadata\nfoo\n", false, 2, "section 'foo'"},
        {"    public-key = \"%P\"\n", false, 1, "outside a section"},
        {"curve\n    public-key = \"abc\"\n", false, 2, "expected 40 characters of Z85"},
        {"curve\n    public-key = \"%P\"\n    public-key = \"%P\"\n", false, 3, "given twice"},
        {"curve\n    colour = \"blue\"\n", false, 2, "expected public-key or secret-key"},
        {"curve\n    public-key = \"%P\n", false, 2, "no closing quote"},
        {"curve\n    public-key %P\n", false, 2, "expected '='"},
        {"curve\n\tpublic-key = \"%P\"\n", false, 2, "tab"},
        {"curve\n    public-key = \"%P\" x\n", false, 2, "after the value"},
        {"metadata\ncurve\ncurve\n", false, 3, "given twice"},
        {"curve\n    public-key = \"%P\"\n    secret-key = \"%S\"\n", false, 3,
         "a secret-key in a public certificate"},
        {"curve\n    public-key = \"%P\"\n", true, 2, "no secret-key"},
        {mismatch, true, 3, "not the one secret-key derives"},
        {"# nothing\n", false, 1, "no public-key"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[512], path[512], want[600];
        expand(bad[i].text, text, sizeof text);
        testfs_path(path, sizeof path, "%s/bad%zu.%s", dir, i, bad[i].need_secret ? "key" : "pub");
        CHECK(testfs_write(path, text, strlen(text)) == 0);
        chmod(path, 0600);
        CurveCert c;
        snprintf(want, sizeof want, "%s:%d: ", path, bad[i].line);
        fileio_capture_begin();
        int   rc = curve_cert_load(path, bad[i].need_secret, &c);
        char *log = fileio_capture_end(expect_verbose());
        EXPECT(rc == ERR_FORMAT && strstr(log, want) && strstr(log, bad[i].why),
               "bad file %zu: rc %d, log '%s', expected ERR_FORMAT naming '%s' and '%s'", i, rc,
               log, want, bad[i].why);
        free(log);
    }
    /* A certificate with comments, metadata and blank lines, as zcert writes it. */
    char text[512], path[512];
    expand("#   ZeroMQ CURVE Public Certificate\n\nmetadata\n    name = \"x\"\n    host = 'h'\n"
           "curve\n    public-key = \"%P\"\n",
           text, sizeof text);
    testfs_path(path, sizeof path, "%s/zcert.pub", dir);
    CHECK(testfs_write(path, text, strlen(text)) == 0);
    CurveCert c;
    EXPECT(curve_cert_load(path, false, &c) == 0 && !strcmp(c.public_z85, g_pair.public_z85),
           "a zcert-style public certificate is refused");
}

static void test_loopback(void)
{
    const struct {
        const char *ep;
        bool        is_loopback;
    } cases[] = {
        {"tcp://127.0.0.1:5555", true}, {"tcp://localhost:*", true}, {"tcp://[::1]:9", true},
        {"ipc:///tmp/x", true},         {"inproc://x", true},        {"tcp://*:5555", false},
        {"tcp://0.0.0.0:5555", false},  {"tcp://10.1.2.3:1", false}, {"tcp://learner:5558", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        EXPECT(auth_is_loopback(cases[i].ep) == cases[i].is_loopback, "auth_is_loopback(%s) = %d",
               cases[i].ep, !cases[i].is_loopback);
    AuthConfig cfg = AUTH_DEFAULTS;
    char       why[384] = "";
    EXPECT(auth_check_bind(&cfg, "tcp://127.0.0.1:5555", why, sizeof why) == 0,
           "a loopback bind without keys is refused");
    EXPECT(auth_check_bind(&cfg, "tcp://*:5555", why, sizeof why) == ERR_ARG &&
               strstr(why, "tcp://*:5555") && strstr(why, "--insecure"),
           "a non-loopback bind without keys: '%s'", why);
    cfg.is_insecure = true;
    EXPECT(auth_check_bind(&cfg, "tcp://*:5555", why, sizeof why) == 0, "--insecure is ignored");
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* A client in its own context (keys_dir NULL = plaintext) pushes one frame
 * to ep; returns whether the server received it within wait_s. */
static bool push_one(const char *keys_dir, const char *key_name, const char *ep, WireSock *server,
                     double wait_s)
{
    void        *ctx = zmq_ctx_new();
    AuthConfig   cfg = {.keys_dir = keys_dir, .key_name = key_name};
    Auth        *a = auth_new(ctx, &cfg, "actor", false);
    WireSockOpts o = WIRE_SOCK_DEFAULTS;
    o.immediate = false; /* queue the frame; it leaves only over an accepted connection */
    o.linger_ms = 0;
    WireSock *s = a ? wire_sock_new(ctx, ZMQ_PUSH, "client", &o) : NULL;
    bool      got = false;
    if (s && auth_connect(a, s, ep, AUTH_LEARNER) == 0 &&
        wire_send_raw(s, NULL, 0, "hello", 5, ZMQ_DONTWAIT) == 0) {
        WireMsg m = {0};
        got = wire_recv(server, (int)(wait_s * 1000), &m) == 0 && wire_msg_size(&m) == 5;
        wire_msg_close(&m);
    }
    wire_sock_free(&s);
    auth_free(&a);
    zmq_ctx_term(ctx);
    return got;
}

static bool wait_refused(Auth *a, WireRejects *rej, uint64_t above, double wait_s)
{
    double t0 = now_s();
    while (now_s() - t0 < wait_s) {
        if (auth_refused(a) > above && wire_rejects_get(rej, WIRE_REJ_UNAUTHORIZED) > above)
            return true;
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return false;
}

static void test_server(const char *dir)
{
    /* dir has learner.key (test_round_trip); add an allowed actor and a rogue elsewhere. */
    char auth_dir[512], rogue_dir[512], path[512];
    testfs_path(auth_dir, sizeof auth_dir, "%s/authorized", dir);
    testfs_path(rogue_dir, sizeof rogue_dir, "%s/rogue", dir);
    mkdir(auth_dir, 0755);
    mkdir(rogue_dir, 0700);
    CurveCert actor, rogue;
    CHECK(curve_keypair(&actor) == 0 && curve_cert_save(&actor, dir, "actor") == 0);
    testfs_path(path, sizeof path, "%s/actor.pub", auth_dir);
    CHECK(curve_cert_save_public(&actor, "actor", path) == 0);
    CHECK(curve_keypair(&rogue) == 0 && curve_cert_save(&rogue, rogue_dir, "actor") == 0);
    testfs_path(path, sizeof path, "%s/learner.pub", rogue_dir);
    CHECK(curve_cert_save_public(&g_pair, "learner", path) == 0); /* the right server key */

    /* Refusals are logged at WARN: the quiet runner's level (ERROR) would hide them. */
    int level = log_level();
    log_init("wire_curve", LOG_WARN);
    void      *ctx = zmq_ctx_new();
    AuthConfig cfg = {.keys_dir = dir};
    fileio_capture_begin();
    Auth *a = auth_new(ctx, &cfg, AUTH_LEARNER, true);
    char *log = fileio_capture_end(expect_verbose());
    free(log);
    WireSock *srv = a ? wire_sock_new(ctx, ZMQ_PULL, "results", NULL) : NULL;
    char      ep[128] = "";
    EXPECT(srv && auth_bind(a, srv, "tcp://127.0.0.1:*") == 0 &&
               wire_last_endpoint(srv, ep, sizeof ep) == 0,
           "a CURVE server with a ZAP handler");
    if (!srv) goto out;
    WireRejects *rej = wire_sock_rejects(srv);
    EXPECT(push_one(dir, "actor", ep, srv, 3.0), "an allowed client's frame did not arrive");
    EXPECT(auth_refused(a) == 0, "%llu refusals after an allowed client",
           (unsigned long long)auth_refused(a));

    fileio_capture_begin();
    bool  got = push_one(rogue_dir, "actor", ep, srv, 0.5);
    bool  counted = wait_refused(a, rej, 0, 3.0);
    char *log1 = fileio_capture_end(expect_verbose());
    EXPECT(!got && counted && strstr(log1, "not in the allow-list") && strstr(log1, "'results'"),
           "an unknown key: received %d, refusals %llu, log '%s'", got,
           (unsigned long long)auth_refused(a), log1);
    free(log1);

    uint64_t before = auth_refused(a);
    fileio_capture_begin();
    got = push_one(NULL, NULL, ep, srv, 0.5);
    counted = wait_refused(a, rej, before, 3.0);
    char *log2 = fileio_capture_end(expect_verbose());
    EXPECT(!got && counted && strstr(log2, "handshake failed"),
           "a plaintext client: received %d, refusals %llu (before %llu), log '%s'", got,
           (unsigned long long)auth_refused(a), (unsigned long long)before, log2);
    free(log2);
    EXPECT(wire_rejects_get(rej, WIRE_REJ_UNAUTHORIZED) == auth_refused(a),
           "socket counted %llu unauthorized, the handler %llu",
           (unsigned long long)wire_rejects_get(rej, WIRE_REJ_UNAUTHORIZED),
           (unsigned long long)auth_refused(a));
    EXPECT(push_one(dir, "actor", ep, srv, 3.0), "the allowed client is refused after the others");
    if (expect_verbose())
        printf("  curve: allowed client in, unknown key and plaintext refused (%llu refusals)\n",
               (unsigned long long)auth_refused(a));
out:
    auth_free(&a); /* before the socket its handler counts into */
    wire_sock_free(&srv);
    zmq_ctx_term(ctx);
    log_init("wire_curve", level);
}

static void test_missing_keys(const char *dir)
{
    void      *ctx = zmq_ctx_new();
    AuthConfig cfg = {.keys_dir = dir, .key_name = "nobody"};
    Auth      *a = NULL;
    EXPECT_REFUSED((a = auth_new(ctx, &cfg, "actor", false)) ? 0 : ERR_NOTFOUND, ERR_NOTFOUND,
                   "nobody.key", "a missing key pair");
    auth_free(&a);
    zmq_ctx_term(ctx);
}

int curve_selftest(bool verbose)
{
    expect_begin("curve", verbose);
    EXPECT(curve_is_available(), "libzmq has no CURVE");
    char dir[512];
    CHECK(testfs_tmpdir_new("curve", dir, sizeof dir) == 0);
    test_round_trip(dir);
    test_bad_files(dir);
    test_loopback();
    test_server(dir);
    test_missing_keys(dir);
    testfs_tmpdir_remove(dir);
    return expect_end();
}
