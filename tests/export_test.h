/* export_test: SmolLM2-135M-Instruct from its real GGUF file exported and
 * loaded back: GGUF F32 gives bit-identical logits, the tokenizer metadata
 * reads back the same, and the Hugging Face directory gives identical logits
 * through ckpt_load. Skipped, passing, when
 * models/SmolLM2-135M-Instruct.Q4_1.gguf is absent (`make model` fetches it);
 * RLHF_SMOLLM2_GGUF overrides the path. RLHF_EXPORT_KEEP=DIR keeps the
 * exported HF directory there (for tests/reference/check_export.py). */
#ifndef RLHF_EXPORT_TEST_H
#define RLHF_EXPORT_TEST_H

#include <stdbool.h>

int export_smollm2_selftest(bool verbose);

#endif
