#include "learner/eval.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/nn/gen.h"
#include "common/base/log.h"
#include "common/tasks/score.h"

/* Longest completion worth waiting for: the answer, a sign and EOS. */
#define EVAL_MAX_NEW 10

/* The buffers of one greedy evaluation: a generator for batch sequences of
 * T positions, batch prompts of at most P ids each, and their completions of
 * at most max_new ids, stopped at stop_id. */
typedef struct {
    Generator  *g;
    GenConfig   gc;
    int        *pbuf; /* (batch, P) prompt ids */
    int        *plen; /* (batch) prompt lengths */
    const int **pp;   /* (batch) rows of pbuf handed to gen_run */
    GenOutput   go;   /* (batch, max_new) ids and log-probs, (batch) counts and finish reasons */
} Greedy;

static void greedy_new(Greedy *e, Model *m, int batch, int T, int P, int max_new, int stop_id)
{
    e->g = gen_new(m, batch, T);
    e->gc = (GenConfig){.sampler = {.temperature = 0.0f, .top_k = 0, .top_p = 1.0f},
                        .max_new = max_new,
                        .stop_id = stop_id};
    e->pbuf = xmalloc(sizeof(int) * (size_t)batch * (size_t)P);
    e->plen = xmalloc(sizeof(int) * (size_t)batch);
    e->pp = xmalloc(sizeof(int *) * (size_t)batch);
    e->go = (GenOutput){.tokens = xmalloc(sizeof(int) * (size_t)batch * (size_t)max_new),
                        .logp_sampled = xmalloc(sizeof(float) * (size_t)batch * (size_t)max_new),
                        .logp_full = xmalloc(sizeof(float) * (size_t)batch * (size_t)max_new),
                        .n_tokens = xmalloc(sizeof(int) * (size_t)batch),
                        .finish = xmalloc(sizeof(int) * (size_t)batch)};
}

static void greedy_free(Greedy *e)
{
    free(e->go.finish);
    free(e->go.n_tokens);
    free(e->go.logp_full);
    free(e->go.logp_sampled);
    free(e->go.tokens);
    free(e->pp);
    free(e->plen);
    free(e->pbuf);
    gen_free(&e->g);
}

int eval_arith(Model *m, const Tok *tok, const TaskConfig *task, uint64_t seed, int n, int batch,
               EvalResult *out)
{
    CHECK(n > 0 && batch > 0);
    Greedy e;
    greedy_new(&e, m, batch, TASK_TEXT_MAX + EVAL_MAX_NEW + 2, TASK_TEXT_MAX, EVAL_MAX_NEW,
               TOK_EOS);
    TaskProblem *probs = xmalloc(sizeof(TaskProblem) * (size_t)batch);
    int         *gn = e.go.n_tokens, *gf = e.go.finish;
    Rng          rng;
    rng_seed(&rng, seed);
    int    rc = 0;
    double correct = 0, format = 0;
    for (int start = 0; start < n && rc == 0; start += batch) {
        int nb = n - start < batch ? n - start : batch;
        for (int i = 0; i < nb; i++) {
            task_problem(task, seed, (uint64_t)(start + i), true, &probs[i]);
            int *ids = e.pbuf + (size_t)i * TASK_TEXT_MAX;
            rc = tok_encode(tok, probs[i].prompt, strlen(probs[i].prompt), TOK_ENC_BOS, ids,
                            TASK_TEXT_MAX, &e.plen[i]);
            if (rc) break;
            e.pp[i] = ids;
        }
        if (rc) break;
        rc = gen_run(e.g, &e.gc, nb, e.pp, e.plen, &rng, &e.go);
        if (rc) break;
        for (int i = 0; i < nb; i++) {
            char text[TOK_DECODE_MAX_BYTES(EVAL_MAX_NEW)];
            int  nt = gn[i] - (gf[i] == GEN_FINISH_STOP);
            /* Special ids are skipped when decoding, so BOS or PAD cannot fake an answer. */
            if (tok_decode(tok, e.go.tokens + (size_t)i * EVAL_MAX_NEW, nt, 0, text, sizeof text,
                           NULL))
                text[0] = '\0';
            TaskScore s;
            task_score(text, probs[i].answer, &s);
            correct += s.correct * (gf[i] == GEN_FINISH_STOP);
            format += s.format * (gf[i] == GEN_FINISH_STOP);
        }
    }
    out->accuracy = correct / n;
    out->format = format / n;
    out->reward = out->accuracy;
    out->n = n;
    free(probs);
    greedy_free(&e);
    return rc;
}

