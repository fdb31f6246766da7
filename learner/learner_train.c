#include "learner/learner_train.h"

#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "common/tasks/eval.h"
#include "learner/learner_intake.h"
#include "learner/learner_publish.h"
#include "learner/learner_record.h"
#include "learner/learner_task.h"

int learner_train_evaluate(Learner *l, double *acc, double *reward)
{
    *acc = *reward = NAN;
    if (l->cfg.eval_n <= 0) return 0;
    EvalResult r;
    double     t0 = progress_now();
    int        rc;
    if ((rc = learner_task_evaluate(l, &r))) return rc;
    if (r.n == 0) return 0; /* nothing to evaluate (a --data run without --eval-data) */
    *acc = r.accuracy;
    *reward = r.reward;
    log_info("held-out greedy accuracy at step %" PRId64 ": %.3f (reward %.3f, format %.3f, n=%d, "
             "%.1f s)",
             l->step, r.accuracy, r.reward, r.format, r.n, progress_now() - t0);
    if (r.skipped)
        log_warn("held-out evaluation: %d records skipped: their scorer runs only in the reward "
                 "server",
                 r.skipped);
    return 0;
}

/* What an update changes: the policy's parameters, optimizer moments and
 * step count, and the critic's (PPO). A copy is taken before an update that
 * may take more than one optimizer step, so that a failure part-way through
 * (PPO's policy step applied, then the critic's gradient not finite; a later
 * minibatch's gradient not finite) is undone whole. */
typedef struct {
    float  *block;    /* the copies, one allocation: per model params, m, v */
    int64_t steps[2]; /* optimizer step counts, policy and critic */
} TrainUndo;

/* The models and optimizers an update changes: the policy, and the critic
 * for PPO (NULL otherwise). */
static int train_models(Learner *l, Model *mods[2], Optim *opts[2])
{
    mods[0] = l->policy;
    opts[0] = l->opt;
    mods[1] = l->critic;
    opts[1] = l->critic_opt;
    return l->critic ? 2 : 1;
}

/* True when algo_step takes one optimizer step, which optim_step's contract
 * makes all or nothing: a non-finite gradient changes nothing. */
static bool is_single_step(const Learner *l, int n)
{
    const AlgoConfig *a = &l->cfg.algo;
    return a->kind != ALGO_PPO && a->epochs == 1 &&
           (a->minibatch_size == 0 || a->minibatch_size >= n);
}

static void undo_save(Learner *l, TrainUndo *u)
{
    Model *mods[2];
    Optim *opts[2];
    int    k = train_models(l, mods, opts);
    size_t total = 0;
    for (int i = 0; i < k; i++) total += 3 * model_num_train_params(mods[i]);
    u->block = xmalloc(total * sizeof(float));
    float *p = u->block;
    for (int i = 0; i < k; i++) {
        size_t n = model_num_train_params(mods[i]);
        memcpy(p, model_train_params(mods[i]), n * sizeof(float));
        memcpy(p + n, optim_state_m(opts[i]), n * sizeof(float));
        memcpy(p + 2 * n, optim_state_v(opts[i]), n * sizeof(float));
        u->steps[i] = optim_step_count(opts[i]);
        p += 3 * n;
    }
}

static void undo_restore(Learner *l, const TrainUndo *u)
{
    Model       *mods[2];
    Optim       *opts[2];
    int          k = train_models(l, mods, opts);
    const float *p = u->block;
    for (int i = 0; i < k; i++) {
        size_t n = model_num_train_params(mods[i]);
        memcpy(model_train_params(mods[i]), p, n * sizeof(float));
        memcpy(optim_state_m(opts[i]), p + n, n * sizeof(float));
        memcpy(optim_state_v(opts[i]), p + 2 * n, n * sizeof(float));
        optim_set_step_count(opts[i], u->steps[i]);
        p += 3 * n;
    }
}

