#include "learner/learner_setup.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "common/base/rng.h"
#include "common/formats/ckpt.h"
#include "common/formats/ckpt_config.h"
#include "common/formats/bpe_gguf.h"
#include "common/formats/gguf.h"
#include "common/formats/gguf_llama.h"
#include "learner/epoch.h"
#include "learner/learner_config.h"
#include "learner/learner_record.h"
#include "learner/learner_task.h"
#include "learner/sft.h"

static void new_run_id(char out[33], uint64_t seed)
{
    unsigned char b[16];
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) {
        /* No entropy source: time, pid and seed still make collisions unlikely. */
        Rng r;
        rng_seed(&r, seed ^ (uint64_t)learner_wall_ms() ^ ((uint64_t)getpid() << 32));
        for (int i = 0; i < 16; i++) b[i] = (unsigned char)rng_u64(&r);
    }
    for (int i = 0; i < 16; i++) snprintf(out + 2 * i, 3, "%02x", b[i]);
}

/* Loads the model of checkpoint dir, with its LoRA adapters attached when
 * it has them, and its char tokenizer into *tok when tok is non-NULL and
 * *tok is NULL (tok NULL: the BPE comes from the GGUF). */
static int load_model_dir(const char *dir, Tok **tok, Model **m)
{
    ModelConfig mc;
    Lora       *lo = NULL;
    int         rc;
    if ((rc = ckpt_load_config(dir, &mc))) return rc;
    if (tok && !*tok && (rc = ckpt_load_tok(dir, tok))) return rc;
    rc = ckpt_load_lora(dir, &mc, &lo);
    if (rc && rc != ERR_NOTFOUND) return rc;
    *m = model_new(&mc);
    if (lo) model_attach_lora(*m, &lo);
    rc = ckpt_load(dir, *m);
    if (rc == ERR_AGAIN) rc = ckpt_load(dir, *m); /* a save replaced it between reads */
    if (rc) model_free(m);
    return rc;
}

/* Whether the adapters of a resumed policy (or their absence) are what the
 * flags ask for: a run does not switch between LoRA and full fine-tuning,
 * nor change the adapters' shape, part-way (the optimizer state would not
 * fit). Returns 0 or ERR_MISMATCH, logged naming both sides. */
static int check_resumed_lora(const Learner *l, const char *dir)
{
    const LearnerConfig *c = &l->cfg;
    const Lora          *lo = model_lora(l->policy);
    char                 have[64] = "", want[64] = "";
    unsigned             targets = 0;
    if (c->lora_rank > 0) CHECK(lora_parse_targets(c->lora_targets, &targets, NULL, 0) == 0);
    if (lo) lora_format_targets(lora_config(lo)->targets, have, sizeof have);
    lora_format_targets(targets, want, sizeof want);
    bool same = lo ? c->lora_rank == lora_config(lo)->rank &&
                         c->lora_alpha == lora_config(lo)->alpha &&
                         targets == lora_config(lo)->targets
                   : c->lora_rank == 0;
    if (same) return 0;
    if (!lo)
        log_error("learner: '%s' is a full fine-tuning checkpoint; it cannot resume with "
                  "--lora-rank %d (start a new --ckpt-dir with --init '%s' to put adapters on it)",
                  dir, c->lora_rank, dir);
    else
        log_error("learner: '%s' trains LoRA adapters of rank %d, alpha %g on %s; the flags ask "
                  "for rank %d, alpha %g on %s (resume with the checkpoint's)",
                  dir, lora_config(lo)->rank, (double)lora_config(lo)->alpha, have, c->lora_rank,
                  (double)c->lora_alpha, c->lora_rank ? want : "none (full fine-tuning)");
    return ERR_MISMATCH;
}

/* Puts new adapters of the flags' shape on a fresh run's policy (A random
 * from the seed, B zero: the policy is unchanged). Returns 0, or ERR_ARG
 * when the rank does not fit the model's projections (logged). */
static int attach_new_lora(Learner *l)
{
    const LearnerConfig *c = &l->cfg;
    if (c->lora_rank == 0) return 0;
    LoraConfig lc = {.rank = c->lora_rank, .alpha = c->lora_alpha};
    char       why[200];
    CHECK(lora_parse_targets(c->lora_targets, &lc.targets, NULL, 0) == 0);
    if (lora_config_validate(&lc, model_config(l->policy), why, sizeof why)) {
        log_error("learner: --lora-rank %d on this model: %s", c->lora_rank, why);
        return ERR_ARG;
    }
    if (model_lora(l->policy)) {
        log_error("learner: the --init checkpoint already has LoRA adapters; export it merged "
                  "(rlhf-export) to train new ones on it");
        return ERR_ARG;
    }
    Lora *lo = lora_new(&lc, model_config(l->policy));
    lora_init_random(lo, c->seed + 31);
    model_attach_lora(l->policy, &lo);
    return 0;
}

