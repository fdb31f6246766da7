#include "common/net/zap.h"

#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "common/net/curve.h"

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define ZAP_POLL_MS 50 /* how often the thread looks at new watches and the stop flag */
#define ZAP_MAX_FRAMES 8
/* Handshakes that failed before ZAP was asked: mechanism mismatch (a
 * plaintext client), a HELLO that does not decrypt (a wrong server key).
 * ZAP refusals are counted by the handler itself, so HANDSHAKE_FAILED_AUTH
 * is not watched. HANDSHAKE_FAILED_NO_DETAIL (the peer hung up mid-handshake)
 * is counted as well: a plaintext client that sees the mismatch first hangs
 * up before the server reads its greeting, and that is all the server sees
 * of it. A port probe that connects and closes counts the same way. */
#define ZAP_MONITOR_EVENTS                                                                         \
    (ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL)

typedef struct {
    char         name[32];     /* ZAP domain = socket name */
    char         endpoint[96]; /* the monitor's inproc endpoint */
    WireRejects *rejects;      /* the socket's counters; borrowed, may be NULL */
    void        *mon;          /* handler thread: PAIR connected to the monitor */
} Watch;

struct Zap {
    void *zctx;
    char  who[32];
    char  allow_dir[256];
    unsigned char (*keys)[CURVE_KEY_BYTES];
    char (*key_names)[CURVE_MAX_NAME];
    int              n_keys;
    pthread_t        thread;
    bool             is_started;
    atomic_int       is_stopping;
    void            *handler; /* REP on ZAP_ENDPOINT, bound by zap_new, used by the thread */
    pthread_mutex_t  mu;      /* guards n_watch and ready across zap_watch and the thread */
    pthread_cond_t   cv;
    Watch            watch[ZAP_MAX_WATCH];
    int              n_watch;  /* entries filled by zap_watch */
    int              n_ready;  /* entries the thread has connected to */
    WireRejects      refusals; /* every refusal; rate-limit state touched by the thread only */
    _Atomic uint64_t allowed;
};

/* ---- Allow-list --------------------------------------------------------- */

static bool ends_with(const char *s, const char *tail)
{
    size_t n = strlen(s), m = strlen(tail);
    return n > m && !strcmp(s + n - m, tail);
}

static int load_allow_list(Zap *z, const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        log_warn("%s: allow-list %s: cannot open it, so every client is refused", z->who, dir);
        return 0;
    }
    int            rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || !ends_with(e->d_name, ".pub")) continue;
        if (z->n_keys == ZAP_MAX_KEYS) {
            log_error("%s: allow-list %s: more than %d keys", z->who, dir, ZAP_MAX_KEYS);
            rc = ERR_RANGE;
            break;
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        CurveCert c;
        if ((rc = curve_cert_load(path, false, &c)) != 0) break;
        z->keys = xrealloc(z->keys, (size_t)(z->n_keys + 1) * sizeof *z->keys);
        z->key_names = xrealloc(z->key_names, (size_t)(z->n_keys + 1) * sizeof *z->key_names);
        CHECK(curve_key_decode(c.public_z85, z->keys[z->n_keys]) == 0); /* parse checked it */
        snprintf(z->key_names[z->n_keys], CURVE_MAX_NAME, "%.*s",
                 (int)(strlen(e->d_name) - 4) < CURVE_MAX_NAME - 1 ? (int)(strlen(e->d_name) - 4)
                                                                   : CURVE_MAX_NAME - 1,
                 e->d_name);
        z->n_keys++;
    }
    closedir(d);
    if (rc == 0 && z->n_keys == 0)
        log_warn("%s: allow-list %s holds no *.pub, so every client is refused", z->who, dir);
    return rc;
}

static int find_key(const Zap *z, const unsigned char *key)
{
    for (int i = 0; i < z->n_keys; i++)
        if (!memcmp(z->keys[i], key, CURVE_KEY_BYTES)) return i;
    return -1;
}

