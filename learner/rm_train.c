#include "learner/rm_train.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "common/base/progress.h"
#include "common/base/rng.h"
#include "common/nn/gen.h"
#include "common/tasks/dataset.h"
#include "learner/rm.h"

#define SAMPLE_BATCH 16    /* prompts sampled together for the reference set */
#define SAMPLE_MAX_NEW 128 /* tokens a reference sample may run to */

/* Held-out figures over every held-out record, in batches: the loss is the
 * mean over records, the pair figures means over pairs. */
static int eval_heldout(PrefsRun *r, int batch, float margin, RmStats *out)
{
    memset(out, 0, sizeof *out);
    uint64_t     n = prefs_run_n_eval(r);
    PrefsRecord *recs = xcalloc((size_t)batch, sizeof *recs);
    double       loss = 0.0, acc = 0.0, ch = 0.0, rj = 0.0, mg = 0.0;
    int          rc = 0;
    for (uint64_t i = 0; i < n && rc == 0; i += (uint64_t)batch) {
        int k = (int)(n - i < (uint64_t)batch ? n - i : (uint64_t)batch), got = 0;
        for (; got < k && rc == 0; got++)
            rc = prefs_run_read_eval(r, i + (uint64_t)got, &recs[got]);
        RmStats st;
        if (rc == 0) rc = rm_eval(prefs_run_model(r), recs, k, margin, &st);
        if (rc == 0) {
            loss += st.loss * st.records;
            acc += st.accuracy * st.pairs;
            ch += st.chosen_mean * st.pairs;
            rj += st.rejected_mean * st.pairs;
            mg += st.margin_mean * st.pairs;
            out->records += st.records;
            out->pairs += st.pairs;
        }
        for (int j = 0; j < got; j++) prefs_record_free(&recs[j]);
    }
    free(recs);
    if (rc == 0 && out->records > 0) {
        out->loss = loss / out->records;
        out->accuracy = acc / out->pairs;
        out->chosen_mean = ch / out->pairs;
        out->rejected_mean = rj / out->pairs;
        out->margin_mean = mg / out->pairs;
    }
    return rc;
}

static json_t *eval_json(const RmStats *s)
{
    return json_pack("{s:f, s:f, s:f, s:f, s:i, s:i}", "loss", s->loss, "pair_accuracy",
                     s->accuracy, "reward_margin", s->margin_mean, "chosen_reward", s->chosen_mean,
                     "records", s->records, "pairs", s->pairs);
}

/* A reference set: records of one or more completions each. */
typedef struct {
    PrefsRecord *recs;
    int          n, cap;
    int          completions;
    const char  *source;
} RefSet;

static void ref_add(RefSet *s, PrefsRecord *rec)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 64;
        s->recs = xrealloc(s->recs, (size_t)s->cap * sizeof *s->recs);
    }
    s->completions += rec->k;
    s->recs[s->n++] = *rec;
    memset(rec, 0, sizeof *rec);
}

static void ref_free(RefSet *s)
{
    for (int i = 0; i < s->n; i++) prefs_record_free(&s->recs[i]);
    free(s->recs);
    memset(s, 0, sizeof *s);
}

/* n completions sampled from the model as it starts (the policy the reward
 * model is made from: its language-model head is the policy's until
 * training) on training prompts. */
