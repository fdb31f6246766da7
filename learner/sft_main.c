/* rlhf-sft: supervised warm start of a policy on the built-in arithmetic
 * task, from scratch or from a checkpoint; writes a checkpoint with the
 * held-out accuracy in its trainer state. With --data it trains on a JSONL
 * file of {"prompt", "completion"} records instead of the task's
 * demonstrations (e.g. rlhf-bon's best-of-n picks), in a shuffled order,
 * and still measures the arithmetic task's held-out accuracy. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/formats/ckpt.h"
#include "common/formats/ckpt_config.h"
#include "common/base/err.h"
#include "common/base/log.h"
#include "common/base/prog.h"
#include "common/base/progress.h"
#include "common/base/rng.h"
#include "common/tasks/task.h"
#include "common/tasks/dataset.h"
#include "common/tasks/eval.h"
#include "common/tasks/prefs_data.h"
#include "learner/sft.h"

typedef struct {
    const char *out;  /* checkpoint directory written at the end */
    const char *init; /* checkpoint to start from, NULL = random init */
    int         steps;
    int         batch;
    float       lr;
    int         warmup;
    uint64_t    seed;
    int         dim, layers, heads, kv_heads, hidden;
    int         max_digits;
    int         eval_n;
    int         eval_every;
    float       label_noise; /* fraction of demonstrations whose answer is off by one */
    const char *data;        /* JSONL {"prompt", "completion"} to train on, NULL = the task */
} SftArgs;

