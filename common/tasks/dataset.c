#include "common/tasks/dataset.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/log.h"
#include "common/base/progress.h"
#include "common/formats/bpe_chat.h"

/* Where a good record's line is: 16 bytes each. */
typedef struct {
    uint64_t off;  /* file offset of the line's first byte */
    uint32_t len;  /* bytes, without the line end */
    uint32_t line; /* 1-based line number */
} DatasetEntry;

struct Dataset {
    char         *path;
    int           fd;
    DatasetOpts   opts;
    DatasetEntry *ents; /* (n) the good records, in file order */
    uint64_t      n, cap;
    DatasetStats  st;
    uint64_t      fingerprint;
    int           max_ids;
    char         *line; /* DATASET_MAX_LINE bytes: dataset_read's line */
    int          *ids;  /* (ids_cap) encoding scratch */
    int           ids_cap;
    char         *chat; /* (chat_cap) the rendered conversation */
    size_t        chat_cap;
};

static const char *const k_problems[DATASET_N_PROBLEMS] = {
    [DATASET_OK] = "ok",
    [DATASET_BAD_JSON] = "not JSON",
    [DATASET_BAD_OBJECT] = "not a JSON object",
    [DATASET_BAD_LINE] = "line too long",
    [DATASET_BAD_NO_PROMPT] = "missing prompt",
    [DATASET_BAD_TYPE] = "wrong type",
    [DATASET_BAD_EMPTY] = "empty prompt",
    [DATASET_BAD_TOO_LONG] = "too long",
    [DATASET_BAD_CHARS] = "characters not in the tokenizer",
    [DATASET_BAD_TASK] = "bad task",
    [DATASET_BAD_SCORER] = "not scorable",
};

const char *dataset_problem_name(DatasetProblem p)
{
    return p >= 0 && p < DATASET_N_PROBLEMS ? k_problems[p] : "?";
}

/* ---- One record ---------------------------------------------------------- */

static const char *json_type_name(const json_t *v)
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

static bool is_blank(const char *s)
{
    for (; *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r') return false;
    return true;
}

void dataset_record_free(DatasetRecord *rec)
{
    free(rec->ids);
    free(rec->answer);
    free(rec->task);
    free(rec->meta);
    memset(rec, 0, sizeof *rec);
}

static int *ids_scratch(Dataset *d, size_t need)
{
    CHECK(need < (size_t)1 << 30);
    if ((int)need > d->ids_cap) {
        d->ids_cap = (int)need;
        d->ids = xrealloc(d->ids, sizeof(int) * need);
    }
    return d->ids;
}

/* Tokenises text for the char model: every byte must be in its charset. */
static DatasetProblem render_plain(Dataset *d, const char *text, int *n, char *why, size_t wl)
{
    size_t len = strlen(text);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (tok_id(d->opts.tok, (char)c) < 0) {
            if (c >= 0x20 && c < 0x7f)
                snprintf(why, wl, "'%c' (byte %zu of the prompt) is not in the char tokenizer", c,
                         i);
            else
                snprintf(why, wl,
                         "byte 0x%02x (byte %zu of the prompt) is not in the char "
                         "tokenizer",
                         c, i);
            return DATASET_BAD_CHARS;
        }
    }
    if (len + 1 > (size_t)d->opts.max_prompt_ids) {
        snprintf(why, wl, "%zu ids with BOS, the model takes prompts of at most %d", len + 1,
                 d->opts.max_prompt_ids);
        return DATASET_BAD_TOO_LONG;
    }
    int *ids = ids_scratch(d, len + 1);
    /* Every character was checked: tok_encode cannot fail. */
    CHECK(tok_encode(d->opts.tok, text, len, TOK_ENC_BOS, ids, (int)len + 1, n) == 0);
    return DATASET_OK;
}

