/* The exporter's self-test: F16 rounding, GGUF (F32 and F16) and Hugging
 * Face exports of tied and untied models loaded back through gguf_load,
 * bpe_load and ckpt_load, and the refusals. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/formats/bpe.h"
#include "common/formats/bpe_gguf.h"
#include "common/formats/ckpt.h"
#include "common/formats/ckpt_config.h"
#include "common/formats/export.h"
#include "common/formats/gguf.h"
#include "common/formats/gguf_llama.h"
#include "common/nn/half.h"
#include "tests/support/expect.h"
#include "tests/support/fixtures.h"
#include "tests/support/testfs.h"
#include "tests/test_list.h"

typedef struct {
    bool verbose;
    char dir[64];
} Ctx;

static void test_f16(Ctx *t)
{
    static const struct {
        float    x;
        uint16_t h;
    } cases[] = {
        {0.0f, 0x0000},
        {-0.0f, 0x8000},
        {1.0f, 0x3c00},
        {-2.0f, 0xc000},
        {0.5f, 0x3800},
        {65504.0f, 0x7bff},
        {65519.0f, 0x7bff},                 /* below the halfway point: stays finite */
        {65520.0f, 0x7c00},                 /* halfway, odd mantissa: rounds to infinity */
        {1e6f, 0x7c00},                     /* overflow */
        {1.0f + 1.0f / 2048, 0x3c00},       /* tie between 1 and 1+2^-10: even wins */
        {1.0f + 3.0f / 2048, 0x3c02},       /* tie, rounds up to even */
        {1.0f + 1.0f / 4096, 0x3c00},       /* below the tie */
        {6.103515625e-05f, 0x0400},         /* 2^-14, the smallest normal */
        {5.9604644775390625e-08f, 0x0001},  /* 2^-24, the smallest subnormal */
        {2.98023223876953125e-08f, 0x0000}, /* 2^-25: a tie, rounds to even 0 */
        {3.0e-08f, 0x0001},                 /* just above the tie */
        {6.0975e-05f, 0x03ff},              /* the largest subnormal */
        {INFINITY, 0x7c00},
        {-INFINITY, 0xfc00},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint16_t h = half_f32_to_f16(cases[i].x);
        EXPECT(h == cases[i].h, "f16(%.9g) = 0x%04x, expected 0x%04x", (double)cases[i].x, h,
               cases[i].h);
    }
    EXPECT(isnan(half_f16_to_f32(half_f32_to_f16(NAN))), "NaN did not stay NaN");
    /* Every half value converts back to itself. */
    int bad = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = half_f16_to_f32((uint16_t)h);
        if (isnan(f)) continue;
        if (half_f32_to_f16(f) != h) bad++;
    }
    EXPECT(bad == 0, "%d half values do not round-trip", bad);
}

/* A small byte-level vocabulary with ChatML specials. */
static Bpe *test_bpe(void)
{
    static const char *const tokens[] = {
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "a",
        "b",
        "c",
        "Ġ",
        "1",
        "2",
        "ab",
        "Ġa",
        "abc",
        "Ġab",
        "Ċ",
        "s",
        "y",
        "t",
        "e",
        "m",
        "<tool>",
    };
    static const int32_t     types[] = {3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 4};
    static const char *const merges[] = {"a b", "Ġ a", "ab c", "Ġ ab"};
    BpeVocab                 v = {
                        .n_tokens = (int)(sizeof tokens / sizeof tokens[0]),
                        .tokens = tokens,
                        .token_types = types,
                        .n_merges = 4,
                        .merges = merges,
                        .pre = "smollm",
                        .bos_id = 1,
                        .eos_id = 2,
                        .unk_id = 0,
                        .pad_id = 2,
                        .chat_template = "{% for message in messages %}{{'<|im_start|>' + "
                                                         "message['role'] + '\\n' + message['content'] + "
                                                         "'<|im_end|>' + '\\n'}}{% endfor %}",
                        .add_bos = false,
    };
    Bpe *b = bpe_new(&v);
    CHECK(b);
    return b;
}

static void check_tokenizer(Ctx *t, const Bpe *a, const Bpe *b)
{
    int n = bpe_vocab_size(a), diff = 0;
    EXPECT(bpe_vocab_size(b) == n, "vocab %d, expected %d", bpe_vocab_size(b), n);
    if (bpe_vocab_size(b) != n) return;
    for (int i = 0; i < n; i++)
        diff += strcmp(bpe_token_text(a, i), bpe_token_text(b, i)) != 0 ||
                bpe_token_type(a, i) != bpe_token_type(b, i);
    EXPECT(diff == 0, "%d tokens differ", diff);
    EXPECT(bpe_merge_count(a) == bpe_merge_count(b), "merges %d, expected %d", bpe_merge_count(b),
           bpe_merge_count(a));
    for (int r = 0; r < bpe_merge_count(a) && r < bpe_merge_count(b); r++) {
        int l1, r1, l2, r2;
        bpe_merge_at(a, r, &l1, &r1);
        bpe_merge_at(b, r, &l2, &r2);
        EXPECT(l1 == l2 && r1 == r2, "merge %d differs", r);
    }
    EXPECT(bpe_bos_id(a) == bpe_bos_id(b) && bpe_eos_id(a) == bpe_eos_id(b) &&
               bpe_unk_id(a) == bpe_unk_id(b) && bpe_pad_id(a) == bpe_pad_id(b) &&
               bpe_eot_id(a) == bpe_eot_id(b) && bpe_add_bos(a) == bpe_add_bos(b),
           "special ids differ");
    EXPECT(strcmp(bpe_pre_name(a), bpe_pre_name(b)) == 0, "pre '%s', expected '%s'",
           bpe_pre_name(b), bpe_pre_name(a));
    const char *ta = bpe_chat_template(a), *tb = bpe_chat_template(b);
    EXPECT((!ta && !tb) || (ta && tb && strcmp(ta, tb) == 0), "chat template differs");
}

