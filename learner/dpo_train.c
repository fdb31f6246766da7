#include "learner/dpo_train.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "common/base/progress.h"
#include "learner/dpo.h"

/* The reference log-probs of one side (training or held-out records): the
 * completions of record i at off[i]..off[i+1]-1 of lp. */
typedef struct {
    double   *lp;
    uint64_t *off; /* (n + 1) */
    uint64_t  n;
} RefLogps;

typedef int (*ReadFn)(PrefsRun *r, uint64_t i, PrefsRecord *rec);

static void ref_free(RefLogps *s)
{
    free(s->lp);
    free(s->off);
    memset(s, 0, sizeof *s);
}

/* Computes every completion's log-prob under the model as it is now. */
static int ref_compute(PrefsRun *r, ReadFn read, uint64_t n, int batch, const char *what,
                       RefLogps *out)
{
    out->n = n;
    out->off = xcalloc((size_t)n + 1, sizeof(uint64_t));
    size_t       cap = (size_t)(n ? n : 1) * 2;
    PrefsRecord *recs = xcalloc((size_t)batch, sizeof *recs);
    double      *tmp = xmalloc((size_t)batch * PREFS_MAX_K * sizeof(double));
    int          rc = 0;
    out->lp = xmalloc(cap * sizeof(double));
    Progress p;
    progress_start(&p, what, "record", (int64_t)n);
    for (uint64_t i = 0; i < n && rc == 0; i += (uint64_t)batch) {
        int k = (int)(n - i < (uint64_t)batch ? n - i : (uint64_t)batch), got = 0;
        for (; got < k && rc == 0; got++) rc = read(r, i + (uint64_t)got, &recs[got]);
        if (rc == 0) rc = dpo_seq_logps(prefs_run_model(r), recs, k, tmp);
        for (int j = 0, row = 0; j < k && rc == 0; j++) {
            uint64_t at = out->off[i + (uint64_t)j];
            if (at + (uint64_t)recs[j].k > cap) {
                cap = 2 * cap + PREFS_MAX_K;
                out->lp = xrealloc(out->lp, cap * sizeof(double));
            }
            for (int c = 0; c < recs[j].k; c++) out->lp[at + (uint64_t)c] = tmp[row++];
            out->off[i + (uint64_t)j + 1] = at + (uint64_t)recs[j].k;
        }
        for (int j = 0; j < got; j++) prefs_record_free(&recs[j]);
        progress_update(&p, (int64_t)(i + (uint64_t)k), NULL, i + (uint64_t)k == n);
    }
    progress_end(&p);
    free(recs);
    free(tmp);
    return rc;
}

/* The reference log-probs of records idx[0..n-1], in dpo_seq_logps's order. */
static void ref_gather(const RefLogps *s, const uint64_t *idx, int n, double *out)
{
    for (int j = 0, row = 0; j < n; j++)
        for (uint64_t a = s->off[idx[j]]; a < s->off[idx[j] + 1]; a++) out[row++] = s->lp[a];
}

/* Held-out figures over every held-out record: the loss a mean over records,
 * the pair figures means over pairs. */
static int eval_heldout(PrefsRun *r, const DpoTrainConfig *c, const RefLogps *ref, DpoStats *out)
{
    memset(out, 0, sizeof *out);
    int          batch = c->run.batch;
    uint64_t     n = prefs_run_n_eval(r), *idx = xmalloc((size_t)batch * sizeof(uint64_t));
    PrefsRecord *recs = xcalloc((size_t)batch, sizeof *recs);
    double      *lp = xmalloc((size_t)batch * PREFS_MAX_K * sizeof(double));
    double       loss = 0.0, acc = 0.0, ch = 0.0, rj = 0.0, mg = 0.0;
    int          rc = 0;
    for (uint64_t i = 0; i < n && rc == 0; i += (uint64_t)batch) {
        int k = (int)(n - i < (uint64_t)batch ? n - i : (uint64_t)batch), got = 0;
        for (; got < k && rc == 0; got++) {
            idx[got] = i + (uint64_t)got;
            rc = prefs_run_read_eval(r, idx[got], &recs[got]);
        }
        DpoStats st;
        if (rc == 0) {
            ref_gather(ref, idx, k, lp);
            rc = dpo_eval(prefs_run_model(r), recs, k, lp, c->beta, c->margin, &st);
        }
        if (rc == 0) {
            loss += st.loss * st.records;
            acc += st.accuracy * st.pairs;
            ch += st.chosen_reward * st.pairs;
            rj += st.rejected_reward * st.pairs;
            mg += st.margin_mean * st.pairs;
            out->records += st.records;
            out->pairs += st.pairs;
        }
        for (int j = 0; j < got; j++) prefs_record_free(&recs[j]);
    }
    free(idx);
    free(recs);
    free(lp);
    if (rc == 0 && out->records > 0) {
        out->loss = loss / out->records;
        out->accuracy = acc / out->pairs;
        out->chosen_reward = ch / out->pairs;
        out->rejected_reward = rj / out->pairs;
        out->margin_mean = mg / out->pairs;
    }
    return rc;
}

static json_t *eval_json(const DpoStats *s)
{
    return json_pack("{s:f, s:f, s:f, s:f, s:f, s:i, s:i}", "loss", s->loss,
                     "implicit_reward_accuracy", s->accuracy, "reward_margin", s->margin_mean,
                     "chosen_reward", s->chosen_reward, "rejected_reward", s->rejected_reward,
                     "records", s->records, "pairs", s->pairs);
}

