/* rlhf-eval: evaluates a policy on a prompt set: n samples per prompt,
 * scored by the prompts' scorers (or --scorer), the sandboxed code scorer
 * among them; reports pass@k for every k <= n, the majority vote, the mean
 * reward and per-prompt counts (README "Evaluation").
 *
 *   rlhf-eval --model M.gguf --data FILE.jsonl [--n 10 --temperature 0.8 ...] [--out R.json]
 *   rlhf-eval --ckpt DIR [--model M.gguf] (--data FILE.jsonl | --arith N) ...
 *
 * It lives beside the reward server because it runs the server's scorers
 * in-process (reward_server/scorer.h, sandbox_scorer.h); the evaluation
 * itself is common/tasks/eval.h, which the learner uses too. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "common/base/prog.h"
#include "common/nn/kern.h"
#include "common/tasks/score.h"
#include "reward_server/evaluator.h"

/* --stop TEXT, repeatable: C escapes (\n \t \r \\ \" \xHH) unescaped. */
static int parse_stop(const char *text, void *ptr)
{
    EvaluatorConfig *c = ptr;
    if (c->n_stops == EVAL_MAX_STOPS) {
        fprintf(stderr, "rlhf-eval: --stop: more than %d stop strings\n", EVAL_MAX_STOPS);
        return ERR_ARG;
    }
    char  *out = c->stops[c->n_stops];
    size_t k = 0;
    for (const char *p = text; *p; p++) {
        char ch = *p;
        if (ch == '\\') {
            p++;
            unsigned hex;
            if (*p == 'n')
                ch = '\n';
            else if (*p == 't')
                ch = '\t';
            else if (*p == 'r')
                ch = '\r';
            else if (*p == '\\' || *p == '"' || *p == '\'')
                ch = *p;
            else if (*p == 'x' && sscanf(p + 1, "%2x", &hex) == 1 && hex > 0 &&
                     strspn(p + 1, "0123456789abcdefABCDEF") >= 2)
                ch = (char)hex, p += 2;
            else {
                fprintf(stderr,
                        "rlhf-eval: --stop '%s': unknown escape '\\%.1s' (use \\n \\t \\r \\\\ "
                        "\\\" or \\xHH)\n",
                        text, *p ? p : "");
                return ERR_ARG;
            }
        }
        if (k + 1 >= EVAL_STOP_MAX) {
            fprintf(stderr, "rlhf-eval: --stop '%s': longer than %d bytes\n", text,
                    EVAL_STOP_MAX - 1);
            return ERR_ARG;
        }
        out[k++] = ch;
    }
    out[k] = '\0';
    if (k == 0) {
        fprintf(stderr, "rlhf-eval: --stop: an empty stop string\n");
        return ERR_ARG;
    }
    c->n_stops++;
    return 0;
}

static void show_stops(const void *ptr, char *out, size_t cap)
{
    const EvaluatorConfig *c = ptr;
    size_t                 at = 0;
    out[0] = '\0';
    if (c->n_stops == 0) snprintf(out, cap, "none");
    for (int i = 0; i < c->n_stops && at + 8 < cap; i++) {
        at += (size_t)snprintf(out + at, cap - at, "%s\"", i ? " " : "");
        for (const char *p = c->stops[i]; *p && at + 6 < cap; p++) {
            if (*p == '\n')
                at += (size_t)snprintf(out + at, cap - at, "\\n");
            else if (*p == '\t')
                at += (size_t)snprintf(out + at, cap - at, "\\t");
            else
                out[at++] = *p;
        }
        at += (size_t)snprintf(out + at, cap - at, "\"");
    }
}

static int check(const FlagsSpec *spec, void *ctx)
{
    EvaluatorConfig *c = ctx;
    char             why[160];
    if (!c->ckpt && !c->model) {
        fprintf(stderr, "rlhf-eval: give the policy: --ckpt DIR, --model PATH.gguf, or both\n");
        return ERR_ARG;
    }
    if (!c->data == !(flags_at(spec, "arith") > 0)) {
        fprintf(stderr, "rlhf-eval: give the prompts: --data FILE.jsonl or --arith N (not both)\n");
        return ERR_ARG;
    }
    if (sampler_config_validate(&c->sampler, why, sizeof why)) {
        fprintf(stderr, "rlhf-eval: sampling flags (--temperature, --top-p, --top-k): %s\n", why);
        return ERR_ARG;
    }
    if (c->sampler.temperature == 0 && c->n > 1)
        fprintf(stderr,
                "rlhf-eval: note: --temperature 0 is greedy: the %d samples of a prompt "
                "are the same\n",
                c->n);
    if (!c->data && (c->task || flags_at(spec, "template") > 0)) {
        fprintf(stderr, "rlhf-eval: --%s applies to --data only\n", c->task ? "task" : "template");
        return ERR_ARG;
    }
    return 0;
}

