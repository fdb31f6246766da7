/* rlhf-export: hands a model back in the formats other tools read.
 *
 *   rlhf-export --model PATH --out DIR                  Hugging Face directory
 *   rlhf-export --model PATH --out FILE.gguf [--type f16]   GGUF file
 *
 * The model is a GGUF file or a checkpoint directory of ours (what the
 * learner saves). The tokenizer written beside it comes from a GGUF file:
 * --tokenizer, or the model file itself when it is a GGUF. Results go to
 * stdout, logs to stderr. Exit status: 0 done, 1 failed, 2 bad flags. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "common/formats/bpe.h"
#include "common/formats/bpe_gguf.h"
#include "common/formats/ckpt.h"
#include "common/formats/ckpt_config.h"
#include "common/base/err.h"
#include "common/formats/export.h"
#include "common/base/flags.h"
#include "common/formats/gguf.h"
#include "common/formats/gguf_llama.h"
#include "common/base/log.h"
#include "common/nn/model.h"

typedef struct {
    const char *model;     /* GGUF file or checkpoint directory, required */
    const char *tokenizer; /* GGUF file with the tokenizer; NULL = the model's if a GGUF */
    const char *out;       /* output directory (hf) or file (gguf), required */
    const char *format;    /* "hf", "gguf" or NULL = from --out */
    int         type;      /* EXPORT_F32 or EXPORT_F16 (gguf only) */
    int         log_level; /* LOG_* */
} ExportArgs;

static const ExportArgs k_defaults = {.model = NULL,
                                      .tokenizer = NULL,
                                      .out = NULL,
                                      .format = NULL,
                                      .type = EXPORT_F32,
                                      .log_level = LOG_INFO};

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
            "usage: %s --model PATH --out PATH [--format hf|gguf] [--type f32|f16] [--tokenizer "
            "PATH.gguf]\n"
            "Exports a model as a Hugging Face directory or a GGUF file.\n"
            "  --model PATH      GGUF file or checkpoint directory (required)\n"
            "  --out PATH        output directory (hf; must not exist) or file (gguf) (required)\n"
            "  --format F        hf or gguf (default: gguf when --out ends in .gguf, else hf)\n"
            "  --type T          GGUF tensor type, f32 or f16 (default f32)\n"
            "  --tokenizer PATH  GGUF file whose tokenizer is exported (default: --model when it\n"
            "                    is a GGUF file; none for a checkpoint)\n"
            "  --log-level L     error, warn, info or debug (default info)\n"
            "  --help            this text\n",
            prog);
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static int parse_args(int argc, char **argv, ExportArgs *a)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},
        {"out", required_argument, 0, 'o'},
        {"format", required_argument, 0, 'f'},
        {"type", required_argument, 0, 't'},
        {"tokenizer", required_argument, 0, 'k'},
        {"log-level", required_argument, 0, 'l'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    *a = k_defaults;
    int c, rc = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            a->model = optarg;
            break;
        case 'o':
            a->out = optarg;
            break;
        case 'k':
            a->tokenizer = optarg;
            break;
        case 'f':
            if (strcmp(optarg, "hf") != 0 && strcmp(optarg, "gguf") != 0) {
                fprintf(stderr, "rlhf-export: --format '%s': expected hf or gguf\n", optarg);
                return ERR_ARG;
            }
            a->format = optarg;
            break;
        case 't':
            if (strcmp(optarg, "f32") == 0) {
                a->type = EXPORT_F32;
            } else if (strcmp(optarg, "f16") == 0) {
                a->type = EXPORT_F16;
            } else {
                fprintf(stderr, "rlhf-export: --type '%s': expected f32 or f16\n", optarg);
                return ERR_ARG;
            }
            break;
        case 'l':
            rc = flags_log_level("log-level", optarg, &a->log_level);
            break;
        case 'h':
            usage(stdout, argv[0]);
            return 1;
        default:
            usage(stderr, argv[0]);
            return ERR_ARG;
        }
        if (rc) return rc;
    }
    if (optind < argc) {
        fprintf(stderr, "rlhf-export: unexpected argument '%s'\n", argv[optind]);
        return ERR_ARG;
    }
    if (!a->model || !a->out) {
        fprintf(stderr, "rlhf-export: --model and --out are required (see --help)\n");
        return ERR_ARG;
    }
    if (!a->format) a->format = ends_with(a->out, ".gguf") ? "gguf" : "hf";
    if (a->type == EXPORT_F16 && strcmp(a->format, "gguf") != 0) {
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

/* The model from a GGUF file (whole context) or a checkpoint directory. */
static int load_model(const char *path, Model **out)
{
    *out = NULL;
    if (!is_dir(path)) return gguf_load(path, 0, out);
    ModelConfig cfg;
    int         rc = ckpt_load_config(path, &cfg);
    if (rc) return rc;
    Model *m = model_new(&cfg);
    if ((rc = ckpt_load(path, m)) != 0) {
        model_free(&m);
        return rc;
    }
    *out = m;
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    ExportArgs a;
    flags_set_prog("rlhf-export");
    int rc = parse_args(argc, argv, &a);
    if (rc == 1) return 0;
    if (rc) return 2;
    log_init("export", a.log_level);
    const char *tok_path = a.tokenizer ? a.tokenizer : is_dir(a.model) ? NULL : a.model;
    log_info("rlhf-export: model %s, tokenizer %s, out %s, format %s, type %s", a.model,
             tok_path ? tok_path : "(none)", a.out, a.format, a.type == EXPORT_F16 ? "f16" : "f32");
    double t0 = now_s();
    Model *m = NULL;
    Bpe   *bpe = NULL;
    if (load_model(a.model, &m) != 0) return 1;
    if (tok_path && bpe_load(tok_path, &bpe) != 0) {
        model_free(&m);
        return 1;
    }
    double t_load = now_s() - t0;
    t0 = now_s();
    if (strcmp(a.format, "gguf") == 0)
        rc = export_gguf(a.out, m, bpe, a.type);
    else
        rc = export_hf(a.out, m, bpe);
    if (rc == 0)
        printf("exported %s to %s (%s%s) in %.2f s (load %.2f s)\n", a.model, a.out, a.format,
               strcmp(a.format, "gguf") == 0 ? (a.type == EXPORT_F16 ? " F16" : " F32") : "",
               now_s() - t0, t_load);
    bpe_free(&bpe);
    model_free(&m);
    if (rc != 0) return 1;
    if (fflush(stdout) != 0) return 1;
    return 0;
}
