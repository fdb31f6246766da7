#include "common/tasks/score.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/tasks/chat_task.h"
#include "common/tasks/gold.h"
#include "common/tasks/task.h"
#include "common/tasks/verify.h"

static void add_component(ScoreResult *out, const char *name, float value)
{
    CHECK(out->n_components < SCORE_MAX_COMPONENTS);
    ScoreComponent *c = &out->components[out->n_components++];
    snprintf(c->name, sizeof c->name, "%s", name);
    c->value = value;
}

static const char *str_or_empty(const char *s)
{
    return s ? s : "";
}

static bool has_answer(const char *answer)
{
    return answer && answer[0];
}

static int need_answer(const char *scorer, const ScoreInput *in, char *why, size_t why_len)
{
    if (has_answer(in->answer)) return 0;
    snprintf(why, why_len, "%s: prompt '%.40s' has no reference answer", scorer,
             str_or_empty(in->prompt));
    return ERR_ARG;
}

/* A member of the record's metadata: the JSON object meta parsed into *root
 * (caller decrefs; NULL when meta is empty). ERR_ARG when meta is not a JSON
 * object. */
static int meta_parse(const char *scorer, const char *meta, json_t **root, char *why,
                      size_t why_len)
{
    *root = NULL;
    if (!meta || !meta[0]) return 0;
    json_error_t e;
    *root = json_loads(meta, JSON_REJECT_DUPLICATES, &e);
    if (!json_is_object(*root)) {
        snprintf(why, why_len, "%s: meta is not a JSON object (%.60s)", scorer,
                 *root ? "another JSON value" : e.text);
        json_decref(*root);
        *root = NULL;
        return ERR_ARG;
    }
    return 0;
}

/* ---- arith, arith_chat -------------------------------------------------- */

int score_arith(const ScoreInput *in, const void *opts, ScoreResult *out, char *why, size_t why_len)
{
    const ScoreArithOpts *o = opts;
    ScoreArithOpts        def = SCORE_ARITH_DEFAULTS;
    if (!o) o = &def;
    int rc = need_answer("arith", in, why, why_len);
    if (rc) return rc;
    TaskScore ts = {0};
    /* A completion cut off by the length cap never ended its answer: even if
     * its prefix equals the answer it is not a correct, well-formed one. */
    if (!in->is_truncated) task_score(str_or_empty(in->completion), in->answer, &ts);
    add_component(out, "correct", ts.correct);
    add_component(out, "format", ts.format);
    out->reward = ts.correct + o->format_bonus * ts.format;
    return 0;
}

/* The hidden judge of the preference task (common/tasks/gold.h): a graded
 * reward in [-1, 1]; a truncated completion is not an answer. */
static int score_gold_arith(const ScoreInput *in, const void *opts, ScoreResult *out, char *why,
                            size_t why_len)
{
    int rc = need_answer("gold_arith", in, why, why_len);
    if (rc) return rc;
    double g = in->is_truncated ? -1.0 : gold_arith(str_or_empty(in->completion), in->answer);
    add_component(out, "correct", g == 1.0 ? 1.0f : 0.0f);
    add_component(out, "gold", (float)g);
    out->reward = (float)g;
    return 0;
}

/* The chat judge of the preference task (common/tasks/gold.h): the last
 * integer's closeness, halved for an answer of more than one line. */
static int score_gold_chat(const ScoreInput *in, const void *opts, ScoreResult *out, char *why,
                           size_t why_len)
{
    int rc = need_answer("gold_chat", in, why, why_len);
    if (rc) return rc;
    double g = in->is_truncated ? -1.0 : gold_chat(str_or_empty(in->completion), in->answer);
    add_component(out, "correct", g == 1.0 ? 1.0f : 0.0f);
    add_component(out, "gold", (float)g);
    out->reward = (float)g;
    return 0;
}

int score_arith_chat(const ScoreInput *in, const void *opts, ScoreResult *out, char *why,
                     size_t why_len)
{
    int rc = need_answer("arith_chat", in, why, why_len);
    if (rc) return rc;
    ChatTaskScore cs;
    chat_task_score(str_or_empty(in->completion), in->answer, in->is_truncated, &cs);
    add_component(out, "correct", cs.correct);
    add_component(out, "format", cs.format);
    out->reward = chat_task_reward(&cs);
    return 0;
}

