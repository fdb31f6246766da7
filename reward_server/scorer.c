#include "reward_server/scorer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "common/tasks/chat_task.h"
#include "common/tasks/task.h"

struct Scorer {
    char        name[SCORER_NAME_MAX];
    ScorerFn    fn;
    const void *opts; /* borrowed */
};

struct ScorerRegistry {
    Scorer scorers[SCORER_MAX];
    int    n;
};

ScorerRegistry *scorer_registry_new(void)
{
    return xcalloc(1, sizeof(ScorerRegistry));
}

void scorer_registry_free(ScorerRegistry **r)
{
    if (!r || !*r) return;
    free(*r);
    *r = NULL;
}

static bool name_ok(const char *name)
{
    size_t n = name ? strnlen(name, SCORER_NAME_MAX) : 0;
    if (n == 0 || n >= SCORER_NAME_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return false;
    }
    return true;
}

int scorer_register(ScorerRegistry *r, const char *name, ScorerFn fn, const void *opts)
{
    CHECK(r && fn);
    if (!name_ok(name)) {
        log_error("scorer_register: name '%s': expected 1..%d bytes of [a-z0-9_-]",
                  name ? name : "(null)", SCORER_NAME_MAX - 1);
        return ERR_ARG;
    }
    if (scorer_find(r, name)) {
        log_error("scorer_register: name '%s' is already registered", name);
        return ERR_ARG;
    }
    if (r->n == SCORER_MAX) {
        log_error("scorer_register: '%s': registry full (%d scorers)", name, SCORER_MAX);
        return ERR_ARG;
    }
    Scorer *s = &r->scorers[r->n++];
    snprintf(s->name, sizeof s->name, "%s", name);
    s->fn = fn;
    s->opts = opts;
    return 0;
}

const Scorer *scorer_find(const ScorerRegistry *r, const char *name)
{
    if (!name || !name[0]) return NULL; /* no default: a task must be named */
    for (int i = 0; i < r->n; i++)
        if (!strcmp(r->scorers[i].name, name)) return &r->scorers[i];
    return NULL;
}

const char *scorer_name(const Scorer *s)
{
    return s->name;
}

void scorer_list(const ScorerRegistry *r, char *buf, size_t cap)
{
    CHECK(buf && cap > 0);
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < r->n && used < cap; i++) {
        int w = snprintf(buf + used, cap - used, "%s%s", i ? "," : "", r->scorers[i].name);
        if (w < 0) break;
        used += (size_t)w;
    }
}

int scorer_run(const Scorer *s, const ScorerInput *in, ScorerResult *out, char *why, size_t why_len)
{
    memset(out, 0, sizeof *out);
    int rc = s->fn(in, s->opts, out, why, why_len);
    if (rc) return rc;
    if (out->n_components < 0 || out->n_components > SCORER_MAX_COMPONENTS) {
        snprintf(why, why_len, "scorer '%s' returned %d components, expected 0..%d", s->name,
                 out->n_components, SCORER_MAX_COMPONENTS);
        return ERR_FORMAT;
    }
    if (!isfinite(out->reward)) {
        snprintf(why, why_len, "scorer '%s' returned reward %g", s->name, out->reward);
        return ERR_NONFINITE;
    }
    for (int i = 0; i < out->n_components; i++) {
        const ScorerComponent *c = &out->components[i];
        if (!c->name[0] || strnlen(c->name, SCORER_NAME_MAX) == SCORER_NAME_MAX) {
            snprintf(why, why_len, "scorer '%s' component %d has no name", s->name, i);
            return ERR_FORMAT;
        }
        if (!isfinite(c->value)) {
            snprintf(why, why_len, "scorer '%s' component '%s' = %g", s->name, c->name, c->value);
            return ERR_NONFINITE;
        }
    }
    return 0;
}

static void add_component(ScorerResult *out, const char *name, float value)
{
    CHECK(out->n_components < SCORER_MAX_COMPONENTS);
    ScorerComponent *c = &out->components[out->n_components++];
    snprintf(c->name, sizeof c->name, "%s", name);
    c->value = value;
}

int scorer_arith(const ScorerInput *in, const void *opts, ScorerResult *out, char *why,
                 size_t why_len)
{
    const ScorerArithOpts *o = opts;
    ScorerArithOpts        def = SCORER_ARITH_DEFAULTS;
    if (!o) o = &def;
    if (!in->answer || !in->answer[0]) {
        snprintf(why, why_len, "arith: prompt '%.40s' has no reference answer",
                 in->prompt ? in->prompt : "");
        return ERR_ARG;
    }
    TaskScore ts = {0};
    /* A completion cut off by the length cap never ended its answer: even if
     * its prefix equals the answer it is not a correct, well-formed one. */
    if (!in->is_truncated) task_score(in->completion ? in->completion : "", in->answer, &ts);
    add_component(out, "correct", ts.correct);
    add_component(out, "format", ts.format);
    out->reward = ts.correct + o->format_bonus * ts.format;
    return 0;
}

int scorer_arith_chat(const ScorerInput *in, const void *opts, ScorerResult *out, char *why,
                      size_t why_len)
{
    if (!in->answer || !in->answer[0]) {
        snprintf(why, why_len, "arith_chat: prompt '%.40s' has no reference answer",
                 in->prompt ? in->prompt : "");
        return ERR_ARG;
    }
    ChatTaskScore cs;
    chat_task_score(in->completion ? in->completion : "", in->answer, in->is_truncated, &cs);
    add_component(out, "correct", cs.correct);
    add_component(out, "format", cs.format);
    out->reward = chat_task_reward(&cs);
    return 0;
}

int scorer_register_builtins(ScorerRegistry *r, const ScorerArithOpts *arith_opts)
{
    int rc = scorer_register(r, "arith", scorer_arith, arith_opts);
    return rc ? rc : scorer_register(r, CHAT_TASK_NAME, scorer_arith_chat, NULL);
}
