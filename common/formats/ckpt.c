#include "tests/test_list.h"
#include "common/formats/ckpt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/log.h"
#include "common/base/rng.h"
#include "common/formats/safetensors.h"

/* config.json and trainer_state.json larger than this are not ours. */
#define CKPT_JSON_MAX_BYTES (16u << 20)
#define SAVE_ID_KEY "rlhf_save_id"
#define SAVE_ID_LEN 16 /* hex digits */

/* The only files a checkpoint directory may hold (besides fileio temp files). */
static const char *const k_ckpt_files[] = {CKPT_CONFIG_FILE, CKPT_MODEL_FILE, CKPT_OPTIM_FILE,
                                           CKPT_STATE_FILE};

/* Self-test hook: makes ckpt_save fail just before the swap, as a crash or a
 * full disk would, to show the old checkpoint survives. */
static bool g_fail_before_swap = false;

/* ---- paths ------------------------------------------------------------- */

/* Copies dir without trailing slashes into out and splits it into parent and
 * base name. Refuses "", "/" and over-long paths. */
static int split_dir(const char *fn, const char *dir, char *out, char *parent, const char **base)
{
    size_t n = strnlen(dir, PATH_MAX);
    while (n > 1 && dir[n - 1] == '/') n--;
    if (n == 0 || n >= PATH_MAX - 64 || (n == 1 && dir[0] == '/')) {
        log_error("%s: checkpoint directory '%.200s' is empty, '/' or too long", fn, dir);
        return ERR_ARG;
    }
    memcpy(out, dir, n);
    out[n] = '\0';
    char *slash = strrchr(out, '/');
    if (!slash) {
        snprintf(parent, PATH_MAX, ".");
        *base = out;
    } else {
        size_t p = slash == out ? 1 : (size_t)(slash - out);
        memcpy(parent, out, p);
        parent[p] = '\0';
        *base = slash + 1;
    }
    if (!strcmp(*base, ".") || !strcmp(*base, "..")) {
        log_error("%s: checkpoint directory '%s' must end in a name, not '%s'", fn, out, *base);
        return ERR_ARG;
    }
    return 0;
}

/* dir + "/" + name; dir was bounded by split_dir or is a temp name. */
static void join(char *out, const char *dir, const char *name)
{
    int n = snprintf(out, PATH_MAX, "%s/%s", dir, name);
    CHECK(n > 0 && n < PATH_MAX);
}

static bool is_ckpt_file(const char *name)
{
    for (size_t i = 0; i < sizeof k_ckpt_files / sizeof k_ckpt_files[0]; i++)
        if (!strcmp(name, k_ckpt_files[i])) return true;
    /* Litter of an interrupted fileio write: ".<name>.tmp-XXXXXX". */
    return name[0] == '.' && strstr(name, FILEIO_TMP_TAG) != NULL;
}

/* Whether dir may be replaced: absent (*exists false), or a real directory
 * holding only checkpoint files. */
static int check_replaceable(const char *dir, bool *exists)
{
    struct stat st;
    *exists = false;
    if (lstat(dir, &st) != 0) {
        if (errno == ENOENT) return 0;
        log_error("ckpt_save: stat '%s': %s", dir, strerror(errno));
        return ERR_IO;
    }
    if (!S_ISDIR(st.st_mode)) {
        log_error("ckpt_save: '%s' exists and is %s, expected a checkpoint directory", dir,
                  S_ISLNK(st.st_mode) ? "a symlink (save to its target instead)"
                                      : "not a directory");
        return ERR_ARG;
    }
    DIR *d = opendir(dir);
    if (!d) {
        log_error("ckpt_save: opendir '%s': %s", dir, strerror(errno));
        return ERR_IO;
    }
    int            rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (!is_ckpt_file(e->d_name)) {
            log_error("ckpt_save: refusing to replace '%s': it holds '%.200s', which is not a "
                      "checkpoint file",
                      dir, e->d_name);
            rc = ERR_ARG;
        }
    }
    closedir(d); /* read-only handle */
    *exists = true;
    return rc;
}

/* Deletes a replaced checkpoint directory: its checkpoint files, then the
 * directory. Anything else found there is left and reported; the new
 * checkpoint is already in place, so this cannot fail the save. */
static void remove_old_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        log_warn("ckpt_save: old checkpoint '%s' left in place: opendir: %s", dir, strerror(errno));
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (!is_ckpt_file(e->d_name) || unlinkat(dirfd(d), e->d_name, 0) != 0)
            log_warn("ckpt_save: left '%s/%.200s' of the old checkpoint in place", dir, e->d_name);
    }
    closedir(d);
    if (rmdir(dir) != 0)
        log_warn("ckpt_save: old checkpoint directory '%s' left in place: %s", dir,
                 strerror(errno));
}

/* ---- writing ----------------------------------------------------------- */

/* A random id for one save, as hex. Falls back to the clock if the kernel
 * has no entropy to give yet; uniqueness, not secrecy, is what matters. */
static void new_save_id(char out[SAVE_ID_LEN + 1])
{
    uint64_t x = 0;
    if (getrandom(&x, sizeof x, GRND_NONBLOCK) != (ssize_t)sizeof x) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        Rng r;
        rng_seed(&r,
                 (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ ((uint64_t)getpid() << 17));
        x = rng_u64(&r);
    }
    snprintf(out, SAVE_ID_LEN + 1, "%016llx", (unsigned long long)x);
}

/* The decimal form of x with the fewest digits that reads back as x, so
 * config.json says 1e-05 rather than 9.99999975e-06. */
static double shortest_decimal(float x)
{
    char buf[32];
    for (int p = 1; p < 9; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, (double)x);
        if ((float)strtod(buf, NULL) == x) return strtod(buf, NULL);
    }
    snprintf(buf, sizeof buf, "%.9g", (double)x);
    return strtod(buf, NULL);
}

static int write_json(const char *path, json_t *root, size_t flags)
{
    char *text = json_dumps(root, flags);
    if (!text) {
        log_error("ckpt_save: '%s': JSON cannot represent a value (NaN or infinity?)", path);
        return ERR_ARG;
    }
    size_t n = strlen(text);
    text = xrealloc(text, n + 2);
    text[n] = '\n';
    text[n + 1] = '\0';
    int rc = fileio_write_atomic(path, text, n + 1);
    free(text);
    return rc;
}

/* The config.json object of a model, without the save id. */
static json_t *config_object(const ModelConfig *c, const Tok *tok)
{
    json_t *o = json_object();
    CHECK(o);
    json_object_set_new(o, "architectures", json_pack("[s]", "LlamaForCausalLM"));
    json_object_set_new(o, "model_type", json_string("llama"));
    json_object_set_new(o, "hidden_size", json_integer(c->dim));
    json_object_set_new(o, "intermediate_size", json_integer(c->hidden_dim));
    json_object_set_new(o, "num_attention_heads", json_integer(c->n_heads));
    json_object_set_new(o, "num_hidden_layers", json_integer(c->n_layers));
    json_object_set_new(o, "num_key_value_heads", json_integer(c->n_kv_heads));
    json_object_set_new(o, "head_dim", json_integer(c->dim / c->n_heads));
    json_object_set_new(o, "vocab_size", json_integer(c->vocab_size));
    json_object_set_new(o, "max_position_embeddings", json_integer(c->max_seq_len));
    json_object_set_new(o, "rms_norm_eps", json_real(shortest_decimal(c->norm_eps)));
    json_object_set_new(o, "rope_theta", json_real(shortest_decimal(c->rope_theta)));
    json_object_set_new(o, "rope_scaling", json_null());
    json_object_set_new(o, "tie_word_embeddings", json_boolean(c->tie_embeddings));
    json_object_set_new(o, "attention_bias", json_false());
    json_object_set_new(o, "mlp_bias", json_false());
    json_object_set_new(o, "hidden_act", json_string("silu"));
    json_object_set_new(o, "torch_dtype", json_string("float32"));
    if (tok) {
        json_object_set_new(o, "bos_token_id", json_integer(TOK_BOS));
        json_object_set_new(o, "eos_token_id", json_integer(TOK_EOS));
        json_object_set_new(o, "pad_token_id", json_integer(TOK_PAD));
        json_object_set_new(o, "rlhf_tokenizer", json_string("char"));
        json_object_set_new(o, "rlhf_tokenizer_charset", json_string(tok_charset(tok)));
    }
    json_object_set_new(o, "rlhf_has_value_head", json_boolean(c->has_value_head));
    json_object_set_new(o, "rlhf_format_version", json_integer(CKPT_FORMAT_VERSION));
    return o;
}

/* Nine significant digits always reproduce a float; shortest_decimal has
 * already picked the shortest of those forms. */
#define CONFIG_JSON_FLAGS (JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(9))

