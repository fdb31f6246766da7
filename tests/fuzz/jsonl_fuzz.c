/* jsonl: the prompt dataset reader (common/tasks/dataset.h), on files a user
 * hands the learner with --data and --eval-data.
 *
 * Input: three option bytes, then the file. Byte 0: bit 0 the tokenizer
 * (the char model's, or the BPE one with its chat template, fuzz_bpe),
 * bits 1-3 the default task (none, or one of k_tasks), bits 4-7 the
 * shuffle seed; byte 1: --data-max-bad (mod 101); byte 2: the longest
 * prompt in ids.
 *
 * Properties, with the lines of the file split here independently (on
 * '\n', the last one without it too, a '\r' before it and a byte-order
 * mark at the start removed, lines of spaces and tabs blank):
 *   - the file is indexed or refused, never anything else; its line, blank,
 *     good and bad counts are those lines', the bad ones counted under
 *     their problems, its fingerprint the XXH3-64 of its bytes;
 *   - every bad record is logged as "FILE:LINE: problem: reason" (the first
 *     DATASET_LOG_BAD of them: all of them when there are no more), on a
 *     non-blank line that is no good record's, under a problem it is
 *     counted under, and no logged line holds a control character (the
 *     reason quotes the file's text);
 *   - every good record reads back (dataset_read) as its line holds it:
 *     the line number, the answer (a string as it is, a number written
 *     out), the meta as compact JSON, the task or the default, the prompt
 *     rendered (the char tokenizer: BOS and one id per byte; the BPE: the
 *     chat template over its messages) within the longest-prompt limit;
 *   - a file is refused under --data-max-bad exactly when none of its
 *     records is good or more than that share is bad;
 *   - the shuffle visits every record once per epoch. */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "common/formats/bpe_chat.h"
#include "common/formats/tok.h"
#include "common/tasks/dataset.h"
#include "tests/fuzz/fuzz.h"

static const char *const k_tasks[8] = {
    NULL, "exact", "number", "code", "regex", "choice", "boxed:0.9,format_answer_tag:0.1", "arith",
};

static Tok *g_tok;
static Bpe *g_bpe;
static bool g_is_bpe; /* this input's tokenizer */

/* ---- the log, kept for the checks ---------------------------------------- */

typedef struct {
    char  *text; /* lines, each ending in '\n' */
    size_t len, cap;
    int    n;
} LogBuf;

static LogBuf g_log;

static void sink(void *ctx, int level, const char *line)
{
    (void)ctx;
    (void)level;
    size_t n = strlen(line);
    if (g_log.len + n + 2 > g_log.cap) {
        g_log.cap = (g_log.len + n + 2) * 2;
        g_log.text = xrealloc(g_log.text, g_log.cap);
    }
    memcpy(g_log.text + g_log.len, line, n);
    g_log.len += n;
    g_log.text[g_log.len++] = '\n';
    g_log.text[g_log.len] = '\0';
    g_log.n++;
}

/* A failed property: the log so far first, then the failure. */
#define CHECK_P(cond, ...)                                                                         \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "---- the reader's log:\n%s----\n", g_log.text ? g_log.text : "");     \
            fuzz_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);                                     \
        }                                                                                          \
    } while (0)

/* ---- the file's lines, split here ---------------------------------------- */

typedef struct {
    const char *p; /* (n) the line without its end, the mark or '\r' */
    size_t      n;
    bool        is_blank;
} Line;

static int split_lines(const char *data, size_t size, Line *lines)
{
    int    n = 0;
    size_t pos = 0;
    while (pos < size) {
        const char *nl = memchr(data + pos, '\n', size - pos);
        size_t      end = nl ? (size_t)(nl - data) : size;
        Line       *l = &lines[n++];
        l->p = data + pos;
        l->n = end - pos;
        if (l->n > 0 && l->p[l->n - 1] == '\r') l->n--;
        if (pos == 0 && l->n >= 3 && !memcmp(l->p, "\xEF\xBB\xBF", 3)) l->p += 3, l->n -= 3;
        l->is_blank = true;
        for (size_t i = 0; i < l->n; i++)
            if (l->p[i] != ' ' && l->p[i] != '\t') l->is_blank = false;
        pos = nl ? end + 1 : size;
    }
    return n;
}

