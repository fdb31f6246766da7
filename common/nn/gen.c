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
    float   *logits;            /* (max_batch, V) */
    char    *scratch;           /* sampler scratch */
    int     *slot_seq;          /* (max_batch) sequence in each slot, -1 = free */
    int     *slot_tok;          /* (max_batch) its newest token, fed at the next step */
    int     *out_rows;          /* (max_batch) the rows whose logits are wanted */
    int     *out_slot;          /* (max_batch) the slot of each such row */
    bool    *is_new;            /* (max_batch) the slot's prompt is fed this step */
    void    *block;             /* the views above */
    int     *row_seq, *row_tok; /* the rows of one step, grown on demand */
    void    *row_block;         /* the row views */
    size_t   row_bytes;
    int      row_cap;
    GenStats st;

    /* The current run (borrowed from gen_open's caller): cap places. */
    const GenConfig  *cfg;
    const int *const *prompts;
    const int        *prompt_lens;
    Rng              *rng;
    GenOutput        *out;
    int               cap, n_running, n_pending;
    int              *wait;      /* (cap) ring of the waiting places, in admission order */
    int               wait_head; /* the ring's first entry */
    int               n_wait;    /* waiting places */
    bool             *is_pend;   /* (cap) the place is waiting or running */
    void             *run_block; /* wait and is_pend */
    size_t            run_bytes;
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
                    VIEW(&g->slot_seq, max_batch),
                    VIEW(&g->slot_tok, max_batch),
                    VIEW(&g->out_rows, max_batch),
                    VIEW(&g->out_slot, max_batch),
                    VIEW(&g->is_new, max_batch)};
    g->block = views_alloc(views, sizeof views / sizeof views[0]);
    for (int s = 0; s < max_batch; s++) g->slot_seq[s] = -1;
    return g;
}

void gen_free(Generator **pg)
{
    Generator *g = *pg;
    if (!g) return;
    kv_free(&g->kv);
    free(g->block);
    free(g->row_block);
    free(g->run_block);
    free(g);
    *pg = NULL;
}

/* Ends the current run: every slot free, nothing pending. */
static void end_run(Generator *g)
{
    for (int s = 0; s < g->max_batch; s++) g->slot_seq[s] = -1;
    if (g->cap > 0) memset(g->is_pend, 0, sizeof(bool) * (size_t)g->cap);
    g->n_running = g->n_pending = g->n_wait = g->wait_head = 0;
}

int gen_open(Generator *g, const GenConfig *cfg, int cap, const int *const *prompts,
             const int *prompt_lens, Rng *rng, GenOutput *out)
{
    CHECK(cap > 0 && cfg->max_new > 0);
    end_run(g);
    View v[] = {VIEW(&g->wait, cap), VIEW(&g->is_pend, cap)};
    views_reserve(&g->run_block, &g->run_bytes, v, 2);
    memset(g->is_pend, 0, sizeof(bool) * (size_t)cap);
    g->cfg = cfg;
    g->prompts = prompts;
    g->prompt_lens = prompt_lens;
    g->rng = rng;
    g->out = out;
    g->cap = cap;
    return 0;
}

int gen_add(Generator *g, int first, int n)
{
    CHECK(g->cap > 0 && n > 0 && first >= 0 && first + n <= g->cap);
    for (int i = first; i < first + n; i++) {
        CHECK(!g->is_pend[i]); /* a place is reused only once its sequence is done */
        if (g->prompt_lens[i] <= 0 || g->prompt_lens[i] >= g->max_len) {
            log_error("gen_run: prompt %d has length %d, expected 1..%d", i, g->prompt_lens[i],
                      g->max_len - 1);
            return ERR_RANGE;
        }
        for (int t = 0; t < g->prompt_lens[i]; t++) {
            if (g->prompts[i][t] < 0 || g->prompts[i][t] >= g->V) {
                log_error("gen_run: prompt %d token %d is id %d, expected 0..%d", i, t,
                          g->prompts[i][t], g->V - 1);
                return ERR_RANGE;
            }
        }
    }
    for (int i = first; i < first + n; i++) {
        g->out->n_tokens[i] = 0;
        g->out->finish[i] = GEN_FINISH_LENGTH;
        g->is_pend[i] = true;
        g->wait[(g->wait_head + g->n_wait++) % g->cap] = i;
    }
    g->n_pending += n;
    return 0;
}

int gen_start(Generator *g, const GenConfig *cfg, int n, const int *const *prompts,
              const int *prompt_lens, Rng *rng, GenOutput *out)
{
    CHECK(n > 0);
    gen_open(g, cfg, n, prompts, prompt_lens, rng, out);
    return gen_add(g, 0, n);
}

/* Lays out the rows of one step, slot by slot: a new prompt's tokens or a
 * running sequence's newest token, the slot's last row yielding its logits
 * (model_step wants a sequence's rows in order and out_rows ascending).
 * Returns the number of rows; *n_out the number of logit rows. */
