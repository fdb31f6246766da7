#include "common/net/reject.h"

#include <stdarg.h>
#include <stdio.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "common/base/progress.h"

static const char *const k_reason_names[WIRE_REJ_COUNT] = {
    "garbage",   "oversized", "bad_version", "bad_run", "bad_shape",    "bad_tokens", "nonfinite",
    "bad_value", "bad_chunk", "checksum",    "unknown", "unauthorized", "busy",       "over_budget",
};

/* The first WIRE_LOG_BURST rejections of a reason are logged each; after
 * that one line per WIRE_LOG_EVERY_S seconds, so a flood of bad frames
 * cannot flood the log. */
#define WIRE_LOG_BURST 5
#define WIRE_LOG_EVERY_S 5.0

const char *wire_reason_name(WireReason r)
{
    if ((int)r < 0 || r >= WIRE_REJ_COUNT) return "?";
    return k_reason_names[r];
}

void wire_rejects_init(WireRejects *c)
{
    for (int i = 0; i < WIRE_REJ_COUNT; i++) {
        atomic_init(&c->n[i], 0);
        c->last_log_s[i] = 0.0;
        c->suppressed[i] = 0;
    }
}

void wire_rejects_count(WireRejects *c, WireReason r)
{
    CHECK((int)r >= 0 && r < WIRE_REJ_COUNT);
    atomic_fetch_add_explicit(&c->n[r], 1, memory_order_relaxed);
}

uint64_t wire_rejects_get(const WireRejects *c, WireReason r)
{
    CHECK((int)r >= 0 && r < WIRE_REJ_COUNT);
    return atomic_load_explicit(&((WireRejects *)c)->n[r], memory_order_relaxed);
}

uint64_t wire_rejects_total(const WireRejects *c)
{
    uint64_t t = 0;
    for (int i = 0; i < WIRE_REJ_COUNT; i++) t += wire_rejects_get(c, (WireReason)i);
    return t;
}

void wire_rejects_add(WireRejects *dst, const WireRejects *src)
{
    for (int i = 0; i < WIRE_REJ_COUNT; i++)
        atomic_fetch_add_explicit(&dst->n[i], wire_rejects_get(src, (WireReason)i),
                                  memory_order_relaxed);
}

void wire_rejects_format(const WireRejects *c, char *buf, size_t cap)
{
    CHECK(buf && cap > 0);
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < WIRE_REJ_COUNT; i++) {
        uint64_t n = wire_rejects_get(c, (WireReason)i);
        if (!n || used >= cap) continue;
        int w = snprintf(buf + used, cap - used, "%s%s=%llu", used ? " " : "", k_reason_names[i],
                         (unsigned long long)n);
        if (w < 0) break;
        used += (size_t)w;
    }
    if (used == 0) snprintf(buf, cap, "none");
}

void wire_reject_note(WireRejects *c, const char *where, const char *what, const WireReject *rej)
{
    WireReason r = rej && (int)rej->reason >= 0 && rej->reason < WIRE_REJ_COUNT ? rej->reason
                                                                                : WIRE_REJ_UNKNOWN;
    uint64_t   n = atomic_fetch_add_explicit(&c->n[r], 1, memory_order_relaxed) + 1;
    double     now = progress_now();
    if (n > WIRE_LOG_BURST && now - c->last_log_s[r] < WIRE_LOG_EVERY_S) {
        c->suppressed[r]++;
        return;
    }
    char more[64] = "";
    if (c->suppressed[r])
        snprintf(more, sizeof more, " (%llu more %s since the last line)",
                 (unsigned long long)c->suppressed[r], k_reason_names[r]);
    log_warn("%s: rejected %s: %s: %s%s", where ? where : "wire", what ? what : "frame",
             k_reason_names[r], rej ? rej->why : "", more);
    c->last_log_s[r] = now;
    c->suppressed[r] = 0;
}

int wire_reject_set(WireReject *rej, int code, WireReason reason, const char *fmt, ...)
{
    if (rej) {
        rej->reason = reason;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(rej->why, sizeof rej->why, fmt, ap);
        va_end(ap);
    }
    return code;
}
