/* learner_setup: where a learner's models and run identity come from. A
 * start that finds a checkpoint in ckpt_dir resumes it (policy, optimizer
 * moments, step, version, run id, the epoch bumped, the lease state), with
 * the reference from --init, from where the run started, or as a last resort
 * the resumed policy; a fresh start takes --model (GGUF), --init or a random
 * init of the configured shape, and a new run id. PPO adds a critic, resumed
 * from beside the checkpoint when one saved with the resumed step is there.
 *
 * Damage: the resume takes the newest checkpoint of ckpt_dir's history
 * (common/formats/ckpt.h: the checkpoint, then the kept "<dir>.prev-<n>")
 * that loads whole. A damaged one (a checksum that does not match, a
 * malformed, truncated or missing file, a non-finite value) is logged as an
 * error and the one before it tried; once one loads, the damaged ones are
 * set aside ("<dir>.damaged-<n>"), the one that loaded is put back at
 * ckpt_dir (ckpt_restore: one atomic exchange with the damaged newest) and
 * a warning names it. If none loads the start fails: a fresh run is never
 * started over them. No checkpoint at ckpt_dir itself means a fresh run.
 * The critic follows the policy: its newest checkpoint with the policy's run
 * id, step and version that loads; without one it starts afresh (logged).
 *
 * Ownership: fills the Learner, which owns what is loaded. Threading: the
 * Learner's thread, before any socket opens. Errors: logged, an ERR_* is
 * returned; a checkpoint that is not a learner's is refused (ERR_MISMATCH)
 * rather than overwritten. */
#ifndef RLHF_LEARNER_SETUP_H
#define RLHF_LEARNER_SETUP_H

#include <jansson.h>

#include "learner/learner_int.h"

/* Policy, reference, tokenizer, optimizer state and run identity, from a
 * checkpoint to resume or from the warm start; then the prompts
 * (learner_task_open, with the checkpoint's data state on a resume).
 * On a resume *lease_state gets the checkpoint's lease state (caller owns a
 * reference), else it stays NULL. Returns 0 or an error (logged). */
int learner_setup_models(Learner *l, json_t **lease_state);

#endif