/* Renders a conversation with the chat template and tokenises it. */
static DatasetProblem render_chat(Dataset *d, const BpeChatMessage *msgs, int n_msgs, int *n,
                                  char *why, size_t wl)
{
    const char *sys = bpe_chat_default_system(d->opts.bpe);
    size_t      need = 64 * (size_t)(n_msgs + 2) + (sys ? strlen(sys) : 0);
    for (int i = 0; i < n_msgs; i++) need += strlen(msgs[i].role) + strlen(msgs[i].content);
    if (need > d->chat_cap) {
        d->chat_cap = need;
        d->chat = xrealloc(d->chat, need);
    }
    size_t len = 0;
    /* The buffer holds every message and the template's markup: a failure
     * is a template that is not ChatML, which dataset_open ruled out. */
    CHECK(bpe_chat_format(d->opts.bpe, msgs, n_msgs, true, d->chat, d->chat_cap, &len) == 0);
    int *ids = ids_scratch(d, BPE_ENCODE_MAX_IDS(len));
    int  flags = BPE_ENC_SPECIAL | (bpe_add_bos(d->opts.bpe) ? BPE_ENC_BOS : 0);
    CHECK(bpe_encode(d->opts.bpe, d->chat, len, flags, ids, d->ids_cap, n) == 0);
    if (*n > d->opts.max_prompt_ids) {
        snprintf(why, wl, "%d ids in the chat template, the model takes prompts of at most %d", *n,
                 d->opts.max_prompt_ids);
        return DATASET_BAD_TOO_LONG;
    }
    return DATASET_OK;
}

/* Tokenises a completion prompt for a BPE model as it is: the text's own
 * bytes, never read as control tokens (a prompt cannot smuggle one in). */
static DatasetProblem render_raw(Dataset *d, const char *text, int *n, char *why, size_t wl)
{
    size_t len = strlen(text);
    int   *ids = ids_scratch(d, BPE_ENCODE_MAX_IDS(len));
    int    flags = bpe_add_bos(d->opts.bpe) ? BPE_ENC_BOS : 0;
    if (bpe_encode(d->opts.bpe, text, len, flags, ids, d->ids_cap, n)) {
        snprintf(why, wl, "the prompt cannot be tokenised");
        return DATASET_BAD_CHARS;
    }
    if (*n > d->opts.max_prompt_ids) {
        snprintf(why, wl, "%d ids, the model takes prompts of at most %d", *n,
                 d->opts.max_prompt_ids);
        return DATASET_BAD_TOO_LONG;
    }
    return DATASET_OK;
}

/* The conversation of a "messages" member into msgs (borrowing its strings). */
static DatasetProblem read_messages(const json_t *m, BpeChatMessage *msgs, int *n_msgs, char *why,
                                    size_t wl)
{
    if (!json_is_array(m)) {
        snprintf(why, wl, "\"messages\" is %s, expected an array", json_type_name(m));
        return DATASET_BAD_TYPE;
    }
    size_t n = json_array_size(m);
    if (n == 0) {
        snprintf(why, wl, "\"messages\" is empty");
        return DATASET_BAD_EMPTY;
    }
    if (n > DATASET_MAX_MESSAGES) {
        snprintf(why, wl, "%zu messages, at most %d", n, DATASET_MAX_MESSAGES);
        return DATASET_BAD_TOO_LONG;
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(m, i);
        const json_t *role = json_object_get(e, "role"), *content = json_object_get(e, "content");
        if (!json_is_object(e) || !json_is_string(role) || !json_is_string(content)) {
            snprintf(why, wl,
                     "message %zu: expected an object with string \"role\" and "
                     "\"content\"",
                     i);
            return DATASET_BAD_TYPE;
        }
        const char *r = json_string_value(role);
        if (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant")) {
            snprintf(why, wl, "message %zu: role '%.20s', expected system, user or assistant", i,
                     r);
            return DATASET_BAD_TYPE;
        }
        msgs[i] = (BpeChatMessage){.role = r, .content = json_string_value(content)};
    }
    if (strcmp(msgs[n - 1].role, "user")) {
        snprintf(why, wl, "the last message is the %s's, expected the user's", msgs[n - 1].role);
        return DATASET_BAD_TYPE;
    }
    if (is_blank(msgs[n - 1].content)) {
        snprintf(why, wl, "the last user message is empty");
        return DATASET_BAD_EMPTY;
    }
    *n_msgs = (int)n;
    return DATASET_OK;
}

