#include "learner/learner.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "common/formats/ckpt.h"
#include "common/net/reactor.h"
#include "common/tasks/score.h"
#include "learner/epoch.h"
#include "learner/learner_int.h"
#include "learner/learner_intake.h"
#include "learner/learner_metrics.h"
#include "learner/learner_publish.h"
#include "learner/learner_record.h"
#include "learner/learner_serve.h"
#include "learner/learner_setup.h"
#include "learner/learner_task.h"
#include "learner/learner_train.h"

#define ANNOUNCE_EVERY_MS 1000 /* re-announce the current version for late subscribers */
#define LEARNER_BURST 256      /* messages taken from one socket per pass */

/* Whether the LoRA target list does not parse; the reason, naming the
 * list, goes to why. */
static bool bad_lora_targets(const char *s, char *why, size_t why_len)
{
    unsigned t;
    char     w[200];
    if (!lora_parse_targets(s, &t, w, sizeof w)) return false;
    snprintf(why, why_len, "lora_targets '%s': %s", s ? s : "", w);
    return true;
}

int learner_config_validate(const LearnerConfig *c, char *why, size_t why_len)
{
    char        tmp[384];
    const char *bad = NULL;
    ScoreSpec   spec;
    if (!c->lease_ep || !c->results_ep || !c->weights_ep || !c->snapshot_ep)
        bad = "every endpoint is required";
    else if (auth_check_bind(&c->auth, c->lease_ep, tmp, sizeof tmp) ||
             auth_check_bind(&c->auth, c->results_ep, tmp, sizeof tmp) ||
             auth_check_bind(&c->auth, c->weights_ep, tmp, sizeof tmp) ||
             auth_check_bind(&c->auth, c->snapshot_ep, tmp, sizeof tmp))
        bad = tmp;
    else if (c->steps < 0)
        bad = "steps must be >= 0";
    else if (c->batch_groups < 1 || c->batch_groups > 4096)
        bad = "batch_groups must be in 1..4096";
    else if (c->group_size < 1 || c->group_size > WIRE_MAX_GROUP)
        bad = "group_size out of range";
    else if (c->lease_prompts < 1 || c->lease_prompts > LEARNER_MAX_LEASE_PROMPTS)
        bad = "lease_prompts must be in 1..LEARNER_MAX_LEASE_PROMPTS";
    else if (c->lease_timeout_ms < 1)
        bad = "lease_timeout_ms must be > 0";
    else if (c->max_staleness < 0 || c->max_staleness > 1000)
        bad = "max_staleness out of range";
    else if (c->lease_credit < 0 || c->lease_credit_key < 0 || c->snapshot_queue_mb < 0 ||
             c->snapshot_queue_mb > (1 << 20))
        bad = "lease_credit, lease_credit_key and snapshot_queue_mb must be >= 0 (0 = default)";
    else if (c->max_new_tokens < 1 || c->max_new_tokens > 1024)
        bad = "max_new_tokens out of range";
    else if (!(c->lr >= 0.0f && c->lr <= 1.0f))
        bad = "lr must be in [0, 1]";
    else if (c->lr_warmup_steps < 0)
        bad = "lr_warmup_steps must be >= 0";
    else if (!(c->grad_clip >= 0.0f) || !isfinite(c->grad_clip))
        bad = "grad_clip must be >= 0";
    else if (c->lora_rank < 0 || c->lora_rank > LORA_MAX_RANK)
        bad = "lora_rank must be in 0..LORA_MAX_RANK (0 = off)";
    else if (c->lora_rank > 0 && (!isfinite(c->lora_alpha) || !(c->lora_alpha > 0.0f)))
        bad = "lora_alpha must be finite and > 0";
    else if (c->lora_rank > 0 && bad_lora_targets(c->lora_targets, tmp, sizeof tmp))
        bad = tmp;
    else if (c->model_path && c->init_dir)
        bad = "model_path and init_dir exclude each other";
    else if (c->critic_init && c->algo.kind != ALGO_PPO)
        bad = "critic_init (--critic-init) applies to --algo ppo only (the others have no critic)";
    else if (c->max_digits < 1 || c->max_digits > 6)
        bad = "max_digits must be in 1..6";
    else if (c->data_max_bad < 0 || c->data_max_bad > 100)
        bad = "data_max_bad must be in 0..100";
    else if (c->data_task &&
             score_spec_parse(c->data_task, score_builtin, NULL, &spec, tmp, sizeof tmp) != 0)
        bad = tmp;
    else if (c->eval_n < 0 || c->eval_every < 0 || c->ckpt_every < 0)
        bad = "eval_n, eval_every and ckpt_every must be >= 0";
    else if (c->ckpt_keep < 1 || c->ckpt_keep > CKPT_KEEP_MAX)
        bad = "ckpt_keep must be in 1..CKPT_KEEP_MAX";
    else if (!(isfinite(c->reward_min) && isfinite(c->reward_max) && c->reward_min < c->reward_max))
        bad = "reward_min and reward_max must be finite with reward_min < reward_max";
    else if (c->poll_ms < 1 || c->poll_ms > 10000)
        bad = "poll_ms must be in 1..10000";
    else if (!(c->status_every_s >= 0.0))
        bad = "status_every_s must be >= 0";
    else if (c->chunk_bytes < 0 || c->chunk_bytes % 4 ||
             (size_t)c->chunk_bytes > WIRE_MAX_CHUNK_BYTES)
        bad = "chunk_bytes must be a multiple of 4 up to WIRE_MAX_CHUNK_BYTES";
    else if (algo_config_validate(&c->algo, tmp, sizeof tmp) != 0)
        bad = tmp;
    else if (!(c->metrics_stale_s > 0.0))
        bad = "metrics_stale_s must be > 0";
    if (bad) {
        if (why) snprintf(why, why_len, "%s", bad);
        return ERR_ARG;
    }
    return 0;
}

