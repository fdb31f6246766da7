/* curve_cert: a CURVE certificate file as the daemons read their keys and
 * the allow-list (--keys): curve_cert_load of the file (written 0600 into a
 * private tmpfs directory) as a public certificate and as a secret one, and
 * curve_cert_parse of the text.
 *
 * Input: the file. Properties: load and parse agree (load refuses a NUL
 * byte first); an accepted certificate holds 40-character Z85 keys that
 * decode, and a secret one's public key is the one its secret derives
 * (zmq_curve_public). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/net/curve.h"
#include "tests/fuzz/fuzz.h"

static void check_cert(const CurveCert *c, bool need_secret)
{
    unsigned char key[CURVE_KEY_BYTES];
    FUZZ_CHECK(strlen(c->public_z85) == CURVE_Z85_LEN && curve_key_decode(c->public_z85, key) == 0,
               "public key '%s'", c->public_z85);
    if (!need_secret) return;
    FUZZ_CHECK(c->has_secret && curve_key_decode(c->secret_z85, key) == 0, "secret key");
    char pub[CURVE_Z85_LEN + 1];
    FUZZ_CHECK(zmq_curve_public(pub, c->secret_z85) == 0 && !strcmp(pub, c->public_z85),
               "public key %s is not the secret key's %s", c->public_z85, pub);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_tmpfile("cert", data, size);
    char       *text = xmalloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    bool has_nul = memchr(data, '\0', size) != NULL;
    for (int need_secret = 0; need_secret < 2; need_secret++) {
        CurveCert c1, c2;
        int       rc1 = curve_cert_load(path, need_secret, &c1);
        int       rc2 = curve_cert_parse("fuzz", text, need_secret, &c2);
        if (rc1 == 0) check_cert(&c1, need_secret);
        if (rc2 == 0) check_cert(&c2, need_secret);
        if (!has_nul && size <= CURVE_CERT_MAX_BYTES)
            FUZZ_CHECK((rc1 == 0) == (rc2 == 0) &&
                           (rc1 != 0 || !strcmp(c1.public_z85, c2.public_z85)),
                       "load %d, parse %d", rc1, rc2);
    }
    free(text);
    return 0;
}

/* ---- seeds ---------------------------------------------------------------- */

static void seeds(const char *dir)
{
    /* curve_cert_save's two files of a fresh key pair. */
    CurveCert c;
    if (curve_keypair(&c) != 0) return; /* no CURVE in this libzmq: no certificates to fuzz */
    CHECK(curve_cert_save(&c, fuzz_tmpdir(), "learner") == 0);
    const char *names[2] = {"learner.key", "learner.pub"};
    for (int i = 0; i < 2; i++) {
        char   path[4096], *text = NULL;
        size_t n = 0;
        snprintf(path, sizeof path, "%s/%s", fuzz_tmpdir(), names[i]);
        CHECK(fileio_read_all(path, CURVE_CERT_MAX_BYTES, false, &text, &n) == 0);
        fuzz_seed(dir, names[i], text, n);
        free(text);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_init("curve_cert", seeds);
    return 0;
}