static DatasetProblem read_answer(const json_t *a, char **out, char *why, size_t wl)
{
    char num[64];
    if (!a || json_is_null(a)) {
        *out = strdup("");
    } else if (json_is_string(a)) {
        if (json_string_length(a) >= DATASET_MAX_ANSWER) {
            snprintf(why, wl, "answer of %zu bytes, at most %d", json_string_length(a),
                     DATASET_MAX_ANSWER - 1);
            return DATASET_BAD_TOO_LONG;
        }
        *out = strdup(json_string_value(a));
    } else if (json_is_integer(a)) {
        snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(a));
        *out = strdup(num);
    } else if (json_is_real(a)) {
        snprintf(num, sizeof num, "%.15g", json_real_value(a));
        *out = strdup(num);
    } else {
        snprintf(why, wl, "\"answer\" is %s, expected a string or a number", json_type_name(a));
        return DATASET_BAD_TYPE;
    }
    CHECK(*out);
    return DATASET_OK;
}

static DatasetProblem read_meta(const json_t *m, char **out, char *why, size_t wl)
{
    if (!m || json_is_null(m)) {
        *out = strdup("");
        CHECK(*out);
        return DATASET_OK;
    }
    if (!json_is_object(m)) {
        snprintf(why, wl, "\"meta\" is %s, expected an object", json_type_name(m));
        return DATASET_BAD_TYPE;
    }
    *out = json_dumps(m, JSON_COMPACT | JSON_PRESERVE_ORDER);
    CHECK(*out);
    size_t n = strlen(*out);
    if (n >= DATASET_MAX_META) {
        snprintf(why, wl, "meta of %zu bytes as compact JSON, at most %d", n, DATASET_MAX_META - 1);
        return DATASET_BAD_TOO_LONG;
    }
    return DATASET_OK;
}

static DatasetProblem read_task(const Dataset *d, const json_t *t, DatasetRecord *rec, char *why,
                                size_t wl)
{
    const char *text = d->opts.default_task;
    if (t && !json_is_null(t)) {
        if (!json_is_string(t)) {
            snprintf(why, wl, "\"task\" is %s, expected a scorer spec string", json_type_name(t));
            return DATASET_BAD_TYPE;
        }
        text = json_string_value(t);
    }
    if (!text) {
        snprintf(why, wl, "no \"task\" and no default task (--task) to score it with");
        return DATASET_BAD_TASK;
    }
    ScoreLookupFn lookup = d->opts.lookup ? d->opts.lookup : score_builtin;
    if (score_spec_parse(text, lookup, d->opts.lookup_ctx, &rec->spec, why, wl))
        return DATASET_BAD_TASK;
    rec->task = strdup(text);
    CHECK(rec->task);
    return DATASET_OK;
}

