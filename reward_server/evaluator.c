#include "reward_server/evaluator.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/log.h"
#include "common/base/par.h"
#include "common/base/progress.h"
#include "common/formats/policy.h"
#include "common/nn/kern.h"
#include "reward_server/eval_report.h"
#include "reward_server/scorer.h"

const char *const evaluator_template_names[] = {"chat", "raw", NULL};

/* Everything one run holds, freed in reverse order by ev_free. */
typedef struct {
    const EvaluatorConfig *cfg;
    Policy                 pol; /* --ckpt and/or --model */
    ScorerRegistry        *scorers;
    SandboxScorer         *code;
    ScoreSpec              spec; /* --scorer */
    Dataset               *data;
    TaskConfig             task;
    EvalSource             src;
    EvalReport            *report;
    FILE                  *completions;
    Progress               progress;
    uint64_t               total; /* samples expected */
    uint64_t               done, correct, tokens;
    int                    rc_io; /* a completions write that failed */
} Ev;

/* ---- loading ------------------------------------------------------------ */

static int load_scorers(Ev *e)
{
    const EvaluatorConfig *c = e->cfg;
    e->scorers = scorer_registry_new();
    int rc = scorer_register_builtins(e->scorers, NULL);
    if (rc) return rc;
    if (c->code.sandbox.workers > 0) {
        e->code = sandbox_scorer_new(&c->code, NULL);
        if (!e->code && c->code.is_required) return ERR_IO;
        if (!e->code)
            log_warn("no \"code\" scorer: its sandbox did not start (above); code prompts are "
                     "skipped");
        else if ((rc = scorer_register(e->scorers, SANDBOX_SCORER_NAME, sandbox_scorer_run,
                                       e->code)))
            return rc;
    }
    if (c->scorer) {
        char why[400];
        if ((rc = scorer_resolve(e->scorers, c->scorer, &e->spec, why, sizeof why))) {
            log_error("--scorer '%s': %s", c->scorer, why);
            return rc;
        }
        if (!score_spec_is_local(&e->spec)) {
            log_error("--scorer '%s': the code scorer's sandbox did not start", c->scorer);
            return ERR_UNSUPPORTED;
        }
    }
    return 0;
}

static int open_prompts(Ev *e)
{
    const EvaluatorConfig *c = e->cfg;
    uint64_t               limit = c->limit > 0 ? (uint64_t)c->limit : UINT64_MAX;
    if (!c->data) {
        e->task = e->pol.bpe ? CHAT_TASK_DEFAULTS : TASK_DEFAULTS;
        if (c->arith_digits > 0) e->task.max_digits = c->arith_digits;
        e->src = (EvalSource){.kind = e->pol.bpe ? EVAL_SRC_CHAT : EVAL_SRC_ARITH,
                              .task = &e->task,
                              .task_seed = c->arith_seed,
                              .n = (uint64_t)c->arith_n < limit ? (uint64_t)c->arith_n : limit};
        return 0;
    }
    int         max_seq = model_config(e->pol.m)->max_seq_len;
    DatasetOpts o = {.tok = e->pol.tok,
                     .bpe = e->pol.bpe,
                     .is_raw = e->pol.bpe && c->tmpl == EVALUATOR_TEMPLATE_RAW,
                     .max_prompt_ids = max_seq > 1 ? max_seq - 1 : 1,
                     .default_task = c->task,
                     .lookup = scorer_lookup,
                     .lookup_ctx = e->scorers,
                     .max_bad_percent = c->data_max_bad};
    int         rc = dataset_open(c->data, &o, &e->data);
    if (rc) return rc;
    uint64_t n = dataset_size(e->data);
    e->src = (EvalSource){.kind = EVAL_SRC_DATASET, .data = e->data, .n = n < limit ? n : limit};
    return 0;
}

/* ---- the run ------------------------------------------------------------ */

static void write_completions(Ev *e, const EvalPrompt *p)
{
    for (int j = 0; j < p->n_samples && e->rc_io == 0; j++) {
        const EvalSample  *s = &p->samples[j];
        static const char *finish[] = {"?", "end_token", "length", "stop_string"};
        json_t            *o =
            json_pack("{s:s, s:i, s:f, s:b, s:b, s:o, s:s, s:i, s:s}", "id", p->label, "sample", j,
                      "reward", (double)s->reward, "correct", s->is_correct, "scored", s->is_scored,
                      "answer", s->has_answer ? json_string(s->answer) : json_null(), "finish",
                      finish[s->finish >= 1 && s->finish <= 3 ? s->finish : 0], "tokens",
                      s->n_tokens, "text", s->text ? s->text : "");
        /* Completions may hold any bytes; jansson refuses invalid UTF-8 (NULL). */
        if (!o)
            o = json_pack("{s:s, s:i, s:s}", "id", p->label, "sample", j, "text",
                          "(not valid UTF-8)");
        if (json_dumpf(o, e->completions, JSON_COMPACT) || fputc('\n', e->completions) == EOF) {
            log_error("--completions '%s': %s", e->cfg->completions, strerror(errno));
            e->rc_io = ERR_IO;
        }
        json_decref(o);
    }
}

