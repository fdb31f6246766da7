#include "common/tasks/jsonl.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/log.h"
#include "common/base/progress.h"

/* Where a good record's line is: 16 bytes each. */
typedef struct {
    uint64_t off;  /* file offset of the line's first byte */
    uint32_t len;  /* bytes, without the line end */
    uint32_t line; /* 1-based line number */
} JsonlEntry;

struct Jsonl {
    char       *path;
    int         fd;
    JsonlOpts   opts;
    JsonlEntry *ents; /* (n) the good records, in file order */
    uint64_t    n, cap;
    JsonlStats  st;
    uint64_t    fingerprint;
    char       *line; /* JSONL_MAX_LINE bytes: jsonl_read's line */
};

const char *const jsonl_common_names[JSONL_N_COMMON] = {
    [JSONL_OK] = "ok",
    [JSONL_BAD_JSON] = "not JSON",
    [JSONL_BAD_OBJECT] = "not a JSON object",
    [JSONL_BAD_LINE] = "line too long",
};

const char *jsonl_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "?";
}

bool jsonl_is_blank(const char *s)
{
    for (; *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r') return false;
    return true;
}

const char *jsonl_problem_name(const Jsonl *j, int p)
{
    return p >= 0 && p < j->opts.n_problems ? j->opts.problem_names[p] : "?";
}

/* Parses one line: the object, or a common problem with its detail. */
static int parse_line(const char *text, size_t len, json_t **obj, char *why, size_t wl)
{
    json_error_t e;
    json_t      *root = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &e);
    *obj = NULL;
    if (!root) {
        snprintf(why, wl, "%s (column %d)", e.text, e.column);
        return JSONL_BAD_JSON;
    }
    if (!json_is_object(root)) {
        snprintf(why, wl, "the line is %s, expected an object", jsonl_type_name(root));
        json_decref(root);
        return JSONL_BAD_OBJECT;
    }
    *obj = root;
    return JSONL_OK;
}

/* ---- Indexing ------------------------------------------------------------ */

typedef struct {
    Jsonl        *j;
    XXH3_state_t *hash;
    uint64_t      line; /* lines seen */
} Indexer;

static void note_bad(Indexer *ix, int p, const char *why)
{
    Jsonl *j = ix->j;
    CHECK(p > 0 && p < j->opts.n_problems);
    j->st.bad++;
    j->st.bad_by[p]++;
    if (j->st.bad <= JSONL_LOG_BAD)
        log_warn("%s:%" PRIu64 ": %s: %s", j->path, ix->line, jsonl_problem_name(j, p), why);
}

/* One line of the file at offset off (line end removed). */
static void index_line(Indexer *ix, const char *text, size_t len, uint64_t off)
{
    Jsonl *j = ix->j;
    ix->line++;
    j->st.lines++;
    if (len > 0 && text[len - 1] == '\r') len--;
    /* A byte-order mark opens some UTF-8 files. */
    if (off == 0 && len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3)) text += 3, len -= 3, off += 3;
    size_t k = 0;
    while (k < len && (text[k] == ' ' || text[k] == '\t')) k++;
    if (k == len) {
        j->st.blank++;
        return;
    }
    char    why[320] = "";
    int     p = JSONL_BAD_LINE;
    json_t *obj = NULL;
    if (len >= (size_t)JSONL_MAX_LINE)
        snprintf(why, sizeof why, "longer than %d bytes", JSONL_MAX_LINE);
    else
        p = parse_line(text, len, &obj, why, sizeof why);
    if (!p) {
        p = j->opts.check(j->opts.check_ctx, obj, why, sizeof why);
        CHECK(p == 0 || (p >= JSONL_N_COMMON && p < j->opts.n_problems));
    }
    json_decref(obj);
    if (p) {
        note_bad(ix, p, why);
    } else if (j->n >= JSONL_MAX_RECORDS || ix->line > UINT32_MAX) {
        note_bad(ix, j->opts.too_many, "beyond the records or lines one file may hold");
    } else {
        if (j->n == j->cap) {
            j->cap = j->cap ? 2 * j->cap : 1024;
            j->ents = xrealloc(j->ents, sizeof(JsonlEntry) * j->cap);
        }
        j->ents[j->n++] = (JsonlEntry){off, (uint32_t)len, (uint32_t)ix->line};
    }
}

/* Reads the file once in blocks, indexing each line. */
static int index_file(Jsonl *j, uint64_t size)
{
    const size_t B = 2 * (size_t)JSONL_MAX_LINE;
    char        *buf = xmalloc(B);
    Indexer      ix = {.j = j, .hash = XXH3_createState()};
    CHECK(ix.hash && XXH3_64bits_reset(ix.hash) == XXH_OK);
    uint64_t base = 0; /* file offset of buf[0] */
    size_t   have = 0;
    bool     skipping = false; /* inside a line too long to index */
    int      rc = 0;
    double   t_log = progress_now();
    while (base + have < size || have > 0) {
        size_t want = B - have;
        if (want > size - (base + have)) want = (size_t)(size - (base + have));
        if (want > 0) {
            if ((rc = fileio_pread_exact(j->fd, buf + have, want, base + have, NULL))) {
                log_error("%s: '%s': read at byte %" PRIu64 " failed (%s)", j->opts.what, j->path,
                          base + have, err_str(rc));
                break;
            }
            XXH3_64bits_update(ix.hash, buf + have, want);
            have += want;
        }
        bool   at_end = base + have == size;
        size_t pos = 0;
        for (;;) {
            char  *nl = memchr(buf + pos, '\n', have - pos);
            size_t end = nl ? (size_t)(nl - buf) : have;
            if (!nl && !at_end) break;
            if (skipping) {
                skipping = false;
            } else if (end > pos || nl) {
                index_line(&ix, buf + pos, end - pos, base + pos);
            }
            pos = nl ? end + 1 : have;
            if (pos >= have) break;
        }
        if (pos < have && have - pos >= (size_t)JSONL_MAX_LINE && !skipping) {
            ix.line++;
            j->st.lines++;
            char why[96];
            snprintf(why, sizeof why, "longer than %d bytes", JSONL_MAX_LINE);
            note_bad(&ix, JSONL_BAD_LINE, why);
            skipping = true;
        }
        if (skipping) pos = have; /* the rest of the long line is dropped as it comes */
        memmove(buf, buf + pos, have - pos);
        base += pos;
        have -= pos;
        if (at_end && have == 0) break;
        if (progress_now() - t_log > 10) {
            t_log = progress_now();
            log_info("%s: '%s': %.0f%% indexed (%" PRIu64 " records)", j->opts.what, j->path,
                     100.0 * (double)base / (double)size, j->n);
        }
    }
    j->fingerprint = XXH3_64bits_digest(ix.hash);
    XXH3_freeState(ix.hash);
    free(buf);
    j->st.good = j->n;
    return rc;
}