/* Reads the trainer state of learner checkpoint dir. Returns 0, 1 if the
 * checkpoint is a finished run that is not to be resumed, or an error. */
static int read_resume_state(Learner *l, const char *dir, CkptTrainerState *ts,
                             json_t **lease_state)
{
    int rc = ckpt_load_trainer_state(dir, ts);
    if (rc) {
        log_error("learner: '%s' holds a checkpoint without a trainer state (%s); refusing to "
                  "resume from or overwrite it",
                  dir, err_str(rc));
        return rc == ERR_NOTFOUND ? ERR_MISMATCH : rc;
    }
    json_t *x = ts->extra;
    if (!json_is_object(x) || !json_is_true(json_object_get(x, "rlhf_learner"))) {
        log_error("learner: '%s' is not a learner checkpoint (run id '%s'); refusing to resume "
                  "from or overwrite it",
                  dir, ts->run_id);
        return ERR_MISMATCH;
    }
    json_t *ep = json_object_get(x, "epoch");
    json_t *ls = json_object_get(x, "lease");
    if (!json_is_integer(ep) || json_integer_value(ep) < 0 || !json_is_object(ls) ||
        ts->run_id[0] == '\0' || strlen(ts->run_id) > 32 || ts->policy_version < 0) {
        log_error("learner: '%s': trainer state lacks a valid epoch, lease state or run id", dir);
        return ERR_FORMAT;
    }
    if (json_is_true(json_object_get(x, "finished")) && ts->step >= l->cfg.steps) {
        log_warn("learner: '%s' holds a finished run (%s, step %" PRId64
                 " >= --steps %d); starting a fresh run over it",
                 dir, ts->run_id, ts->step, l->cfg.steps);
        return 1;
    }
    json_t *md = json_object_get(x, "max_digits");
    if (json_is_integer(md) && json_integer_value(md) != l->cfg.max_digits)
        log_warn("learner: the checkpoint trained on %lld-digit operands, now %d",
                 (long long)json_integer_value(md), l->cfg.max_digits);
    /* Never an epoch an earlier incarnation ran, even from a restored copy:
     * learner/epoch.h. */
    l->epoch = epoch_next((uint64_t)json_integer_value(ep), epoch_nonce());
    l->step = ts->step;
    l->version = ts->policy_version;
    snprintf(l->run_id, sizeof l->run_id, "%s", ts->run_id);
    json_t *ab = json_object_get(x, "accuracy_before");
    l->accuracy_before = json_is_number(ab) ? json_number_value(ab) : NAN;
    json_t *rb = json_object_get(x, "reward_before");
    l->reward_before = json_is_number(rb) ? json_number_value(rb) : NAN;
    json_t *id = json_object_get(x, "init_dir");
    if (json_is_string(id)) snprintf(l->init_dir, sizeof l->init_dir, "%s", json_string_value(id));
    json_decref(l->resume_algo_state);
    l->resume_algo_state = json_incref(json_object_get(x, "algo_state")); /* may be NULL */
    *lease_state = json_incref(ls);
    return 0;
}

/* Whether a load error means the checkpoint's files are damaged (a
 * checksum, a malformed or truncated file, a missing file, a non-finite
 * value, an unreadable disk), so an older one may be tried; other errors
 * (a checkpoint that is not a learner's, a newer format) are the operator's
 * to look at and stop the start. */
static bool is_damage(int rc)
{
    return rc == ERR_FORMAT || rc == ERR_NONFINITE || rc == ERR_IO || rc == ERR_NOTFOUND ||
           rc == ERR_RANGE || rc == ERR_AGAIN;
}

/* Resumes from checkpoint dir: its trainer state, its policy (and char
 * tokenizer) and its optimizer state, all or nothing. Returns 0, 1 for a
 * finished run (nothing loaded), or an error with nothing of dir kept. */
