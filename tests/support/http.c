#include "tests/support/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/base/progress.h"

static int fail(bool quiet, int rc, const char *fmt, int port, const char *path)
{
    if (!quiet) fprintf(stderr, fmt, port, path, strerror(errno));
    return rc;
}

int http_request(int port, const char *method, const char *path, const char *body, double timeout_s,
                 bool quiet, HttpReply *out)
{
    memset(out, 0, sizeof *out);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return fail(quiet, ERR_IO, "http: port %d %s: socket: %s\n", port, path);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        int rc = fail(quiet, ERR_IO, "http: port %d %s: connect: %s\n", port, path);
        close(fd);
        return rc;
    }
    char   req[1024];
    size_t blen = body ? strlen(body) : 0;
    int    n = snprintf(req, sizeof req,
                        "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUser-Agent: rlhf-test\r\n"
                           "Connection: close\r\nContent-Length: %zu\r\n\r\n",
                        method, path, port, blen);
    if (n < 0 || (size_t)n >= sizeof req || send(fd, req, (size_t)n, MSG_NOSIGNAL) != (ssize_t)n ||
        (blen && send(fd, body, blen, MSG_NOSIGNAL) != (ssize_t)blen)) {
        int rc = fail(quiet, ERR_IO, "http: port %d %s: send: %s\n", port, path);
        close(fd);
        return rc;
    }
    size_t len = 0, cap = 8192;
    char  *buf = malloc(cap);
    CHECK(buf);
    double end = progress_now() + timeout_s;
    int    rc = 0;
    for (;;) {
        double        left = end - progress_now();
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, (int)(left * 1000) + 1) <= 0) {
            if (left > 0 && errno == EINTR) continue;
            errno = ETIMEDOUT;
            rc = fail(quiet, ERR_IO, "http: port %d %s: reply: %s\n", port, path);
            break;
        }
        if (len + 4096 + 1 > cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            CHECK(buf);
        }
        ssize_t got = recv(fd, buf + len, cap - len - 1, 0);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            rc = fail(quiet, ERR_IO, "http: port %d %s: recv: %s\n", port, path);
            break;
        }
        if (got == 0) break; /* the server closed: the reply is complete */
        len += (size_t)got;
    }
    close(fd);
    buf[len] = '\0';
    char *eol = strstr(buf, "\r\n"), *eoh = strstr(buf, "\r\n\r\n");
    int   status = 0;
    if (!rc && (!eol || !eoh || sscanf(buf, "HTTP/1.%*d %d", &status) != 1)) {
        if (!quiet)
            fprintf(stderr, "http: port %d %s: no status line in '%.80s'\n", port, path, buf);
        rc = ERR_FORMAT;
    }
    if (rc) {
        free(buf);
        return rc;
    }
    out->status = status;
    out->headers = strndup(eol + 2, (size_t)(eoh + 2 - (eol + 2)));
    out->body_len = len - (size_t)(eoh + 4 - buf);
    out->body = malloc(out->body_len + 1);
    CHECK(out->headers && out->body);
    memcpy(out->body, eoh + 4, out->body_len + 1);
    free(buf);
    return 0;
}

void http_reply_free(HttpReply *r)
{
    free(r->headers);
    free(r->body);
    memset(r, 0, sizeof *r);
}

bool http_header(const HttpReply *r, const char *name, char *out, size_t cap)
{
    size_t n = strlen(name);
    for (const char *p = r->headers; p && *p;) {
        const char *e = strstr(p, "\r\n");
        size_t      len = e ? (size_t)(e - p) : strlen(p);
        if (len > n && p[n] == ':' && !strncasecmp(p, name, n)) {
            const char *v = p + n + 1;
            while (*v == ' ') v++;
            snprintf(out, cap, "%.*s", (int)(len - (size_t)(v - p)), v);
            return true;
        }
        p = e ? e + 2 : p + len;
    }
    return false;
}

bool http_prom_value(const char *text, const char *series, double *out)
{
    size_t n = strlen(series);
    for (const char *p = text; p && *p;) {
        const char *e = strchr(p, '\n');
        if (!strncmp(p, series, n) && p[n] == ' ') {
            const char *v = p + n + 1;
            char       *end;
            if (!strncmp(v, "NaN", 3))
                *out = NAN;
            else if (!strncmp(v, "+Inf", 4))
                *out = INFINITY;
            else if (!strncmp(v, "-Inf", 4))
                *out = -INFINITY;
            else {
                *out = strtod(v, &end);
                if (end == v) return false;
            }
            return true;
        }
        p = e ? e + 1 : NULL;
    }
    return false;
}
