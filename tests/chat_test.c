/* chat_test: the chat task on SmolLM2-135M-Instruct's real tokenizer and
 * model: ChatML prompts with the model's default system prompt, the
 * end-of-turn id, the held-out evaluation, and rlhf-learner's --model path
 * (learner_new from the GGUF, zero steps, reward and accuracy in the
 * summary). Skipped, passing, when models/SmolLM2-135M-Instruct.Q4_1.gguf is
 * absent (`make model` fetches it); RLHF_SMOLLM2_GGUF overrides the path. */
#include "tests/support/fixtures.h"
#include "tests/test_list.h"

#include <jansson.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/formats/bpe.h"
#include "common/formats/bpe_gguf.h"
#include "common/tasks/chat_task.h"
#include "common/base/err.h"
#include "common/formats/gguf.h"
#include "common/formats/gguf_llama.h"
#include "common/tasks/eval.h"
#include "learner/learner.h"

static int expect(bool ok, const char *what)
{
    if (!ok) printf("  chat_smollm2: FAILED: %s\n", what);
    return ok ? 0 : 1;
}

int chat_smollm2_selftest(bool verbose)
{
    const char *path = fixture_smollm2_path("chat_smollm2");
    if (!path) return 0;
    int  fails = 0;
    Bpe *b = NULL;
    if (bpe_load(path, &b) != 0) return 1;

    /* The prompt is the ChatML rendering with SmolLM2's default system prompt. */
    ChatTaskConfig  tc = CHAT_TASK_DEFAULTS;
    ChatTaskProblem p;
    chat_task_problem(&tc, 1, 0, true, &p);
    int  ids[CHAT_TASK_PROMPT_MAX_IDS], n = 0;
    char text[2048], want[1024];
    fails += expect(chat_task_prompt_ids(b, p.question, ids, CHAT_TASK_PROMPT_MAX_IDS, &n) == 0,
                    "prompt encodes");
    snprintf(want, sizeof want,
             "<|im_start|>system\n%s<|im_end|>\n<|im_start|>user\n%s<|im_end|>\n"
             "<|im_start|>assistant\n",
             bpe_chat_default_system(b), p.question);
    fails += expect(bpe_decode(b, ids, n, BPE_DEC_SPECIAL, text, sizeof text, NULL) == 0 &&
                        !strcmp(text, want),
                    "prompt decodes to the ChatML text");
    int eot = bpe_eot_id(b);
    fails += expect(eot >= 0 && !strcmp(bpe_token_text(b, eot), "<|im_end|>"),
                    "the end-of-turn token is <|im_end|>");
    if (verbose) printf("  chat_smollm2: %d prompt ids, eot %d\n", n, eot);

    /* Greedy evaluation is deterministic whatever the batch. */
    Model *m = NULL;
    if (gguf_load(path, LEARNER_GGUF_MAX_SEQ, &m) != 0) {
        bpe_free(&b);
        return fails + 1;
    }
    EvalResult e1, e2;
    fails += expect(eval_chat(m, b, &tc, 5, 6, 6, 12, &e1) == 0 &&
                        eval_chat(m, b, &tc, 5, 6, 4, 12, &e2) == 0,
                    "eval_chat runs");
    fails += expect(e1.accuracy == e2.accuracy && e1.reward == e2.reward && e1.n == 6 &&
                        e1.reward >= e1.accuracy && e1.reward <= e1.accuracy + 0.2 + 1e-9,
                    "eval_chat is deterministic and reward = accuracy + 0.2 format");
    if (verbose)
        printf("  chat_smollm2: eval on 6: accuracy %.3f reward %.3f format %.3f\n", e1.accuracy,
               e1.reward, e1.format);
    model_free(&m);
    bpe_free(&b);

    /* The learner from --model: zero steps, before/after in the summary. */
    char dir[] = "/tmp/rlhf-chat-test-XXXXXX";
    if (!mkdtemp(dir)) return fails + 1;
    char summary[128];
    snprintf(summary, sizeof summary, "%s/summary.json", dir);
    LearnerConfig c = LEARNER_DEFAULTS;
    c.lease_ep = c.results_ep = c.weights_ep = c.snapshot_ep = "tcp://127.0.0.1:*";
    c.model_path = path;
    c.max_digits = 2;
    c.ckpt_dir = NULL;
    c.metrics_path = NULL;
    c.summary_path = summary;
    c.steps = 0;
    c.eval_n = 4;
    c.max_new_tokens = 12;
    c.status_every_s = 0;
    Learner *l = learner_new(&c);
    fails += expect(l != NULL, "learner_new with model_path");
    if (l) {
        atomic_int stop = 0;
        fails += expect(learner_run(l, &stop) == 0, "learner_run");
        LearnerStatus st;
        learner_status(l, &st);
        fails += expect(isfinite(st.reward_before) && st.reward_after == st.reward_before,
                        "status: reward before = after with no step");
        learner_free(&l);
        json_t *o = json_load_file(summary, 0, NULL);
        fails += expect(o && json_is_number(json_object_get(o, "reward_before")) &&
                            json_is_number(json_object_get(o, "accuracy_after")) &&
                            !strcmp(json_string_value(json_object_get(o, "task")), "arith_chat"),
                        "summary has reward_before/accuracy_after and task arith_chat");
        json_decref(o);
    }
    unlink(summary);
    rmdir(dir);
    return fails ? 1 : 0;
}
