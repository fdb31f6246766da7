#include "learner/learner_record.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/log.h"
#include "common/formats/ckpt.h"
#include "common/nn/lora.h"
#include "learner/learner_metrics.h"
#include "learner/learner_publish.h"
#include "learner/learner_task.h"
#include "learner/learner_train.h"

/* mkdir -p of the directory part of path (or of path itself if is_dir). */
static int make_parents(const char *path, bool is_dir)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return ERR_ARG;
    if (!is_dir) {
        char *slash = strrchr(buf, '/');
        if (!slash) return 0;
        *slash = '\0';
    }
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
            log_error("learner: mkdir '%s': %s", buf, strerror(errno));
            return ERR_IO;
        }
        *p = '/';
    }
    if (buf[0] && mkdir(buf, 0755) != 0 && errno != EEXIST) {
        log_error("learner: mkdir '%s': %s", buf, strerror(errno));
        return ERR_IO;
    }
    return 0;
}

void learner_record_critic_dir(const Learner *l, char *out, size_t cap)
{
    snprintf(out, cap, "%s-critic", l->cfg.ckpt_dir);
}

int learner_record_ckpt(Learner *l, bool finished)
{
    if (!l->cfg.ckpt_dir) return 0;
    int rc = make_parents(l->cfg.ckpt_dir, false);
    if (rc) return rc;
    CkptOptim co = {optim_state_m(l->opt), optim_state_v(l->opt), model_num_train_params(l->policy),
                    optim_step_count(l->opt)};
    CkptTrainerState ts = {.step = l->step, .policy_version = l->version};
    snprintf(ts.run_id, sizeof ts.run_id, "%s", l->run_id);
    ts.extra =
        /* init_dir may be NULL and accuracy_before NaN (no evaluation): both
         * become JSON null, which json_pack's s/f would refuse. */
        json_pack("{s:b, s:I, s:o, s:s?, s:s, s:I, s:o, s:o, s:b, s:I, s:i}", "rlhf_learner", 1,
                  "epoch", (json_int_t)l->epoch, "lease", lease_state_save(l->leases), "init_dir",
                  l->init_dir, "algo", learner_algo_name(l->cfg.algo.kind), "seed",
                  (json_int_t)l->cfg.seed, "accuracy_before",
                  isfinite(l->accuracy_before) ? json_real(l->accuracy_before) : json_null(),
                  "reward_before",
                  isfinite(l->reward_before) ? json_real(l->reward_before) : json_null(),
                  "finished", finished, "optim_steps", (json_int_t)optim_step_count(l->opt),
                  "max_digits", l->cfg.max_digits);
    CHECK(ts.extra);
    AlgoCarry carry;
    algo_carry_get(l->algo, &carry);
    json_object_set_new(ts.extra, "algo_state",
                        json_pack("{s:f, s:f, s:b}", "kl_beta", carry.kl_beta, "baseline",
                                  carry.baseline, "has_baseline", carry.has_baseline));
    learner_task_save_state(l, ts.extra); /* the data's position, for a --data run */
    double t0 = progress_now();
    rc = ckpt_save_keep(l->cfg.ckpt_dir, l->cfg.ckpt_keep, l->policy, l->tok, &co, &ts);
    json_decref(ts.extra);
    if (rc == 0 && l->critic) {
        char dir[PATH_MAX + 8];
        learner_record_critic_dir(l, dir, sizeof dir);
        CkptOptim        cc = {optim_state_m(l->critic_opt), optim_state_v(l->critic_opt),
                               model_num_params(l->critic), optim_step_count(l->critic_opt)};
        CkptTrainerState cts = {.step = l->step, .policy_version = l->version};
        snprintf(cts.run_id, sizeof cts.run_id, "%s", l->run_id);
        rc = ckpt_save_keep(dir, l->cfg.ckpt_keep, l->critic, l->tok, &cc, &cts);
    }
    if (rc == 0) {
        l->last_ckpt_step = l->step;
        log_info("checkpoint: %s step %" PRId64 " version %" PRId64 " epoch %" PRIu64 "%s (%.2f s)",
                 l->cfg.ckpt_dir, l->step, l->version, l->epoch, finished ? " finished" : "",
                 progress_now() - t0);
    }
    return rc;
}

/* Opens the trained-groups log for appending (every incarnation, fresh or
 * resumed, adds to it) and writes this incarnation's header line. */
static int open_trained_log(Learner *l)
{
    const char *path = l->cfg.trained_log_path;
    if (!path || !path[0]) return 0;
    int rc = make_parents(path, false);
    if (rc) return rc;
    l->trained_log = fopen(path, "a");
    if (!l->trained_log) {
        log_error("learner: open trained log '%s': %s", path, strerror(errno));
        return ERR_IO;
    }
    fprintf(l->trained_log, "# run %s epoch %" PRIu64 " step %" PRId64 "\n", l->run_id, l->epoch,
            l->step);
    if (fflush(l->trained_log) != 0) {
        log_error("learner: write trained log '%s': %s", path, strerror(errno));
        return ERR_IO;
    }
    return 0;
}

