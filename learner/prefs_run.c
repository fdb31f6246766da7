#include "learner/prefs_run.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/log.h"
#include "common/formats/ckpt.h"
#include "common/formats/policy.h"
#include "common/tasks/dataset.h"
#include "learner/rm.h"

/* Mixed into the seed for the held-out split, so the split and the
 * training order are not the same permutation. */
#define SPLIT_KEY 0x73706c6974ULL

struct PrefsRun {
    PrefsRunConfig c;
    Model         *model;
    Tok           *tok;
    Bpe           *bpe;
    Prefs         *train_file, *eval_file; /* eval_file NULL: held out from train_file */
    uint64_t      *train, *eval;           /* record indices into their files */
    uint64_t       n_train, n_eval;
};

static int load_model(PrefsRun *r)
{
    const PrefsRunConfig *c = &r->c;
    PolicySpec            ps = {.ckpt = c->init, .model = c->model, .ckpt_flag = "--init"};
    ps.max_seq_len = c->max_len;
    int    rc;
    Policy p;
    if ((rc = policy_load(&ps, &p))) return rc;
    r->model = p.m;
    r->tok = p.tok;
    r->bpe = p.bpe;
    const ModelConfig *mc = model_config(r->model);
    if (c->value_head && !mc->has_value_head) {
        Model *rm = rm_from_policy(r->model, c->seed + 17, 0.02f);
        model_free(&r->model);
        r->model = rm;
    }
    mc = model_config(r->model);
    log_info("prefs: model from %s: dim %d, %d layers, %d/%d heads, vocab %d, context %d, %zu "
             "parameters%s",
             c->init ? c->init : c->model, mc->dim, mc->n_layers, mc->n_heads, mc->n_kv_heads,
             mc->vocab_size, mc->max_seq_len, model_num_params(r->model),
             mc->has_value_head ? ", scalar head" : "");
    return 0;
}

static int open_data(PrefsRun *r)
{
    const PrefsRunConfig *c = &r->c;
    PrefsOpts             o = {.tok = r->tok,
                               .bpe = r->bpe,
                               .max_ids = model_config(r->model)->max_seq_len,
                               .max_bad_percent = c->max_bad};
    int                   rc = prefs_open(c->data, &o, &r->train_file);
    if (rc) return rc;
    if (c->eval_data && (rc = prefs_open(c->eval_data, &o, &r->eval_file))) return rc;
    uint64_t n = prefs_size(r->train_file), n_out = 0;
    if (!c->eval_data && c->eval_frac > 0.0f && n >= 2) {
        n_out = (uint64_t)llround((double)c->eval_frac * (double)n);
        n_out = n_out < 1 ? 1 : n_out > n - 1 ? n - 1 : n_out;
    }
    r->n_train = n - n_out;
    r->train = xmalloc((size_t)r->n_train * sizeof(uint64_t));
    if (c->eval_data) {
        r->n_eval = prefs_size(r->eval_file);
        r->eval = xmalloc((size_t)r->n_eval * sizeof(uint64_t));
        for (uint64_t i = 0; i < r->n_train; i++) r->train[i] = i;
        for (uint64_t i = 0; i < r->n_eval; i++) r->eval[i] = i;
    } else {
        r->n_eval = n_out;
        r->eval = xmalloc((size_t)(n_out ? n_out : 1) * sizeof(uint64_t));
        for (uint64_t i = 0; i < n; i++) {
            uint64_t k = dataset_shuffle(n, c->seed ^ SPLIT_KEY, i);
            if (i < n_out)
                r->eval[i] = k;
            else
                r->train[i - n_out] = k;
        }
    }
    if (c->eval_max > 0 && r->n_eval > (uint64_t)c->eval_max) r->n_eval = (uint64_t)c->eval_max;
    log_info("prefs: %" PRIu64 " training records, %" PRIu64 " held out (%s)", r->n_train,
             r->n_eval,
             c->eval_data ? c->eval_data
             : n_out      ? "split off --data"
                          : "none");
    return 0;
}

int prefs_run_open(const PrefsRunConfig *c, PrefsRun **out)
{
    *out = NULL;
    CHECK(c->batch >= 1 && c->eval_frac >= 0.0f && c->eval_frac < 1.0f);
    PrefsRun *r = xcalloc(1, sizeof *r);
    r->c = *c;
    int rc = load_model(r);
    if (!rc) rc = open_data(r);
    if (rc) {
        prefs_run_free(&r);
        return rc;
    }
    *out = r;
    return 0;
}

