/* actor_work: the actor's work — lease requests and grants, and serving a
 * grant: its P x G sequences in a continuous-batching run of gen through
 * --batch slots (a finished sequence's slot goes at once to the next
 * waiting one), each group of group_size completions PUSHed to the reward
 * servers as soon as it is complete.
 *
 * Across leases (--cross-lease 1, the default): a run has two halves of
 * sequence places, each a lease's worth, so at most two leases are in
 * flight. Once every sequence of the run holds a slot or is done, the next
 * LeaseRequest goes out; its reply is read without waiting between steps.
 * A grant of the same run, epoch, group size and sampling that fits a half
 * and the generator is seeded into the free half with gen_add, its prompts
 * taking slots as the running sequences finish (counted in leases_joined);
 * any other grant waits until the run drains and then starts a new run. An
 * answer without work (no prompts free, or this actor holds the learner's
 * lease credit) is obeyed, doubled for each such answer in a row, before
 * asking again; an ErrorReply pauses the asking. Each lease keeps its own
 * sampling streams (seeded from its identity), so a completion's tokens
 * do not depend on when or where it got a slot, and its groups are pushed
 * under its own lease id; a lease is done when all its groups are pushed.
 *
 * Serving is a blocking call (the actor is in ACTOR_SAMPLING). Between
 * decode steps it looks at the stop flag and reads announces; newer
 * weights of the same learner are swapped in only when no sequence is
 * running: once a fetch is due no lease is asked for, no waiting prompt
 * starts, the running ones finish, then the fetch is tried and prompts
 * start again. So weights never change inside a completion and every token
 * records the version that made it. A stop, a learner that now serves
 * other weights, or a failed push abandons every lease in flight (the
 * learner re-issues them at their deadline). Slot use (slots offered and
 * used) is counted in ActorStats.
 *
 * Ownership and threading: the actor's thread; handlers borrow the message
 * they are given (the dispatcher frees it); grants read during a run are
 * owned by it. Errors: see actor_int.h. */
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
