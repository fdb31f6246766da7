/* The checkpoint self-test: round trips of every file, atomic replacement
 * (a failed save keeps the old checkpoint, a concurrent reader never sees a
 * mix), refusals of bad configs, weights, optimizer and trainer state, the
 * tensors' checksums (damaged weights and moments refused, naming file and
 * tensor; a checkpoint without checksums loaded with a warning), the kept
 * history (keep N, set aside) and a checkpoint directory behind a symbolic
 * link. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/log.h"
#include "common/base/rng.h"
#include "common/formats/ckpt.h"
#include "common/formats/ckpt_config.h"
#include "common/formats/ckpt_int.h"
#include "common/formats/safetensors.h"
#include "tests/support/expect.h"
#include "tests/support/fixtures.h"
#include "tests/support/testfs.h"
#include "tests/test_list.h"

typedef struct {
    bool verbose;
    char root[64];      /* the test's temp directory */
    char ck[PATH_MAX];  /* root/ck, the checkpoint under test */
    char bad[PATH_MAX]; /* root/bad, hand-edited checkpoints */
} TestCtx;

static ModelConfig test_config(bool tied, bool value_head)
{
    ModelConfig c = fixture_model_config(16, 2, 4, 2, 40, 90, 32);
    c.tie_embeddings = tied;
    c.has_value_head = value_head;
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
        EXPECT(ok, "%s", label);
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
    EXPECT(!strcmp(names, "ck"), "%s", "round trips left temp directories behind");
    struct stat st;
    EXPECT(stat(t->ck, &st) == 0 && (st.st_mode & 0777) == 0755, "%s",
           "checkpoint directory is not mode 0755");
    list_dir(t->ck, names, sizeof names);
    EXPECT(!strcmp(names, "config.json model.safetensors optimizer.safetensors "
                          "trainer_state.json"),
           "%s", "checkpoint holds unexpected files");
}

static void test_replace(TestCtx *t)
{
    ModelConfig c = test_config(false, true);
    Model      *a = random_model(&c, 1), *b = random_model(&c, 2), *x = model_new(&c);
    char        names[512];

    /* A save without optimizer or trainer state leaves none of the old ones. */
    EXPECT(ckpt_save(t->ck, a, NULL, NULL, NULL) == 0, "%s", "save A failed");
    int64_t step;
    float   dummy[1];
    EXPECT_REFUSED(ckpt_load_optim(t->ck, dummy, dummy, 1, &step), ERR_NOTFOUND, "",
                   "stale optimizer state");
    CkptTrainerState ts;
    EXPECT_REFUSED(ckpt_load_trainer_state(t->ck, &ts), ERR_NOTFOUND, "", "stale trainer state");
    Tok *tok = NULL;
    EXPECT_REFUSED(ckpt_load_tok(t->ck, &tok), ERR_NOTFOUND, "no rlhf_tokenizer_charset",
                   "no tokenizer saved");
    list_dir(t->ck, names, sizeof names);
    EXPECT(!strcmp(names, "config.json model.safetensors"), "%s", "old optional files survived");

    /* A save that fails before the swap leaves the old checkpoint. */
    ckpt_fail_before_swap = true;
    EXPECT_REFUSED(ckpt_save(t->ck, b, NULL, NULL, NULL), ERR_IO, "self-test hook", "failed save");
    ckpt_fail_before_swap = false;
    EXPECT(ckpt_load(t->ck, x) == 0 && same_params(x, a), "%s",
           "old checkpoint lost by a failed save");
    list_dir(t->root, names, sizeof names);
    EXPECT(!strcmp(names, "ck"), "%s", "a failed save left its temp directory");

    /* A successful save replaces it. */
    EXPECT(ckpt_save(t->ck, b, NULL, NULL, NULL) == 0 && ckpt_load(t->ck, x) == 0 &&
               same_params(x, b),
           "%s", "replacing save did not take");

    /* Saving refuses to replace what is not a checkpoint, and leaves it be. */
    char other[PATH_MAX], note[PATH_MAX];
    ckpt_join(other, t->root, "notes");
    ckpt_join(note, other, "todo.txt");
    EXPECT(mkdir(other, 0755) == 0 && fileio_write_atomic(note, "keep me", 7) == 0, "%s",
           "setup of a non-checkpoint directory");
    EXPECT_REFUSED(ckpt_save(other, a, NULL, NULL, NULL), ERR_ARG, "holds 'todo.txt'",
                   "non-checkpoint directory");
    EXPECT_REFUSED(ckpt_save(note, a, NULL, NULL, NULL), ERR_ARG, "not a directory",
                   "regular file as target");
    EXPECT(access(note, F_OK) == 0, "%s", "refused save touched the directory");
    fileio_remove_tree(other);

    /* Misuse that is reported, not a crash. */
    CkptOptim bad_opt = {dummy, dummy, 1, 0};
    EXPECT_REFUSED(ckpt_save(t->ck, a, NULL, &bad_opt, NULL), ERR_ARG,
                   "optimizer state of 1 floats", "optimizer size");
    CkptTrainerState bad_ts = {.step = 1, .extra = json_integer(3)};
    EXPECT_REFUSED(ckpt_save(t->ck, a, NULL, NULL, &bad_ts), ERR_ARG, "not an object",
                   "trainer extra not an object");
    json_decref(bad_ts.extra);
    Tok *big = tok_new(" !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`"
                       "abcdefghijklmnopqrstuvwxyz{|}~");
    EXPECT_REFUSED(ckpt_save(t->ck, a, big, NULL, NULL), ERR_ARG, "exceeds the model's vocab_size",
                   "tokenizer larger than vocab");
    tok_free(&big);
    EXPECT(ckpt_load(t->ck, x) == 0 && same_params(x, b), "%s",
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
        EXPECT(false, "%s", "concurrent reader setup");
        goto free_models;
    }
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        EXPECT(false, "%s", "fork");
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
    EXPECT(saved == 40, "%s", "saves under a concurrent reader failed");
    EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s",
           "concurrent reader saw a mixed or broken checkpoint");