static int write_config(const char *path, const ModelConfig *c, const Tok *tok, const char *save_id)
{
    json_t *o = config_object(c, tok);
    json_object_set_new(o, SAVE_ID_KEY, json_string(save_id));
    int rc = write_json(path, o, CONFIG_JSON_FLAGS);
    json_decref(o);
    return rc;
}

char *ckpt_config_to_json(const ModelConfig *c, const Tok *tok)
{
    json_t *o = config_object(c, tok);
    char   *text = json_dumps(o, CONFIG_JSON_FLAGS);
    json_decref(o);
    CHECK(text); /* only fails when out of memory */
    return text;
}

static int write_weights(const char *path, Model *m, const char *save_id)
{
    int          n = model_num_tensors(m);
    ModelTensor *mt = xcalloc((size_t)n, sizeof *mt);
    StTensor    *t = xcalloc((size_t)n, sizeof *t);
    for (int i = 0; i < n; i++) {
        model_tensor(m, i, &mt[i]);
        t[i].name = mt[i].name;
        t[i].data = mt[i].data;
        t[i].ndim = mt[i].ndim;
        t[i].shape[0] = mt[i].shape[0];
        t[i].shape[1] = mt[i].shape[1];
    }
    /* "format": "pt" is what Hugging Face loaders expect to find. */
    StMeta meta[2] = {{"format", "pt"}, {SAVE_ID_KEY, save_id}};
    int    rc = st_write(path, t, n, meta, 2);
    free(t);
    free(mt);
    return rc;
}

static int write_optim(const char *path, const CkptOptim *opt, const char *save_id)
{
    char step[32];
    snprintf(step, sizeof step, "%lld", (long long)opt->step);
    StTensor t[2] = {{"exp_avg", opt->exp_avg, 1, {(int64_t)opt->n}},
                     {"exp_avg_sq", opt->exp_avg_sq, 1, {(int64_t)opt->n}}};
    StMeta   meta[2] = {{"step", step}, {SAVE_ID_KEY, save_id}};
    return st_write(path, t, 2, meta, 2);
}

static int write_state(const char *path, const CkptTrainerState *ts, const char *save_id)
{
    json_t *o = json_pack("{s:I, s:I, s:s, s:i, s:s}", "step", (json_int_t)ts->step,
                          "policy_version", (json_int_t)ts->policy_version, "run_id", ts->run_id,
                          "rlhf_format_version", CKPT_FORMAT_VERSION, SAVE_ID_KEY, save_id);
    if (!o) {
        log_error("ckpt_save: '%s': run_id is not valid UTF-8", path);
        return ERR_ARG;
    }
    if (ts->extra) json_object_set(o, "extra", ts->extra);
    int rc = write_json(path, o, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(o);
    return rc;
}

/* Puts the complete new directory tmp at dir. On success *old is where the
 * replaced checkpoint now lives ("" if there was none), for deletion. */
static int swap_in(const char *tmp, const char *dir, const char *parent, const char *base,
                   bool exists, char *old)
{
    old[0] = '\0';
    if (!exists) {
        if (rename(tmp, dir) != 0) {
            log_error("ckpt_save: rename '%s' -> '%s': %s", tmp, dir, strerror(errno));
            return ERR_IO;
        }
        return 0;
    }
    /* One atomic step: readers see the old directory or the new one. */
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dir, RENAME_EXCHANGE) == 0) {
        snprintf(old, PATH_MAX, "%s", tmp);
        return 0;
    }
    if (errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP) {
        log_error("ckpt_save: exchange '%s' <-> '%s': %s", tmp, dir, strerror(errno));
        return ERR_IO;
    }
    /* No RENAME_EXCHANGE here: move the old one aside first. Until the
     * second rename the target is missing; a crash in between leaves the
     * old checkpoint inside the .old- directory and the new one in tmp. */
    log_warn("ckpt_save: '%s': filesystem lacks RENAME_EXCHANGE; replacing in two steps", dir);
    char holder[PATH_MAX], aside[PATH_MAX];
    int  n = snprintf(holder, sizeof holder, "%s/.%s.old-XXXXXX", parent, base);
    CHECK(n > 0 && n < PATH_MAX);
    if (!mkdtemp(holder)) {
        log_error("ckpt_save: mkdtemp '%s': %s", holder, strerror(errno));
        return ERR_IO;
    }
    join(aside, holder, "old");
    if (rename(dir, aside) != 0) {
        log_error("ckpt_save: rename '%s' -> '%s': %s", dir, aside, strerror(errno));
        rmdir(holder); /* empty; a failure only leaves an empty directory */
        return ERR_IO;
    }
    if (rename(tmp, dir) != 0) {
        log_error("ckpt_save: rename '%s' -> '%s': %s", tmp, dir, strerror(errno));
        if (rename(aside, dir) != 0)
            log_error("ckpt_save: could not restore '%s' from '%s': %s", dir, aside,
                      strerror(errno));
        else
            rmdir(holder);
        return ERR_IO;
    }
    snprintf(old, PATH_MAX, "%s", aside);
    return 0;
}

int ckpt_save(const char *dir_in, Model *m, const Tok *tok, const CkptOptim *opt,
              const CkptTrainerState *ts)
{
    CHECK(dir_in && m);
    const ModelConfig *cfg = model_config(m);
    char               dir[PATH_MAX], parent[PATH_MAX], tmp[PATH_MAX], path[PATH_MAX];
    char               old[PATH_MAX];
    const char        *base = NULL;
    int                rc = split_dir("ckpt_save", dir_in, dir, parent, &base);
    if (rc != 0) return rc;
    if (opt) {
        CHECK(opt->exp_avg && opt->exp_avg_sq);
        if (opt->n != model_num_params(m) || opt->step < 0) {
            log_error("ckpt_save: '%s': optimizer state of %zu floats at step %lld, expected "
                      "%zu floats (the model's parameters) and step >= 0",
                      dir, opt->n, (long long)opt->step, model_num_params(m));
            return ERR_ARG;
        }
    }
    if (tok && tok_vocab_size(tok) > cfg->vocab_size) {
        log_error("ckpt_save: '%s': tokenizer vocabulary %d exceeds the model's vocab_size %d", dir,
                  tok_vocab_size(tok), cfg->vocab_size);
        return ERR_ARG;
    }
    if (ts) {
        CHECK(memchr(ts->run_id, '\0', sizeof ts->run_id));
        if (ts->step < 0 || ts->policy_version < 0 || (ts->extra && !json_is_object(ts->extra))) {
            log_error("ckpt_save: '%s': trainer state step %lld, policy version %lld, extra %s; "
                      "expected non-negative counts and an object or NULL",
                      dir, (long long)ts->step, (long long)ts->policy_version,
                      ts->extra ? (json_is_object(ts->extra) ? "object" : "not an object")
                                : "NULL");
            return ERR_ARG;
        }
    }
    bool exists = false;
    if ((rc = check_replaceable(dir, &exists)) != 0) return rc;

    int n = snprintf(tmp, sizeof tmp, "%s/.%s" FILEIO_TMP_TAG "XXXXXX", parent, base);
    CHECK(n > 0 && (size_t)n < sizeof tmp);
    if (!mkdtemp(tmp)) {
        log_error("ckpt_save: mkdtemp '%s': %s", tmp, strerror(errno));
        return ERR_IO;
    }
    /* mkdtemp makes it 0700; the checkpoint is for other processes to read. */
    if (chmod(tmp, 0755) != 0) {
        log_error("ckpt_save: chmod '%s': %s", tmp, strerror(errno));
        rc = ERR_IO;
        goto remove_tmp;
    }
    char save_id[SAVE_ID_LEN + 1];
    new_save_id(save_id);
    /* Inside the private directory order does not matter for readers; the
     * config goes last anyway so a stale temp directory without one is
     * plainly incomplete. */
    join(path, tmp, CKPT_MODEL_FILE);
    if ((rc = write_weights(path, m, save_id)) != 0) goto remove_tmp;
    if (opt) {
        join(path, tmp, CKPT_OPTIM_FILE);
        if ((rc = write_optim(path, opt, save_id)) != 0) goto remove_tmp;
    }
    if (ts) {
        join(path, tmp, CKPT_STATE_FILE);
        if ((rc = write_state(path, ts, save_id)) != 0) goto remove_tmp;
    }
    join(path, tmp, CKPT_CONFIG_FILE);
    if ((rc = write_config(path, cfg, tok, save_id)) != 0) goto remove_tmp;
    if (g_fail_before_swap) {
        log_error("ckpt_save: '%s': failing before the swap (self-test hook)", dir);
        rc = ERR_IO;
        goto remove_tmp;
    }
    if ((rc = swap_in(tmp, dir, parent, base, exists, old)) != 0) goto remove_tmp;
    /* The swap is durable only once the parent directory is on disk. */
    rc = fileio_fsync_dir(parent);
    if (old[0]) remove_old_dir(old);
    if (old[0] && strcmp(old, tmp) != 0) {
        /* Two-step fallback: old was holder/old; drop the holder too. */
        char *slash = strrchr(old, '/');
        *slash = '\0';
        rmdir(old); /* empty by now unless remove_old_dir warned */
    }
    if (rc == 0) log_info("ckpt_save: wrote '%s' (save %s)", dir, save_id);
    return rc;
remove_tmp:
    /* tmp is our private directory, so removing all of it is safe. */
    fileio_remove_tree(tmp);
    return rc;
}