void learner_train_memory(Learner *l, LearnerMemory *out)
{
    ModelMemory mm;
    model_memory(l->policy, &mm);
    memset(out, 0, sizeof *out);
    out->weights = mm.params_bytes;
    out->adapters = mm.adapter_bytes;
    out->grads = mm.grads_bytes;
    out->optimizer = 2 * optim_n(l->opt) * sizeof(float);
    out->acts = mm.acts_bytes + mm.adapter_acts_bytes;
    out->total = out->weights + out->adapters + out->grads + out->optimizer + out->acts;
    out->full_ft = 4 * mm.params_bytes + mm.acts_bytes;
    out->merged = l->merged ? model_num_params(l->merged) * sizeof(float) : 0;
}

/* Logs the training memory once, after this incarnation's first step (the
 * activations are allocated by then). */
static void log_memory_once(Learner *l)
{
    if (l->memory_logged) return;
    l->memory_logged = true;
    LearnerMemory lm;
    learner_train_memory(l, &lm);
    const double MiB = 1024.0 * 1024.0;
    log_info("memory per learner step: %.1f MiB (weights %.1f, adapters %.2f, gradients %.2f, "
             "optimizer %.2f, activations %.1f); full fine-tuning: %.1f MiB%s",
             lm.total / MiB, lm.weights / MiB, lm.adapters / MiB, lm.grads / MiB,
             lm.optimizer / MiB, lm.acts / MiB, lm.full_ft / MiB,
             lm.merged ? "; plus the merged copy for actors and evaluation" : "");
}

int learner_train_step(Learner *l)
{
    learner_intake_drop_stale(l);
    int B = l->cfg.batch_groups;
    if (l->n_pend < B) return 0;
    LearnerBatchInfo bi;
    int              n = learner_intake_build_batch(l, B, &bi);
    AlgoStats        st;
    memset(&st, 0, sizeof st);
    TrainUndo undo = {0};
    bool      single = is_single_step(l, n);
    if (!single) undo_save(l, &undo);
    double t0 = progress_now();
    int    rc = algo_step(l->algo, l->traj, n, l->version, &st);
    double dt = progress_now() - t0;
    /* An update whose loss or gradient norm is not finite failed, even if
     * algo_step took some of its optimizer steps: they are undone, so the
     * policy, the critic and both optimizers are as before it. A single
     * step that failed changed nothing (optim_step's contract). */
    bool ppo = l->cfg.algo.kind == ALGO_PPO;
    bool finite =
        isfinite(st.loss) && isfinite(st.grad_norm) && (!ppo || isfinite(st.critic_grad_norm));
    bool failed = rc != 0 || (!single && !finite);
    if (failed) {
        log_error("learner: update at version %" PRId64
                  " failed (%s; loss %g, gradient norm %g%s%g) "
                  "after %d optimizer steps; %s, its %d groups counted failed",
                  l->version, rc ? err_str(rc) : "not finite", st.loss, st.grad_norm,
                  ppo ? ", critic's " : "", ppo ? st.critic_grad_norm : 0.0, st.n_opt_steps,
                  single ? "nothing was changed" : "policy, critic and optimizers restored", B);
        if (!single) undo_restore(l, &undo);
        CHECK(!single || st.n_opt_steps == 0);
    }
    free(undo.block);
    if (!failed) learner_record_trained(l, B);
    learner_intake_settle(l, B, failed ? LEASE_OUT_FAILED : LEASE_OUT_TRAINED);
    if (failed) return 0;
    l->version++;
    l->step++;
    l->samples_total += (uint64_t)bi.n_samples;
    l->tokens_total += (uint64_t)bi.tokens;
    l->t_last_step = progress_now();
    learner_publish_announce(l);
    learner_record_metrics(l, &st, &bi, dt);
    log_memory_once(l);
    log_debug("step %" PRId64 ": reward %.3f acc %.3f kl %.4f (%.2f s)", l->step, l->last_reward,
              l->last_accuracy, l->last_kl, dt);
    return 1;
}