free_models:
    model_free(&a);
    model_free(&b);
}

/* Writes text as dir/file. */
static int put_file(const char *dir, const char *file, const char *text)
{
    char path[PATH_MAX];
    ckpt_join(path, dir, file);
    return fileio_write_atomic(path, text, strlen(text));
}

/* Copies the good config.json of t->ck to t->bad with key set to value
 * (parsed from JSON text; NULL deletes the key). */
static int put_config_with(TestCtx *t, const char *key, const char *value)
{
    char    path[PATH_MAX];
    json_t *o = NULL;
    if (ckpt_read_json("test", t->ck, CKPT_CONFIG_FILE, false, &o, path) != 0) return ERR_IO;
    if (value)
        json_object_set_new(o, key, json_loads(value, JSON_DECODE_ANY, NULL));
    else
        json_object_del(o, key);
    ckpt_join(path, t->bad, CKPT_CONFIG_FILE);
    int rc = ckpt_write_json(path, o, JSON_INDENT(2));
    json_decref(o);
    return rc;
}

/* Rewrites t->ck's weights from m with one change: skip drops a tensor,
 * transpose swaps a 2-D tensor's dims, extra adds one, and save_id replaces
 * the save id (NULL: config.json's, so the files agree). */
static int put_weights_with(TestCtx *t, Model *m, const char *skip, const char *transpose,
                            const char *extra, const char *save_id)
{
    char    path[PATH_MAX], id[CKPT_SAVE_ID_LEN + 1] = "";
    json_t *o = NULL;
    if (ckpt_read_json("test", t->ck, CKPT_CONFIG_FILE, false, &o, path) != 0) return ERR_IO;
    snprintf(id, sizeof id, "%s",
             save_id ? save_id : json_string_value(json_object_get(o, CKPT_SAVE_ID_KEY)));
    json_decref(o);
    ckpt_join(path, t->ck, CKPT_MODEL_FILE);
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
    StMeta meta[2] = {{"format", "pt"}, {CKPT_SAVE_ID_KEY, id}};
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
    EXPECT(ckpt_save(t->ck, m, tok, &opt, NULL) == 0, "%s", "refusals: setup save");
    EXPECT(mkdir(t->bad, 0755) == 0, "%s", "refusals: mkdir");

    /* config.json: absent, not JSON, ill-typed, out of range, unsupported. */
    ckpt_join(missing, t->root, "nope");
    ModelConfig got;
    EXPECT_REFUSED(ckpt_load_config(missing, &got), ERR_NOTFOUND,
                   "nope/config.json' does not exist", "missing checkpoint");
    put_file(t->bad, CKPT_CONFIG_FILE, "{\"hidden_size\": 16,");
    EXPECT_REFUSED(ckpt_load_config(t->bad, &got), ERR_FORMAT, "invalid JSON",
                   "config garbage JSON");
    put_file(t->bad, CKPT_CONFIG_FILE, "[1, 2]");
    EXPECT_REFUSED(ckpt_load_config(t->bad, &got), ERR_FORMAT, "not a JSON object",
                   "config not an object");
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
        EXPECT(put_config_with(t, cfg_cases[i].key, cfg_cases[i].value) == 0, "%s", label);
        EXPECT_REFUSED(ckpt_load_config(t->bad, &got), cfg_cases[i].want, cfg_cases[i].expect,
                       label);
    }
    /* A config.json claiming a model far larger than the weights beside it
     * (1024 layers: ~500x the values) is refused before anything is built
     * for it; found by the checkpoint fuzz harness's review. */
    {
        char   src[PATH_MAX], dst[PATH_MAX];
        char  *raw = NULL;
        size_t len = 0;
        ckpt_join(src, t->ck, CKPT_MODEL_FILE);
        ckpt_join(dst, t->bad, CKPT_MODEL_FILE);
        bool ok = fileio_read_all(src, 1 << 26, false, &raw, &len) == 0 &&
                  fileio_write_atomic(dst, raw, len) == 0;
        free(raw);
        EXPECT(ok && put_config_with(t, "num_hidden_layers", "1024") == 0, "%s",
               "a config of 1024 layers beside the 2-layer weights");
        EXPECT_REFUSED(ckpt_load_config(t->bad, &got), ERR_MISMATCH, "describes a model of",
                       "config larger than its weights");
        unlink(dst);
    }
    /* A plain HF config without our keys still loads, with HF defaults. */
    put_file(t->bad, CKPT_CONFIG_FILE,
             "{\"model_type\": \"llama\", \"hidden_size\": 16, \"intermediate_size\": 40, "
             "\"num_attention_heads\": 4, \"num_hidden_layers\": 2, \"vocab_size\": 90, "
             "\"max_position_embeddings\": 32, \"rms_norm_eps\": 1e-06, \"torch_dtype\": "
             "\"bfloat16\", \"eos_token_id\": [2, 3]}");
    EXPECT(ckpt_load_config(t->bad, &got) == 0 && got.n_kv_heads == 4 &&
               got.rope_theta == 10000.0f && got.norm_eps == 1e-6f && !got.tie_embeddings &&
               !got.has_value_head,
           "%s", "plain HF config refused or misread");

    /* Tokenizer settings in config.json. */
    Tok *tk = NULL;
    put_config_with(t, "rlhf_tokenizer_charset", "\"aba\"");
    EXPECT_REFUSED(ckpt_load_tok(t->bad, &tk), ERR_FORMAT, "repeats position 0",
                   "duplicate charset");
    put_config_with(t, "bos_token_id", "5");
    EXPECT_REFUSED(ckpt_load_tok(t->bad, &tk), ERR_FORMAT, "bos_token_id is 5", "bos id");
    put_config_with(t, "vocab_size", "20");
    EXPECT_REFUSED(ckpt_load_tok(t->bad, &tk), ERR_MISMATCH, "exceeds vocab_size 20",
                   "vocab smaller than charset");
    tok_free(&tk);

    /* Config and model disagree. */
    ModelConfig wide = c;
    wide.dim = 32;
    Model *w = model_new(&wide);
    EXPECT_REFUSED(ckpt_load(t->ck, w), ERR_MISMATCH, "hidden_size is 16, the model's is 32",
                   "mismatched config");
    model_free(&w);
    ModelConfig tied = c;
    tied.tie_embeddings = true;
    w = model_new(&tied);
    EXPECT_REFUSED(ckpt_load(t->ck, w), ERR_MISMATCH, "tie_word_embeddings is false",
                   "tied vs untied");
    model_free(&w);
    ModelConfig eps = c;
    eps.norm_eps = 1e-6f;
    w = model_new(&eps);
    EXPECT_REFUSED(ckpt_load(t->ck, w), ERR_MISMATCH, "rms_norm_eps", "different epsilon");
    model_free(&w);

    /* Weights that do not fit: each must leave the model untouched. */
    memset(model_params(x), 0, n * sizeof(float));
    put_weights_with(t, m, "model.layers.1.mlp.up_proj.weight", NULL, NULL, NULL);
    EXPECT_REFUSED(ckpt_load(t->ck, x), ERR_NOTFOUND,
                   "1 model tensor missing: 'model.layers.1.mlp.up_proj.weight'", "missing tensor");
    put_weights_with(t, m, NULL, "model.layers.0.self_attn.k_proj.weight", NULL, NULL);
    EXPECT_REFUSED(ckpt_load(t->ck, x), ERR_MISMATCH,
                   "tensor 'model.layers.0.self_attn.k_proj.weight' has shape [16, 8], the "
                   "model's is [8, 16]",
                   "wrong shape");
    put_weights_with(t, m, NULL, NULL, "model.layers.0.self_attn.q_norm.weight", NULL);
    EXPECT_REFUSED(ckpt_load(t->ck, x), ERR_MISMATCH,
                   "1 unexpected tensor the model does not have: "
                   "'model.layers.0.self_attn.q_norm.weight'",
                   "extra tensor");
    put_weights_with(t, m, NULL, NULL, NULL, "0123456789abcdef");
    EXPECT_REFUSED(ckpt_load(t->ck, x), ERR_AGAIN, "", "weights of another save");
    bool untouched = true;
    for (size_t i = 0; i < n; i++) untouched = untouched && model_params(x)[i] == 0.0f;
    EXPECT(untouched, "%s", "a refused load changed the model");

    /* Wrong dtype: "F32" -> "I32" keeps every length, so only the dtype is wrong. */
    put_weights_with(t, m, NULL, NULL, NULL, NULL);
    char  *raw = NULL;
    size_t len = 0;
    ckpt_join(path, t->ck, CKPT_MODEL_FILE);
    if (fileio_read_all(path, 1 << 24, false, &raw, &len) == 0) {
        char *dt = strstr(raw + 8, "\"dtype\":\"F32\"");
        if (dt) dt[9] = 'I';
        fileio_write_atomic(path, raw, len);
        EXPECT_REFUSED(ckpt_load(t->ck, x), ERR_MISMATCH, "has dtype I32, expected F32",
                       "wrong dtype");
        /* Truncated weights: the safetensors checks refuse them. */
        fileio_write_atomic(path, raw, len / 2);
        EXPECT_REFUSED(ckpt_load(t->ck, x), ERR_FORMAT, "out of bounds", "truncated weights");
        fileio_write_atomic(path, raw, 20);
        EXPECT_REFUSED(ckpt_load(t->ck, x), ERR_FORMAT, "bytes follow",
                       "weights cut in the header");
        fileio_write_atomic(path, raw, 4);
        EXPECT_REFUSED(ckpt_load(t->ck, x), ERR_FORMAT, "too small", "weights cut in the length");
        free(raw);
    } else {
        EXPECT(false, "%s", "reading model.safetensors back");
    }
    unlink(path);
    EXPECT_REFUSED(ckpt_load(t->ck, x), ERR_NOTFOUND, "No such file", "weights file missing");

    /* Non-finite weights. */
    model_params(m)[n / 2] = NAN;
    EXPECT(ckpt_save(t->ck, m, tok, &opt, NULL) == 0, "%s", "save with NaN");
    EXPECT_REFUSED(ckpt_load(t->ck, x), ERR_NONFINITE, "is nan", "NaN weight");
    model_params(m)[n / 2] = 0.0f;

    /* Optimizer state: wrong size, negative second moment, NaN. */
    int64_t step = 0;
    EXPECT_REFUSED(ckpt_load_optim(t->ck, mo, vo, n + 1, &step), ERR_MISMATCH, "holds",
                   "optimizer size");
    vo[3] = -1.0f;
    EXPECT(ckpt_save(t->ck, m, tok, &opt, NULL) == 0, "%s", "save with negative v");
    EXPECT_REFUSED(ckpt_load_optim(t->ck, mo, vo, n, &step), ERR_RANGE, "exp_avg_sq[3] is -1",
                   "negative second moment");
    vo[3] = 0.0f;
    mo[7] = INFINITY;
    EXPECT(ckpt_save(t->ck, m, tok, &opt, NULL) == 0, "%s", "save with inf m");
    EXPECT_REFUSED(ckpt_load_optim(t->ck, mo, vo, n, &step), ERR_NONFINITE, "exp_avg[7] is inf",
                   "non-finite first moment");

    /* Trainer state. */
    CkptTrainerState ts;
    put_file(t->bad, CKPT_STATE_FILE, "{\"step\": 1, ");
    EXPECT_REFUSED(ckpt_load_trainer_state(t->bad, &ts), ERR_FORMAT, "invalid JSON",
                   "trainer state garbage");
    put_file(t->bad, CKPT_STATE_FILE, "{\"step\": -4, \"policy_version\": 1, \"run_id\": \"r\"}");
    EXPECT_REFUSED(ckpt_load_trainer_state(t->bad, &ts), ERR_RANGE, "'step' is -4",
                   "negative step");
    put_file(t->bad, CKPT_STATE_FILE,
             "{\"step\": 1, \"policy_version\": 1, \"run_id\": \"r\", \"extra\": 5}");
    EXPECT_REFUSED(ckpt_load_trainer_state(t->bad, &ts), ERR_FORMAT, "'extra' is not an object",
                   "extra not an object");
    EXPECT(ts.extra == NULL, "%s", "failed trainer state load returned extra");

    free(mo);
    model_free(&m);
    model_free(&x);
}