bool ckpt_exists(const char *dir)
{
    char        path[PATH_MAX];
    struct stat st;
    int         n = snprintf(path, sizeof path, "%s/%s", dir, CKPT_CONFIG_FILE);
    return n > 0 && (size_t)n < sizeof path && stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* ---- reading ----------------------------------------------------------- */

/* Reads and parses a JSON object file. quiet_missing: ERR_NOTFOUND is only
 * logged at info level. */
static int read_json(const char *fn, const char *dir, const char *file, bool quiet_missing,
                     json_t **out, char *path)
{
    *out = NULL;
    int n = snprintf(path, PATH_MAX, "%s/%s", dir, file);
    if (n < 0 || n >= PATH_MAX) {
        log_error("%s: checkpoint path '%.200s...' too long", fn, dir);
        return ERR_ARG;
    }
    char  *text = NULL;
    size_t len = 0;
    int    rc = fileio_read_all(path, CKPT_JSON_MAX_BYTES, true, &text, &len);
    if (rc == ERR_NOTFOUND) {
        if (quiet_missing)
            log_info("%s: '%s' has no %s", fn, dir, file);
        else
            log_error("%s: '%s' does not exist", fn, path);
        return rc;
    }
    if (rc != 0) return rc;
    json_error_t jerr;
    json_t      *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!root || !json_is_object(root)) {
        if (root)
            log_error("%s: '%s': top level is not a JSON object", fn, path);
        else
            log_error("%s: '%s': invalid JSON (line %d, column %d): %s", fn, path, jerr.line,
                      jerr.column, jerr.text);
        json_decref(root);
        return ERR_FORMAT;
    }
    *out = root;
    return 0;
}

/* Integer field in [lo, hi]. A missing key takes def when not required. */
static int get_int(const char *fn, const char *path, const json_t *o, const char *key,
                   bool required, long long def, long long lo, long long hi, long long *out)
{
    const json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        if (required) {
            log_error("%s: '%s': missing key '%s'", fn, path, key);
            return ERR_FORMAT;
        }
        *out = def;
        return 0;
    }
    if (!json_is_integer(v)) {
        log_error("%s: '%s': '%s' is not an integer", fn, path, key);
        return ERR_FORMAT;
    }
    long long x = json_integer_value(v);
    if (x < lo || x > hi) {
        log_error("%s: '%s': '%s' is %lld, expected %lld..%lld", fn, path, key, x, lo, hi);
        return ERR_RANGE;
    }
    *out = x;
    return 0;
}

static int get_float(const char *fn, const char *path, const json_t *o, const char *key,
                     bool required, float def, float *out)
{
    const json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        if (required) {
            log_error("%s: '%s': missing key '%s'", fn, path, key);
            return ERR_FORMAT;
        }
        *out = def;
        return 0;
    }
    if (!json_is_number(v)) {
        log_error("%s: '%s': '%s' is not a number", fn, path, key);
        return ERR_FORMAT;
    }
    double x = json_number_value(v);
    if (!isfinite(x) || fabs(x) > 3.0e38) {
        log_error("%s: '%s': '%s' is %g, expected a finite float", fn, path, key, x);
        return ERR_RANGE;
    }
    *out = (float)x;
    return 0;
}

static int get_bool(const char *fn, const char *path, const json_t *o, const char *key, bool def,
                    bool *out)
{
    const json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_boolean(v)) {
        log_error("%s: '%s': '%s' is not true or false", fn, path, key);
        return ERR_FORMAT;
    }
    *out = json_is_true(v);
    return 0;
}

/* A string field's value, or NULL (after logging) when missing or not a string. */
static const char *get_string(const char *fn, const char *path, const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    if (!json_is_string(v)) {
        log_error("%s: '%s': '%s' is %s, expected a string", fn, path, key,
                  v ? "not a string" : "missing");
        return NULL;
    }
    return json_string_value(v);
}

/* Refuses configs asking for features the model lacks. */
static int check_supported(const char *fn, const char *path, const json_t *o)
{
    const char *type = get_string(fn, path, o, "model_type");
    if (!type) return ERR_FORMAT;
    if (strcmp(type, "llama") != 0) {
        log_error("%s: '%s': model_type '%.64s', expected 'llama'", fn, path, type);
        return ERR_UNSUPPORTED;
    }
    const json_t *act = json_object_get(o, "hidden_act");
    if (act && !(json_is_string(act) && !strcmp(json_string_value(act), "silu"))) {
        log_error("%s: '%s': hidden_act is not 'silu'", fn, path);
        return ERR_UNSUPPORTED;
    }
    const json_t *scaling = json_object_get(o, "rope_scaling");
    if (scaling && !json_is_null(scaling)) {
        log_error("%s: '%s': rope_scaling is set; only plain RoPE is supported", fn, path);
        return ERR_UNSUPPORTED;
    }
    const char *biases[] = {"attention_bias", "mlp_bias"};
    for (int i = 0; i < 2; i++) {
        bool b = false;
        int  rc = get_bool(fn, path, o, biases[i], false, &b);
        if (rc != 0) return rc;
        if (b) {
            log_error("%s: '%s': %s is true; the model has no biases", fn, path, biases[i]);
            return ERR_UNSUPPORTED;
        }
    }
    long long version = 0;
    int       rc = get_int(fn, path, o, "rlhf_format_version", false, 0, 0, LLONG_MAX, &version);
    if (rc != 0) return rc;
    if (version > CKPT_FORMAT_VERSION) {
        log_error("%s: '%s': rlhf_format_version %lld, this build reads up to %d", fn, path,
                  version, CKPT_FORMAT_VERSION);
        return ERR_UNSUPPORTED;
    }
    return 0;
}

/* config.json's object -> ModelConfig, validated. */
static int parse_config(const char *fn, const char *path, const json_t *o, ModelConfig *cfg)
{
    int rc = check_supported(fn, path, o);
    if (rc != 0) return rc;
    long long dim, hidden, heads, layers, kv, vocab, seq;
    if ((rc = get_int(fn, path, o, "hidden_size", true, 0, 1, INT_MAX, &dim)) ||
        (rc = get_int(fn, path, o, "intermediate_size", true, 0, 1, INT_MAX, &hidden)) ||
        (rc = get_int(fn, path, o, "num_attention_heads", true, 0, 1, INT_MAX, &heads)) ||
        (rc = get_int(fn, path, o, "num_hidden_layers", true, 0, 1, INT_MAX, &layers)) ||
        (rc = get_int(fn, path, o, "num_key_value_heads", false, heads, 1, INT_MAX, &kv)) ||
        (rc = get_int(fn, path, o, "vocab_size", true, 0, 1, INT_MAX, &vocab)) ||
        (rc = get_int(fn, path, o, "max_position_embeddings", true, 0, 1, INT_MAX, &seq)))
        return rc;
    memset(cfg, 0, sizeof *cfg);
    cfg->dim = (int)dim;
    cfg->hidden_dim = (int)hidden;
    cfg->n_heads = (int)heads;
    cfg->n_layers = (int)layers;
    cfg->n_kv_heads = (int)kv;
    cfg->vocab_size = (int)vocab;
    cfg->max_seq_len = (int)seq;
    if ((rc = get_float(fn, path, o, "rms_norm_eps", true, 0, &cfg->norm_eps)) ||
        (rc = get_float(fn, path, o, "rope_theta", false, 10000.0f, &cfg->rope_theta)) ||
        (rc = get_bool(fn, path, o, "tie_word_embeddings", false, &cfg->tie_embeddings)) ||
        (rc = get_bool(fn, path, o, "rlhf_has_value_head", false, &cfg->has_value_head)))
        return rc;
    char why[160];
    if (model_config_validate(cfg, why, sizeof why) != 0) {
        log_error("%s: '%s': config refused: %s", fn, path, why);
        return ERR_RANGE;
    }
    /* Checked after validation, which guarantees heads divides dim. */
    long long head_dim;
    rc = get_int(fn, path, o, "head_dim", false, dim / heads, 1, INT_MAX, &head_dim);
    if (rc != 0) return rc;
    if (head_dim != dim / heads) {
        log_error("%s: '%s': head_dim %lld, expected hidden_size / num_attention_heads = %lld", fn,
                  path, head_dim, dim / heads);
        return ERR_UNSUPPORTED;
    }
    return 0;
}