/* GGUF F32 and F16 and the HF directory, each loaded back, for a tied and an
 * untied model. */
static void test_round_trip(Ctx *t, const Bpe *bpe)
{
    int V = bpe_vocab_size(bpe), T = 12;
    for (int tied = 0; tied < 2; tied++) {
        ModelConfig cfg = fixture_model_config(32, 2, 4, 2, 40, V, 64);
        cfg.tie_embeddings = tied;
        Model *m = model_new(&cfg), *back = NULL;
        model_init_random(m, 11 + (uint64_t)tied, 0.3f);
        /* Norm gains away from one, so a transposed or skipped gain shows. */
        float *p = model_params(m);
        for (size_t i = 0; i < model_num_params(m); i += 7) p[i] *= 1.25f;
        size_t nl = (size_t)T * V;
        float *want = xmalloc(sizeof(float) * nl), *got = xmalloc(sizeof(float) * nl);
        fixture_logits(m, want, T);
        char path[128];
        snprintf(path, sizeof path, "%s/m.gguf", t->dir);

        /* F32: bit-identical logits and the same tokenizer. */
        EXPECT(export_gguf(path, m, bpe, EXPORT_F32) == 0, "export_gguf F32 failed");
        EXPECT(gguf_load(path, 0, &back) == 0, "gguf_load of the F32 export failed");
        if (back) {
            const ModelConfig *bc = model_config(back);
            EXPECT(memcmp(bc, &cfg, sizeof cfg) == 0, "config differs after the round trip");
            fixture_logits(back, got, T);
            EXPECT(memcmp(want, got, sizeof(float) * nl) == 0,
                   "F32 GGUF logits differ (tied %d): max |diff| %g", tied,
                   (double)fixture_max_abs_diff(want, got, nl));
            EXPECT(memcmp(model_params(back), model_params(m),
                          sizeof(float) * model_num_params(m)) == 0,
                   "F32 GGUF weights differ");
            model_free(&back);
        }
        Bpe *b2 = NULL;
        EXPECT(bpe_load(path, &b2) == 0, "bpe_load of the export failed");
        if (b2) check_tokenizer(t, bpe, b2);
        bpe_free(&b2);
        GgufFile *f = NULL;
        if (gguf_open(path, &f) == 0) {
            EXPECT(gguf_version(f) == 3 && gguf_alignment(f) == 32, "version %u alignment %zu",
                   gguf_version(f), gguf_alignment(f));
            int64_t v = 0;
            EXPECT(gguf_get_int(f, "llama.vocab_size", &v) == 0 && v == V, "llama.vocab_size");
            EXPECT((gguf_find_tensor(f, "output.weight") < 0) == (bool)tied,
                   "output.weight presence wrong for tied %d", tied);
            gguf_close(&f);
        }

        /* F16: identical to the model with its matrices rounded to half. */
        EXPECT(export_gguf(path, m, bpe, EXPORT_F16) == 0, "export_gguf F16 failed");
        Model *r16 = model_new(&cfg);
        model_copy_params(r16, m);
        for (int i = 0; i < model_num_tensors(r16); i++) {
            ModelTensor mt;
            model_tensor(r16, i, &mt);
            if (mt.ndim != 2) continue;
            for (size_t k = 0; k < mt.numel; k++)
                mt.data[k] = half_f16_to_f32(half_f32_to_f16(mt.data[k]));
        }
        float *want16 = xmalloc(sizeof(float) * nl);
        fixture_logits(r16, want16, T);
        EXPECT(gguf_load(path, 0, &back) == 0, "gguf_load of the F16 export failed");
        if (back) {
            fixture_logits(back, got, T);
            float d = fixture_max_abs_diff(want16, got, nl),
                  d_orig = fixture_max_abs_diff(want, got, nl);
            float scale = 0;
            for (size_t k = 0; k < nl; k++) scale = fmaxf(scale, fabsf(want[k]));
            EXPECT(d == 0.0f, "F16 GGUF logits differ from the rounded model: %g", (double)d);
            /* Half precision keeps 11 significant bits: the logits move by
             * about 2^-11 of their size through a few layers. */
            EXPECT(d_orig <= 1e-2f * scale, "F16 logits off by %g (largest logit %g)",
                   (double)d_orig, (double)scale);
            if (t->verbose)
                printf("export: tied %d: F16 GGUF max |logit diff| %.3g vs F32 (largest %.3g, "
                       "tolerance 1e-2 of it)\n",
                       tied, (double)d_orig, (double)scale);
            model_free(&back);
        }
        free(want16);
        model_free(&r16);

        /* Hugging Face directory: ckpt_load gives identical logits. */
        char dir[128];
        snprintf(dir, sizeof dir, "%s/hf%d", t->dir, tied);
        EXPECT(export_hf(dir, m, bpe) == 0, "export_hf failed");
        Model *h = model_new(&cfg);
        EXPECT(ckpt_load(dir, h) == 0, "ckpt_load of the HF export failed");
        fixture_logits(h, got, T);
        EXPECT(memcmp(want, got, sizeof(float) * nl) == 0, "HF logits differ: %g",
               (double)fixture_max_abs_diff(want, got, nl));
        model_free(&h);
        ModelConfig hc;
        EXPECT(ckpt_load_config(dir, &hc) == 0, "config.json of the export refused");
        char         fpath[256];
        json_error_t err;
        snprintf(fpath, sizeof fpath, "%s/tokenizer.json", dir);
        json_t *tj = json_load_file(fpath, 0, &err);
        EXPECT(tj != NULL, "tokenizer.json: %s", err.text);
        if (tj) {
            json_t *model = json_object_get(tj, "model");
            EXPECT(json_object_size(json_object_get(model, "vocab")) == (size_t)V,
                   "tokenizer.json vocab size");
            EXPECT(
                json_array_size(json_object_get(model, "merges")) == 4 &&
                    !strcmp(json_string_value(json_array_get(json_object_get(model, "merges"), 3)),
                            "Ġ ab"),
                "tokenizer.json merges");
            EXPECT(json_array_size(json_object_get(tj, "added_tokens")) == 4,
                   "tokenizer.json added tokens: %zu",
                   json_array_size(json_object_get(tj, "added_tokens")));
            json_decref(tj);
        }
        snprintf(fpath, sizeof fpath, "%s/tokenizer_config.json", dir);
        json_t *tc = json_load_file(fpath, 0, &err);
        EXPECT(tc && !strcmp(json_string_value(json_object_get(tc, "eos_token")), "<|im_end|>") &&
                   !strcmp(json_string_value(json_object_get(tc, "chat_template")),
                           bpe_chat_template(bpe)),
               "tokenizer_config.json");
        json_decref(tc);
        /* A second export over a directory with tokenizer files is refused. */
        fileio_capture_begin();
        int rc = export_hf(dir, m, bpe);
        free(fileio_capture_end(t->verbose));
        EXPECT(rc == ERR_ARG, "export_hf over an export: %d, expected ERR_ARG", rc);

        free(want);
        free(got);
        model_free(&m);
    }
}

