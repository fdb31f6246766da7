#include "learner/learner_task.h"

#include <string.h>

#include "common/base/err.h"
#include "common/base/log.h"

_Static_assert(LEARNER_PROMPT_IDS_MAX >= TASK_TEXT_MAX && LEARNER_ANSWER_MAX >= TASK_TEXT_MAX,
               "buffer sizes");

int learner_task_prompt(const Learner *l, uint64_t id, int *ids, char *answer)
{
    int n = 0;
    if (l->bpe) {
        ChatTaskProblem p;
        chat_task_problem(&l->chat, l->prompt_seed, id, false, &p);
        /* learner_task_check encoded the longest question: a failure is a bug. */
        CHECK(chat_task_prompt_ids(l->bpe, p.question, ids, LEARNER_PROMPT_IDS_MAX, &n) == 0);
        if (answer) snprintf(answer, LEARNER_ANSWER_MAX, "%s", p.answer);
        return n;
    }
    TaskProblem p;
    task_problem(&l->task, l->prompt_seed, id, false, &p);
    /* Our own task text in our own charset: a failure is a bug. */
    CHECK(tok_encode(l->tok, p.prompt, strlen(p.prompt), TOK_ENC_BOS, ids, LEARNER_PROMPT_IDS_MAX,
                     &n) == 0);
    if (answer) snprintf(answer, LEARNER_ANSWER_MAX, "%s", p.answer);
    return n;
}

const char *learner_task_name(const Learner *l)
{
    return l->bpe ? CHAT_TASK_NAME : LEARNER_TASK_ARITH;
}

/* The chat task on a GGUF model: the longest question (both operands of
 * max_digits digits, a minus) must fit LEARNER_PROMPT_IDS_MAX ids, and with
 * a full completion the model's positions; the model must have an
 * end-of-turn. */
static int check_chat_prompts(Learner *l)
{
    const LearnerConfig *c = &l->cfg;
    char                 q[CHAT_TASK_TEXT_MAX], num[8];
    memset(num, '9', sizeof num);
    num[c->max_digits] = '\0';
    snprintf(q, sizeof q, "What is -%s - %s? Reply with the number only.", num, num);
    int ids[LEARNER_PROMPT_IDS_MAX], n = 0;
    int rc = chat_task_prompt_ids(l->bpe, q, ids, LEARNER_PROMPT_IDS_MAX, &n);
    if (rc) {
        log_error("learner: '%s': the chat task's prompt does not encode in %d ids (%s)",
                  c->model_path, LEARNER_PROMPT_IDS_MAX, err_str(rc));
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

int learner_task_check(Learner *l)
{
    const LearnerConfig *c = &l->cfg;
    if (l->bpe) return check_chat_prompts(l);
    /* Prompts and answers are built from these characters; a checkpoint
     * whose tokenizer lacks one cannot be trained on the task. */
    for (const char *ch = "0123456789+-="; *ch; ch++) {
        if (tok_id(l->tok, *ch) < 0) {
            log_error("learner: the tokenizer has no '%c', which the arithmetic task needs", *ch);
            return ERR_MISMATCH;
        }
    }
    /* The model must hold a prompt and a full completion. */
    int longest = 2 * c->max_digits + 3 + c->max_new_tokens;
    if (longest > model_config(l->policy)->max_seq_len) {
        log_error("learner: prompts of %d-digit operands plus %d new tokens need %d positions, "
                  "the model has %d",
                  c->max_digits, c->max_new_tokens, longest, model_config(l->policy)->max_seq_len);
        return ERR_RANGE;
    }
    return 0;
}

bool learner_task_is_correct(const Learner *l, const Rlhf__Completion *cp, const char *answer)
{
    int  nt = (int)cp->n_tokens;
    char text[1024];
    if (l->bpe) {
        bool stop = nt > 0 && cp->tokens[nt - 1] == bpe_eot_id(l->bpe);
        int  nc = nt - stop;
        if (bpe_decode_max_bytes(l->bpe, nc) <= sizeof text &&
            bpe_decode(l->bpe, (const int *)cp->tokens, nc, 0, text, sizeof text, NULL) == 0) {
            ChatTaskScore cs;
            chat_task_score(text, answer, !stop, &cs);
            return cs.correct > 0.5f;
        }
        return false;
    }
    bool stop = nt > 0 && cp->tokens[nt - 1] == TOK_EOS;
    if (stop && nt - 1 <= 64 &&
        tok_decode(l->tok, (const int *)cp->tokens, nt - 1, 0, text, sizeof text, NULL) == 0) {
        TaskScore ts;
        task_score(text, answer, &ts);
        return ts.correct > 0.5f;
    }
    return false;
}