static int on_prompt(void *ctx, const EvalPrompt *p)
{
    Ev *e = ctx;
    eval_report_add(e->report, p);
    for (int j = 0; j < p->n_samples; j++) {
        e->correct += p->samples[j].is_correct;
        e->tokens += (uint64_t)p->samples[j].n_tokens;
    }
    e->done += (uint64_t)p->n_samples;
    if (e->completions) write_completions(e, p);
    char   extra[160];
    double t = progress_elapsed(&e->progress);
    snprintf(extra, sizeof extra, "correct %.3f, %.1f tokens/s",
             (double)e->correct / (double)e->done, t > 0 ? (double)e->tokens / t : 0.0);
    progress_update(&e->progress, (int64_t)e->done, extra, false);
    return e->rc_io;
}

/* The escaped form of a stop string ("\n" for a newline), for the report. */
static void escape(const char *s, char *out, size_t cap)
{
    size_t k = 0;
    for (; *s && k + 5 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '\n')
            k += (size_t)snprintf(out + k, cap - k, "\\n");
        else if (ch == '\t')
            k += (size_t)snprintf(out + k, cap - k, "\\t");
        else if (ch == '\\')
            k += (size_t)snprintf(out + k, cap - k, "\\\\");
        else if (ch < 0x20)
            k += (size_t)snprintf(out + k, cap - k, "\\x%02x", ch);
        else
            out[k++] = (char)ch;
    }
    out[k] = '\0';
}

/* The run's settings, as the report records them. */
static json_t *settings_json(const Ev *e, const EvalStats *st, double wall_s)
{
    const EvaluatorConfig *c = e->cfg;
    json_t                *stops = json_array();
    for (int i = 0; i < c->n_stops; i++) json_array_append_new(stops, json_string(c->stops[i]));
    char   date[32];
    time_t now = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    json_t *s = json_pack(
        "{s:s, s:s?, s:s?, s:s, s:s?, s:s, s:s?, s:s?, s:i, s:{s:i, s:f, s:f, s:i, s:i, s:I, s:o}, "
        "s:i, s:i, s:I, s:I, s:f, s:f, s:s}",
        "program", "rlhf-eval", "ckpt", c->ckpt, "model", c->model, "tokenizer",
        e->pol.bpe ? "bpe" : "char", "template",
        e->pol.bpe && c->data ? evaluator_template_names[c->tmpl] : NULL, "decode_weights",
        kern_type_names[c->decode_weights], "data", c->data, "scorer", c->scorer, "limit", c->limit,
        "sampling", "n", c->n, "temperature", (double)c->sampler.temperature, "top_p",
        (double)c->sampler.top_p, "top_k", c->sampler.top_k, "max_new", c->max_new, "seed",
        (json_int_t)c->seed, "stop", stops, "batch", c->batch, "threads", c->threads, "skipped",
        (json_int_t)st->skipped, "tokens", (json_int_t)st->tokens, "wall_seconds", wall_s,
        "tokens_per_second", wall_s > 0 ? (double)st->tokens / wall_s : 0.0, "date", date);
    if (!c->data)
        json_object_set_new(s, "builtin",
                            json_pack("{s:s, s:i, s:i, s:I}", "task",
                                      e->pol.bpe ? CHAT_TASK_NAME : "arith", "problems", c->arith_n,
                                      "digits", e->task.max_digits, "seed",
                                      (json_int_t)c->arith_seed));
    if (c->task) json_object_set_new(s, "default_task", json_string(c->task));
    if (e->code)
        json_object_set_new(
            s, "code",
            json_pack("{s:i, s:i, s:i, s:i, s:s, s:b}", "workers", c->code.sandbox.workers,
                      "timeout_ms", c->code.sandbox.timeout_ms, "cpu_s", c->code.sandbox.cpu_s,
                      "mem_mb", c->code.sandbox.mem_mb, "isolation",
                      sandbox_iso_names[sandbox_isolation(sandbox_scorer_sandbox(e->code))],
                      "all_or_nothing", c->code.is_all_or_nothing));
    return s;
}

static int write_report(const Ev *e, const EvalStats *st, double wall_s)
{
    json_t *root = eval_report_json(e->report);
    json_object_set_new(root, "settings", settings_json(e, st, wall_s));
    char *text = json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!text) {
        log_error("--out '%s': the report does not serialise", e->cfg->out);
        return ERR_FORMAT;
    }
    size_t n = strlen(text);
    text[n] = '\n'; /* json_dumps' NUL becomes the last line's end */
    int rc = fileio_write_atomic(e->cfg->out, text, n + 1);
    free(text);
    if (rc) log_error("--out '%s': cannot write the report (%s)", e->cfg->out, err_str(rc));
    return rc;
}

