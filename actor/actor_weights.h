/* actor_weights: how the actor follows the learner's weights (the clone
 * pattern): WeightAnnounce on the SUB says a version exists, a
 * SnapshotRequest to the snapshot ROUTER fetches it as WeightChunk frames,
 * which are assembled in a spare buffer, verified (checksum, config, size,
 * finite values) and copied over the model's parameters in one piece, only
 * between generation batches.
 *
 * A fetch is a blocking call: it sends the request and reads chunks until
 * the snapshot is complete, silent for snapshot_timeout_ms, or refused,
 * looking at the stop flag every poll_ms. It stays blocking because the
 * actor must not read grants or announces while a snapshot is half
 * assembled (a grant would be served, or refused, against weights about to
 * change); the actor is in ACTOR_FETCHING meanwhile.
 *
 * Ownership and threading: the actor's thread; the model and the snapshot
 * buffer belong to the Actor. Errors: see actor_int.h. */
#ifndef RLHF_ACTOR_WEIGHTS_H
#define RLHF_ACTOR_WEIGHTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "actor/actor_int.h"

/* "run 'r' epoch 1 v5" into buf. */
void actor_weights_format(const WeightsId *w, char *buf, size_t cap);
/* Whether the held weights are of this run and epoch. */
bool actor_held_matches(const Actor *a, const char *run_id, uint64_t epoch);

/* One fetch attempt, without waiting after a failure. Returns 0 (a
 * snapshot is installed, or the learner's is the one held), ACTOR_STOPPED,
 * ERR_IO, or the attempt's error, counted and logged, with *retry_ms set to
 * the back-off before the next attempt (doubling up to a cap). */
int actor_fetch_attempt(Actor *a, int *retry_ms);
/* Up to max_attempts attempts (0 = no limit), waiting the back-off after
 * each failure. Returns 0, ACTOR_STOPPED, ERR_IO or the last error. */
int actor_fetch(Actor *a, int max_attempts);

/* The WeightAnnounce handler (borrows w): asks for a fetch when it names
 * weights other than, and not older than, the held ones. Returns 0. */
int actor_on_announce(Actor *a, const ProtobufCMessage *w);

#endif