/* ---- what a good record must read back as -------------------------------- */

static void check_ids(const DatasetRecord *rec, const json_t *root, int max_ids)
{
    CHECK_P(rec->n_ids >= 1 && rec->n_ids <= max_ids, "line %" PRIu64 ": %d ids, limit %d",
            rec->line, rec->n_ids, max_ids);
    const json_t *prompt = json_object_get(root, "prompt");
    if (!g_is_bpe) {
        const char *s = json_string_value(prompt);
        CHECK_P(s && rec->n_ids == (int)strlen(s) + 1 && rec->ids[0] == TOK_BOS,
                "line %" PRIu64 ": %d ids for a prompt of %zu bytes", rec->line, rec->n_ids,
                s ? strlen(s) : 0);
        for (int i = 1; i < rec->n_ids; i++)
            CHECK_P(tok_char(g_tok, rec->ids[i]) == s[i - 1], "line %" PRIu64 ": id %d of '%s'",
                    rec->line, i, s);
        return;
    }
    BpeChatMessage msgs[DATASET_MAX_MESSAGES];
    int            n = 0;
    if (prompt) {
        msgs[n++] = (BpeChatMessage){"user", json_string_value(prompt)};
    } else {
        const json_t *m = json_object_get(root, "messages");
        CHECK_P(json_is_array(m) && json_array_size(m) <= DATASET_MAX_MESSAGES,
                "line %" PRIu64 ": good without a prompt or messages", rec->line);
        for (size_t i = 0; i < json_array_size(m); i++) {
            const json_t *e = json_array_get(m, i);
            msgs[n++] = (BpeChatMessage){json_string_value(json_object_get(e, "role")),
                                         json_string_value(json_object_get(e, "content"))};
        }
    }
    /* Room for the messages, the default system prompt and the markup. */
    const char *sys = bpe_chat_default_system(g_bpe);
    size_t      cap_chat = 256 + (sys ? strlen(sys) : 0), len = 0;
    for (int i = 0; i < n; i++) {
        CHECK_P(msgs[i].role && msgs[i].content, "line %" PRIu64 ": message %d not strings",
                rec->line, i);
        cap_chat += 64 + strlen(msgs[i].role) + strlen(msgs[i].content);
    }
    char *chat = xmalloc(cap_chat);
    CHECK_P(bpe_chat_format(g_bpe, msgs, n, true, chat, cap_chat, &len) == 0,
            "line %" PRIu64 ": the conversation does not render", rec->line);
    int  cap = (int)BPE_ENCODE_MAX_IDS(len);
    int *ids = xmalloc(sizeof(int) * (size_t)cap), n_ids = 0;
    int  flags = BPE_ENC_SPECIAL | (bpe_add_bos(g_bpe) ? BPE_ENC_BOS : 0);
    CHECK_P(bpe_encode(g_bpe, chat, len, flags, ids, cap, &n_ids) == 0 && n_ids == rec->n_ids &&
                !memcmp(ids, rec->ids, sizeof(int) * (size_t)n_ids),
            "line %" PRIu64 ": read back %d ids, its line renders to %d", rec->line, rec->n_ids,
            n_ids);
    free(ids);
    free(chat);
}