static int try_resume(Learner *l, const char *dir, CkptTrainerState *ts, json_t **lease_state)
{
    json_decref(ts->extra);
    memset(ts, 0, sizeof *ts);
    json_decref(*lease_state);
    *lease_state = NULL;
    l->init_dir[0] = '\0';
    int rc = read_resume_state(l, dir, ts, lease_state);
    if (rc) return rc;
    bool had_tok = l->tok != NULL;
    if ((rc = load_model_dir(dir, l->bpe ? NULL : &l->tok, &l->policy))) goto fail;
    if ((rc = check_resumed_lora(l, dir))) goto fail;
    size_t      n = model_num_train_params(l->policy);
    OptimConfig oc = learner_optim_config(&l->cfg);
    l->opt = optim_new(&oc, n);
    int64_t osteps = 0;
    rc = ckpt_load_optim(dir, optim_state_m(l->opt), optim_state_v(l->opt), n, &osteps);
    if (rc == ERR_NOTFOUND) {
        log_warn("learner: no optimizer state in '%s'; moments start at zero", dir);
        rc = 0;
    }
    if (rc) goto fail;
    optim_set_step_count(l->opt, osteps);
    return 0;
fail:
    optim_free(&l->opt);
    model_free(&l->policy);
    if (!had_tok) tok_free(&l->tok);
    json_decref(*lease_state);
    *lease_state = NULL;
    return rc;
}

/* Resumes from the newest checkpoint of cfg.ckpt_dir's history that loads
 * whole (see learner.h): damaged newer ones are logged, then set aside once
 * an older one has loaded. *resume says whether a run is resumed (false: no
 * checkpoint, or a finished run to start over); from gets its directory.
 * Returns 0, or an error when none loads or one is refused outright. */
static int resume_newest_good(Learner *l, CkptTrainerState *ts, json_t **lease_state, char *from,
                              bool *resume)
{
    const char *dir = l->cfg.ckpt_dir;
    CkptHistory h;
    *resume = false;
    int rc = ckpt_history(dir, &h);
    if (rc || h.n == 0 || !ckpt_exists(dir)) {
        /* No checkpoint: a fresh run, even beside kept ones of an older run
         * (removing the checkpoint is how an operator starts over). */
        if (rc == 0 && h.n > 0)
            log_warn("learner: no checkpoint at '%s'; starting a fresh run beside %d kept "
                     "one%s of an earlier run (%s<n>)",
                     dir, h.n, h.n > 1 ? "s" : "", CKPT_PREV_TAG);
        ckpt_history_free(&h);
        return rc;
    }
    int k = 0;
    for (; k < h.n; k++) {
        rc = try_resume(l, h.dirs[k], ts, lease_state);
        if (rc >= 0 || !is_damage(rc)) break;
        log_error("learner: checkpoint '%s' is damaged (%s)%s", h.dirs[k], err_str(rc),
                  k + 1 < h.n ? "; trying the one before it" : "");
    }
    if (rc < 0) {
        if (is_damage(rc))
            log_error("learner: none of the %d checkpoint%s of '%s' loads; refusing to start "
                      "over them (repair or remove them, or use another --ckpt-dir)",
                      h.n, h.n > 1 ? "s" : "", dir);
        goto done;
    }
    /* The damaged ones go aside; the one that loaded takes the newest's
     * place (in one exchange with it), so the directory never goes missing. */
    char aside[PATH_MAX];
    for (int j = 1; j < k; j++)
        if (ckpt_set_aside(h.dirs[j], aside) == 0)
            log_warn("learner: damaged checkpoint '%s' set aside as '%s'", h.dirs[j], aside);
    snprintf(from, PATH_MAX, "%s", h.dirs[k]);
    if (k > 0) {
        if (ckpt_restore(dir, h.dirs[k], aside) == 0) {
            log_warn("learner: damaged checkpoint '%s' set aside as '%s'", h.dirs[0], aside);
            snprintf(from, PATH_MAX, "%s", h.dirs[0]);
        }
        if (rc == 0)
            log_warn("learner: RESUMING FROM AN OLDER CHECKPOINT: '%s' (step %" PRId64
                     ", version %" PRId64 "), because %d newer checkpoint%s did not load; the "
                     "steps after it are lost; it is '%s' again",
                     h.dirs[k], ts->step, ts->policy_version, k, k > 1 ? "s" : "", from);
    }
    *resume = rc == 0;
    rc = 0;
done:
    ckpt_history_free(&h);
    return rc;
}

