#include "common/tasks/prefs_data.h"

#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "common/base/progress.h"
#include "common/tasks/render.h"

struct Prefs {
    Jsonl     *jsonl;
    Render    *render;
    PrefsOpts  opts;
    PrefsStats st; /* pairs, ranked, max_k, max_ids of the good records */
};

static const char *const k_problems[PREFS_N_PROBLEMS] = {
    [PREFS_OK] = "ok",
    [PREFS_BAD_JSON] = "not JSON",
    [PREFS_BAD_OBJECT] = "not a JSON object",
    [PREFS_BAD_LINE] = "line too long",
    [PREFS_BAD_MISSING] = "missing member",
    [PREFS_BAD_TYPE] = "wrong type",
    [PREFS_BAD_EMPTY] = "empty text",
    [PREFS_BAD_TIE] = "tie",
    [PREFS_BAD_RANKING] = "bad ranking",
    [PREFS_BAD_CHARS] = "characters not in the tokenizer",
    [PREFS_BAD_TOO_LONG] = "too long",
    [PREFS_BAD_MARGIN] = "bad margin",
    [PREFS_BAD_PROMPT] = "prompt mismatch",
};

_Static_assert(PREFS_N_PROBLEMS <= JSONL_MAX_PROBLEMS, "jsonl counts every problem");

const char *prefs_problem_name(PrefsProblem p)
{
    return p >= 0 && p < PREFS_N_PROBLEMS ? k_problems[p] : "?";
}

static PrefsProblem from_render(RenderProblem p)
{
    static const PrefsProblem map[] = {
        [RENDER_OK] = PREFS_OK,           [RENDER_BAD_TYPE] = PREFS_BAD_TYPE,
        [RENDER_EMPTY] = PREFS_BAD_EMPTY, [RENDER_TOO_LONG] = PREFS_BAD_TOO_LONG,
        [RENDER_CHARS] = PREFS_BAD_CHARS,
    };
    return map[p];
}

void prefs_record_free(PrefsRecord *rec)
{
    free(rec->prompt);
    for (int i = 0; i < PREFS_MAX_K; i++) free(rec->comp[i]);
    memset(rec, 0, sizeof *rec);
}

/* ---- One record ---------------------------------------------------------- */

/* The conversation a record's text is parsed into: the prompt's messages
 * (borrowed from the JSON) and each completion's reply text, in the order
 * the file gives them. */
typedef struct {
    BpeChatMessage prompt[RENDER_MAX_MESSAGES];
    int            n_prompt; /* 0 until known */
    const char    *text[PREFS_MAX_K];
    char           name[PREFS_MAX_K][24]; /* "chosen", "completion 3" for reasons */
    int            k;
} Parsed;

static bool same_messages(const BpeChatMessage *a, const BpeChatMessage *b, int n)
{
    for (int i = 0; i < n; i++)
        if (strcmp(a[i].role, b[i].role) || strcmp(a[i].content, b[i].content)) return false;
    return true;
}

static PrefsProblem read_prompt(const json_t *v, Parsed *ps, char *why, size_t wl)
{
    if (json_is_string(v)) {
        if (jsonl_is_blank(json_string_value(v))) {
            snprintf(why, wl, "\"prompt\" is empty");
            return PREFS_BAD_EMPTY;
        }
        ps->prompt[0] = (BpeChatMessage){.role = "user", .content = json_string_value(v)};
        ps->n_prompt = 1;
        return PREFS_OK;
    }
    if (!json_is_array(v)) {
        snprintf(why, wl, "\"prompt\" is %s, expected a string or a list of messages",
                 jsonl_type_name(v));
        return PREFS_BAD_TYPE;
    }
    return from_render(
        render_read_messages(v, "prompt", "user", ps->prompt, &ps->n_prompt, why, wl));
}

/* Completion i from v: a string, or messages ending with the assistant's
 * reply whose earlier messages are the prompt's. With no prompt yet (the
 * implicit form), the earlier messages become the prompt. */
