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
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/log.h"
#include "common/base/rng.h"
#include "common/formats/ckpt_config.h"
#include "common/formats/ckpt_int.h"
#include "common/formats/safetensors.h"

/* The only files a checkpoint directory may hold (besides fileio temp files). */
static const char *const k_ckpt_files[] = {CKPT_CONFIG_FILE, CKPT_MODEL_FILE, CKPT_OPTIM_FILE,
                                           CKPT_STATE_FILE, CKPT_ADAPTER_FILE};

bool ckpt_fail_before_swap = false;

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
void ckpt_join(char *out, const char *dir, const char *name)
{
    int n = snprintf(out, PATH_MAX, "%s/%s", dir, name);
    CHECK(n > 0 && n < PATH_MAX);
}

/* Follows dir while it is a symbolic link (up to 8 links), into out
 * (PATH_MAX bytes): the target of the last link, which may not exist yet.
 * A relative target is taken from the link's directory. A path that is no
 * link is copied as it is. */
static int resolve_dir(const char *fn, const char *dir, char *out)
{
    char cur[PATH_MAX], target[PATH_MAX];
    if (snprintf(cur, sizeof cur, "%s", dir) >= (int)sizeof cur) {
        log_error("%s: checkpoint directory '%.200s...' is too long", fn, dir);
        return ERR_ARG;
    }
    for (int hops = 0;; hops++) {
        struct stat st;
        if (lstat(cur, &st) != 0 || !S_ISLNK(st.st_mode)) break;
        if (hops == 8) {
            log_error("%s: '%s': more than 8 symbolic links to follow", fn, dir);
            return ERR_ARG;
        }
        ssize_t k = readlink(cur, target, sizeof target - 1);
        if (k < 0) {
            log_error("%s: readlink '%s': %s", fn, cur, strerror(errno));
            return ERR_IO;
        }
        target[k] = '\0';
        /* Trailing slashes would make the link's own name the base below. */
        size_t n = strlen(cur);
        while (n > 1 && cur[n - 1] == '/') cur[--n] = '\0';
        char *slash = strrchr(cur, '/');
        int   len = target[0] == '/' || !slash
                        ? snprintf(out, PATH_MAX, "%s", target)
                        : snprintf(out, PATH_MAX, "%.*s/%s", (int)(slash - cur), cur, target);
        if (len < 0 || len >= PATH_MAX - 64) {
            log_error("%s: '%s' links to a path that is too long", fn, cur);
            return ERR_ARG;
        }
        memcpy(cur, out, (size_t)len + 1);
    }
    memcpy(out, cur, strlen(cur) + 1);
    return 0;
}

/* Sequence numbers of the siblings "<base><tag><n>" in parent, largest
 * first, into *out (caller frees, NULL when none). Returns the count, or
 * ERR_IO (logged) when parent cannot be read. */
static int list_tagged(const char *fn, const char *parent, const char *base, const char *tag,
                       uint64_t **out)
{
    *out = NULL;
    DIR *d = opendir(parent);
    if (!d) {
        log_error("%s: opendir '%s': %s", fn, parent, strerror(errno));
        return ERR_IO;
    }
    size_t         nb = strlen(base), nt = strlen(tag);
    int            n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *s = e->d_name;
        if (strncmp(s, base, nb) || strncmp(s + nb, tag, nt)) continue;
        const char *digits = s + nb + nt;
        size_t      k = strspn(digits, "0123456789");
        if (k == 0 || k > 18 || digits[k]) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 8;
            *out = xrealloc(*out, sizeof **out * (size_t)cap);
        }
        (*out)[n++] = strtoull(digits, NULL, 10);
    }
    closedir(d);                /* read-only handle */
    for (int i = 1; i < n; i++) /* insertion sort, descending: a handful of entries */
        for (int j = i; j > 0 && (*out)[j - 1] < (*out)[j]; j--) {
            uint64_t t = (*out)[j];
            (*out)[j] = (*out)[j - 1];
            (*out)[j - 1] = t;
        }
    return n;
}