static int sample_reference(PrefsRun *r, const RmTrainConfig *c, RefSet *out)
{
    Model      *m = prefs_run_model(r);
    int         T = model_config(m)->max_seq_len, n = c->norm_samples;
    uint64_t    nt = prefs_run_n_train(r);
    Generator  *g = gen_new(m, SAMPLE_BATCH, T);
    int        *toks = xmalloc((size_t)SAMPLE_BATCH * SAMPLE_MAX_NEW * sizeof(int));
    float      *l1 = xmalloc((size_t)SAMPLE_BATCH * SAMPLE_MAX_NEW * sizeof(float));
    float      *l2 = xmalloc((size_t)SAMPLE_BATCH * SAMPLE_MAX_NEW * sizeof(float));
    int         n_out[SAMPLE_BATCH], fin[SAMPLE_BATCH], lens[SAMPLE_BATCH];
    PrefsRecord prompts[SAMPLE_BATCH];
    const int  *pp[SAMPLE_BATCH];
    Rng         rng;
    rng_seed(&rng, c->run.seed * 31 + 7);
    int    rc = 0, stopped = 0;
    double t0 = progress_now();
    memset(prompts, 0, sizeof prompts);
    for (int done = 0; done < n && rc == 0; done += SAMPLE_BATCH) {
        int k = n - done < SAMPLE_BATCH ? n - done : SAMPLE_BATCH, max_prompt = 0;
        for (int j = 0; j < k && rc == 0; j++) {
            uint64_t i = dataset_shuffle(nt, c->run.seed + 101, (uint64_t)(done + j));
            rc = prefs_run_read_train(r, i, &prompts[j]);
            pp[j] = prompts[j].prompt;
            lens[j] = prompts[j].n_prompt;
            if (lens[j] > max_prompt) max_prompt = lens[j];
        }
        int max_new = T - max_prompt < SAMPLE_MAX_NEW ? T - max_prompt : SAMPLE_MAX_NEW;
        if (rc == 0 && max_new < 1) {
            log_error("a training prompt of %d ids leaves no room to sample in %d positions",
                      max_prompt, T);
            rc = ERR_RANGE;
        }
        GenConfig gc = {.sampler = {.temperature = c->norm_temperature, .top_k = 0, .top_p = 1.0f},
                        .max_new = max_new,
                        .stop_id = prefs_run_stop_id(r)};
        GenOutput go = {toks, l1, l2, n_out, fin};
        if (rc == 0) rc = gen_run(g, &gc, k, pp, lens, &rng, &go);
        for (int j = 0; j < k && rc == 0; j++) {
            PrefsRecord s = {.line = prompts[j].line, .k = 1, .n_prompt = prompts[j].n_prompt};
            s.prompt = prompts[j].prompt;
            prompts[j].prompt = NULL;
            /* An empty sample (a stop at once) is the stop token alone. */
            s.n_comp[0] = n_out[j] > 0 ? n_out[j] : 1;
            s.comp[0] = xmalloc((size_t)s.n_comp[0] * sizeof(int));
            if (n_out[j] > 0)
                memcpy(s.comp[0], toks + (size_t)j * SAMPLE_MAX_NEW,
                       (size_t)n_out[j] * sizeof(int));
            else
                s.comp[0][0] = gc.stop_id;
            stopped += fin[j] == GEN_FINISH_STOP;
            ref_add(out, &s);
        }
        for (int j = 0; j < k; j++) prefs_record_free(&prompts[j]);
    }
    if (rc == 0)
        log_info("sampled %d reference completions from the starting policy (%d stopped by "
                 "themselves) in %.1f s",
                 out->n, stopped, progress_now() - t0);
    gen_free(&g);
    free(toks);
    free(l1);
    free(l2);
    return rc;
}

/* The reference set chosen as rm_train.h describes (the samples already in
 * *samples when they were asked for). */
static int reference_set(PrefsRun *r, const RmTrainConfig *c, RefSet *samples, RefSet *out)
{
    int rc = 0;
    if (c->norm_data) {
        PrefsOpts o = {.tok = prefs_run_tok(r),
                       .bpe = prefs_run_bpe(r),
                       .max_ids = model_config(prefs_run_model(r))->max_seq_len,
                       .max_bad_percent = c->run.max_bad,
                       .reference = true};
        Prefs    *p = NULL;
        if ((rc = prefs_open(c->norm_data, &o, &p))) return rc;
        for (uint64_t i = 0; i < prefs_size(p) && out->completions < c->norm_max && rc == 0; i++) {
            PrefsRecord rec;
            if ((rc = prefs_read(p, i, &rec)) == 0) ref_add(out, &rec);
            prefs_record_free(&rec);
        }
        prefs_free(&p);
        out->source = "norm_data";
        return rc;
    }
    if (samples->n > 0) {
        *out = *samples;
        memset(samples, 0, sizeof *samples);
        out->source = "policy_samples";
        return 0;
    }
    for (uint64_t i = 0; i < prefs_run_n_train(r) && out->completions < c->norm_max && rc == 0;
         i++) {
        PrefsRecord rec;
        if ((rc = prefs_run_read_train(r, i, &rec)) == 0) ref_add(out, &rec);
        prefs_record_free(&rec);
    }
    out->source = "training_completions";
    return rc;
}

/* The mean reward over every completion of the set, in batches. */
static int mean_reward(Model *m, const RefSet *s, int batch, double *mean)
{
    double sum = 0.0, *out = xmalloc((size_t)batch * PREFS_MAX_K * sizeof(double));
    int    rc = 0, count = 0;
    for (int i = 0; i < s->n && rc == 0; i += batch) {
        int k = s->n - i < batch ? s->n - i : batch;
        if ((rc = rm_score(m, s->recs + i, k, out))) break;
        int rows = 0;
        for (int j = 0; j < k; j++) rows += s->recs[i + j].k;
        for (int j = 0; j < rows; j++) sum += out[j];
        count += rows;
    }
    free(out);
    *mean = count > 0 ? sum / count : 0.0;
    return rc;
}

/* Sets the bias so that the reference set's mean reward is 0; the figures
 * go into *norm. */
static int normalise(PrefsRun *r, const RmTrainConfig *c, RefSet *samples, json_t **norm)
{
    RefSet ref = {0};
    Model *m = prefs_run_model(r);
    int    rc = reference_set(r, c, samples, &ref);
    double before = 0.0, after = 0.0;
    if (rc == 0 && ref.completions == 0) {
        log_error("no reference completions to normalise the rewards with");
        rc = ERR_ARG;
    }
    if (rc == 0) rc = mean_reward(m, &ref, c->run.batch, &before);
    if (rc == 0) {
        rm_shift_bias(m, -before);
        rc = mean_reward(m, &ref, c->run.batch, &after);
    }
    if (rc == 0) {
        log_info("normalised on %d reference completions (%s): mean reward %+.6f -> %+.2e, "
                 "score.bias %+.6f",
                 ref.completions, ref.source, before, after, (double)rm_bias(m));
        *norm = json_pack("{s:s, s:i, s:f, s:f, s:f}", "source", ref.source, "completions",
                          ref.completions, "mean_before", before, "mean_after", after, "bias",
                          (double)rm_bias(m));
    }
    ref_free(&ref);
    return rc;
}

