/* rlhf-rm: trains a reward model on preference data (JSONL pairs, chat
 * pairs or rankings) from a policy checkpoint or a GGUF model, normalises
 * its scores and saves it as a Hugging Face sequence-classification
 * checkpoint; prints a JSON summary. learner/rm_train.h is the run. */
#include <stdio.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "common/base/prog.h"
#include "learner/rm_train.h"

static int check(const FlagsSpec *spec, void *ctx)
{
    (void)spec;
    const RmTrainConfig *c = ctx;
    if (!c->run.data) {
        fprintf(stderr, "rlhf-rm: --data is required (see --help)\n");
        return ERR_ARG;
    }
    if (!c->run.init && !c->run.model) {
        fprintf(stderr, "rlhf-rm: give --init DIR or --model FILE.gguf to start from\n");
        return ERR_ARG;
    }
    return 0;
}

int main(int argc, char **argv)
{
    int           level = LOG_INFO;
    RmTrainConfig c = {
        .run = {.data = NULL,
                .eval_data = NULL,
                .eval_frac = 0.1f,
                .eval_max = 0,
                .init = NULL,
                .model = NULL,
                .max_len = PREFS_RUN_MAX_LEN,
                .max_bad = 10,
                .batch = 16,
                .seed = 1},
        .out = "runs/rm",
        .summary = NULL,
        .steps = 0,
        .epochs = 1,
        .lr = 1e-4f,
        .warmup = 10,
        .grad_clip = 1.0f,
        .margin = 0.0f,
        .eval_every = 0,
        .norm_data = NULL,
        .norm_samples = 0,
        .norm_temperature = 1.0f,
        .norm_max = 2000,
    };
    Flag flags[] = {
        FLAG_SECTION("Data:"),
        FLAG_PATH("data", &c.run.data, "FILE.jsonl",
                  "preference records, one JSON object a line: {\"prompt\",\n"
                  "\"chosen\", \"rejected\"[, \"margin\"]}, the same with chat\n"
                  "messages, or {\"prompt\", \"completions\", \"ranking\"} (indices\n"
                  "best first)",
                  .def = "(required)"),
        FLAG_PATH("eval-data", &c.run.eval_data, "FILE.jsonl", "held-out records",
                  .def = "--eval-frac of --data"),
        FLAG_FLOAT("eval-frac", &c.run.eval_frac, 0.0, 0.9, "F",
                   "share of --data held out without --eval-data"),
        FLAG_INT("eval-max", &c.run.eval_max, 0, 1 << 30, "N",
                 "held-out records evaluated, 0 = all"),
        FLAG_INT("eval-every", &c.eval_every, 0, 100000000, "N",
                 "evaluate every N steps, 0 = at the start and end only"),
        FLAG_INT("data-max-bad", &c.run.max_bad, 0, 100, "PCT",
                 "refuse a data file with more than PCT% bad records\n"
                 "(each one logged as FILE:LINE and skipped)"),
        FLAG_SECTION("Model:"),
        FLAG_PATH("init", &c.run.init, "DIR",
                  "checkpoint to start from (a policy, e.g. rlhf-sft's, or a\n"
                  "reward model to train further)",
                  .def = "none"),
        FLAG_PATH("model", &c.run.model, "FILE.gguf",
                  "GGUF model to start from, or with --init the tokenizer\n"
                  "of that checkpoint; chat records use its template",
                  .def = "none"),
        FLAG_INT("max-len", &c.run.max_len, 8, 1 << 20, "N",
                 "positions a GGUF model is loaded with: prompt + completion"),
        FLAG_PATH("out", &c.out, "DIR", "reward-model checkpoint written at the end"),
        FLAG_PATH("summary", &c.summary, "FILE", "also write the JSON summary here",
                  .def = "stdout only"),
        FLAG_SECTION("Training:"),
        FLAG_LONG("steps", &c.steps, 0, 1000000000L, "N", "optimizer steps, 0 = --epochs"),
        FLAG_INT("epochs", &c.epochs, 1, 100000, "N", "passes over the training records"),
        FLAG_INT("batch", &c.run.batch, 1, 65536, "N",
                 "records per step (a ranking's C(K,2) pairs together)"),
        FLAG_FLOAT("lr", &c.lr, 1e-12, 1.0, "X", "peak learning rate, cosine to lr/10"),
        FLAG_INT("warmup", &c.warmup, 0, 100000000, "N", "warmup steps"),
        FLAG_FLOAT("grad-clip", &c.grad_clip, 0.0, 1e6, "X", "global gradient norm clip, 0 = off"),
        FLAG_FLOAT("margin", &c.margin, 0.0, 1e6, "M",
                   "margin of pairs whose record gives none:\n"
                   "-log sigmoid(r_chosen - r_rejected - M)"),
        FLAG_U64("seed", &c.run.seed, "N", "held-out split, order, head init, samples"),
        FLAG_SECTION("Normalisation (score.bias: mean reference reward 0):"),
        FLAG_PATH("norm-data", &c.norm_data, "FILE.jsonl",
                  "reference completions, {\"prompt\", \"completion\"} a line", .def = "none"),
        FLAG_INT("norm-samples", &c.norm_samples, 0, 1 << 20, "N",
                 "without --norm-data: sample N completions from the starting\n"
                 "policy on training prompts (the original recipe); 0 = use\n"
                 "the training records' completions"),
        FLAG_FLOAT("norm-temperature", &c.norm_temperature, 1e-3, 100.0, "T",
                   "temperature of --norm-samples"),
        FLAG_INT("norm-max", &c.norm_max, 1, 1 << 30, "N", "reference completions used at most"),
        FLAG_LOG_LEVEL(&level),
        FLAGS_END,
    };
    FlagsSpec spec = {
        .prog = "rlhf-rm",
        .synopsis = "--data FILE.jsonl (--init DIR | --model FILE.gguf) [--out DIR] [flags]",
        .about = "Trains a reward model (Bradley-Terry) on preference data and saves it as a\n"
                 "Hugging Face sequence-classification checkpoint.\n",
        .flags = flags,
        .check = check,
        .check_ctx = &c,
    };
    int rc = prog_start_stoppable(&spec, argc, argv, "rm", &level);
    if (rc != PROG_RUN) return rc;
    rc = rm_train_run(&c, prog_stop_atomic());
    return rc ? PROG_EXIT_FAIL : PROG_EXIT_OK;
}