static PrefsProblem read_completion(const json_t *v, Parsed *ps, int i, char *why, size_t wl)
{
    const char *name = ps->name[i];
    if (json_is_string(v)) {
        ps->text[i] = json_string_value(v);
        if (ps->n_prompt == 0) {
            snprintf(why, wl, "no \"prompt\", and \"%s\" is a string, not a conversation", name);
            return PREFS_BAD_MISSING;
        }
        return PREFS_OK;
    }
    if (!json_is_array(v)) {
        snprintf(why, wl, "\"%s\" is %s, expected a string or a list of messages", name,
                 jsonl_type_name(v));
        return PREFS_BAD_TYPE;
    }
    BpeChatMessage msgs[RENDER_MAX_MESSAGES];
    int            n = 0;
    PrefsProblem   p = from_render(render_read_messages(v, name, "assistant", msgs, &n, why, wl));
    if (p) return p;
    ps->text[i] = msgs[n - 1].content;
    if (ps->n_prompt == 0) {
        if (n == 1) {
            snprintf(why, wl, "no \"prompt\", and \"%s\" holds only the assistant's reply", name);
            return PREFS_BAD_MISSING;
        }
        if (strcmp(msgs[n - 2].role, "user")) {
            snprintf(why, wl,
                     "\"%s\": the message before the reply is the %s's, expected the "
                     "user's",
                     name, msgs[n - 2].role);
            return PREFS_BAD_TYPE;
        }
        memcpy(ps->prompt, msgs, sizeof(BpeChatMessage) * (size_t)(n - 1));
        ps->n_prompt = n - 1;
        return PREFS_OK;
    }
    if (n > 1 && (n - 1 != ps->n_prompt || !same_messages(msgs, ps->prompt, n - 1))) {
        snprintf(why, wl, "the %d message%s before the %s's reply %s not the prompt's %d", n - 1,
                 n > 2 ? "s" : "", name, n > 2 ? "are" : "is", ps->n_prompt);
        return PREFS_BAD_PROMPT;
    }
    return PREFS_OK;
}

/* A ranking: completions reordered best first into order (k). */
static PrefsProblem read_ranking(const json_t *comps, const json_t *rank, int *order, int *k,
                                 char *why, size_t wl)
{
    if (!json_is_array(comps)) {
        snprintf(why, wl, "\"completions\" is %s, expected an array", jsonl_type_name(comps));
        return PREFS_BAD_TYPE;
    }
    if (!json_is_array(rank)) {
        snprintf(why, wl, "\"ranking\" is %s, expected an array of indices", jsonl_type_name(rank));
        return PREFS_BAD_TYPE;
    }
    size_t n = json_array_size(comps);
    if (n < 2 || n > PREFS_MAX_K) {
        snprintf(why, wl, "%zu completions, expected 2..%d", n, PREFS_MAX_K);
        return PREFS_BAD_RANKING;
    }
    if (json_array_size(rank) != n) {
        snprintf(why, wl, "\"ranking\" has %zu entries for %zu completions", json_array_size(rank),
                 n);
        return PREFS_BAD_RANKING;
    }
    bool seen[PREFS_MAX_K] = {false};
    for (size_t r = 0; r < n; r++) {
        const json_t *e = json_array_get(rank, r);
        if (!json_is_integer(e)) {
            snprintf(why, wl, "ranking entry %zu is %s, expected an index", r, jsonl_type_name(e));
            return PREFS_BAD_TYPE;
        }
        json_int_t idx = json_integer_value(e);
        if (idx < 0 || idx >= (json_int_t)n || seen[idx]) {
            snprintf(why, wl,
                     "ranking entry %zu is %" JSON_INTEGER_FORMAT
                     ": not a permutation of 0..%zu (%s)",
                     r, idx, n - 1, idx >= 0 && idx < (json_int_t)n ? "repeated" : "out of range");
            return PREFS_BAD_RANKING;
        }
        seen[idx] = true;
        order[r] = (int)idx;
    }
    *k = (int)n;
    return PREFS_OK;
}

static PrefsProblem read_margin(const json_t *m, PrefsRecord *rec, char *why, size_t wl)
{
    if (!m || json_is_null(m)) return PREFS_OK;
    if (!json_is_number(m)) {
        snprintf(why, wl, "\"margin\" is %s, expected a number", jsonl_type_name(m));
        return PREFS_BAD_TYPE;
    }
    double v = json_number_value(m);
    if (!isfinite(v) || v < 0.0 || v > 1e6) {
        snprintf(why, wl, "\"margin\" is %g, expected 0..1e6", v);
        return PREFS_BAD_MARGIN;
    }
    rec->margin = (float)v;
    rec->has_margin = true;
    return PREFS_OK;
}