int learner_record_open_metrics(Learner *l, bool fresh)
{
    int rc = open_trained_log(l);
    if (rc || !l->cfg.metrics_path) return rc;
    rc = make_parents(l->cfg.metrics_path, false);
    if (rc) return rc;
    l->metrics = fopen(l->cfg.metrics_path, fresh ? "w" : "a");
    if (!l->metrics) {
        log_error("learner: open metrics '%s': %s", l->cfg.metrics_path, strerror(errno));
        return ERR_IO;
    }
    return 0;
}

void learner_record_trained(Learner *l, int ng)
{
    if (!l->trained_log) return;
    CHECK(ng <= l->n_pend);
    for (int i = 0; i < ng; i++) {
        const LearnerPending *p = &l->pend[i];
        fprintf(l->trained_log, "%" PRId64 " %" PRIu64 " %016" PRIx64 " %d %" PRIu64 "\n",
                l->step + 1, l->epoch, p->lease_id, p->group_index, p->prompt_id);
    }
    /* Flushed to the kernel before the version is announced: a learner
     * killed right after still leaves every line of what it published. */
    if (fflush(l->trained_log) != 0)
        log_error("learner: write trained log '%s': %s", l->cfg.trained_log_path, strerror(errno));
}

void learner_record_metrics(Learner *l, const AlgoStats *st, const LearnerBatchInfo *bi,
                            double step_s)
{
    double n = bi->n_samples > 0 ? bi->n_samples : 1;
    double mean = bi->reward_sum / n;
    double var = bi->reward_sq / n - mean * mean;
    double wall = progress_now() - l->t_loop;
    double sps = wall > 0 ? (double)l->samples_total / wall : 0;
    double tps = wall > 0 ? (double)l->tokens_total / wall : 0;
    l->last_reward = mean;
    l->last_accuracy = bi->n_correct / n;
    l->last_kl = st->kl_ref_k3;
    l->last_stale = bi->tokens > 0 ? bi->stale_sum / (double)bi->tokens : 0;
    LeaseCounters c;
    lease_counters(l->leases, &c);
    /* The endpoint gets the numbers of this record, before it is written. */
    learner_metrics_step(l, &c, st, bi, step_s, sps);
    if (!l->metrics) return;
    json_t *hist = json_array();
    for (int i = 0; i < ALGO_STALENESS_BUCKETS; i++)
        json_array_append_new(hist, json_integer((json_int_t)st->staleness_hist[i]));
    json_t   *rej = json_object();
    WireSock *socks[4] = {l->s_lease, l->s_results, l->s_snap, l->s_weights};
    for (int i = 0; i < 4; i++) {
        char buf[256];
        wire_rejects_format(wire_sock_rejects(socks[i]), buf, sizeof buf);
        json_object_set_new(rej, wire_sock_name(socks[i]),
                            json_pack("{s:I, s:s}", "total",
                                      (json_int_t)wire_rejects_total(wire_sock_rejects(socks[i])),
                                      "reasons", buf));
    }
    json_t *o = json_object();
#define SETR(k, v) json_object_set_new(o, k, json_real((double)(v)))
#define SETI(k, v) json_object_set_new(o, k, json_integer((json_int_t)(v)))
    SETI("step", l->step);
    SETI("version", l->version);
    SETI("epoch", l->epoch);
    json_object_set_new(o, "algo", json_string(learner_algo_name(l->cfg.algo.kind)));
    SETR("wall_s", progress_now() - l->t_start);
    SETR("step_s", step_s);
    SETI("groups", bi->n_samples / l->cfg.group_size);
    SETI("samples", bi->n_samples);
    SETI("tokens", bi->tokens);
    SETR("reward_mean", mean);
    SETR("reward_std", var > 0 ? sqrt(var) : 0);
    SETR("accuracy", bi->n_correct / n);
    if (bi->n_comp > 0) {
        json_t *comp = json_object();
        for (int i = 0; i < bi->n_comp; i++)
            json_object_set_new(comp, bi->comp_name[i],
                                json_real(bi->comp_sum[i] / (bi->comp_n[i] ? bi->comp_n[i] : 1)));
        json_object_set_new(o, "components", comp);
    }
    SETR("kl_ref", st->kl_ref_k3);
    SETR("kl_ref_k1", st->kl_ref_k1);
    SETR("kl_ref_seq", st->kl_ref_seq);
    SETR("kl_beta", st->kl_beta);
    SETR("overlong_frac", st->overlong_frac);
    SETI("groups_flat", l->groups_flat);
    if (l->cfg.algo.kind == ALGO_REINFORCE) SETR("baseline", st->baseline);
    SETR("entropy", st->entropy);
    SETR("loss", st->loss);
    SETR("policy_loss", st->policy_loss);
    SETR("clip_frac", st->clip_frac);
    SETR("clip_low_frac", st->clip_low_frac);
    SETR("clip_high_frac", st->clip_high_frac);
    SETR("cap_frac", st->cap_frac);
    SETR("ratio_mean", st->ratio_mean);
    SETR("ratio_min", st->ratio_min);
    SETR("ratio_max", st->ratio_max);
    SETR("is_weight_mean", st->is_weight_mean);
    SETR("adv_abs_mean", st->adv_abs_mean);
    SETR("zero_adv_group_frac", st->zero_adv_group_frac);
    json_object_set_new(o, "staleness_hist", hist);
    SETR("staleness_mean", l->last_stale);
    SETI("staleness_max", bi->stale_max);
    SETI("n_fresh", st->n_fresh);
    SETR("mismatch_abs", st->mismatch_abs);
    SETR("mismatch_k3", st->mismatch_k3);
    SETR("grad_norm", st->grad_norm);
    SETR("grad_norm_max", st->grad_norm_max);
    SETR("lr", st->lr);
    SETI("opt_steps", st->n_opt_steps);
    if (l->cfg.algo.kind == ALGO_PPO) {
        SETR("value_loss", st->value_loss);
        SETR("value_clip_frac", st->value_clip_frac);
        SETR("value_mean", st->value_mean);
        SETR("explained_var", st->explained_var);
        SETR("critic_grad_norm", st->critic_grad_norm);
    }
    SETR("samples_per_s", sps);
    SETR("tokens_per_s", tps);
    SETI("issued", c.issued);
    SETI("trained", c.trained);
    SETI("dropped_stale", c.dropped_stale);
    SETI("reissued", c.reissued);
    SETI("failed", c.failed);
    SETI("duplicates", c.duplicates + l->dup_epoch);
    SETI("in_flight", c.in_flight);
    SETI("buffered", c.buffered);
    SETI("leases", c.leases);
    SETI("leases_expired", c.leases_expired);
    SETI("snapshots_served", l->snapshots_served);
    SETI("grants_credit", l->grants_credit);
    json_object_set_new(o, "rejects", rej);
    SETI("refused_auth", auth_refused(l->auth));
#undef SETR
#undef SETI
    char *line = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(6));
    json_decref(o);
    /* Non-finite statistics would make json_dumps fail; the line is then skipped. */
    if (line) {
        fprintf(l->metrics, "%s\n", line);
        fflush(l->metrics);
        free(line);
    }
}

