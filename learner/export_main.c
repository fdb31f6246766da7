/* rlhf-export: hands a model back in the formats other tools read.
 *
 *   rlhf-export --model PATH --out DIR                  Hugging Face directory
 *   rlhf-export --model PATH --out FILE.gguf [--type f16]   GGUF file
 *
 * The model is a GGUF file or a checkpoint directory of ours (what the
 * learner saves); a checkpoint of a LoRA run is exported with its adapters
 * merged into the base, one ordinary model. The tokenizer written beside it comes from a GGUF file:
 * --tokenizer, or the model file itself when it is a GGUF. Results go to
 * stdout, logs to stderr. Exit status: 0 done, 1 failed, 2 bad flags. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/formats/bpe.h"
#include "common/formats/bpe_gguf.h"
#include "common/formats/ckpt.h"
#include "common/formats/ckpt_config.h"
#include "common/base/err.h"
#include "common/formats/export.h"
#include "common/base/prog.h"
#include "common/base/progress.h"
#include "common/formats/gguf.h"
#include "common/formats/gguf_llama.h"
#include "common/base/log.h"
#include "common/nn/lora.h"
#include "common/nn/model.h"

enum { FORMAT_FROM_OUT = -1, FORMAT_HF = 0, FORMAT_GGUF = 1 };
static const char *const k_formats[] = {"hf", "gguf", NULL};
static const char *const k_types[] = {"f32", "f16", NULL};
_Static_assert(EXPORT_F32 == 0 && EXPORT_F16 == 1, "--type stores the index of its name");

typedef struct {
    const char *model;     /* GGUF file or checkpoint directory, required */
    const char *tokenizer; /* GGUF file with the tokenizer; NULL = the model's if a GGUF */
    const char *out;       /* output directory (hf) or file (gguf), required */
    int         format;    /* FORMAT_*; FORMAT_FROM_OUT until check */
    int         type;      /* EXPORT_F32 or EXPORT_F16 (gguf only) */
    int         log_level; /* LOG_* */
} ExportArgs;

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static int check(const FlagsSpec *spec, void *ctx)
{
    (void)spec;
    ExportArgs *a = ctx;
    if (!a->model || !a->out) {
        fprintf(stderr, "rlhf-export: --model and --out are required (see --help)\n");
        return ERR_ARG;
    }
    if (a->format == FORMAT_FROM_OUT)
        a->format = ends_with(a->out, ".gguf") ? FORMAT_GGUF : FORMAT_HF;
    if (a->type == EXPORT_F16 && a->format != FORMAT_GGUF) {
        fprintf(stderr, "rlhf-export: --type f16 applies to --format gguf only\n");
        return ERR_ARG;
    }
    return 0;
}

static bool is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The model from a GGUF file (whole context) or a checkpoint directory;
 * a checkpoint's LoRA adapters are merged into its base (W + alpha/r B A). */
static int load_model(const char *path, Model **out)
{
    *out = NULL;
    if (!is_dir(path)) return gguf_load(path, 0, out);
    ModelConfig cfg;
    Lora       *lo = NULL;
    int         rc = ckpt_load_config(path, &cfg);
    if (rc) return rc;
    if ((rc = ckpt_load_lora(path, &cfg, &lo)) && rc != ERR_NOTFOUND) return rc;
    Model *m = model_new(&cfg);
    if (lo) model_attach_lora(m, &lo);
    if ((rc = ckpt_load(path, m)) != 0) {
        model_free(&m);
        return rc;
    }
    if (model_lora(m)) {
        const LoraConfig *lc = lora_config(model_lora(m));
        Model            *merged = model_new(&cfg);
        model_copy_params(merged, m);
        lora_merge(model_lora(m), merged);
        log_info("rlhf-export: merged the LoRA adapters of '%s' (rank %d, alpha %g, %zu "
                 "parameters) into its base",
                 path, lc->rank, (double)lc->alpha, lora_num_params(model_lora(m)));
        model_free(&m);
        m = merged;
    }
    *out = m;
    return 0;
}

int main(int argc, char **argv)
{
    ExportArgs a = {.model = NULL,
                    .tokenizer = NULL,
                    .out = NULL,
                    .format = FORMAT_FROM_OUT,
                    .type = EXPORT_F32,
                    .log_level = LOG_INFO};

    Flag flags[] = {
        FLAG_STRING("model", &a.model, "PATH",
                    "GGUF file or checkpoint directory (LoRA adapters merged)",
                    .def = "(required)"),
        FLAG_STRING("out", &a.out, "PATH", "output directory (hf; must not exist) or file (gguf)",
                    .def = "(required)"),
        FLAG_CHOICE("format", &a.format, k_formats, "F", "hf or gguf",
                    .def = "gguf when --out ends in .gguf, else hf"),
        FLAG_CHOICE("type", &a.type, k_types, "T", "GGUF tensor type, f32 or f16"),
        FLAG_STRING("tokenizer", &a.tokenizer, "PATH", "GGUF file whose tokenizer is exported",
                    .def = "--model when it is a GGUF file;\nnone for a checkpoint"),
        FLAG_LOG_LEVEL(&a.log_level),
        FLAGS_END,
    };
    FlagsSpec spec = {
        .prog = "rlhf-export",
        .synopsis = "--model PATH --out PATH [--format hf|gguf] [--type f32|f16] "
                    "[--tokenizer PATH.gguf]",
        .about = "Exports a model as a Hugging Face directory or a GGUF file.\n",
        .flags = flags,
        .check = check,
        .check_ctx = &a,
    };
    int rc = prog_start(&spec, argc, argv, "export", &a.log_level);
    if (rc != PROG_RUN) return rc;
    const char *format = k_formats[a.format];
    const char *tok_path = a.tokenizer ? a.tokenizer : is_dir(a.model) ? NULL : a.model;
    log_info("rlhf-export: model %s, tokenizer %s, out %s, format %s, type %s", a.model,
             tok_path ? tok_path : "(none)", a.out, format, a.type == EXPORT_F16 ? "f16" : "f32");
    double t0 = progress_now();
    Model *m = NULL;
    Bpe   *bpe = NULL;
    if (load_model(a.model, &m) != 0) return PROG_EXIT_FAIL;
    if (tok_path && bpe_load(tok_path, &bpe) != 0) {
        model_free(&m);
        return PROG_EXIT_FAIL;
    }
    double t_load = progress_now() - t0;
    t0 = progress_now();
    if (a.format == FORMAT_GGUF)
        rc = export_gguf(a.out, m, bpe, a.type);
    else
        rc = export_hf(a.out, m, bpe);
    if (rc == 0)
        printf("exported %s to %s (%s%s) in %.2f s (load %.2f s)\n", a.model, a.out, format,
               a.format == FORMAT_GGUF ? (a.type == EXPORT_F16 ? " F16" : " F32") : "",
               progress_now() - t0, t_load);
    bpe_free(&bpe);
    model_free(&m);
    if (rc != 0) return PROG_EXIT_FAIL;
    if (fflush(stdout) != 0) return PROG_EXIT_FAIL;
    return PROG_EXIT_OK;
}
