#include "reward_server/eval_report.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/nn/gen.h"
#include "common/tasks/passk.h"

typedef struct {
    char    *label, *answer, *task;
    char     scorer[SCORE_NAME_MAX]; /* the spec's first term: what "has no vote" names */
    int      correct, unscored;
    double   reward_sum;
    uint64_t tokens;
    int      n_stop, n_length, n_stop_string;
    bool     has_voter; /* the scorer reads answers */
    char    *vote;      /* the majority answer, NULL when none */
    int      vote_count;
    bool     is_vote_correct;
} Row;

struct EvalReport {
    int  n; /* samples per prompt */
    Row *rows;
    int  n_rows, cap;
};

EvalReport *eval_report_new(int n_samples)
{
    CHECK(n_samples >= 1);
    EvalReport *r = xcalloc(1, sizeof *r);
    r->n = n_samples;
    return r;
}

void eval_report_free(EvalReport **pr)
{
    EvalReport *r = *pr;
    if (!r) return;
    for (int i = 0; i < r->n_rows; i++) {
        free(r->rows[i].label);
        free(r->rows[i].answer);
        free(r->rows[i].task);
        free(r->rows[i].vote);
    }
    free(r->rows);
    free(r);
    *pr = NULL;
}

int eval_report_add(void *ctx, const EvalPrompt *p)
{
    EvalReport *r = ctx;
    CHECK(p->n_samples == r->n && p->spec->n_terms > 0);
    if (r->n_rows == r->cap) {
        r->cap = r->cap ? 2 * r->cap : 64;
        r->rows = xrealloc(r->rows, sizeof *r->rows * (size_t)r->cap);
    }
    Row *w = &r->rows[r->n_rows++];
    *w = (Row){.label = xstrdup(p->label), .answer = xstrdup(p->answer), .task = xstrdup(p->task)};
    snprintf(w->scorer, sizeof w->scorer, "%s", p->spec->terms[0].def->name);
    const char **answers = xcalloc((size_t)r->n, sizeof *answers);
    for (int j = 0; j < r->n; j++) {
        const EvalSample *s = &p->samples[j];
        w->correct += s->is_correct;
        w->unscored += !s->is_scored;
        w->reward_sum += s->reward;
        w->tokens += (uint64_t)s->n_tokens;
        w->n_stop += s->finish == GEN_FINISH_STOP;
        w->n_length += s->finish == GEN_FINISH_LENGTH;
        w->n_stop_string += s->finish == GEN_FINISH_CALLER;
        answers[j] = s->has_answer ? s->answer : NULL;
    }
    w->has_voter = score_spec_extractor(p->spec) != NULL;
    int count = 0, at = w->has_voter ? passk_vote(answers, r->n, &count) : -1;
    if (at >= 0) {
        w->vote = xstrdup(answers[at]);
        w->vote_count = count;
        w->is_vote_correct = p->samples[at].is_correct;
    }
    free(answers);
    return 0;
}

double eval_report_pass_at(const EvalReport *r, int k)
{
    CHECK(k >= 1 && k <= r->n);
    if (r->n_rows == 0) return NAN;
    double sum = 0;
    for (int i = 0; i < r->n_rows; i++) sum += passk_estimate(r->n, r->rows[i].correct, k);
    return sum / r->n_rows;
}

void eval_report_summary(const EvalReport *r, EvalSummary *out)
{
    *out = (EvalSummary){.n_prompts = r->n_rows, .n_samples = r->n};
    double reward = 0, correct = 0;
    for (int i = 0; i < r->n_rows; i++) {
        const Row *w = &r->rows[i];
        reward += w->reward_sum;
        correct += w->correct;
        out->unscored += (uint64_t)w->unscored;
        out->tokens += w->tokens;
        out->finish_stop += (uint64_t)w->n_stop;
        out->finish_length += (uint64_t)w->n_length;
        out->finish_stop_string += (uint64_t)w->n_stop_string;
        out->vote_prompts += w->has_voter;
        out->vote_correct += w->has_voter && w->vote && w->is_vote_correct;
    }
    out->samples = (uint64_t)r->n_rows * (uint64_t)r->n;
    out->mean_reward = out->samples ? reward / (double)out->samples : NAN;
    out->accuracy = out->samples ? correct / (double)out->samples : NAN;
    out->vote_accuracy = out->vote_prompts ? (double)out->vote_correct / out->vote_prompts : NAN;
}

