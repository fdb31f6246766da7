#include "tests/support/learner_feed.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "learner/learner_intake.h"
#include "learner/learner_task.h"
#include "learner/lease.h"

enum { FEED_MAX_G = 16, FEED_MAX_T = 24 };

/* One group for prompt pid of lease id (slot gi of count), built in place
 * and packed; returns the packed bytes (caller frees) and their length. */
static uint8_t *pack_group(Learner *l, uint64_t id, int gi, int count, uint64_t pid, float reward,
                           size_t *len)
{
    int G = l->cfg.group_size;
    CHECK(G <= FEED_MAX_G && l->tok);
    int32_t          ptoks[LEARNER_PROMPT_IDS_MAX];
    int              ids[LEARNER_PROMPT_IDS_MAX];
    char             answer[LEARNER_ANSWER_MAX];
    int              plen = learner_task_prompt(l, pid, ids, answer);
    Rlhf__Completion comp[FEED_MAX_G], *cp[FEED_MAX_G];
    Rlhf__Score      score[FEED_MAX_G], *sp[FEED_MAX_G];
    int32_t          toks[FEED_MAX_G][FEED_MAX_T];
    float            logp[FEED_MAX_G][FEED_MAX_T];
    uint64_t         ver[FEED_MAX_G][FEED_MAX_T];
    for (int i = 0; i < plen; i++) ptoks[i] = ids[i];
    for (int c = 0; c < G; c++) {
        char text[LEARNER_ANSWER_MAX + 2];
        bool right = c < G / 2 || G == 1;
        snprintf(text, sizeof text, "%s%s", answer, right ? "" : "1");
        int n = 0;
        for (; text[n] && n < FEED_MAX_T - 1; n++) toks[c][n] = tok_id(l->tok, text[n]);
        toks[c][n++] = TOK_EOS;
        for (int k = 0; k < n; k++) {
            logp[c][k] = -0.5f;
            ver[c][k] = (uint64_t)l->version;
        }
        rlhf__completion__init(&comp[c]);
        comp[c].n_tokens = comp[c].n_logp_behaviour = comp[c].n_logp_sampled =
            comp[c].n_policy_version = (size_t)n;
        comp[c].tokens = toks[c];
        comp[c].logp_behaviour = comp[c].logp_sampled = logp[c];
        comp[c].policy_version = ver[c];
        comp[c].finish = RLHF__COMPLETION__FINISH__FINISH_STOP;
        cp[c] = &comp[c];
        rlhf__score__init(&score[c]);
        score[c].reward = right ? reward : 0.0f;
        sp[c] = &score[c];
    }
    Rlhf__SamplingParams sampling = RLHF__SAMPLING_PARAMS__INIT;
    sampling.temperature = l->cfg.algo.temperature;
    sampling.top_p = 1.0f;
    sampling.max_new_tokens = l->cfg.max_new_tokens;
    Rlhf__Prompt prompt = RLHF__PROMPT__INIT;
    prompt.prompt_id = pid;
    prompt.tokens = ptoks;
    prompt.n_tokens = (size_t)plen;
    prompt.answer = answer;
    prompt.task = (char *)learner_task_name(l);
    Rlhf__SampledGroup sg = RLHF__SAMPLED_GROUP__INIT;
    sg.version = WIRE_PROTOCOL_VERSION;
    sg.run_id = l->run_id;
    sg.epoch = l->epoch;
    sg.lease_id = id;
    sg.actor_id = (char *)"feed";
    sg.prompt = &prompt;
    sg.n_completions = (size_t)G;
    sg.completions = cp;
    sg.sampling = &sampling;
    sg.group_index = gi;
    sg.group_count = count;
    Rlhf__ScoredGroup s = RLHF__SCORED_GROUP__INIT;
    s.version = WIRE_PROTOCOL_VERSION;
    s.run_id = l->run_id;
    s.group = &sg;
    s.n_scores = (size_t)G;
    s.scores = sp;
    s.scorer_id = (char *)"feed";
    *len = protobuf_c_message_get_packed_size(&s.base);
    uint8_t *buf = xmalloc(*len);
    protobuf_c_message_pack(&s.base, buf);
    return buf;
}

int learner_feed(Learner *l, int n_groups, float reward)
{
    int kept = 0;
    while (n_groups > 0) {
        uint64_t        id = 0;
        const uint64_t *prompts = NULL;
        int             n = lease_grant(l->leases, n_groups, learner_mono_ms(), &id, &prompts);
        if (n <= 0) break;
        uint64_t pids[LEARNER_MAX_LEASE_PROMPTS];
        memcpy(pids, prompts, sizeof pids[0] * (size_t)n); /* borrowed until the table changes */
        for (int i = 0; i < n; i++) {
            size_t   len = 0;
            uint8_t *buf = pack_group(l, id, i, n, pids[i], reward, &len);
            /* Unpacked on the heap, as the dispatcher hands messages over. */
            ProtobufCMessage *msg =
                protobuf_c_message_unpack(&rlhf__scored_group__descriptor, NULL, len, buf);
            free(buf);
            CHECK(msg);
            int before = l->n_pend;
            learner_intake_group(l, NULL, &msg);
            kept += l->n_pend > before;
            if (msg) protobuf_c_message_free_unpacked(msg, NULL);
        }
        n_groups -= n;
    }
    return kept;
}
