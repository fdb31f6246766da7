/* curve: CURVE key pairs in ZeroMQ's certificate files (the text format
 * CZMQ's zcert writes), so keys made here work with other ZeroMQ tools and
 * the other way round.
 *
 * A certificate is two files: NAME.pub (public, shareable) and NAME.key
 * (both keys, mode 0600), each a ZPL text of the form
 *
 *     #   ZeroMQ CURVE Public Certificate      (comments: '#' lines)
 *     metadata
 *         name = "learner"
 *     curve
 *         public-key = "<40 characters of Z85>"
 *         secret-key = "<40 characters of Z85>"   (NAME.key only)
 *
 * Reading is strict: only the sections metadata and curve at the left
 * margin, only indented `key = "value"` lines under them, the curve section
 * only public-key and secret-key, each once, each 40 Z85 characters that
 * decode; a secret file must hold both keys, the public key must be the one
 * the secret key derives, and the file must not be readable by group or
 * others. Every refusal is logged as "<path>:<line>: <what is wrong>".
 *
 * Ownership: CurveCert is a plain struct the caller owns. Threading: every
 * function is thread-safe. Errors: functions return 0 or a negative ERR_*
 * code from common/base/err.h, logged once here. */
#ifndef RLHF_CURVE_H
#define RLHF_CURVE_H

#include <stdbool.h>
#include <stddef.h>

#define CURVE_Z85_LEN 40                 /* characters of a Z85-encoded 32-byte key */
#define CURVE_KEY_BYTES 32               /* bytes of a binary key */
#define CURVE_MAX_NAME 64                /* bytes of a certificate name, NUL included */
#define CURVE_CERT_MAX_BYTES (64 * 1024) /* a certificate file larger than this is refused */

typedef struct {
    char public_z85[CURVE_Z85_LEN + 1]; /* NUL-terminated Z85 */
    char secret_z85[CURVE_Z85_LEN + 1]; /* "" when only the public key is known */
    bool has_secret;
} CurveCert;

/* True when this libzmq was built with CURVE (zmq_has("curve")). */
bool curve_is_available(void);

/* A fresh key pair (zmq_curve_keypair). Returns 0 or ERR_UNSUPPORTED (no
 * CURVE in libzmq; logged). */
int curve_keypair(CurveCert *out);

/* Writes dir/<name>.key (mode 0600, both keys) and dir/<name>.pub (mode
 * 0644), with name in the metadata section. name is 1..CURVE_MAX_NAME-1
 * characters of [A-Za-z0-9._-]. Never overwrites: ERR_ARG if either file
 * exists or the name is bad, ERR_IO if a file cannot be written (logged). */
int curve_cert_save(const CurveCert *c, const char *dir, const char *name);
/* Writes only the public certificate to path (mode 0644, never
 * overwriting): for an allow-list entry. Errors as curve_cert_save. */
int curve_cert_save_public(const CurveCert *c, const char *name, const char *path);

/* Reads a certificate file. need_secret: the file must hold the secret key
 * (a NAME.key). Returns 0 with *out filled; ERR_NOTFOUND if the file does
 * not exist; ERR_FORMAT for a malformed file or ERR_ARG for a secret file
 * readable by others (both logged with path and line); ERR_IO otherwise. */
int curve_cert_load(const char *path, bool need_secret, CurveCert *out);

/* Parses certificate text (for curve_cert_load and tests); path names it in
 * the log lines. Returns 0 or ERR_FORMAT (logged as "<path>:<line>: ..."). */
int curve_cert_parse(const char *path, const char *text, bool need_secret, CurveCert *out);

/* Z85 key text -> 32 bytes. Returns 0 or ERR_FORMAT (not logged). */
int curve_key_decode(const char *z85, unsigned char out[CURVE_KEY_BYTES]);

#endif