/* ---- Opening ------------------------------------------------------------- */

void jsonl_free(Jsonl **jp)
{
    if (!jp || !*jp) return;
    Jsonl *j = *jp;
    if (j->fd >= 0) close(j->fd);
    free(j->path);
    free(j->ents);
    free(j->line);
    free(j);
    *jp = NULL;
}

void jsonl_problems_summary(const Jsonl *j, char *buf, size_t cap)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int p = 1; p < j->opts.n_problems && used < cap; p++) {
        if (!j->st.bad_by[p]) continue;
        int w = snprintf(buf + used, cap - used, "%s%s %" PRIu64, used ? ", " : "",
                         jsonl_problem_name(j, p), j->st.bad_by[p]);
        if (w < 0) break;
        used += (size_t)w;
    }
}

int jsonl_open(const char *path, const JsonlOpts *o, Jsonl **out)
{
    *out = NULL;
    CHECK(o && o->what && o->check && o->problem_names);
    CHECK(o->n_problems >= JSONL_N_COMMON && o->n_problems <= JSONL_MAX_PROBLEMS);
    CHECK(o->too_many > 0 && o->too_many < o->n_problems);
    if (!path || !path[0] || o->max_bad_percent < 0 || o->max_bad_percent > 100) {
        log_error("%s: '%s': bad options (a path, max_bad_percent 0..100)", o->what,
                  path ? path : "(null)");
        return ERR_ARG;
    }
    Jsonl *j = xcalloc(1, sizeof *j);
    j->fd = -1;
    j->opts = *o;
    j->path = strdup(path);
    CHECK(j->path);
    j->line = xmalloc(JSONL_MAX_LINE);
    uint64_t size = 0;
    int      rc = fileio_open_regular(o->what, path, &j->fd, &size);
    if (rc) goto fail;
    j->st.bytes = size;
    if ((rc = index_file(j, size))) goto fail;
    const JsonlStats *st = &j->st;
    uint64_t          total = st->good + st->bad;
    char              probs[400];
    jsonl_problems_summary(j, probs, sizeof probs);
    if (st->good == 0) {
        log_error("%s: '%s': no usable record (%" PRIu64 " lines, %" PRIu64 " bad%s%s)", o->what,
                  path, st->lines, st->bad, st->bad ? ": " : "", probs);
        rc = ERR_FORMAT;
        goto fail;
    }
    if (st->bad * 100 > (uint64_t)o->max_bad_percent * total) {
        log_error("%s: '%s': %" PRIu64 " of %" PRIu64 " records are bad (%.1f%% > the "
                  "%d%% allowed: %s); refusing the file",
                  o->what, path, st->bad, total, 100.0 * (double)st->bad / (double)total,
                  o->max_bad_percent, probs);
        rc = ERR_FORMAT;
        goto fail;
    }
    if (st->bad)
        log_warn("%s: '%s': %" PRIu64 " of %" PRIu64 " records skipped as bad (%s)%s", o->what,
                 path, st->bad, total, probs,
                 st->bad > JSONL_LOG_BAD ? "; the first ones logged" : "");
    *out = j;
    return 0;
fail:
    jsonl_free(&j);
    return rc;
}

uint64_t jsonl_size(const Jsonl *j)
{
    return j->n;
}

const char *jsonl_path(const Jsonl *j)
{
    return j->path;
}

void jsonl_stats(const Jsonl *j, JsonlStats *out)
{
    *out = j->st;
}

uint64_t jsonl_fingerprint(const Jsonl *j)
{
    return j->fingerprint;
}

uint64_t jsonl_line(const Jsonl *j, uint64_t k)
{
    CHECK(k < j->n);
    return j->ents[k].line;
}

int jsonl_changed(const Jsonl *j, uint64_t k, int p, const char *why)
{
    log_error("%s: %s:%" PRIu64 ": %s: %s (the file changed since it was indexed)", j->opts.what,
              j->path, jsonl_line(j, k), jsonl_problem_name(j, p), why);
    return ERR_FORMAT;
}

int jsonl_read(Jsonl *j, uint64_t k, json_t **obj)
{
    CHECK(k < j->n);
    *obj = NULL;
    const JsonlEntry *e = &j->ents[k];
    int               rc = fileio_pread_exact(j->fd, j->line, e->len, e->off, NULL);
    if (rc) {
        log_error("%s: %s:%u: cannot read the record again (%s)", j->opts.what, j->path, e->line,
                  err_str(rc));
        return rc;
    }
    char why[320] = "";
    int  p = parse_line(j->line, e->len, obj, why, sizeof why);
    return p ? jsonl_changed(j, k, p, why) : 0;
}
