#include "learner/learner.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/formats/bpe.h"
#include "common/tasks/chat_task.h"
#include "common/formats/ckpt.h"
#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/formats/gguf.h"
#include "common/base/log.h"
#include "common/base/progress.h"
#include "common/base/rng.h"
#include "common/tasks/task.h"
#include "common/formats/tok.h"
#include "common/net/wire.h"
#include "learner/eval.h"

#define LEARNER_TASK "arith"
#define RETRY_AFTER_MS 200   /* what an actor is told to wait when no work is free */
#define ANNOUNCE_EVERY_S 1.0 /* re-announce the current version for late subscribers */
#define DRAIN_MAX 256        /* frames taken from one socket per loop iteration */
#define EVAL_BATCH 64
/* Prompt ids of either task at most; the chat task's are the longer. */
#define PROMPT_IDS_MAX CHAT_TASK_PROMPT_MAX_IDS
#define ANSWER_MAX CHAT_TASK_TEXT_MAX
_Static_assert(PROMPT_IDS_MAX >= TASK_TEXT_MAX && ANSWER_MAX >= TASK_TEXT_MAX, "buffer sizes");

/* One scored group accepted for a lease and waiting for a batch. */
typedef struct {
    Rlhf__ScoredGroup *msg; /* owned (protobuf_c_message_free_unpacked) */
    uint64_t           lease_id;
    int                group_index;
    uint64_t           prompt_id;
    int64_t            oldest; /* version of the group's oldest token */
} Pending;

struct Learner {
    LearnerConfig  cfg;
    TaskConfig     task;
    uint64_t       prompt_seed; /* train problems */
    uint64_t       eval_seed;   /* held-out problems (the SFT trainer's choice) */
    Tok           *tok;         /* the char task's tokenizer, or NULL with bpe */
    Bpe           *bpe;         /* a GGUF model's tokenizer (cfg.model_path): the chat task */
    ChatTaskConfig chat;
    Model         *policy, *ref, *critic;
    Optim         *opt, *critic_opt;
    Algo          *algo;
    LeaseTable    *leases;

    void      *zctx;
    WireSock  *s_lease, *s_results, *s_weights, *s_snap;
    WireLimits lim_req;     /* lease and snapshot requests: any run (the actor may not know it) */
    WireLimits lim_results; /* scored groups: this run, this vocabulary */

    char     run_id[33];
    uint64_t epoch;
    int64_t  version;
    int64_t  step;
    int64_t  last_ckpt_step;
    char     init_dir[PATH_MAX]; /* where the reference came from ("" = random init) */
    char    *config_json;        /* the policy's config, sent in snapshot chunk 0 */
    uint64_t checksum;           /* of the parameter block at checksum_version */
    int64_t  checksum_version;

    Pending *pend;
    int      n_pend, cap_pend;

    /* Scratch for one batch. */
    AlgoTrajectory *traj;
    int             cap_traj;
    int            *prompt_tok; /* (groups, PROMPT_IDS_MAX) */
    int             cap_groups;
    int64_t        *tok_version;
    size_t          cap_versions;

    uint64_t dup_epoch, snapshots_served, grants_empty;
    uint64_t samples_total, tokens_total; /* trained by this incarnation */
    double   t_start, t_loop, t_last_status, t_last_announce, t_last_step;
    double   accuracy_before, accuracy_start, accuracy_after;
    double   reward_before, reward_start, reward_after; /* held-out mean reward */
    double   last_reward, last_accuracy, last_kl, last_stale;
    FILE    *metrics;
};

/* ---- Small helpers ---------------------------------------------------- */

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_ms(void)
{
    return (int64_t)(progress_now() * 1000.0);
}

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

static void new_run_id(char out[33], uint64_t seed)
{
    unsigned char b[16];
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) {
        /* No entropy source: time, pid and seed still make collisions unlikely. */
        Rng r;
        rng_seed(&r, seed ^ (uint64_t)wall_ms() ^ ((uint64_t)getpid() << 32));
        for (int i = 0; i < 16; i++) b[i] = (unsigned char)rng_u64(&r);
    }
    for (int i = 0; i < 16; i++) snprintf(out + 2 * i, 3, "%02x", b[i]);
}

static const char *algo_name(AlgoKind k)
{
    return k == ALGO_PPO ? "ppo" : "grpo";
}

/* Prompt ids of train problem id (at most PROMPT_IDS_MAX) and its answer
 * (ANSWER_MAX bytes, may be NULL); returns the length. */
static int encode_prompt(const Learner *l, uint64_t id, int *ids, char *answer)
{
    int n = 0;
    if (l->bpe) {
        ChatTaskProblem p;
        chat_task_problem(&l->chat, l->prompt_seed, id, false, &p);
        /* setup_models encoded the longest question: a failure is a bug. */
        CHECK(chat_task_prompt_ids(l->bpe, p.question, ids, PROMPT_IDS_MAX, &n) == 0);
        if (answer) snprintf(answer, ANSWER_MAX, "%s", p.answer);
        return n;
    }
    TaskProblem p;
    task_problem(&l->task, l->prompt_seed, id, false, &p);
    /* Our own task text in our own charset: a failure is a bug. */
    CHECK(tok_encode(l->tok, p.prompt, strlen(p.prompt), TOK_ENC_BOS, ids, PROMPT_IDS_MAX, &n) ==
          0);
    if (answer) snprintf(answer, ANSWER_MAX, "%s", p.answer);
    return n;
}

