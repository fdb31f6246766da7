/* actor_int: the actor's internals shared by its source files and its
 * self-test (actor_test.c). Not for other modules. */
#ifndef RLHF_ACTOR_INT_H
#define RLHF_ACTOR_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "common/nn/model.h"

/* Parameters a config implies, in the model's layout (model.h): what a
 * snapshot's size is checked against before any model is built from it. */
uint64_t actor_config_num_params(const ModelConfig *c);
/* Whether two configs describe the same model shape. */
bool actor_config_equal(const ModelConfig *x, const ModelConfig *y);

#endif