/* Parses, checks and renders one line into rec (which the caller frees). */
static DatasetProblem parse_record(Dataset *d, const char *text, size_t len, DatasetRecord *rec,
                                   char *why, size_t wl)
{
    json_error_t e;
    json_t      *root = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &e);
    if (!root) {
        snprintf(why, wl, "%s (column %d)", e.text, e.column);
        return DATASET_BAD_JSON;
    }
    DatasetProblem p = DATASET_OK;
    const json_t  *prompt = json_object_get(root, "prompt");
    const json_t  *messages = json_object_get(root, "messages");
    BpeChatMessage msgs[DATASET_MAX_MESSAGES];
    int            n_msgs = 0;
    if (!json_is_object(root)) {
        snprintf(why, wl, "the line is %s, expected an object", json_type_name(root));
        p = DATASET_BAD_OBJECT;
    } else if (!prompt == !messages) {
        snprintf(why, wl,
                 prompt ? "both \"prompt\" and \"messages\": give one"
                        : "no \"prompt\" (or \"messages\")");
        p = DATASET_BAD_NO_PROMPT;
    } else if (prompt && !json_is_string(prompt)) {
        snprintf(why, wl, "\"prompt\" is %s, expected a string", json_type_name(prompt));
        p = DATASET_BAD_TYPE;
    } else if (prompt && is_blank(json_string_value(prompt))) {
        snprintf(why, wl, "\"prompt\" is empty");
        p = DATASET_BAD_EMPTY;
    } else if (messages && d->opts.tok) {
        snprintf(why, wl,
                 "\"messages\" needs a chat model (--model); the char model takes a "
                 "plain \"prompt\"");
        p = DATASET_BAD_TYPE;
    } else if (messages && d->opts.is_raw) {
        snprintf(why, wl,
                 "\"messages\" needs the chat template; raw prompts are a plain \"prompt\"");
        p = DATASET_BAD_TYPE;
    } else if (messages) {
        p = read_messages(messages, msgs, &n_msgs, why, wl);
    } else {
        msgs[0] = (BpeChatMessage){.role = "user", .content = json_string_value(prompt)};
        n_msgs = 1;
    }
    if (!p) p = read_answer(json_object_get(root, "answer"), &rec->answer, why, wl);
    if (!p) p = read_meta(json_object_get(root, "meta"), &rec->meta, why, wl);
    if (!p) p = read_task(d, json_object_get(root, "task"), rec, why, wl);
    if (!p && score_spec_check_record(&rec->spec, rec->answer, rec->meta, why, wl))
        p = DATASET_BAD_SCORER;
    if (!p)
        p = d->opts.tok      ? render_plain(d, msgs[0].content, &rec->n_ids, why, wl)
            : d->opts.is_raw ? render_raw(d, msgs[0].content, &rec->n_ids, why, wl)
                             : render_chat(d, msgs, n_msgs, &rec->n_ids, why, wl);
    if (!p) {
        rec->ids = xmalloc(sizeof(int) * (size_t)rec->n_ids);
        memcpy(rec->ids, d->ids, sizeof(int) * (size_t)rec->n_ids);
    }
    json_decref(root);
    return p;
}

/* ---- Indexing ------------------------------------------------------------ */

typedef struct {
    Dataset      *d;
    XXH3_state_t *hash;
    uint64_t      line; /* lines seen */
} Indexer;

static void note_bad(Indexer *ix, DatasetProblem p, const char *why)
{
    Dataset *d = ix->d;
    d->st.bad++;
    d->st.bad_by[p]++;
    if (d->st.bad <= DATASET_LOG_BAD)
        log_warn("%s:%" PRIu64 ": %s: %s", d->path, ix->line, dataset_problem_name(p), why);
}

/* One line of the file at offset off (line end removed). */
static void index_line(Indexer *ix, const char *text, size_t len, uint64_t off)
{
    Dataset *d = ix->d;
    ix->line++;
    d->st.lines++;
    if (len > 0 && text[len - 1] == '\r') len--;
    /* A byte-order mark opens some UTF-8 files. */
    if (off == 0 && len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3)) text += 3, len -= 3, off += 3;
    size_t k = 0;
    while (k < len && (text[k] == ' ' || text[k] == '\t')) k++;
    if (k == len) {
        d->st.blank++;
        return;
    }
    DatasetRecord  rec = {0};
    char           why[320] = "";
    DatasetProblem p = DATASET_BAD_LINE;
    if (len >= (size_t)DATASET_MAX_LINE)
        snprintf(why, sizeof why, "longer than %d bytes", DATASET_MAX_LINE);
    else
        p = parse_record(d, text, len, &rec, why, sizeof why);
    if (p) {
        note_bad(ix, p, why);
    } else if (d->n >= DATASET_MAX_RECORDS || ix->line > UINT32_MAX) {
        note_bad(ix, DATASET_BAD_TOO_LONG, "beyond the records or lines one file may hold");
    } else {
        if (d->n == d->cap) {
            d->cap = d->cap ? 2 * d->cap : 1024;
            d->ents = xrealloc(d->ents, sizeof(DatasetEntry) * d->cap);
        }
        d->ents[d->n++] = (DatasetEntry){off, (uint32_t)len, (uint32_t)ix->line};
        if (rec.n_ids > d->max_ids) d->max_ids = rec.n_ids;
    }
    dataset_record_free(&rec);
}