/* Overwrites n floats of the data region of dir/file, from float index at,
 * with value: the damage of issue 8's finding 4 (4096 floats set to 1000.0). */
static int damage_floats(const char *dir, const char *file, size_t at, size_t n, float value)
{
    char   path[PATH_MAX];
    char  *raw = NULL;
    size_t len = 0;
    ckpt_join(path, dir, file);
    int rc = fileio_read_all(path, 1 << 26, false, &raw, &len);
    if (rc) return rc;
    uint64_t hlen = 0;
    memcpy(&hlen, raw, 8);
    size_t off = 8 + hlen + at * sizeof(float);
    if (len < 8 || off + n * sizeof(float) > len) {
        free(raw);
        return ERR_RANGE;
    }
    for (size_t i = 0; i < n; i++) memcpy(raw + off + i * sizeof(float), &value, sizeof value);
    rc = fileio_write_atomic(path, raw, len);
    free(raw);
    return rc;
}

/* Rewrites dir/file without its checksum entries, as a version before them
 * wrote it: the header re-serialised and padded, the data unchanged. */
static int strip_checksums(const char *dir, const char *file)
{
    char   path[PATH_MAX];
    char  *raw = NULL;
    size_t len = 0;
    ckpt_join(path, dir, file);
    int rc = fileio_read_all(path, 1 << 26, false, &raw, &len);
    if (rc) return rc;
    uint64_t hlen = 0;
    memcpy(&hlen, raw, 8);
    json_t *root = json_loadb(raw + 8, hlen, 0, NULL);
    json_t *meta = json_object_get(root, ST_METADATA_KEY);
    if (!meta) {
        json_decref(root);
        free(raw);
        return ERR_FORMAT;
    }
    const char *key;
    json_t     *v, *tmp;
    json_object_foreach_safe(meta, tmp, key, v)
    {
        if (!strncmp(key, ST_XXH3_PREFIX, strlen(ST_XXH3_PREFIX))) json_object_del(meta, key);
    }
    char    *text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    size_t   tl = strlen(text), nh = (tl + 7) & ~(size_t)7, data = len - 8 - hlen;
    char    *out = xmalloc(8 + nh + data);
    uint64_t nh64 = nh;
    memcpy(out, &nh64, 8);
    memcpy(out + 8, text, tl);
    memset(out + 8 + tl, ' ', nh - tl);
    memcpy(out + 8 + nh, raw + 8 + hlen, data);
    rc = fileio_write_atomic(path, out, 8 + nh + data);
    free(out);
    free(text);
    json_decref(root);
    free(raw);
    return rc;
}