static void log_eval(const char *when, const DpoStats *s)
{
    log_info("held-out %s: implicit-reward accuracy %.4f, margin %+.4f (chosen %+.4f, "
             "rejected %+.4f), loss %.4f (%d records, %d pairs)",
             when, s->accuracy, s->margin_mean, s->chosen_reward, s->rejected_reward, s->loss,
             s->records, s->pairs);
}

int dpo_train_run(const DpoTrainConfig *c, atomic_int *stop)
{
    PrefsRunConfig pc = c->run;
    pc.value_head = false;
    PrefsRun *r = NULL;
    int       rc = prefs_run_open(&pc, &r);
    if (rc) return rc;
    Model   *m = prefs_run_model(r);
    RefLogps ref_train = {0}, ref_eval = {0};
    double   t0 = progress_now();
    /* The reference is the starting policy: its log-probs now, once. */
    rc = ref_compute(r, prefs_run_read_train, prefs_run_n_train(r), c->run.batch, "dpo-ref",
                     &ref_train);
    if (rc == 0)
        rc = ref_compute(r, prefs_run_read_eval, prefs_run_n_eval(r), c->run.batch, "dpo-ref-eval",
                         &ref_eval);
    double t_ref = progress_now() - t0;
    if (rc == 0)
        log_info("reference log-probs of %" PRIu64 " + %" PRIu64 " records in %.1f s",
                 prefs_run_n_train(r), prefs_run_n_eval(r), t_ref);
    int64_t      steps = c->steps > 0 ? c->steps : prefs_run_steps_for(r, c->epochs);
    OptimConfig  oc = prefs_run_optim_config(c->lr, c->warmup, steps, c->grad_clip);
    Optim       *opt = optim_new(&oc, model_num_params(m));
    PrefsRecord *recs = xcalloc((size_t)c->run.batch, sizeof *recs);
    uint64_t    *idx = xmalloc((size_t)c->run.batch * sizeof(uint64_t));
    double      *lp = xmalloc((size_t)c->run.batch * PREFS_MAX_K * sizeof(double));
    DpoStats     before = {0}, after = {0}, st = {0};
    bool         has_eval = prefs_run_n_eval(r) > 0;
    if (rc == 0 && has_eval && (rc = eval_heldout(r, c, &ref_eval, &before)) == 0)
        log_eval("before", &before);
    Progress p;
    progress_start(&p, "dpo", "step", steps);
    double  loss_avg = 0.0, acc_avg = 0.0;
    int64_t step = 0;
    for (; step < steps && rc == 0 && !atomic_load(stop); step++) {
        if ((rc = prefs_run_batch(r, step, recs, idx))) break;
        ref_gather(&ref_train, idx, c->run.batch, lp);
        rc = dpo_step(m, opt, recs, c->run.batch, lp, c->beta, c->margin, &st);
        for (int j = 0; j < c->run.batch; j++) prefs_record_free(&recs[j]);
        if (rc == ERR_NONFINITE) {
            rc = 0; /* logged; the batch is skipped */
            continue;
        }
        if (rc) break;
        loss_avg = step == 0 ? st.loss : 0.95 * loss_avg + 0.05 * st.loss;
        acc_avg = step == 0 ? st.accuracy : 0.95 * acc_avg + 0.05 * st.accuracy;
        char extra[160];
        snprintf(extra, sizeof extra, "loss %.4f acc %.3f margin %+.3f lr %.2e gnorm %.2f",
                 loss_avg, acc_avg, st.margin_mean, st.lr, st.grad_norm);
        progress_update(&p, step + 1, extra, step + 1 == steps);
        if (has_eval && c->eval_every > 0 && (step + 1) % c->eval_every == 0 && step + 1 < steps) {
            DpoStats mid;
            if ((rc = eval_heldout(r, c, &ref_eval, &mid)) == 0) {
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
        log_warn("stopped by signal after %" PRId64 " steps; saving what was trained", step);
    if (rc == 0 && has_eval && (rc = eval_heldout(r, c, &ref_eval, &after)) == 0)
        log_eval("after", &after);
    json_t *sum = NULL;
    if (rc == 0) {
        sum = json_pack("{s:s, s:I, s:f, s:I, s:I, s:f, s:o, s:o, s:f, s:f, s:s}", "program",
                        "rlhf-dpo", "steps", (json_int_t)step, "beta", (double)c->beta,
                        "train_records", (json_int_t)prefs_run_n_train(r), "eval_records",
                        (json_int_t)prefs_run_n_eval(r), "train_loss", loss_avg, "eval_before",
                        has_eval ? eval_json(&before) : json_null(), "eval_after",
                        has_eval ? eval_json(&after) : json_null(), "reference_seconds", t_ref,
                        "seconds", seconds, "checkpoint", c->out);
        CHECK(sum);
        char run_id[64];
        snprintf(run_id, sizeof run_id, "dpo-%" PRIu64, c->run.seed);
        rc = prefs_run_save(r, c->out, step, run_id, sum);
        if (rc == 0) rc = prefs_run_summary(c->summary, sum);
    }
    json_decref(sum);
    ref_free(&ref_train);
    ref_free(&ref_eval);
    free(recs);
    free(idx);
    free(lp);
    optim_free(&opt);
    prefs_run_free(&r);
    return rc;
}