/* A new run's critic from a reward model (the original RLHF recipe's
 * choice: the value head starts as the reward model, body and head). The
 * reward model must have the critic's shape: the policy's, with the scalar
 * head. A resumed run keeps its own critic. */
static int critic_from_reward_model(Learner *l, const char *dir)
{
    ModelConfig mc;
    int         rc = ckpt_load_config(dir, &mc);
    if (rc) {
        log_error("learner: --critic-init '%s': no reward model config there (%s)", dir,
                  err_str(rc));
        return rc;
    }
    const ModelConfig *want = model_config(l->critic);
    mc.max_seq_len = want->max_seq_len; /* a capacity, not a shape (ckpt_load ignores it too) */
    if (!mc.has_value_head || !model_config_equal(&mc, want)) {
        log_error("learner: --critic-init '%s': %s (dim %d, %d layers, vocab %d); the critic is "
                  "the policy's shape with a scalar head (dim %d, %d layers, vocab %d)",
                  dir, mc.has_value_head ? "another model shape" : "no scalar head (score.weight)",
                  mc.dim, mc.n_layers, mc.vocab_size, want->dim, want->n_layers, want->vocab_size);
        return ERR_MISMATCH;
    }
    for (int attempt = 0; attempt < 3; attempt++)
        if ((rc = ckpt_load(dir, l->critic)) != ERR_AGAIN) break;
    if (rc) {
        log_error("learner: --critic-init '%s': %s", dir, err_str(rc));
        return rc;
    }
    log_info("learner: critic initialised from the reward model '%s'", dir);
    return 0;
}

/* The critic saved with the resumed policy: the newest of the critic's
 * history whose trainer state has the policy's run id, step and version and
 * that loads whole. Damaged ones are logged and set aside; without a good
 * match a new critic (already made from the policy) is kept, logged. */
static int resume_critic(Learner *l)
{
    char dir[PATH_MAX + 8];
    learner_record_critic_dir(l, dir, sizeof dir);
    CkptHistory h;
    int         rc = ckpt_history(dir, &h);
    if (rc) return rc;
    int matched = 0;
    for (int k = 0; k < h.n; k++) {
        CkptTrainerState cts = {0};
        bool             same = ckpt_load_trainer_state(h.dirs[k], &cts) == 0 &&
                    !strcmp(cts.run_id, l->run_id) && cts.step == l->step &&
                    cts.policy_version == l->version;
        json_decref(cts.extra);
        if (!same) continue;
        matched++;
        size_t  n = model_num_params(l->critic);
        int64_t osteps = 0;
        rc = ckpt_load(h.dirs[k], l->critic);
        if (rc == 0)
            rc = ckpt_load_optim(h.dirs[k], optim_state_m(l->critic_opt),
                                 optim_state_v(l->critic_opt), n, &osteps);
        if (rc == 0) {
            optim_set_step_count(l->critic_opt, osteps);
            if (k > 0) log_warn("learner: critic resumed from '%s'", h.dirs[k]);
            goto done;
        }
        if (!is_damage(rc)) {
            log_error("learner: cannot resume the critic from '%s'", h.dirs[k]);
            goto done;
        }
        char aside[PATH_MAX];
        log_error("learner: critic checkpoint '%s' is damaged (%s)", h.dirs[k], err_str(rc));
        if (ckpt_set_aside(h.dirs[k], aside) == 0)
            log_warn("learner: damaged critic checkpoint '%s' set aside as '%s'", h.dirs[k], aside);
    }
    /* A failed load may have written part of the critic: start it afresh. */
    Model *fresh = algo_critic_from_policy(l->policy, l->cfg.seed + 17, 0.02f);
    model_copy_params(l->critic, fresh);
    model_free(&fresh);
    memset(optim_state_m(l->critic_opt), 0, model_num_params(l->critic) * sizeof(float));
    memset(optim_state_v(l->critic_opt), 0, model_num_params(l->critic) * sizeof(float));
    optim_set_step_count(l->critic_opt, 0);
    if (matched)
        log_error("learner: no critic checkpoint beside '%s' loads; a new critic starts from "
                  "the policy",
                  l->cfg.ckpt_dir);
    else
        log_warn("learner: no critic beside '%s' for step %" PRId64 " of run %s; a new critic "
                 "starts from the policy",
                 l->cfg.ckpt_dir, l->step, l->run_id);
    rc = 0;
done:
    ckpt_history_free(&h);
    return rc;
}

