#include "reward_server/bon.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "common/nn/gen.h"

struct Bon {
    Model     *policy;
    RmScorer  *rm;
    BonConfig  c;
    Generator *g;
    GenConfig  gc;
    /* per-run buffers for n sequences */
    const int     **prompts;
    int            *plens, *toks, *ntok, *fin;
    float          *lps, *lpf;
    bool           *stopped;
    double         *score;
    int32_t        *ids32; /* (n, max_new) the completions as the scorer reads them */
    const int32_t **comp;
    size_t         *comp_len;
    bool           *trunc;
    ScorerResult   *res;
    BonSamples      s;
};

int bon_argmax(const double *score, const bool *eligible, int k)
{
    int best = -1;
    for (int i = 0; i < k; i++) {
        CHECK(isfinite(score[i]));
        if (eligible[i] && (best < 0 || score[i] > score[best])) best = i;
    }
    return best;
}

Bon *bon_new(Model *policy, RmScorer *rm, const BonConfig *cfg)
{
    CHECK(policy && rm && cfg);
    const ModelConfig *pc = model_config(policy), *rc = model_config(rm_scorer_model(rm));
    if (cfg->n < 1 || cfg->n > BON_MAX_N || !(cfg->temperature > 0) || cfg->max_new < 1 ||
        cfg->stop_id < 0 || cfg->stop_id >= pc->vocab_size) {
        log_error("bon: n %d (1..%d), temperature %g (> 0), max_new %d (>= 1) or stop id %d "
                  "(0..%d) out of range",
                  cfg->n, BON_MAX_N, (double)cfg->temperature, cfg->max_new, cfg->stop_id,
                  pc->vocab_size - 1);
        return NULL;
    }
    if (rc->vocab_size != pc->vocab_size) {
        log_error("bon: the reward model has a vocabulary of %d ids, the policy %d: it cannot "
                  "read the policy's samples",
                  rc->vocab_size, pc->vocab_size);
        return NULL;
    }
    Bon *b = xcalloc(1, sizeof *b);
    int  n = cfg->n, W = cfg->max_new;
    b->policy = policy;
    b->rm = rm;
    b->c = *cfg;
    b->g = gen_new(policy, n, pc->max_seq_len);
    b->gc = (GenConfig){.sampler = {.temperature = cfg->temperature, .top_k = 0, .top_p = 1.0f},
                        .max_new = W,
                        .stop_id = cfg->stop_id};
    b->prompts = xmalloc(sizeof(int *) * (size_t)n);
    b->plens = xmalloc(sizeof(int) * (size_t)n);
    b->toks = xmalloc(sizeof(int) * (size_t)n * W);
    b->ntok = xmalloc(sizeof(int) * (size_t)n);
    b->fin = xmalloc(sizeof(int) * (size_t)n);
    b->lps = xmalloc(sizeof(float) * (size_t)n * W);
    b->lpf = xmalloc(sizeof(float) * (size_t)n * W);
    b->stopped = xmalloc(sizeof(bool) * (size_t)n);
    b->score = xmalloc(sizeof(double) * (size_t)n);
    b->ids32 = xmalloc(sizeof(int32_t) * (size_t)n * W);
    b->comp = xmalloc(sizeof(int32_t *) * (size_t)n);
    b->comp_len = xmalloc(sizeof(size_t) * (size_t)n);
    b->trunc = xmalloc(sizeof(bool) * (size_t)n);
    b->res = xmalloc(sizeof(ScorerResult) * (size_t)n);
    b->s = (BonSamples){.n = n,
                        .max_new = W,
                        .tokens = b->toks,
                        .n_tokens = b->ntok,
                        .stopped = b->stopped,
                        .score = b->score,
                        .best = -1};
    return b;
}

void bon_free(Bon **pb)
{
    Bon *b = *pb;
    if (!b) return;
    gen_free(&b->g);
    free(b->prompts);
    free(b->plens);
    free(b->toks);
    free(b->ntok);
    free(b->fin);
    free(b->lps);
    free(b->lpf);
    free(b->stopped);
    free(b->score);
    free(b->ids32);
    free(b->comp);
    free(b->comp_len);
    free(b->trunc);
    free(b->res);
    free(b);
    *pb = NULL;
}

int bon_run(Bon *b, const int *prompt, int n_prompt, Rng *rng)
{
    int n = b->c.n, W = b->c.max_new;
    b->s.best = -1;
    for (int i = 0; i < n; i++) {
        b->prompts[i] = prompt;
        b->plens[i] = n_prompt;
    }
    GenOutput go = {b->toks, b->lps, b->lpf, b->ntok, b->fin};
    int       rc = gen_run(b->g, &b->gc, n, b->prompts, b->plens, rng, &go);
    if (rc) return rc;
    int32_t *p32 = xmalloc(sizeof(int32_t) * (size_t)n_prompt);
    for (int t = 0; t < n_prompt; t++) p32[t] = prompt[t];
    for (int i = 0; i < n; i++) {
        for (int t = 0; t < b->ntok[i]; t++)
            b->ids32[(size_t)i * W + t] = b->toks[(size_t)i * W + t];
        b->comp[i] = b->ids32 + (size_t)i * W;
        b->comp_len[i] = (size_t)b->ntok[i];
        b->stopped[i] = b->fin[i] == GEN_FINISH_STOP;
        b->trunc[i] = !b->stopped[i];
    }
    ScorerGroup grp = {.prompt = p32,
                       .n_prompt = (size_t)n_prompt,
                       .n = n,
                       .completions = b->comp,
                       .n_tokens = b->comp_len,
                       .is_truncated = b->trunc,
                       .stop_id = b->c.stop_id};
    memset(b->res, 0, sizeof(ScorerResult) * (size_t)n);
    int  bad = -1;
    char why[256] = "";
    rc = rm_scorer_run(&grp, b->rm, b->res, &bad, why, sizeof why);
    free(p32);
    if (rc) {
        log_error("bon: the reward model cannot score completion %d: %s", bad, why);
        return rc;
    }
    for (int i = 0; i < n; i++) {
        b->score[i] = b->res[i].reward;
        if (!isfinite(b->score[i])) {
            log_error("bon: the reward model scored completion %d %g", i, b->score[i]);
            return ERR_NONFINITE;
        }
    }
    b->s.best = bon_argmax(b->score, b->stopped, n);
    return 0;
}

const BonSamples *bon_samples(const Bon *b)
{
    return &b->s;
}
