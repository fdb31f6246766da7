/* reward_wire: a SampledGroup frame as a reward server's worker takes it,
 * once with each kind of tokenizer the server may run with (the character
 * tokenizer, and the byte-level BPE of a GGUF model: see fuzz_bpe):
 * wire_decode with the vocabulary as the limit, then what score_group does:
 * the scorer of the prompt's task, the prompt and every completion
 * rendered as text (tok_decode / bpe_decode, reward_completion_text), and
 * scorer_run on it (the arith and arith_chat scorers parse the
 * completion's text).
 *
 * Input: one frame. Properties: every id the wire check let through
 * decodes; a scorer's result is finite with named components; and the
 * ScoredGroup the server would send on passes the learner's own
 * wire_check_scored_group (run id and vocabulary included): the server
 * never forwards what the learner must refuse. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/formats/bpe.h"
#include "common/formats/tok.h"
#include "common/net/wire.h"
#include "common/tasks/chat_task.h"
#include "reward_server/reward.h"
#include "reward_server/scorer.h"
#include "tests/fuzz/fuzz.h"
#include "tests/support/wire_fixture.h"

typedef struct {
    ScorerRegistry        *scorers;
    Tok                   *tok;
    Bpe                   *bpe;
    WireRejects            rejects;
    char                  *prompt_text, *text;         /* big enough for either tokenizer */
    size_t                 prompt_cap[2], text_cap[2]; /* as scratch_init sizes them: tok, bpe */
    ScorerResult           results[WIRE_MAX_GROUP];
    Rlhf__Score            scores[WIRE_MAX_GROUP];
    Rlhf__Score           *score_ptrs[WIRE_MAX_GROUP];
    Rlhf__RewardComponent  comps[WIRE_MAX_GROUP][SCORER_MAX_COMPONENTS];
    Rlhf__RewardComponent *comp_ptrs[WIRE_MAX_GROUP][SCORER_MAX_COMPONENTS];
} Server;

static Server g_s;

static int decode_prompt(const Server *s, bool bpe, const Rlhf__Prompt *p)
{
    return bpe ? bpe_decode(s->bpe, (const int *)p->tokens, (int)p->n_tokens, 0, s->prompt_text,
                            s->prompt_cap[1], NULL)
               : tok_decode(s->tok, (const int *)p->tokens, (int)p->n_tokens, 0, s->prompt_text,
                            s->prompt_cap[0], NULL);
}

