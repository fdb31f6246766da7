#include "learner/learner_train.h"

#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "learner/eval.h"
#include "learner/learner_intake.h"
#include "learner/learner_publish.h"
#include "learner/learner_record.h"

#define EVAL_BATCH 64

int learner_train_evaluate(Learner *l, double *acc, double *reward)
{
    *acc = *reward = NAN;
    if (l->cfg.eval_n <= 0) return 0;
    EvalResult r;
    double     t0 = progress_now();
    int        rc;
    if (l->bpe) /* Small batches: a 135M model's KV cache and logits are per sequence. */
        rc = eval_chat(l->policy, l->bpe, &l->chat, l->eval_seed, l->cfg.eval_n, 16,
                       l->cfg.max_new_tokens, &r);
    else
        rc = eval_arith(l->policy, l->tok, &l->task, l->eval_seed, l->cfg.eval_n, EVAL_BATCH, &r);
    if (rc) return rc;
    *acc = r.accuracy;
    *reward = r.reward;
    log_info("held-out greedy accuracy at step %" PRId64 ": %.3f (reward %.3f, format %.3f, n=%d, "
             "%.1f s)",
             l->step, r.accuracy, r.reward, r.format, r.n, progress_now() - t0);
    return 0;
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
    double t0 = progress_now();
    int    rc = algo_step(l->algo, l->traj, n, l->version, &st);
    double dt = progress_now() - t0;
    bool   stepped = rc == 0 || st.n_opt_steps > 0;
    if (rc)
        log_error("learner: update at version %" PRId64 " failed (%s) after %d optimizer steps",
                  l->version, err_str(rc), st.n_opt_steps);
    learner_intake_settle(l, B, stepped ? LEASE_OUT_TRAINED : LEASE_OUT_FAILED);
    if (!stepped) return 0;
    l->version++;
    l->step++;
    l->samples_total += (uint64_t)bi.n_samples;
    l->tokens_total += (uint64_t)bi.tokens;
    l->t_last_step = progress_now();
    learner_publish_announce(l);
    learner_record_metrics(l, &st, &bi, dt);
    log_debug("step %" PRId64 ": reward %.3f acc %.3f kl %.4f (%.2f s)", l->step, l->last_reward,
              l->last_accuracy, l->last_kl, dt);
    return 1;
}