/* The scorers of prompts without a vote, comma-separated, into buf. */
static void no_vote_scorers(const EvalReport *r, char *buf, size_t cap)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < r->n_rows && used + 1 < cap; i++) {
        const Row *w = &r->rows[i];
        if (w->has_voter) continue;
        bool seen = false;
        for (int k = 0; k < i && !seen; k++)
            seen = !r->rows[k].has_voter && !strcmp(r->rows[k].scorer, w->scorer);
        if (seen) continue;
        int n = snprintf(buf + used, cap - used, "%s%s", used ? ", " : "", w->scorer);
        if (n < 0) break;
        used += (size_t)n;
    }
}

static json_t *num_or_null(double x)
{
    return isfinite(x) ? json_real(x) : json_null();
}

json_t *eval_report_json(const EvalReport *r)
{
    EvalSummary s;
    eval_report_summary(r, &s);
    json_t *pass = json_object();
    for (int k = 1; k <= r->n; k++) {
        char key[16];
        snprintf(key, sizeof key, "%d", k);
        json_object_set_new(pass, key, num_or_null(eval_report_pass_at(r, k)));
    }
    char none[256];
    no_vote_scorers(r, none, sizeof none);
    json_t *vote = json_pack("{s:o, s:i, s:i}", "accuracy", num_or_null(s.vote_accuracy), "prompts",
                             s.vote_prompts, "correct", s.vote_correct);
    if (none[0]) {
        char note[400];
        snprintf(note, sizeof note, "scorer %s reads no answer to vote on: %d prompts have no vote",
                 none, s.n_prompts - s.vote_prompts);
        json_object_set_new(vote, "note", json_string(note));
    }
    json_t *results = json_pack(
        "{s:i, s:i, s:o, s:o, s:o, s:o, s:I, s:I, s:I, s:{s:I, s:I, s:I}}", "prompts", s.n_prompts,
        "samples_per_prompt", s.n_samples, "pass_at_k", pass, "majority_vote", vote, "mean_reward",
        num_or_null(s.mean_reward), "accuracy", num_or_null(s.accuracy), "samples",
        (json_int_t)s.samples, "unscored", (json_int_t)s.unscored, "tokens", (json_int_t)s.tokens,
        "finish", "end_token", (json_int_t)s.finish_stop, "stop_string",
        (json_int_t)s.finish_stop_string, "length", (json_int_t)s.finish_length);
    json_t *prompts = json_array();
    for (int i = 0; i < r->n_rows; i++) {
        const Row *w = &r->rows[i];
        json_t    *v = w->vote ? json_pack("{s:s, s:i, s:b}", "answer", w->vote, "count",
                                           w->vote_count, "correct", w->is_vote_correct)
                               : json_null();
        json_array_append_new(
            prompts, json_pack("{s:s, s:s, s:s, s:i, s:i, s:f, s:i, s:o, s:I, s:[i, i, i]}", "id",
                               w->label, "task", w->task, "answer", w->answer, "n", r->n, "correct",
                               w->correct, "mean_reward", w->reward_sum / r->n, "unscored",
                               w->unscored, "vote", v, "tokens", (json_int_t)w->tokens, "finish",
                               w->n_stop, w->n_stop_string, w->n_length));
    }
    return json_pack("{s:o, s:o}", "results", results, "prompts", prompts);
}

void eval_report_print(const EvalReport *r, FILE *f)
{
    EvalSummary s;
    eval_report_summary(r, &s);
    fprintf(f, "%d prompts x %d samples\n", s.n_prompts, s.n_samples);
    /* k = 1, 2, 5, 10, 20, 50, ... below n, then n. */
    static const int steps[] = {1, 2, 5};
    for (long d = 1; d < r->n; d *= 10)
        for (int i = 0; i < 3; i++)
            if (steps[i] * d < r->n)
                fprintf(f, "  pass@%-4ld %.4f\n", steps[i] * d,
                        eval_report_pass_at(r, (int)(steps[i] * d)));
    fprintf(f, "  pass@%-4d %.4f\n", r->n, eval_report_pass_at(r, r->n));
    char none[256];
    no_vote_scorers(r, none, sizeof none);
    if (s.vote_prompts)
        fprintf(f, "  majority vote %.4f (%d of %d prompts)\n", s.vote_accuracy, s.vote_correct,
                s.vote_prompts);
    if (none[0])
        fprintf(f, "  majority vote: none for %d prompts: scorer %s reads no answer to vote on\n",
                s.n_prompts - s.vote_prompts, none);
    fprintf(f, "  mean reward %.4f, accuracy %.4f over %llu samples (%llu not scored)\n",
            s.mean_reward, s.accuracy, (unsigned long long)s.samples,
            (unsigned long long)s.unscored);
    fprintf(f, "  ended by: end token %llu, stop string %llu, length cap %llu; %llu tokens\n",
            (unsigned long long)s.finish_stop, (unsigned long long)s.finish_stop_string,
            (unsigned long long)s.finish_length, (unsigned long long)s.tokens);
}
