/* export_test: SmolLM2-135M-Instruct from its real GGUF file exported and
 * loaded back: GGUF F32 gives bit-identical logits, the tokenizer metadata
 * reads back the same, and the Hugging Face directory gives identical logits
 * through ckpt_load. Skipped, passing, when
 * models/SmolLM2-135M-Instruct.Q4_1.gguf is absent (`make model` fetches it);
 * RLHF_SMOLLM2_GGUF overrides the path. RLHF_EXPORT_KEEP=DIR keeps the
 * exported HF directory there (for tests/reference/check_export.py). */
#include "tests/support/fixtures.h"
#include "tests/test_list.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/formats/bpe.h"
#include "common/formats/bpe_chat.h"
#include "common/formats/bpe_gguf.h"
#include "common/formats/ckpt.h"
#include "common/base/err.h"
#include "common/formats/export.h"
#include "common/base/fileio.h"
#include "common/formats/gguf.h"
#include "common/formats/gguf_llama.h"
#include "common/nn/model.h"

#define MAX_SEQ 256 /* positions loaded: the RoPE tables, not the test, need more */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Final-position logits (V) of ids through the training forward. */
static void last_logits(Model *m, const int *ids, int n, float *out)
{
    int *targets = xcalloc((size_t)n, sizeof(int)), n_act = 0, V = model_config(m)->vocab_size;
    model_forward(m, ids, targets, NULL, 1, n, NULL, NULL, NULL);
    const float *lg = model_last_logits(m, &n_act);
    CHECK(n_act == n);
    memcpy(out, lg + (size_t)(n - 1) * V, sizeof(float) * (size_t)V);
    free(targets);
}

static bool same_encoding(const Bpe *a, const Bpe *b, const char *text)
{
    int ia[256], ib[256], na = 0, nb = 0;
    if (bpe_encode(a, text, strlen(text), BPE_ENC_SPECIAL, ia, 256, &na) != 0) return false;
    if (bpe_encode(b, text, strlen(text), BPE_ENC_SPECIAL, ib, 256, &nb) != 0) return false;
    return na == nb && memcmp(ia, ib, sizeof(int) * (size_t)na) == 0;
}

int export_smollm2_selftest(bool verbose)
{
    const char *path = fixture_smollm2_path("export_smollm2");
    if (!path) return 0;
    int    fails = 0;
    Model *m = NULL, *back = NULL, *h = NULL;
    Bpe   *bpe = NULL, *bpe2 = NULL;
    char   dir[] = "/tmp/rlhf-export-smollm2-XXXXXX";
    if (!mkdtemp(dir)) return 1;
    if (gguf_load(path, MAX_SEQ, &m) != 0 || bpe_load(path, &bpe) != 0) {
        fprintf(stderr, "export_smollm2: loading %s failed\n", path);
        fails++;
        goto done;
    }
    int            V = model_config(m)->vocab_size, n = 0, ids[256];
    char          *chat = xmalloc(4096);
    BpeChatMessage msg = {"user", "What is 37 + 45? Reply with the number only."};
    CHECK(bpe_chat_format(bpe, &msg, 1, true, chat, 4096, NULL) == 0);
    CHECK(bpe_encode(bpe, chat, strlen(chat), BPE_ENC_SPECIAL, ids, 256, &n) == 0);
    float *want = xmalloc(sizeof(float) * (size_t)V), *got = xmalloc(sizeof(float) * (size_t)V);
    last_logits(m, ids, n, want);

    char gpath[PATH_MAX];
    snprintf(gpath, sizeof gpath, "%s/m.gguf", dir);
    double t0 = now_s();
    if (export_gguf(gpath, m, bpe, EXPORT_F32) != 0) {
        fprintf(stderr, "export_smollm2: export_gguf failed\n");
        fails++;
        goto free_bufs;
    }
    double t_gguf = now_s() - t0;
    t0 = now_s();
    if (gguf_load(gpath, MAX_SEQ, &back) != 0 || bpe_load(gpath, &bpe2) != 0) {
        fprintf(stderr, "export_smollm2: loading the export back failed\n");
        fails++;
        goto free_bufs;
    }
    double t_load = now_s() - t0;
    last_logits(back, ids, n, got);
    if (memcmp(want, got, sizeof(float) * (size_t)V) != 0 ||
        memcmp(model_params(m), model_params(back), sizeof(float) * model_num_params(m)) != 0) {
        fprintf(stderr, "export_smollm2: GGUF F32 round trip: logits or weights differ\n");
        fails++;
    }
    if (bpe_vocab_size(bpe2) != V || bpe_merge_count(bpe2) != bpe_merge_count(bpe) ||
        strcmp(bpe_chat_template(bpe), bpe_chat_template(bpe2)) != 0 ||
        bpe_eot_id(bpe) != bpe_eot_id(bpe2) || !same_encoding(bpe, bpe2, chat) ||
        !same_encoding(bpe, bpe2, "Ünïcödé 12345 def f(x):\n\treturn x**2  # ok 🙂")) {
        fprintf(stderr, "export_smollm2: the exported tokenizer differs\n");
        fails++;
    }
    if (verbose)
        printf("export_smollm2: GGUF F32 export %.2f s, reload %.2f s, %d-token prompt: logits "
               "and weights bit-identical: %s\n",
               t_gguf, t_load, n, fails ? "no" : "yes");

    /* Hugging Face directory. */
    const char *keep = getenv("RLHF_EXPORT_KEEP");
    char        hdir[PATH_MAX];
    if (keep && *keep)
        snprintf(hdir, sizeof hdir, "%s", keep);
    else
        snprintf(hdir, sizeof hdir, "%s/hf", dir);
    t0 = now_s();
    if (export_hf(hdir, m, bpe) != 0) {
        fprintf(stderr, "export_smollm2: export_hf failed\n");
        fails++;
        goto free_bufs;
    }
    double t_hf = now_s() - t0;
    h = model_new(model_config(m));
    if (ckpt_load(hdir, h) != 0) {
        fprintf(stderr, "export_smollm2: ckpt_load of the HF export failed\n");
        fails++;
        goto free_bufs;
    }
    last_logits(h, ids, n, got);
    if (memcmp(want, got, sizeof(float) * (size_t)V) != 0) {
        fprintf(stderr, "export_smollm2: HF round trip: logits differ\n");
        fails++;
    }
    if (verbose)
        printf("export_smollm2: HF export %.2f s to %s, ckpt_load logits bit-identical: %s\n", t_hf,
               hdir, fails ? "no" : "yes");
free_bufs:
    free(want);
    free(got);
    free(chat);
done:
    model_free(&h);
    model_free(&back);
    model_free(&m);
    bpe_free(&bpe2);
    bpe_free(&bpe);
    fileio_remove_tree(dir);
    return fails ? 1 : 0;
}