int learner_config_validate(const LearnerConfig *c, char *why, size_t why_len)
{
    char        tmp[160];
    const char *bad = NULL;
    if (!c->lease_ep || !c->results_ep || !c->weights_ep || !c->snapshot_ep)
        bad = "every endpoint is required";
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
    else if (c->max_new_tokens < 1 || c->max_new_tokens > 1024)
        bad = "max_new_tokens out of range";
    else if (!(c->lr >= 0.0f && c->lr <= 1.0f))
        bad = "lr must be in [0, 1]";
    else if (c->lr_warmup_steps < 0)
        bad = "lr_warmup_steps must be >= 0";
    else if (!(c->grad_clip >= 0.0f) || !isfinite(c->grad_clip))
        bad = "grad_clip must be >= 0";
    else if (c->model_path && c->init_dir)
        bad = "model_path and init_dir exclude each other";
    else if (c->max_digits < 1 || c->max_digits > 6)
        bad = "max_digits must be in 1..6";
    else if (c->eval_n < 0 || c->eval_every < 0 || c->ckpt_every < 0)
        bad = "eval_n, eval_every and ckpt_every must be >= 0";
    else if (c->poll_ms < 1 || c->poll_ms > 10000)
        bad = "poll_ms must be in 1..10000";
    else if (!(c->status_every_s >= 0.0))
        bad = "status_every_s must be >= 0";
    else if (c->chunk_bytes < 0 || c->chunk_bytes % 4 ||
             (size_t)c->chunk_bytes > WIRE_MAX_CHUNK_BYTES)
        bad = "chunk_bytes must be a multiple of 4 up to WIRE_MAX_CHUNK_BYTES";
    else if (algo_config_validate(&c->algo, tmp, sizeof tmp) != 0)
        bad = tmp;
    if (bad) {
        if (why) snprintf(why, why_len, "%s", bad);
        return ERR_ARG;
    }
    return 0;
}

/* ---- Construction ----------------------------------------------------- */

static OptimConfig optim_config_of(const LearnerConfig *c)
{
    /* Constant rate after a short warmup: RL runs are short and the
     * schedule counts optimizer steps, which depend on epochs/minibatches. */
    return (OptimConfig){.lr_peak = c->lr,
                         .lr_min = c->lr,
                         .lr_warmup_steps = c->lr_warmup_steps,
                         .lr_total_steps = c->lr_warmup_steps,
                         .beta1 = 0.9f,
                         .beta2 = 0.99f,
                         .eps = 1e-8f,
                         .weight_decay = 0.0f,
                         .grad_clip = c->grad_clip};
}

/* Loads the model of checkpoint dir, and its char tokenizer into *tok when
 * tok is non-NULL and *tok is NULL (tok NULL: the BPE comes from the GGUF). */
static int load_model_dir(const char *dir, Tok **tok, Model **m)
{
    ModelConfig mc;
    int         rc;
    if ((rc = ckpt_load_config(dir, &mc))) return rc;
    if (tok && !*tok && (rc = ckpt_load_tok(dir, tok))) return rc;
    *m = model_new(&mc);
    rc = ckpt_load(dir, *m);
    if (rc == ERR_AGAIN) rc = ckpt_load(dir, *m); /* a save replaced it between reads */
    if (rc) model_free(m);
    return rc;
}

static void critic_dir(const Learner *l, char *out, size_t cap)
{
    snprintf(out, cap, "%s-critic", l->cfg.ckpt_dir);
}

/* Saves the checkpoint (and the critic beside it for PPO). */
static int save_ckpt(Learner *l, bool finished)
{
    if (!l->cfg.ckpt_dir) return 0;
    int rc = make_parents(l->cfg.ckpt_dir, false);
    if (rc) return rc;
    CkptOptim co = {optim_state_m(l->opt), optim_state_v(l->opt), model_num_params(l->policy),
                    optim_step_count(l->opt)};
    CkptTrainerState ts = {.step = l->step, .policy_version = l->version};
    snprintf(ts.run_id, sizeof ts.run_id, "%s", l->run_id);
    ts.extra =
        /* init_dir may be NULL and accuracy_before NaN (no evaluation): both
         * become JSON null, which json_pack's s/f would refuse. */
        json_pack(
            "{s:b, s:I, s:o, s:s?, s:s, s:I, s:o, s:o, s:b, s:I, s:i}", "rlhf_learner", 1, "epoch",
            (json_int_t)l->epoch, "lease", lease_state_save(l->leases), "init_dir", l->init_dir,
            "algo", algo_name(l->cfg.algo.kind), "seed", (json_int_t)l->cfg.seed, "accuracy_before",
            isfinite(l->accuracy_before) ? json_real(l->accuracy_before) : json_null(),
            "reward_before", isfinite(l->reward_before) ? json_real(l->reward_before) : json_null(),
            "finished", finished, "optim_steps", (json_int_t)optim_step_count(l->opt), "max_digits",
            l->cfg.max_digits);
    CHECK(ts.extra);
    double t0 = progress_now();
    rc = ckpt_save(l->cfg.ckpt_dir, l->policy, l->tok, &co, &ts);
    json_decref(ts.extra);
    if (rc == 0 && l->critic) {
        char dir[PATH_MAX + 8];
        critic_dir(l, dir, sizeof dir);
        CkptOptim        cc = {optim_state_m(l->critic_opt), optim_state_v(l->critic_opt),
                               model_num_params(l->critic), optim_step_count(l->critic_opt)};
        CkptTrainerState cts = {.step = l->step, .policy_version = l->version};
        snprintf(cts.run_id, sizeof cts.run_id, "%s", l->run_id);
        rc = ckpt_save(dir, l->critic, l->tok, &cc, &cts);
    }
    if (rc == 0) {
        l->last_ckpt_step = l->step;
        log_info("checkpoint: %s step %" PRId64 " version %" PRId64 " epoch %" PRIu64 "%s (%.2f s)",
                 l->cfg.ckpt_dir, l->step, l->version, l->epoch, finished ? " finished" : "",
                 progress_now() - t0);
    }
    return rc;
}

/* Reads the trainer state of a learner checkpoint. Returns 0, 1 if the
 * checkpoint is a finished run that is not to be resumed, or an error. */
static int read_resume_state(Learner *l, CkptTrainerState *ts, json_t **lease_state)
{
    const char *dir = l->cfg.ckpt_dir;
    int         rc = ckpt_load_trainer_state(dir, ts);
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
    l->epoch = (uint64_t)json_integer_value(ep) + 1;
    l->step = ts->step;
    l->version = ts->policy_version;
    snprintf(l->run_id, sizeof l->run_id, "%s", ts->run_id);
    json_t *ab = json_object_get(x, "accuracy_before");
    l->accuracy_before = json_is_number(ab) ? json_number_value(ab) : NAN;
    json_t *rb = json_object_get(x, "reward_before");
    l->reward_before = json_is_number(rb) ? json_number_value(rb) : NAN;
    json_t *id = json_object_get(x, "init_dir");
    if (json_is_string(id)) snprintf(l->init_dir, sizeof l->init_dir, "%s", json_string_value(id));
    *lease_state = json_incref(ls);
    return 0;
}

