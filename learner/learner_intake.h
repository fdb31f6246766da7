/* learner_intake: scored groups on their way into a batch. A group that
 * arrives is checked against what wire validation cannot know (its lease's
 * terms: group size, sampling settings, the prompt's tokens, token versions,
 * sequence length; every reward within cfg.reward_min..reward_max), then
 * given to the lease table, which accepts it (it waits here, in arrival
 * order), drops it as too stale, or calls it a duplicate; a group of
 * another epoch is a duplicate too. A group that does
 * not fit is counted as a rejection of the results socket (WIRE_REJ_BAD_VALUE
 * or WIRE_REJ_BAD_SHAPE) and logged. Waiting groups become a batch of
 * trajectories, and each is settled with the lease table once trained,
 * failed or too stale. With dynamic sampling (AlgoConfig.dynamic_sampling,
 * DAPO's), an accepted group whose rewards after the overlong penalty are
 * all equal carries no signal: it is settled at once as trained (the lease
 * table has no other outcome for it; without dynamic sampling it would be
 * trained with zero advantage), counted in Learner.groups_flat, and its
 * place under the staleness bound goes to a newly leased prompt. A KL
 * term in the reward (AlgoConfig.kl_place) is not counted: such a group
 * would carry only the KL's signal.
 *
 * Ownership: the waiting groups belong to the Learner (learner_intake_free);
 * a batch's trajectories point into them and into the Learner's scratch, so
 * they are valid until learner_intake_settle. Threading: the Learner's
 * thread. Errors: nothing a peer sends is CHECKed. */
#ifndef RLHF_LEARNER_INTAKE_H
#define RLHF_LEARNER_INTAKE_H

#include "learner/learner_int.h"
#include "learner/lease.h"

/* The reward components a batch's scores named (the first
 * LEARNER_COMPONENTS_MAX distinct names), with their sums: what the metrics
 * report as each component's mean, e.g. a hidden gold reward monitored with
 * weight 0 beside a learned one. */
#define LEARNER_COMPONENTS_MAX 8

/* What a batch held, for the metrics and the status line. */
typedef struct {
    int     n_comp;
    char    comp_name[LEARNER_COMPONENTS_MAX][32];
    double  comp_sum[LEARNER_COMPONENTS_MAX];
    int     comp_n[LEARNER_COMPONENTS_MAX];
    double  reward_sum, reward_sq;
    int     n_correct, n_samples;
    int64_t tokens;
    double  stale_sum;
    int64_t stale_max;
} LearnerBatchInfo;

/* The dispatch table's handler of a ScoredGroup: keeps the message (NULLs
 * *msg) when the lease table accepts the group, leaves it to the dispatcher
 * otherwise. */
void learner_intake_group(Learner *l, const WireMsg *m, ProtobufCMessage **msg);
/* Drops the waiting groups that have become too stale (settled as such). */
void learner_intake_drop_stale(Learner *l);
/* Packs the first ng waiting groups (ng <= l->n_pend) into l->traj; returns
 * the number of trajectories and fills bi. */
int learner_intake_build_batch(Learner *l, int ng, LearnerBatchInfo *bi);
/* Settles the first ng waiting groups as out and frees them. */
void learner_intake_settle(Learner *l, int ng, LeaseOutcome out);
/* Frees every waiting group (learner_free). */
void learner_intake_free(Learner *l);

#endif
