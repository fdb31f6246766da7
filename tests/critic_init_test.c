/* critic_init: PPO's critic starts from a reward model (rlhf-learner
 * --critic-init). A reward model is made here from a small SFT warm start
 * (the policy's body with a scalar head of known values) and saved as a
 * checkpoint; a real learner started with it and no steps to take saves its
 * critic, which must equal the reward model bit for bit (the reward model
 * saved with more positions than the policy's, which is no other shape). A model without
 * the head, and --critic-init with another algorithm, are refused by name. */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "common/formats/ckpt.h"
#include "common/formats/ckpt_config.h"
#include "common/formats/tok.h"
#include "common/nn/model.h"
#include "learner/algo/algo.h"
#include "tests/support/expect.h"
#include "tests/support/proc.h"
#include "tests/support/testcl.h"
#include "tests/support/testfs.h"
#include "tests/test_list.h"

/* Runs the learner on init with --critic-init rm and no steps; returns its result. */
static int run_learner(TestCl *c, const char *init, const char *rm, const char *ckpt,
                       const char *algo, ProcResult *r)
{
    char prog[PATH_MAX + 32], f_init[PATH_MAX + 32], f_rm[PATH_MAX + 32], f_ck[PATH_MAX + 32],
        f_algo[64];
    snprintf(prog, sizeof prog, "%s/rlhf-learner", c->build);
    snprintf(f_init, sizeof f_init, "--init=%s", init);
    snprintf(f_rm, sizeof f_rm, "--critic-init=%s", rm);
    snprintf(f_ck, sizeof f_ck, "--ckpt-dir=%s", ckpt);
    snprintf(f_algo, sizeof f_algo, "--algo=%s", algo);
    const char *argv[] = {"rlhf-learner",
                          f_init,
                          f_rm,
                          f_ck,
                          f_algo,
                          "--steps=0",
                          "--eval-n=0",
                          "--metrics=",
                          "--summary=",
                          "--lease=tcp://127.0.0.1:*",
                          "--results=tcp://127.0.0.1:*",
                          "--weights=tcp://127.0.0.1:*",
                          "--snapshot=tcp://127.0.0.1:*",
                          NULL};
    return proc_run(prog, argv, NULL, 60.0, r);
}

int critic_init_selftest(bool verbose)
{
    TestCl c;
    if (!testcl_init(&c, "critic_init", verbose, 180.0)) return testcl_finish(&c);
    char sft[PATH_MAX + 32], rm[PATH_MAX + 32], ck[PATH_MAX + 32], critic[PATH_MAX + 64];
    testfs_path(sft, sizeof sft, "%s/sft", c.tmp);
    testfs_path(rm, sizeof rm, "%s/rm", c.tmp);
    testfs_path(ck, sizeof ck, "%s/ck", c.tmp);
    snprintf(critic, sizeof critic, "%s-critic", ck);
    Proc *s = testcl_proc(&c, "sft", "rlhf-sft", NULL, NULL);
    proc_arg(s, "--out=%s", sft);
    const char *sft_args[] = {"--steps=20",  "--batch=16",     "--dim=32",       "--layers=1",
                              "--hidden=64", "--max-digits=1", "--eval-every=0", "--seed=3"};
    for (size_t i = 0; i < sizeof sft_args / sizeof sft_args[0]; i++)
        proc_arg(s, "%s", sft_args[i]);
    if (!testcl_start(&c, s)) return testcl_finish(&c);
    int rc = proc_wait(s, testcl_budget(&c, 60.0));
    if (!EXPECT(rc == 0 && proc_exited_ok(s), "rlhf-sft did not finish")) return testcl_finish(&c);

    /* The reward model: the policy's body, a head of known values. */
    ModelConfig mc;
    Tok        *tok = NULL;
    Model      *pol = NULL, *rmm = NULL, *got = NULL;
    if (!EXPECT(ckpt_load_config(sft, &mc) == 0 && ckpt_load_tok(sft, &tok) == 0,
                "cannot read the warm start"))
        goto out;
    pol = model_new(&mc);
    if (!EXPECT(ckpt_load(sft, pol) == 0, "cannot load the warm start")) goto out;
    rmm = algo_critic_from_policy(pol, 11, 0.3f);
    ModelTensor hw, hb;
    if (!EXPECT(model_find_tensor(rmm, "score.weight", &hw) == 0 &&
                    model_find_tensor(rmm, "score.bias", &hb) == 0,
                "the reward model has no head"))
        goto out;
    for (size_t i = 0; i < hw.numel; i++) hw.data[i] = 0.01f * (float)(i % 7) - 0.02f;
    hb.data[0] = 0.75f;
    /* Saved with twice the positions, as rlhf-rm saves a GGUF's reward model
     * with its --max-len while the learner loads the policy with its own:
     * a capacity, not a shape, so the critic still takes it. */
    ModelConfig lc = *model_config(rmm);
    lc.max_seq_len *= 2;
    Model *longer = model_new(&lc);
    if (!EXPECT(model_num_params(longer) == model_num_params(rmm), "positions changed the size")) {
        model_free(&longer);
        goto out;
    }
    memcpy(model_params(longer), model_params(rmm), model_num_params(rmm) * sizeof(float));
    bool saved = ckpt_save(rm, longer, tok, NULL, NULL) == 0;
    model_free(&longer);
    if (!EXPECT(saved, "cannot save the reward model")) goto out;

    ProcResult r;
    rc = run_learner(&c, sft, rm, ck, "ppo", &r);
    EXPECT_RUN(
        rc == 0 && r.status == 0 && strstr(r.err, "critic initialised from the reward model"), &r,
        "learner with --critic-init: exit %d, expected 0 and the critic from the RM", r.status);
    proc_result_free(&r);
    ModelConfig cc;
    if (EXPECT(ckpt_load_config(critic, &cc) == 0 && model_config_equal(&cc, model_config(rmm)),
               "the learner's critic checkpoint '%s' is missing or of another shape", critic)) {
        got = model_new(&cc);
        EXPECT(ckpt_load(critic, got) == 0 && memcmp(model_params(got), model_params(rmm),
                                                     model_num_params(rmm) * sizeof(float)) == 0,
               "the critic saved is not the reward model bit for bit");
    }

    /* A model without the head, and the flag with a critic-less algorithm. */
    rc = run_learner(&c, sft, sft, ck, "ppo", &r);
    EXPECT_RUN(rc == 0 && r.status != 0 && strstr(r.err, "no scalar head"), &r,
               "--critic-init of a policy without the head: exit %d, expected a refusal", r.status);
    proc_result_free(&r);
    rc = run_learner(&c, sft, rm, ck, "grpo", &r);
    EXPECT_RUN(rc == 0 && r.status == 2 && strstr(r.err, "applies to --algo ppo only"), &r,
               "--critic-init with grpo: exit %d, expected 2", r.status);
    proc_result_free(&r);
out:
    model_free(&got);
    model_free(&rmm);
    model_free(&pol);
    tok_free(&tok);
    return testcl_finish(&c);
}
