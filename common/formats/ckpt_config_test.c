/* ckpt_config's self-test: the config reader on transformers' layout of a
 * reward model. LlamaForSequenceClassification with one label (num_labels,
 * or one id2label entry) reads as a model with the scalar head, and its
 * checkpoint loads without score.bias (as 0); more labels, or the
 * architecture with rlhf_has_value_head false, are refused; without the
 * architecture a missing score.bias is a missing tensor. (The rest of the
 * reader is tested with the checkpoints, in ckpt_test.c.) */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/log.h"
#include "common/formats/ckpt.h"
#include "common/formats/ckpt_config.h"
#include "common/formats/ckpt_int.h"
#include "common/formats/safetensors.h"
#include "tests/support/expect.h"
#include "tests/support/fixtures.h"
#include "tests/support/testfs.h"
#include "tests/test_list.h"

typedef struct {
    char root[64];     /* the test's temp directory */
    char ck[PATH_MAX]; /* root/ck, our checkpoint of the reward model */
} TestCtx;

static ModelConfig test_config(bool tied, bool value_head)
{
    ModelConfig c = fixture_model_config(16, 2, 4, 2, 40, 90, 32);
    c.tie_embeddings = tied;
    c.has_value_head = value_head;
    return c;
}

static Model *random_model(const ModelConfig *c, uint64_t seed)
{
    Model *m = model_new(c);
    model_init_random(m, seed, 0.05f);
    return m;
}

static bool same_config(const ModelConfig *a, const ModelConfig *b)
{
    return a->dim == b->dim && a->n_layers == b->n_layers && a->n_heads == b->n_heads &&
           a->n_kv_heads == b->n_kv_heads && a->hidden_dim == b->hidden_dim &&
           a->vocab_size == b->vocab_size && a->max_seq_len == b->max_seq_len &&
           a->rope_theta == b->rope_theta && a->norm_eps == b->norm_eps &&
           a->tie_embeddings == b->tie_embeddings && a->has_value_head == b->has_value_head;
}

/* Writes dir/config.json as t->ck's with the save id dropped, key set to
 * value (JSON text; NULL deletes the key) for each pair of kv (NULL-ended). */
static int put_hf_config(TestCtx *t, const char *dir, const char *const *kv)
{
    char    path[PATH_MAX];
    json_t *o = NULL;
    if (ckpt_read_json("test", t->ck, CKPT_CONFIG_FILE, false, &o, path) != 0) return ERR_IO;
    json_object_del(o, CKPT_SAVE_ID_KEY);
    for (int i = 0; kv[i]; i += 2) {
        if (kv[i + 1])
            json_object_set_new(o, kv[i], json_loads(kv[i + 1], JSON_DECODE_ANY, NULL));
        else
            json_object_del(o, kv[i]);
    }
    ckpt_join(path, dir, CKPT_CONFIG_FILE);
    int rc = ckpt_write_json(path, o, JSON_INDENT(2));
    json_decref(o);
    return rc;
}

/* A reward model as transformers saves LlamaForSequenceClassification:
 * the architecture and id2label instead of our keys, no save ids, and a
 * score head without a bias. It loads as a model with the scalar head and
 * score.bias 0; more labels, or the architecture with the head denied, are
 * refused; a causal model's checkpoint still needs every tensor. */