int ckpt_config_from_json(const char *what, const char *text, ModelConfig *cfg, int *eos_id)
{
    CHECK(what && text && cfg);
    json_error_t jerr;
    json_t      *o = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (!o || !json_is_object(o)) {
        if (o)
            log_error("ckpt_config_from_json: %s: top level is not a JSON object", what);
        else
            log_error("ckpt_config_from_json: %s: invalid JSON (line %d, column %d): %s", what,
                      jerr.line, jerr.column, jerr.text);
        json_decref(o);
        return ERR_FORMAT;
    }
    int rc = parse_config("ckpt_config_from_json", what, o, cfg);
    if (rc == 0 && eos_id) {
        long long eos;
        rc = get_int("ckpt_config_from_json", what, o, "eos_token_id", false, TOK_EOS, 0,
                     cfg->vocab_size - 1, &eos);
        if (rc == 0) *eos_id = (int)eos;
    }
    json_decref(o);
    return rc;
}

int ckpt_load_config(const char *dir, ModelConfig *cfg)
{
    CHECK(dir && cfg);
    char    path[PATH_MAX];
    json_t *o = NULL;
    int     rc = read_json("ckpt_load_config", dir, CKPT_CONFIG_FILE, false, &o, path);
    if (rc != 0) return rc;
    rc = parse_config("ckpt_load_config", path, o, cfg);
    json_decref(o);
    return rc;
}

int ckpt_load_tok(const char *dir, Tok **out)
{
    CHECK(dir && out);
    *out = NULL;
    const char *fn = "ckpt_load_tok";
    char        path[PATH_MAX];
    json_t     *o = NULL;
    int         rc = read_json(fn, dir, CKPT_CONFIG_FILE, false, &o, path);
    if (rc != 0) return rc;
    const json_t *cs = json_object_get(o, "rlhf_tokenizer_charset");
    const json_t *kind = json_object_get(o, "rlhf_tokenizer");
    long long     vocab = 0, ids[3];
    const char   *id_keys[3] = {"pad_token_id", "bos_token_id", "eos_token_id"};
    char          why[160];
    if (!cs) {
        log_error("%s: '%s': no rlhf_tokenizer_charset (not saved by rlhf.c?)", fn, path);
        rc = ERR_NOTFOUND;
        goto done;
    }
    if (kind && !(json_is_string(kind) && !strcmp(json_string_value(kind), "char"))) {
        log_error("%s: '%s': rlhf_tokenizer is not 'char'", fn, path);
        rc = ERR_UNSUPPORTED;
        goto done;
    }
    if (!json_is_string(cs) || tok_charset_validate(json_string_value(cs), why, sizeof why) != 0) {
        log_error("%s: '%s': rlhf_tokenizer_charset: %s", fn, path,
                  json_is_string(cs) ? why : "not a string");
        rc = ERR_FORMAT;
        goto done;
    }
    for (int i = 0; i < 3; i++) {
        if ((rc = get_int(fn, path, o, id_keys[i], false, i, 0, INT_MAX, &ids[i])) != 0) goto done;
        if (ids[i] != i) { /* TOK_PAD, TOK_BOS, TOK_EOS are 0, 1, 2 */
            log_error("%s: '%s': %s is %lld, the character tokenizer's is %d", fn, path, id_keys[i],
                      ids[i], i);
            rc = ERR_FORMAT;
            goto done;
        }
    }
    if ((rc = get_int(fn, path, o, "vocab_size", true, 0, 1, INT_MAX, &vocab)) != 0) goto done;
    Tok *t = tok_new(json_string_value(cs));
    CHECK(t); /* the charset was validated above */
    if (tok_vocab_size(t) > vocab) {
        log_error("%s: '%s': tokenizer vocabulary %d exceeds vocab_size %lld", fn, path,
                  tok_vocab_size(t), vocab);
        tok_free(&t);
        rc = ERR_MISMATCH;
        goto done;
    }
    *out = t;
done:
    json_decref(o);
    return rc;
}

/* Names the first config field where the checkpoint and the model differ. */
static int compare_config(const char *path, const ModelConfig *ck, const ModelConfig *mc)
{
    struct {
        const char *key;
        long long   ck, model;
    } ints[] = {
        {"hidden_size", ck->dim, mc->dim},
        {"num_hidden_layers", ck->n_layers, mc->n_layers},
        {"num_attention_heads", ck->n_heads, mc->n_heads},
        {"num_key_value_heads", ck->n_kv_heads, mc->n_kv_heads},
        {"intermediate_size", ck->hidden_dim, mc->hidden_dim},
        {"vocab_size", ck->vocab_size, mc->vocab_size},
        {"tie_word_embeddings", ck->tie_embeddings, mc->tie_embeddings},
        {"rlhf_has_value_head", ck->has_value_head, mc->has_value_head},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        if (ints[i].ck == ints[i].model) continue;
        if (i >= 6) /* the two booleans */
            log_error("ckpt_load: '%s': %s is %s, the model's is %s", path, ints[i].key,
                      ints[i].ck ? "true" : "false", ints[i].model ? "true" : "false");
        else
            log_error("ckpt_load: '%s': %s is %lld, the model's is %lld", path, ints[i].key,
                      ints[i].ck, ints[i].model);
        return ERR_MISMATCH;
    }
    /* Not shapes, but the same weights under another theta or epsilon
     * compute a different function. */
    if (ck->rope_theta != mc->rope_theta || ck->norm_eps != mc->norm_eps) {
        log_error("ckpt_load: '%s': rope_theta %g and rms_norm_eps %g, the model's are %g and %g",
                  path, (double)ck->rope_theta, (double)ck->norm_eps, (double)mc->rope_theta,
                  (double)mc->norm_eps);
        return ERR_MISMATCH;
    }
    return 0;
}

/* Appends "'name'" to a bounded list for a log line. */
static void list_add(char *buf, size_t len, int *count, const char *name)
{
    size_t k = strlen(buf);
    if (*count < 4 && k < len)
        snprintf(buf + k, len - k, "%s'%s'", *count ? ", " : "", name);
    else if (*count == 4 && k < len)
        snprintf(buf + k, len - k, ", ...");
    (*count)++;
}

/* Checks every tensor of f against the model before anything is copied. */
static int check_tensors(const char *path, StFile *f, Model *m)
{
    char missing[512] = "", extra[512] = "";
    int  n_missing = 0, n_extra = 0;
    for (int i = 0; i < model_num_tensors(m); i++) {
        ModelTensor mt;
        model_tensor(m, i, &mt);
        int j = st_find(f, mt.name);
        if (j < 0) {
            list_add(missing, sizeof missing, &n_missing, mt.name);
            continue;
        }
        StInfo info;
        st_info_at(f, j, &info);
        bool same = info.ndim == mt.ndim && info.shape[0] == mt.shape[0] &&
                    (mt.ndim == 1 || info.shape[1] == mt.shape[1]);
        if (!same) {
            char got[64] = "";
            for (int d = 0; d < info.ndim && d < 3; d++)
                snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", d ? ", " : "",
                         (long long)info.shape[d]);
            log_error("ckpt_load: '%s': tensor '%s' has shape [%s%s], the model's is [%lld%s%lld]",
                      path, mt.name, got, info.ndim > 3 ? ", ..." : "", (long long)mt.shape[0],
                      mt.ndim == 2 ? ", " : "", mt.ndim == 2 ? (long long)mt.shape[1] : 0LL);
            return ERR_MISMATCH;
        }
        if (strcmp(info.dtype, "F32") && strcmp(info.dtype, "F16") && strcmp(info.dtype, "BF16")) {
            log_error("ckpt_load: '%s': tensor '%s' has dtype %s, expected F32, F16 or BF16", path,
                      mt.name, info.dtype);
            return ERR_MISMATCH;
        }
    }
    for (int j = 0; j < st_count(f); j++) {
        StInfo      info;
        ModelTensor mt;
        st_info_at(f, j, &info);
        if (model_find_tensor(m, info.name, &mt) != 0)
            list_add(extra, sizeof extra, &n_extra, info.name);
    }
    if (n_missing) {
        log_error("ckpt_load: '%s': %d model tensor%s missing: %s", path, n_missing,
                  n_missing > 1 ? "s" : "", missing);
        return ERR_NOTFOUND;
    }
    if (n_extra) {
        log_error("ckpt_load: '%s': %d unexpected tensor%s the model does not have: %s", path,
                  n_extra, n_extra > 1 ? "s" : "", extra);
        return ERR_MISMATCH;
    }
    return 0;
}

