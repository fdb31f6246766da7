/* chaos_check: the invariants of the chaos soak (tests/chaos/chaos.c),
 * checked from what the daemons wrote down, so that the same checks read a
 * soak's files and a test's hand-made ones (chaos_check_test.c).
 *
 *   accounting  every metrics record holds the lease identity
 *               issued = trained + dropped_stale + reissued + failed +
 *               in_flight + buffered, the counters never go down within an
 *               epoch, and the summary says accounting_ok;
 *   trained     no group (run, epoch, lease id, slot) in the learner's
 *               trained log (learner_record_trained) twice; and along the
 *               lineage of the final model (each incarnation resumes from a
 *               step, and what earlier ones trained after it died with
 *               them) every step trained exactly batch_groups groups, no
 *               prompt twice, and the summary's trained count is that many;
 *   versions    the learner's versions rise record by record within an
 *               epoch, and no actor installs a version below one it held
 *               in the same run and epoch (its log's "weights ... installed"
 *               lines, debug level for routine ones).
 *
 * Each check returns whether the invariant holds and sets *out to a new
 * JSON object (caller owns) {"ok": bool, the numbers behind it, "problems":
 * the first few violations as text}. Files that cannot be read count as
 * violations, named in "problems". No state; any thread. */
#ifndef RLHF_CHAOS_CHECK_H
#define RLHF_CHAOS_CHECK_H

#include <jansson.h>
#include <stdbool.h>

/* metrics_path: the learner's metrics.jsonl; summary: its summary.json
 * (NULL if it wrote none: a violation). */
bool chaos_check_accounting(const char *metrics_path, const json_t *summary, json_t **out);
/* trained_path: the learner's --trained-log; batch_groups its
 * --batch-groups; summary as above (its steps and trained). */
bool chaos_check_trained(const char *trained_path, int batch_groups, const json_t *summary,
                         json_t **out);
/* metrics_path as above; actor_logs: n actors' log files (each holding
 * every incarnation of one actor). */
bool chaos_check_versions(const char *metrics_path, const char *const *actor_logs, int n,
                          json_t **out);

#endif
