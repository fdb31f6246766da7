/* learner_record: what the learner writes down: checkpoints (the policy, its
 * optimizer moments and the trainer state with the epoch and lease state; the
 * critic beside them for PPO), the metrics log (one JSON object per step),
 * the summary at the end (with the accounting identity as accounting_ok),
 * and the status line. Parent directories are created.
 *
 * Ownership: the Learner owns the metrics file and the trained-groups log
 * (learner_free closes them).
 * Threading: the Learner's thread. Errors: logged; the writers that can fail
 * return an ERR_* (a metrics line with a non-finite statistic is skipped). */
#ifndef RLHF_LEARNER_RECORD_H
#define RLHF_LEARNER_RECORD_H

#include <stdbool.h>
#include <stddef.h>

#include "learner/learner_intake.h"
#include "learner/learner_int.h"

/* Saves the checkpoint to cfg.ckpt_dir (and the critic beside it for PPO),
 * marked finished or not, keeping the last cfg.ckpt_keep of each
 * (ckpt_save_keep); a no-op without ckpt_dir. Returns 0 or an error. */
int learner_record_ckpt(Learner *l, bool finished);
/* Where the critic's checkpoint lives: "<ckpt_dir>-critic". */
void learner_record_critic_dir(const Learner *l, char *out, size_t cap);
/* Opens cfg.metrics_path (if set): truncated when fresh, else appended to;
 * and cfg.trained_log_path (if set), always appended to, with a header line
 * for this incarnation: "# run RUN_ID epoch EPOCH step STEP" (the step it
 * starts from). */
int learner_record_open_metrics(Learner *l, bool fresh);
/* Appends a line per group of the update about to be published, the first
 * ng pending groups: "STEP EPOCH LEASE_ID SLOT PROMPT_ID" (STEP the step
 * the update makes, LEASE_ID 16 hex digits), and flushes them; a no-op
 * without the trained log. A write error is logged; training goes on. */
void learner_record_trained(Learner *l, int ng);
/* Keeps the step's reward, accuracy, KL and staleness for the status line
 * and appends its metrics record (if the file is open). */
void learner_record_metrics(Learner *l, const AlgoStats *st, const LearnerBatchInfo *bi,
                            double step_s);
/* Logs one status line: progress, lease counters, rejections per socket. */
void learner_record_status_line(Learner *l);
/* Writes cfg.summary_path (if set) atomically. Returns 0 or an error. */
int learner_record_summary(Learner *l, bool stopped);

#endif
