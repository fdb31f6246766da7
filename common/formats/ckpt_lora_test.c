/* ckpt_lora_selftest: a checkpoint of a model with LoRA adapters attached
 * saves adapter_model.safetensors beside the base and loads back bit for
 * bit (rank, alpha, targets and every A and B); optimizer state must be the
 * adapters' size; adapters of another save than the base are refused
 * (ERR_AGAIN); a checkpoint without adapters says ERR_NOTFOUND; a
 * damaged adapter tensor is refused; the snapshot config's LoRA keys round
 * trip and bad ones are refused. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/base/err.h"
#include "common/formats/ckpt.h"
#include "common/nn/lora.h"
#include "common/nn/model.h"
#include "tests/support/expect.h"
#include "tests/support/testfs.h"
#include "tests/test_list.h"

static Model *adapted(const ModelConfig *mc, const LoraConfig *lc)
{
    Model *m = model_new(mc);
    model_init_random(m, 3, 0.1f);
    Lora *lo = lora_new(lc, mc);
    lora_init_random(lo, 4);
    float *p = lora_params(lo);
    for (size_t i = 0; i < lora_num_params(lo); i++) p[i] += 0.001f * (float)(i % 7);
    model_attach_lora(m, &lo);
    return m;
}

static void round_trip(const char *tmp)
{
    ModelConfig mc = model_config_llama(16, 2, 2, 1, 24, 11, 16);
    LoraConfig  lc = {.rank = 3, .alpha = 5.5f, .targets = LORA_TARGETS_ATTN | (1u << LORA_UP)};
    Model      *m = adapted(&mc, &lc);
    Lora       *lo = model_lora(m);
    char        dir[4096], path[4200];
    testfs_path(dir, sizeof dir, "%s/ck", tmp);
    size_t na = lora_num_params(lo);
    float *mom = xcalloc(na, sizeof(float));
    /* The optimizer state of an adapted model is the adapters'. */
    CkptOptim bad = {mom, mom, model_num_params(m), 1};
    EXPECT(ckpt_save(dir, m, NULL, &bad, NULL) == ERR_ARG, "%s",
           "optimizer state of the base's size accepted for an adapted model");
    CkptOptim good = {mom, mom, na, 1};
    EXPECT(ckpt_save(dir, m, NULL, &good, NULL) == 0, "%s", "save of an adapted model failed");

    Lora *got = NULL;
    int   rc = ckpt_load_lora(dir, &mc, &got);
    if (EXPECT(rc == 0 && got, "ckpt_load_lora: %s", err_str(rc))) {
        const LoraConfig *g = lora_config(got);
        EXPECT(g->rank == 3 && g->alpha == 5.5f && g->targets == lc.targets &&
                   lora_num_params(got) == na &&
                   !memcmp(lora_params(got), lora_params(lo), na * sizeof(float)),
               "adapters after the round trip: rank %d alpha %g targets 0x%x", g->rank,
               (double)g->alpha, g->targets);
        Model *back = model_new(&mc);
        model_attach_lora(back, &got);
        EXPECT(ckpt_load(dir, back) == 0 && !memcmp(model_params(back), model_params(m),
                                                    model_num_params(m) * sizeof(float)),
               "%s", "the base after the round trip differs");
        model_free(&back);
    }
    /* Adapters of an earlier save beside the base of a later one (a save
     * replaced the directory while loading): ERR_AGAIN, never a mix. */
    testfs_path(path, sizeof path, "%s/%s", dir, CKPT_ADAPTER_FILE);
    struct stat st;
    char       *old = testfs_read(path, 1 << 20);
    size_t      len = old && stat(path, &st) == 0 ? (size_t)st.st_size : 0;
    if (EXPECT(old && ckpt_save(dir, m, NULL, &good, NULL) == 0, "%s", "second save failed")) {
        CHECK(testfs_write(path, old, len) == 0);
        Lora *again = NULL;
        CHECK(ckpt_load_lora(dir, &mc, &again) == 0);
        Model *mix = model_new(&mc);
        model_attach_lora(mix, &again);
        rc = ckpt_load(dir, mix);
        EXPECT(rc == ERR_AGAIN, "adapters of another save: %s, expected ERR_AGAIN", err_str(rc));
        model_free(&mix);
        CHECK(ckpt_save(dir, m, NULL, &good, NULL) == 0);
    }
    free(old);
    /* A checkpoint of a plain model has no adapters. */
    char plain[4096];
    testfs_path(plain, sizeof plain, "%s/plain", tmp);
    Model *pm = model_new(&mc);
    CHECK(ckpt_save(plain, pm, NULL, NULL, NULL) == 0);
    EXPECT(ckpt_load_lora(plain, &mc, &got) == ERR_NOTFOUND && !got, "%s",
           "a checkpoint without adapters did not say ERR_NOTFOUND");
    /* Adapters that do not fit another model shape are refused. */
    ModelConfig other = mc;
    other.n_layers = 3;
    EXPECT(ckpt_load_lora(dir, &other, &got) != 0 && !got, "%s",
           "adapters of 2 layers loaded for a 3-layer model");
    /* A flipped byte in the adapter file: refused by its checksum. */
    testfs_path(path, sizeof path, "%s/%s", dir, CKPT_ADAPTER_FILE);
    char *bytes = testfs_read(path, 1 << 20);
    if (EXPECT(bytes, "cannot read %s", path)) {
        FILE *f = fopen(path, "r+b");
        CHECK(f);
        CHECK(fseek(f, -5, SEEK_END) == 0);
        int c = fgetc(f);
        CHECK(fseek(f, -5, SEEK_END) == 0 && fputc(c ^ 0x40, f) != EOF && fclose(f) == 0);
        rc = ckpt_load_lora(dir, &mc, &got);
        EXPECT(rc == ERR_FORMAT && !got, "damaged adapter file: %s, expected ERR_FORMAT",
               err_str(rc));
        free(bytes);
    }
    free(mom);
    model_free(&pm);
    model_free(&m);
}