/* The chat task on a GGUF model: the longest question (both operands of
 * max_digits digits, a minus) must fit PROMPT_IDS_MAX ids, and with a full
 * completion the model's positions; the model must have an end-of-turn. */
static int check_chat_prompts(Learner *l)
{
    const LearnerConfig *c = &l->cfg;
    char                 q[CHAT_TASK_TEXT_MAX], num[8];
    memset(num, '9', sizeof num);
    num[c->max_digits] = '\0';
    snprintf(q, sizeof q, "What is -%s - %s? Reply with the number only.", num, num);
    int ids[PROMPT_IDS_MAX], n = 0;
    int rc = chat_task_prompt_ids(l->bpe, q, ids, PROMPT_IDS_MAX, &n);
    if (rc) {
        log_error("learner: '%s': the chat task's prompt does not encode in %d ids (%s)",
                  c->model_path, PROMPT_IDS_MAX, err_str(rc));
        return rc;
    }
    if (n + c->max_new_tokens > model_config(l->policy)->max_seq_len) {
        log_error("learner: chat prompts of up to %d ids plus %d new tokens exceed the model's %d "
                  "positions",
                  n, c->max_new_tokens, model_config(l->policy)->max_seq_len);
        return ERR_RANGE;
    }
    if (bpe_eot_id(l->bpe) < 0 || bpe_vocab_size(l->bpe) > model_config(l->policy)->vocab_size) {
        log_error("learner: '%s': no end-of-turn token, or a tokenizer of %d ids for a model of %d",
                  c->model_path, bpe_vocab_size(l->bpe), model_config(l->policy)->vocab_size);
        return ERR_MISMATCH;
    }
    return 0;
}

/* Policy, reference, tokenizer, optimizer state and run identity, from a
 * checkpoint to resume or from the warm start. */
static int setup_models(Learner *l, json_t **lease_state)
{
    const LearnerConfig *c = &l->cfg;
    int                  rc = 0;
    bool                 resume = false;
    CkptTrainerState     ts = {0};
    if (c->model_path && (rc = bpe_load(c->model_path, &l->bpe))) return rc;
    if (c->ckpt_dir && ckpt_exists(c->ckpt_dir)) {
        rc = read_resume_state(l, &ts, lease_state);
        if (rc < 0) goto out;
        resume = rc == 0;
        rc = 0;
    }
    if (resume) {
        if ((rc = load_model_dir(c->ckpt_dir, l->bpe ? NULL : &l->tok, &l->policy))) goto out;
        size_t      n = model_num_params(l->policy);
        OptimConfig oc = optim_config_of(c);
        l->opt = optim_new(&oc, n);
        int64_t osteps = 0;
        rc = ckpt_load_optim(c->ckpt_dir, optim_state_m(l->opt), optim_state_v(l->opt), n, &osteps);
        if (rc == ERR_NOTFOUND) {
            log_warn("learner: no optimizer state in '%s'; moments start at zero", c->ckpt_dir);
            rc = 0;
        }
        if (rc) goto out;
        optim_set_step_count(l->opt, osteps);
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
                 l->run_id, c->ckpt_dir, l->step, l->version, l->epoch);
    } else {
        if (c->model_path) {
            if ((rc = gguf_load(c->model_path, LEARNER_GGUF_MAX_SEQ, &l->policy))) goto out;
        } else if (c->init_dir) {
            if ((rc = load_model_dir(c->init_dir, &l->tok, &l->policy))) goto out;
            snprintf(l->init_dir, sizeof l->init_dir, "%s", c->init_dir);
        } else {
            l->tok = tok_new(TOK_CHARSET_DEFAULT);
            CHECK(l->tok);
            ModelConfig mc = {.dim = c->dim,
                              .n_layers = c->n_layers,
                              .n_heads = c->n_heads,
                              .n_kv_heads = c->n_heads,
                              .hidden_dim = c->hidden_dim,
                              .vocab_size = tok_vocab_size(l->tok),
                              .max_seq_len = 64,
                              .rope_theta = 10000.0f,
                              .norm_eps = 1e-5f,
                              .tie_embeddings = true};
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
        OptimConfig oc = optim_config_of(c);
        l->opt = optim_new(&oc, model_num_params(l->policy));
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
        char dir[PATH_MAX + 8] = "";
        if (resume) critic_dir(l, dir, sizeof dir);
        l->critic = algo_critic_from_policy(l->policy, c->seed + 17, 0.02f);
        OptimConfig oc = optim_config_of(c);
        l->critic_opt = optim_new(&oc, model_num_params(l->critic));
        if (resume && ckpt_exists(dir)) {
            size_t  n = model_num_params(l->critic);
            int64_t osteps = 0;
            rc = ckpt_load(dir, l->critic);
            if (rc == 0)
                rc = ckpt_load_optim(dir, optim_state_m(l->critic_opt),
                                     optim_state_v(l->critic_opt), n, &osteps);
            if (rc) {
                log_error("learner: cannot resume the critic from '%s'", dir);
                goto out;
            }
            optim_set_step_count(l->critic_opt, osteps);
        } else if (resume) {
            log_warn("learner: no critic beside '%s'; a new critic starts from the policy",
                     c->ckpt_dir);
        }
    }
    if (l->bpe) {
        rc = check_chat_prompts(l);
        goto out;
    }
    /* Prompts and answers are built from these characters; a checkpoint
     * whose tokenizer lacks one cannot be trained on the task. */
    for (const char *ch = "0123456789+-="; *ch; ch++) {
        if (tok_id(l->tok, *ch) < 0) {
            log_error("learner: the tokenizer has no '%c', which the arithmetic task needs", *ch);
            rc = ERR_MISMATCH;
            goto out;
        }
    }
    /* The model must hold a prompt and a full completion. */
    int longest = 2 * c->max_digits + 3 + c->max_new_tokens;
    if (longest > model_config(l->policy)->max_seq_len) {
        log_error("learner: prompts of %d-digit operands plus %d new tokens need %d positions, "
                  "the model has %d",
                  c->max_digits, c->max_new_tokens, longest, model_config(l->policy)->max_seq_len);
        rc = ERR_RANGE;
    }
out:
    json_decref(ts.extra);
    return rc;
}