/* Index of the first non-finite value, or -1. */
static long long first_nonfinite(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return (long long)i;
    return -1;
}

int ckpt_load(const char *dir, Model *m)
{
    CHECK(dir && m);
    char    cpath[PATH_MAX], wpath[PATH_MAX];
    json_t *o = NULL;
    int     rc = read_json("ckpt_load", dir, CKPT_CONFIG_FILE, false, &o, cpath);
    if (rc != 0) return rc;
    ModelConfig cfg;
    char        cfg_id[SAVE_ID_LEN + 1] = "";
    rc = parse_config("ckpt_load", cpath, o, &cfg);
    const json_t *id = json_object_get(o, SAVE_ID_KEY);
    if (json_is_string(id)) snprintf(cfg_id, sizeof cfg_id, "%s", json_string_value(id));
    json_decref(o);
    if (rc != 0) return rc;
    if ((rc = compare_config(cpath, &cfg, model_config(m))) != 0) return rc;

    join(wpath, dir, CKPT_MODEL_FILE);
    StFile *f = NULL;
    if ((rc = st_open(wpath, &f)) != 0) return rc;
    const char *w_id = st_meta_get(f, SAVE_ID_KEY);
    if ((cfg_id[0] || w_id) && !(w_id && !strcmp(cfg_id, w_id))) {
        log_warn("ckpt_load: '%s': config.json is from save '%s' but the weights from save '%s' "
                 "(replaced while loading?)",
                 dir, cfg_id[0] ? cfg_id : "none", w_id ? w_id : "none");
        rc = ERR_AGAIN;
        goto close_file;
    }
    if ((rc = check_tensors(wpath, f, m)) != 0) goto close_file;
    for (int i = 0; i < model_num_tensors(m) && rc == 0; i++) {
        ModelTensor mt;
        model_tensor(m, i, &mt);
        if ((rc = st_read_f32(f, mt.name, mt.data, mt.ndim, mt.shape)) != 0) break;
        long long bad = first_nonfinite(mt.data, mt.numel);
        if (bad >= 0) {
            log_error("ckpt_load: '%s': tensor '%s' element %lld is %g", wpath, mt.name, bad,
                      (double)mt.data[bad]);
            rc = ERR_NONFINITE;
        }
    }
close_file:
    st_close(&f);
    return rc;
}

int ckpt_load_optim(const char *dir, float *exp_avg, float *exp_avg_sq, size_t n, int64_t *step)
{
    CHECK(dir && exp_avg && exp_avg_sq && step);
    char path[PATH_MAX];
    int  len = snprintf(path, sizeof path, "%s/%s", dir, CKPT_OPTIM_FILE);
    if (len < 0 || (size_t)len >= sizeof path) {
        log_error("ckpt_load_optim: checkpoint path '%.200s...' too long", dir);
        return ERR_ARG;
    }
    struct stat st;
    if (stat(path, &st) != 0 && errno == ENOENT) {
        log_info("ckpt_load_optim: '%s' has no optimizer state", dir);
        return ERR_NOTFOUND;
    }
    StFile *f = NULL;
    int     rc = st_open(path, &f);
    if (rc != 0) return rc;
    const char *s = st_meta_get(f, "step");
    char       *end = NULL;
    errno = 0;
    long long v = s ? strtoll(s, &end, 10) : -1;
    if (!s || errno || end == s || *end || v < 0) {
        log_error("ckpt_load_optim: '%s': step is '%.32s', expected a non-negative integer", path,
                  s ? s : "(missing)");
        rc = ERR_FORMAT;
        goto close_file;
    }
    *step = v;
    const char *names[2] = {"exp_avg", "exp_avg_sq"};
    float      *dst[2] = {exp_avg, exp_avg_sq};
    if (st_count(f) != 2) {
        log_error("ckpt_load_optim: '%s': %d tensors, expected exp_avg and exp_avg_sq", path,
                  st_count(f));
        rc = ERR_FORMAT;
        goto close_file;
    }
    for (int k = 0; k < 2; k++) {
        int j = st_find(f, names[k]);
        if (j < 0) {
            log_error("ckpt_load_optim: '%s': no tensor '%s'", path, names[k]);
            rc = ERR_FORMAT;
            goto close_file;
        }
        StInfo info;
        st_info_at(f, j, &info);
        if (info.ndim != 1 || (size_t)info.shape[0] != n) {
            log_error("ckpt_load_optim: '%s': '%s' holds %zu values, the model has %zu parameters",
                      path, names[k], info.numel, n);
            rc = ERR_MISMATCH;
            goto close_file;
        }
        if ((rc = st_read_f32(f, names[k], dst[k], 1, (int64_t[]){(int64_t)n})) != 0)
            goto close_file;
        long long bad = first_nonfinite(dst[k], n);
        if (bad >= 0) {
            log_error("ckpt_load_optim: '%s': %s[%lld] is %g", path, names[k], bad,
                      (double)dst[k][bad]);
            rc = ERR_NONFINITE;
            goto close_file;
        }
    }
    /* A negative second moment would put NaN into the next update. */
    for (size_t i = 0; i < n; i++) {
        if (exp_avg_sq[i] < 0.0f) {
            log_error("ckpt_load_optim: '%s': exp_avg_sq[%zu] is %g, expected >= 0", path, i,
                      (double)exp_avg_sq[i]);
            rc = ERR_RANGE;
            goto close_file;
        }
    }
close_file:
    st_close(&f);
    return rc;
}

int ckpt_load_trainer_state(const char *dir, CkptTrainerState *out)
{
    CHECK(dir && out);
    const char *fn = "ckpt_load_trainer_state";
    memset(out, 0, sizeof *out);
    char    path[PATH_MAX];
    json_t *o = NULL;
    int     rc = read_json(fn, dir, CKPT_STATE_FILE, true, &o, path);
    if (rc != 0) return rc;
    long long   step, version;
    const char *run_id = NULL;
    if ((rc = get_int(fn, path, o, "step", true, 0, 0, LLONG_MAX, &step)) ||
        (rc = get_int(fn, path, o, "policy_version", true, 0, 0, LLONG_MAX, &version)))
        goto done;
    if (!(run_id = get_string(fn, path, o, "run_id"))) {
        rc = ERR_FORMAT;
        goto done;
    }
    if (strlen(run_id) >= CKPT_RUN_ID_MAX) {
        log_error("%s: '%s': run_id of %zu bytes, limit %d", fn, path, strlen(run_id),
                  CKPT_RUN_ID_MAX - 1);
        rc = ERR_FORMAT;
        goto done;
    }
    json_t *extra = json_object_get(o, "extra");
    if (extra && !json_is_null(extra) && !json_is_object(extra)) {
        log_error("%s: '%s': 'extra' is not an object", fn, path);
        rc = ERR_FORMAT;
        goto done;
    }
    out->step = step;
    out->policy_version = version;
    snprintf(out->run_id, sizeof out->run_id, "%s", run_id);
    out->extra = json_is_object(extra) ? json_incref(extra) : NULL;
done:
    json_decref(o);
    return rc;
}

/* ---- self-test --------------------------------------------------------- */

typedef struct {
    bool verbose;
    int  checks;
    int  fails;
    char root[64];      /* the test's temp directory */
    char ck[PATH_MAX];  /* root/ck, the checkpoint under test */
    char bad[PATH_MAX]; /* root/bad, hand-edited checkpoints */
} TestCtx;

/* Runs call with stderr captured and expects return code want and a logged
 * line containing text. */
#define EXPECT_REFUSED(t, label, want, text, call)                                                 \
    do {                                                                                           \
        (t)->checks++;                                                                             \
        fileio_capture_begin();                                                                    \
        int   rc_ = (call);                                                                        \
        char *log_ = fileio_capture_end((t)->verbose);                                             \
        bool  has_ = strstr(log_, (text)) != NULL;                                                 \
        if (rc_ != (want) || !has_) {                                                              \
            fprintf(stderr, "ckpt_selftest: %s: returned %d (%s), expected %d; log %s '%s'\n",     \
                    (label), rc_, err_str(rc_), (want), has_ ? "has" : "lacks", (text));           \
            (t)->fails++;                                                                          \
        }                                                                                          \
        free(log_);                                                                                \
    } while (0)

static void expect(TestCtx *t, bool ok, const char *what)
{
    t->checks++;
    if (!ok) {
        fprintf(stderr, "ckpt_selftest: %s\n", what);
        t->fails++;
    }
}

static ModelConfig test_config(bool tied, bool value_head)
{
    ModelConfig c = {.dim = 16,
                     .n_layers = 2,
                     .n_heads = 4,
                     .n_kv_heads = 2,
                     .hidden_dim = 40,
                     .vocab_size = 90,
                     .max_seq_len = 32,
                     .rope_theta = 10000.0f,
                     .norm_eps = 1e-5f,
                     .tie_embeddings = tied,
                     .has_value_head = value_head};
    return c;
}

