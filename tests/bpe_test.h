/* bpe_test: the byte-level BPE tokenizer on SmolLM2-135M-Instruct's real
 * vocabulary, against tests/fixtures/tokenizer_smollm2.json (written by
 * tests/reference/make_tokenizer_fixture.py with Hugging Face transformers).
 * Skipped, passing, when models/SmolLM2-135M-Instruct.Q4_1.gguf is absent
 * (`make model` fetches it); RLHF_SMOLLM2_GGUF overrides the path and
 * RLHF_BPE_FIXTURE the fixture (for larger, randomized comparisons). */
#ifndef RLHF_BPE_TEST_H
#define RLHF_BPE_TEST_H

#include <stdbool.h>

int bpe_smollm2_selftest(bool verbose);

#endif
