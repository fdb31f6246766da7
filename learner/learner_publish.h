/* learner_publish: how the learner's weights reach the actors (the clone
 * pattern): a WeightAnnounce of the current version on the PUB socket after
 * every update and periodically for late subscribers, and the whole snapshot
 * as WeightChunks to whoever asks on the snapshot ROUTER, with the policy's
 * config (naming the GGUF tokenizer for a chat model) in chunk 0 and the
 * checksum of the parameter block. With LoRA (--lora-rank) an actor's first
 * snapshot of an incarnation holds the frozen base and the adapters
 * (SNAPSHOT_BASE_ADAPTERS); a request that says it holds that base
 * (have_base, same run and epoch) gets the adapters alone
 * (SNAPSHOT_ADAPTERS), which the actor merges into its copy of the base. The block goes out in the
 * element type of
 * --snapshot-dtype: bf16 (the default: the fp32 masters rounded to nearest
 * even once per version, half the bytes) or f32 (the masters as they are). Snapshots go out through
 * a ledger of queued output (common/net/snapshot.h, WireSnapOut): one at a time per peer, within a
 * memory budget over all peers; a request beyond either is answered with an ErrorReply and counted
 * as a busy or over_budget reject of the snapshot socket.
 *
 * Ownership: the Learner owns config_json, the bf16 copy, the merged model
 * of a LoRA run and the checksum cache (all of one version, made when first
 * asked for).
 * Threading: the Learner's thread. Errors: a send that fails is logged and
 * dropped (the announce repeats; an actor asks for the snapshot again). */
#ifndef RLHF_LEARNER_PUBLISH_H
#define RLHF_LEARNER_PUBLISH_H

#include "learner/learner_int.h"

/* The model actors get at the current version: the policy itself, or with
 * LoRA adapters a copy of its base with them merged (made once per version,
 * owned by the Learner). Borrowed until the next version. */
Model *learner_publish_model(Learner *l);
/* Builds l->config_json from the policy's config (and the BPE's ids). */
void learner_publish_config(Learner *l);
/* Bytes of a full snapshot's block in the configured element type (with
 * LoRA the base and the adapters), and of an adapters-only one (0 without
 * LoRA). */
size_t learner_publish_bytes(const Learner *l);
size_t learner_publish_adapter_bytes(const Learner *l);
/* Announces the current version on the weights socket. */
void learner_publish_announce(Learner *l);
/* The dispatch table's handler of a SnapshotRequest: sends the current
 * weights to its peer; never keeps the message. */
void learner_publish_snapshot(Learner *l, const WireMsg *m, ProtobufCMessage **msg);

#endif