int main(int argc, char **argv)
{
    SftArgs a = {
        .out = "runs/sft",
        .init = NULL,
        .steps = 2000,
        .batch = 64,
        .lr = 2e-3f,
        .warmup = 100,
        .seed = 1,
        .dim = 128,
        .layers = 4,
        .heads = 4,
        .kv_heads = 4,
        .hidden = 512,
        .max_digits = 3,
        .eval_n = 500,
        .eval_every = 500,
        .label_noise = 0.0f,
        .data = NULL,
    };

    Flag flags[] = {
        FLAG_STRING("out", &a.out, "DIR", "checkpoint written at the end"),
        FLAG_STRING("init", &a.init, "DIR", "start from this checkpoint",
                    .def = "none: random init"),
        FLAG_INT("steps", &a.steps, 0, 100000000, "N", "optimizer steps"),
        FLAG_INT("batch", &a.batch, 1, 65536, "N", "examples per step"),
        FLAG_FLOAT("lr", &a.lr, 1e-12, 1.0, "X", "peak learning rate, cosine to lr/10"),
        FLAG_INT("warmup", &a.warmup, 0, 100000000, "N", "warmup steps"),
        FLAG_U64("seed", &a.seed, "N", "seed for data and init", .hi = 2147483647),
        FLAG_INT("dim", &a.dim, 8, 65536, "N", "model width for a new model"),
        FLAG_INT("layers", &a.layers, 1, 1024, "N", "layers"),
        FLAG_INT("heads", &a.heads, 1, 1024, "N", "attention heads"),
        FLAG_INT("kv-heads", &a.kv_heads, 1, 1024, "N", "key/value heads"),
        FLAG_INT("hidden", &a.hidden, 1, 1 << 20, "N", "SwiGLU width"),
        FLAG_INT("max-digits", &a.max_digits, 1, 6, "N", "operand digits 1..N"),
        FLAG_INT("eval-n", &a.eval_n, 1, 1000000, "N", "held-out problems per evaluation"),
        FLAG_INT("eval-every", &a.eval_every, 0, 100000000, "N",
                 "evaluate every N steps, 0 = only at the end"),
        FLAG_FLOAT("label-noise", &a.label_noise, 0.0, 1.0, "P",
                   "fraction of demonstrations whose answer is one too high,\n"
                   "imitating a careless labeller"),
        FLAG_PATH("data", &a.data, "FILE.jsonl",
                  "train on these {\"prompt\", \"completion\"} records (e.g.\n"
                  "rlhf-bon --out) instead of the task's demonstrations;\n"
                  "a file with more than 10% bad records is refused",
                  .def = "none: the built-in task"),
        FLAGS_END,
    };
    FlagsSpec spec = {
        .prog = "rlhf-sft",
        .about = "Supervised warm start on the built-in arithmetic task (a+b=, a-b=), or\n"
                 "on a JSONL file of prompt/completion records (--data).\n",
        .flags = flags,
    };
    int rc = prog_start_stoppable(&spec, argc, argv, "sft", NULL);
    if (rc != PROG_RUN) return rc;
    atomic_int *stop = prog_stop_atomic();

    TaskConfig task = TASK_DEFAULTS;
    task.max_digits = a.max_digits;
    /* The longest example: BOS, two operands, op, '=', a signed answer, EOS. */
    int    T = 2 * a.max_digits + 3 + a.max_digits + 2 + 2;
    Tok   *tok = NULL;
    Model *m = NULL;
    if (a.init) {
        ModelConfig mc;
        if ((rc = ckpt_load_config(a.init, &mc)) || (rc = ckpt_load_tok(a.init, &tok)))
            return PROG_EXIT_FAIL;
        m = model_new(&mc);
        if ((rc = ckpt_load(a.init, m))) return PROG_EXIT_FAIL;
        log_info("initialised from %s", a.init);
    } else {
        tok = tok_new(TOK_CHARSET_DEFAULT);
        ModelConfig mc =
            sft_model_config(a.dim, a.layers, a.heads, a.kv_heads, a.hidden, tok_vocab_size(tok));
        char why[160];
        if (model_config_validate(&mc, why, sizeof why)) {
            fprintf(stderr, "rlhf-sft: model shape: %s\n", why);
            return PROG_EXIT_USAGE;
        }
        m = model_new(&mc);
        model_init_random(m, a.seed, 0.02f);
    }
    const ModelConfig *mc = model_config(m);
    log_info("model dim=%d layers=%d heads=%d/%d hidden=%d vocab=%d params=%zu T=%d", mc->dim,
             mc->n_layers, mc->n_heads, mc->n_kv_heads, mc->hidden_dim, mc->vocab_size,
             model_num_params(m), T);

    /* A data file: its records, tokenised with the model's tokenizer, each
     * completion closed by EOS (prefs_data's reference records). */
    Prefs       *data = NULL;
    PrefsRecord *recs = NULL;
    if (a.data) {
        PrefsOpts po = {
            .tok = tok, .max_ids = mc->max_seq_len, .max_bad_percent = 10, .reference = true};
        if (prefs_open(a.data, &po, &data)) return PROG_EXIT_FAIL;
        recs = xcalloc((size_t)a.batch, sizeof *recs);
        T = mc->max_seq_len;
        log_info("training on %llu records of %s", (unsigned long long)prefs_size(data), a.data);
    }
    OptimConfig  oc = {.lr_peak = a.lr,
                       .lr_min = a.lr / 10,
                       .lr_warmup_steps = a.warmup,
                       .lr_total_steps = a.steps > a.warmup ? a.steps : a.warmup,
                       .beta1 = 0.9f,
                       .beta2 = 0.98f,
                       .eps = 1e-8f,
                       .weight_decay = 0.01f,
                       .grad_clip = 1.0f};
    Optim       *opt = optim_new(&oc, model_num_params(m));
    TaskProblem *probs = xmalloc(sizeof(TaskProblem) * (size_t)a.batch);
    int         *ids = xmalloc(sizeof(int) * (size_t)a.batch * 2 * TASK_TEXT_MAX);
    SftExample  *ex = xmalloc(sizeof(SftExample) * (size_t)a.batch);
    EvalResult   before, after;
    if (eval_arith(m, tok, &task, a.seed + 1000, a.eval_n, 64, &before)) return PROG_EXIT_FAIL;
    log_info("held-out accuracy before: %.3f (format %.3f, n=%d)", before.accuracy, before.format,
             before.n);

    Progress p;
    progress_start(&p, "sft", "step", a.steps);
    SftStats st = {0};
    double   loss_avg = 0.0;
    int      step = 0;
    rc = 0; /* PROG_RUN until now: a data error below sets it */
    for (step = 0; step < a.steps && !*stop; step++) {
        Rng noise;
        rng_seed(&noise, a.seed * 7919 + (uint64_t)step);
        for (int i = 0; i < a.batch && data; i++) {
            uint64_t n = prefs_size(data), k = (uint64_t)step * a.batch + i;
            /* Epoch e visits every record once, in its own shuffled order. */
            prefs_record_free(&recs[i]);
            if ((rc = prefs_read(data, dataset_shuffle(n, a.seed + k / n, k % n), &recs[i]))) break;
            ex[i] =
                (SftExample){recs[i].prompt, recs[i].n_prompt, recs[i].comp[0], recs[i].n_comp[0]};
        }
        if (rc) break;
        for (int i = 0; i < a.batch && !data; i++) {
            task_problem(&task, a.seed, (uint64_t)step * a.batch + i, false, &probs[i]);
            /* A noisy demonstration: the same systematic slip every time, so
             * the imitating policy learns it as a habit RL has to unlearn. */
            if (a.label_noise > 0.0f && rng_uniform(&noise) < a.label_noise)
                snprintf(probs[i].answer, sizeof probs[i].answer, "%ld",
                         strtol(probs[i].answer, NULL, 10) + 1);
            int *pi = ids + (size_t)i * 2 * TASK_TEXT_MAX, *ci = pi + TASK_TEXT_MAX, np, nc;
            CHECK(tok_encode(tok, probs[i].prompt, strlen(probs[i].prompt), TOK_ENC_BOS, pi,
                             TASK_TEXT_MAX, &np) == 0);
            CHECK(tok_encode(tok, probs[i].answer, strlen(probs[i].answer), TOK_ENC_EOS, ci,
                             TASK_TEXT_MAX, &nc) == 0);
            ex[i] = (SftExample){pi, np, ci, nc};
        }
        rc = sft_step(m, opt, ex, a.batch, T, TOK_PAD, &st);
        if (rc == ERR_NONFINITE) continue; /* logged; the batch is skipped */
        if (rc) break;
        loss_avg = step == 0 ? st.loss : 0.95 * loss_avg + 0.05 * st.loss;
        char extra[160];
        snprintf(extra, sizeof extra, "loss %.4f tok-acc %.3f lr %.2e gnorm %.2f", loss_avg,
                 st.token_acc, st.lr, st.grad_norm);
        progress_update(&p, step + 1, extra, step + 1 == a.steps);
        if (a.eval_every > 0 && (step + 1) % a.eval_every == 0 && step + 1 < a.steps) {
            EvalResult mid;
            if (eval_arith(m, tok, &task, a.seed + 1000, a.eval_n, 64, &mid) == 0) {
                progress_end(&p);
                log_info("step %d: held-out accuracy %.3f", step + 1, mid.accuracy);
            }
        }
    }
    progress_end(&p);
    if (*stop) log_warn("stopped by signal after %d steps; saving what was trained", step);
    if (eval_arith(m, tok, &task, a.seed + 1000, a.eval_n, 64, &after)) return PROG_EXIT_FAIL;
    log_info("held-out accuracy after %d steps: %.3f (format %.3f, n=%d) in %.1f s", step,
             after.accuracy, after.format, after.n, progress_elapsed(&p));

    CkptOptim        co = {optim_state_m(opt), optim_state_v(opt), model_num_params(m),
                           optim_step_count(opt)};
    CkptTrainerState ts = {.step = step, .policy_version = 0};
    snprintf(ts.run_id, sizeof ts.run_id, "sft-%llu", (unsigned long long)a.seed);
    ts.extra = json_pack("{s:f, s:f, s:i}", "sft_accuracy_before", before.accuracy,
                         "sft_accuracy_after", after.accuracy, "sft_eval_n", after.n);
    rc = ckpt_save(a.out, m, tok, &co, &ts);
    json_decref(ts.extra);
    if (rc == 0) log_info("saved %s", a.out);
    printf("{\"steps\": %d, \"accuracy_before\": %.4f, \"accuracy_after\": %.4f, \"checkpoint\": "
           "\"%s\"}\n",
           step, before.accuracy, after.accuracy, a.out);
    for (int i = 0; recs && i < a.batch; i++) prefs_record_free(&recs[i]);
    free(recs);
    prefs_free(&data);
    free(probs);
    free(ids);
    free(ex);
    optim_free(&opt);
    model_free(&m);
    tok_free(&tok);
    return rc ? PROG_EXIT_FAIL : PROG_EXIT_OK;
}
