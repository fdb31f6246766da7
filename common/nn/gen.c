#include "common/nn/gen.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "common/base/views.h"

struct Generator {
    Model   *m;
    KVCache *kv;
    int      max_batch, max_len, V;
    float   *logits;                    /* (max_batch, V) */
    char    *scratch;                   /* sampler scratch */
    int     *seq, *tok, *rows, *active; /* (max_batch) */
    void    *block;                     /* the views above */
    int     *pf_seq, *pf_tok;           /* prefill rows, grown on demand */
    void    *pf_block;                  /* the prefill views */
    size_t   pf_bytes;
    int      pf_cap;
};

Generator *gen_new(Model *m, int max_batch, int max_len)
{
    CHECK(max_batch > 0 && max_len > 0);
    Generator *g = xcalloc(1, sizeof *g);
    g->m = m;
    g->V = model_config(m)->vocab_size;
    g->max_batch = max_batch;
    g->max_len = max_len;
    g->kv = kv_new(m, max_batch, max_len);
    View views[] = {VIEW(&g->logits, (size_t)max_batch * g->V),
                    VIEW(&g->scratch, sampler_scratch_bytes(g->V)),
                    VIEW(&g->seq, max_batch),
                    VIEW(&g->tok, max_batch),
                    VIEW(&g->rows, max_batch),
                    VIEW(&g->active, max_batch)};
    g->block = views_alloc(views, sizeof views / sizeof views[0]);
    return g;
}

void gen_free(Generator **pg)
{
    Generator *g = *pg;
    if (!g) return;
    kv_free(&g->kv);
    free(g->block);
    free(g->pf_block);
    free(g);
    *pg = NULL;
}

int gen_run(Generator *g, const GenConfig *cfg, int n, const int *const *prompts,
            const int *prompt_lens, Rng *rng, GenOutput *out)
{
    CHECK(n > 0 && n <= g->max_batch && cfg->max_new > 0);
    int total = 0;
    for (int i = 0; i < n; i++) {
        if (prompt_lens[i] <= 0 || prompt_lens[i] >= g->max_len) {
            log_error("gen_run: prompt %d has length %d, expected 1..%d", i, prompt_lens[i],
                      g->max_len - 1);
            return ERR_RANGE;
        }
        for (int t = 0; t < prompt_lens[i]; t++) {
            if (prompts[i][t] < 0 || prompts[i][t] >= g->V) {
                log_error("gen_run: prompt %d token %d is id %d, expected 0..%d", i, t,
                          prompts[i][t], g->V - 1);
                return ERR_RANGE;
            }
        }
        total += prompt_lens[i];
    }
    if (total > g->pf_cap) {
        View pf[] = {VIEW(&g->pf_seq, total), VIEW(&g->pf_tok, total)};
        views_reserve(&g->pf_block, &g->pf_bytes, pf, 2);
        g->pf_cap = total;
    }
    int r = 0;
    for (int i = 0; i < n; i++) {
        kv_reset(g->kv, i);
        for (int t = 0; t < prompt_lens[i]; t++) {
            g->pf_seq[r] = i;
            g->pf_tok[r++] = prompts[i][t];
        }
        g->rows[i] = r - 1;
        g->active[i] = i;
        out->n_tokens[i] = 0;
        out->finish[i] = GEN_FINISH_LENGTH;
    }
    int rc = model_step(g->m, g->kv, total, g->pf_seq, g->pf_tok, n, g->rows, g->logits);
    CHECK(rc == 0); /* ids and lengths were validated above */
    int n_active = n;
    while (n_active > 0) {
        /* Row a of the logits belongs to sequence active[a]. */
        int next = 0;
        for (int a = 0; a < n_active; a++) {
            int    i = g->active[a];
            int    tk;
            float  lps, lpf;
            size_t at = (size_t)i * cfg->max_new + out->n_tokens[i];
            Rng   *ri = cfg->is_rng_each ? &rng[i] : rng;
            rc = sampler_sample(&cfg->sampler, g->logits + (size_t)a * g->V, g->V, ri, g->scratch,
                                &tk, &lps, &lpf);
            if (rc != 0) {
                log_error("gen_run: sequence %d: non-finite logits at step %d", i,
                          out->n_tokens[i]);
                return rc;
            }
            out->tokens[at] = tk;
            out->logp_sampled[at] = lps;
            out->logp_full[at] = lpf;
            out->n_tokens[i]++;
            if (tk == cfg->stop_id) {
                out->finish[i] = GEN_FINISH_STOP;
                continue;
            }
            if (cfg->is_stop &&
                cfg->is_stop(cfg->stop_ctx, i, out->tokens + (size_t)i * cfg->max_new,
                             out->n_tokens[i])) {
                out->finish[i] = GEN_FINISH_CALLER;
                continue;
            }
            if (out->n_tokens[i] >= cfg->max_new || kv_len(g->kv, i) + 1 >= g->max_len) continue;
            g->active[next] = i;
            g->seq[next] = i;
            g->tok[next] = tk;
            g->rows[next] = next;
            next++;
        }
        n_active = next;
        if (n_active == 0) break;
        rc = model_step(g->m, g->kv, n_active, g->seq, g->tok, n_active, g->rows, g->logits);
        CHECK(rc == 0);
    }
    return 0;
}