/* Reads the file once in blocks, indexing each line. */
static int index_file(Dataset *d, uint64_t size)
{
    const size_t B = 2 * (size_t)DATASET_MAX_LINE;
    char        *buf = xmalloc(B);
    Indexer      ix = {.d = d, .hash = XXH3_createState()};
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
            if ((rc = fileio_pread_exact(d->fd, buf + have, want, base + have, NULL))) {
                log_error("dataset: '%s': read at byte %" PRIu64 " failed (%s)", d->path,
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
        if (pos < have && have - pos >= (size_t)DATASET_MAX_LINE && !skipping) {
            ix.line++;
            d->st.lines++;
            char why[96];
            snprintf(why, sizeof why, "longer than %d bytes", DATASET_MAX_LINE);
            note_bad(&ix, DATASET_BAD_LINE, why);
            skipping = true;
        }
        if (skipping) pos = have; /* the rest of the long line is dropped as it comes */
        memmove(buf, buf + pos, have - pos);
        base += pos;
        have -= pos;
        if (at_end && have == 0) break;
        if (progress_now() - t_log > 10) {
            t_log = progress_now();
            log_info("dataset: '%s': %.0f%% indexed (%" PRIu64 " records)", d->path,
                     100.0 * (double)base / (double)size, d->n);
        }
    }
    d->fingerprint = XXH3_64bits_digest(ix.hash);
    XXH3_freeState(ix.hash);
    free(buf);
    d->st.good = d->n;
    return rc;
}

/* ---- Opening ------------------------------------------------------------- */

void dataset_free(Dataset **dp)
{
    if (!dp || !*dp) return;
    Dataset *d = *dp;
    if (d->fd >= 0) close(d->fd);
    free(d->path);
    free(d->ents);
    free(d->line);
    free(d->ids);
    free(d->chat);
    free(d);
    *dp = NULL;
}

static void problems_summary(const DatasetStats *st, char *buf, size_t cap)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int p = 1; p < DATASET_N_PROBLEMS && used < cap; p++) {
        if (!st->bad_by[p]) continue;
        int w = snprintf(buf + used, cap - used, "%s%s %" PRIu64, used ? ", " : "",
                         dataset_problem_name((DatasetProblem)p), st->bad_by[p]);
        if (w < 0) break;
        used += (size_t)w;
    }
}

int dataset_open(const char *path, const DatasetOpts *opts, Dataset **out)
{
    *out = NULL;
    if (!path || !path[0] || !opts || !opts->tok == !opts->bpe || opts->max_prompt_ids < 1 ||
        opts->max_bad_percent < 0 || opts->max_bad_percent > 100) {
        log_error("dataset_open: '%s': bad options (one tokenizer, max_prompt_ids >= 1, "
                  "max_bad_percent 0..100)",
                  path ? path : "(null)");
        return ERR_ARG;
    }
    if (opts->bpe && !opts->is_raw && !bpe_chat_supported(opts->bpe)) {
        log_error("dataset: '%s': the model's tokenizer has no ChatML chat template to render "
                  "prompts with",
                  path);
        return ERR_UNSUPPORTED;
    }
    if (opts->default_task) {
        ScoreSpec s;
        char      why[400];
        if (score_spec_parse(opts->default_task, opts->lookup ? opts->lookup : score_builtin,
                             opts->lookup_ctx, &s, why, sizeof why)) {
            log_error("dataset: '%s': default task: %s", path, why);
            return ERR_ARG;
        }
    }
    Dataset *d = xcalloc(1, sizeof *d);
    d->fd = -1;
    d->opts = *opts;
    d->path = strdup(path);
    CHECK(d->path);
    d->line = xmalloc(DATASET_MAX_LINE);
    uint64_t size = 0;
    double   t0 = progress_now();
    int      rc = fileio_open_regular("dataset", path, &d->fd, &size);
    if (rc) goto fail;
    d->st.bytes = size;
    if ((rc = index_file(d, size))) goto fail;
    const DatasetStats *st = &d->st;
    uint64_t            total = st->good + st->bad;
    char                probs[400];
    problems_summary(st, probs, sizeof probs);
    if (st->good == 0) {
        log_error("dataset: '%s': no usable record (%" PRIu64 " lines, %" PRIu64 " bad%s%s%s)",
                  path, st->lines, st->bad, st->bad ? ": " : "", probs, st->bad ? "" : "");
        rc = ERR_FORMAT;
        goto fail;
    }
    if (st->bad * 100 > (uint64_t)opts->max_bad_percent * total) {
        log_error("dataset: '%s': %" PRIu64 " of %" PRIu64 " records are bad (%.1f%% > the "
                  "%d%% allowed: %s); refusing the file",
                  path, st->bad, total, 100.0 * (double)st->bad / (double)total,
                  opts->max_bad_percent, probs);
        rc = ERR_FORMAT;
        goto fail;
    }
    if (st->bad)
        log_warn("dataset: '%s': %" PRIu64 " of %" PRIu64 " records skipped as bad (%s)%s", path,
                 st->bad, total, probs, st->bad > DATASET_LOG_BAD ? "; the first ones logged" : "");
    log_info("dataset: '%s': %" PRIu64 " records, prompts of up to %d ids, %.1f MB indexed in "
             "%.1f s",
             path, st->good, d->max_ids, (double)size / 1e6, progress_now() - t0);
    *out = d;
    return 0;
fail:
    dataset_free(&d);
    return rc;
}