int learner_setup_models(Learner *l, json_t **lease_state)
{
    const LearnerConfig *c = &l->cfg;
    int                  rc = 0;
    bool                 resume = false;
    CkptTrainerState     ts = {0};
    char                 from[PATH_MAX] = "";
    if (c->model_path && (rc = bpe_load(c->model_path, &l->bpe))) return rc;
    if (c->ckpt_dir && (rc = resume_newest_good(l, &ts, lease_state, from, &resume))) goto out;
    if (resume) {
        size_t n = model_num_params(l->policy);
        /* The reference is the run's initial policy: from --init, else from
         * where the run started; the resumed policy only as a last resort. */
        const char *ref_dir = c->init_dir ? c->init_dir : (l->init_dir[0] ? l->init_dir : NULL);
        if (c->init_dir) snprintf(l->init_dir, sizeof l->init_dir, "%s", c->init_dir);
        if (c->model_path) {
            rc = gguf_load(c->model_path, LEARNER_GGUF_MAX_SEQ, &l->ref);
            if (rc) goto out;
            if (model_num_params(l->ref) != n) {
                log_error("learner: model '%s' does not match the resumed policy", c->model_path);
                rc = ERR_MISMATCH;
                goto out;
            }
        } else if (ref_dir) {
            Tok *rt = l->tok;
            rc = load_model_dir(ref_dir, &rt, &l->ref);
            if (rc == 0 && !(model_config(l->ref)->dim == model_config(l->policy)->dim &&
                             model_num_params(l->ref) == n)) {
                log_error("learner: reference '%s' does not match the resumed policy", ref_dir);
                model_free(&l->ref);
            }
        }
        if (!l->ref) {
            log_warn("learner: no initial policy to use as the reference; using the resumed "
                     "policy (the KL term restarts from here)");
            l->ref = model_new(model_config(l->policy));
            model_copy_params(l->ref, l->policy);
        }
        log_info("resumed run %s from '%s': step %" PRId64 " version %" PRId64 " epoch %" PRIu64,
                 l->run_id, from, l->step, l->version, l->epoch);
    } else {
        if (c->model_path) {
            if ((rc = gguf_load(c->model_path, LEARNER_GGUF_MAX_SEQ, &l->policy))) goto out;
        } else if (c->init_dir) {
            if ((rc = load_model_dir(c->init_dir, &l->tok, &l->policy))) goto out;
            snprintf(l->init_dir, sizeof l->init_dir, "%s", c->init_dir);
        } else {
            l->tok = tok_new(TOK_CHARSET_DEFAULT);
            CHECK(l->tok);
            ModelConfig mc = sft_model_config(c->dim, c->n_layers, c->n_heads, c->n_heads,
                                              c->hidden_dim, tok_vocab_size(l->tok));
            char        why[160];
            if (model_config_validate(&mc, why, sizeof why)) {
                log_error("learner: random-init model shape: %s", why);
                rc = ERR_ARG;
                goto out;
            }
            l->policy = model_new(&mc);
            model_init_random(l->policy, c->seed, 0.02f);
            log_warn("learner: no --init checkpoint; training a randomly initialised policy");
        }
        l->ref = model_new(model_config(l->policy));
        model_copy_params(l->ref, l->policy);
        if ((rc = attach_new_lora(l))) goto out;
        OptimConfig oc = learner_optim_config(c);
        l->opt = optim_new(&oc, model_num_train_params(l->policy));
        new_run_id(l->run_id, c->seed);
        l->epoch = 0;
        l->step = l->version = 0;
        l->accuracy_before = l->reward_before = NAN;
        log_info("new run %s from %s", l->run_id,
                 c->model_path ? c->model_path
                 : c->init_dir ? c->init_dir
                               : "random init");
    }
    if (c->algo.kind == ALGO_PPO) {
        l->critic = algo_critic_from_policy(l->policy, c->seed + 17, 0.02f);
        OptimConfig oc = learner_optim_config(c);
        l->critic_opt = optim_new(&oc, model_num_params(l->critic));
        if (resume && (rc = resume_critic(l))) goto out;
        if (!resume && c->critic_init && (rc = critic_from_reward_model(l, c->critic_init)))
            goto out;
    }
    /* The prompts, and on a resume the data position's checks (the lease
     * state holds the position itself). */
    rc = learner_task_open(l, resume, resume ? json_object_get(ts.extra, "data") : NULL);
out:
    json_decref(ts.extra);
    return rc;
}
