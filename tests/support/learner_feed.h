/* learner_feed: scored groups handed straight to a Learner's intake, as if
 * they had come in on its results socket, for tests that need real updates
 * of a learner without actors, reward servers or sockets (the train path
 * called directly: learner_train_test, resume_test).
 *
 * A lease is granted from the learner's own lease table; each of its
 * prompts gets a group of cfg.group_size completions of the char task: the
 * first half the prompt's answer (reward `reward`), the others a wrong
 * number (reward 0), every token at the learner's current version with a
 * behaviour log-prob of -0.5. The group goes through learner_intake_group,
 * so every check a real group meets applies (the reward range included).
 *
 * Ownership: the Learner keeps what it accepts. Threading: the Learner's
 * thread (not while learner_run runs it). Errors: returns counts; a lease
 * table without capacity gives fewer groups. */
#ifndef RLHF_TEST_LEARNER_FEED_H
#define RLHF_TEST_LEARNER_FEED_H

#include "learner/learner_int.h"

/* Grants leases for up to n_groups prompts and feeds one group per prompt
 * as described above. Returns the number of groups the learner kept
 * (accepted into its batch); refused ones are counted by the learner as
 * rejects of its results socket. */
int learner_feed(Learner *l, int n_groups, float reward);

#endif