static Watch *watch_of(Zap *z, const char *name, size_t len)
{
    for (int i = 0; i < z->n_ready; i++)
        if (strlen(z->watch[i].name) == len && !memcmp(z->watch[i].name, name, len))
            return &z->watch[i];
    return NULL;
}

/* Counts a refusal on the socket's counters and the handler's, and logs it
 * (rate-limited by the handler's counters). */
static void refuse(Zap *z, Watch *w, const char *fmt_what, const char *why)
{
    if (w && w->rejects) wire_rejects_count(w->rejects, WIRE_REJ_UNAUTHORIZED);
    WireReject rej = {.reason = WIRE_REJ_UNAUTHORIZED};
    snprintf(rej.why, sizeof rej.why, "%s", why);
    wire_reject_note(&z->refusals, "zap", fmt_what, &rej);
}

/* ---- The handler thread ------------------------------------------------- */

typedef struct {
    zmq_msg_t f[ZAP_MAX_FRAMES];
    int       n;
} Frames;

static int recv_frames(void *s, Frames *m)
{
    m->n = 0;
    int more = 1;
    while (more) {
        zmq_msg_t tmp, *f = m->n < ZAP_MAX_FRAMES ? &m->f[m->n] : &tmp;
        zmq_msg_init(f);
        if (zmq_msg_recv(f, s, 0) < 0) {
            zmq_msg_close(f);
            return ERR_IO;
        }
        more = zmq_msg_more(f);
        if (f == &tmp)
            zmq_msg_close(f); /* more frames than a request has: kept out, refused below */
        else
            m->n++;
    }
    return 0;
}

static void close_frames(Frames *m)
{
    for (int i = 0; i < m->n; i++) zmq_msg_close(&m->f[i]);
    m->n = 0;
}

static bool frame_is(zmq_msg_t *f, const char *s)
{
    return zmq_msg_size(f) == strlen(s) && !memcmp(zmq_msg_data(f), s, strlen(s));
}

static void send_reply(Zap *z, zmq_msg_t *request_id, const char *code, const char *text,
                       const char *user)
{
    const char *parts[6] = {"1.0", NULL, code, text, user, ""};
    for (int i = 0; i < 6; i++) {
        int flags = i < 5 ? ZMQ_SNDMORE : 0;
        int rc = i == 1 ? zmq_send(z->handler, request_id ? zmq_msg_data(request_id) : "",
                                   request_id ? zmq_msg_size(request_id) : 0, flags)
                        : zmq_send(z->handler, parts[i], strlen(parts[i]), flags);
        if (rc < 0) {
            log_error("%s: zap reply: %s", z->who, zmq_strerror(zmq_errno()));
            return;
        }
    }
}

/* One ZAP request: [version, request id, domain, address, identity,
 * mechanism, credentials...]; CURVE's one credential is the client's key. */
static void on_request(Zap *z)
{
    Frames m;
    if (recv_frames(z->handler, &m) != 0) return;
    char what[160];
    if (m.n < 6 || !frame_is(&m.f[0], "1.0")) {
        refuse(z, NULL, "ZAP request", "malformed (not ZAP 1.0)");
        send_reply(z, m.n > 1 ? &m.f[1] : NULL, "500", "malformed request", "");
        close_frames(&m);
        return;
    }
    Watch *w = watch_of(z, zmq_msg_data(&m.f[2]), zmq_msg_size(&m.f[2]));
    snprintf(what, sizeof what, "connection on '%.*s' from %.*s", (int)zmq_msg_size(&m.f[2]),
             (const char *)zmq_msg_data(&m.f[2]), (int)zmq_msg_size(&m.f[3]),
             (const char *)zmq_msg_data(&m.f[3]));
    if (!frame_is(&m.f[5], "CURVE") || m.n != 7 || zmq_msg_size(&m.f[6]) != CURVE_KEY_BYTES) {
        refuse(z, w, what, "not a CURVE client");
        send_reply(z, &m.f[1], "400", "CURVE required", "");
        close_frames(&m);
        return;
    }
    int k = find_key(z, zmq_msg_data(&m.f[6]));
    if (k < 0) {
        char z85[CURVE_Z85_LEN + 1], why[192];
        zmq_z85_encode(z85, zmq_msg_data(&m.f[6]), CURVE_KEY_BYTES);
        snprintf(why, sizeof why, "client key %s is not in the allow-list %.100s", z85,
                 z->allow_dir);
        refuse(z, w, what, why);
        send_reply(z, &m.f[1], "400", "key not allowed", "");
    } else {
        atomic_fetch_add(&z->allowed, 1);
        log_debug("%s: %s: allowed key '%s'", z->who, what, z->key_names[k]);
        send_reply(z, &m.f[1], "200", "OK", z->key_names[k]);
    }
    close_frames(&m);
}

