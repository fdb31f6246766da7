/* The adapters of a checkpoint (adapter_model.safetensors): ckpt.h. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "common/formats/ckpt.h"
#include "common/formats/ckpt_int.h"
#include "common/formats/safetensors.h"
#include "common/nn/lora.h"

int ckpt_lora_write(const char *path, Lora *lo, const char *save_id)
{
    const LoraConfig *c = lora_config(lo);
    int               n = lora_num_tensors(lo);
    ModelTensor      *mt = xcalloc((size_t)n, sizeof *mt);
    StTensor         *t = xcalloc((size_t)n, sizeof *t);
    for (int i = 0; i < n; i++) {
        lora_tensor(lo, i, &mt[i]);
        t[i] = (StTensor){mt[i].name, mt[i].data, 2, {mt[i].shape[0], mt[i].shape[1]}};
    }
    char rank[16], alpha[32], targets[64];
    snprintf(rank, sizeof rank, "%d", c->rank);
    /* %.9g: a float survives the round trip exactly. */
    snprintf(alpha, sizeof alpha, "%.9g", (double)c->alpha);
    lora_format_targets(c->targets, targets, sizeof targets);
    StMeta meta[5] = {{"format", "pt"},
                      {CKPT_SAVE_ID_KEY, save_id},
                      {CKPT_LORA_RANK_KEY, rank},
                      {CKPT_LORA_ALPHA_KEY, alpha},
                      {CKPT_LORA_TARGETS_KEY, targets}};
    int    rc = st_write(path, t, n, meta, 5);
    free(t);
    free(mt);
    return rc;
}

/* The adapters' config from the file's metadata. */
static int read_config(const char *path, StFile *f, const ModelConfig *mc, LoraConfig *lc)
{
    const char *r = st_meta_get(f, CKPT_LORA_RANK_KEY), *a = st_meta_get(f, CKPT_LORA_ALPHA_KEY);
    const char *t = st_meta_get(f, CKPT_LORA_TARGETS_KEY);
    char       *end = NULL, why[160];
    if (!r || !a || !t) {
        log_error("ckpt_load_lora: '%s' lacks %s, %s or %s in its metadata", path,
                  CKPT_LORA_RANK_KEY, CKPT_LORA_ALPHA_KEY, CKPT_LORA_TARGETS_KEY);
        return ERR_FORMAT;
    }
    errno = 0;
    long rank = strtol(r, &end, 10);
    if (errno || end == r || *end || rank < 1 || rank > LORA_MAX_RANK) {
        log_error("ckpt_load_lora: '%s': rank '%.32s', expected 1..%d", path, r, LORA_MAX_RANK);
        return ERR_FORMAT;
    }
    float alpha = strtof(a, &end);
    if (end == a || *end) {
        log_error("ckpt_load_lora: '%s': alpha '%.32s' is not a number", path, a);
        return ERR_FORMAT;
    }
    lc->rank = (int)rank;
    lc->alpha = alpha;
    if (lora_parse_targets(t, &lc->targets, why, sizeof why) ||
        lora_config_validate(lc, mc, why, sizeof why)) {
        log_error("ckpt_load_lora: '%s': %s", path, why);
        return ERR_FORMAT;
    }
    return 0;
}

int ckpt_lora_read(const char *path, StFile *f, Lora *lo)
{
    int rc = 0;
    if (st_count(f) != lora_num_tensors(lo)) {
        log_error("ckpt_load_lora: '%s': %d tensors, expected %d for rank %d on these targets",
                  path, st_count(f), lora_num_tensors(lo), lora_config(lo)->rank);
        return ERR_MISMATCH;
    }
    if (!st_has_checksums(f))
        log_warn("ckpt_load_lora: '%s' records no checksums: loading it unverified", path);
    for (int i = 0; i < lora_num_tensors(lo) && !rc; i++) {
        ModelTensor t;
        lora_tensor(lo, i, &t);
        /* st_read_f32 names a missing tensor or a shape that differs. */
        if ((rc = st_read_f32(f, t.name, t.data, 2, t.shape))) break;
        for (size_t k = 0; k < t.numel && !rc; k++) {
            if (!isfinite(t.data[k])) {
                log_error("ckpt_load_lora: '%s': tensor '%s' element %zu is %g", path, t.name, k,
                          (double)t.data[k]);
                rc = ERR_NONFINITE;
            }
        }
    }
    return rc;
}

