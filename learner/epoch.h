/* epoch: the learner's incarnation numbers. Every start of the learner on a
 * run is an incarnation with an epoch, carried by every lease, announce,
 * snapshot and group, so that work of one incarnation is never taken for
 * work of another; an epoch must therefore never repeat within a run.
 *
 * Why not a counter in the checkpoint (the old rule, epoch + 1): an
 * operator who restores an older copy of the checkpoint directory rolls the
 * counter back, and the next start reuses an epoch an earlier incarnation
 * already ran (issue 8: an actor holding "epoch 1 version 112" then ignores
 * a learner at "epoch 1 version 60", every group is refused and training
 * stops). A counter kept outside the directory would be rolled back by a
 * restore of the volume it lives on. So an epoch is two halves:
 *
 *   bits 63..32  restarts: the saved epoch's restarts + 1 (0 for a fresh
 *                run), so epochs still grow from one start to the next in
 *                the normal case, and stay readable in logs and metrics
 *   bits 31..0   nonce: 32 random bits (getrandom), drawn at every start,
 *                never 0 after a restart
 *
 * Two incarnations of one run share an epoch only if they restart from the
 * same restart count (a restored copy) and draw the same nonce: 1 in 2^32
 * per such pair, whatever is restored or copied. A fresh run is epoch 0
 * under a new random run id. Restarts saturate at 2^31 - 1 so an epoch
 * stays a positive JSON integer. Epochs of checkpoints written before this
 * rule (small counters) have restarts 0, so the next start is above them.
 *
 * Lease ids: an incarnation's lease ids count up from (nonce << 32) | 1,
 * so two incarnations with different nonces never hand out the same id,
 * and a group is matched by (epoch, lease id) in any case.
 *
 * Actors compare epochs for equality only (a different epoch, higher or
 * lower, means a different incarnation: refetch), never for order.
 *
 * Pure functions but epoch_nonce (which reads the kernel's random source);
 * any thread; nothing fails. */
#ifndef RLHF_EPOCH_H
#define RLHF_EPOCH_H

#include <stdint.h>

#define EPOCH_MAX_RESTARTS 0x7fffffffu

/* 32 random bits, never 0 (getrandom; without it, the clock and pid). */
uint32_t epoch_nonce(void);
/* The epoch of a start that resumes a checkpoint whose epoch was saved,
 * with a fresh nonce (!= 0). */
uint64_t epoch_next(uint64_t saved, uint32_t nonce);
/* The restart count of an epoch (its high half). */
uint32_t epoch_restarts(uint64_t epoch);
/* The first lease id of an incarnation of this epoch. */
uint64_t epoch_first_lease_id(uint64_t epoch);

#endif