static int open_sockets(Learner *l)
{
    l->zctx = zmq_ctx_new();
    if (!l->zctx) {
        log_error("learner: zmq_ctx_new: %s", zmq_strerror(zmq_errno()));
        return ERR_IO;
    }
    WireSockOpts o = WIRE_SOCK_DEFAULTS;
    /* Replies go to whoever asked; a peer that vanished must not stall the loop. */
    o.sndtimeo_ms = 0;
    o.immediate = false;
    WireSockOpts snap = o;
    snap.sndtimeo_ms = 2000; /* chunks of one snapshot may fill the pipe for a moment */
    l->s_lease = wire_sock_new(l->zctx, ZMQ_ROUTER, "lease", &o);
    l->s_results = wire_sock_new(l->zctx, ZMQ_PULL, "results", &o);
    l->s_weights = wire_sock_new(l->zctx, ZMQ_PUB, "weights", &o);
    l->s_snap = wire_sock_new(l->zctx, ZMQ_ROUTER, "snapshot", &snap);
    if (!l->s_lease || !l->s_results || !l->s_weights || !l->s_snap) return ERR_IO;
    int rc;
    if ((rc = wire_bind(l->s_lease, l->cfg.lease_ep)) ||
        (rc = wire_bind(l->s_results, l->cfg.results_ep)) ||
        (rc = wire_bind(l->s_weights, l->cfg.weights_ep)) ||
        (rc = wire_bind(l->s_snap, l->cfg.snapshot_ep)))
        return rc;
    return 0;
}

static int open_metrics(Learner *l, bool fresh)
{
    if (!l->cfg.metrics_path) return 0;
    int rc = make_parents(l->cfg.metrics_path, false);
    if (rc) return rc;
    l->metrics = fopen(l->cfg.metrics_path, fresh ? "w" : "a");
    if (!l->metrics) {
        log_error("learner: open metrics '%s': %s", l->cfg.metrics_path, strerror(errno));
        return ERR_IO;
    }
    return 0;
}

static int evaluate(Learner *l, double *acc, double *reward)
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

/* The snapshot config of a GGUF model names its tokenizer, and its
 * eos_token_id is the end-of-turn token, where actors stop generating. */
