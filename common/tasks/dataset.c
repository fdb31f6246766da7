#include "common/tasks/dataset.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "common/base/progress.h"
#include "common/formats/bpe_chat.h"
#include "common/tasks/jsonl.h"
#include "common/tasks/render.h"

struct Dataset {
    Jsonl      *jsonl;
    Render     *render;
    DatasetOpts opts;
    int         max_ids;
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

_Static_assert((int)DATASET_BAD_JSON == JSONL_BAD_JSON &&
                   (int)DATASET_BAD_OBJECT == JSONL_BAD_OBJECT &&
                   (int)DATASET_BAD_LINE == JSONL_BAD_LINE &&
                   (int)DATASET_BAD_NO_PROMPT == JSONL_N_COMMON,
               "the common problems of common/tasks/jsonl.h come first");
_Static_assert(DATASET_N_PROBLEMS <= JSONL_MAX_PROBLEMS, "jsonl counts every problem");

const char *dataset_problem_name(DatasetProblem p)
{
    return p >= 0 && p < DATASET_N_PROBLEMS ? k_problems[p] : "?";
}

/* ---- One record ---------------------------------------------------------- */

void dataset_record_free(DatasetRecord *rec)
{
    free(rec->ids);
    free(rec->answer);
    free(rec->task);
    free(rec->meta);
    memset(rec, 0, sizeof *rec);
}

/* A renderer's problem as the dataset's. */
static DatasetProblem from_render(RenderProblem p)
{
    static const DatasetProblem map[] = {
        [RENDER_OK] = DATASET_OK,           [RENDER_BAD_TYPE] = DATASET_BAD_TYPE,
        [RENDER_EMPTY] = DATASET_BAD_EMPTY, [RENDER_TOO_LONG] = DATASET_BAD_TOO_LONG,
        [RENDER_CHARS] = DATASET_BAD_CHARS,
    };
    return map[p];
}

/* The prompt's ids into rec, within the model's limit. */
static DatasetProblem render_record(Dataset *d, const BpeChatMessage *msgs, int n_msgs,
                                    DatasetRecord *rec, char *why, size_t wl)
{
    const int     *ids = NULL;
    int            n = 0;
    DatasetProblem p = from_render(render_prompt(d->render, msgs, n_msgs, &ids, &n, why, wl));
    if (p) return p;
    if (n > d->opts.max_prompt_ids) {
        if (render_is_chat(d->render))
            snprintf(why, wl, "%d ids in the chat template, the model takes prompts of at most %d",
                     n, d->opts.max_prompt_ids);
        else
            snprintf(why, wl, "%d ids with BOS, the model takes prompts of at most %d", n,
                     d->opts.max_prompt_ids);
        return DATASET_BAD_TOO_LONG;
    }
    rec->ids = xmalloc(sizeof(int) * (size_t)n);
    memcpy(rec->ids, ids, sizeof(int) * (size_t)n);
    rec->n_ids = n;
    return DATASET_OK;
}

/* A completion prompt for a BPE model tokenised as it is: the text's own
 * bytes, never read as control tokens (a prompt cannot smuggle one in), no
 * chat template. */
static DatasetProblem render_raw(Dataset *d, const char *text, DatasetRecord *rec, char *why,
                                 size_t wl)
{
    size_t len = strlen(text);
    int    cap = (int)BPE_ENCODE_MAX_IDS(len), n = 0;
    int   *ids = xmalloc(sizeof(int) * (size_t)cap);
    int    flags = bpe_add_bos(d->opts.bpe) ? BPE_ENC_BOS : 0;
    if (bpe_encode(d->opts.bpe, text, len, flags, ids, cap, &n)) {
        free(ids);
        snprintf(why, wl, "the prompt cannot be tokenised");
        return DATASET_BAD_CHARS;
    }
    if (n > d->opts.max_prompt_ids) {
        free(ids);
        snprintf(why, wl, "%d ids, the model takes prompts of at most %d", n,
                 d->opts.max_prompt_ids);
        return DATASET_BAD_TOO_LONG;
    }
    rec->ids = ids;
    rec->n_ids = n;
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
        snprintf(why, wl, "\"answer\" is %s, expected a string or a number", jsonl_type_name(a));
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
        snprintf(why, wl, "\"meta\" is %s, expected an object", jsonl_type_name(m));
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
            snprintf(why, wl, "\"task\" is %s, expected a scorer spec string", jsonl_type_name(t));
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

/* Checks and renders one record into rec (which the caller frees). */
static DatasetProblem parse_record(Dataset *d, const json_t *root, DatasetRecord *rec, char *why,
                                   size_t wl)
{
    DatasetProblem p = DATASET_OK;
    const json_t  *prompt = json_object_get(root, "prompt");
    const json_t  *messages = json_object_get(root, "messages");
    BpeChatMessage msgs[RENDER_MAX_MESSAGES];
    int            n_msgs = 0;
    if (!prompt == !messages) {
        snprintf(why, wl,
                 prompt ? "both \"prompt\" and \"messages\": give one"
                        : "no \"prompt\" (or \"messages\")");
        p = DATASET_BAD_NO_PROMPT;
    } else if (prompt && !json_is_string(prompt)) {
        snprintf(why, wl, "\"prompt\" is %s, expected a string", jsonl_type_name(prompt));
        p = DATASET_BAD_TYPE;
    } else if (prompt && jsonl_is_blank(json_string_value(prompt))) {
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
        p = from_render(render_read_messages(messages, "messages", "user", msgs, &n_msgs, why, wl));
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
        p = d->opts.bpe && d->opts.is_raw ? render_raw(d, msgs[0].content, rec, why, wl)
                                          : render_record(d, msgs, n_msgs, rec, why, wl);
    return p;
}

/* ---- Indexing and reading ------------------------------------------------ */

/* jsonl's check: a record is good when it renders. */
static int check_record(void *ctx, const json_t *obj, char *why, size_t wl)
{
    Dataset       *d = ctx;
    DatasetRecord  rec = {0};
    DatasetProblem p = parse_record(d, obj, &rec, why, wl);
    if (!p && rec.n_ids > d->max_ids) d->max_ids = rec.n_ids;
    dataset_record_free(&rec);
    return p;
}

void dataset_free(Dataset **dp)
{
    if (!dp || !*dp) return;
    Dataset *d = *dp;
    jsonl_free(&d->jsonl);
    render_free(&d->render);
    free(d);
    *dp = NULL;
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
    d->opts = *opts;
    d->render = render_new(opts->tok, opts->bpe);
    double    t0 = progress_now();
    JsonlOpts jo = {.what = "dataset",
                    .problem_names = k_problems,
                    .n_problems = DATASET_N_PROBLEMS,
                    .too_many = DATASET_BAD_TOO_LONG,
                    .max_bad_percent = opts->max_bad_percent,
                    .check = check_record,
                    .check_ctx = d};
    int       rc = jsonl_open(path, &jo, &d->jsonl);
    if (rc) {
        dataset_free(&d);
        return rc;
    }
    JsonlStats st;
    jsonl_stats(d->jsonl, &st);
    log_info("dataset: '%s': %" PRIu64 " records, prompts of up to %d ids, %.1f MB indexed in "
             "%.1f s",
             path, st.good, d->max_ids, (double)st.bytes / 1e6, progress_now() - t0);
    *out = d;
    return 0;
}

uint64_t dataset_size(const Dataset *d)
{
    return jsonl_size(d->jsonl);
}

const char *dataset_path(const Dataset *d)
{
    return jsonl_path(d->jsonl);
}

void dataset_stats(const Dataset *d, DatasetStats *out)
{
    JsonlStats js;
    jsonl_stats(d->jsonl, &js);
    *out = (DatasetStats){
        .lines = js.lines, .blank = js.blank, .good = js.good, .bad = js.bad, .bytes = js.bytes};
    memcpy(out->bad_by, js.bad_by, sizeof out->bad_by);
}

uint64_t dataset_fingerprint(const Dataset *d)
{
    return jsonl_fingerprint(d->jsonl);
}

int dataset_max_ids(const Dataset *d)
{
    return d->max_ids;
}

int dataset_read(Dataset *d, uint64_t k, DatasetRecord *rec)
{
    memset(rec, 0, sizeof *rec);
    json_t *obj = NULL;
    int     rc = jsonl_read(d->jsonl, k, &obj);
    if (rc) return rc;
    char           why[320] = "";
    DatasetProblem p = parse_record(d, obj, rec, why, sizeof why);
    json_decref(obj);
    if (p) return jsonl_changed(d->jsonl, k, p, why);
    rec->line = jsonl_line(d->jsonl, k);
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