int main(int argc, char **argv)
{
    EvaluatorConfig c = {
        .ckpt = NULL,
        .model = NULL,
        .data = NULL,
        .arith_n = 200,
        .arith_digits = 0,
        .arith_seed = 1,
        .tmpl = EVALUATOR_TEMPLATE_CHAT,
        .task = NULL,
        .scorer = NULL,
        .data_max_bad = 50,
        .limit = 0,
        .n = 1,
        .sampler = {.temperature = 0.0f, .top_k = 0, .top_p = 1.0f},
        .max_new = 256,
        .batch = 8,
        .seed = 1,
        .threads = 0,
        .decode_weights = KERN_F32,
        .out = NULL,
        .completions = NULL,
        .code = {.sandbox = SANDBOX_DEFAULTS},
        .progress_every_s = 10.0,
    };
    /* One sandboxed run per CPU. */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    c.code.sandbox.workers = (int)(cpus < 1                     ? 1
                                   : cpus > SANDBOX_MAX_WORKERS ? SANDBOX_MAX_WORKERS
                                                                : cpus);
    int  level = -1;
    Flag flags[] = {
        FLAG_SECTION("The policy:"),
        FLAG_PATH("ckpt", &c.ckpt, "DIR", "a checkpoint of ours (its char tokenizer, or --model's)",
                  .def = "none"),
        FLAG_PATH("model", &c.model, "PATH.gguf",
                  "a GGUF model: its weights (without --ckpt), its BPE\n"
                  "tokenizer and chat template",
                  .def = "none"),
        FLAG_CHOICE("decode-weights", &c.decode_weights, kern_type_names, "T",
                    "precision generation decodes in: fp32, bf16, fp16"),
        FLAG_SECTION("The prompts:"),
        FLAG_PATH("data", &c.data, "FILE.jsonl",
                  "JSONL prompts (README \"Bring your own data\"); HumanEval:\n"
                  "data/humaneval/HumanEval-code.jsonl (make humaneval)",
                  .def = "none"),
        FLAG_INT("arith", &c.arith_n, 1, 1 << 24, "N",
                 "instead of --data: N held-out problems of the built-in\n"
                 "arithmetic task (the chat task for a GGUF model)"),
        FLAG_INT("arith-digits", &c.arith_digits, 0, 9, "D",
                 "--arith: operand digits at most, 0 = the task's own\n(3 for the char task, 2 for "
                 "the chat task)"),
        FLAG_U64("arith-seed", &c.arith_seed, "S", "--arith: which held-out problems"),
        FLAG_CHOICE("template", &c.tmpl, evaluator_template_names, "T",
                    "a GGUF model's prompts: chat (its chat template) or raw\n"
                    "(the text as it is: code to complete)"),
        FLAG_STRING("task", &c.task, "SPEC", "scorer spec of records without a task",
                    .def = "none: such records are refused"),
        FLAG_STRING("scorer", &c.scorer, "SPEC",
                    "score every prompt with SPEC, whatever its task:\n"
                    "NAME[:W],... of " SCORE_RULE_NAMES,
                    .def = "each prompt's task"),
        FLAG_INT("data-max-bad", &c.data_max_bad, 0, 100, "PCT",
                 "refuse a file with more than PCT% bad records"),
        FLAG_INT("limit", &c.limit, 0, 1 << 30, "N", "the first N prompts only, 0 = all"),
        FLAG_SECTION("Sampling:"),
        FLAG_INT("n", &c.n, 1, 100000, "N", "samples per prompt (pass@k for every k <= N)"),
        FLAG_FLOAT("temperature", &c.sampler.temperature, 0, 100, "X",
                   "sampling temperature, 0 = greedy"),
        FLAG_FLOAT("top-p", &c.sampler.top_p, 0, 1, "P", "nucleus mass in (0, 1], 1 = off"),
        FLAG_INT("top-k", &c.sampler.top_k, 0, 1 << 30, "K", "keep the K most likely, 0 = off"),
        FLAG_INT("max-new", &c.max_new, 1, 1 << 20, "N",
                 "tokens per completion at most, the end token included"),
        FLAG_FUNC("stop", &c, parse_stop, show_stops, "TEXT",
                  "end a completion at TEXT (cut off with what follows);\n"
                  "repeatable, escapes \\n \\t \\\\ \\xHH. HumanEval: --stop '\\ndef '\n"
                  "--stop '\\nclass ' --stop '\\nif __name__' --stop '\\nprint('"),
        FLAG_U64("seed", &c.seed, "S",
                 "sampling seed (sample j of prompt i draws from its own\n"
                 "stream of (S, i, j))"),
        FLAG_INT("batch", &c.batch, 1, 4096, "N", "sequences decoded together"),
        FLAG_INT("threads", &c.threads, 0, 1024, "N",
                 "threads of the model's kernels and OpenBLAS, 0 = as\n"
                 "$RLHF_THREADS and $OPENBLAS_NUM_THREADS say (all CPUs)"),
        FLAG_SECTION("Output:"),
        FLAG_PATH("out", &c.out, "FILE.json",
                  "the JSON report: settings, pass@k, vote, per-prompt counts", .def = "none"),
        FLAG_PATH("completions", &c.completions, "FILE.jsonl",
                  "every completion with its score, one JSON object a line", .def = "none"),
        FLAG_DOUBLE("progress-every", &c.progress_every_s, 0, 86400, "S",
                    "seconds between progress lines when stderr is not a\nterminal"),
        FLAG_LOG_LEVEL(&level, .def = "info, or $RLHF_LOG"),
        FLAG_SECTION("Code scorer (README \"Code rewards in a sandbox\"):"),
        FLAG_INT("code-workers", &c.code.sandbox.workers, 0, SANDBOX_MAX_WORKERS, "N",
                 "sandboxed runs at once; 0 = no \"code\" scorer", .def = "one per CPU"),
        FLAG_BOOL("code-all-or-nothing", &c.code.is_all_or_nothing,
                  "reward 1 when every test passes, else 0"),
        FLAG_INT("code-timeout-ms", &c.code.sandbox.timeout_ms, 10, 3600000, "MS",
                 "wall clock of one run"),
        FLAG_INT("code-cpu-s", &c.code.sandbox.cpu_s, 1, 3600, "S", "CPU seconds of one run"),
        FLAG_INT("code-mem-mb", &c.code.sandbox.mem_mb, 16, 1 << 20, "MB",
                 "address space of one run"),
        FLAG_CHOICE("code-isolation", &c.code.sandbox.isolation, sandbox_iso_names, "MODE",
                    "namespaces, seccomp, rlimits, or auto: the strongest that works"),
        FLAG_STRING("code-python", &c.code.sandbox.python, "PATH", "the interpreter"),
        FLAGS_END,
    };
    FlagsSpec spec = {
        .prog = "rlhf-eval",
        .synopsis = "(--ckpt DIR | --model PATH.gguf) (--data FILE.jsonl | --arith N) [flags]",
        .about = "Evaluates a policy: N samples per prompt, scored; reports pass@k for every k <= "
                 "N\n(the unbiased estimator), the majority-vote accuracy, the mean reward and "
                 "per-prompt\ncounts, on stdout and as JSON (--out).\n",
        .flags = flags,
        .check = check,
        .check_ctx = &c,
    };
    int rc = prog_start(&spec, argc, argv, "eval", &level);
    if (rc != PROG_RUN) return rc;
    if (!c.data) c.tmpl = EVALUATOR_TEMPLATE_CHAT;
    c.code.sandbox.gid = c.code.sandbox.uid;
    /* Asked for by name: a sandbox that cannot start fails the run. */
    c.code.is_required = flags_at(&spec, "code-workers") > 0 && c.code.sandbox.workers > 0;
    rc = evaluator_run(&c);
    return rc ? PROG_EXIT_FAIL : PROG_EXIT_OK;
}