static void add_bpe_config(Learner *l)
{
    json_t *o = json_loads(l->config_json, 0, NULL);
    CHECK(o); /* our own JSON */
    json_object_set_new(o, "eos_token_id", json_integer(bpe_eot_id(l->bpe)));
    json_object_set_new(o, "bos_token_id", json_integer(bpe_bos_id(l->bpe)));
    json_object_set_new(o, "rlhf_tokenizer", json_string("gguf"));
    json_object_set_new(o, "rlhf_tokenizer_path", json_string(l->cfg.model_path));
    free(l->config_json);
    l->config_json = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    CHECK(l->config_json);
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
    int     rc = setup_models(l, &lease_state);
    if (rc) goto fail;
    bool       fresh = lease_state == NULL;
    AlgoConfig ac = cfg->algo;
    ac.seed = cfg->seed ^ (l->epoch << 20);
    l->algo =
        algo_new(&ac, l->policy, l->opt, ac.kl_beta > 0 ? l->ref : NULL, l->critic, l->critic_opt);
    LeaseConfig lc = {.lease_prompts = cfg->lease_prompts,
                      .timeout_ms = cfg->lease_timeout_ms,
                      .max_staleness = cfg->max_staleness,
                      .batch_groups = cfg->batch_groups};
    l->leases = lease_new(&lc, (l->epoch << 32) | 1, 0);
    if (lease_state) {
        rc = lease_state_load(l->leases, lease_state);
        json_decref(lease_state);
        if (rc) goto fail;
    }
    l->lim_req = (WireLimits){.vocab_size = model_config(l->policy)->vocab_size};
    l->lim_results =
        (WireLimits){.vocab_size = model_config(l->policy)->vocab_size, .run_id = l->run_id};
    l->config_json = ckpt_config_to_json(model_config(l->policy), l->tok);
    if (l->bpe) add_bpe_config(l);

    if ((rc = evaluate(l, &l->accuracy_start, &l->reward_start))) goto fail;
    if (isnan(l->accuracy_before)) l->accuracy_before = l->accuracy_start;
    if (isnan(l->reward_before)) l->reward_before = l->reward_start;
    /* Make the new epoch durable before anyone can see it. */
    if ((rc = save_ckpt(l, false))) goto fail;
    if ((rc = open_metrics(l, fresh))) goto fail;
    if ((rc = open_sockets(l))) goto fail;
    log_info("run %s epoch %" PRIu64 " version %" PRId64 "; %s, %zu params, %d steps of "
             "%d groups x %d; leases of %d prompts, %d ms, max staleness %d",
             l->run_id, l->epoch, l->version, algo_name(cfg->algo.kind),
             model_num_params(l->policy), cfg->steps, cfg->batch_groups, cfg->group_size,
             cfg->lease_prompts, cfg->lease_timeout_ms, cfg->max_staleness);
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
    for (int i = 0; i < l->n_pend; i++)
        protobuf_c_message_free_unpacked(&l->pend[i].msg->base, NULL);
    free(l->pend);
    wire_sock_free(&l->s_lease);
    wire_sock_free(&l->s_results);
    wire_sock_free(&l->s_weights);
    wire_sock_free(&l->s_snap);
    if (l->zctx) zmq_ctx_term(l->zctx);
    if (l->metrics) fclose(l->metrics);
    free(l->config_json);
    free(l->traj);
    free(l->prompt_tok);
    free(l->tok_version);
    algo_free(&l->algo);
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

/* ---- Serving ---------------------------------------------------------- */

static Rlhf__SamplingParams sampling_of(const Learner *l)
{
    Rlhf__SamplingParams sp = RLHF__SAMPLING_PARAMS__INIT;
    sp.temperature = l->cfg.algo.temperature;
    sp.top_k = 0;
    sp.top_p = 1.0f;
    sp.max_new_tokens = l->cfg.max_new_tokens;
    return sp;
}

static int64_t min_version(const Learner *l)
{
    int64_t v = l->version - l->cfg.max_staleness;
    return v < 0 ? 0 : v;
}

static void handle_lease_request(Learner *l, WireMsg *m, Rlhf__LeaseRequest *req)
{
    /* Expire first, so a dead lease's prompts can go to this request. */
    lease_expire(l->leases, mono_ms());
    uint64_t        lease_id = 0;
    const uint64_t *ids = NULL;
    int             n = lease_grant(l->leases, req->max_prompts, mono_ms(), &lease_id, &ids);

    Rlhf__SamplingParams sp = sampling_of(l);
    Rlhf__LeaseGrant     g = RLHF__LEASE_GRANT__INIT;
    g.version = WIRE_PROTOCOL_VERSION;
    g.run_id = l->run_id;
    g.epoch = l->epoch;
    g.min_policy_version = (uint64_t)min_version(l);
    Rlhf__Prompt  pr[LEARNER_MAX_LEASE_PROMPTS];
    Rlhf__Prompt *pp[LEARNER_MAX_LEASE_PROMPTS];
    int           toks[LEARNER_MAX_LEASE_PROMPTS][PROMPT_IDS_MAX];
    char          answer[LEARNER_MAX_LEASE_PROMPTS][ANSWER_MAX];
    CHECK(n <= LEARNER_MAX_LEASE_PROMPTS);
    if (n > 0) {
        g.lease_id = lease_id;
        g.deadline_unix_ms = wall_ms() + l->cfg.lease_timeout_ms;
        g.group_size = l->cfg.group_size;
        g.sampling = &sp;
        for (int i = 0; i < n; i++) {
            int len = encode_prompt(l, ids[i], toks[i], answer[i]);
            pr[i] = (Rlhf__Prompt)RLHF__PROMPT__INIT;
            pr[i].prompt_id = ids[i];
            pr[i].n_tokens = (size_t)len;
            pr[i].tokens = (int32_t *)toks[i];
            pr[i].answer = answer[i];
            pr[i].task = l->bpe ? CHAT_TASK_NAME : LEARNER_TASK;
            pp[i] = &pr[i];
        }
        g.n_prompts = (size_t)n;
        g.prompts = pp;
    } else {
        l->grants_empty++;
        g.retry_after_ms = req->max_prompts > 0 ? RETRY_AFTER_MS : 0;
    }
    int rc = wire_send_to(l->s_lease, m->peer, m->peer_len, &g.base, ZMQ_DONTWAIT);
    if (rc) /* The lease stays in the table and is re-issued at its deadline. */
        log_warn("lease: reply to '%.64s' not sent (%s)%s", req->actor_id, err_str(rc),
                 n ? "; its lease will expire" : "");
    else if (n)
        log_debug("lease %" PRIx64 ": %d prompts to '%.64s' (holds version %" PRIu64 ")", lease_id,
                  n, req->actor_id, req->policy_version);
}

static void update_checksum(Learner *l)
{
    if (l->checksum_version == l->version) return;
    l->checksum =
        wire_snap_checksum(model_params(l->policy), model_num_params(l->policy) * sizeof(float));
    l->checksum_version = l->version;
}

static void handle_snapshot_request(Learner *l, WireMsg *m, Rlhf__SnapshotRequest *req)
{
    update_checksum(l);
    WireSnapMeta meta = {.run_id = l->run_id,
                         .epoch = l->epoch,
                         .policy_version = (uint64_t)l->version,
                         .config_json = l->config_json,
                         .checksum = l->checksum,
                         .has_checksum = true};
    size_t       bytes = model_num_params(l->policy) * sizeof(float);
    int rc = wire_snap_send(l->s_snap, m->peer, m->peer_len, &meta, model_params(l->policy), bytes,
                            (size_t)l->cfg.chunk_bytes);
    if (rc) {
        log_warn("snapshot: version %" PRId64 " to '%.64s' not sent (%s)", l->version,
                 req->actor_id, err_str(rc));
        return;
    }
    l->snapshots_served++;
    log_debug("snapshot: version %" PRId64 " (%zu bytes) to '%.64s'", l->version, bytes,
              req->actor_id);
}

static void announce(Learner *l)
{
    Rlhf__WeightAnnounce a = RLHF__WEIGHT_ANNOUNCE__INIT;
    a.version = WIRE_PROTOCOL_VERSION;
    a.run_id = l->run_id;
    a.epoch = l->epoch;
    a.policy_version = (uint64_t)l->version;
    a.total_bytes = model_num_params(l->policy) * sizeof(float);
    int rc = wire_send(l->s_weights, &a.base, ZMQ_DONTWAIT);
    if (rc && rc != ERR_AGAIN) log_warn("weights: announce not sent (%s)", err_str(rc));
    l->t_last_announce = progress_now();
}

/* Refuses a group that does not fit this learner's lease terms. */
static void reject_group(Learner *l, WireReason reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void reject_group(Learner *l, WireReason reason, const char *fmt, ...)
{
    WireReject rej = {.reason = reason};
    va_list    ap;
    va_start(ap, fmt);
    vsnprintf(rej.why, sizeof rej.why, fmt, ap);
    va_end(ap);
    wire_reject_note(wire_sock_rejects(l->s_results), "learner", "scored group", &rej);
}

/* Checks what wire validation cannot know: the lease's terms. Returns the
 * group's oldest token version, or -1 after counting a rejection. */
static int64_t check_group(Learner *l, const Rlhf__ScoredGroup *sg)
{
    const Rlhf__SampledGroup   *g = sg->group;
    const Rlhf__SamplingParams *s = g->sampling;
    if ((int)g->n_completions != l->cfg.group_size) {
        reject_group(l, WIRE_REJ_BAD_SHAPE, "%zu completions, the lease asked for %d",
                     g->n_completions, l->cfg.group_size);
        return -1;
    }
    if (s->temperature != l->cfg.algo.temperature || s->top_k != 0 || s->top_p != 1.0f ||
        s->max_new_tokens != l->cfg.max_new_tokens) {
        reject_group(l, WIRE_REJ_BAD_VALUE,
                     "sampling T=%g top_k=%d top_p=%g max_new=%d differs from the lease's "
                     "T=%g top_k=0 top_p=1 max_new=%d",
                     (double)s->temperature, s->top_k, (double)s->top_p, s->max_new_tokens,
                     (double)l->cfg.algo.temperature, l->cfg.max_new_tokens);
        return -1;
    }
    int ids[PROMPT_IDS_MAX];
    int n = encode_prompt(l, g->prompt->prompt_id, ids, NULL);
    if ((int)g->prompt->n_tokens != n || memcmp(ids, g->prompt->tokens, sizeof(int) * (size_t)n)) {
        reject_group(l, WIRE_REJ_BAD_VALUE, "prompt tokens differ from prompt %" PRIu64 "'s",
                     g->prompt->prompt_id);
        return -1;
    }
    int     max_seq = model_config(l->policy)->max_seq_len;
    int64_t oldest = INT64_MAX;
    for (size_t c = 0; c < g->n_completions; c++) {
        const Rlhf__Completion *cp = g->completions[c];
        if (n + (int)cp->n_tokens > max_seq + 1) {
            reject_group(l, WIRE_REJ_BAD_SHAPE, "completion %zu: %d + %zu tokens exceed %d", c, n,
                         cp->n_tokens, max_seq + 1);
            return -1;
        }
        for (size_t t = 0; t < cp->n_tokens; t++) {
            uint64_t v = cp->policy_version[t];
            if (v > (uint64_t)l->version) {
                reject_group(l, WIRE_REJ_BAD_VALUE,
                             "completion %zu token %zu: version %" PRIu64
                             " is newer than the learner's %" PRId64,
                             c, t, v, l->version);
                return -1;
            }
            if ((int64_t)v < oldest) oldest = (int64_t)v;
        }
    }
    return oldest;
}

static void handle_scored_group(Learner *l, Rlhf__ScoredGroup *sg)
{
    const Rlhf__SampledGroup *g = sg->group;
    if (g->epoch != l->epoch) {
        /* Leased by an earlier incarnation: its lease is gone. */
        l->dup_epoch++;
        log_debug("results: group of epoch %" PRIu64 " (now %" PRIu64 ") discarded", g->epoch,
                  l->epoch);
        protobuf_c_message_free_unpacked(&sg->base, NULL);
        return;
    }
    int64_t oldest = check_group(l, sg);
    if (oldest < 0) {
        protobuf_c_message_free_unpacked(&sg->base, NULL);
        return;
    }
    LeaseArrival a = lease_arrive(l->leases, g->lease_id, g->group_index, g->group_count,
                                  g->prompt->prompt_id, oldest, l->version);
    switch (a) {
    case LEASE_ACCEPTED:
        if (l->n_pend == l->cap_pend) {
            l->cap_pend = l->cap_pend ? 2 * l->cap_pend : 32;
            l->pend = xrealloc(l->pend, sizeof(Pending) * (size_t)l->cap_pend);
        }
        l->pend[l->n_pend++] =
            (Pending){sg, g->lease_id, g->group_index, g->prompt->prompt_id, oldest};
        return;
    case LEASE_MISMATCH:
        reject_group(l, WIRE_REJ_BAD_VALUE,
                     "lease %" PRIx64 " slot %d/%d does not hold prompt %" PRIu64, g->lease_id,
                     g->group_index, g->group_count, g->prompt->prompt_id);
        break;
    case LEASE_STALE:
        log_debug("results: group of lease %" PRIx64 " dropped: version %" PRId64 " at %" PRId64,
                  g->lease_id, oldest, l->version);
        break;
    case LEASE_DUPLICATE:
        log_debug("results: duplicate group of lease %" PRIx64 " slot %d discarded", g->lease_id,
                  g->group_index);
        break;
    }
    protobuf_c_message_free_unpacked(&sg->base, NULL);
}

/* Receives one request from a ROUTER socket and decodes it. A frame that
 * decodes badly is counted, logged (rate-limited) and answered with an
 * ErrorReply naming the reason, so the peer need not wait for a timeout.
 * Returns 0 with *out (caller frees) and m open; otherwise wire_recv's or
 * wire_decode's error with m closed. */
static int recv_request(Learner *l, WireSock *s, const ProtobufCMessageDescriptor *desc, WireMsg *m,
                        ProtobufCMessage **out)
{
    *out = NULL;
    int rc = wire_recv(s, 0, m);
    if (rc) return rc; /* nothing, or a malformed frame wire_recv counted and logged */
    WireReject rej;
    rc = wire_decode(desc, wire_msg_data(m), wire_msg_size(m), &l->lim_req, out, &rej);
    if (rc == 0) return 0;
    wire_reject_note(wire_sock_rejects(s), "learner", desc->short_name, &rej);
    char reason[256];
    snprintf(reason, sizeof reason, "%s refused: %s: %s", desc->short_name,
             wire_reason_name(rej.reason), rej.why);
    Rlhf__ErrorReply er = RLHF__ERROR_REPLY__INIT;
    er.version = WIRE_PROTOCOL_VERSION;
    er.code = rc;
    er.reason = reason;
    /* Best effort: a peer that sends garbage may be gone or not reading. */
    (void)wire_send_to(s, m->peer, m->peer_len, &er.base, ZMQ_DONTWAIT);
    wire_msg_close(m);
    return rc;
}

/* Takes what is waiting on each socket, up to DRAIN_MAX frames apiece. */
static int drain(Learner *l)
{
    for (int i = 0; i < DRAIN_MAX; i++) {
        WireMsg           m = {0};
        ProtobufCMessage *msg = NULL;
        int rc = wire_recv_decode(l->s_results, 0, &rlhf__scored_group__descriptor, &l->lim_results,
                                  &m, &msg, NULL);
        wire_msg_close(&m);
        if (rc == ERR_TIMEOUT || rc == ERR_AGAIN) break;
        if (rc == ERR_IO) return rc;
        if (rc == 0) handle_scored_group(l, (Rlhf__ScoredGroup *)msg);
    }
    for (int i = 0; i < DRAIN_MAX; i++) {
        WireMsg           m = {0};
        ProtobufCMessage *msg = NULL;
        int rc = recv_request(l, l->s_lease, &rlhf__lease_request__descriptor, &m, &msg);
        if (rc == 0) {
            handle_lease_request(l, &m, (Rlhf__LeaseRequest *)msg);
            protobuf_c_message_free_unpacked(msg, NULL);
        }
        wire_msg_close(&m);
        if (rc == ERR_TIMEOUT || rc == ERR_AGAIN) break;
        if (rc == ERR_IO) return rc;
    }
    for (int i = 0; i < DRAIN_MAX; i++) {
        WireMsg           m = {0};
        ProtobufCMessage *msg = NULL;
        int rc = recv_request(l, l->s_snap, &rlhf__snapshot_request__descriptor, &m, &msg);
        if (rc == 0) {
            handle_snapshot_request(l, &m, (Rlhf__SnapshotRequest *)msg);
            protobuf_c_message_free_unpacked(msg, NULL);
        }
        wire_msg_close(&m);
        if (rc == ERR_TIMEOUT || rc == ERR_AGAIN) break;
        if (rc == ERR_IO) return rc;
    }
    return 0;
}

/* ---- Training --------------------------------------------------------- */

typedef struct {
    double  reward_sum, reward_sq;
    int     n_correct, n_samples;
    int64_t tokens;
    double  stale_sum;
    int64_t stale_max;
} BatchInfo;

/* Removes pend[i] (keeping arrival order). */
static void pend_remove(Learner *l, int i)
{
    memmove(l->pend + i, l->pend + i + 1, sizeof(Pending) * (size_t)(l->n_pend - i - 1));
    l->n_pend--;
}

/* Drops the waiting groups that have become too stale. */
static void drop_stale_pending(Learner *l)
{
    for (int i = 0; i < l->n_pend;) {
        Pending *p = &l->pend[i];
        if (!lease_is_stale(l->leases, p->oldest, l->version)) {
            i++;
            continue;
        }
        lease_settle(l->leases, p->lease_id, p->group_index, LEASE_OUT_STALE);
        protobuf_c_message_free_unpacked(&p->msg->base, NULL);
        pend_remove(l, i);
    }
}

/* Packs the first batch_groups waiting groups into trajectories. */
static int build_batch(Learner *l, int ng, BatchInfo *bi)
{
    int G = l->cfg.group_size;
    int n = ng * G;
    if (n > l->cap_traj) {
        l->cap_traj = n;
        l->traj = xrealloc(l->traj, sizeof(AlgoTrajectory) * (size_t)n);
    }
    if (ng > l->cap_groups) {
        l->cap_groups = ng;
        l->prompt_tok = xrealloc(l->prompt_tok, sizeof(int) * (size_t)ng * PROMPT_IDS_MAX);
    }
    size_t ntok = 0;
    for (int gi = 0; gi < ng; gi++) {
        const Rlhf__SampledGroup *g = l->pend[gi].msg->group;
        for (size_t c = 0; c < g->n_completions; c++) ntok += g->completions[c]->n_tokens;
    }
    if (ntok > l->cap_versions) {
        l->cap_versions = ntok;
        l->tok_version = xrealloc(l->tok_version, sizeof(int64_t) * ntok);
    }
    memset(bi, 0, sizeof *bi);
    size_t off = 0;
    int    k = 0;
    for (int gi = 0; gi < ng; gi++) {
        const Rlhf__ScoredGroup  *sg = l->pend[gi].msg;
        const Rlhf__SampledGroup *g = sg->group;
        int                      *pt = l->prompt_tok + (size_t)gi * PROMPT_IDS_MAX;
        char                      answer[ANSWER_MAX];
        int                       plen = encode_prompt(l, l->pend[gi].prompt_id, pt, answer);
        for (size_t c = 0; c < g->n_completions; c++, k++) {
            const Rlhf__Completion *cp = g->completions[c];
            int64_t                *ver = l->tok_version + off;
            for (size_t t = 0; t < cp->n_tokens; t++) {
                ver[t] = (int64_t)cp->policy_version[t];
                int64_t st = l->version - ver[t];
                bi->stale_sum += (double)st;
                if (st > bi->stale_max) bi->stale_max = st;
            }
            off += cp->n_tokens;
            float r = sg->scores[c]->reward;
            l->traj[k] = (AlgoTrajectory){.prompt = pt,
                                          .prompt_len = plen,
                                          .completion = (const int *)cp->tokens,
                                          .completion_len = (int)cp->n_tokens,
                                          .logp_behaviour = cp->logp_behaviour,
                                          .version = ver,
                                          .group_id = (int64_t)gi,
                                          .reward = r,
                                          .temperature = g->sampling->temperature};
            bi->reward_sum += r;
            bi->reward_sq += (double)r * r;
            bi->tokens += (int64_t)cp->n_tokens;
            /* Task accuracy from the learner's own check: the answer, then the stop token. */
            int  nt = (int)cp->n_tokens;
            char text[1024];
            if (l->bpe) {
                bool stop = nt > 0 && cp->tokens[nt - 1] == bpe_eot_id(l->bpe);
                int  nc = nt - stop;
                if (bpe_decode_max_bytes(l->bpe, nc) <= sizeof text &&
                    bpe_decode(l->bpe, (const int *)cp->tokens, nc, 0, text, sizeof text, NULL) ==
                        0) {
                    ChatTaskScore cs;
                    chat_task_score(text, answer, !stop, &cs);
                    bi->n_correct += cs.correct > 0.5f;
                }
            } else {
                bool stop = nt > 0 && cp->tokens[nt - 1] == TOK_EOS;
                if (stop && nt - 1 <= 64 &&
                    tok_decode(l->tok, (const int *)cp->tokens, nt - 1, 0, text, sizeof text,
                               NULL) == 0) {
                    TaskScore ts;
                    task_score(text, answer, &ts);
                    bi->n_correct += ts.correct > 0.5f;
                }
            }
        }
    }
    bi->n_samples = k;
    return k;
}

static void write_metrics(Learner *l, const AlgoStats *st, const BatchInfo *bi, double step_s)
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
    if (!l->metrics) return;
    LeaseCounters c;
    lease_counters(l->leases, &c);
    json_t *hist = json_array();
    for (int i = 0; i < ALGO_STALENESS_BUCKETS; i++)
        json_array_append_new(hist, json_integer((json_int_t)st->staleness_hist[i]));
    json_t   *rej = json_object();
    WireSock *socks[3] = {l->s_lease, l->s_results, l->s_snap};
    for (int i = 0; i < 3; i++) {
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
    json_object_set_new(o, "algo", json_string(algo_name(l->cfg.algo.kind)));
    SETR("wall_s", progress_now() - l->t_start);
    SETR("step_s", step_s);
    SETI("groups", bi->n_samples / l->cfg.group_size);
    SETI("samples", bi->n_samples);
    SETI("tokens", bi->tokens);
    SETR("reward_mean", mean);
    SETR("reward_std", var > 0 ? sqrt(var) : 0);
    SETR("accuracy", bi->n_correct / n);
    SETR("kl_ref", st->kl_ref_k3);
    SETR("kl_ref_k1", st->kl_ref_k1);
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
    json_object_set_new(o, "rejects", rej);
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

/* One update if a batch is ready. Returns 1 if a step was taken, 0 if not. */
static int maybe_train(Learner *l)
{
    drop_stale_pending(l);
    int B = l->cfg.batch_groups;
    if (l->n_pend < B) return 0;
    BatchInfo bi;
    int       n = build_batch(l, B, &bi);
    AlgoStats st;
    memset(&st, 0, sizeof st);
    double t0 = progress_now();
    int    rc = algo_step(l->algo, l->traj, n, l->version, &st);
    double dt = progress_now() - t0;
    bool   stepped = rc == 0 || st.n_opt_steps > 0;
    if (rc)
        log_error("learner: update at version %" PRId64 " failed (%s) after %d optimizer steps",
                  l->version, err_str(rc), st.n_opt_steps);
    for (int i = 0; i < B; i++) {
        lease_settle(l->leases, l->pend[i].lease_id, l->pend[i].group_index,
                     stepped ? LEASE_OUT_TRAINED : LEASE_OUT_FAILED);
        protobuf_c_message_free_unpacked(&l->pend[i].msg->base, NULL);
    }
    memmove(l->pend, l->pend + B, sizeof(Pending) * (size_t)(l->n_pend - B));
    l->n_pend -= B;
    if (!stepped) return 0;
    l->version++;
    l->step++;
    l->samples_total += (uint64_t)bi.n_samples;
    l->tokens_total += (uint64_t)bi.tokens;
    l->t_last_step = progress_now();
    announce(l);
    write_metrics(l, &st, &bi, dt);
    log_debug("step %" PRId64 ": reward %.3f acc %.3f kl %.4f (%.2f s)", l->step, l->last_reward,
              l->last_accuracy, l->last_kl, dt);
    return 1;
}

static void status_line(Learner *l)
{
    LeaseCounters c;
    lease_counters(l->leases, &c);
    double wall = progress_now() - l->t_loop;
    log_info("step %" PRId64 "/%d v%" PRId64 " reward %.3f acc %.3f kl %.4f stale %.2f "
             "samples/s %.1f | leases issued %" PRIu64 " trained %" PRIu64 " stale %" PRIu64
             " reissued %" PRIu64 " failed %" PRIu64 " dup %" PRIu64 " in-flight %" PRIu64
             " buffered %" PRIu64 " | rejects lease %" PRIu64 " results %" PRIu64
             " snapshot %" PRIu64,
             l->step, l->cfg.steps, l->version, l->last_reward, l->last_accuracy, l->last_kl,
             l->last_stale, wall > 0 ? (double)l->samples_total / wall : 0.0, c.issued, c.trained,
             c.dropped_stale, c.reissued, c.failed, c.duplicates + l->dup_epoch, c.in_flight,
             c.buffered, wire_rejects_total(wire_sock_rejects(l->s_lease)),
             wire_rejects_total(wire_sock_rejects(l->s_results)),
             wire_rejects_total(wire_sock_rejects(l->s_snap)));
    l->t_last_status = progress_now();
}

static int write_summary(Learner *l, bool stopped)
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
    json_object_set_new(o, "algo", json_string(algo_name(l->cfg.algo.kind)));
    json_object_set_new(o, "accuracy_before", NUM(l->accuracy_before));
    json_object_set_new(o, "accuracy_start", NUM(l->accuracy_start));
    json_object_set_new(o, "accuracy_after", NUM(l->accuracy_after));
    json_object_set_new(o, "reward_before", NUM(l->reward_before));
    json_object_set_new(o, "reward_start", NUM(l->reward_start));
    json_object_set_new(o, "reward_after", NUM(l->reward_after));
    json_object_set_new(o, "task", json_string(l->bpe ? CHAT_TASK_NAME : LEARNER_TASK));
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
    json_object_set_new(o, "stopped_early", json_boolean(stopped));
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

int learner_run(Learner *l, atomic_int *stop)
{
    CHECK(l && stop);
    l->t_loop = l->t_last_status = progress_now();
    announce(l);
    zmq_pollitem_t items[3] = {{wire_sock_zmq(l->s_results), 0, ZMQ_POLLIN, 0},
                               {wire_sock_zmq(l->s_lease), 0, ZMQ_POLLIN, 0},
                               {wire_sock_zmq(l->s_snap), 0, ZMQ_POLLIN, 0}};
    int            rc = 0;
    while (!atomic_load(stop) && l->step < l->cfg.steps) {
        int timeout = l->n_pend >= l->cfg.batch_groups ? 0 : l->cfg.poll_ms;
        if (zmq_poll(items, 3, timeout) < 0 && zmq_errno() != EINTR) {
            log_error("learner: zmq_poll: %s", zmq_strerror(zmq_errno()));
            rc = ERR_IO;
            break;
        }
        if ((rc = drain(l))) break;
        lease_expire(l->leases, mono_ms());
        if (maybe_train(l)) {
            if (l->cfg.ckpt_every > 0 && l->step % l->cfg.ckpt_every == 0 && l->step < l->cfg.steps)
                save_ckpt(l, false); /* logged; training goes on, the next one may succeed */
            if (l->cfg.eval_every > 0 && l->step % l->cfg.eval_every == 0 &&
                l->step < l->cfg.steps) {
                double acc, reward;
                evaluate(l, &acc, &reward);
            }
        }
        double now = progress_now();
        if (now - l->t_last_announce >= ANNOUNCE_EVERY_S) announce(l);
        if (l->cfg.status_every_s > 0 && now - l->t_last_status >= l->cfg.status_every_s)
            status_line(l);
    }
    bool stopped = l->step < l->cfg.steps;
    if (stopped) log_info("stopping at step %" PRId64 " (signal)", l->step);
    if (!stopped || rc == 0) {
        int erc = evaluate(l, &l->accuracy_after, &l->reward_after);
        if (erc) log_error("learner: final evaluation failed (%s)", err_str(erc));
    }
    int src = 0;
    if (l->step > l->last_ckpt_step || !stopped) src = save_ckpt(l, !stopped);
    int           wrc = write_summary(l, stopped);
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
    out->accuracy_before = l->accuracy_before;
    out->accuracy_after = l->accuracy_after;
    out->reward_before = l->reward_before;
    out->reward_after = l->reward_after;
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