/* The members of a record into ps (texts borrowed from root). */
static PrefsProblem parse_members(const Prefs *pr, const json_t *root, Parsed *ps, PrefsRecord *rec,
                                  char *why, size_t wl)
{
    const json_t *prompt = json_object_get(root, "prompt");
    PrefsProblem  p;
    if (prompt && (p = read_prompt(prompt, ps, why, wl))) return p;
    if (pr->opts.reference) {
        const json_t *c = json_object_get(root, "completion");
        if (!prompt || !c) {
            snprintf(why, wl, "no \"%s\" (a reference record is {\"prompt\", \"completion\"})",
                     prompt ? "completion" : "prompt");
            return PREFS_BAD_MISSING;
        }
        snprintf(ps->name[0], sizeof ps->name[0], "completion");
        ps->k = 1;
        return read_completion(c, ps, 0, why, wl);
    }
    const json_t *comps = json_object_get(root, "completions");
    const json_t *chosen = json_object_get(root, "chosen");
    const json_t *rejected = json_object_get(root, "rejected");
    if (comps || json_object_get(root, "ranking")) {
        if (chosen || rejected) {
            snprintf(why, wl,
                     "both a pair (\"chosen\", \"rejected\") and a ranking "
                     "(\"completions\"): give one");
            return PREFS_BAD_TYPE;
        }
        const json_t *rank = json_object_get(root, "ranking");
        if (!prompt || !comps || !rank) {
            snprintf(why, wl, "a ranking without \"%s\"",
                     !prompt  ? "prompt"
                     : !comps ? "completions"
                              : "ranking");
            return PREFS_BAD_MISSING;
        }
        int order[PREFS_MAX_K], k = 0;
        if ((p = read_ranking(comps, rank, order, &k, why, wl))) return p;
        for (int r = 0; r < k; r++) {
            snprintf(ps->name[r], sizeof ps->name[r], "completion %d", order[r]);
            if ((p = read_completion(json_array_get(comps, (size_t)order[r]), ps, r, why, wl)))
                return p;
        }
        ps->k = k;
        rec->is_ranking = true;
        return PREFS_OK;
    }
    if (!chosen || !rejected) {
        snprintf(why, wl,
                 "no \"%s\" (a pair is {\"prompt\", \"chosen\", \"rejected\"}; a ranking "
                 "{\"prompt\", \"completions\", \"ranking\"})",
                 chosen ? "rejected" : "chosen");
        return PREFS_BAD_MISSING;
    }
    snprintf(ps->name[0], sizeof ps->name[0], "chosen");
    snprintf(ps->name[1], sizeof ps->name[1], "rejected");
    ps->k = 2;
    if ((p = read_completion(chosen, ps, 0, why, wl)) ||
        (p = read_completion(rejected, ps, 1, why, wl)))
        return p;
    return read_margin(json_object_get(root, "margin"), rec, why, wl);
}

/* Checks, renders and tokenises one record into rec (which the caller frees). */
static PrefsProblem parse_record(Prefs *pr, const json_t *root, PrefsRecord *rec, char *why,
                                 size_t wl)
{
    Parsed      *ps = xcalloc(1, sizeof *ps);
    PrefsProblem p = parse_members(pr, root, ps, rec, why, wl);
    for (int i = 0; !p && i < ps->k; i++)
        for (int j = 0; j < i; j++)
            if (!strcmp(ps->text[i], ps->text[j])) {
                snprintf(why, wl, "the %s and the %s are the same text", ps->name[j], ps->name[i]);
                p = PREFS_BAD_TIE;
                break;
            }
    const int *ids = NULL;
    int        n = 0;
    if (!p) p = from_render(render_prompt(pr->render, ps->prompt, ps->n_prompt, &ids, &n, why, wl));
    if (!p) {
        rec->prompt = xmalloc(sizeof(int) * (size_t)n);
        memcpy(rec->prompt, ids, sizeof(int) * (size_t)n);
        rec->n_prompt = n;
    }
    for (int i = 0; !p && i < ps->k; i++) {
        p = from_render(render_completion(pr->render, ps->text[i], ps->name[i], &ids, &n, why, wl));
        if (p) break;
        if (rec->n_prompt + n > pr->opts.max_ids) {
            snprintf(why, wl, "prompt %d + %s %d ids, the model takes %d", rec->n_prompt,
                     ps->name[i], n, pr->opts.max_ids);
            p = PREFS_BAD_TOO_LONG;
            break;
        }
        rec->comp[i] = xmalloc(sizeof(int) * (size_t)n);
        memcpy(rec->comp[i], ids, sizeof(int) * (size_t)n);
        rec->n_comp[i] = n;
    }
    if (!p) rec->k = ps->k;
    free(ps);
    return p;
}