/* Checksums at the checkpoint level: 4096 floats of model.safetensors set
 * to 1000.0 are refused, naming the file and the tensor, and the model is
 * not taken; damaged moments likewise; a checkpoint without checksums (an
 * older version's) loads, with a warning. */
static void test_integrity(TestCtx *t, const Tok *tok)
{
    ModelConfig c = test_config(false, true);
    Model      *m = random_model(&c, 31), *x = model_new(&c);
    size_t      n = model_num_params(m);
    float *mo = xcalloc(4 * n, sizeof(float)), *vo = mo + n, *mo2 = mo + 2 * n, *vo2 = mo + 3 * n;
    for (size_t i = 0; i < n; i++) vo[i] = 1e-6f * (float)(i % 7);
    CkptOptim opt = {mo, vo, n, 12};
    int64_t   step = 0;
    char      wpath[PATH_MAX], opath[PATH_MAX], want[PATH_MAX + 64];
    ckpt_join(wpath, t->ck, CKPT_MODEL_FILE);
    ckpt_join(opath, t->ck, CKPT_OPTIM_FILE);
    EXPECT(n > 4096 + 1024, "the model has %zu parameters, too few to damage 4096", n);

    /* The finding: 4096 floats overwritten with 1000.0 in the weights. */
    EXPECT(ckpt_save(t->ck, m, tok, &opt, NULL) == 0 &&
               damage_floats(t->ck, CKPT_MODEL_FILE, 1024, 4096, 1000.0f) == 0,
           "%s", "integrity: save, then damage 4096 floats");
    memset(model_params(x), 0, n * sizeof(float));
    snprintf(want, sizeof want, "'%s': tensor '", wpath);
    fileio_capture_begin();
    int   rc = ckpt_load(t->ck, x);
    char *log = fileio_capture_end(t->verbose);
    EXPECT(rc == ERR_FORMAT && strstr(log, want) && strstr(log, "' is damaged: its "),
           "damaged weights: ckpt_load returned %d (%s), expected ERR_FORMAT with \"%s...' is "
           "damaged\" in the log",
           rc, err_str(rc), want);
    free(log);
    EXPECT(ckpt_load_optim(t->ck, mo2, vo2, n, &step) == 0 && step == 12, "%s",
           "the intact optimizer file of the damaged checkpoint still loads");

    /* Damaged moments. */
    EXPECT(ckpt_save(t->ck, m, tok, &opt, NULL) == 0 &&
               damage_floats(t->ck, CKPT_OPTIM_FILE, n + 5, 1, 1000.0f) == 0,
           "%s", "integrity: save, then damage one second moment");
    snprintf(want, sizeof want, "'%s': tensor 'exp_avg_sq' is damaged", opath);
    EXPECT_REFUSED(ckpt_load_optim(t->ck, mo2, vo2, n, &step), ERR_FORMAT, want,
                   "damaged optimizer state");
    EXPECT(ckpt_load(t->ck, x) == 0 && same_params(x, m), "%s",
           "the intact weights of that checkpoint still load");

    /* A checkpoint from before the checksums: loads, with a warning. */
    EXPECT(ckpt_save(t->ck, m, tok, &opt, NULL) == 0 &&
               strip_checksums(t->ck, CKPT_MODEL_FILE) == 0 &&
               strip_checksums(t->ck, CKPT_OPTIM_FILE) == 0,
           "%s", "integrity: a checkpoint without checksums");
    memset(model_params(x), 0, n * sizeof(float));
    int level = log_level(); /* the warning is what is checked: let it through */
    log_init("ckpt", level > LOG_WARN ? level : LOG_WARN);
    fileio_capture_begin();
    rc = ckpt_load(t->ck, x);
    int rco = ckpt_load_optim(t->ck, mo2, vo2, n, &step);
    log = fileio_capture_end(t->verbose);
    log_init("ckpt", level);
    EXPECT(rc == 0 && rco == 0 && same_params(x, m) && !memcmp(vo, vo2, n * sizeof(float)) &&
               strstr(log, "records no tensor checksums") && strstr(log, "loading it unverified"),
           "old checkpoint: load %d, optimizer %d; expected both to load with a warning", rc, rco);
    free(log);
    free(mo);
    model_free(&m);
    model_free(&x);
}