static void test_refused(Ctx *t, const Bpe *bpe)
{
    ModelConfig cfg = fixture_model_config(16, 1, 2, 1, 16, bpe_vocab_size(bpe) + 3, 16);
    cfg.has_value_head = true;
    Model *m = model_new(&cfg);
    model_init_random(m, 3, 0.2f);
    char path[128];
    snprintf(path, sizeof path, "%s/v.gguf", t->dir);
    fileio_capture_begin();
    int   rc = export_gguf(path, m, bpe, EXPORT_F32);
    char *log = fileio_capture_end(t->verbose);
    EXPECT(rc == ERR_MISMATCH && strstr(log, "llama.cpp requires them equal"),
           "vocabulary mismatch: %d", rc);
    free(log);
    EXPECT(access(path, F_OK) != 0, "a refused export left a file");
    /* Without a tokenizer the file still loads here; the value head is left out. */
    fileio_capture_begin();
    rc = export_gguf(path, m, NULL, EXPORT_F32);
    log = fileio_capture_end(t->verbose);
    EXPECT(rc == 0, "export without tokenizer: %d", rc);
    free(log);
    Model *back = NULL;
    EXPECT(gguf_load(path, 0, &back) == 0, "reload without tokenizer");
    if (back) {
        float *a = xmalloc(sizeof(float) * 4 * (size_t)cfg.vocab_size);
        float *b = xmalloc(sizeof(float) * 4 * (size_t)cfg.vocab_size);
        fixture_logits(m, a, 4);
        fixture_logits(back, b, 4);
        EXPECT(memcmp(a, b, sizeof(float) * 4 * (size_t)cfg.vocab_size) == 0,
               "logits of a value-head model differ");
        free(a);
        free(b);
    }
    model_free(&back);
    model_free(&m);
}

int export_selftest(bool verbose)
{
    Ctx t = {.verbose = verbose};
    if (testfs_tmpdir_new("export", t.dir, sizeof t.dir) != 0) return 1;
    test_f16(&t);
    Bpe *bpe = test_bpe();
    test_round_trip(&t, bpe);
    test_refused(&t, bpe);
    bpe_free(&bpe);
    testfs_tmpdir_remove(t.dir);
    return expect_end();
}