void prefs_run_free(PrefsRun **rp)
{
    if (!rp || !*rp) return;
    PrefsRun *r = *rp;
    model_free(&r->model);
    tok_free(&r->tok);
    bpe_free(&r->bpe);
    prefs_free(&r->train_file);
    prefs_free(&r->eval_file);
    free(r->train);
    free(r->eval);
    free(r);
    *rp = NULL;
}

Model *prefs_run_model(PrefsRun *r)
{
    return r->model;
}

const Tok *prefs_run_tok(const PrefsRun *r)
{
    return r->tok;
}

const Bpe *prefs_run_bpe(const PrefsRun *r)
{
    return r->bpe;
}

int prefs_run_stop_id(const PrefsRun *r)
{
    return r->tok ? TOK_EOS : bpe_eot_id(r->bpe);
}

uint64_t prefs_run_n_train(const PrefsRun *r)
{
    return r->n_train;
}

uint64_t prefs_run_n_eval(const PrefsRun *r)
{
    return r->n_eval;
}

void prefs_run_data_stats(const PrefsRun *r, PrefsStats *train, PrefsStats *eval)
{
    if (train) prefs_stats(r->train_file, train);
    if (eval) {
        memset(eval, 0, sizeof *eval);
        if (r->eval_file) prefs_stats(r->eval_file, eval);
    }
}

int prefs_run_read_train(PrefsRun *r, uint64_t i, PrefsRecord *rec)
{
    CHECK(i < r->n_train);
    return prefs_read(r->train_file, r->train[i], rec);
}

int prefs_run_read_eval(PrefsRun *r, uint64_t i, PrefsRecord *rec)
{
    CHECK(i < r->n_eval);
    return prefs_read(r->eval_file ? r->eval_file : r->train_file, r->eval[i], rec);
}

int prefs_run_batch(PrefsRun *r, int64_t step, PrefsRecord *recs, uint64_t *idx)
{
    CHECK(step >= 0);
    for (int j = 0; j < r->c.batch; j++) {
        uint64_t pos = (uint64_t)step * (uint64_t)r->c.batch + (uint64_t)j;
        uint64_t i = dataset_shuffle(r->n_train, r->c.seed, pos);
        if (idx) idx[j] = i;
        int rc = prefs_run_read_train(r, i, &recs[j]);
        if (rc) {
            for (int k = 0; k <= j; k++) prefs_record_free(&recs[k]);
            return rc;
        }
    }
    return 0;
}

int64_t prefs_run_steps_for(const PrefsRun *r, int epochs)
{
    uint64_t n = (uint64_t)epochs * r->n_train;
    int64_t  s = (int64_t)((n + (uint64_t)r->c.batch - 1) / (uint64_t)r->c.batch);
    return s > 0 ? s : 1;
}

OptimConfig prefs_run_optim_config(float lr, int warmup, int64_t steps, float grad_clip)
{
    return (OptimConfig){.lr_peak = lr,
                         .lr_min = lr / 10,
                         .lr_warmup_steps = warmup,
                         .lr_total_steps = steps > warmup ? steps : warmup,
                         .beta1 = 0.9f,
                         .beta2 = 0.95f,
                         .eps = 1e-8f,
                         .weight_decay = 0.0f,
                         .grad_clip = grad_clip};
}

int prefs_run_save(PrefsRun *r, const char *dir, int64_t step, const char *run_id, json_t *extra)
{
    CkptTrainerState ts = {.step = step, .policy_version = 0, .extra = extra};
    snprintf(ts.run_id, sizeof ts.run_id, "%s", run_id);
    int rc = ckpt_save(dir, r->model, r->tok, NULL, &ts);
    if (rc == 0) log_info("saved %s", dir);
    return rc;
}

int prefs_run_summary(const char *path, json_t *o)
{
    char *text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    CHECK(text); /* only NaN or infinity fail, which callers never put in */
    printf("%s\n", text);
    fflush(stdout);
    int rc = 0;
    if (path) {
        size_t n = strlen(text);
        text = xrealloc(text, n + 2);
        text[n] = '\n';
        rc = fileio_write_atomic(path, text, n + 1);
        if (rc) log_error("prefs: cannot write the summary '%s' (%s)", path, err_str(rc));
    }
    free(text);
    return rc;
}