static int check_integer_answer(const char *answer, const char *meta, char *why, size_t why_len)
{
    char     *end = NULL;
    long long v = strtoll(answer, &end, 10);
    (void)v;
    if (answer[0] && end && *end == '\0') return 0;
    snprintf(why, why_len, "answer '%.40s' is not an integer", answer);
    return ERR_ARG;
}

static int check_has_answer(const char *answer, const char *meta, char *why, size_t why_len)
{
    for (const char *p = answer; *p; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') return 0;
    snprintf(why, why_len, "no answer (this scorer compares with one)");
    return ERR_ARG;
}

/* ---- exact, number, choice, boxed --------------------------------------- */

static int score_correct(ScoreResult *out, bool ok)
{
    add_component(out, "correct", ok ? 1.0f : 0.0f);
    out->reward = ok ? 1.0f : 0.0f;
    return 0;
}

static int score_exact(const ScoreInput *in, const void *opts, ScoreResult *out, char *why,
                       size_t why_len)
{
    int rc = need_answer("exact", in, why, why_len);
    if (rc) return rc;
    const char *c = str_or_empty(in->completion);
    size_t      st, len;
    verify_answer_span(c, strlen(c), &st, &len);
    return score_correct(out, verify_norm_equal(c + st, len, in->answer, strlen(in->answer)));
}

/* The tolerances of meta ("rel_tol", "abs_tol": numbers >= 0), defaults
 * when absent. */
static int number_tolerances(const char *meta, double *rel, double *abs_tol, char *why,
                             size_t why_len)
{
    *rel = VERIFY_NUMBER_REL_TOL;
    *abs_tol = VERIFY_NUMBER_ABS_TOL;
    json_t *root;
    int     rc = meta_parse("number", meta, &root, why, why_len);
    if (rc || !root) return rc;
    const char *keys[2] = {"rel_tol", "abs_tol"};
    double     *dst[2] = {rel, abs_tol};
    for (int k = 0; k < 2 && !rc; k++) {
        json_t *v = json_object_get(root, keys[k]);
        if (!v) continue;
        if (!json_is_number(v) || !(json_number_value(v) >= 0) || !isfinite(json_number_value(v))) {
            snprintf(why, why_len, "number: meta \"%s\" is not a finite number >= 0", keys[k]);
            rc = ERR_ARG;
        } else {
            *dst[k] = json_number_value(v);
        }
    }
    json_decref(root);
    return rc;
}

static int check_number(const char *answer, const char *meta, char *why, size_t why_len)
{
    double v, r, a;
    if (!verify_parse_number(answer, strlen(answer), &v)) {
        snprintf(why, why_len, "answer '%.40s' is not a number", answer);
        return ERR_ARG;
    }
    return number_tolerances(meta, &r, &a, why, why_len);
}

static int score_number(const ScoreInput *in, const void *opts, ScoreResult *out, char *why,
                        size_t why_len)
{
    int rc = need_answer("number", in, why, why_len);
    if (rc) return rc;
    double want, got, rel, abs_tol;
    if (!verify_parse_number(in->answer, strlen(in->answer), &want)) {
        snprintf(why, why_len, "number: answer '%.40s' is not a number", in->answer);
        return ERR_ARG;
    }
    if ((rc = number_tolerances(in->meta_json, &rel, &abs_tol, why, why_len))) return rc;
    const char *c = str_or_empty(in->completion);
    size_t      st, len;
    verify_answer_span(c, strlen(c), &st, &len);
    return score_correct(out, verify_last_number(c + st, len, &got) &&
                                  verify_number_close(got, want, rel, abs_tol));
}

static int check_choice(const char *answer, const char *meta, char *why, size_t why_len)
{
    if (verify_choice_answer(answer, strlen(answer))) return 0;
    snprintf(why, why_len, "answer '%.40s' is not a letter A-E", answer);
    return ERR_ARG;
}

static int score_choice(const ScoreInput *in, const void *opts, ScoreResult *out, char *why,
                        size_t why_len)
{
    int rc = need_answer("choice", in, why, why_len);
    if (rc) return rc;
    char want = verify_choice_answer(in->answer, strlen(in->answer));
    if (!want) return check_choice(in->answer, NULL, why, why_len);
    const char *c = str_or_empty(in->completion);
    size_t      st, len;
    verify_answer_span(c, strlen(c), &st, &len);
    return score_correct(out, verify_choice(c + st, len) == want);
}

static int score_boxed(const ScoreInput *in, const void *opts, ScoreResult *out, char *why,
                       size_t why_len)
{
    int rc = need_answer("boxed", in, why, why_len);
    if (rc) return rc;
    const char *c = str_or_empty(in->completion);
    size_t      st, len;
    bool        ok = verify_boxed(c, strlen(c), &st, &len) &&
              verify_boxed_match(c + st, len, in->answer, strlen(in->answer));
    return score_correct(out, ok);
}

/* ---- regex -------------------------------------------------------------- */

/* The pattern of a record: meta "regex" when present (copied into buf),
 * else the answer. */
static int regex_pattern(const char *answer, const char *meta, char *buf, size_t cap,
                         const char **pattern, char *why, size_t why_len)
{
    json_t *root;
    int     rc = meta_parse("regex", meta, &root, why, why_len);
    if (rc) return rc;
    json_t *v = root ? json_object_get(root, "regex") : NULL;
    *pattern = str_or_empty(answer);
    if (v && !json_is_string(v)) {
        snprintf(why, why_len, "regex: meta \"regex\" is not a string");
        rc = ERR_ARG;
    } else if (v) {
        if (json_string_length(v) >= cap) {
            snprintf(why, why_len, "regex: pattern of %zu bytes, expected 1..%d",
                     json_string_length(v), VERIFY_REGEX_MAX_PATTERN);
            rc = ERR_ARG;
        } else {
            snprintf(buf, cap, "%s", json_string_value(v));
            *pattern = buf;
        }
    }
    json_decref(root);
    return rc;
}

static int check_regex(const char *answer, const char *meta, char *why, size_t why_len)
{
    char        buf[VERIFY_REGEX_MAX_PATTERN + 1];
    const char *pattern;
    int         rc = regex_pattern(answer, meta, buf, sizeof buf, &pattern, why, why_len);
    return rc ? rc : verify_regex_check(pattern, why, why_len);
}

static int score_regex(const ScoreInput *in, const void *opts, ScoreResult *out, char *why,
                       size_t why_len)
{
    char        buf[VERIFY_REGEX_MAX_PATTERN + 1];
    const char *pattern;
    bool        match = false;
    int rc = regex_pattern(in->answer, in->meta_json, buf, sizeof buf, &pattern, why, why_len);
    if (!rc) rc = verify_regex(pattern, str_or_empty(in->completion), &match, why, why_len);
    return rc ? rc : score_correct(out, match);
}

/* ---- formats ------------------------------------------------------------ */

static int score_format(ScoreResult *out, bool ok)
{
    add_component(out, "format", ok ? 1.0f : 0.0f);
    out->reward = ok ? 1.0f : 0.0f;
    return 0;
}

static int score_answer_tag(const ScoreInput *in, const void *opts, ScoreResult *out, char *why,
                            size_t why_len)
{
    const char *c = str_or_empty(in->completion);
    return score_format(out, !in->is_truncated && verify_format_answer_tag(c, strlen(c)));
}

static int score_think(const ScoreInput *in, const void *opts, ScoreResult *out, char *why,
                       size_t why_len)
{
    const char *c = str_or_empty(in->completion);
    return score_format(out, !in->is_truncated && verify_format_think(c, strlen(c)));
}

/* ---- code (the reward server's) ----------------------------------------- */

/* The metadata reward_server/sandbox_scorer.h reads: "tests" a string, or
 * an array of 1..SCORE_CODE_MAX_TESTS strings; "entry_point" a string, with
 * string tests only; "prefix" a string; "stop" an array of strings. */
#define SCORE_CODE_MAX_TESTS 256
static int check_code(const char *answer, const char *meta, char *why, size_t why_len)
{
    json_t *root;
    int     rc = meta_parse("code", meta, &root, why, why_len);
    if (rc) return rc;
    json_t     *t = root ? json_object_get(root, "tests") : NULL;
    json_t     *e = root ? json_object_get(root, "entry_point") : NULL;
    json_t     *p = root ? json_object_get(root, "prefix") : NULL;
    json_t     *st = root ? json_object_get(root, "stop") : NULL;
    const char *bad = NULL;
    if (!json_is_string(t) && !json_is_array(t))
        bad = "meta has no \"tests\" (a string, or an array of strings: the unit tests)";
    else if (json_is_string(t) && json_string_length(t) == 0)
        bad = "meta \"tests\" is empty";
    else if (json_is_array(t) &&
             (json_array_size(t) == 0 || json_array_size(t) > SCORE_CODE_MAX_TESTS))
        bad = "meta \"tests\" is an array of no tests, or too many";
    else if (e && (!json_is_string(e) || !json_is_string(t)))
        bad = "meta \"entry_point\" is not a string, or goes with an array of tests";
    else if (p && !json_is_string(p))
        bad = "meta \"prefix\" is not a string";
    else if (st && !json_is_array(st))
        bad = "meta \"stop\" is not an array of strings";
    for (size_t k = 0; !bad && json_is_array(t) && k < json_array_size(t); k++)
        if (!json_is_string(json_array_get(t, k))) bad = "meta \"tests\" holds a non-string";
    for (size_t k = 0; !bad && json_is_array(st) && k < json_array_size(st); k++)
        if (!json_is_string(json_array_get(st, k))) bad = "meta \"stop\" holds a non-string";
    if (bad) {
        snprintf(why, why_len, "code: %s", bad);
        rc = ERR_ARG;
    }
    json_decref(root);
    return rc;
}

/* ---- answers, for voting ------------------------------------------------ */

/* Copies s[0..n) into out, cut to cap - 1 bytes. */
static bool put_key(const char *s, size_t n, char *out, size_t cap)
{
    if (n >= cap) n = cap - 1;
    memcpy(out, s, n);
    out[n] = '\0';
    return true;
}

static bool extract_arith(const ScoreInput *in, char *out, size_t cap)
{
    /* As score_arith reads it: a truncated completion has no answer. */
    if (in->is_truncated) return false;
    const char *c = str_or_empty(in->completion);
    return put_key(c, strlen(c), out, cap);
}

static bool extract_arith_chat(const ScoreInput *in, char *out, size_t cap)
{
    long long v;
    if (!chat_task_extract(str_or_empty(in->completion), &v)) return false;
    snprintf(out, cap, "%lld", v);
    return true;
}

/* The answer span of the completion (verify_answer_span). */
static void answer_span(const ScoreInput *in, const char **s, size_t *n)
{
    const char *c = str_or_empty(in->completion);
    size_t      st;
    verify_answer_span(c, strlen(c), &st, n);
    *s = c + st;
}

static bool extract_exact(const ScoreInput *in, char *out, size_t cap)
{
    const char *s;
    size_t      n;
    answer_span(in, &s, &n);
    return verify_normalize(s, n, out, cap) > 0;
}

static bool extract_number(const ScoreInput *in, char *out, size_t cap)
{
    const char *s;
    size_t      n;
    double      v;
    answer_span(in, &s, &n);
    if (!verify_last_number(s, n, &v)) return false;
    snprintf(out, cap, "%.17g", v == 0 ? 0.0 : v); /* -0 and 0 are one answer */
    return true;
}

static bool extract_choice(const ScoreInput *in, char *out, size_t cap)
{
    const char *s;
    size_t      n;
    answer_span(in, &s, &n);
    char c = verify_choice(s, n);
    if (!c) return false;
    return put_key(&c, 1, out, cap);
}

static bool extract_boxed(const ScoreInput *in, char *out, size_t cap)
{
    const char *c = str_or_empty(in->completion);
    size_t      st, n, k = 0;
    if (!verify_boxed(c, strlen(c), &st, &n)) return false;
    for (size_t i = 0; i < n && k + 1 < cap; i++)
        if (c[st + i] != ' ' && c[st + i] != '\t' && c[st + i] != '\n' && c[st + i] != '\r')
            out[k++] = c[st + i];
    out[k] = '\0';
    return true;
}

/* ---- The table ---------------------------------------------------------- */

static const ScoreDef k_builtins[] = {
    {"arith", score_arith, NULL, check_has_answer,
     "char task: the completion is exactly the answer (+ format bonus)", extract_arith},
    {CHAT_TASK_NAME, score_arith_chat, NULL, check_integer_answer,
     "chat task: the last integer is the answer, x1.2 when just the number", extract_arith_chat},
    {"exact", score_exact, NULL, check_has_answer,
     "the answer text equals the answer after normalisation", extract_exact},
    {"number", score_number, NULL, check_number,
     "the last number equals the answer within meta rel_tol/abs_tol", extract_number},
    {"choice", score_choice, NULL, check_choice, "the chosen letter A-E is the answer's",
     extract_choice},
    {"boxed", score_boxed, NULL, check_has_answer, "the last \\boxed{...} matches the answer",
     extract_boxed},
    {"regex", score_regex, NULL, check_regex,
     "the completion matches meta regex (else the answer), POSIX ERE", NULL},
    {"format_answer_tag", score_answer_tag, NULL, NULL,
     "one <answer>...</answer> block, nothing after it", NULL},
    {"format_think", score_think, NULL, NULL, "<think>...</think> then <answer>...</answer>", NULL},
    {"code", NULL, NULL, check_code, "unit tests in meta run in the reward server's sandbox", NULL},
    {"gold_arith", score_gold_arith, NULL, check_integer_answer,
     "the preference task's hidden judge: exp(-|x-a|/(1+|a|/10)), -1 if not an integer",
     extract_arith},
    {"gold_chat", score_gold_chat, NULL, check_integer_answer,
     "the chat preference task's judge: gold_arith of the last integer, halved over two lines",
     extract_arith_chat},
    {"rm", NULL, NULL, NULL, "the reward model the reward server hosts (--reward-model)", NULL},
};

int score_builtin_count(void)
{
    return (int)(sizeof k_builtins / sizeof k_builtins[0]);
}

const ScoreDef *score_builtin_at(int i)
{
    CHECK(i >= 0 && i < score_builtin_count());
    return &k_builtins[i];
}

const ScoreDef *score_builtin(const void *ctx, const char *name)
{
    (void)ctx;
    if (!name) return NULL;
    for (int i = 0; i < score_builtin_count(); i++)
        if (!strcmp(k_builtins[i].name, name)) return &k_builtins[i];
    return NULL;
}

bool score_name_ok(const char *name)
{
    size_t n = name ? strnlen(name, SCORE_NAME_MAX) : 0;
    if (n == 0 || n >= SCORE_NAME_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* ---- Specs -------------------------------------------------------------- */

static bool is_sp(char c)
{
    return c == ' ' || c == '\t';
}

/* Copies s[0..n) without surrounding blanks into out (cap bytes); false if
 * it does not fit. */
static bool trimmed(const char *s, size_t n, char *out, size_t cap)
{
    while (n > 0 && is_sp(s[0])) s++, n--;
    while (n > 0 && is_sp(s[n - 1])) n--;
    if (n >= cap) return false;
    memcpy(out, s, n);
    out[n] = '\0';
    return true;
}

static void known_names(ScoreLookupFn lookup, char *buf, size_t cap)
{
    buf[0] = '\0';
    if (lookup != score_builtin) return;
    size_t used = 0;
    for (int i = 0; i < score_builtin_count() && used < cap; i++) {
        int w = snprintf(buf + used, cap - used, "%s%s", i ? ", " : "", k_builtins[i].name);
        if (w < 0) break;
        used += (size_t)w;
    }
}

int score_spec_parse(const char *text, ScoreLookupFn lookup, const void *ctx, ScoreSpec *out,
                     char *why, size_t why_len)
{
    memset(out, 0, sizeof *out);
    size_t n = text ? strnlen(text, SCORE_SPEC_MAX) : 0;
    if (n == 0 || n >= SCORE_SPEC_MAX) {
        snprintf(why, why_len, "scorer spec of %s bytes, expected 1..%d", n ? "too many" : "0",
                 SCORE_SPEC_MAX - 1);
        return ERR_ARG;
    }
    bool any_weight = false;
    for (const char *p = text; *p;) {
        const char *comma = strchr(p, ',');
        size_t      tn = comma ? (size_t)(comma - p) : strlen(p);
        const char *colon = memchr(p, ':', tn);
        char        name[SCORE_SPEC_MAX], weight[SCORE_SPEC_MAX];
        size_t      nn = colon ? (size_t)(colon - p) : tn;
        trimmed(p, nn, name, sizeof name);
        if (out->n_terms == SCORE_MAX_TERMS) {
            snprintf(why, why_len, "scorer spec '%s': more than %d terms", text, SCORE_MAX_TERMS);
            return ERR_ARG;
        }
        if (!score_name_ok(name)) {
            snprintf(why, why_len,
                     "scorer spec '%s': term %d: '%s' is not a scorer name (1..%d bytes of "
                     "[a-z0-9_-]; spec = name[:weight][,name[:weight]]...)",
                     text, out->n_terms + 1, name, SCORE_NAME_MAX - 1);
            return ERR_ARG;
        }
        const ScoreDef *def = lookup(ctx, name);
        if (!def) {
            char names[400];
            known_names(lookup, names, sizeof names);
            snprintf(why, why_len, "scorer spec '%s': unknown scorer '%s'%s%s%s", text, name,
                     names[0] ? " (known: " : "", names, names[0] ? ")" : "");
            return ERR_ARG;
        }
        for (int k = 0; k < out->n_terms; k++) {
            if (out->terms[k].def == def) {
                snprintf(why, why_len, "scorer spec '%s': scorer '%s' appears twice", text, name);
                return ERR_ARG;
            }
        }
        float w = 1.0f;
        if (colon) {
            any_weight = true;
            trimmed(colon + 1, tn - nn - 1, weight, sizeof weight);
            char  *end = NULL;
            double v = strtod(weight, &end);
            if (!weight[0] || *end || !isfinite(v) || fabs(v) > SCORE_WEIGHT_MAX) {
                snprintf(why, why_len,
                         "scorer spec '%s': weight '%s' of '%s': expected a number within +-%g",
                         text, weight, name, SCORE_WEIGHT_MAX);
                return ERR_ARG;
            }
            w = (float)v;
        }
        out->terms[out->n_terms++] = (ScoreTerm){def, w};
        if (!comma) break;
        p = comma + 1;
        if (!*p) {
            snprintf(why, why_len, "scorer spec '%s': ends with ','", text);
            return ERR_ARG;
        }
    }
    bool rewarded = false;
    for (int k = 0; k < out->n_terms; k++) rewarded |= out->terms[k].weight != 0.0f;
    if (!rewarded) {
        snprintf(why, why_len, "scorer spec '%s': every weight is 0, nothing would be rewarded",
                 text);
        return ERR_ARG;
    }
    out->is_bare = out->n_terms == 1 && !any_weight;
    return 0;
}

bool score_spec_is_local(const ScoreSpec *s)
{
    for (int k = 0; k < s->n_terms; k++)
        if (!s->terms[k].def->fn) return false;
    return true;
}

int score_spec_check_record(const ScoreSpec *s, const char *answer, const char *meta, char *why,
                            size_t why_len)
{
    for (int k = 0; k < s->n_terms; k++) {
        const ScoreDef *d = s->terms[k].def;
        char            w[200];
        if (d->check && d->check(str_or_empty(answer), str_or_empty(meta), w, sizeof w)) {
            snprintf(why, why_len, "scorer '%s': %s", d->name, w);
            return ERR_ARG;
        }
    }
    return 0;
}

/* What every scorer's result must be: finite, with named components. */
static int check_result(const ScoreDef *def, const ScoreResult *out, char *why, size_t why_len)
{
    if (out->n_components < 0 || out->n_components > SCORE_MAX_COMPONENTS) {
        snprintf(why, why_len, "scorer '%s' returned %d components, expected 0..%d", def->name,
                 out->n_components, SCORE_MAX_COMPONENTS);
        return ERR_FORMAT;
    }
    if (!isfinite(out->reward)) {
        snprintf(why, why_len, "scorer '%s' returned reward %g", def->name, out->reward);
        return ERR_NONFINITE;
    }
    for (int i = 0; i < out->n_components; i++) {
        const ScoreComponent *c = &out->components[i];
        if (!c->name[0] || strnlen(c->name, SCORE_NAME_MAX) == SCORE_NAME_MAX) {
            snprintf(why, why_len, "scorer '%s' component %d has no name", def->name, i);
            return ERR_FORMAT;
        }
        if (!isfinite(c->value)) {
            snprintf(why, why_len, "scorer '%s' component '%s' = %g", def->name, c->name, c->value);
            return ERR_NONFINITE;
        }
    }
    return 0;
}

int score_run(const ScoreDef *def, const ScoreInput *in, ScoreResult *out, char *why,
              size_t why_len)
{
    memset(out, 0, sizeof *out);
    if (!def->fn) {
        snprintf(why, why_len, "scorer '%s' runs only in the reward server", def->name);
        return ERR_UNSUPPORTED;
    }
    int rc = def->fn(in, def->opts, out, why, why_len);
    return rc ? rc : check_result(def, out, why, why_len);
}

/* Term k of s into out: the given result (checked), else a run. */
static int run_term(const ScoreSpec *s, int k, const ScoreInput *in,
                    const ScoreResult *const *given, ScoreResult *out, char *why, size_t why_len)
{
    const ScoreDef *def = s->terms[k].def;
    if (!given || !given[k]) return score_run(def, in, out, why, why_len);
    *out = *given[k];
    return check_result(def, out, why, why_len);
}

int score_spec_run(const ScoreSpec *s, const ScoreInput *in, ScoreResult *out, char *why,
                   size_t why_len)
{
    return score_spec_run_given(s, in, NULL, out, why, why_len);
}

int score_spec_run_given(const ScoreSpec *s, const ScoreInput *in, const ScoreResult *const *given,
                         ScoreResult *out, char *why, size_t why_len)
{
    CHECK(s->n_terms >= 1 && s->n_terms <= SCORE_MAX_TERMS);
    if (s->is_bare) return run_term(s, 0, in, given, out, why, why_len);
    ScoreResult part;
    double      total = 0;
    memset(out, 0, sizeof *out);
    for (int k = 0; k < s->n_terms; k++) {
        int rc = run_term(s, k, in, given, &part, why, why_len);
        if (rc) return rc;
        total += (double)s->terms[k].weight * part.reward;
        add_component(out, s->terms[k].def->name, part.reward);
    }
    out->reward = (float)total;
    if (!isfinite(out->reward)) {
        snprintf(why, why_len, "scorer spec: the weighted sum is %g", total);
        return ERR_NONFINITE;
    }
    return 0;
}

bool score_is_correct(const ScoreResult *r)
{
    for (int i = 0; i < r->n_components; i++)
        if (!strcmp(r->components[i].name, "correct")) return r->components[i].value >= 0.5f;
    return r->n_components > 0 && r->components[0].value >= 0.5f;
}

const ScoreDef *score_spec_extractor(const ScoreSpec *s)
{
    for (int k = 0; k < s->n_terms; k++)
        if (s->terms[k].def->extract) return s->terms[k].def;
    return NULL;
}

bool score_spec_extract(const ScoreSpec *s, const ScoreInput *in, char *out, size_t cap)
{
    CHECK(cap > 0);
    out[0] = '\0';
    const ScoreDef *d = score_spec_extractor(s);
    return d && d->extract(in, out, cap);
}
