/* actor_work: the actor's work — lease requests and grants, and serving a
 * grant: batched generation with gen_run through the KV cache, each group
 * of group_size completions PUSHed to the reward servers as soon as it is
 * complete.
 *
 * Serving a grant is a blocking call (the actor is in ACTOR_SAMPLING): it
 * generates batch after batch, and only between batches looks at the stop
 * flag, reads announces and swaps in newer weights of the same learner, so
 * weights never change inside a batch and every token records the version
 * that made it.
 *
 * Ownership and threading: the actor's thread; handlers borrow the message
 * they are given (the dispatcher frees it). Errors: see actor_int.h. */
#ifndef RLHF_ACTOR_WORK_H
#define RLHF_ACTOR_WORK_H

#include "actor/actor_int.h"

/* The lease timer (ACTOR_TIMER_LEASE): in IDLE sends a LeaseRequest, in
 * REQUESTING re-sends it (no reply in reply_timeout_ms). Returns 0 or ERR_IO. */
int actor_on_lease_timer(Reactor *r, void *arg);

/* The LeaseGrant handler: a grant without prompts sets when to ask again
 * (and asks for a fetch if the learner's run or epoch differs); a duplicate
 * grant is ignored; otherwise the grant is served (ACTOR_SAMPLING), after a
 * fetch if its run or epoch differs from the held weights' in either
 * direction (dropped if the learner then serves other weights). Returns 0,
 * ACTOR_STOPPED or ERR_IO. */
int actor_on_grant(Actor *a, const ProtobufCMessage *g);
/* The learner refused a request (an ErrorReply on the lease socket): ask
 * again after a pause. Returns 0. */
int actor_on_lease_refused(Actor *a);

#endif
