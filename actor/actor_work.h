/* actor_work: the actor's work — lease requests and grants, and serving a
 * grant: all its P x G sequences in one continuous-batching run of gen
 * through --batch slots (a finished sequence's slot goes at once to the
 * next waiting one), each group of group_size completions PUSHed to the
 * reward servers as soon as it is complete.
 *
 * Serving a grant is a blocking call (the actor is in ACTOR_SAMPLING).
 * Between decode steps it looks at the stop flag and reads announces; newer
 * weights of the same learner are swapped in only when no sequence is
 * running: once a fetch is due no waiting prompt starts, the running ones
 * finish, then the fetch is tried and prompts start again. So weights never
 * change inside a completion and every token records the version that made
 * it. Slot use (slots offered and used) is counted in ActorStats.
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
