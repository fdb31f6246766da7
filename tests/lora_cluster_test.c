/* LoRA end to end: a real rlhf-learner training rank-4 adapters on a frozen
 * random-init base (--lora-rank 4 on every projection), with an actor and a
 * reward server hosting the hand-set "stop" reward model of
 * fixture_save_stop_rm (+1 for a completion that ends, -1 for one the cap
 * cut off).
 *
 * Shows: the run learns the preference (rm's mean over the last 5 steps at
 * least 0.3 above the first 5); with fp32 snapshots and no staleness the
 * learner's log-probs (adapter forward) agree with the actor's (decode of
 * the merged weights) to float rounding in every record (mismatch_abs);
 * the summary's memory shows gradients and optimizer moments of the
 * adapters only; the actor's first snapshot holds the base and the adapters
 * and later ones the adapters alone (the learner's summary counts them); the checkpoint holds
 * adapter_model.safetensors; a learner restarted on it with other LoRA flags is refused with a
 * message naming both; one restarted with the same flags resumes the adapters (the reward stays
 * learned rather than falling back to the base's); and rlhf-export of the checkpoint is the base
 * with the adapters merged. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/formats/ckpt.h"
#include "common/formats/ckpt_config.h"
#include "common/nn/lora.h"
#include "tests/support/expect.h"
#include "tests/support/fixtures.h"
#include "tests/support/testcl.h"
#include "tests/support/testfs.h"
#include "tests/test_list.h"

enum { STEPS = 40, MORE = 8 };

/* The frozen base: the testcl shape (dim 32, one layer) with weights of
 * std 0.15. The usual random init (std 0.02) gives logits within about
 * +-0.6 whatever the hidden state (the LM head's rows are that short and
 * the final RMSNorm fixes the hidden state's length), so adapters, which
 * change neither, could never make it confident. */
static bool save_base(const char *dir)
{
    Tok        *tok = tok_new(TOK_CHARSET_DEFAULT);
    ModelConfig mc = fixture_model_config(32, 1, 2, 2, 64, tok_vocab_size(tok), 64);
    mc.tie_embeddings = true;
    Model *m = model_new(&mc);
    model_init_random(m, 7, 0.15f);
    bool ok = ckpt_save(dir, m, tok, NULL, NULL) == 0;
    model_free(&m);
    tok_free(&tok);
    return ok;
}

/* rm's mean over records [i0, i1) of recs (NaN when none has it). */
static double rm_mean(const json_t *recs, size_t i0, size_t i1)
{
    double s = 0;
    int    n = 0;
    for (size_t i = i0; i < i1 && i < json_array_size(recs); i++) {
        const json_t *rm =
            json_object_get(json_object_get(json_array_get(recs, i), "components"), "rm");
        if (json_is_number(rm)) s += json_number_value(rm), n++;
    }
    return n ? s / n : NAN;
}

/* The largest mismatch_abs of the records; those without one counted. */
static double mismatch_max(const json_t *recs, int *missing)
{
    double worst = 0;
    *missing = 0;
    for (size_t i = 0; i < json_array_size(recs); i++) {
        const json_t *m = json_object_get(json_array_get(recs, i), "mismatch_abs");
        if (!json_is_number(m)) {
            (*missing)++;
            continue;
        }
        worst = fmax(worst, json_number_value(m));
    }
    return worst;
}

/* A model of checkpoint dir into *m (adapters attached when it has them);
 * false after a failed check. */
static bool load_dir(const char *dir, Model **m)
{
    ModelConfig mc;
    Lora       *lo = NULL;
    *m = NULL;
    int rc = ckpt_load_config(dir, &mc);
    if (!rc && (rc = ckpt_load_lora(dir, &mc, &lo)) == ERR_NOTFOUND) rc = 0;
    if (rc) return EXPECT(false, "cannot load '%s': %s", dir, err_str(rc));
    *m = model_new(&mc);
    if (lo) model_attach_lora(*m, &lo);
    rc = ckpt_load(dir, *m);
    if (rc) model_free(m);
    return EXPECT(rc == 0, "cannot load '%s': %s", dir, err_str(rc));
}

/* rlhf-export of the LoRA checkpoint gives its base with the adapters
 * merged, bit for bit as lora_merge makes it, and not the base. */
