/* checkpoint: a checkpoint directory as a learner resumes from one
 * (learner_setup): config.json (ckpt_load_config, ckpt_load_tok), the model
 * the config describes filled from model.safetensors (ckpt_load: names,
 * shapes, dtypes, the save id shared with config.json, finite weights),
 * optimizer.safetensors (ckpt_load_optim), trainer_state.json
 * (ckpt_load_trainer_state) and the lease table's state inside it
 * (lease_state_load, then leases granted from the restored queue).
 *
 * Input: four frames, the files in that order (an empty frame: the file is
 * absent), written into a private tmpfs directory. Models above 64K
 * parameters or 4096 positions are not built: a checkpoint's size is its
 * owner's choice, and the readers' checks do not depend on it. Properties:
 * ckpt_load accepts only the model the config describes; a restored lease
 * table keeps its accounting (its own CHECKs) while it grants. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/formats/ckpt.h"
#include "common/formats/ckpt_config.h"
#include "common/formats/tok.h"
#include "common/nn/model.h"
#include "learner/lease.h"
#include "tests/fuzz/fuzz.h"
#include "tests/support/fixtures.h"

#define MAX_PARAMS 65536
#define MAX_SEQ 4096

static const char *const k_files[4] = {CKPT_CONFIG_FILE, CKPT_MODEL_FILE, CKPT_OPTIM_FILE,
                                       CKPT_STATE_FILE};

static void resume_leases(const CkptTrainerState *ts)
{
    json_t *lease = ts->extra ? json_object_get(ts->extra, "lease") : NULL;
    if (!json_is_object(lease)) return;
    LeaseConfig lc = {
        .lease_prompts = 4, .timeout_ms = 1000, .max_staleness = 1, .batch_groups = 4};
    LeaseTable *t = lease_new(&lc, ((uint64_t)1 << 32) | 1, 0);
    if (lease_state_load(t, lease) == 0) {
        for (int k = 0; k < 3; k++) {
            uint64_t        id;
            const uint64_t *ids;
            int             n = lease_grant(t, 4, k, &id, &ids);
            FUZZ_CHECK(n >= 0 && n <= 4, "restored table granted %d", n);
        }
        lease_expire(t, 1 << 20);
    }
    lease_free(&t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FuzzIn in = {data, size};
    for (int i = 0; i < 4; i++) {
        const uint8_t *p = NULL;
        size_t         n = 0;
        if (fuzz_frame(&in, &p, &n) && n > 0)
            fuzz_tmpfile(k_files[i], p, n);
        else
            fuzz_tmpfile_remove(k_files[i]);
    }
    const char *dir = fuzz_tmpdir();
    ModelConfig mc;
    if (ckpt_load_config(dir, &mc) == 0 && model_config_num_params(&mc) <= MAX_PARAMS &&
        mc.max_seq_len <= MAX_SEQ) {
        Model *m = model_new(&mc);
        size_t n = model_num_params(m);
        if (ckpt_load(dir, m) == 0) {
            const float *w = model_params(m);
            for (size_t i = 0; i < n; i++)
                FUZZ_CHECK(isfinite(w[i]), "ckpt_load accepted weight %zu = %g", i, (double)w[i]);
        }
        float  *mom = xmalloc(2 * n * sizeof(float));
        int64_t step = -1;
        if (ckpt_load_optim(dir, mom, mom + n, n, &step) == 0)
            FUZZ_CHECK(step >= 0, "optimizer step %lld", (long long)step);
        free(mom);
        model_free(&m);
    }
    Tok *tok = NULL;
    if (ckpt_load_tok(dir, &tok) == 0) tok_free(&tok);
    CkptTrainerState ts;
    if (ckpt_load_trainer_state(dir, &ts) == 0) {
        FUZZ_CHECK(ts.step >= 0 && ts.policy_version >= 0 &&
                       memchr(ts.run_id, '\0', sizeof ts.run_id),
                   "trainer state step %lld version %lld", (long long)ts.step,
                   (long long)ts.policy_version);
        resume_leases(&ts);
        json_decref(ts.extra);
    } else {
        FUZZ_CHECK(ts.extra == NULL, "a failed trainer state load left extra");
    }
    return 0;
}

/* ---- seeds ---------------------------------------------------------------- */

/* The four files of checkpoint directory ckpt as frames (absent: empty). */
static void seed_dir(const char *dir, const char *name, const char *ckpt)
{
    uint8_t *buf = NULL;
    size_t   len = 0;
    for (int i = 0; i < 4; i++) {
        char   path[4096], *text = NULL;
        size_t n = 0;
        snprintf(path, sizeof path, "%s/%s", ckpt, k_files[i]);
        if (fileio_read_all(path, 65535, true, &text, &n) != 0) n = 0;
        fuzz_frame_put(&buf, &len, text, n);
        free(text);
    }
    fuzz_seed(dir, name, buf, len);
    free(buf);
}

static void seeds(const char *dir)
{
    char ckpt[4096];
    snprintf(ckpt, sizeof ckpt, "%s/ckpt", fuzz_tmpdir());
    /* A learner's checkpoint: model, tokenizer, optimizer, trainer state
     * with a lease table that has leases out and groups back. */
    Tok        *tok = tok_new("0123456789+-= ");
    ModelConfig mc = fixture_model_config(8, 1, 2, 1, 16, tok_vocab_size(tok), 32);
    Model      *m = model_new(&mc);
    model_init_random(m, 5, 0.1f);
    size_t n = model_num_params(m);
    float *mom = xcalloc(2 * n, sizeof(float));
    for (size_t i = 0; i < n; i++) mom[i] = 0.01f * (float)(i % 7), mom[n + i] = 0.001f;
    CkptOptim   opt = {mom, mom + n, n, 12};
    LeaseConfig lc = {
        .lease_prompts = 2, .timeout_ms = 1000, .max_staleness = 1, .batch_groups = 4};
    LeaseTable     *lt = lease_new(&lc, ((uint64_t)1 << 32) | 1, 0);
    uint64_t        id;
    const uint64_t *ids;
    lease_grant(lt, 2, 0, &id, &ids);
    lease_arrive(lt, id, 0, 2, ids[0], 3, 3);
    lease_grant(lt, 2, 0, &id, &ids);
    lease_expire(lt, 5000);
    json_t *extra =
        json_pack("{s:b, s:i, s:o, s:f, s:s}", "rlhf_learner", 1, "epoch", 1, "lease",
                  lease_state_save(lt), "accuracy_before", 0.25, "init_dir", "runs/sft");
    CkptTrainerState ts = {.step = 12, .policy_version = 12, .run_id = "run-a", .extra = extra};
    CHECK(ckpt_save(ckpt, m, tok, &opt, &ts) == 0);
    seed_dir(dir, "learner", ckpt);
    /* An SFT checkpoint: the model and its config only. */
    CHECK(ckpt_save(ckpt, m, NULL, NULL, NULL) == 0);
    seed_dir(dir, "model-only", ckpt);
    json_decref(extra);
    lease_free(&lt);
    free(mom);
    model_free(&m);
    tok_free(&tok);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_init("checkpoint", seeds);
    return 0;
}