int ckpt_load_lora(const char *dir, const ModelConfig *mc, Lora **out)
{
    CHECK(dir && mc && out);
    *out = NULL;
    char path[PATH_MAX];
    int  len = snprintf(path, sizeof path, "%s/%s", dir, CKPT_ADAPTER_FILE);
    if (len < 0 || (size_t)len >= sizeof path) {
        log_error("ckpt_load_lora: checkpoint path '%.200s...' too long", dir);
        return ERR_ARG;
    }
    struct stat st;
    if (stat(path, &st) != 0 && errno == ENOENT) {
        log_info("ckpt_load_lora: '%s' has no adapters", dir);
        return ERR_NOTFOUND;
    }
    StFile *f = NULL;
    int     rc = st_open(path, &f);
    if (rc) return rc;
    LoraConfig lc;
    Lora      *lo = NULL;
    if ((rc = read_config(path, f, mc, &lc))) goto close_file;
    lo = lora_new(&lc, mc);
    rc = ckpt_lora_read(path, f, lo);
close_file:
    st_close(&f);
    if (rc)
        lora_free(&lo);
    else
        *out = lo;
    return rc;
}

void ckpt_lora_config_to_json(json_t *o, const LoraConfig *lc)
{
    char targets[64];
    lora_format_targets(lc->targets, targets, sizeof targets);
    json_object_set_new(o, CKPT_LORA_RANK_KEY, json_integer(lc->rank));
    json_object_set_new(o, CKPT_LORA_ALPHA_KEY, json_real(lc->alpha));
    json_object_set_new(o, CKPT_LORA_TARGETS_KEY, json_string(targets));
}

int ckpt_lora_config_from_json(const char *name, const char *text, const ModelConfig *mc,
                               LoraConfig *lc)
{
    json_error_t e;
    json_t      *o = json_loads(text ? text : "", 0, &e);
    int          rc = 0;
    char         why[160];
    if (!json_is_object(o)) {
        log_error("ckpt_lora_config_from_json: %s: config is not a JSON object", name);
        json_decref(o);
        return ERR_FORMAT;
    }
    const json_t *r = json_object_get(o, CKPT_LORA_RANK_KEY);
    const json_t *a = json_object_get(o, CKPT_LORA_ALPHA_KEY);
    const json_t *t = json_object_get(o, CKPT_LORA_TARGETS_KEY);
    if (!r && !a && !t) {
        rc = ERR_NOTFOUND;
    } else if (!json_is_integer(r) || !json_is_number(a) || !json_is_string(t) ||
               json_integer_value(r) < 1 || json_integer_value(r) > LORA_MAX_RANK) {
        log_error("ckpt_lora_config_from_json: %s: %s, %s and %s must be a rank in 1..%d, a "
                  "number and a target list",
                  name, CKPT_LORA_RANK_KEY, CKPT_LORA_ALPHA_KEY, CKPT_LORA_TARGETS_KEY,
                  LORA_MAX_RANK);
        rc = ERR_FORMAT;
    } else {
        lc->rank = (int)json_integer_value(r);
        lc->alpha = (float)json_number_value(a);
        if (lora_parse_targets(json_string_value(t), &lc->targets, why, sizeof why) ||
            lora_config_validate(lc, mc, why, sizeof why)) {
            log_error("ckpt_lora_config_from_json: %s: %s", name, why);
            rc = ERR_FORMAT;
        }
    }
    json_decref(o);
    return rc;
}
