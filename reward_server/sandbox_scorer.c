#include "reward_server/sandbox_scorer.h"

#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/log.h"

struct SandboxScorer {
    Sandbox *sb;
    bool     is_all_or_nothing;
};

/* ---- building the program -------------------------------------------------------------------- */

typedef struct {
    char  *p;
    size_t n, cap;
} Buf;

static void buf_add(Buf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (b->n + n + 1 > cap) cap *= 2;
        b->p = xrealloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void buf_str(Buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

static bool is_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 128 || (s[0] >= '0' && s[0] <= '9')) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_'))
            return false;
    }
    return true;
}

/* The completion's code: cut at the first stop string, then the inside of
 * its first ``` fence when it has one. Sets *start and *len. */
static void completion_code(const char *c, json_t *stop, const char **start, size_t *len)
{
    size_t n = strlen(c);
    for (size_t k = 0; k < json_array_size(stop); k++) {
        const char *t = json_string_value(json_array_get(stop, k));
        const char *at = t && t[0] ? strstr(c, t) : NULL;
        if (at && (size_t)(at - c) < n) n = (size_t)(at - c);
    }
    const char *fence = memmem(c, n, "```", 3);
    if (!fence) {
        *start = c;
        *len = n;
        return;
    }
    /* The opening fence's line may name the language (```python). */
    const char *end = c + n;
    const char *body = memchr(fence, '\n', (size_t)(end - fence));
    body = body ? body + 1 : end;
    const char *close = memmem(body, (size_t)(end - body), "```", 3);
    *start = body;
    *len = (size_t)((close ? close : end) - body);
}

int sandbox_program_build(const char *prompt, const char *completion, const char *meta_json,
                          SandboxProgram *out, char *why, size_t why_len)
{
    memset(out, 0, sizeof *out);
    if (!meta_json || !meta_json[0]) {
        err_why(why, why_len, "code: the prompt has no metadata (meta_json) with its tests");
        return ERR_FORMAT;
    }
    json_error_t jerr;
    json_t      *meta = json_loads(meta_json, JSON_REJECT_DUPLICATES, &jerr);
    if (!meta) {
        err_why(why, why_len, "code: metadata is not JSON: %.80s (line %d column %d)", jerr.text,
                jerr.line, jerr.column);
        return ERR_FORMAT;
    }
    int         rc = ERR_FORMAT;
    json_t     *tests = json_object_get(meta, "tests");
    json_t     *entry = json_object_get(meta, "entry_point");
    json_t     *prefix = json_object_get(meta, "prefix");
    json_t     *stop = json_object_get(meta, "stop");
    const char *ep = NULL;
    if (!json_is_object(meta)) {
        err_why(why, why_len, "code: metadata is not a JSON object");
        goto done;
    }
    if (!json_is_string(tests) && !json_is_array(tests)) {
        err_why(why, why_len,
                "code: metadata \"tests\" is %s, expected a string or an array of "
                "strings",
                tests ? "of another type" : "missing");
        goto done;
    }
    if (json_is_array(tests) &&
        (json_array_size(tests) == 0 || json_array_size(tests) > (size_t)SANDBOX_MAX_TESTS)) {
        err_why(why, why_len, "code: metadata \"tests\" has %zu tests, expected 1..%d",
                json_array_size(tests), SANDBOX_MAX_TESTS);
        goto done;
    }
    if (entry) {
        ep = json_string_value(entry);
        if (!ep || !is_name(ep) || !json_is_string(tests)) {
            err_why(why, why_len,
                    "code: metadata \"entry_point\" must be a Python name and goes with string "
                    "\"tests\"");
            goto done;
        }
    }
    if (prefix && !json_is_string(prefix)) {
        err_why(why, why_len, "code: metadata \"prefix\" is not a string");
        goto done;
    }
    if (stop && !json_is_array(stop)) {
        err_why(why, why_len, "code: metadata \"stop\" is not an array of strings");
        goto done;
    }
    for (size_t k = 0; k < json_array_size(stop); k++) {
        if (!json_is_string(json_array_get(stop, k))) {
            err_why(why, why_len, "code: metadata \"stop\" item %zu is not a string", k);
            goto done;
        }
    }
    for (size_t k = 0; k < json_array_size(tests); k++) {
        if (!json_is_string(json_array_get(tests, k))) {
            err_why(why, why_len, "code: metadata \"tests\" item %zu is not a string", k);
            goto done;
        }
    }
    Buf code = {0};
    buf_str(&code, prefix ? json_string_value(prefix) : (prompt ? prompt : ""));
    const char *cstart;
    size_t      clen;
    completion_code(completion ? completion : "", stop, &cstart, &clen);
    buf_add(&code, cstart, clen);
    if (json_is_string(tests)) {
        buf_str(&code, "\n");
        buf_str(&code, json_string_value(tests));
        buf_str(&code, "\n");
        if (ep) {
            buf_str(&code, "check(");
            buf_str(&code, ep);
            buf_str(&code, ")\n");
        }
    } else {
        out->n_tests = (int)json_array_size(tests);
        out->tests = xcalloc((size_t)out->n_tests, sizeof *out->tests);
        for (int k = 0; k < out->n_tests; k++)
            out->tests[k] = xstrdup(json_string_value(json_array_get(tests, (size_t)k)));
    }
    out->code = code.p;
    rc = 0;
done:
    json_decref(meta);
    return rc;
}