static void print_header(const Ev *e, FILE *f)
{
    const EvaluatorConfig *c = e->cfg;
    fprintf(f, "rlhf-eval: %s%s%s on %s\n", c->ckpt ? c->ckpt : "",
            c->ckpt && c->model ? " + " : "", c->model ? c->model : "",
            c->data ? c->data : (e->pol.bpe ? "the chat arithmetic task" : "the arithmetic task"));
    fprintf(f, "  scorer %s; temperature %g, top-p %g, top-k %d, max-new %d, seed %llu\n",
            c->scorer ? c->scorer : "each prompt's task", (double)c->sampler.temperature,
            (double)c->sampler.top_p, c->sampler.top_k, c->max_new, (unsigned long long)c->seed);
    if (c->n_stops) {
        fprintf(f, "  stops");
        for (int i = 0; i < c->n_stops; i++) {
            char esc[4 * EVAL_STOP_MAX];
            escape(c->stops[i], esc, sizeof esc);
            fprintf(f, " \"%s\"", esc);
        }
        fprintf(f, "\n");
    }
}

static void ev_free(Ev *e)
{
    if (e->completions) fclose(e->completions);
    eval_report_free(&e->report);
    dataset_free(&e->data);
    scorer_registry_free(&e->scorers);
    sandbox_scorer_free(&e->code);
    policy_free(&e->pol);
}

/* Whether the report's directory takes files, asked before the run, not
 * after hours of it. */
static int check_out(const char *path)
{
    char *dir = xstrdup(path);
    char *slash = strrchr(dir, '/');
    if (slash) *(slash == dir ? slash + 1 : slash) = '\0';
    int rc = access(slash ? dir : ".", W_OK) ? ERR_IO : 0;
    if (rc)
        log_error("--out '%s': cannot write in '%s' (%s)", path, slash ? dir : ".",
                  strerror(errno));
    free(dir);
    return rc;
}

int evaluator_run(const EvaluatorConfig *c)
{
    Ev  e = {.cfg = c};
    int rc;
    if (c->out && (rc = check_out(c->out))) return rc;
    if (c->threads > 0) {
        /* Before the first kernel starts the pool, which also splits the products. */
        char n[16];
        snprintf(n, sizeof n, "%d", c->threads);
        setenv("RLHF_THREADS", n, 1);
    }
    PolicySpec ps = {.ckpt = c->ckpt, .model = c->model};
    if ((rc = policy_load(&ps, &e.pol)) ||
        (rc = model_set_decode_type(e.pol.m, (KernType)c->decode_weights)) ||
        (rc = load_scorers(&e)) || (rc = open_prompts(&e)))
        goto out;
    if (c->completions && !(e.completions = fopen(c->completions, "w"))) {
        log_error("--completions '%s': %s", c->completions, strerror(errno));
        rc = ERR_IO;
        goto out;
    }
    const char *stops[EVAL_MAX_STOPS];
    for (int i = 0; i < c->n_stops; i++) stops[i] = c->stops[i];
    EvalConfig ec = {.n_samples = c->n,
                     .sampler = c->sampler,
                     .max_new = c->max_new,
                     .batch = c->batch,
                     .seed = c->seed,
                     .stops = stops,
                     .n_stops = c->n_stops,
                     .spec = c->scorer ? &e.spec : NULL,
                     .score_threads = e.code ? c->code.sandbox.workers : 1,
                     .is_keep_text = e.completions != NULL};
    char       why[200];
    if ((rc = eval_config_check(&ec, why, sizeof why))) {
        log_error("rlhf-eval: %s", why);
        goto out;
    }
    e.report = eval_report_new(c->n);
    e.total = e.src.n * (uint64_t)c->n;
    log_info("%llu prompts x %d samples, batch %d, %d threads", (unsigned long long)e.src.n, c->n,
             c->batch, par_threads());
    progress_start(&e.progress, "eval", "sample", (int64_t)e.total);
    if (c->progress_every_s > 0 && !e.progress.is_tty) e.progress.every_s = c->progress_every_s;
    EvalStats st = {0};
    double    t0 = progress_now();
    rc = eval_run(e.pol.m, e.pol.tok, e.pol.bpe, &e.src, &ec, on_prompt, &e, &st);
    double wall = progress_now() - t0;
    progress_update(&e.progress, (int64_t)e.done, "done", true);
    progress_end(&e.progress);
    if (rc) goto out;
    if (st.skipped)
        log_warn("%llu prompts skipped: their scorer did not start here (the code sandbox)",
                 (unsigned long long)st.skipped);
    print_header(&e, stdout);
    eval_report_print(e.report, stdout);
    char dur[32];
    progress_fmt_duration(wall, dur, sizeof dur);
    printf("  wall time %s (%.1f s), %.1f tokens/s\n", dur, wall,
           wall > 0 ? (double)st.tokens / wall : 0.0);
    if (c->out) rc = write_report(&e, &st, wall);
    if (rc == 0 && e.completions && fflush(e.completions)) {
        log_error("--completions '%s': %s", c->completions, strerror(errno));
        rc = ERR_IO;
    }
out:
    ev_free(&e);
    return rc;
}