/* True if dir holds a checkpoint with m's weights. */
static bool holds(const char *dir, Model *m)
{
    Model *x = model_new(model_config(m));
    fileio_capture_begin();
    bool ok = ckpt_load(dir, x) == 0 && same_params(x, m);
    free(fileio_capture_end(false));
    model_free(&x);
    return ok;
}

/* Keeping the last N: every save keeps the one it replaces as .prev-<n>
 * and drops the oldest beyond N; restore puts a kept one back in place of
 * a damaged newest; set aside takes one out of the history; keep 1 drops
 * them all; the plain ckpt_save leaves them be. */
static void test_history(TestCtx *t)
{
    ModelConfig c = test_config(false, false);
    Model      *m[5];
    char        names[512], path[PATH_MAX], aside[PATH_MAX];
    for (int i = 0; i < 5; i++) m[i] = random_model(&c, 200 + (uint64_t)i);
    fileio_remove_tree(t->ck);
    fileio_remove_tree(t->bad);
    CkptHistory h;
    EXPECT(ckpt_history(t->ck, &h) == 0 && h.n == 0, "%s", "history of nothing is empty");
    ckpt_history_free(&h);
    for (int i = 0; i < 4; i++)
        EXPECT(ckpt_save_keep(t->ck, 3, m[i], NULL, NULL, NULL) == 0, "keep 3: save %d", i);
    list_dir(t->root, names, sizeof names);
    EXPECT(!strcmp(names, "ck ck.prev-2 ck.prev-3"),
           "after 4 saves keeping 3 the directory holds '%s', expected 'ck ck.prev-2 ck.prev-3'",
           names);
    bool ok = ckpt_history(t->ck, &h) == 0 && h.n == 3;
    for (int i = 0; ok && i < 3; i++) ok = holds(h.dirs[i], m[3 - i]);
    EXPECT(ok && strstr(h.dirs[1], "ck.prev-3") && strstr(h.dirs[2], "ck.prev-2"),
           "history newest first: %d entries, each with the weights of its save", h.n);
    ckpt_history_free(&h);

    /* The newest damaged: the one before it restored in its place, the
     * damaged one set aside, out of the history but kept on disk. */
    ckpt_join(path, t->root, "ck.prev-3");
    EXPECT(ckpt_restore(t->ck, path, aside) == 0 && strstr(aside, "/ck" CKPT_DAMAGED_TAG "1") &&
               holds(aside, m[3]) && holds(t->ck, m[2]) && access(path, F_OK) != 0,
           "restore '%s': the newest set aside as '%s', save 2 back in its place", path, aside);
    EXPECT(ckpt_history(t->ck, &h) == 0 && h.n == 2 && holds(h.dirs[0], m[2]) &&
               holds(h.dirs[1], m[1]),
           "%s", "history after the restore: save 2, then save 1");
    ckpt_history_free(&h);
    EXPECT(ckpt_set_aside(t->ck, aside) == 0 && strstr(aside, "/ck" CKPT_DAMAGED_TAG "2") &&
               holds(aside, m[2]),
           "set aside the newest as '%s', weights kept", aside);
    EXPECT(ckpt_history(t->ck, &h) == 0 && h.n == 1 && holds(h.dirs[0], m[1]), "%s",
           "history without the newest: the kept one of save 1 is all that is left");
    ckpt_history_free(&h);
    /* The next save has nothing to replace and keeps what is there. */
    EXPECT(ckpt_save_keep(t->ck, 3, m[4], NULL, NULL, NULL) == 0 && ckpt_history(t->ck, &h) == 0 &&
               h.n == 2 && holds(h.dirs[0], m[4]) && holds(h.dirs[1], m[1]),
           "%s", "a save after a set aside: the new one, then the kept one of save 1");
    ckpt_history_free(&h);
    /* The plain save deletes what it replaces and leaves the kept ones. */
    EXPECT(ckpt_save(t->ck, m[0], NULL, NULL, NULL) == 0 && ckpt_history(t->ck, &h) == 0 &&
               h.n == 2 && holds(h.dirs[0], m[0]) && holds(h.dirs[1], m[1]),
           "%s", "ckpt_save keeps no history and drops none");
    ckpt_history_free(&h);
    /* keep 1: only the new one is left (the set-aside ones stay). */
    EXPECT(ckpt_save_keep(t->ck, 1, m[2], NULL, NULL, NULL) == 0 && ckpt_history(t->ck, &h) == 0 &&
               h.n == 1 && holds(h.dirs[0], m[2]),
           "%s", "keep 1 drops every kept checkpoint");
    ckpt_history_free(&h);
    list_dir(t->root, names, sizeof names);
    EXPECT(!strcmp(names, "ck ck.damaged-1 ck.damaged-2"),
           "the directory holds '%s', expected the checkpoint and the two set aside", names);
    EXPECT_REFUSED(ckpt_save_keep(t->ck, 0, m[2], NULL, NULL, NULL), ERR_ARG, "keep 0", "keep 0");
    EXPECT_REFUSED(ckpt_save_keep(t->ck, CKPT_KEEP_MAX + 1, m[2], NULL, NULL, NULL), ERR_ARG,
                   "expected 1..", "keep too large");
    for (int i = 0; i < 5; i++) model_free(&m[i]);
    fileio_remove_tree(t->ck);
    ckpt_join(path, t->root, "ck.damaged-1");
    fileio_remove_tree(path);
    ckpt_join(path, t->root, "ck.damaged-2");
    fileio_remove_tree(path);
}