static void check_export(TestCl *c)
{
    char out[PATH_MAX + 16];
    testfs_path(out, sizeof out, "%s/exported", c->tmp);
    Proc *p = testcl_proc(c, "export", "rlhf-export", NULL, NULL);
    proc_arg(p, "--model=%s", c->ckpt);
    proc_arg(p, "--out=%s", out);
    if (!testcl_start(c, p)) return;
    if (!EXPECT(proc_wait(p, testcl_budget(c, 30.0)) == 0 && proc_exited_ok(p) &&
                    proc_output_has(p, "merged the LoRA adapters"),
                "%s", "rlhf-export of the LoRA checkpoint failed or did not merge"))
        return;
    Model *ex = NULL, *ck = NULL;
    if (load_dir(out, &ex) && load_dir(c->ckpt, &ck) &&
        EXPECT(model_lora(ck) && !model_lora(ex), "%s", "adapters where not expected")) {
        Model *merged = model_new(model_config(ck));
        model_copy_params(merged, ck);
        lora_merge(model_lora(ck), merged);
        size_t n = model_num_params(ex);
        float  d_merged = fixture_max_abs_diff(model_params(ex), model_params(merged), n);
        float  d_base = fixture_max_abs_diff(model_params(ex), model_params(ck), n);
        EXPECT(d_merged == 0.0f && d_base > 1e-3f,
               "exported weights: max |diff| %g from base + adapters merged (want 0), %g from the "
               "base (want > 1e-3)",
               (double)d_merged, (double)d_base);
        testcl_note(c, "export: merged weights differ from the base by up to %.3g", d_base);
        model_free(&merged);
    }
    model_free(&ex);
    model_free(&ck);
}

static void check_memory(TestCl *c, const json_t *sum)
{
    const json_t *mem = json_object_get(sum, "memory_bytes");
    int64_t       w = testcl_jint(mem, "weights"), a = testcl_jint(mem, "adapters");
    int64_t       g = testcl_jint(mem, "gradients"), o = testcl_jint(mem, "optimizer");
    int64_t       step = testcl_jint(mem, "per_step"), full = testcl_jint(mem, "full_fine_tuning");
    EXPECT(testcl_jint(sum, "lora_rank") == 4, "summary lora_rank %" PRId64 ", expected 4",
           testcl_jint(sum, "lora_rank"));
    EXPECT(w > 0 && a > 0 && a < w / 4 && g == a && o == 2 * a && step < full,
           "memory: weights %" PRId64 " adapters %" PRId64 " gradients %" PRId64
           " optimizer %" PRId64 " per step %" PRId64 " full fine-tuning %" PRId64
           "; expected gradients = adapters, optimizer = 2 x adapters, less than full",
           w, a, g, o, step, full);
    int64_t full_b = testcl_jint(sum, "snapshot_bytes_full");
    int64_t ad_b = testcl_jint(sum, "snapshot_bytes_adapters");
    int64_t served = testcl_jint(sum, "snapshots_served");
    int64_t served_ad = testcl_jint(sum, "snapshots_adapters");
    /* fp32: the base and adapters, then the adapters alone. */
    EXPECT(full_b == 4 * (w / 4 + a / 4) && ad_b == a && served_ad >= 1 && served_ad < served,
           "snapshots: %" PRId64 " bytes full, %" PRId64 " adapters alone, %" PRId64 " of %" PRId64
           " served as adapters; expected the base + adapters, the adapters, "
           "and all but the first as adapters",
           full_b, ad_b, served_ad, served);
    testcl_note(c,
                "snapshots: %" PRId64 " bytes with the base, %" PRId64
                " of adapters alone; %" PRId64 " of %" PRId64 " served as adapters",
                full_b, ad_b, served_ad, served);
    testcl_note(c,
                "memory per step: %" PRId64 " bytes with LoRA, %" PRId64
                " for full fine-tuning (weights %" PRId64 ", adapters %" PRId64 ")",
                step, full, w, a);
}