int eval_chat(Model *m, const Bpe *bpe, const ChatTaskConfig *task, uint64_t seed, int n, int batch,
              int max_new, EvalResult *out)
{
    CHECK(n > 0 && batch > 0 && max_new > 0);
    int P = CHAT_TASK_PROMPT_MAX_IDS;
    int T = P + max_new;
    if (T > model_config(m)->max_seq_len) T = model_config(m)->max_seq_len;
    Greedy e;
    greedy_new(&e, m, batch, T, P, max_new, bpe_eot_id(bpe));
    ChatTaskProblem *probs = xmalloc(sizeof(ChatTaskProblem) * (size_t)batch);
    size_t           tcap = bpe_decode_max_bytes(bpe, max_new);
    char            *text = xmalloc(tcap);
    int             *gn = e.go.n_tokens, *gf = e.go.finish;
    Rng              rng;
    rng_seed(&rng, seed);
    int    rc = 0;
    double correct = 0, format = 0, reward = 0;
    for (int start = 0; start < n && rc == 0; start += batch) {
        int nb = n - start < batch ? n - start : batch;
        for (int i = 0; i < nb && rc == 0; i++) {
            chat_task_problem(task, seed, (uint64_t)(start + i), true, &probs[i]);
            int *ids = e.pbuf + (size_t)i * (size_t)P;
            rc = chat_task_prompt_ids(bpe, probs[i].question, ids, P, &e.plen[i]);
            e.pp[i] = ids;
        }
        if (rc) break;
        rc = gen_run(e.g, &e.gc, nb, e.pp, e.plen, &rng, &e.go);
        if (rc) break;
        for (int i = 0; i < nb; i++) {
            bool cut = gf[i] != GEN_FINISH_STOP;
            /* Without BPE_DEC_SPECIAL, control tokens cannot fake an answer. */
            if (bpe_decode(bpe, e.go.tokens + (size_t)i * (size_t)max_new, gn[i] - !cut, 0, text,
                           tcap, NULL))
                continue;
            ChatTaskScore s;
            chat_task_score(text, probs[i].answer, cut, &s);
            if (start + i < 4)
                log_debug("eval_chat: '%s' -> '%s' (answer %s)", probs[i].question, text,
                          probs[i].answer);
            correct += s.correct;
            format += s.format;
            reward += chat_task_reward(&s);
        }
    }
    out->accuracy = correct / n;
    out->format = format / n;
    out->reward = reward / n;
    out->n = n;
    free(text);
    free(probs);
    greedy_free(&e);
    return rc;
}

/* The value of the first component named format*, or 0. */
static double format_of(const ScoreResult *r)
{
    for (int i = 0; i < r->n_components; i++)
        if (!strncmp(r->components[i].name, "format", 6)) return r->components[i].value;
    return 0;
}

int eval_dataset(Model *m, const Tok *tok, const Bpe *bpe, Dataset *d, int n, int batch,
                 int max_new, EvalResult *out)
{
    CHECK(n > 0 && batch > 0 && max_new > 0 && !tok != !bpe);
    memset(out, 0, sizeof *out);
    if ((uint64_t)n > dataset_size(d)) n = (int)dataset_size(d);
    int P = dataset_max_ids(d);
    int T = P + max_new;
    if (T > model_config(m)->max_seq_len) T = model_config(m)->max_seq_len;
    Greedy e;
    greedy_new(&e, m, batch, T, P, max_new, bpe ? bpe_eot_id(bpe) : TOK_EOS);
    DatasetRecord *recs = xcalloc((size_t)batch, sizeof *recs);
    size_t         tcap = bpe ? bpe_decode_max_bytes(bpe, max_new) : TOK_DECODE_MAX_BYTES(max_new);
    char          *text = xmalloc(tcap);
    int           *gn = e.go.n_tokens, *gf = e.go.finish;
    Rng            rng;
    rng_seed(&rng, 1); /* greedy: drawn from only for ties that cannot happen */
    int    rc = 0, scored = 0, failed = 0;
    double correct = 0, format = 0, reward = 0;
    for (int k = 0; k < n && rc == 0;) {
        int nb = 0;
        while (nb < batch && k < n && rc == 0) {
            DatasetRecord *r = &recs[nb];
            dataset_record_free(r);
            if ((rc = dataset_read(d, (uint64_t)k++, r))) break;
            if (!score_spec_is_local(&r->spec)) {
                out->skipped++;
                continue;
            }
            int *ids = e.pbuf + (size_t)nb * (size_t)P;
            memcpy(ids, r->ids, sizeof(int) * (size_t)r->n_ids);
            e.plen[nb] = r->n_ids;
            e.pp[nb] = ids;
            nb++;
        }
        if (rc || nb == 0) break;
        if ((rc = gen_run(e.g, &e.gc, nb, e.pp, e.plen, &rng, &e.go))) break;
        for (int i = 0; i < nb; i++) {
            bool       cut = gf[i] != GEN_FINISH_STOP;
            const int *ct = e.go.tokens + (size_t)i * (size_t)max_new;
            int        nt = gn[i] - !cut;
            /* Special ids are skipped, so control tokens cannot fake an answer. */
            int drc = bpe ? bpe_decode(bpe, ct, nt, 0, text, tcap, NULL)
                          : tok_decode(tok, ct, nt, 0, text, tcap, NULL);
            if (drc) text[0] = '\0';
            ScoreInput  in = {.prompt = "",
                              .completion = text,
                              .answer = recs[i].answer,
                              .meta_json = recs[i].meta,
                              .is_truncated = cut};
            ScoreResult res;
            char        why[200];
            scored++;
            if (score_spec_run(&recs[i].spec, &in, &res, why, sizeof why)) {
                if (failed++ == 0)
                    log_warn("eval: %s:%" PRIu64 ": not scored, counted as 0 (%s)", dataset_path(d),
                             recs[i].line, why);
                continue;
            }
            if (scored <= 3)
                log_debug("eval: %s:%" PRIu64 " -> '%.80s' (answer '%.40s'): reward %.3f",
                          dataset_path(d), recs[i].line, text, recs[i].answer, res.reward);
            correct += score_is_correct(&res);
            reward += res.reward;
            format += format_of(&res);
        }
    }
    out->n = scored;
    out->accuracy = scored ? correct / scored : NAN;
    out->reward = scored ? reward / scored : NAN;
    out->format = scored ? format / scored : NAN;
    for (int i = 0; i < batch; i++) dataset_record_free(&recs[i]);
    free(recs);
    free(text);
    greedy_free(&e);
    return rc;
}
