/* frames: a hostile peer's frames for every socket of a local cluster
 * (tests/support/testcl.h), each with the reason its receiver must count it
 * under: garbage, truncated protobufs, oversized frames (WIRE_MAX_FRAME +
 * 1), a wrong protocol version, out-of-range token ids and numbers, NaN and
 * infinite values; a valid group to spoil one field at a time; and the
 * requests of a test's own client that come back after ErrorReplies.
 *
 * A test fills a FrameSet per socket (frames_lease_request, ...), checks
 * with frames_check that wire_decode refuses each frame for the reason it
 * names, sends them with frames_send, and compares the receiver's counters
 * with frames_expected.
 *
 * Ownership: a FrameSet owns its frames' bytes (frames_free); a FramesGroup
 * holds pointers into itself, so it is filled in place and never copied;
 * messages returned are the caller's (protobuf_c_message_free_unpacked).
 * Threading: the builders and frames_send make no checks and may run on any
 * one thread per set; the functions that check (frames_check,
 * frames_recv_after_errors, frames_fetch_snapshot) run on the test's
 * thread. Errors: those make failed checks (EXPECT); frames_send reports
 * its first failed send in error. */
#ifndef RLHF_TEST_FRAMES_H
#define RLHF_TEST_FRAMES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/net/reject.h"
#include "common/net/snapshot.h"
#include "common/net/wire.h"
#include "common/net/zsock.h"
#include "tests/support/testcl.h"

/* The actor id of the hostile client's requests and groups. */
#define FRAMES_ID "hostile-test"
#define FRAMES_MAX 12 /* frames per set */

/* One hostile frame and the reason its receiver must count it under. */
typedef struct {
    const char *what;
    uint8_t    *data; /* owned; NULL: len zero bytes, made at send time */
    size_t      len;
    WireReason  reason;
    bool        is_semantic; /* decodes fine; refused by what the receiver knows */
} Frame;

/* The hostile frames for one socket. */
typedef struct {
    const char *socket;
    Frame       f[FRAMES_MAX];
    int         n;
} FrameSet;

/* A group of TESTCL_GROUP completions of prompt 0 that passes every wire
 * check, to spoil one field at a time: `group` as an actor sends it,
 * `scored` as a reward server forwards it. */
typedef struct {
    int32_t              prompt_tok[4];
    int32_t              tok[TESTCL_GROUP][2];
    float                lpb[TESTCL_GROUP][2], lps[TESTCL_GROUP][2];
    uint64_t             pv[TESTCL_GROUP][2];
    Rlhf__Prompt         prompt;
    Rlhf__SamplingParams sampling;
    Rlhf__Completion     comp[TESTCL_GROUP];
    Rlhf__Completion    *comp_p[TESTCL_GROUP];
    Rlhf__SampledGroup   group;
    Rlhf__Score          score[TESTCL_GROUP];
    Rlhf__Score         *score_p[TESTCL_GROUP];
    Rlhf__ScoredGroup    scored;
} FramesGroup;

/* Fills g with the valid group of run_id and epoch described above. */
void frames_group_init(FramesGroup *g, const char *run_id, uint64_t epoch);

/* The sets. Each starts with garbage and a message of the socket's type
 * less its last byte (truncated), and ends with an oversized frame. */

/* The learner's lease ROUTER: LeaseRequest has no token ids or floats, so
 * out-of-range means a negative credit. */
void frames_lease_request(FrameSet *s);
/* The learner's snapshot ROUTER: no token ids or floats either. */
void frames_snapshot_request(FrameSet *s);
/* Groups of the right run, spoilt one field at a time: ScoredGroups for
 * the learner's results PULL (is_scored), else SampledGroups for the
 * reward server's samples PULL. */
void frames_group(FrameSet *s, const char *run_id, uint64_t epoch, bool is_scored);
/* The actor's SUB: WeightAnnounces. */
void frames_announce(FrameSet *s, const char *run_id, uint64_t epoch);
/* The actor's lease DEALER: LeaseGrants of the right run and epoch (one,
 * of a token beyond the model's vocabulary, is_semantic). */
void frames_grant(FrameSet *s, const char *run_id, uint64_t epoch);
/* The actor's snapshot DEALER: WeightChunks nobody asked for. */
void frames_chunk(FrameSet *s, const char *run_id, uint64_t epoch);
/* Frees the frames' bytes and empties s. */
void frames_free(FrameSet *s);

/* "garbage=2 oversized=1 ..." for the frames of the sets, and
 * extra_nonfinite more nonfinite, as wire_rejects_format writes the
 * counters a receiver should end with (into buf, cap bytes). Returns their
 * total. */
uint64_t frames_expected(const FrameSet *const *sets, int n_sets, int extra_nonfinite, char *buf,
                         size_t cap);
/* The test's own check of its frames: each is refused by wire_decode as
 * desc under lim for the reason it names (or decodes, if semantic). With
 * is_actor, none may decode as an ErrorReply either: the actor would count
 * it as an error reply instead. */
void frames_check(const FrameSet *s, const ProtobufCMessageDescriptor *desc, const WireLimits *lim,
                  bool is_actor);
/* Sends every frame of s (to peer on ROUTER sockets). Returns the number
 * sent; the first failure goes to error (cap bytes) if it is still empty. */
int frames_send(WireSock *sock, const void *peer, size_t peer_len, const FrameSet *s, char *error,
                size_t cap);

/* Receives on s until a message of type desc arrives (returned, caller
 * frees) or timeout_s passes (NULL), counting the ErrorReplies on the way
 * into *n_errors and checking each names one of the refusal reasons. */
ProtobufCMessage *frames_recv_after_errors(TestCl *c, WireSock *s,
                                           const ProtobufCMessageDescriptor *desc, double timeout_s,
                                           int *n_errors);
/* Fetches the learner's snapshot through s (a DEALER on its snapshot
 * socket) into rx, the way an actor does; false if none came whole within
 * 10 s a chunk (a failed check if a chunk was refused). */
bool frames_fetch_snapshot(TestCl *c, WireSock *s, WireSnapRx *rx, int *n_errors);

#endif