/* A checkpoint directory behind a symbolic link (issue 8, finding 7): saves
 * go to the link's target, which is replaced, kept and set aside beside
 * itself, while the link stays a link; a link to a path that does not exist
 * yet is saved through; a loop of links is refused. */
static void test_symlink(TestCtx *t)
{
    ModelConfig c = test_config(false, false);
    Model      *a = random_model(&c, 301), *b = random_model(&c, 302);
    char        real[PATH_MAX], link[PATH_MAX], names[512], path[PATH_MAX];
    ckpt_join(real, t->root, "disk");
    ckpt_join(link, t->root, "ck-link");
    EXPECT(mkdir(real, 0755) == 0, "mkdir '%s'", real);
    ckpt_join(path, real, "ck");
    EXPECT(ckpt_save(path, a, NULL, NULL, NULL) == 0 && symlink("disk/ck", link) == 0, "%s",
           "a checkpoint, and a relative link to it");
    /* The first save through the link (the one that failed before). */
    EXPECT(ckpt_save_keep(link, 2, b, NULL, NULL, NULL) == 0, "%s",
           "ckpt_save_keep through a symbolic link");
    struct stat st;
    char        target[PATH_MAX];
    ssize_t     k = readlink(link, target, sizeof target - 1);
    if (k >= 0) target[k] = '\0';
    EXPECT(lstat(link, &st) == 0 && S_ISLNK(st.st_mode) && k > 0 && !strcmp(target, "disk/ck"),
           "%s", "the link is still a link to disk/ck");
    list_dir(real, names, sizeof names);
    EXPECT(!strcmp(names, "ck ck.prev-1") && holds(link, b) && holds(path, b),
           "the target was replaced and its predecessor kept beside it: '%s'", names);
    CkptHistory h;
    ckpt_join(path, real, "ck.prev-1");
    EXPECT(ckpt_history(link, &h) == 0 && h.n == 2 && holds(h.dirs[1], a) &&
               !strcmp(h.dirs[1], path),
           "history through the link: %d entries, the kept one beside the target", h.n);
    ckpt_history_free(&h);
    /* Set aside through the link: the target moves, the link dangles until
     * the next save recreates the target. */
    char aside[PATH_MAX];
    EXPECT(ckpt_set_aside(link, aside) == 0 && strstr(aside, "/disk/ck.damaged-1") &&
               !ckpt_exists(link),
           "set aside through the link: '%s'", aside);
    EXPECT(ckpt_save_keep(link, 2, a, NULL, NULL, NULL) == 0 && holds(link, a) &&
               lstat(link, &st) == 0 && S_ISLNK(st.st_mode),
           "%s", "a save through a link to a missing path creates it");
    /* A loop of links is refused, naming it. */
    char loop[PATH_MAX];
    ckpt_join(loop, t->root, "loop");
    EXPECT(symlink("loop", loop) == 0, "%s", "a link to itself");
    EXPECT_REFUSED(ckpt_save(loop, a, NULL, NULL, NULL), ERR_ARG, "more than 8 symbolic links",
                   "a loop of links");
    unlink(loop);
    unlink(link);
    fileio_remove_tree(real);
    model_free(&a);
    model_free(&b);
}