/* ---- Construction ----------------------------------------------------- */

/* The update's carried state of the resumed checkpoint (algo.h AlgoCarry):
 * a malformed one is refused with the checkpoint, not silently reset. */
static int learner_restore_algo(Learner *l, const json_t *st)
{
    json_t   *b = json_object_get(st, "kl_beta"), *m = json_object_get(st, "baseline");
    json_t   *h = json_object_get(st, "has_baseline");
    AlgoCarry c = {.kl_beta = json_number_value(b),
                   .baseline = json_number_value(m),
                   .has_baseline = json_is_true(h)};
    if (!json_is_number(b) || !json_is_number(m) || !json_is_boolean(h) ||
        algo_carry_set(l->algo, &c) != 0) {
        log_error("learner: '%s': trainer state's algo_state is malformed", l->cfg.ckpt_dir);
        return ERR_FORMAT;
    }
    json_decref(l->resume_algo_state);
    l->resume_algo_state = NULL;
    log_info("learner: resumed the update's state: KL coefficient %g, baseline %g%s",
             algo_kl_beta(l->algo), c.baseline, c.has_baseline ? "" : " (none yet)");
    return 0;
}

Learner *learner_new(const LearnerConfig *cfg)
{
    char why[200];
    if (learner_config_validate(cfg, why, sizeof why)) {
        log_error("learner_new: bad config: %s", why);
        return NULL;
    }
    Learner *l = xcalloc(1, sizeof *l);
    l->cfg = *cfg;
    l->task = TASK_DEFAULTS;
    l->task.max_digits = cfg->max_digits;
    l->chat = CHAT_TASK_DEFAULTS;
    l->chat.max_digits = cfg->max_digits;
    l->prompt_seed = cfg->seed + 2000;
    l->eval_seed = cfg->seed + 1000;
    l->checksum_version = -1;
    l->accuracy_after = l->reward_after = NAN;
    l->t_start = progress_now();
    json_t *lease_state = NULL;
    int     rc = learner_setup_models(l, &lease_state);
    if (rc) goto fail;
    bool       fresh = lease_state == NULL;
    AlgoConfig ac = cfg->algo;
    ac.seed = cfg->seed ^ (l->epoch << 20);
    ac.max_new_tokens = cfg->max_new_tokens;
    /* The reference even without a KL term: the KL to it is measured (and
     * recorded) for every algorithm, at one reference forward per batch. */
    l->algo = algo_new(&ac, l->policy, l->opt, l->ref, l->critic, l->critic_opt);
    if (l->resume_algo_state && (rc = learner_restore_algo(l, l->resume_algo_state))) goto fail;
    LeaseConfig lc = {.lease_prompts = cfg->lease_prompts,
                      .timeout_ms = cfg->lease_timeout_ms,
                      .max_staleness = cfg->max_staleness,
                      .batch_groups = cfg->batch_groups};
    l->leases = lease_new(&lc, epoch_first_lease_id(l->epoch), 0);
    if (lease_state) {
        rc = lease_state_load(l->leases, lease_state);
        json_decref(lease_state);
        if (rc) goto fail;
    }
    l->lim_req = (WireLimits){.vocab_size = model_config(l->policy)->vocab_size};
    l->lim_results =
        (WireLimits){.vocab_size = model_config(l->policy)->vocab_size, .run_id = l->run_id};
    learner_publish_config(l);

    if ((rc = learner_train_evaluate(l, &l->accuracy_start, &l->reward_start))) goto fail;
    if (isnan(l->accuracy_before)) l->accuracy_before = l->accuracy_start;
    if (isnan(l->reward_before)) l->reward_before = l->reward_start;
    /* Make the new epoch durable before anyone can see it. */
    if ((rc = learner_record_ckpt(l, false))) goto fail;
    if ((rc = learner_record_open_metrics(l, fresh))) goto fail;
    if ((rc = learner_serve_open(l))) goto fail;
    if ((rc = learner_metrics_open(l))) goto fail;
    log_info("run %s epoch %" PRIu64 " version %" PRId64 "; %s, %zu params, %d steps of "
             "%d groups x %d; leases of %d prompts, %d ms, max staleness %d",
             l->run_id, l->epoch, l->version, learner_algo_name(cfg->algo.kind),
             model_num_params(l->policy), cfg->steps, cfg->batch_groups, cfg->group_size,
             cfg->lease_prompts, cfg->lease_timeout_ms, cfg->max_staleness);
    Lora *lo = model_lora(l->policy);
    if (lo)
        log_info(
            "LoRA: rank %d, alpha %g, %zu adapter parameters on %zu frozen; snapshots: %zu "
            "bytes with the base (an actor's first), then %zu bytes of adapters alone per "
            "version (%.2f%%)",
            lora_config(lo)->rank, (double)lora_config(lo)->alpha, lora_num_params(lo),
            model_num_params(l->policy), learner_publish_bytes(l), learner_publish_adapter_bytes(l),
            100.0 * (double)learner_publish_adapter_bytes(l) / (double)learner_publish_bytes(l));
    return l;
fail:
    log_error("learner_new: %s", err_str(rc));
    learner_free(&l);
    return NULL;
}