static void log_eval(const char *when, const RmStats *s)
{
    log_info("held-out %s: pair accuracy %.4f, loss %.4f, reward margin %+.3f (%d records, "
             "%d pairs)",
             when, s->accuracy, s->loss, s->margin_mean, s->records, s->pairs);
}

int rm_train_run(const RmTrainConfig *c, atomic_int *stop)
{
    PrefsRunConfig pc = c->run;
    pc.value_head = true;
    PrefsRun *r = NULL;
    int       rc = prefs_run_open(&pc, &r);
    if (rc) return rc;
    Model  *m = prefs_run_model(r);
    RefSet  samples = {0};
    int64_t steps = c->steps > 0 ? c->steps : prefs_run_steps_for(r, c->epochs);
    if (!c->norm_data && c->norm_samples > 0) rc = sample_reference(r, c, &samples);
    OptimConfig  oc = prefs_run_optim_config(c->lr, c->warmup, steps, c->grad_clip);
    Optim       *opt = optim_new(&oc, model_num_params(m));
    PrefsRecord *recs = xcalloc((size_t)c->run.batch, sizeof *recs);
    RmStats      before = {0}, after = {0}, st = {0};
    json_t      *norm = NULL;
    bool         has_eval = prefs_run_n_eval(r) > 0;
    if (rc == 0 && has_eval && (rc = eval_heldout(r, c->run.batch, c->margin, &before)) == 0)
        log_eval("before", &before);
    Progress p;
    progress_start(&p, "rm", "step", steps);
    double  loss_avg = 0.0, acc_avg = 0.0;
    int64_t step = 0;
    for (; step < steps && rc == 0 && !atomic_load(stop); step++) {
        if ((rc = prefs_run_batch(r, step, recs, NULL))) break;
        rc = rm_step(m, opt, recs, c->run.batch, c->margin, &st);
        for (int j = 0; j < c->run.batch; j++) prefs_record_free(&recs[j]);
        if (rc == ERR_NONFINITE) {
            rc = 0; /* logged; the batch is skipped */
            continue;
        }
        if (rc) break;
        loss_avg = step == 0 ? st.loss : 0.95 * loss_avg + 0.05 * st.loss;
        acc_avg = step == 0 ? st.accuracy : 0.95 * acc_avg + 0.05 * st.accuracy;
        char extra[160];
        snprintf(extra, sizeof extra, "loss %.4f pair-acc %.3f lr %.2e gnorm %.2f", loss_avg,
                 acc_avg, st.lr, st.grad_norm);
        progress_update(&p, step + 1, extra, step + 1 == steps);
        if (has_eval && c->eval_every > 0 && (step + 1) % c->eval_every == 0 && step + 1 < steps) {
            RmStats mid;
            if ((rc = eval_heldout(r, c->run.batch, c->margin, &mid)) == 0) {
                progress_end(&p);
                char when[48];
                snprintf(when, sizeof when, "at step %" PRId64, step + 1);
                log_eval(when, &mid);
            }
        }
    }
    progress_end(&p);
    double seconds = progress_elapsed(&p);
    if (rc == 0 && atomic_load(stop))
        log_warn("stopped by signal after %" PRId64 " steps; normalising and saving what was "
                 "trained",
                 step);
    if (rc == 0 && has_eval && (rc = eval_heldout(r, c->run.batch, c->margin, &after)) == 0)
        log_eval("after", &after);
    if (rc == 0) rc = normalise(r, c, &samples, &norm);
    json_t *sum = NULL;
    if (rc == 0) {
        PrefsStats ts;
        prefs_run_data_stats(r, &ts, NULL);
        sum = json_pack("{s:s, s:I, s:I, s:I, s:I, s:f, s:o, s:o, s:o, s:f, s:s}", "program",
                        "rlhf-rm", "steps", (json_int_t)step, "train_records",
                        (json_int_t)prefs_run_n_train(r), "data_pairs", (json_int_t)ts.pairs,
                        "eval_records", (json_int_t)prefs_run_n_eval(r), "train_loss", loss_avg,
                        "eval_before", has_eval ? eval_json(&before) : json_null(), "eval_after",
                        has_eval ? eval_json(&after) : json_null(), "normalisation", norm,
                        "seconds", seconds, "checkpoint", c->out);
        CHECK(sum);
        char run_id[64];
        snprintf(run_id, sizeof run_id, "rm-%" PRIu64, c->run.seed);
        rc = prefs_run_save(r, c->out, step, run_id, sum);
        if (rc == 0) rc = prefs_run_summary(c->summary, sum);
    } else {
        json_decref(norm);
    }
    json_decref(sum);
    ref_free(&samples);
    free(recs);
    optim_free(&opt);
    prefs_run_free(&r);
    return rc;
}
