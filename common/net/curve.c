#include "common/net/curve.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/log.h"

bool curve_is_available(void)
{
    return zmq_has("curve") != 0;
}

int curve_keypair(CurveCert *out)
{
    memset(out, 0, sizeof *out);
    if (zmq_curve_keypair(out->public_z85, out->secret_z85) != 0) {
        log_error("curve_keypair: zmq_curve_keypair: %s (libzmq without CURVE?)",
                  zmq_strerror(zmq_errno()));
        return ERR_UNSUPPORTED;
    }
    out->has_secret = true;
    return 0;
}

int curve_key_decode(const char *z85, unsigned char out[CURVE_KEY_BYTES])
{
    if (strlen(z85) != CURVE_Z85_LEN) return ERR_FORMAT;
    return zmq_z85_decode(out, z85) ? 0 : ERR_FORMAT;
}

/* ---- Writing ------------------------------------------------------------ */

static bool name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n >= CURVE_MAX_NAME) return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok) return false;
    }
    return name[0] != '.';
}

/* Writes text to a new file (O_EXCL: never over an existing one) of mode. */
static int write_new(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) {
        int e = errno;
        log_error("curve: %s: %s%s", path, strerror(e),
                  e == EEXIST ? " (refusing to overwrite a key file)" : "");
        return e == EEXIST ? ERR_ARG : ERR_IO;
    }
    size_t n = strlen(text), done = 0;
    while (done < n) {
        ssize_t w = write(fd, text + done, n - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            log_error("curve: write %s: %s", path, strerror(errno));
            close(fd);
            unlink(path);
            return ERR_IO;
        }
        done += (size_t)w;
    }
    /* The umask may have narrowed mode; a secret file must be exactly 0600. */
    if (fchmod(fd, mode) != 0 || fsync(fd) != 0 || close(fd) != 0) {
        log_error("curve: finish %s: %s", path, strerror(errno));
        unlink(path);
        return ERR_IO;
    }
    return 0;
}

static void format_cert(const CurveCert *c, const char *name, bool with_secret, char *out,
                        size_t cap)
{
    char      when[32] = "";
    time_t    t = time(NULL);
    struct tm tm;
    if (gmtime_r(&t, &tm)) strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    snprintf(out, cap,
             "#   ****  Generated on %s by rlhf-keygen  ****\n"
             "#   ZeroMQ CURVE %s Certificate\n"
             "#   %s\n"
             "\n"
             "metadata\n"
             "    name = \"%s\"\n"
             "curve\n"
             "    public-key = \"%s\"\n"
             "%s%s%s",
             when, with_secret ? "**Secret**" : "Public",
             with_secret ? "DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions."
                         : "Exchange securely, or verify its contents after exchange.",
             name, c->public_z85, with_secret ? "    secret-key = \"" : "",
             with_secret ? c->secret_z85 : "", with_secret ? "\"\n" : "");
}

int curve_cert_save_public(const CurveCert *c, const char *name, const char *path)
{
    if (!name_ok(name)) {
        log_error("curve: certificate name '%.80s': expected 1..%d characters of [A-Za-z0-9._-]",
                  name, CURVE_MAX_NAME - 1);
        return ERR_ARG;
    }
    char text[1024];
    format_cert(c, name, false, text, sizeof text);
    return write_new(path, text, 0644);
}

int curve_cert_save(const CurveCert *c, const char *dir, const char *name)
{
    CHECK(c && c->has_secret && dir && name);
    if (!name_ok(name)) {
        log_error("curve: certificate name '%.80s': expected 1..%d characters of [A-Za-z0-9._-]",
                  name, CURVE_MAX_NAME - 1);
        return ERR_ARG;
    }
    char key_path[4096], pub_path[4096], text[1024];
    snprintf(key_path, sizeof key_path, "%s/%s.key", dir, name);
    snprintf(pub_path, sizeof pub_path, "%s/%s.pub", dir, name);
    if (access(key_path, F_OK) == 0 || access(pub_path, F_OK) == 0) {
        log_error("curve: %s or %s exists (refusing to overwrite a key file)", key_path, pub_path);
        return ERR_ARG;
    }
    format_cert(c, name, true, text, sizeof text);
    int rc = write_new(key_path, text, 0600);
    if (rc) return rc;
    rc = curve_cert_save_public(c, name, pub_path);
    if (rc) unlink(key_path);
    return rc;
}

/* ---- Reading ------------------------------------------------------------ */

enum { SEC_NONE, SEC_METADATA, SEC_CURVE };

/* The ZPL name characters. */
static bool is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           strchr("$-_@.&+/", c) != NULL;
}

#define BAD(...)                                                                                   \
    do {                                                                                           \
        char why_[768];                                                                            \
        snprintf(why_, sizeof why_, __VA_ARGS__);                                                  \
        log_error("%s:%d: %s", path, lineno, why_);                                                \
        return ERR_FORMAT;                                                                         \
    } while (0)