static int layout_rows(Generator *g, int *n_out)
{
    int n_rows = 0;
    for (int s = 0; s < g->max_batch; s++) {
        if (g->slot_seq[s] < 0) continue;
        n_rows += g->is_new[s] ? g->prompt_lens[g->slot_seq[s]] : 1;
    }
    if (n_rows > g->row_cap) {
        View v[] = {VIEW(&g->row_seq, n_rows), VIEW(&g->row_tok, n_rows)};
        views_reserve(&g->row_block, &g->row_bytes, v, 2);
        g->row_cap = n_rows;
    }
    int r = 0, k = 0;
    for (int s = 0; s < g->max_batch; s++) {
        int i = g->slot_seq[s];
        if (i < 0) continue;
        if (g->is_new[s]) {
            for (int t = 0; t < g->prompt_lens[i]; t++) {
                g->row_seq[r] = s;
                g->row_tok[r++] = g->prompts[i][t];
            }
            g->st.prefill_rows += (uint64_t)g->prompt_lens[i];
        } else {
            g->row_seq[r] = s;
            g->row_tok[r++] = g->slot_tok[s];
        }
        g->out_rows[k] = r - 1;
        g->out_slot[k++] = s;
    }
    *n_out = k;
    return r;
}

int gen_step(Generator *g, bool is_admit)
{
    const GenConfig *cfg = g->cfg;
    GenOutput       *out = g->out;
    for (int s = 0; s < g->max_batch; s++) {
        g->is_new[s] = false;
        if (!is_admit || g->slot_seq[s] >= 0 || g->n_wait == 0) continue;
        kv_reset(g->kv, s);
        g->slot_seq[s] = g->wait[g->wait_head];
        g->wait_head = (g->wait_head + 1) % g->cap;
        g->n_wait--;
        g->is_new[s] = true;
        g->n_running++;
    }
    if (g->n_running == 0) return 0;
    int n_out, n_rows = layout_rows(g, &n_out);
    int rc = model_step(g->m, g->kv, n_rows, g->row_seq, g->row_tok, n_out, g->out_rows, g->logits);
    CHECK(rc == 0); /* ids and lengths were validated by gen_start */
    g->st.steps++;
    g->st.slot_steps += (uint64_t)g->max_batch;
    g->st.rows_used += (uint64_t)n_out;
    /* Row a of the logits belongs to slot out_slot[a]. */
    for (int a = 0; a < n_out; a++) {
        int    s = g->out_slot[a], i = g->slot_seq[s], tk;
        float  lps, lpf;
        size_t at = (size_t)i * cfg->max_new + out->n_tokens[i];
        Rng   *ri = cfg->is_rng_each ? &g->rng[i] : g->rng;
        rc = sampler_sample(&cfg->sampler, g->logits + (size_t)a * g->V, g->V, ri, g->scratch, &tk,
                            &lps, &lpf);
        if (rc != 0) {
            log_error("gen_run: sequence %d: non-finite logits at step %d", i, out->n_tokens[i]);
            end_run(g);
            return rc;
        }
        out->tokens[at] = tk;
        out->logp_sampled[at] = lps;
        out->logp_full[at] = lpf;
        out->n_tokens[i]++;
        g->slot_tok[s] = tk;
        if (tk == cfg->stop_id)
            out->finish[i] = GEN_FINISH_STOP;
        else if (cfg->is_stop &&
                 cfg->is_stop(cfg->stop_ctx, i, out->tokens + (size_t)i * cfg->max_new,
                              out->n_tokens[i]))
            out->finish[i] = GEN_FINISH_CALLER;
        else if (out->n_tokens[i] < cfg->max_new && kv_len(g->kv, s) + 1 < g->max_len)
            continue; /* still running */
        g->slot_seq[s] = -1;
        g->is_pend[i] = false;
        g->n_running--;
        g->n_pending--;
        if (cfg->on_done && (rc = cfg->on_done(cfg->done_ctx, i)) != 0) {
            end_run(g);
            return rc;
        }
    }
    return 0;
}

int gen_run(Generator *g, const GenConfig *cfg, int n, const int *const *prompts,
            const int *prompt_lens, Rng *rng, GenOutput *out)
{
    int rc = gen_start(g, cfg, n, prompts, prompt_lens, rng, out);
    while (rc == 0 && g->n_pending > 0) rc = gen_step(g, true);
    return rc;
}

int gen_running(const Generator *g)
{
    return g->n_running;
}

int gen_pending(const Generator *g)
{
    return g->n_pending;
}

int gen_waiting(const Generator *g)
{
    return g->n_wait;
}

int gen_free_slots(const Generator *g)
{
    return g->max_batch - g->n_running;
}

void gen_stats(const Generator *g, GenStats *out)
{
    *out = g->st;
}