static void serve(Server *s, bool bpe, const uint8_t *data, size_t size)
{
    const WireLimits    lim = {.vocab_size = bpe ? bpe_vocab_size(s->bpe) : tok_vocab_size(s->tok)};
    Rlhf__SampledGroup *g = NULL;
    WireReject          rej;
    int                 rc = wire_decode(&rlhf__sampled_group__descriptor, data, size, &lim,
                                         (ProtobufCMessage **)&g, &rej);
    if (rc) {
        FUZZ_CHECK(rc < 0 && !g && rej.reason < WIRE_REJ_COUNT, "rc %d reason %d", rc,
                   (int)rej.reason);
        wire_reject_note(&s->rejects, "reward", "SampledGroup", &rej);
        return;
    }
    const Scorer *sc = scorer_find(s->scorers, g->prompt->task);
    if (!sc) goto done;
    rc = decode_prompt(s, bpe, g->prompt);
    FUZZ_CHECK(rc == 0, "prompt of %zu checked ids does not decode: %d", g->prompt->n_tokens, rc);
    for (size_t i = 0; i < g->n_completions; i++) {
        const Rlhf__Completion *c = g->completions[i];
        rc = bpe ? reward_completion_text_bpe(s->bpe, c->tokens, c->n_tokens, s->text,
                                              s->text_cap[1])
                 : reward_completion_text(s->tok, c->tokens, c->n_tokens, s->text, s->text_cap[0]);
        FUZZ_CHECK(rc == 0, "completion %zu of checked ids does not decode: %d", i, rc);
        ScorerInput   in = {.prompt = s->prompt_text,
                            .completion = s->text,
                            .answer = g->prompt->answer,
                            .is_truncated = c->finish == RLHF__COMPLETION__FINISH__FINISH_LENGTH};
        char          why[160];
        ScorerResult *res = &s->results[i];
        if (scorer_run(sc, &in, res, why, sizeof why) != 0) goto done;
        FUZZ_CHECK(isfinite(res->reward), "reward %g", (double)res->reward);
        FUZZ_CHECK(res->n_components >= 0 && res->n_components <= SCORER_MAX_COMPONENTS,
                   "%d components", res->n_components);
        rlhf__score__init(&s->scores[i]);
        s->scores[i].reward = res->reward;
        for (int j = 0; j < res->n_components; j++) {
            rlhf__reward_component__init(&s->comps[i][j]);
            s->comps[i][j].name = res->components[j].name;
            s->comps[i][j].value = res->components[j].value;
            s->comp_ptrs[i][j] = &s->comps[i][j];
        }
        s->scores[i].components = s->comp_ptrs[i];
        s->scores[i].n_components = (size_t)res->n_components;
        s->score_ptrs[i] = &s->scores[i];
    }
    Rlhf__ScoredGroup out = RLHF__SCORED_GROUP__INIT;
    out.version = WIRE_PROTOCOL_VERSION;
    out.run_id = g->run_id;
    out.group = g;
    out.scores = s->score_ptrs;
    out.n_scores = g->n_completions;
    out.scorer_id = (char *)scorer_name(sc);
    const WireLimits learner = {.vocab_size = lim.vocab_size, .run_id = g->run_id};
    rc = wire_check_scored_group(&out, &learner, &rej);
    FUZZ_CHECK(rc == 0, "the learner would refuse the scored group: %s", rej.why);
done:
    protobuf_c_message_free_unpacked(&g->base, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    serve(&g_s, false, data, size);
    serve(&g_s, true, data, size);
    return 0;
}

/* ---- seeds ---------------------------------------------------------------- */

/* Sets completion c of the fixture group to the ids of text under the
 * character tokenizer (with EOS) or the BPE one (with its end of turn). */
static void set_text(WireFixtureGroup *t, int c, bool bpe, const char *text, int32_t *ids,
                     size_t cap)
{
    int n = 0;
    if (bpe)
        CHECK(bpe_encode(g_s.bpe, text, strlen(text), 0, ids, (int)cap - 1, &n) == 0);
    else
        CHECK(tok_encode(g_s.tok, text, strlen(text), 0, ids, (int)cap - 1, &n) == 0);
    ids[n++] = bpe ? bpe_eot_id(g_s.bpe) : TOK_EOS;
    Rlhf__Completion *cp = &t->comp[c];
    cp->tokens = ids;
    cp->n_tokens = cp->n_logp_behaviour = cp->n_logp_sampled = cp->n_policy_version = (size_t)n;
}

static void seeds(const char *dir)
{
    static int32_t    ids[WIRE_FIXTURE_N][64];
    static float      lp[64];
    static uint64_t   pv[64];
    WireFixtureGroup *t = xmalloc(sizeof *t);
    /* The fixture group as it is: arith, ids of the character tokenizer. */
    wire_fixture_group_init(t);
    fuzz_seed_msg(dir, "arith-fixture", &t->g.base);
    /* Right, wrong and truncated answers as text, for both tokenizers. */
    const char *texts[WIRE_FIXTURE_N] = {"12", "-7", "1 2 3"};
    const char *chat[WIRE_FIXTURE_N] = {"The answer is 12.", "12", "I think it is 13"};
    for (int bpe = 0; bpe < 2; bpe++) {
        wire_fixture_group_init(t);
        t->sp.max_new_tokens = 64;
        for (int i = 0; i < 64; i++) lp[i] = -0.5f, pv[i] = 7;
        for (int c = 0; c < WIRE_FIXTURE_N; c++) {
            set_text(t, c, bpe, bpe ? chat[c] : texts[c], ids[c], 64);
            t->comp[c].logp_behaviour = t->comp[c].logp_sampled = lp;
            t->comp[c].policy_version = pv;
        }
        t->comp[2].finish = RLHF__COMPLETION__FINISH__FINISH_LENGTH;
        t->prompt.task = bpe ? (char *)CHAT_TASK_NAME : (char *)"arith";
        fuzz_seed_msg(dir, bpe ? "arith-chat-bpe" : "arith-tok", &t->g.base);
    }
    free(t);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    Server *s = &g_s;
    s->scorers = scorer_registry_new();
    CHECK(scorer_register_builtins(s->scorers, NULL) == 0);
    s->tok = tok_new(TOK_CHARSET_DEFAULT);
    s->bpe = fuzz_bpe();
    CHECK(s->tok && s->bpe);
    /* As scratch_init sizes them: enough for the longest ids the wire allows. */
    s->prompt_cap[0] = TOK_DECODE_MAX_BYTES(WIRE_MAX_PROMPT_TOKENS);
    s->prompt_cap[1] = bpe_decode_max_bytes(s->bpe, WIRE_MAX_PROMPT_TOKENS);
    s->text_cap[0] = TOK_DECODE_MAX_BYTES(WIRE_MAX_TOKENS);
    s->text_cap[1] = bpe_decode_max_bytes(s->bpe, WIRE_MAX_TOKENS);
    size_t pmax = s->prompt_cap[0] > s->prompt_cap[1] ? s->prompt_cap[0] : s->prompt_cap[1];
    size_t tmax = s->text_cap[0] > s->text_cap[1] ? s->text_cap[0] : s->text_cap[1];
    s->prompt_text = xmalloc(pmax);
    s->text = xmalloc(tmax);
    fuzz_init("reward_wire", seeds);
    return 0;
}