/* One monitor event: [uint16 event + uint32 value, endpoint]. */
static void on_monitor(Zap *z, Watch *w)
{
    Frames m;
    if (recv_frames(w->mon, &m) != 0) return;
    if (m.n == 2 && zmq_msg_size(&m.f[0]) == 6) {
        uint16_t ev;
        uint32_t value;
        memcpy(&ev, zmq_msg_data(&m.f[0]), 2);
        memcpy(&value, (const char *)zmq_msg_data(&m.f[0]) + 2, 4);
        char what[160], why[160];
        snprintf(what, sizeof what, "connection on '%s' (%.*s)", w->name,
                 (int)zmq_msg_size(&m.f[1]), (const char *)zmq_msg_data(&m.f[1]));
        if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) {
            snprintf(why, sizeof why,
                     "handshake failed (protocol error 0x%x: a plaintext client, or one "
                     "holding a wrong server key)",
                     value);
        } else {
            snprintf(why, sizeof why,
                     "handshake failed (errno %u: the peer hung up, a plaintext client or a "
                     "port probe)",
                     value);
        }
        refuse(z, w, what, why);
    }
    close_frames(&m);
}

/* Connects PAIR sockets to the monitors zap_watch started, and tells it. */
static void take_new_watches(Zap *z)
{
    pthread_mutex_lock(&z->mu);
    while (z->n_ready < z->n_watch) {
        Watch *w = &z->watch[z->n_ready];
        w->mon = zmq_socket(z->zctx, ZMQ_PAIR);
        if (!w->mon || zmq_connect(w->mon, w->endpoint) != 0)
            log_error("%s: zap: monitor of '%s': %s", z->who, w->name, zmq_strerror(zmq_errno()));
        z->n_ready++;
    }
    pthread_cond_broadcast(&z->cv);
    pthread_mutex_unlock(&z->mu);
}

static void *zap_main(void *arg)
{
    Zap *z = arg;
    while (!atomic_load(&z->is_stopping)) {
        take_new_watches(z);
        zmq_pollitem_t items[1 + ZAP_MAX_WATCH];
        Watch         *of[1 + ZAP_MAX_WATCH];
        int            n = 0;
        items[n] = (zmq_pollitem_t){.socket = z->handler, .events = ZMQ_POLLIN};
        of[n++] = NULL;
        for (int i = 0; i < z->n_ready; i++) {
            if (!z->watch[i].mon) continue;
            items[n] = (zmq_pollitem_t){.socket = z->watch[i].mon, .events = ZMQ_POLLIN};
            of[n++] = &z->watch[i];
        }
        int rc = zmq_poll(items, n, ZAP_POLL_MS);
        if (rc < 0) {
            if (zmq_errno() == EINTR) continue;
            log_error("%s: zap: zmq_poll: %s", z->who, zmq_strerror(zmq_errno()));
            break;
        }
        for (int i = 0; i < n; i++) {
            if (!(items[i].revents & ZMQ_POLLIN)) continue;
            if (of[i])
                on_monitor(z, of[i]);
            else
                on_request(z);
        }
    }
    for (int i = 0; i < z->n_ready; i++)
        if (z->watch[i].mon) zmq_close(z->watch[i].mon);
    zmq_close(z->handler);
    z->handler = NULL;
    return NULL;
}