/* One `name = "value"` line (indentation already skipped) into name/value. */
static int parse_pair(const char *path, int lineno, const char *p, char *name, size_t name_cap,
                      char *value, size_t value_cap)
{
    size_t n = 0;
    while (is_name_char(p[n])) n++;
    if (n == 0) BAD("expected a name, found '%.40s'", p);
    if (n >= name_cap) BAD("name of %zu characters, expected at most %zu", n, name_cap - 1);
    memcpy(name, p, n);
    name[n] = '\0';
    p += n;
    while (*p == ' ') p++;
    if (*p != '=') BAD("'%s': expected '=' after the name, found '%.20s'", name, p);
    p++;
    while (*p == ' ') p++;
    char q = *p;
    if (q != '"' && q != '\'') BAD("'%s': expected a quoted value, found '%.40s'", name, p);
    const char *end = strchr(p + 1, q);
    if (!end) BAD("'%s': value has no closing quote", name);
    size_t vn = (size_t)(end - (p + 1));
    if (vn >= value_cap)
        BAD("'%s': value of %zu characters, expected at most %zu", name, vn, value_cap - 1);
    memcpy(value, p + 1, vn);
    value[vn] = '\0';
    for (p = end + 1; *p == ' '; p++) {
    }
    if (*p) BAD("'%s': unexpected '%.20s' after the value", name, p);
    return 0;
}

static int take_key(const char *path, int lineno, const char *name, const char *value,
                    char out[CURVE_Z85_LEN + 1])
{
    unsigned char bin[CURVE_KEY_BYTES];
    if (out[0]) BAD("'%s' given twice", name);
    if (strlen(value) != CURVE_Z85_LEN || curve_key_decode(value, bin) != 0)
        BAD("'%s': expected %d characters of Z85, found %zu characters '%.48s'", name,
            CURVE_Z85_LEN, strlen(value), value);
    memcpy(out, value, CURVE_Z85_LEN + 1);
    return 0;
}

static int parse_line(const char *path, int lineno, const char *line, int *section, bool seen[3],
                      CurveCert *out)
{
    const char *p = line;
    while (*p == ' ') p++;
    if (*p == '\t') BAD("tab in the indentation (ZPL indents with spaces)");
    if (*p == '\0' || *p == '#') return 0;
    if (p == line) { /* a section at the left margin */
        int s = !strcmp(p, "metadata") ? SEC_METADATA : !strcmp(p, "curve") ? SEC_CURVE : SEC_NONE;
        if (s == SEC_NONE) BAD("section '%.40s', expected metadata or curve", p);
        if (seen[s]) BAD("section '%s' given twice", p);
        seen[s] = true;
        *section = s;
        return 0;
    }
    if (*section == SEC_NONE) BAD("'%.40s' outside a section (metadata or curve)", p);
    char name[64], value[256];
    int  rc = parse_pair(path, lineno, p, name, sizeof name, value, sizeof value);
    if (rc || *section == SEC_METADATA) return rc;
    if (!strcmp(name, "public-key")) return take_key(path, lineno, name, value, out->public_z85);
    if (!strcmp(name, "secret-key")) return take_key(path, lineno, name, value, out->secret_z85);
    BAD("'%s' in section curve, expected public-key or secret-key", name);
}

int curve_cert_parse(const char *path, const char *text, bool need_secret, CurveCert *out)
{
    memset(out, 0, sizeof *out);
    int         section = SEC_NONE, lineno = 0;
    bool        seen[3] = {false, false, false};
    const char *p = text;
    while (*p) {
        lineno++;
        const char *eol = strchr(p, '\n');
        size_t      n = eol ? (size_t)(eol - p) : strlen(p);
        char        line[512];
        if (n >= sizeof line)
            BAD("line of %zu characters, expected at most %zu", n, sizeof line - 1);
        memcpy(line, p, n);
        line[n] = '\0';
        if (memchr(line, '\r', n)) BAD("carriage return in the line (expected Unix line ends)");
        int rc = parse_line(path, lineno, line, &section, seen, out);
        if (rc) return rc;
        p = eol ? eol + 1 : p + n;
    }
    if (!out->public_z85[0]) BAD("no public-key in section curve");
    if (need_secret && !out->secret_z85[0]) BAD("no secret-key in section curve");
    if (!need_secret && out->secret_z85[0])
        BAD("a secret-key in a public certificate (share NAME.pub, never NAME.key)");
    if (out->secret_z85[0]) {
        char derived[CURVE_Z85_LEN + 1];
        if (zmq_curve_public(derived, out->secret_z85) != 0 ||
            strcmp(derived, out->public_z85) != 0)
            BAD("public-key is not the one secret-key derives");
        out->has_secret = true;
    }
    return 0;
}

#undef BAD

int curve_cert_load(const char *path, bool need_secret, CurveCert *out)
{
    memset(out, 0, sizeof *out);
    struct stat st;
    if (stat(path, &st) != 0) {
        int e = errno;
        log_error("curve: %s: %s", path, strerror(e));
        return e == ENOENT ? ERR_NOTFOUND : ERR_IO;
    }
    if (need_secret && (st.st_mode & 077)) {
        log_error("curve: %s:0: mode %04o, expected 0600 (a secret key readable by others; "
                  "chmod 600 it)",
                  path, (unsigned)(st.st_mode & 07777));
        return ERR_ARG;
    }
    char  *text = NULL;
    size_t len = 0;
    int    rc = fileio_read_all(path, CURVE_CERT_MAX_BYTES, false, &text, &len);
    if (rc) return rc;
    if (memchr(text, '\0', len)) {
        log_error("curve: %s:0: a NUL byte in a text file", path);
        rc = ERR_FORMAT;
    } else {
        rc = curve_cert_parse(path, text, need_secret, out);
    }
    free(text);
    return rc;
}