void learner_free(Learner **lp)
{
    if (!lp || !*lp) return;
    Learner *l = *lp;
    learner_metrics_close(l); /* its server reads the registry: first */
    learner_intake_free(l);
    learner_task_free(l);
    learner_serve_close(l);
    if (l->metrics) fclose(l->metrics);
    if (l->trained_log) fclose(l->trained_log);
    free(l->config_json);
    free(l->snap_half);
    model_free(&l->merged);
    free(l->snap_lora);
    free(l->traj);
    free(l->prompt_tok);
    free(l->tok_version);
    algo_free(&l->algo);
    json_decref(l->resume_algo_state);
    lease_free(&l->leases);
    optim_free(&l->opt);
    optim_free(&l->critic_opt);
    model_free(&l->critic);
    model_free(&l->ref);
    model_free(&l->policy);
    tok_free(&l->tok);
    bpe_free(&l->bpe);
    free(l);
    *lp = NULL;
}

/* ---- The loop --------------------------------------------------------- */

static int on_announce(Reactor *r, void *arg)
{
    learner_publish_announce(arg);
    return 0;
}

static int on_status(Reactor *r, void *arg)
{
    learner_record_status_line(arg);
    return 0;
}

static int on_lease_expiry(Reactor *r, void *arg)
{
    Learner *l = arg;
    lease_expire(l->leases, learner_mono_ms());
    return 0;
}

/* The training step, run after the sockets and timers of each pass: one
 * update if a batch is ready, then the periodic checkpoint and evaluation.
 * Ends the loop at cfg.steps; reports more work while a batch is ready, so
 * the next poll does not wait. */
static int on_idle(Reactor *r, void *arg)
{
    Learner *l = arg;
    learner_metrics_tick(l);
    if (learner_train_step(l)) {
        if (l->cfg.ckpt_every > 0 && l->step % l->cfg.ckpt_every == 0 && l->step < l->cfg.steps)
            learner_record_ckpt(l, false); /* logged; training goes on, the next one may succeed */
        if (l->cfg.eval_every > 0 && l->step % l->cfg.eval_every == 0 && l->step < l->cfg.steps) {
            double acc, reward;
            learner_train_evaluate(l, &acc, &reward);
        }
    }
    if (l->step >= l->cfg.steps) {
        reactor_stop(r);
        return 0;
    }
    return l->n_pend >= l->cfg.batch_groups;
}