/* model_init_random plus noise on every parameter, so that norm gains and
 * the value head differ between seeds too. */
static Model *random_model(const ModelConfig *c, uint64_t seed)
{
    Model *m = model_new(c);
    model_init_random(m, seed, 0.02f);
    Rng r;
    rng_seed(&r, seed ^ 0x5eedULL);
    float *p = model_params(m);
    for (size_t i = 0; i < model_num_params(m); i++) p[i] += 0.01f * rng_normal(&r);
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

static bool same_params(Model *a, Model *b)
{
    return model_num_params(a) == model_num_params(b) &&
           !memcmp(model_params(a), model_params(b), model_num_params(a) * sizeof(float));
}

/* Names in dir other than . and .., sorted and joined with spaces. */
static void list_dir(const char *dir, char *out, size_t len)
{
    char           names[16][64];
    int            n = 0;
    DIR           *d = opendir(dir);
    struct dirent *e;
    out[0] = '\0';
    if (!d) return;
    while ((e = readdir(d)) && n < 16)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            snprintf(names[n++], sizeof names[0], "%.63s", e->d_name);
    closedir(d);
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            char tmp[64];
            memcpy(tmp, names[j], 64);
            memcpy(names[j], names[j - 1], 64);
            memcpy(names[j - 1], tmp, 64);
        }
    for (int i = 0; i < n; i++)
        snprintf(out + strlen(out), len - strlen(out), "%s%s", i ? " " : "", names[i]);
}

static void test_round_trips(TestCtx *t, const Tok *tok)
{
    Rng r;
    rng_seed(&r, 99);
    for (int v = 0; v < 4; v++) {
        bool        tied = v & 1, value_head = v & 2;
        ModelConfig c = test_config(tied, value_head);
        Model      *m = random_model(&c, 100 + (uint64_t)v);
        size_t      n = model_num_params(m);
        float      *mo = xmalloc(4 * n * sizeof(float)), *vo = mo + n, *mo2 = mo + 2 * n,
              *vo2 = mo + 3 * n;
        for (size_t i = 0; i < n; i++) {
            mo[i] = 1e-3f * rng_normal(&r);
            vo[i] = 1e-6f * fabsf(rng_normal(&r));
        }
        CkptOptim        opt = {mo, vo, n, 1000 + v};
        CkptTrainerState ts = {.step = 50 + v, .policy_version = 7 + v, .run_id = "run-abc"};
        ts.extra =
            json_pack("{s:f, s:s, s:{s:[i,i]}}", "lr", 0.001, "note", "hi", "nested", "a", 1, 2);
        char label[96];
        snprintf(label, sizeof label, "round trip (%s, %s value head)", tied ? "tied" : "untied",
                 value_head ? "with" : "without");

        ModelConfig      c2;
        Model           *m2 = NULL;
        Tok             *tok2 = NULL;
        CkptTrainerState ts2 = {0};
        int64_t          step2 = -1;
        bool             ok = ckpt_save(t->ck, m, tok, &opt, &ts) == 0 && ckpt_exists(t->ck) &&
                  ckpt_load_config(t->ck, &c2) == 0 && same_config(&c, &c2);
        if (ok) {
            m2 = model_new(&c2);
            ok = ckpt_load(t->ck, m2) == 0 && same_params(m, m2) &&
                 model_num_tensors(m2) == model_num_tensors(m);
        }
        ok = ok && ckpt_load_optim(t->ck, mo2, vo2, n, &step2) == 0 && step2 == opt.step &&
             !memcmp(mo, mo2, n * sizeof(float)) && !memcmp(vo, vo2, n * sizeof(float));
        ok = ok && ckpt_load_trainer_state(t->ck, &ts2) == 0 && ts2.step == ts.step &&
             ts2.policy_version == ts.policy_version && !strcmp(ts2.run_id, ts.run_id) &&
             json_equal(ts.extra, ts2.extra);
        ok = ok && ckpt_load_tok(t->ck, &tok2) == 0 && !strcmp(tok_charset(tok2), tok_charset(tok));
        expect(t, ok, label);
        if (t->verbose)
            printf("  ckpt: %-40s %zu params, %d tensors: %s\n", label, n, model_num_tensors(m),
                   ok ? "bit-identical" : "DIFFERENT");
        json_decref(ts.extra);
        json_decref(ts2.extra);
        tok_free(&tok2);
        model_free(&m2);
        model_free(&m);
        free(mo);
    }
    /* Every save replaced the previous one whole: one directory, four files. */
    char names[512];
    list_dir(t->root, names, sizeof names);
    expect(t, !strcmp(names, "ck"), "round trips left temp directories behind");
    struct stat st;
    expect(t, stat(t->ck, &st) == 0 && (st.st_mode & 0777) == 0755,
           "checkpoint directory is not mode 0755");
    list_dir(t->ck, names, sizeof names);
    expect(t,
           !strcmp(names, "config.json model.safetensors optimizer.safetensors "
                          "trainer_state.json"),
           "checkpoint holds unexpected files");
}

static void test_replace(TestCtx *t)
{
    ModelConfig c = test_config(false, true);
    Model      *a = random_model(&c, 1), *b = random_model(&c, 2), *x = model_new(&c);
    char        names[512];

    /* A save without optimizer or trainer state leaves none of the old ones. */
    expect(t, ckpt_save(t->ck, a, NULL, NULL, NULL) == 0, "save A failed");
    int64_t step;
    float   dummy[1];
    EXPECT_REFUSED(t, "stale optimizer state", ERR_NOTFOUND, "",
                   ckpt_load_optim(t->ck, dummy, dummy, 1, &step));
    CkptTrainerState ts;
    EXPECT_REFUSED(t, "stale trainer state", ERR_NOTFOUND, "", ckpt_load_trainer_state(t->ck, &ts));
    Tok *tok = NULL;
    EXPECT_REFUSED(t, "no tokenizer saved", ERR_NOTFOUND, "no rlhf_tokenizer_charset",
                   ckpt_load_tok(t->ck, &tok));
    list_dir(t->ck, names, sizeof names);
    expect(t, !strcmp(names, "config.json model.safetensors"), "old optional files survived");

    /* A save that fails before the swap leaves the old checkpoint. */
    g_fail_before_swap = true;
    EXPECT_REFUSED(t, "failed save", ERR_IO, "self-test hook",
                   ckpt_save(t->ck, b, NULL, NULL, NULL));
    g_fail_before_swap = false;
    expect(t, ckpt_load(t->ck, x) == 0 && same_params(x, a),
           "old checkpoint lost by a failed save");
    list_dir(t->root, names, sizeof names);
    expect(t, !strcmp(names, "ck"), "a failed save left its temp directory");

    /* A successful save replaces it. */
    expect(t,
           ckpt_save(t->ck, b, NULL, NULL, NULL) == 0 && ckpt_load(t->ck, x) == 0 &&
               same_params(x, b),
           "replacing save did not take");

    /* Saving refuses to replace what is not a checkpoint, and leaves it be. */
    char other[PATH_MAX], note[PATH_MAX];
    join(other, t->root, "notes");
    join(note, other, "todo.txt");
    expect(t, mkdir(other, 0755) == 0 && fileio_write_atomic(note, "keep me", 7) == 0,
           "setup of a non-checkpoint directory");
    EXPECT_REFUSED(t, "non-checkpoint directory", ERR_ARG, "holds 'todo.txt'",
                   ckpt_save(other, a, NULL, NULL, NULL));
    EXPECT_REFUSED(t, "regular file as target", ERR_ARG, "not a directory",
                   ckpt_save(note, a, NULL, NULL, NULL));
    expect(t, access(note, F_OK) == 0, "refused save touched the directory");
    fileio_remove_tree(other);

    /* Misuse that is reported, not a crash. */
    CkptOptim bad_opt = {dummy, dummy, 1, 0};
    EXPECT_REFUSED(t, "optimizer size", ERR_ARG, "optimizer state of 1 floats",
                   ckpt_save(t->ck, a, NULL, &bad_opt, NULL));
    CkptTrainerState bad_ts = {.step = 1, .extra = json_integer(3)};
    EXPECT_REFUSED(t, "trainer extra not an object", ERR_ARG, "not an object",
                   ckpt_save(t->ck, a, NULL, NULL, &bad_ts));
    json_decref(bad_ts.extra);
    Tok *big = tok_new(" !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`"
                       "abcdefghijklmnopqrstuvwxyz{|}~");
    EXPECT_REFUSED(t, "tokenizer larger than vocab", ERR_ARG, "exceeds the model's vocab_size",
                   ckpt_save(t->ck, a, big, NULL, NULL));
    tok_free(&big);
    expect(t, ckpt_load(t->ck, x) == 0 && same_params(x, b),
           "refused saves changed the checkpoint");
    model_free(&a);
    model_free(&b);
    model_free(&x);
}