static void check_record(const DatasetRecord *rec, const Line *l, const char *default_task,
                         int max_ids)
{
    json_error_t e;
    json_t      *root = json_loadb(l->p, l->n, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &e);
    CHECK_P(json_is_object(root), "line %" PRIu64 " is good but not a JSON object here: %s",
            rec->line, root ? "another type" : e.text);
    const json_t *prompt = json_object_get(root, "prompt");
    const json_t *messages = json_object_get(root, "messages");
    CHECK_P(!prompt != !messages && (!prompt || json_is_string(prompt)),
            "line %" PRIu64 ": good without one string prompt or messages", rec->line);
    const json_t *a = json_object_get(root, "answer");
    char          want[64];
    const char   *answer = "";
    if (json_is_string(a)) {
        answer = json_string_value(a);
    } else if (json_is_integer(a)) {
        snprintf(want, sizeof want, "%" JSON_INTEGER_FORMAT, json_integer_value(a));
        answer = want;
    } else if (json_is_real(a)) {
        snprintf(want, sizeof want, "%.15g", json_real_value(a));
        answer = want;
    } else {
        CHECK_P(!a || json_is_null(a), "line %" PRIu64 ": good with an answer of another type",
                rec->line);
    }
    CHECK_P(!strcmp(rec->answer, answer), "line %" PRIu64 ": answer '%s', the line holds '%s'",
            rec->line, rec->answer, answer);
    const json_t *m = json_object_get(root, "meta");
    char *meta = json_is_object(m) ? json_dumps(m, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    CHECK_P(!strcmp(rec->meta, meta ? meta : ""),
            "line %" PRIu64 ": meta '%s', the line holds '%s'", rec->line, rec->meta,
            meta ? meta : "");
    free(meta);
    const json_t *t = json_object_get(root, "task");
    const char   *task = json_is_string(t) ? json_string_value(t) : default_task;
    CHECK_P(task && !strcmp(rec->task, task) && rec->spec.n_terms >= 1,
            "line %" PRIu64 ": task '%s', the line's is '%s'", rec->line, rec->task,
            task ? task : "(none)");
    check_ids(rec, root, max_ids);
    json_decref(root);
}

/* ---- the log's per-record lines ------------------------------------------ */

/* The record lines of the log: "...jsonl: PATH:LINE: problem: reason", in
 * order, with no control character anywhere in any line. Fills lines and
 * problems (up to max); returns how many. */
static int logged_bad(const char *path, uint64_t *lines, DatasetProblem *problems, int max)
{
    int    n = 0;
    char   head[128];
    size_t hl = (size_t)snprintf(head, sizeof head, "jsonl: %s:", path);
    for (const char *p = g_log.text; p && *p;) {
        const char *end = strchr(p, '\n');
        for (const char *c = p; c < end; c++)
            CHECK_P((unsigned char)*c >= 0x20 && *c != 0x7f,
                    "a logged line holds control byte 0x%02x (at %zu): a line of the file can "
                    "forge log lines or drive the terminal",
                    (unsigned char)*c, (size_t)(c - p));
        const char *h = strstr(p, "jsonl: ");
        if (h && h < end && !strncmp(h, head, hl)) {
            char    *after;
            uint64_t ln = strtoull(h + hl, &after, 10);
            CHECK_P(after[0] == ':' && after[1] == ' ', "a record line without its line number");
            DatasetProblem pr = DATASET_OK;
            for (int k = 1; k < DATASET_N_PROBLEMS && !pr; k++) {
                const char *name = dataset_problem_name((DatasetProblem)k);
                size_t      nl = strlen(name);
                if (!strncmp(after + 2, name, nl) && !strncmp(after + 2 + nl, ": ", 2))
                    pr = (DatasetProblem)k;
            }
            CHECK_P(pr != DATASET_OK, "line %" PRIu64 " logged without a known problem", ln);
            CHECK_P(n < max, "more record lines logged than the file has lines");
            lines[n] = ln;
            problems[n++] = pr;
        }
        p = end + 1;
    }
    return n;
}

/* ---- one input ------------------------------------------------------------ */

static int open_logged(const char *path, const DatasetOpts *o, Dataset **d)
{
    g_log.len = 0;
    g_log.n = 0;
    if (g_log.text) g_log.text[0] = '\0';
    return dataset_open(path, o, d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t opt[3] = {0, 0, 0};
    for (size_t i = 0; i < 3 && i < size; i++) opt[i] = data[i];
    const char *file = (const char *)data + (size < 3 ? size : 3);
    size_t      fsize = size < 3 ? 0 : size - 3;
    bool        is_bpe = g_is_bpe = opt[0] & 1;
    const char *task = k_tasks[(opt[0] >> 1) & 7];
    uint64_t    seed = opt[0] >> 4;
    int         max_bad = opt[1] % 101;
    /* The chat template alone takes a few dozen ids with SmolLM2's system prompt. */
    int         max_ids = is_bpe ? 8 + 4 * opt[2] : 1 + opt[2];
    const char *path = fuzz_memfd_path(file, fsize);

    log_init(NULL, LOG_WARN);
    log_set_sink(sink, NULL);
    Line *lines = xmalloc(sizeof(Line) * (fsize + 1));
    int   n_lines = split_lines(file, fsize, lines), n_blank = 0;
    for (int i = 0; i < n_lines; i++) n_blank += lines[i].is_blank;
    uint64_t    n_records = (uint64_t)(n_lines - n_blank);
    DatasetOpts o = {.tok = is_bpe ? NULL : g_tok,
                     .bpe = is_bpe ? g_bpe : NULL,
                     .max_prompt_ids = max_ids,
                     .default_task = task,
                     .max_bad_percent = 100};

    /* Every record is kept or refused: opened with every bad one allowed. */
    Dataset *d = NULL;
    int      rc = open_logged(path, &o, &d);
    CHECK_P(rc == 0 || rc == ERR_FORMAT, "dataset_open: %d (%s)", rc, err_str(rc));
    DatasetStats st = {0};
    if (rc == 0) {
        dataset_stats(d, &st);
        CHECK_P(st.good >= 1 && st.good == dataset_size(d), "%" PRIu64 " good, size %" PRIu64,
                st.good, dataset_size(d));
        CHECK_P(dataset_fingerprint(d) == XXH3_64bits(file, fsize), "fingerprint");
    } else {
        /* Refused with every bad record allowed: none is good. */
        char want[160];
        snprintf(want, sizeof want, "no usable record (%d lines, %" PRIu64 " bad", n_lines,
                 n_records);
        CHECK_P(strstr(g_log.text ? g_log.text : "", want), "refused without \"%s\"", want);
        st.lines = (uint64_t)n_lines;
        st.blank = (uint64_t)n_blank;
        st.bad = n_records;
        st.bytes = fsize;
    }
    uint64_t by = 0;
    for (int p = 1; p < DATASET_N_PROBLEMS; p++) by += st.bad_by[p];
    CHECK_P(st.lines == (uint64_t)n_lines && st.blank == (uint64_t)n_blank &&
                st.good + st.bad == n_records && (rc != 0 || by == st.bad) &&
                st.bad_by[DATASET_OK] == 0 && st.bytes == fsize,
            "counts: %" PRIu64 " lines, %" PRIu64 " blank, %" PRIu64 " good + %" PRIu64
            " bad (by problem %" PRIu64 "), %" PRIu64 " bytes; the file has %d lines, %d blank, "
            "%zu bytes",
            st.lines, st.blank, st.good, st.bad, by, st.bytes, n_lines, n_blank, fsize);

    /* The good records, read back against their lines. */
    bool *is_good = xcalloc((size_t)n_lines + 1, 1);
    int   max_seen = 0;
    for (uint64_t k = 0; k < st.good; k++) {
        DatasetRecord rec;
        CHECK_P(dataset_read(d, k, &rec) == 0, "record %" PRIu64 " does not read back", k);
        CHECK_P(rec.line >= 1 && rec.line <= (uint64_t)n_lines && !lines[rec.line - 1].is_blank &&
                    !is_good[rec.line],
                "record %" PRIu64 " on line %" PRIu64 ": blank, out of the file or twice", k,
                rec.line);
        for (uint64_t j = rec.line + 1; j <= (uint64_t)n_lines; j++)
            CHECK_P(!is_good[j], "record %" PRIu64 " (line %" PRIu64 ") after line %" PRIu64, k,
                    rec.line, j);
        is_good[rec.line] = true;
        check_record(&rec, &lines[rec.line - 1], task, max_ids);
        if (rec.n_ids > max_seen) max_seen = rec.n_ids;
        dataset_record_free(&rec);
    }
    if (rc == 0)
        CHECK_P(dataset_max_ids(d) == max_seen, "dataset_max_ids %d, the longest read back %d",
                dataset_max_ids(d), max_seen);

    /* The bad ones, each logged with its line, under a problem it counts under. */
    uint64_t       *bad_lines = xmalloc(sizeof(uint64_t) * ((size_t)n_lines + 1));
    DatasetProblem *bad_probs = xmalloc(sizeof(DatasetProblem) * ((size_t)n_lines + 1));
    int             nb = logged_bad(path, bad_lines, bad_probs, n_lines + 1);
    uint64_t        want_logged = st.bad < DATASET_LOG_BAD ? st.bad : DATASET_LOG_BAD;
    CHECK_P((uint64_t)nb == want_logged,
            "%d bad records logged, %" PRIu64 " bad (the first %d "
            "are logged)",
            nb, st.bad, DATASET_LOG_BAD);
    uint64_t per[DATASET_N_PROBLEMS] = {0};
    for (int i = 0; i < nb; i++) {
        uint64_t ln = bad_lines[i];
        CHECK_P(ln >= 1 && ln <= (uint64_t)n_lines && !lines[ln - 1].is_blank && !is_good[ln] &&
                    (i == 0 || ln > bad_lines[i - 1]),
                "bad record logged at line %" PRIu64 ": blank, good, out of the file or out of "
                "order",
                ln);
        per[bad_probs[i]]++;
    }
    for (int p = 1; p < DATASET_N_PROBLEMS && rc == 0; p++)
        CHECK_P(per[p] <= st.bad_by[p] && (st.bad > DATASET_LOG_BAD || per[p] == st.bad_by[p]),
                "'%s': %" PRIu64 " logged, %" PRIu64 " counted",
                dataset_problem_name((DatasetProblem)p), per[p], st.bad_by[p]);

    /* The shuffle: every record once per epoch. */
    uint64_t n = st.good;
    if (n >= 1 && n <= 4096) {
        for (uint64_t epoch = 0; epoch < 2; epoch++) {
            memset(is_good, 0, (size_t)n_lines + 1);
            for (uint64_t i = 0; i < n; i++) {
                uint64_t r = dataset_shuffle(n, seed, epoch * n + i);
                CHECK_P(r < n && !is_good[r],
                        "shuffle of %" PRIu64 ": position %" PRIu64 " gives %" PRIu64
                        " again or out of range",
                        n, epoch * n + i, r);
                is_good[r] = true;
            }
        }
    }
    dataset_free(&d);

    /* --data-max-bad: refused exactly when no record is good or more than
     * that share is bad. */
    o.max_bad_percent = max_bad;
    int  rc2 = open_logged(path, &o, &d);
    bool want_refused = st.good == 0 || st.bad * 100 > (uint64_t)max_bad * n_records;
    CHECK_P(rc2 == (want_refused ? ERR_FORMAT : 0),
            "--data-max-bad %d with %" PRIu64 " of %" PRIu64 " bad: %d (%s)", max_bad, st.bad,
            n_records, rc2, err_str(rc2));
    CHECK_P(rc2 != 0 || dataset_size(d) == st.good, "a second open found %" PRIu64 " records",
            d ? dataset_size(d) : 0);
    dataset_free(&d);
    log_set_sink(NULL, NULL);
    log_init(NULL, LOG_ERROR);
    free(bad_probs);
    free(bad_lines);
    free(is_good);
    free(lines);
    return 0;
}

/* ---- seeds ---------------------------------------------------------------- */

static void seed_file(const char *dir, const char *name, uint8_t o0, uint8_t o1, uint8_t o2,
                      const char *text)
{
    size_t   n = strlen(text);
    uint8_t *buf = xmalloc(n + 3);
    buf[0] = o0;
    buf[1] = o1;
    buf[2] = o2;
    memcpy(buf + 3, text, n);
    fuzz_seed(dir, name, buf, n + 3);
    free(buf);
}

static void seeds(const char *dir)
{
    /* Records written with jansson, one of each kind the README shows. */
    json_t *recs[] = {
        json_pack("{ss ss}", "prompt", "12+30=", "answer", "42"),
        json_pack("{ss si ss}", "prompt", "7-9=", "answer", -2, "task", "number"),
        json_pack("{ss sf ss s{sf}}", "prompt", "What is 1/3 as a decimal?", "answer", 0.3333,
                  "task", "number", "meta", "abs_tol", 0.001),
        json_pack("{ss ss ss}", "prompt", "Which is a prime? (A) 4 (B) 6 (C) 7", "answer", "C",
                  "task", "choice"),
        json_pack("{ss ss ss}", "prompt", "Solve x + 2 = 5. Put the answer in \\boxed{}.", "answer",
                  "3", "task", "boxed:0.9,format_answer_tag:0.1"),
        json_pack("{ss ss s{ss}}", "prompt", "Yes or no: is 7 odd?", "task", "regex", "meta",
                  "regex", "^(yes|Yes)$"),
        json_pack("{s[{ss ss}{ss ss}] ss ss}", "messages", "role", "system", "content",
                  "Think first.", "role", "user", "content", "What is 6 x 7?", "answer", "42",
                  "task", "number:0.8,format_think:0.2"),
        json_pack("{ss ss s{s[ss] ss}}", "prompt",
                  "Write a Python function `add_k(x)` that returns x plus 2.", "task", "code",
                  "meta", "tests", "assert add_k(0) == 2", "assert add_k(5) == 7", "prefix", ""),
    };
    char  *text = xstrdup("");
    size_t len = 0;
    for (size_t i = 0; i < sizeof recs / sizeof recs[0]; i++) {
        char  *line = json_dumps(recs[i], JSON_COMPACT | JSON_PRESERVE_ORDER);
        size_t k = strlen(line);
        text = xrealloc(text, len + k + 2);
        memcpy(text + len, line, k);
        len += k;
        text[len++] = '\n';
        text[len] = '\0';
        char name[32];
        snprintf(name, sizeof name, "jsonl-rec-%zu", i);
        seed_file(dir, name, 1 | (1 << 1), 50, 60, line);
        free(line);
        json_decref(recs[i]);
    }
    seed_file(dir, "jsonl-one-char", 7 << 1, 50, 60, "{\"prompt\": \"1+1=\", \"answer\": \"2\"}");
    seed_file(dir, "jsonl-all-bpe", 1, 50, 40, text);
    seed_file(dir, "jsonl-all-char", 7 << 1, 50, 40, text);
    free(text);
    /* What the reader refuses or tolerates: one of each problem, blank and
     * CRLF lines, a byte-order mark. */
    seed_file(dir, "jsonl-hostile", 7 << 1, 100, 30,
              "\xEF\xBB\xBF{\"prompt\": \"1+1=\", \"answer\": \"2\"}\r\n"
              "not json\n"
              "[1, 2]\n"
              "{\"answer\": \"2\"}\n"
              "{\"prompt\": 5}\n"
              "{\"prompt\": \"   \"}\n"
              "{\"prompt\": \"1+1=\", \"task\": \"nope\"}\n"
              "{\"prompt\": \"1+1=\", \"answer\": \"two\", \"task\": \"number\"}\n"
              "{\"prompt\": \"1+1=\", \"prompt\": \"x\"}\n"
              "   \t\n"
              "\n"
              "{\"prompt\": \"a\\tb\", \"answer\": \"x\"}\n"
              "{\"messages\": [{\"role\": \"tool\", \"content\": \"x\"}]}\n"
              "{\"prompt\": \"2+2=\", \"answer\": 4, \"id\": 9}");
    seed_file(dir, "jsonl-messages", 1 | (2 << 1), 0, 90,
              "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": "
              "\"assistant\", \"content\": \"hello\"}, {\"role\": \"user\", \"content\": "
              "\"What is 2+2?\"}], \"answer\": 4}\n"
              "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", "
              "\"content\": \"b\"}]}\n");
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_init("jsonl", seeds);
    g_tok = tok_new(TOK_CHARSET_DEFAULT);
    g_bpe = fuzz_bpe();
    CHECK(g_tok && g_bpe);
    return 0;
}