/* parent/base + tag + seq into out (PATH_MAX bytes; bounded by split_dir). */
static void tagged_path(char *out, const char *parent, const char *base, const char *tag,
                        uint64_t seq)
{
    int n = snprintf(out, PATH_MAX, "%s/%s%s%llu", parent, base, tag, (unsigned long long)seq);
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

/* True if dir is a real directory holding only checkpoint files. */
static bool holds_only_ckpt_files(const char *dir)
{
    struct stat st;
    if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) return false;
    DIR *d = opendir(dir);
    if (!d) return false;
    bool           only = true;
    struct dirent *e;
    while (only && (e = readdir(d)))
        only = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || is_ckpt_file(e->d_name);
    closedir(d); /* read-only handle */
    return only;
}

/* Removes the temp directories ".<base>.tmp-XXXXXX" that earlier saves to
 * parent/base left when their process died mid-save (SIGKILL, a crash, a
 * lost machine): each is a whole or partial checkpoint nobody will read,
 * as large as one, and a learner that crashes now and then would otherwise
 * fill its disk with them (found by the chaos soak, tests/chaos). Only
 * directories of that exact name holding only checkpoint files are
 * removed. A checkpoint directory has one writer (its learner), so no
 * other save is under way. */
static void remove_save_litter(const char *parent, const char *base)
{
    DIR *d = opendir(parent);
    if (!d) return; /* the save's own mkdtemp reports an unreadable parent */
    size_t         nb = strlen(base), nt = strlen(FILEIO_TMP_TAG);
    struct dirent *e;
    char           path[PATH_MAX];
    while ((e = readdir(d))) {
        const char *s = e->d_name;
        if (s[0] != '.' || strncmp(s + 1, base, nb) || strncmp(s + 1 + nb, FILEIO_TMP_TAG, nt) ||
            strlen(s + 1 + nb + nt) != 6)
            continue;
        int n = snprintf(path, sizeof path, "%s/%s", parent, s);
        if (n <= 0 || (size_t)n >= sizeof path || !holds_only_ckpt_files(path)) continue;
        log_warn("ckpt_save: removing '%s', left by a save that was interrupted", path);
        if (fileio_remove_tree(path) != 0)
            log_warn("ckpt_save: '%s' could not be removed whole", path);
    }
    closedir(d); /* read-only handle */
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

/* Keeps the replaced checkpoint old as the newest "<base>.prev-<n>" (keep
 * > 1; else deletes it), then deletes the kept ones beyond keep - 1. The
 * new checkpoint is already in place, so nothing here fails the save. */
static void keep_old(const char *old, const char *parent, const char *base, int keep)
{
    char      path[PATH_MAX];
    uint64_t *seq = NULL;
    int       n = list_tagged("ckpt_save", parent, base, CKPT_PREV_TAG, &seq);
    if (old[0]) {
        bool kept = false;
        if (keep > 1 && n >= 0) {
            tagged_path(path, parent, base, CKPT_PREV_TAG, n > 0 ? seq[0] + 1 : 1);
            kept = rename(old, path) == 0;
            if (!kept)
                log_warn("ckpt_save: could not keep the previous checkpoint as '%s': %s; "
                         "deleting it",
                         path, strerror(errno));
            else
                log_info("ckpt_save: kept the previous checkpoint as '%s'", path);
        }
        if (!kept) remove_old_dir(old);
        if (kept) {
            free(seq);
            n = list_tagged("ckpt_save", parent, base, CKPT_PREV_TAG, &seq);
        }
    }
    for (int i = keep - 1; i < n; i++) {
        if (i < 0) continue;
        tagged_path(path, parent, base, CKPT_PREV_TAG, seq[i]);
        log_info("ckpt_save: dropping '%s' (keeping the last %d checkpoint%s)", path, keep,
                 keep > 1 ? "s" : "");
        remove_old_dir(path);
    }
    free(seq);
}

/* ---- writing ----------------------------------------------------------- */

/* A random id for one save, as hex. Falls back to the clock if the kernel
 * has no entropy to give yet; uniqueness, not secrecy, is what matters. */
static void new_save_id(char out[CKPT_SAVE_ID_LEN + 1])
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
    snprintf(out, CKPT_SAVE_ID_LEN + 1, "%016llx", (unsigned long long)x);
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
    StMeta meta[2] = {{"format", "pt"}, {CKPT_SAVE_ID_KEY, save_id}};
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
    StMeta   meta[2] = {{"step", step}, {CKPT_SAVE_ID_KEY, save_id}};
    return st_write(path, t, 2, meta, 2);
}

