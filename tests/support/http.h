/* http: a minimal HTTP/1.1 client for tests, written over a plain TCP
 * socket (so a test exercises a server's real wire protocol, not a
 * library's view of it), and a reader of Prometheus text samples.
 *
 * http_request sends one request with "Connection: close" and reads the
 * reply to the end. Ownership: an HttpReply owns its texts (http_reply_free).
 * Threading: thread-safe (no shared state). Errors: 0, ERR_IO (connect,
 * send, receive; timeout) or ERR_FORMAT (no status line), printed on stderr
 * unless quiet. */
#ifndef RLHF_TEST_HTTP_H
#define RLHF_TEST_HTTP_H

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    int    status;  /* 200, 404, ... */
    char  *headers; /* the header lines as received, status line excluded */
    char  *body;    /* NUL-terminated */
    size_t body_len;
} HttpReply;

/* method path on 127.0.0.1:port, with body (NULL = none); waits at most
 * timeout_s for the whole reply. */
int http_request(int port, const char *method, const char *path, const char *body, double timeout_s,
                 bool quiet, HttpReply *out);
void http_reply_free(HttpReply *r);
/* The value of header name (case-insensitive) copied into out, or false. */
bool http_header(const HttpReply *r, const char *name, char *out, size_t cap);

/* The value of the sample whose name and labels are exactly series
 * ("x_total", "x{state=\"trained\"}") in a text exposition; false if the
 * line is missing or its value does not parse (NaN, +Inf and -Inf do). */
bool http_prom_value(const char *text, const char *series, double *out);

#endif