/* The temp directory of a save whose process was killed mid-save (the
 * chaos soak's kill_mid_save) is removed by the next save to the same
 * checkpoint; a look-alike holding anything else, or of another name, is
 * left alone. Before the fix every interrupted save left a checkpoint-sized
 * directory behind for good. */
static void test_save_litter(TestCtx *t)
{
    ModelConfig c = test_config(false, false);
    Model      *m = random_model(&c, 300);
    char        names[512], litter[PATH_MAX], foreign[PATH_MAX], other[PATH_MAX], path[PATH_MAX];
    struct stat st;
    if (lstat(t->ck, &st) == 0) fileio_remove_tree(t->ck);
    ckpt_join(litter, t->root, ".ck" FILEIO_TMP_TAG "Ab12Cd");
    ckpt_join(foreign, t->root, ".ck" FILEIO_TMP_TAG "Zz9999");
    ckpt_join(other, t->root, ".ck" FILEIO_TMP_TAG "not-six");
    const char *dirs[3] = {litter, foreign, other};
    for (int i = 0; i < 3; i++) CHECK(mkdir(dirs[i], 0755) == 0);
    /* What a killed save leaves: a weights file, a half-written temp file. */
    ckpt_join(path, litter, CKPT_MODEL_FILE);
    CHECK(testfs_write(path, "partial", 7) == 0);
    ckpt_join(path, litter, "." CKPT_MODEL_FILE FILEIO_TMP_TAG "x1y2z3");
    CHECK(testfs_write(path, "partial", 7) == 0);
    ckpt_join(path, foreign, "notes.txt");
    CHECK(testfs_write(path, "mine", 4) == 0);
    EXPECT(ckpt_save_keep(t->ck, 2, m, NULL, NULL, NULL) == 0, "%s", "a save beside the litter");
    list_dir(t->root, names, sizeof names);
    EXPECT(access(litter, F_OK) != 0 && access(foreign, F_OK) == 0 && access(other, F_OK) == 0,
           "the interrupted save's directory is removed, the look-alikes kept: '%s'", names);
    for (int i = 1; i < 3; i++) fileio_remove_tree(dirs[i]);
    fileio_remove_tree(t->ck);
    model_free(&m);
}

int ckpt_selftest(bool verbose)
{
    TestCtx t = {.verbose = verbose};
    if (testfs_tmpdir_new("ckpt", t.root, sizeof t.root) != 0) return 1;
    ckpt_join(t.ck, t.root, "ck");
    ckpt_join(t.bad, t.root, "bad");
    Tok *tok = tok_new(TOK_CHARSET_DEFAULT);
    CHECK(tok);

    test_round_trips(&t, tok);
    fileio_remove_tree(t.ck);
    test_replace(&t);
    test_concurrent_reader(&t);
    test_refusals(&t, tok);
    test_integrity(&t, tok);
    test_history(&t);
    test_symlink(&t);
    test_save_litter(&t);

    tok_free(&tok);
    EXPECT(testfs_tmpdir_remove(t.root) == 0, "removing the test directory %s", t.root);
    return expect_end();
}