/* A reader process loads in a loop while this one keeps replacing the
 * checkpoint; every load must be all-A or all-B, never a mix. */
static void test_concurrent_reader(TestCtx *t)
{
    ModelConfig c = test_config(true, false);
    Model      *a = random_model(&c, 21), *b = random_model(&c, 22);
    int         fds[2];
    if (ckpt_save(t->ck, a, NULL, NULL, NULL) != 0 || pipe(fds) != 0) {
        expect(t, false, "concurrent reader setup");
        goto free_models;
    }
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        expect(t, false, "fork");
        close(fds[0]);
        close(fds[1]);
        goto free_models;
    }
    if (pid == 0) {
        close(fds[1]);
        Model *x = model_new(&c);
        int    n_a = 0, n_b = 0, n_again = 0, n_bad = 0;
        /* Loop until the writer closes the pipe, and at least a few times. */
        for (int i = 0;; i++) {
            struct timespec ts = {0, 0};
            fd_set          rd;
            FD_ZERO(&rd);
            FD_SET(fds[0], &rd);
            if (i >= 5 && pselect(fds[0] + 1, &rd, NULL, NULL, &ts, NULL) > 0) break;
            memset(model_params(x), 0, model_num_params(x) * sizeof(float));
            int rc = ckpt_load(t->ck, x);
            if (rc == ERR_AGAIN)
                n_again++;
            else if (rc == 0 && same_params(x, a))
                n_a++;
            else if (rc == 0 && same_params(x, b))
                n_b++;
            else
                n_bad++;
        }
        if (t->verbose)
            printf("  ckpt: concurrent reader: %d loads of A, %d of B, %d retry, %d bad\n", n_a,
                   n_b, n_again, n_bad);
        fflush(stdout);
        model_free(&x);
        _exit(n_bad == 0 && n_a + n_b > 0 ? 0 : 1);
    }
    close(fds[0]);
    int saved = 0;
    for (int i = 0; i < 40; i++) saved += ckpt_save(t->ck, i % 2 ? a : b, NULL, NULL, NULL) == 0;
    close(fds[1]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    expect(t, saved == 40, "saves under a concurrent reader failed");
    expect(t, WIFEXITED(status) && WEXITSTATUS(status) == 0,
           "concurrent reader saw a mixed or broken checkpoint");
free_models:
    model_free(&a);
    model_free(&b);
}

/* Writes text as dir/file. */
static int put_file(const char *dir, const char *file, const char *text)
{
    char path[PATH_MAX];
    join(path, dir, file);
    return fileio_write_atomic(path, text, strlen(text));
}

/* Copies the good config.json of t->ck to t->bad with key set to value
 * (parsed from JSON text; NULL deletes the key). */
static int put_config_with(TestCtx *t, const char *key, const char *value)
{
    char    path[PATH_MAX];
    json_t *o = NULL;
    if (read_json("test", t->ck, CKPT_CONFIG_FILE, false, &o, path) != 0) return ERR_IO;
    if (value)
        json_object_set_new(o, key, json_loads(value, JSON_DECODE_ANY, NULL));
    else
        json_object_del(o, key);
    join(path, t->bad, CKPT_CONFIG_FILE);
    int rc = write_json(path, o, JSON_INDENT(2));
    json_decref(o);
    return rc;
}

/* Rewrites t->ck's weights from m with one change: skip drops a tensor,
 * transpose swaps a 2-D tensor's dims, extra adds one, and save_id replaces
 * the save id (NULL: config.json's, so the files agree). */
static int put_weights_with(TestCtx *t, Model *m, const char *skip, const char *transpose,
                            const char *extra, const char *save_id)
{
    char    path[PATH_MAX], id[SAVE_ID_LEN + 1] = "";
    json_t *o = NULL;
    if (read_json("test", t->ck, CKPT_CONFIG_FILE, false, &o, path) != 0) return ERR_IO;
    snprintf(id, sizeof id, "%s",
             save_id ? save_id : json_string_value(json_object_get(o, SAVE_ID_KEY)));
    json_decref(o);
    join(path, t->ck, CKPT_MODEL_FILE);
    int          n = model_num_tensors(m), k = 0;
    ModelTensor *mt = xcalloc((size_t)n, sizeof *mt);
    StTensor    *st = xcalloc((size_t)n + 1, sizeof *st);
    for (int i = 0; i < n; i++) {
        model_tensor(m, i, &mt[i]);
        if (skip && !strcmp(mt[i].name, skip)) continue;
        bool tr = transpose && !strcmp(mt[i].name, transpose);
        st[k++] = (StTensor){
            mt[i].name, mt[i].data, mt[i].ndim, {mt[i].shape[tr ? 1 : 0], mt[i].shape[tr ? 0 : 1]}};
    }
    if (extra) st[k++] = (StTensor){extra, mt[0].data, 1, {4}};
    StMeta meta[2] = {{"format", "pt"}, {SAVE_ID_KEY, id}};
    int    rc = st_write(path, st, k, meta, 2);
    free(st);
    free(mt);
    return rc;
}

