#include "tests/fuzz/fuzz.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "common/formats/bpe_gguf.h"
#include "tests/support/fixtures.h"

static int  g_memfd = -1;
static char g_memfd_path[64];
static char g_tmpdir[PATH_MAX];
static char g_tmpfile[PATH_MAX];

_Noreturn static void die(const char *what)
{
    fprintf(stderr, "fuzz: %s: %s\n", what, strerror(errno));
    abort();
}

_Noreturn void fuzz_fail(const char *file, int line, const char *expr, const char *fmt, ...)
{
    fprintf(stderr, "fuzz: %s:%d: property failed: %s: ", file, line, expr);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    abort();
}

static void write_all(int fd, const void *p, size_t n, const char *what)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) die(what);
        c += w;
        n -= (size_t)w;
    }
}

void fuzz_seed(const char *dir, const char *name, const void *p, size_t n)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) die(path);
    write_all(fd, p, n, path);
    if (close(fd) != 0) die(path);
}

void fuzz_seed_msg(const char *dir, const char *name, const ProtobufCMessage *m)
{
    size_t   n = protobuf_c_message_get_packed_size(m);
    uint8_t *p = xmalloc(n ? n : 1);
    CHECK(protobuf_c_message_pack(m, p) == n);
    fuzz_seed(dir, name, p, n);
    free(p);
}

void fuzz_frame_put(uint8_t **buf, size_t *len, const void *p, size_t n)
{
    CHECK(n <= UINT16_MAX);
    *buf = xrealloc(*buf, *len + 2 + n);
    (*buf)[*len] = (uint8_t)(n & 0xff);
    (*buf)[*len + 1] = (uint8_t)(n >> 8);
    if (n) memcpy(*buf + *len + 2, p, n);
    *len += 2 + n;
}

void fuzz_frame_put_msg(uint8_t **buf, size_t *len, const ProtobufCMessage *m)
{
    size_t   n = protobuf_c_message_get_packed_size(m);
    uint8_t *p = xmalloc(n ? n : 1);
    CHECK(protobuf_c_message_pack(m, p) == n);
    fuzz_frame_put(buf, len, p, n);
    free(p);
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path); /* best effort: the directory is ours and temporary */
    return 0;
}

static void remove_tmpdir(void)
{
    if (!g_tmpdir[0]) return;
    nftw(g_tmpdir, remove_one, 8, FTW_DEPTH | FTW_PHYS);
    g_tmpdir[0] = '\0';
}

const char *fuzz_tmpdir(void)
{
    if (g_tmpdir[0]) return g_tmpdir;
    const char *env = getenv("TMPDIR");
    const char *bases[] = {env && env[0] ? env : NULL, "/dev/shm", "/tmp"};
    for (size_t i = 0; i < sizeof bases / sizeof bases[0]; i++) {
        if (!bases[i]) continue;
        snprintf(g_tmpdir, sizeof g_tmpdir, "%s/rlhf-fuzz-XXXXXX", bases[i]);
        if (mkdtemp(g_tmpdir)) {
            atexit(remove_tmpdir);
            return g_tmpdir;
        }
    }
    g_tmpdir[0] = '\0';
    die("mkdtemp");
}

const char *fuzz_tmpfile(const char *name, const void *p, size_t n)
{
    snprintf(g_tmpfile, sizeof g_tmpfile, "%s/%s", fuzz_tmpdir(), name);
    int fd = open(g_tmpfile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) die(g_tmpfile);
    write_all(fd, p, n, g_tmpfile);
    if (close(fd) != 0) die(g_tmpfile);
    return g_tmpfile;
}

void fuzz_tmpfile_remove(const char *name)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", fuzz_tmpdir(), name);
    if (unlink(path) != 0 && errno != ENOENT) die(path);
}

const char *fuzz_memfd_path(const void *p, size_t n)
{
    if (g_memfd < 0) {
        g_memfd = memfd_create("rlhf-fuzz", MFD_CLOEXEC);
        if (g_memfd < 0) die("memfd_create");
        snprintf(g_memfd_path, sizeof g_memfd_path, "/proc/self/fd/%d", g_memfd);
    }
    if (ftruncate(g_memfd, 0) != 0) die("ftruncate");
    const char *c = p;
    size_t      done = 0;
    while (done < n) {
        ssize_t w = pwrite(g_memfd, c + done, n - done, (off_t)done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) die("pwrite");
        done += (size_t)w;
    }
    return g_memfd_path;
}

Bpe *fuzz_bpe(void)
{
    const char *path = getenv("RLHF_SMOLLM2_GGUF");
    if (!path || !*path) path = FIXTURE_SMOLLM2_GGUF;
    Bpe *b = NULL;
    if (access(path, R_OK) == 0 && bpe_load(path, &b) == 0) {
        printf("fuzz: tokenizer: SmolLM2's, from %s (%d tokens)\n", path, bpe_vocab_size(b));
        return b;
    }
    b = fuzz_bpe_small();
    printf("fuzz: tokenizer: a hand-made one (%d tokens; no readable %s)\n", bpe_vocab_size(b),
           path);
    return b;
}

Bpe *fuzz_bpe_small(void)
{
    FixtureVocab fv = {0};
    fixture_vocab_add(&fv, "<|endoftext|>", BPE_TOKEN_CONTROL);
    fixture_vocab_add(&fv, "<|im_start|>", BPE_TOKEN_CONTROL);
    fixture_vocab_add(&fv, "<|im_end|>", BPE_TOKEN_CONTROL);
    fixture_vocab_add(&fv, "<tool>", BPE_TOKEN_USER_DEFINED);
    fixture_vocab_add_bytes(&fv, "\x04");
    const char *const merged[] = {"Ġt", "he", "Ġthe", "in", "Ġa", "an", "Ġ1", "12", "aa", "aaaa"};
    const char *const merges[] = {"Ġ t", "h e", "Ġt he", "i n", "Ġ a",
                                  "a n", "Ġ 1", "1 2",   "a a", "aa aa"};
    for (size_t i = 0; i < sizeof merged / sizeof merged[0]; i++)
        fixture_vocab_add(&fv, merged[i], BPE_TOKEN_NORMAL);
    const char *tpl = "{% for message in messages %}{% if loop.first and messages[0]['role'] != "
                      "'system' %}{{ '<|im_start|>system\nYou are a test.<|im_end|>\n' }}{% endif "
                      "%}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
                      "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ "
                      "'<|im_start|>assistant\\n' }}{% endif %}";
    Bpe        *b = fixture_vocab_bpe(&fv, merges, (int)(sizeof merges / sizeof merges[0]), tpl);
    fixture_vocab_free(&fv);
    CHECK(b);
    return b;
}

uint8_t fuzz_u8(FuzzIn *in)
{
    if (in->n == 0) return 0;
    in->n--;
    return *in->p++;
}

uint16_t fuzz_u16(FuzzIn *in)
{
    uint16_t lo = fuzz_u8(in);
    return (uint16_t)(lo | (uint16_t)fuzz_u8(in) << 8);
}

bool fuzz_frame(FuzzIn *in, const uint8_t **p, size_t *n)
{
    if (in->n == 0) return false;
    size_t want = fuzz_u16(in);
    *n = want < in->n ? want : in->n;
    *p = in->p;
    in->p += *n;
    in->n -= *n;
    return true;
}

void fuzz_init(const char *name, FuzzSeedFn seeds)
{
    log_init(name, LOG_ERROR);
    const char *dir = getenv("RLHF_FUZZ_SEEDS");
    if (!dir || !dir[0]) return;
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) die(dir);
    seeds(dir);
    exit(0);
}