static void test_classifier(TestCtx *t, const Tok *tok)
{
    ModelConfig c = test_config(true, true);
    Model      *m = random_model(&c, 21);
    char        hf[PATH_MAX], path[PATH_MAX];
    ckpt_join(hf, t->root, "hf-rm");
    EXPECT(ckpt_save(t->ck, m, tok, NULL, NULL) == 0 && mkdir(hf, 0755) == 0, "%s",
           "classifier: setup");
    const char *const as_hf[] = {"architectures",
                                 "[\"LlamaForSequenceClassification\"]",
                                 "id2label",
                                 "{\"0\": \"LABEL_0\"}",
                                 "label2id",
                                 "{\"LABEL_0\": 0}",
                                 "rlhf_has_value_head",
                                 NULL,
                                 NULL};
    EXPECT(put_hf_config(t, hf, as_hf) == 0, "%s", "classifier: config");
    int          n = model_num_tensors(m), k = 0;
    StTensor    *st = xcalloc((size_t)n, sizeof *st);
    ModelTensor *mt = xcalloc((size_t)n, sizeof *mt);
    for (int i = 0; i < n; i++) {
        model_tensor(m, i, &mt[i]);
        if (strcmp(mt[i].name, "score.bias"))
            st[k++] =
                (StTensor){mt[i].name, mt[i].data, mt[i].ndim, {mt[i].shape[0], mt[i].shape[1]}};
    }
    StMeta meta[1] = {{"format", "pt"}};
    ckpt_join(path, hf, CKPT_MODEL_FILE);
    EXPECT(st_write(path, st, k, meta, 1) == 0, "%s", "classifier: weights without score.bias");
    ModelConfig got;
    EXPECT(ckpt_load_config(hf, &got) == 0 && got.has_value_head && same_config(&got, &c), "%s",
           "a transformers classifier's config: expected the model with the scalar head");
    Model *x = model_new(&c);
    model_init_random(x, 3, 0.5f);
    ModelTensor bias;
    CHECK(model_find_tensor(x, "score.bias", &bias) == 0);
    bias.data[0] = 7.0f;
    EXPECT(ckpt_load(hf, x) == 0, "%s", "a transformers classifier without score.bias: load");
    float *pm = model_params(m), *px = model_params(x);
    size_t differ = 0;
    for (size_t i = 0; i < model_num_params(m); i++)
        differ += pm[i] != px[i] && &px[i] != bias.data;
    EXPECT(differ == 0 && bias.data[0] == 0.0f,
           "the classifier loaded with %zu parameters differing, score.bias %g (expected 0)",
           differ, (double)bias.data[0]);
    struct {
        const char *key, *value;
        int         want;
        const char *expect;
    } cases[] = {
        {"num_labels", "2", ERR_UNSUPPORTED, "with 2 labels; a reward model has one"},
        {"id2label", "{\"0\": \"A\", \"1\": \"B\"}", ERR_UNSUPPORTED, "with 2 labels"},
        {"rlhf_has_value_head", "false", ERR_FORMAT, "but rlhf_has_value_head is false"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        /* Our save writes num_labels 1 for a model with the head: gone here,
         * so that id2label alone counts the labels. */
        const char *const kv[] = {"architectures",
                                  "[\"LlamaForSequenceClassification\"]",
                                  "num_labels",
                                  NULL,
                                  "id2label",
                                  "{\"0\": \"LABEL_0\"}",
                                  cases[i].key,
                                  cases[i].value,
                                  NULL};
        EXPECT(put_hf_config(t, hf, kv) == 0, "classifier: config %s", cases[i].key);
        EXPECT_REFUSED(ckpt_load_config(hf, &got), cases[i].want, cases[i].expect, cases[i].key);
    }
    /* Without the architecture, a missing score.bias is a missing tensor. */
    const char *const causal[] = {"rlhf_has_value_head",
                                  "true",
                                  "architectures",
                                  "[\"LlamaForCausalLM\"]",
                                  "num_labels",
                                  NULL,
                                  "id2label",
                                  NULL,
                                  "label2id",
                                  NULL,
                                  NULL};
    EXPECT(put_hf_config(t, hf, causal) == 0, "%s", "causal config");
    EXPECT_REFUSED(ckpt_load(hf, x), ERR_NOTFOUND, "'score.bias'",
                   "a causal model's checkpoint without score.bias");
    free(st);
    free(mt);
    model_free(&x);
    model_free(&m);
    fileio_remove_tree(hf);
    fileio_remove_tree(t->ck);
}

int ckpt_config_selftest(bool verbose)
{
    TestCtx t;
    if (testfs_tmpdir_new("ckpt_config", t.root, sizeof t.root) != 0) return 1;
    ckpt_join(t.ck, t.root, "ck");
    Tok *tok = tok_new(TOK_CHARSET_DEFAULT);
    CHECK(tok);
    test_classifier(&t, tok);
    tok_free(&tok);
    EXPECT(testfs_tmpdir_remove(t.root) == 0, "removing the test directory %s", t.root);
    return expect_end();
}