void sandbox_program_free(SandboxProgram *p)
{
    if (!p) return;
    for (int i = 0; i < p->n_tests; i++) free(p->tests[i]);
    free(p->tests);
    free(p->code);
    memset(p, 0, sizeof *p);
}

/* ---- the scorer ------------------------------------------------------------------------------ */

static void add_component(ScorerResult *out, const char *name, float value)
{
    CHECK(out->n_components < SCORER_MAX_COMPONENTS);
    ScorerComponent *c = &out->components[out->n_components++];
    snprintf(c->name, sizeof c->name, "%s", name);
    c->value = value;
}

int sandbox_scorer_run(const ScorerInput *in, const void *opts, ScorerResult *out, char *why,
                       size_t why_len)
{
    const SandboxScorer *s = opts;
    SandboxProgram       prog;
    int rc = sandbox_program_build(in->prompt, in->completion, in->meta_json, &prog, why, why_len);
    if (rc) return rc;
    SandboxJob job = {
        .code = prog.code, .tests = (const char *const *)prog.tests, .n_tests = prog.n_tests};
    SandboxResult res;
    rc = sandbox_run(s->sb, &job, &res);
    sandbox_program_free(&prog);
    if (rc) {
        err_why(why, why_len, "code: program and tests too large for the sandbox (%s)",
                err_str(rc));
        return rc;
    }
    if (res.verdict == SANDBOX_SETUP_FAILED) {
        err_why(why, why_len, "code: the sandbox could not run the program: %.120s", res.why);
        sandbox_result_free(&res);
        return ERR_IO;
    }
    float pass_rate = (float)res.n_passed / (float)res.n_tests;
    float all_pass = res.verdict == SANDBOX_PASSED ? 1.0f : 0.0f;
    add_component(out, "pass_rate", pass_rate);
    add_component(out, "all_pass", all_pass);
    out->reward = s->is_all_or_nothing ? all_pass : pass_rate;
    if (log_level() >= LOG_DEBUG)
        log_debug("code: %s, %d/%d tests%s%s, %.2f s", sandbox_verdict_name(res.verdict),
                  res.n_passed, res.n_tests, res.error[0] ? ", " : "", res.error, res.seconds);
    sandbox_result_free(&res);
    return 0;
}

SandboxScorer *sandbox_scorer_new(const SandboxScorerConfig *cfg, const char *hide)
{
    SandboxConfig c = cfg->sandbox;
    char          paths[PATH_MAX * 2 + 2] = "";
    /* The caller's hidden paths and the server's own (its keys). */
    snprintf(paths, sizeof paths, "%s%s%s", c.hide && c.hide[0] ? c.hide : "",
             c.hide && c.hide[0] && hide && hide[0] ? "," : "", hide ? hide : "");
    c.hide = paths[0] ? paths : NULL;
    Sandbox *sb = sandbox_new(&c);
    if (!sb) return NULL;
    SandboxScorer *s = xcalloc(1, sizeof *s);
    s->sb = sb;
    s->is_all_or_nothing = cfg->is_all_or_nothing;
    return s;
}

void sandbox_scorer_stop(SandboxScorer *s)
{
    if (s) sandbox_stop(s->sb);
}

void sandbox_scorer_free(SandboxScorer **sp)
{
    if (!sp || !*sp) return;
    sandbox_free(&(*sp)->sb);
    free(*sp);
    *sp = NULL;
}

const Sandbox *sandbox_scorer_sandbox(const SandboxScorer *s)
{
    return s->sb;
}
