/* gguf_test: SmolLM2-135M-Instruct loaded from its real GGUF file: the config
 * and the time to load, and logit agreement with Hugging Face transformers
 * against tests/fixtures/logits_smollm2.json (written by
 * tests/reference/make_logits_fixture.py): final-position logits within
 * 1e-3 of the largest absolute reference logit, identical 20-token greedy
 * continuations. Skipped, passing, when models/SmolLM2-135M-Instruct.Q4_1.gguf
 * is absent (`make model` fetches it); RLHF_SMOLLM2_GGUF overrides the path. */
#ifndef RLHF_GGUF_TEST_H
#define RLHF_GGUF_TEST_H

#include <stdbool.h>

int gguf_smollm2_selftest(bool verbose);

#endif