/* ---- Life cycle --------------------------------------------------------- */

Zap *zap_new(void *zctx, const char *allow_dir, const char *who)
{
    CHECK(zctx && allow_dir && who);
    Zap *z = xcalloc(1, sizeof *z);
    z->zctx = zctx;
    snprintf(z->who, sizeof z->who, "%s", who);
    snprintf(z->allow_dir, sizeof z->allow_dir, "%s", allow_dir);
    wire_rejects_init(&z->refusals);
    atomic_init(&z->is_stopping, 0);
    atomic_init(&z->allowed, 0);
    pthread_mutex_init(&z->mu, NULL);
    pthread_cond_init(&z->cv, NULL);
    if (load_allow_list(z, allow_dir) != 0) goto fail;
    z->handler = zmq_socket(zctx, ZMQ_REP);
    int linger = 0;
    if (!z->handler || zmq_setsockopt(z->handler, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_bind(z->handler, ZAP_ENDPOINT) != 0) {
        log_error("%s: zap: bind %s: %s", who, ZAP_ENDPOINT, zmq_strerror(zmq_errno()));
        goto fail;
    }
    if (pthread_create(&z->thread, NULL, zap_main, z) != 0) {
        log_error("%s: zap: pthread_create failed", who);
        goto fail;
    }
    z->is_started = true;
    log_info("%s: CURVE on, %d client key(s) allowed from %s", who, z->n_keys, allow_dir);
    return z;
fail:
    zap_free(&z);
    return NULL;
}

void zap_free(Zap **pz)
{
    if (!pz || !*pz) return;
    Zap *z = *pz;
    if (z->is_started) {
        atomic_store(&z->is_stopping, 1);
        pthread_join(z->thread, NULL);
    } else if (z->handler) {
        zmq_close(z->handler);
    }
    pthread_mutex_destroy(&z->mu);
    pthread_cond_destroy(&z->cv);
    free(z->keys);
    free(z->key_names);
    free(z);
    *pz = NULL;
}

int zap_watch(Zap *z, void *zsock, const char *name, WireRejects *rejects)
{
    CHECK(z && zsock && name && strlen(name) < sizeof z->watch[0].name);
    if (zmq_setsockopt(zsock, ZMQ_ZAP_DOMAIN, name, strlen(name)) != 0) {
        log_error("%s: zap: socket '%s': ZMQ_ZAP_DOMAIN: %s", z->who, name,
                  zmq_strerror(zmq_errno()));
        return ERR_IO;
    }
    pthread_mutex_lock(&z->mu);
    if (z->n_watch == ZAP_MAX_WATCH) {
        pthread_mutex_unlock(&z->mu);
        log_error("%s: zap: socket '%s': more than %d watched sockets", z->who, name,
                  ZAP_MAX_WATCH);
        return ERR_RANGE;
    }
    Watch *w = &z->watch[z->n_watch];
    memset(w, 0, sizeof *w);
    snprintf(w->name, sizeof w->name, "%s", name);
    snprintf(w->endpoint, sizeof w->endpoint, "inproc://rlhf-zap-%p-%d", (void *)z, z->n_watch);
    w->rejects = rejects;
    if (zmq_socket_monitor(zsock, w->endpoint, ZAP_MONITOR_EVENTS) != 0) {
        pthread_mutex_unlock(&z->mu);
        log_error("%s: zap: monitor of '%s': %s", z->who, name, zmq_strerror(zmq_errno()));
        return ERR_IO;
    }
    int mine = ++z->n_watch;
    /* Events sent before the handler's PAIR connects are lost: wait for it. */
    while (z->n_ready < mine) pthread_cond_wait(&z->cv, &z->mu);
    pthread_mutex_unlock(&z->mu);
    return 0;
}

uint64_t zap_refused(const Zap *z)
{
    return wire_rejects_total(&z->refusals);
}

uint64_t zap_allowed(const Zap *z)
{
    return atomic_load(&((Zap *)z)->allowed);
}

int zap_n_keys(const Zap *z)
{
    return z->n_keys;
}