static void test_refusals(TestCtx *t, const Tok *tok)
{
    ModelConfig c = test_config(false, true);
    Model      *m = random_model(&c, 5), *x = model_new(&c);
    size_t      n = model_num_params(m);
    char        path[PATH_MAX], missing[PATH_MAX];
    float      *mo = xcalloc(2 * n + 2, sizeof(float)), *vo = mo + n + 1;
    CkptOptim   opt = {mo, vo, n, 3};
    expect(t, ckpt_save(t->ck, m, tok, &opt, NULL) == 0, "refusals: setup save");
    expect(t, mkdir(t->bad, 0755) == 0, "refusals: mkdir");

    /* config.json: absent, not JSON, ill-typed, out of range, unsupported. */
    join(missing, t->root, "nope");
    ModelConfig got;
    EXPECT_REFUSED(t, "missing checkpoint", ERR_NOTFOUND, "nope/config.json' does not exist",
                   ckpt_load_config(missing, &got));
    put_file(t->bad, CKPT_CONFIG_FILE, "{\"hidden_size\": 16,");
    EXPECT_REFUSED(t, "config garbage JSON", ERR_FORMAT, "invalid JSON",
                   ckpt_load_config(t->bad, &got));
    put_file(t->bad, CKPT_CONFIG_FILE, "[1, 2]");
    EXPECT_REFUSED(t, "config not an object", ERR_FORMAT, "not a JSON object",
                   ckpt_load_config(t->bad, &got));
    struct {
        const char *key, *value;
        int         want;
        const char *expect;
    } cfg_cases[] = {
        {"hidden_size", "\"16\"", ERR_FORMAT, "'hidden_size' is not an integer"},
        {"rms_norm_eps", NULL, ERR_FORMAT, "missing key 'rms_norm_eps'"},
        {"hidden_size", "1000000000000", ERR_RANGE, "'hidden_size' is 1000000000000"},
        {"num_attention_heads", "5", ERR_RANGE, "config refused: n_heads must divide dim"},
        {"rope_theta", "-1.0", ERR_RANGE, "rope_theta must be > 0"},
        {"tie_word_embeddings", "\"yes\"", ERR_FORMAT, "'tie_word_embeddings' is not true"},
        {"model_type", "\"gpt2\"", ERR_UNSUPPORTED, "model_type 'gpt2'"},
        {"rope_scaling", "{\"type\": \"linear\", \"factor\": 2.0}", ERR_UNSUPPORTED,
         "rope_scaling is set"},
        {"attention_bias", "true", ERR_UNSUPPORTED, "attention_bias is true"},
        {"head_dim", "8", ERR_UNSUPPORTED, "head_dim 8, expected"},
        {"rlhf_format_version", "99", ERR_UNSUPPORTED, "rlhf_format_version 99"},
    };
    for (size_t i = 0; i < sizeof cfg_cases / sizeof cfg_cases[0]; i++) {
        char label[96];
        snprintf(label, sizeof label, "config %s = %s", cfg_cases[i].key,
                 cfg_cases[i].value ? cfg_cases[i].value : "(deleted)");
        expect(t, put_config_with(t, cfg_cases[i].key, cfg_cases[i].value) == 0, label);
        EXPECT_REFUSED(t, label, cfg_cases[i].want, cfg_cases[i].expect,
                       ckpt_load_config(t->bad, &got));
    }
    /* A plain HF config without our keys still loads, with HF defaults. */
    put_file(t->bad, CKPT_CONFIG_FILE,
             "{\"model_type\": \"llama\", \"hidden_size\": 16, \"intermediate_size\": 40, "
             "\"num_attention_heads\": 4, \"num_hidden_layers\": 2, \"vocab_size\": 90, "
             "\"max_position_embeddings\": 32, \"rms_norm_eps\": 1e-06, \"torch_dtype\": "
             "\"bfloat16\", \"eos_token_id\": [2, 3]}");
    expect(t,
           ckpt_load_config(t->bad, &got) == 0 && got.n_kv_heads == 4 &&
               got.rope_theta == 10000.0f && got.norm_eps == 1e-6f && !got.tie_embeddings &&
               !got.has_value_head,
           "plain HF config refused or misread");

    /* Tokenizer settings in config.json. */
    Tok *tk = NULL;
    put_config_with(t, "rlhf_tokenizer_charset", "\"aba\"");
    EXPECT_REFUSED(t, "duplicate charset", ERR_FORMAT, "repeats position 0",
                   ckpt_load_tok(t->bad, &tk));
    put_config_with(t, "bos_token_id", "5");
    EXPECT_REFUSED(t, "bos id", ERR_FORMAT, "bos_token_id is 5", ckpt_load_tok(t->bad, &tk));
    put_config_with(t, "vocab_size", "20");
    EXPECT_REFUSED(t, "vocab smaller than charset", ERR_MISMATCH, "exceeds vocab_size 20",
                   ckpt_load_tok(t->bad, &tk));
    tok_free(&tk);

    /* Config and model disagree. */
    ModelConfig wide = c;
    wide.dim = 32;
    Model *w = model_new(&wide);
    EXPECT_REFUSED(t, "mismatched config", ERR_MISMATCH, "hidden_size is 16, the model's is 32",
                   ckpt_load(t->ck, w));
    model_free(&w);
    ModelConfig tied = c;
    tied.tie_embeddings = true;
    w = model_new(&tied);
    EXPECT_REFUSED(t, "tied vs untied", ERR_MISMATCH, "tie_word_embeddings is false",
                   ckpt_load(t->ck, w));
    model_free(&w);
    ModelConfig eps = c;
    eps.norm_eps = 1e-6f;
    w = model_new(&eps);
    EXPECT_REFUSED(t, "different epsilon", ERR_MISMATCH, "rms_norm_eps", ckpt_load(t->ck, w));
    model_free(&w);

    /* Weights that do not fit: each must leave the model untouched. */
    memset(model_params(x), 0, n * sizeof(float));
    put_weights_with(t, m, "model.layers.1.mlp.up_proj.weight", NULL, NULL, NULL);
    EXPECT_REFUSED(t, "missing tensor", ERR_NOTFOUND,
                   "1 model tensor missing: 'model.layers.1.mlp.up_proj.weight'",
                   ckpt_load(t->ck, x));
    put_weights_with(t, m, NULL, "model.layers.0.self_attn.k_proj.weight", NULL, NULL);
    EXPECT_REFUSED(t, "wrong shape", ERR_MISMATCH,
                   "tensor 'model.layers.0.self_attn.k_proj.weight' has shape [16, 8], the "
                   "model's is [8, 16]",
                   ckpt_load(t->ck, x));
    put_weights_with(t, m, NULL, NULL, "model.layers.0.self_attn.q_norm.weight", NULL);
    EXPECT_REFUSED(t, "extra tensor", ERR_MISMATCH,
                   "1 unexpected tensor the model does not have: "
                   "'model.layers.0.self_attn.q_norm.weight'",
                   ckpt_load(t->ck, x));
    put_weights_with(t, m, NULL, NULL, NULL, "0123456789abcdef");
    EXPECT_REFUSED(t, "weights of another save", ERR_AGAIN, "", ckpt_load(t->ck, x));
    bool untouched = true;
    for (size_t i = 0; i < n; i++) untouched = untouched && model_params(x)[i] == 0.0f;
    expect(t, untouched, "a refused load changed the model");

    /* Wrong dtype: "F32" -> "I32" keeps every length, so only the dtype is wrong. */
    put_weights_with(t, m, NULL, NULL, NULL, NULL);
    char  *raw = NULL;
    size_t len = 0;
    join(path, t->ck, CKPT_MODEL_FILE);
    if (fileio_read_all(path, 1 << 24, false, &raw, &len) == 0) {
        char *dt = strstr(raw + 8, "\"dtype\":\"F32\"");
        if (dt) dt[9] = 'I';
        fileio_write_atomic(path, raw, len);
        EXPECT_REFUSED(t, "wrong dtype", ERR_MISMATCH, "has dtype I32, expected F32",
                       ckpt_load(t->ck, x));
        /* Truncated weights: the safetensors checks refuse them. */
        fileio_write_atomic(path, raw, len / 2);
        EXPECT_REFUSED(t, "truncated weights", ERR_FORMAT, "out of bounds", ckpt_load(t->ck, x));
        fileio_write_atomic(path, raw, 20);
        EXPECT_REFUSED(t, "weights cut in the header", ERR_FORMAT, "bytes follow",
                       ckpt_load(t->ck, x));
        fileio_write_atomic(path, raw, 4);
        EXPECT_REFUSED(t, "weights cut in the length", ERR_FORMAT, "too small",
                       ckpt_load(t->ck, x));
        free(raw);
    } else {
        expect(t, false, "reading model.safetensors back");
    }
    unlink(path);
    EXPECT_REFUSED(t, "weights file missing", ERR_NOTFOUND, "No such file", ckpt_load(t->ck, x));

    /* Non-finite weights. */
    model_params(m)[n / 2] = NAN;
    expect(t, ckpt_save(t->ck, m, tok, &opt, NULL) == 0, "save with NaN");
    EXPECT_REFUSED(t, "NaN weight", ERR_NONFINITE, "is nan", ckpt_load(t->ck, x));
    model_params(m)[n / 2] = 0.0f;

    /* Optimizer state: wrong size, negative second moment, NaN. */
    int64_t step = 0;
    EXPECT_REFUSED(t, "optimizer size", ERR_MISMATCH, "holds",
                   ckpt_load_optim(t->ck, mo, vo, n + 1, &step));
    vo[3] = -1.0f;
    expect(t, ckpt_save(t->ck, m, tok, &opt, NULL) == 0, "save with negative v");
    EXPECT_REFUSED(t, "negative second moment", ERR_RANGE, "exp_avg_sq[3] is -1",
                   ckpt_load_optim(t->ck, mo, vo, n, &step));
    vo[3] = 0.0f;
    mo[7] = INFINITY;
    expect(t, ckpt_save(t->ck, m, tok, &opt, NULL) == 0, "save with inf m");
    EXPECT_REFUSED(t, "non-finite first moment", ERR_NONFINITE, "exp_avg[7] is inf",
                   ckpt_load_optim(t->ck, mo, vo, n, &step));

    /* Trainer state. */
    CkptTrainerState ts;
    put_file(t->bad, CKPT_STATE_FILE, "{\"step\": 1, ");
    EXPECT_REFUSED(t, "trainer state garbage", ERR_FORMAT, "invalid JSON",
                   ckpt_load_trainer_state(t->bad, &ts));
    put_file(t->bad, CKPT_STATE_FILE, "{\"step\": -4, \"policy_version\": 1, \"run_id\": \"r\"}");
    EXPECT_REFUSED(t, "negative step", ERR_RANGE, "'step' is -4",
                   ckpt_load_trainer_state(t->bad, &ts));
    put_file(t->bad, CKPT_STATE_FILE,
             "{\"step\": 1, \"policy_version\": 1, \"run_id\": \"r\", \"extra\": 5}");
    EXPECT_REFUSED(t, "extra not an object", ERR_FORMAT, "'extra' is not an object",
                   ckpt_load_trainer_state(t->bad, &ts));
    expect(t, ts.extra == NULL, "failed trainer state load returned extra");

    free(mo);
    model_free(&m);
    model_free(&x);
}

int ckpt_selftest(bool verbose)
{
    TestCtx t = {.verbose = verbose};
    snprintf(t.root, sizeof t.root, "/tmp/rlhf-ckpt-XXXXXX");
    if (!mkdtemp(t.root)) return 1;
    join(t.ck, t.root, "ck");
    join(t.bad, t.root, "bad");
    Tok *tok = tok_new(TOK_CHARSET_DEFAULT);
    CHECK(tok);

    test_round_trips(&t, tok);
    fileio_remove_tree(t.ck);
    test_replace(&t);
    test_concurrent_reader(&t);
    test_refusals(&t, tok);

    tok_free(&tok);
    if (fileio_remove_tree(t.root) != 0) t.fails++;
    if (verbose) printf("  ckpt: %d checks, %d failed\n", t.checks, t.fails);
    return t.fails ? 1 : 0;
}
