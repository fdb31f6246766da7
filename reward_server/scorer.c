#include "tests/test_list.h"
#include "reward_server/scorer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
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
    if (!name || !name[0]) name = SCORER_DEFAULT;
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

int scorer_selftest(bool verbose)
{
    int             fails = 0;
    ScorerArithOpts bonus = {.format_bonus = 0.1f};
    ScorerRegistry *r = scorer_registry_new();
    ScorerRegistry *rb = scorer_registry_new();
    if (scorer_register_builtins(r, NULL) || scorer_register_builtins(rb, &bonus)) fails++;

    /* Worked examples: completion, answer, truncated -> reward, correct, format
     * without and with a 0.1 format bonus. */
    struct {
        const char *completion, *answer;
        bool        is_truncated;
        float       reward, correct, format, reward_bonus;
    } ex[] = {
        {"82", "82", false, 1.0f, 1.0f, 1.0f, 1.1f},  /* right */
        {"83", "82", false, 0.0f, 0.0f, 1.0f, 0.1f},  /* wrong but an integer */
        {"-2", "-2", false, 1.0f, 1.0f, 1.0f, 1.1f},  /* negative answer */
        {"8a", "82", false, 0.0f, 0.0f, 0.0f, 0.0f},  /* not an integer */
        {"", "82", false, 0.0f, 0.0f, 0.0f, 0.0f},    /* stopped at once */
        {"82", "82", true, 0.0f, 0.0f, 0.0f, 0.0f},   /* cut off by the length cap */
        {"820", "82", false, 0.0f, 0.0f, 1.0f, 0.1f}, /* a prefix is not enough */
        {" 82", "82", false, 0.0f, 0.0f, 0.0f, 0.0f}, /* exact match, no trimming */
    };
    const Scorer *s = scorer_find(r, "arith"), *sb = scorer_find(rb, "arith");
    if (!s || !sb || scorer_find(r, "") != s) {
        printf("  scorer: arith not found\n");
        fails++;
        goto out;
    }
    for (size_t i = 0; i < sizeof ex / sizeof ex[0]; i++) {
        ScorerInput  in = {.prompt = "40+42=",
                           .completion = ex[i].completion,
                           .answer = ex[i].answer,
                           .is_truncated = ex[i].is_truncated};
        ScorerResult res, resb;
        char         why[128];
        int          rc = scorer_run(s, &in, &res, why, sizeof why);
        int          rcb = scorer_run(sb, &in, &resb, why, sizeof why);
        bool ok = rc == 0 && rcb == 0 && res.n_components == 2 && res.reward == ex[i].reward &&
                  !strcmp(res.components[0].name, "correct") &&
                  res.components[0].value == ex[i].correct &&
                  !strcmp(res.components[1].name, "format") &&
                  res.components[1].value == ex[i].format &&
                  fabsf(resb.reward - ex[i].reward_bonus) < 1e-6f;
        if (verbose || !ok)
            printf("  arith %-5s answer %-3s %-9s -> reward %.2f (bonus %.2f) correct %.0f "
                   "format %.0f %s\n",
                   ex[i].completion, ex[i].answer, ex[i].is_truncated ? "truncated" : "stopped",
                   res.reward, resb.reward, res.components[0].value, res.components[1].value,
                   ok ? "ok" : "WRONG");
        if (!ok) fails++;
    }
    {
        /* arith_chat: tolerant of surrounding words; form earns only with the answer. */
        const Scorer *sc = scorer_find(r, CHAT_TASK_NAME);
        struct {
            const char *completion;
            bool        is_truncated;
            float       reward, correct, format;
        } cx[] = {
            {"82", false, 1.2f, 1, 1},  {"The answer is 82.", false, 1.0f, 1, 0},
            {"83.", false, 0.0f, 0, 1}, {"I think 37 + 45 is", false, 0.0f, 0, 0},
            {"82", true, 1.0f, 1, 0},   {"82 + 1 = 83 and", true, 0.0f, 0, 0},
        };
        if (!sc) fails++;
        for (size_t i = 0; sc && i < sizeof cx / sizeof cx[0]; i++) {
            ScorerInput  in = {.prompt = "What is 37 + 45? Reply with the number only.",
                               .completion = cx[i].completion,
                               .answer = "82",
                               .is_truncated = cx[i].is_truncated};
            ScorerResult res;
            char         why[128];
            bool ok = scorer_run(sc, &in, &res, why, sizeof why) == 0 && res.n_components == 2 &&
                      fabsf(res.reward - cx[i].reward) < 1e-6f &&
                      !strcmp(res.components[0].name, "correct") &&
                      res.components[0].value == cx[i].correct &&
                      !strcmp(res.components[1].name, "format") &&
                      res.components[1].value == cx[i].format;
            if (verbose || !ok)
                printf("  arith_chat %-20s %-9s -> reward %.2f %s\n", cx[i].completion,
                       cx[i].is_truncated ? "truncated" : "stopped", res.reward,
                       ok ? "ok" : "WRONG");
            if (!ok) fails++;
        }
    }
    {
        /* No answer: the prompt cannot be verified. */
        ScorerInput  in = {.prompt = "1+1=", .completion = "2", .answer = ""};
        ScorerResult res;
        char         why[128] = "";
        if (scorer_run(s, &in, &res, why, sizeof why) != ERR_ARG || !strstr(why, "no reference"))
            fails++;
    }
    /* Registry rules; the refusals are logged, which the capture checks. */
    fileio_capture_begin();
    if (scorer_find(r, "nope") != NULL) fails++;
    if (scorer_register(r, "arith", scorer_arith, NULL) != ERR_ARG) fails++;
    if (scorer_register(r, "Bad Name", scorer_arith, NULL) != ERR_ARG) fails++;
    if (scorer_register(r, "", scorer_arith, NULL) != ERR_ARG) fails++;
    if (scorer_register(r, "arith-2", scorer_arith, &bonus) != 0) fails++;
    for (int i = 3; i < SCORER_MAX; i++) {
        char name[16];
        snprintf(name, sizeof name, "s%d", i);
        if (scorer_register(r, name, scorer_arith, NULL) != 0) fails++;
    }
    if (scorer_register(r, "one-too-many", scorer_arith, NULL) != ERR_ARG) fails++;
    char *log = fileio_capture_end(verbose);
    if (!strstr(log, "'arith' is already registered") || !strstr(log, "registry full")) fails++;
    free(log);
    char list[512];
    scorer_list(r, list, sizeof list);
    if (strncmp(list, "arith,arith_chat,arith-2,s3", 27) != 0) fails++;
    if (verbose) printf("  scorers: %s\n", list);
out:
    scorer_registry_free(&r);
    scorer_registry_free(&rb);
    if (r || rb) fails++;
    return fails ? 1 : 0;
}
