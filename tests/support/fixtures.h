/* fixtures: small helpers the model-file tests (gguf, export, bpe) share:
 * logits of a fixed token sequence, the largest difference of two float
 * arrays, and a quick unsynced file write for hand-made files.
 *
 * Ownership: buffers are the caller's. Threading: one thread per call.
 * Errors: fixture_write_file returns 0 or ERR_IO; misuse is a CHECK. */
#ifndef RLHF_FIXTURES_H
#define RLHF_FIXTURES_H

#include <stddef.h>

#include "common/nn/model.h"

/* Logits of every position of a fixed sequence of T <= 16 tokens (token i is
 * (7i + 3) mod V), (T, V) into out. */
void fixture_logits(Model *m, float *out, int T);

/* max |a[i] - b[i]| over n floats. */
float fixture_max_abs_diff(const float *a, const float *b, size_t n);

/* Writes n bytes to path without fsync: fuzz loops write thousands of
 * files. Returns 0 or ERR_IO. */
int fixture_write_file(const char *path, const void *p, size_t n);

#endif