void learner_record_status_line(Learner *l)
{
    LeaseCounters c;
    lease_counters(l->leases, &c);
    double wall = progress_now() - l->t_loop;
    log_info("step %" PRId64 "/%d v%" PRId64 " reward %.3f acc %.3f kl %.4f stale %.2f "
             "samples/s %.1f | leases issued %" PRIu64 " trained %" PRIu64 " stale %" PRIu64
             " reissued %" PRIu64 " failed %" PRIu64 " dup %" PRIu64 " in-flight %" PRIu64
             " buffered %" PRIu64 " | rejects lease %" PRIu64 " results %" PRIu64
             " snapshot %" PRIu64 " weights %" PRIu64 " refused %" PRIu64,
             l->step, l->cfg.steps, l->version, l->last_reward, l->last_accuracy, l->last_kl,
             l->last_stale, wall > 0 ? (double)l->samples_total / wall : 0.0, c.issued, c.trained,
             c.dropped_stale, c.reissued, c.failed, c.duplicates + l->dup_epoch, c.in_flight,
             c.buffered, wire_rejects_total(wire_sock_rejects(l->s_lease)),
             wire_rejects_total(wire_sock_rejects(l->s_results)),
             wire_rejects_total(wire_sock_rejects(l->s_snap)),
             wire_rejects_total(wire_sock_rejects(l->s_weights)), auth_refused(l->auth));
}