uint64_t dataset_size(const Dataset *d)
{
    return d->n;
}

const char *dataset_path(const Dataset *d)
{
    return d->path;
}

void dataset_stats(const Dataset *d, DatasetStats *out)
{
    *out = d->st;
}

uint64_t dataset_fingerprint(const Dataset *d)
{
    return d->fingerprint;
}

int dataset_max_ids(const Dataset *d)
{
    return d->max_ids;
}

int dataset_read(Dataset *d, uint64_t k, DatasetRecord *rec)
{
    CHECK(k < d->n);
    memset(rec, 0, sizeof *rec);
    const DatasetEntry *e = &d->ents[k];
    rec->line = e->line;
    int rc = fileio_pread_exact(d->fd, d->line, e->len, e->off, NULL);
    if (rc) {
        log_error("dataset: %s:%u: cannot read the record again (%s)", d->path, e->line,
                  err_str(rc));
        return rc;
    }
    char           why[320] = "";
    DatasetProblem p = parse_record(d, d->line, e->len, rec, why, sizeof why);
    if (p) {
        log_error("dataset: %s:%u: %s: %s (the file changed since it was indexed)", d->path,
                  e->line, dataset_problem_name(p), why);
        return ERR_FORMAT;
    }
    rec->line = e->line;
    return 0;
}

/* ---- Order --------------------------------------------------------------- */

static uint64_t mix64(uint64_t z)
{
    /* splitmix64's finaliser: every input bit reaches every output bit. */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t dataset_shuffle(uint64_t n, uint64_t seed, uint64_t i)
{
    CHECK(n >= 1);
    uint64_t epoch = i / n, x = i % n;
    if (n == 1) return 0;
    /* A 4-round Feistel network permutes the 2h-bit domain (the smallest
     * holding n, so under 4n values); walking the cycle of x until it lands
     * below n gives a permutation of 0..n-1 (at most ~4 steps expected). */
    int bits = 64 - __builtin_clzll(n - 1);
    int h = (bits + 1) / 2;
    CHECK(h <= 32);
    uint64_t mask = (h == 32) ? 0xffffffffULL : (((uint64_t)1 << h) - 1);
    uint64_t key = mix64(seed ^ mix64(epoch + 0x9e3779b97f4a7c15ULL));
    do {
        uint64_t l = x >> h, r = x & mask;
        for (uint64_t round = 0; round < 4; round++) {
            uint64_t f = mix64(r ^ key ^ (round * 0xd1b54a32d192ed03ULL)) & mask;
            uint64_t t = l ^ f;
            l = r;
            r = t;
        }
        x = (l << h) | r;
    } while (x >= n);
    return x;
}