static void config_json(void)
{
    ModelConfig mc = model_config_llama(16, 1, 2, 2, 24, 11, 16);
    LoraConfig  lc = {.rank = 4, .alpha = 8.0f, .targets = LORA_TARGETS_MLP}, got;
    json_t     *o = json_object();
    ckpt_lora_config_to_json(o, &lc);
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    EXPECT(ckpt_lora_config_from_json("test", text, &mc, &got) == 0 && got.rank == 4 &&
               got.alpha == 8.0f && got.targets == LORA_TARGETS_MLP,
           "config round trip of '%s'", text);
    free(text);
    EXPECT(ckpt_lora_config_from_json("test", "{\"hidden_size\":16}", &mc, &got) == ERR_NOTFOUND,
           "%s", "a config without LoRA keys did not say ERR_NOTFOUND");
    static const char *const bad[] = {
        "{\"rlhf_lora_rank\":0,\"rlhf_lora_alpha\":1,\"rlhf_lora_targets\":\"q\"}",
        "{\"rlhf_lora_rank\":2,\"rlhf_lora_alpha\":-1,\"rlhf_lora_targets\":\"q\"}",
        "{\"rlhf_lora_rank\":2,\"rlhf_lora_alpha\":1,\"rlhf_lora_targets\":\"z\"}",
        "{\"rlhf_lora_rank\":64,\"rlhf_lora_alpha\":1,\"rlhf_lora_targets\":\"q\"}",
        "{\"rlhf_lora_rank\":2}",
        "not json",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EXPECT(ckpt_lora_config_from_json("bad", bad[i], &mc, &got) != 0, "accepted '%s'", bad[i]);
}

int ckpt_lora_selftest(bool verbose)
{
    expect_begin("ckpt_lora", verbose);
    char tmp[4096];
    if (!EXPECT(testfs_tmpdir_new("ckpt_lora", tmp, sizeof tmp) == 0, "%s", "no temp dir"))
        return expect_end();
    round_trip(tmp);
    config_json();
    testfs_tmpdir_remove(tmp);
    return expect_end();
}
