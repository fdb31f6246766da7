/* policy_selftest: policy_load of a checkpoint gives back the saved weights
 * and tokenizer; what a user gets wrong is refused naming the flag and the
 * path (no policy at all, a missing path, a file, a checkpoint without a
 * char tokenizer and no GGUF); with the SmolLM2 GGUF (skipped without it):
 * the GGUF alone loads with its tokenizer and chat template, and a char
 * checkpoint given with it is refused (its vocabulary is smaller). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/formats/ckpt.h"
#include "common/formats/policy.h"
#include "tests/support/expect.h"
#include "tests/support/fixtures.h"
#include "tests/support/testfs.h"
#include "tests/test_list.h"

static bool same_logits(Model *a, Model *b)
{
    int   v = model_config(a)->vocab_size;
    float la[4 * 128], lb[4 * 128];
    if (v > 128 || model_config(b)->vocab_size != v) return false;
    fixture_logits(a, la, 4);
    fixture_logits(b, lb, 4);
    return fixture_max_abs_diff(la, lb, (size_t)4 * v) == 0.0f;
}

static void refusals(const char *tmp, const char *no_tok)
{
    Policy     p;
    char       path[4200];
    PolicySpec none = {0};
    EXPECT_REFUSED(policy_load(&none, &p), ERR_ARG, "give --ckpt DIR or --model", "no policy");
    EXPECT(!p.m && !p.tok && !p.bpe, "%s", "a refused load leaves nothing");

    testfs_path(path, sizeof path, "%s/absent", tmp);
    PolicySpec absent = {.ckpt = path, .ckpt_flag = "--init"};
    EXPECT_REFUSED(policy_load(&absent, &p), ERR_NOTFOUND, "--init '", "a missing checkpoint");

    testfs_path(path, sizeof path, "%s/with-tok/config.json", tmp);
    PolicySpec file = {.ckpt = path};
    EXPECT_REFUSED(policy_load(&file, &p), ERR_NOTFOUND, "not a directory", "a file as checkpoint");

    PolicySpec bare = {.ckpt = no_tok};
    EXPECT_REFUSED(policy_load(&bare, &p), ERR_NOTFOUND, "holds no char tokenizer",
                   "a checkpoint without a tokenizer and no GGUF");
    EXPECT(!p.m && !p.tok && !p.bpe, "%s", "a refused load leaves nothing");
}

static void with_smollm2(const char *with_tok)
{
    const char *gguf = fixture_smollm2_path("policy");
    if (!gguf) return;
    Policy     p;
    PolicySpec alone = {.model = gguf, .max_seq_len = 64, .need_chat = true};
    EXPECT(policy_load(&alone, &p) == 0 && p.m && p.bpe && !p.tok &&
               model_config(p.m)->max_seq_len == 64,
           "%s", "the GGUF alone: its model (64 positions) and tokenizer");
    policy_free(&p);
    EXPECT(!p.m && !p.bpe, "%s", "policy_free clears");
    policy_free(&p); /* twice is safe */

    PolicySpec wrong = {.ckpt = with_tok, .model = gguf};
    EXPECT_REFUSED(policy_load(&wrong, &p), ERR_MISMATCH, "not the model it was trained from",
                   "a char checkpoint with the GGUF's tokenizer");
    EXPECT(!p.m && !p.tok && !p.bpe, "%s", "a refused load leaves nothing");
}

int policy_selftest(bool verbose)
{
    expect_begin("policy", verbose);
    char tmp[4096], with_tok[4200], no_tok[4200];
    if (!EXPECT(testfs_tmpdir_new("policy", tmp, sizeof tmp) == 0, "%s", "no temp dir"))
        return expect_end();
    testfs_path(with_tok, sizeof with_tok, "%s/with-tok", tmp);
    testfs_path(no_tok, sizeof no_tok, "%s/no-tok", tmp);

    Tok        *tok = tok_new(TOK_CHARSET_DEFAULT);
    ModelConfig mc = fixture_model_config(16, 1, 2, 1, 24, tok_vocab_size(tok), 32);
    Model      *m = model_new(&mc);
    model_init_random(m, 7, 0.1f);
    EXPECT(ckpt_save(with_tok, m, tok, NULL, NULL) == 0 &&
               ckpt_save(no_tok, m, NULL, NULL, NULL) == 0,
           "%s", "saves");

    Policy     p;
    PolicySpec ok = {.ckpt = with_tok};
    EXPECT(policy_load(&ok, &p) == 0 && p.m && p.tok && !p.bpe &&
               tok_vocab_size(p.tok) == tok_vocab_size(tok) && same_logits(m, p.m),
           "%s", "a checkpoint: its weights and its char tokenizer back");
    policy_free(&p);

    Model *only = NULL;
    EXPECT(policy_ckpt_model(no_tok, &only) == 0 && only && same_logits(m, only), "%s",
           "policy_ckpt_model: the weights without a tokenizer");
    model_free(&only);
    EXPECT(policy_ckpt_model(tmp, &only) == ERR_NOTFOUND && !only, "%s",
           "policy_ckpt_model: no config.json");

    refusals(tmp, no_tok);
    with_smollm2(with_tok);

    model_free(&m);
    tok_free(&tok);
    testfs_tmpdir_remove(tmp);
    return expect_end();
}