/* ---- Opening and reading ------------------------------------------------- */

static int check_record(void *ctx, const json_t *obj, char *why, size_t wl)
{
    Prefs       *pr = ctx;
    PrefsRecord  rec = {0};
    PrefsProblem p = parse_record(pr, obj, &rec, why, wl);
    if (!p) {
        pr->st.pairs += (uint64_t)rec.k * (uint64_t)(rec.k - 1) / 2;
        pr->st.ranked += rec.is_ranking;
        if (rec.k > pr->st.max_k) pr->st.max_k = rec.k;
        for (int i = 0; i < rec.k; i++)
            if (rec.n_prompt + rec.n_comp[i] > pr->st.max_ids)
                pr->st.max_ids = rec.n_prompt + rec.n_comp[i];
    }
    prefs_record_free(&rec);
    return p;
}

void prefs_free(Prefs **pp)
{
    if (!pp || !*pp) return;
    jsonl_free(&(*pp)->jsonl);
    render_free(&(*pp)->render);
    free(*pp);
    *pp = NULL;
}

int prefs_open(const char *path, const PrefsOpts *opts, Prefs **out)
{
    *out = NULL;
    if (!path || !path[0] || !opts || !opts->tok == !opts->bpe || opts->max_ids < 2 ||
        opts->max_bad_percent < 0 || opts->max_bad_percent > 100) {
        log_error("prefs_open: '%s': bad options (one tokenizer, max_ids >= 2, max_bad_percent "
                  "0..100)",
                  path ? path : "(null)");
        return ERR_ARG;
    }
    if (opts->bpe && !bpe_chat_supported(opts->bpe)) {
        log_error("prefs: '%s': the model's tokenizer has no ChatML chat template to render "
                  "prompts with",
                  path);
        return ERR_UNSUPPORTED;
    }
    Prefs *pr = xcalloc(1, sizeof *pr);
    pr->opts = *opts;
    pr->render = render_new(opts->tok, opts->bpe);
    double    t0 = progress_now();
    JsonlOpts jo = {.what = "prefs",
                    .problem_names = k_problems,
                    .n_problems = PREFS_N_PROBLEMS,
                    .too_many = PREFS_BAD_TOO_LONG,
                    .max_bad_percent = opts->max_bad_percent,
                    .check = check_record,
                    .check_ctx = pr};
    int       rc = jsonl_open(path, &jo, &pr->jsonl);
    if (rc) {
        prefs_free(&pr);
        return rc;
    }
    jsonl_stats(pr->jsonl, &pr->st.file);
    if (opts->reference)
        log_info("prefs: '%s': %" PRIu64 " reference completions, up to %d ids, indexed in %.1f s",
                 path, pr->st.file.good, pr->st.max_ids, progress_now() - t0);
    else
        log_info("prefs: '%s': %" PRIu64 " records (%" PRIu64 " rankings; up to %d completions a "
                 "record), %" PRIu64 " pairs, sequences of up to %d ids, indexed in %.1f s",
                 path, pr->st.file.good, pr->st.ranked, pr->st.max_k, pr->st.pairs, pr->st.max_ids,
                 progress_now() - t0);
    *out = pr;
    return 0;
}

uint64_t prefs_size(const Prefs *p)
{
    return jsonl_size(p->jsonl);
}

const char *prefs_path(const Prefs *p)
{
    return jsonl_path(p->jsonl);
}

void prefs_stats(const Prefs *p, PrefsStats *out)
{
    *out = p->st;
}

uint64_t prefs_fingerprint(const Prefs *p)
{
    return jsonl_fingerprint(p->jsonl);
}

int prefs_read(Prefs *p, uint64_t k, PrefsRecord *rec)
{
    memset(rec, 0, sizeof *rec);
    json_t *obj = NULL;
    int     rc = jsonl_read(p->jsonl, k, &obj);
    if (rc) return rc;
    char         why[320] = "";
    PrefsProblem pb = parse_record(p, obj, rec, why, sizeof why);
    json_decref(obj);
    if (pb) return jsonl_changed(p->jsonl, k, pb, why);
    rec->line = jsonl_line(p->jsonl, k);
    return 0;
}
