#include "reward_server/scorer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/log.h"

struct Scorer {
    ScoreDef      def; /* def.name points at name; def.fn NULL for a group scorer */
    char          name[SCORER_NAME_MAX];
    ScorerGroupFn group_fn;   /* a group scorer's, else NULL */
    const void   *group_opts; /* its opts */
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

/* Adds fn (or group_fn) under name. */
static int add(ScorerRegistry *r, const char *name, ScorerFn fn, ScorerGroupFn group_fn,
               const void *opts)
{
    if (!score_name_ok(name)) {
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
    /* A built-in's name (one without a function here, such as "code") keeps
     * its record check, description and answer extraction. */
    const ScoreDef *b = score_builtin(NULL, name);
    s->def = (ScoreDef){.name = s->name,
                        .fn = fn,
                        .opts = fn ? opts : NULL,
                        .check = b ? b->check : NULL,
                        .about = b ? b->about : "the reward server's own",
                        .extract = b ? b->extract : NULL};
    s->group_fn = group_fn;
    s->group_opts = group_fn ? opts : NULL;
    return 0;
}

int scorer_register(ScorerRegistry *r, const char *name, ScorerFn fn, const void *opts)
{
    CHECK(r && fn);
    return add(r, name, fn, NULL, opts);
}

int scorer_register_group(ScorerRegistry *r, const char *name, ScorerGroupFn fn, const void *opts)
{
    CHECK(r && fn);
    return add(r, name, NULL, fn, opts);
}

ScorerGroupFn scorer_group_fn(const ScorerRegistry *r, const ScoreDef *d, const void **opts)
{
    for (int i = 0; i < r->n; i++) {
        if (&r->scorers[i].def != d) continue;
        if (opts) *opts = r->scorers[i].group_opts;
        return r->scorers[i].group_fn;
    }
    return NULL;
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
    return score_run(&s->def, in, out, why, why_len);
}

const ScoreDef *scorer_lookup(const void *ctx, const char *name)
{
    const Scorer *s = scorer_find(ctx, name);
    return s ? &s->def : NULL;
}

int scorer_resolve(const ScorerRegistry *r, const char *task, ScoreSpec *spec, char *why,
                   size_t why_len)
{
    char inner[200];
    int  rc = score_spec_parse(task, scorer_lookup, r, spec, inner, sizeof inner);
    if (rc == 0) return 0;
    char names[256];
    scorer_list(r, names, sizeof names);
    snprintf(why, why_len, "%s (have %s)", inner, names);
    return rc;
}

int scorer_register_builtins(ScorerRegistry *r, const ScorerArithOpts *arith_opts)
{
    int rc = 0;
    for (int i = 0; i < score_builtin_count() && !rc; i++) {
        const ScoreDef *d = score_builtin_at(i);
        /* One without a function here ("code") is the server's to register. */
        if (!d->fn) continue;
        rc = scorer_register(r, d->name, d->fn, !strcmp(d->name, "arith") ? arith_opts : d->opts);
    }
    return rc;
}