int learner_run(Learner *l, atomic_int *stop)
{
    CHECK(l && stop);
    l->t_loop = progress_now();
    learner_publish_announce(l);
    /* The sockets through the dispatch table, then three timers: lease
     * expiry as often as the loop used to look (every poll_ms), the
     * re-announce for late subscribers, the status line (0 = none; a
     * sub-millisecond period still prints, every millisecond). */
    Reactor *r = reactor_new("learner", l->cfg.poll_ms);
    learner_serve_register(l, r, LEARNER_BURST);
    int64_t status_ms = 0;
    if (l->cfg.status_every_s > 0) {
        status_ms = (int64_t)(l->cfg.status_every_s * 1000.0);
        if (status_ms < 1) status_ms = 1;
    }
    CHECK(reactor_add_timer(r, "lease expiry", l->cfg.poll_ms, false, on_lease_expiry, l) == 0);
    CHECK(reactor_add_timer(r, "announce", ANNOUNCE_EVERY_MS, false, on_announce, l) == 0);
    CHECK(reactor_add_timer(r, "status", status_ms, false, on_status, l) == 0);
    reactor_set_idle(r, on_idle, l);
    int rc = 0;
    if (l->step < l->cfg.steps) rc = reactor_run(r, stop);
    reactor_free(&r);
    bool stopped = l->step < l->cfg.steps;
    if (stopped) log_info("stopping at step %" PRId64 " (signal)", l->step);
    if (!stopped || rc == 0) {
        int erc = learner_train_evaluate(l, &l->accuracy_after, &l->reward_after);
        if (erc) log_error("learner: final evaluation failed (%s)", err_str(erc));
    }
    int src = 0;
    if (l->step > l->last_ckpt_step || !stopped) src = learner_record_ckpt(l, !stopped);
    int           wrc = learner_record_summary(l, stopped);
    LeaseCounters c;
    lease_counters(l->leases, &c);
    log_info("done: %" PRId64 " steps, accuracy %.3f -> %.3f, reward %.3f -> %.3f; leases "
             "issued %" PRIu64 " trained %" PRIu64 " stale %" PRIu64 " reissued %" PRIu64
             " failed %" PRIu64 " in flight %" PRIu64 " buffered %" PRIu64,
             l->step, l->accuracy_before, l->accuracy_after, l->reward_before, l->reward_after,
             c.issued, c.trained, c.dropped_stale, c.reissued, c.failed, c.in_flight, c.buffered);
    return rc ? rc : src ? src : wrc;
}

void learner_status(const Learner *l, LearnerStatus *out)
{
    memset(out, 0, sizeof *out);
    snprintf(out->run_id, sizeof out->run_id, "%s", l->run_id);
    out->epoch = l->epoch;
    out->version = l->version;
    out->step = l->step;
    lease_counters(l->leases, &out->lease);
    out->lease.duplicates += l->dup_epoch;
    out->dup_epoch = l->dup_epoch;
    if (l->s_lease) {
        out->rejects_lease = wire_rejects_total(wire_sock_rejects(l->s_lease));
        out->rejects_results = wire_rejects_total(wire_sock_rejects(l->s_results));
        out->rejects_snapshot = wire_rejects_total(wire_sock_rejects(l->s_snap));
    }
    out->snapshots_served = l->snapshots_served;
    out->grants_empty = l->grants_empty;
    out->grants_credit = l->grants_credit;
    out->accuracy_before = l->accuracy_before;
    out->accuracy_after = l->accuracy_after;
    out->reward_before = l->reward_before;
    out->reward_after = l->reward_after;
    out->refused_auth = auth_refused(l->auth);
}

int learner_endpoint(Learner *l, const char *which, char *buf, size_t cap)
{
    WireSock *s = !strcmp(which, "lease")      ? l->s_lease
                  : !strcmp(which, "results")  ? l->s_results
                  : !strcmp(which, "weights")  ? l->s_weights
                  : !strcmp(which, "snapshot") ? l->s_snap
                                               : NULL;
    if (!s) return ERR_ARG;
    return wire_last_endpoint(s, buf, cap);
}

Model *learner_policy(Learner *l)
{
    return l->policy;
}
