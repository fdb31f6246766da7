/* chat_test: the chat task on SmolLM2-135M-Instruct's real tokenizer and
 * model: ChatML prompts with the model's default system prompt, the
 * end-of-turn id, the held-out evaluation, and rlhf-learner's --model path
 * (learner_new from the GGUF, zero steps, reward and accuracy in the
 * summary). Skipped, passing, when models/SmolLM2-135M-Instruct.Q4_1.gguf is
 * absent (`make model` fetches it); RLHF_SMOLLM2_GGUF overrides the path. */
#ifndef RLHF_CHAT_TEST_H
#define RLHF_CHAT_TEST_H

#include <stdbool.h>

int chat_smollm2_selftest(bool verbose);

#endif