int lora_cluster_selftest(bool verbose)
{
    TestCl c;
    if (!testcl_init(&c, "lora_cluster", verbose, 300.0)) return testcl_finish(&c);
    char rm_dir[PATH_MAX + 16], f_rm[PATH_MAX + 32], steps_more[32];
    char base_dir[PATH_MAX + 16], f_init[PATH_MAX + 32];
    testfs_path(rm_dir, sizeof rm_dir, "%s/rm", c.tmp);
    snprintf(f_rm, sizeof f_rm, "--reward-model=%s", rm_dir);
    testfs_path(base_dir, sizeof base_dir, "%s/base", c.tmp);
    snprintf(f_init, sizeof f_init, "--init=%s", base_dir);
    if (!EXPECT(fixture_save_stop_rm(rm_dir), "cannot save the reward model to %s", rm_dir) ||
        !EXPECT(save_base(base_dir), "cannot save the base model to %s", base_dir))
        return testcl_finish(&c);
    TestClRun o = {.steps = STEPS,
                   .batch_groups = 4,
                   .max_staleness = 0,
                   .lease_prompts = 2,
                   .eval_n = -1,
                   .ckpt_every = 10,
                   .extra = {"--lr=1e-2", "--lora-rank=4", "--lora-alpha=8",
                             "--snapshot-dtype=fp32", f_init, NULL},
                   .reward_extra = {f_rm, "--scorer=rm:1,arith:0.5", "--threads=2", NULL}};
    Proc     *learner, *reward;
    if (!testcl_start_core(&c, &o, &learner, &reward)) return testcl_finish(&c);
    Proc *actor = testcl_actor(&c, "actor", 8, false);
    proc_arg(actor, "--decode-weights=fp32"); /* the learner's numbers, to rounding */
    if (!testcl_start(&c, actor)) return testcl_finish(&c);
    testcl_wait_done(&c, learner, 200.0);
    EXPECT(proc_output_has(learner, "memory per learner step"), "%s",
           "the learner did not log its memory per step");
    EXPECT(proc_output_has(actor, "LoRA base and adapters"), "%s",
           "the actor did not install a snapshot of the base and adapters");

    TestClCounters k;
    json_t        *sum = testcl_check_summary(&c, STEPS, &k);
    if (sum) check_memory(&c, sum);
    json_decref(sum);
    json_t *recs = testcl_check_metrics(&c);
    size_t  n = json_array_size(recs);
    double  first = rm_mean(recs, 0, 5), last = rm_mean(recs, n >= 5 ? n - 5 : 0, n);
    int     missing = 0;
    double  mis = mismatch_max(recs, &missing);
    testcl_note(&c, "rm's mean: first 5 steps %.3f, last 5 %.3f; max mismatch_abs %.3g", first,
                last, mis);
    EXPECT(last >= first + 0.3, "LoRA did not learn the preference: rm %.3f -> %.3f", first, last);
    EXPECT(missing == 0 && mis <= 1e-4,
           "learner vs actor log-probs: max mismatch_abs %.3g (tol 1e-4), %d records without it",
           mis, missing);
    json_decref(recs);
    char adapter[PATH_MAX + 64];
    snprintf(adapter, sizeof adapter, "%s/%s", c.ckpt, CKPT_ADAPTER_FILE);
    EXPECT(access(adapter, R_OK) == 0, "the checkpoint has no %s", adapter);

    /* Other LoRA flags on this checkpoint: refused, naming both. */
    TestClRun bad = o;
    bad.steps = STEPS + MORE;
    bad.extra[1] = "--lora-rank=8";
    Proc *l2 = testcl_learner(&c, "learner-bad", &bad);
    if (testcl_start(&c, l2)) {
        int rc = proc_wait(l2, testcl_budget(&c, 30.0));
        EXPECT(rc == 0 && proc_exit_code(l2) == 1 &&
                   proc_output_has(l2, "trains LoRA adapters of rank 4"),
               "%s", "a learner with --lora-rank 8 on a rank-4 checkpoint was not refused");
    }
    /* The same flags: resumes the adapters, and the reward stays learned. */
    TestClRun more = o;
    more.steps = STEPS + MORE;
    snprintf(steps_more, sizeof steps_more, "%d", STEPS + MORE);
    Proc *l3 = testcl_learner(&c, "learner-resumed", &more);
    if (!testcl_start(&c, l3)) return testcl_finish(&c);
    testcl_wait_done(&c, l3, 120.0);
    EXPECT(proc_output_has(l3, "resumed run"), "%s", "the restarted learner did not resume");
    recs = testcl_metrics(&c);
    n = json_array_size(recs);
    double resumed = rm_mean(recs, n >= MORE ? n - MORE : 0, n);
    testcl_note(&c, "after the resume (steps %d..%s): rm's mean %.3f", STEPS + 1, steps_more,
                resumed);
    EXPECT(resumed >= first + 0.3,
           "after the resume rm's mean is %.3f, near the base's %.3f: adapters lost?", resumed,
           first);
    json_decref(recs);
    check_export(&c);
    testcl_end(&c, actor);
    testcl_end(&c, reward);
    return testcl_finish(&c);
}