int learner_record_summary(Learner *l, bool stopped)
{
    if (!l->cfg.summary_path) return 0;
    int rc = make_parents(l->cfg.summary_path, false);
    if (rc) return rc;
    LeaseCounters c;
    lease_counters(l->leases, &c);
    double wall = progress_now() - l->t_loop;
    bool   ok =
        c.issued == c.trained + c.dropped_stale + c.reissued + c.failed + c.in_flight + c.buffered;
    json_t *o = json_object();
#define NUM(v) (isfinite(v) ? json_real(v) : json_null())
    json_object_set_new(o, "run_id", json_string(l->run_id));
    json_object_set_new(o, "epoch", json_integer((json_int_t)l->epoch));
    json_object_set_new(o, "algo", json_string(learner_algo_name(l->cfg.algo.kind)));
    json_object_set_new(o, "accuracy_before", NUM(l->accuracy_before));
    json_object_set_new(o, "accuracy_start", NUM(l->accuracy_start));
    json_object_set_new(o, "accuracy_after", NUM(l->accuracy_after));
    json_object_set_new(o, "reward_before", NUM(l->reward_before));
    json_object_set_new(o, "reward_start", NUM(l->reward_start));
    json_object_set_new(o, "reward_after", NUM(l->reward_after));
    json_object_set_new(o, "task", json_string(learner_task_name(l)));
    if (l->cfg.model_path) json_object_set_new(o, "model", json_string(l->cfg.model_path));
    json_object_set_new(o, "eval_n", json_integer(l->cfg.eval_n));
    json_object_set_new(o, "steps", json_integer((json_int_t)l->step));
    json_object_set_new(o, "version", json_integer((json_int_t)l->version));
    json_object_set_new(o, "samples", json_integer((json_int_t)l->samples_total));
    json_object_set_new(o, "samples_per_s", NUM(wall > 0 ? l->samples_total / wall : 0));
    json_object_set_new(o, "tokens_per_s", NUM(wall > 0 ? l->tokens_total / wall : 0));
    json_object_set_new(o, "wall_s", NUM(progress_now() - l->t_start));
    json_object_set_new(o, "train_wall_s", NUM(wall));
    json_object_set_new(o, "issued", json_integer((json_int_t)c.issued));
    json_object_set_new(o, "trained", json_integer((json_int_t)c.trained));
    json_object_set_new(o, "dropped_stale", json_integer((json_int_t)c.dropped_stale));
    json_object_set_new(o, "reissued", json_integer((json_int_t)c.reissued));
    json_object_set_new(o, "failed", json_integer((json_int_t)c.failed));
    json_object_set_new(o, "duplicates", json_integer((json_int_t)(c.duplicates + l->dup_epoch)));
    json_object_set_new(o, "groups_flat", json_integer((json_int_t)l->groups_flat));
    json_object_set_new(o, "in_flight", json_integer((json_int_t)c.in_flight));
    json_object_set_new(o, "buffered", json_integer((json_int_t)c.buffered));
    json_object_set_new(o, "accounting_ok", json_boolean(ok));
    json_object_set_new(
        o, "rejects_lease",
        json_integer((json_int_t)wire_rejects_total(wire_sock_rejects(l->s_lease))));
    json_object_set_new(
        o, "rejects_results",
        json_integer((json_int_t)wire_rejects_total(wire_sock_rejects(l->s_results))));
    json_object_set_new(o, "rejects_snapshot",
                        json_integer((json_int_t)wire_rejects_total(wire_sock_rejects(l->s_snap))));
    json_object_set_new(o, "grants_credit", json_integer((json_int_t)l->grants_credit));
    json_object_set_new(o, "refused_auth", json_integer((json_int_t)auth_refused(l->auth)));
    json_object_set_new(o, "stopped_early", json_boolean(stopped));
    LearnerMemory lm;
    learner_train_memory(l, &lm);
    Lora *lo = model_lora(l->policy);
    json_object_set_new(o, "memory_bytes",
                        json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "per_step",
                                  (json_int_t)lm.total, "weights", (json_int_t)lm.weights,
                                  "adapters", (json_int_t)lm.adapters, "gradients",
                                  (json_int_t)lm.grads, "optimizer", (json_int_t)lm.optimizer,
                                  "activations", (json_int_t)lm.acts, "full_fine_tuning",
                                  (json_int_t)lm.full_ft, "merged_copy", (json_int_t)lm.merged));
    json_object_set_new(o, "lora_rank", json_integer(lo ? lora_config(lo)->rank : 0));
    json_object_set_new(o, "snapshot_bytes_full",
                        json_integer((json_int_t)learner_publish_bytes(l)));
    json_object_set_new(o, "snapshot_bytes_adapters",
                        json_integer((json_int_t)learner_publish_adapter_bytes(l)));
    json_object_set_new(o, "snapshots_served", json_integer((json_int_t)l->snapshots_served));
    json_object_set_new(o, "snapshots_adapters", json_integer((json_int_t)l->snapshots_adapters));
#undef NUM
    char *text = json_dumps(o, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
    json_decref(o);
    CHECK(text);
    size_t len = strlen(text);
    text[len] = '\n'; /* the NUL is replaced; the length is written explicitly */
    rc = fileio_write_atomic(l->cfg.summary_path, text, len + 1);
    free(text);
    if (rc == 0) log_info("summary: %s", l->cfg.summary_path);
    return rc;
}
