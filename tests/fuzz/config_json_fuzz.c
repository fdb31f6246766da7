/* config_json: a model's config.json, by both of its readers: the text a
 * learner sends in chunk 0 of a snapshot (ckpt_config_from_json, with the
 * stop token) and the file of a checkpoint directory (ckpt_load_config, and
 * ckpt_load_tok for the character tokenizer's charset), the file written to
 * a private tmpfs directory.
 *
 * Input: the JSON text. Properties: both readers take the same decision
 * and the same config (they promise "exactly the rules" of each other); an
 * accepted config passes model_config_validate, its stop token lies in the
 * vocabulary, and it reads back identically after ckpt_config_to_json
 * (the text the learner sends); a tokenizer loaded from it fits the
 * vocabulary. */
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/formats/ckpt.h"
#include "common/formats/ckpt_config.h"
#include "common/formats/tok.h"
#include "common/nn/model.h"
#include "tests/fuzz/fuzz.h"
#include "tests/support/fixtures.h"

static bool same_config(const ModelConfig *a, const ModelConfig *b)
{
    return a->dim == b->dim && a->n_layers == b->n_layers && a->n_heads == b->n_heads &&
           a->n_kv_heads == b->n_kv_heads && a->hidden_dim == b->hidden_dim &&
           a->vocab_size == b->vocab_size && a->max_seq_len == b->max_seq_len &&
           a->rope_theta == b->rope_theta && a->norm_eps == b->norm_eps &&
           a->tie_embeddings == b->tie_embeddings && a->has_value_head == b->has_value_head;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = xmalloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    ModelConfig c1, c2;
    int         eos = -1;
    int         rc1 = ckpt_config_from_json("fuzz", text, &c1, &eos);
    if (rc1 == 0) {
        char why[160];
        FUZZ_CHECK(model_config_validate(&c1, why, sizeof why) == 0, "accepted, but: %s", why);
        FUZZ_CHECK(eos >= 0 && eos < c1.vocab_size, "eos %d of vocab %d", eos, c1.vocab_size);
        char       *again = ckpt_config_to_json(&c1, NULL);
        ModelConfig c3;
        FUZZ_CHECK(ckpt_config_from_json("again", again, &c3, NULL) == 0 && same_config(&c1, &c3),
                   "config does not read back from %s", again);
        free(again);
    }
    rc1 = ckpt_config_from_json("fuzz", text, &c1, NULL);
    fuzz_tmpfile(CKPT_CONFIG_FILE, data, size);
    int rc2 = ckpt_load_config(fuzz_tmpdir(), &c2);
    /* Text with a NUL ends there for the snapshot reader, not for the file's. */
    if (!memchr(data, '\0', size))
        FUZZ_CHECK((rc1 == 0) == (rc2 == 0) && (rc1 != 0 || same_config(&c1, &c2)),
                   "snapshot reader %d, file reader %d", rc1, rc2);
    Tok *tok = NULL;
    if (ckpt_load_tok(fuzz_tmpdir(), &tok) == 0) {
        FUZZ_CHECK(tok != NULL, "ckpt_load_tok: no tokenizer");
        if (rc2 == 0)
            FUZZ_CHECK(tok_vocab_size(tok) <= c2.vocab_size, "tokenizer of %d, vocab %d",
                       tok_vocab_size(tok), c2.vocab_size);
        tok_free(&tok);
    }
    free(text);
    return 0;
}

/* ---- seeds ---------------------------------------------------------------- */

static void seeds(const char *dir)
{
    /* ckpt_config_to_json's own: a small model with the character
     * tokenizer, and a tied one with a value head and a long context. */
    Tok        *tok = tok_new(TOK_CHARSET_DEFAULT);
    ModelConfig mc = fixture_model_config(64, 2, 4, 2, 128, tok_vocab_size(tok), 256);
    char       *t = ckpt_config_to_json(&mc, tok);
    fuzz_seed(dir, "char-model", t, strlen(t));
    free(t);
    mc = fixture_model_config(576, 30, 9, 3, 1536, 49152, 8192);
    mc.tie_embeddings = true;
    mc.has_value_head = true;
    mc.rope_theta = 100000.0f;
    t = ckpt_config_to_json(&mc, NULL);
    fuzz_seed(dir, "tied-value-head", t, strlen(t));
    free(t);
    tok_free(&tok);
    /* A Hugging Face config as transformers writes one (SmolLM2-135M's shape). */
    static const char hf[] =
        "{\"architectures\": [\"LlamaForCausalLM\"], \"attention_bias\": false, "
        "\"attention_dropout\": 0.0, \"bos_token_id\": 1, \"eos_token_id\": 2, "
        "\"hidden_act\": \"silu\", \"hidden_size\": 576, \"initializer_range\": "
        "0.041666666666666664, "
        "\"intermediate_size\": 1536, \"max_position_embeddings\": 8192, \"mlp_bias\": false, "
        "\"model_type\": \"llama\", \"num_attention_heads\": 9, \"num_hidden_layers\": 30, "
        "\"num_key_value_heads\": 3, \"pad_token_id\": 2, \"pretraining_tp\": 1, "
        "\"rms_norm_eps\": 1e-05, \"rope_scaling\": null, \"rope_theta\": 100000, "
        "\"tie_word_embeddings\": true, \"torch_dtype\": \"bfloat16\", "
        "\"transformers_version\": \"4.42.3\", \"use_cache\": true, \"vocab_size\": 49152}";
    fuzz_seed(dir, "hf-smollm2", hf, sizeof hf - 1);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_init("config_json", seeds);
    return 0;
}