static int write_state(const char *path, const CkptTrainerState *ts, const char *save_id)
{
    json_t *o = json_pack("{s:I, s:I, s:s, s:i, s:s}", "step", (json_int_t)ts->step,
                          "policy_version", (json_int_t)ts->policy_version, "run_id", ts->run_id,
                          "rlhf_format_version", CKPT_FORMAT_VERSION, CKPT_SAVE_ID_KEY, save_id);
    if (!o) {
        log_error("ckpt_save: '%s': run_id is not valid UTF-8", path);
        return ERR_ARG;
    }
    if (ts->extra) json_object_set(o, "extra", ts->extra);
    int rc = ckpt_write_json(path, o, JSON_INDENT(2) | JSON_SORT_KEYS);
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
    ckpt_join(aside, holder, "old");
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

/* keep 0: the replaced checkpoint is deleted and kept ones are left alone
 * (ckpt_save); 1..CKPT_KEEP_MAX: as ckpt_save_keep. */
static int save(const char *dir_in, int keep, Model *m, const Tok *tok, const CkptOptim *opt,
                const CkptTrainerState *ts)
{
    CHECK(dir_in && m);
    const ModelConfig *cfg = model_config(m);
    char               dir[PATH_MAX], parent[PATH_MAX], tmp[PATH_MAX], path[PATH_MAX];
    char               old[PATH_MAX], target[PATH_MAX];
    const char        *base = NULL;
    if (keep < 0 || keep > CKPT_KEEP_MAX) {
        log_error("ckpt_save: '%s': keep %d, expected 1..%d", dir_in, keep, CKPT_KEEP_MAX);
        return ERR_ARG;
    }
    int rc = resolve_dir("ckpt_save", dir_in, target);
    if (rc == 0) rc = split_dir("ckpt_save", target, dir, parent, &base);
    if (rc != 0) return rc;
    if (opt) {
        CHECK(opt->exp_avg && opt->exp_avg_sq);
        if (opt->n != model_num_train_params(m) || opt->step < 0) {
            log_error("ckpt_save: '%s': optimizer state of %zu floats at step %lld, expected "
                      "%zu floats (the model's trained parameters) and step >= 0",
                      dir, opt->n, (long long)opt->step, model_num_train_params(m));
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

    remove_save_litter(parent, base);
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
    char save_id[CKPT_SAVE_ID_LEN + 1];
    new_save_id(save_id);
    /* Inside the private directory order does not matter for readers; the
     * config goes last anyway so a stale temp directory without one is
     * plainly incomplete. */
    ckpt_join(path, tmp, CKPT_MODEL_FILE);
    if ((rc = write_weights(path, m, save_id)) != 0) goto remove_tmp;
    if (model_lora(m)) {
        ckpt_join(path, tmp, CKPT_ADAPTER_FILE);
        if ((rc = ckpt_lora_write(path, model_lora(m), save_id)) != 0) goto remove_tmp;
    }
    if (opt) {
        ckpt_join(path, tmp, CKPT_OPTIM_FILE);
        if ((rc = write_optim(path, opt, save_id)) != 0) goto remove_tmp;
    }
    if (ts) {
        ckpt_join(path, tmp, CKPT_STATE_FILE);
        if ((rc = write_state(path, ts, save_id)) != 0) goto remove_tmp;
    }
    ckpt_join(path, tmp, CKPT_CONFIG_FILE);
    if ((rc = ckpt_config_write(path, cfg, tok, save_id)) != 0) goto remove_tmp;
    if (ckpt_fail_before_swap) {
        log_error("ckpt_save: '%s': failing before the swap (self-test hook)", dir);
        rc = ERR_IO;
        goto remove_tmp;
    }
    if ((rc = swap_in(tmp, dir, parent, base, exists, old)) != 0) goto remove_tmp;
    /* The swap is durable only once the parent directory is on disk. */
    rc = fileio_fsync_dir(parent);
    if (keep == 0 && old[0]) remove_old_dir(old);
    if (keep > 0) {
        keep_old(old, parent, base, keep);
        if (fileio_fsync_dir(parent) != 0)
            log_warn("ckpt_save: '%s': the kept checkpoints' names may not survive a crash",
                     parent);
    }
    if (old[0] && strcmp(old, tmp) != 0) {
        /* Two-step fallback: old was holder/old; drop the holder too. */
        char *slash = strrchr(old, '/');
        *slash = '\0';
        rmdir(old); /* empty by now unless remove_old_dir warned */
    }
    if (rc == 0 && strcmp(dir_in, dir) != 0)
        log_info("ckpt_save: wrote '%s', the target of the link '%s' (save %s)", dir, dir_in,
                 save_id);
    else if (rc == 0)
        log_info("ckpt_save: wrote '%s' (save %s)", dir, save_id);
    return rc;
remove_tmp:
    /* tmp is our private directory, so removing all of it is safe. */
    fileio_remove_tree(tmp);
    return rc;
}

int ckpt_save(const char *dir, Model *m, const Tok *tok, const CkptOptim *opt,
              const CkptTrainerState *ts)
{
    return save(dir, 0, m, tok, opt, ts);
}

int ckpt_save_keep(const char *dir, int keep, Model *m, const Tok *tok, const CkptOptim *opt,
                   const CkptTrainerState *ts)
{
    if (keep < 1) {
        log_error("ckpt_save: '%s': keep %d, expected 1..%d", dir, keep, CKPT_KEEP_MAX);
        return ERR_ARG;
    }
    return save(dir, keep, m, tok, opt, ts);
}

int ckpt_history(const char *dir_in, CkptHistory *h)
{
    CHECK(dir_in && h);
    memset(h, 0, sizeof *h);
    char        target[PATH_MAX], dir[PATH_MAX], parent[PATH_MAX], path[PATH_MAX];
    const char *base = NULL;
    int         rc = resolve_dir("ckpt_history", dir_in, target);
    if (rc == 0) rc = split_dir("ckpt_history", target, dir, parent, &base);
    if (rc != 0) return rc;
    uint64_t   *seq = NULL;
    int         n = 0;
    struct stat st;
    /* A missing parent holds no checkpoints; anything else unreadable is an error. */
    if (stat(parent, &st) == 0 &&
        (n = list_tagged("ckpt_history", parent, base, CKPT_PREV_TAG, &seq)) < 0)
        return n;
    h->dirs = xcalloc((size_t)n + 1, sizeof *h->dirs);
    if (ckpt_exists(dir)) h->dirs[h->n++] = xstrdup(dir);
    for (int i = 0; i < n; i++) {
        tagged_path(path, parent, base, CKPT_PREV_TAG, seq[i]);
        if (ckpt_exists(path)) h->dirs[h->n++] = xstrdup(path);
    }
    free(seq);
    return 0;
}

void ckpt_history_free(CkptHistory *h)
{
    if (!h) return;
    for (int i = 0; i < h->n; i++) free(h->dirs[i]);
    free(h->dirs);
    memset(h, 0, sizeof *h);
}

int ckpt_set_aside(const char *dir_in, char *out)
{
    CHECK(dir_in && out);
    out[0] = '\0';
    char        target[PATH_MAX], dir[PATH_MAX], parent[PATH_MAX];
    const char *base = NULL;
    int         rc = resolve_dir("ckpt_set_aside", dir_in, target);
    if (rc == 0) rc = split_dir("ckpt_set_aside", target, dir, parent, &base);
    if (rc != 0) return rc;
    uint64_t *seq = NULL;
    int       n = list_tagged("ckpt_set_aside", parent, base, CKPT_DAMAGED_TAG, &seq);
    if (n < 0) return n;
    tagged_path(out, parent, base, CKPT_DAMAGED_TAG, n > 0 ? seq[0] + 1 : 1);
    free(seq);
    if (rename(dir, out) != 0) {
        log_error("ckpt_set_aside: rename '%s' -> '%s': %s", dir, out, strerror(errno));
        out[0] = '\0';
        return ERR_IO;
    }
    return fileio_fsync_dir(parent);
}

int ckpt_restore(const char *dir_in, const char *from, char *aside)
{
    CHECK(dir_in && from && aside);
    aside[0] = '\0';
    char        target[PATH_MAX], dir[PATH_MAX], parent[PATH_MAX];
    const char *base = NULL;
    int         rc = resolve_dir("ckpt_restore", dir_in, target);
    if (rc == 0) rc = split_dir("ckpt_restore", target, dir, parent, &base);
    if (rc != 0) return rc;
    struct stat st;
    if (lstat(dir, &st) != 0) { /* nothing to set aside */
        if (rename(from, dir) != 0) {
            log_error("ckpt_restore: rename '%s' -> '%s': %s", from, dir, strerror(errno));
            return ERR_IO;
        }
        return fileio_fsync_dir(parent);
    }
    uint64_t *seq = NULL;
    int       n = list_tagged("ckpt_restore", parent, base, CKPT_DAMAGED_TAG, &seq);
    if (n < 0) return n;
    tagged_path(aside, parent, base, CKPT_DAMAGED_TAG, n > 0 ? seq[0] + 1 : 1);
    free(seq);
    /* One step: dir holds the kept checkpoint, from the damaged one; then
     * the damaged one moves on to its own name. A crash in between leaves
     * it among the kept ones, where the next fallback finds it damaged. */
    if (renameat2(AT_FDCWD, from, AT_FDCWD, dir, RENAME_EXCHANGE) == 0) {
        if (rename(from, aside) != 0) {
            log_error("ckpt_restore: rename '%s' -> '%s': %s", from, aside, strerror(errno));
            aside[0] = '\0';
            return ERR_IO;
        }
        return fileio_fsync_dir(parent);
    }
    if (errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP) {
        log_error("ckpt_restore: exchange '%s' <-> '%s': %s", from, dir, strerror(errno));
        aside[0] = '\0';
        return ERR_IO;
    }
    if (rename(dir, aside) != 0 || rename(from, dir) != 0) {
        log_error("ckpt_restore: moving '%s' aside and '%s' into its place: %s", dir, from,
                  strerror(errno));
        return ERR_IO;
    }
    return fileio_fsync_dir(parent);
}

bool ckpt_exists(const char *dir)
{
    char        path[PATH_MAX];
    struct stat st;
    int         n = snprintf(path, sizeof path, "%s/%s", dir, CKPT_CONFIG_FILE);
    return n > 0 && (size_t)n < sizeof path && stat(path, &st) == 0 && S_ISREG(st.st_mode);
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

/* Checks every tensor of f against the model before anything is copied;
 * with may_lack_bias, score.bias may be absent (a transformers classifier). */
static int check_tensors(const char *path, StFile *f, Model *m, bool may_lack_bias)
{
    char missing[512] = "", extra[512] = "";
    int  n_missing = 0, n_extra = 0;
    for (int i = 0; i < model_num_tensors(m); i++) {
        ModelTensor mt;
        model_tensor(m, i, &mt);
        int j = st_find(f, mt.name);
        if (j < 0 && may_lack_bias && !strcmp(mt.name, "score.bias")) continue;
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

/* The adapters of checkpoint dir into lo, from the same save as its
 * config (cfg_id): ERR_AGAIN when another save's (replaced while loading). */
static int load_adapters(const char *dir, const char *cfg_id, Lora *lo)
{
    char    path[PATH_MAX];
    StFile *f = NULL;
    ckpt_join(path, dir, CKPT_ADAPTER_FILE);
    int rc = st_open(path, &f);
    if (rc) return rc;
    const char *id = st_meta_get(f, CKPT_SAVE_ID_KEY);
    if (!id || strcmp(id, cfg_id)) {
        log_warn("ckpt_load: '%s': config.json is from save '%s' but the adapters from save '%s' "
                 "(replaced while loading?)",
                 dir, cfg_id[0] ? cfg_id : "none", id ? id : "none");
        rc = ERR_AGAIN;
    } else {
        rc = ckpt_lora_read(path, f, lo);
    }
    st_close(&f);
    return rc;
}

int ckpt_load(const char *dir, Model *m)
{
    CHECK(dir && m);
    char    cpath[PATH_MAX], wpath[PATH_MAX];
    json_t *o = NULL;
    int     rc = ckpt_read_json("ckpt_load", dir, CKPT_CONFIG_FILE, false, &o, cpath);
    if (rc != 0) return rc;
    ModelConfig cfg;
    char        cfg_id[CKPT_SAVE_ID_LEN + 1] = "";
    rc = ckpt_config_parse("ckpt_load", cpath, o, &cfg);
    bool          is_classifier = ckpt_config_is_classifier(o);
    const json_t *id = json_object_get(o, CKPT_SAVE_ID_KEY);
    if (json_is_string(id)) snprintf(cfg_id, sizeof cfg_id, "%s", json_string_value(id));
    json_decref(o);
    if (rc != 0) return rc;
    if ((rc = compare_config(cpath, &cfg, model_config(m))) != 0) return rc;

    ckpt_join(wpath, dir, CKPT_MODEL_FILE);
    StFile *f = NULL;
    if ((rc = st_open(wpath, &f)) != 0) return rc;
    const char *w_id = st_meta_get(f, CKPT_SAVE_ID_KEY);
    if ((cfg_id[0] || w_id) && !(w_id && !strcmp(cfg_id, w_id))) {
        log_warn("ckpt_load: '%s': config.json is from save '%s' but the weights from save '%s' "
                 "(replaced while loading?)",
                 dir, cfg_id[0] ? cfg_id : "none", w_id ? w_id : "none");
        rc = ERR_AGAIN;
        goto close_file;
    }
    if ((rc = check_tensors(wpath, f, m, is_classifier)) != 0) goto close_file;
    ckpt_join(cpath, dir, CKPT_ADAPTER_FILE);
    struct stat ast;
    if (!model_lora(m) && stat(cpath, &ast) == 0)
        log_warn("ckpt_load: '%s' holds LoRA adapters (%s) that this load leaves out: the model "
                 "is the frozen base (rlhf-export merges the adapters into one model)",
                 dir, CKPT_ADAPTER_FILE);
    if (!st_has_checksums(f))
        log_warn("ckpt_load: '%s' records no tensor checksums (saved before they existed, or by "
                 "another tool): loading it unverified",
                 wpath);
    if (model_lora(m) && (rc = load_adapters(dir, cfg_id, model_lora(m))) != 0) goto close_file;
    for (int i = 0; i < model_num_tensors(m) && rc == 0; i++) {
        ModelTensor mt;
        model_tensor(m, i, &mt);
        if (is_classifier && !strcmp(mt.name, "score.bias") && st_find(f, mt.name) < 0) {
            log_info("ckpt_load: '%s' has no score.bias (a transformers classifier's head has "
                     "none): 0",
                     wpath);
            mt.data[0] = 0.0f;
            continue;
        }
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
    if (!st_has_checksums(f))
        log_warn("ckpt_load_optim: '%s' records no checksums (saved before they existed): "
                 "loading it unverified",
                 path);
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
    int     rc = ckpt_read_json(fn, dir, CKPT_STATE_FILE, true, &o, path);
    if (rc != 0) return rc;
    long long   step, version;
    const char *run_id = NULL;
    if ((rc = ckpt_get_int(fn, path, o, "step", true, 0, 0, LLONG_MAX, &step)) ||
        (rc = ckpt_get_int(fn, path, o, "policy_version", true, 0, 0, LLONG_MAX, &version)))
        goto done;
    if (!(run_id = ckpt_get_string(fn, path, o, "run_id"))) {
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
