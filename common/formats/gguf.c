#include "common/formats/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/log.h"
#include "common/base/rng.h"

/* Values and tensor bytes go from disk to memory without swapping. */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c assumes a little-endian host"
#endif

/* ---- metadata value types -------------------------------------------- */

/* Bytes of one scalar metadata value, 0 for strings and arrays, -1 if the
 * type id is unknown. */
static int val_size(uint32_t type)
{
    static const int k_size[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return type < sizeof k_size / sizeof k_size[0] ? k_size[type] : -1;
}

static const char *val_name(int type)
{
    static const char *k_names[] = {"UINT8",  "INT8",    "UINT16", "INT16",  "UINT32",
                                    "INT32",  "FLOAT32", "BOOL",   "STRING", "ARRAY",
                                    "UINT64", "INT64",   "FLOAT64"};
    return type >= 0 && type < 13 ? k_names[type] : "?";
}

/* ---- the file ---------------------------------------------------------- */

typedef struct {
    char   *key;
    int     type;      /* GGUF_VAL_* */
    int     elem_type; /* arrays: GGUF_VAL_* of the elements */
    size_t  n;         /* arrays: element count */
    uint8_t raw[8];    /* scalars: the value's bytes */
    GgufStr str;       /* STRING: the value (owned through str_buf) */
    char   *str_buf;   /* STRING, arrays of STRING: the bytes, NUL after each */
    void   *arr;       /* numeric arrays: n packed elements; string arrays: GgufStr[n] */
} Kv;

typedef struct {
    char           *name;
    const GgufType *type;
    int             n_dims;
    int64_t         ne[GGUF_MAX_DIMS];
    size_t          numel;
    size_t          nbytes;
    uint64_t        rel;    /* offset in the data region */
    uint64_t        offset; /* absolute */
} Tensor;

struct GgufFile {
    char    *path;
    int      fd;
    uint64_t size; /* bytes in the file at open */
    uint32_t version;
    size_t   alignment;
    uint64_t data_start;
    Kv      *kv;
    int      n_kv;
    Tensor  *tensors;
    int      n_tensors;
};

/* ---- parsing ----------------------------------------------------------- */

/* A sequential reader over the header with a small buffer. Every read is
 * checked against the file size first, so a truncated file is reported as
 * such and nothing is read past the end. */
typedef struct {
    GgufFile *f;
    uint64_t  pos;                      /* file offset of the next byte */
    uint64_t  buf_off;                  /* file offset of buf[0] */
    size_t    buf_len;                  /* valid bytes in buf */
    char      what[GGUF_MAX_NAME + 96]; /* what is being read, for messages */
    uint8_t   buf[65536];
} Parser;

/* Logs "gguf_open: 'path': <message>" and returns code. */
static int bad(const GgufFile *f, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int bad(const GgufFile *f, int code, const char *fmt, ...)
{
    char    msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_error("gguf_open: '%s': %s", f->path, msg);
    return code;
}

static void set_what(Parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_what(Parser *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->what, sizeof p->what, fmt, ap);
    va_end(ap);
}

static uint64_t left(const Parser *p)
{
    return p->f->size - p->pos;
}

static int rd(Parser *p, void *dst, size_t n)
{
    if ((uint64_t)n > left(p))
        return bad(p->f, ERR_FORMAT,
                   "truncated: reading %s needs %zu bytes at offset %llu but the file ends at "
                   "%llu",
                   p->what, n, (unsigned long long)p->pos, (unsigned long long)p->f->size);
    uint8_t *d = dst;
    while (n > 0) {
        if (p->pos < p->buf_off || p->pos >= p->buf_off + p->buf_len) {
            uint64_t want = p->f->size - p->pos;
            size_t   len = want < sizeof p->buf ? (size_t)want : sizeof p->buf;
            /* A short read means the file shrank after its size was taken. */
            int rc = fileio_pread_exact(p->f->fd, p->buf, len, p->pos, NULL);
            if (rc != 0)
                return bad(p->f, ERR_IO, "reading %s at offset %llu: %s", p->what,
                           (unsigned long long)p->pos,
                           rc == ERR_IO ? strerror(errno) : "file shrank while reading");
            p->buf_off = p->pos;
            p->buf_len = len;
        }
        size_t at = (size_t)(p->pos - p->buf_off);
        size_t k = p->buf_len - at < n ? p->buf_len - at : n;
        memcpy(d, p->buf + at, k);
        d += k;
        n -= k;
        p->pos += k;
    }
    return 0;
}

static int rd_u32(Parser *p, uint32_t *v)
{
    return rd(p, v, 4);
}

static int rd_u64(Parser *p, uint64_t *v)
{
    return rd(p, v, 8);
}

/* A string's length field, checked against max and the bytes left. */
static int rd_str_len(Parser *p, uint64_t max, uint64_t *len)
{
    uint64_t at = p->pos;
    int      rc = rd_u64(p, len);
    if (rc) return rc;
    if (*len > max)
        return bad(p->f, ERR_FORMAT,
                   "%s: string length %llu at offset %llu exceeds the limit of %llu", p->what,
                   (unsigned long long)*len, (unsigned long long)at, (unsigned long long)max);
    if (*len > left(p))
        return bad(p->f, ERR_FORMAT,
                   "truncated: %s: string length %llu at offset %llu but only %llu bytes follow",
                   p->what, (unsigned long long)*len, (unsigned long long)at,
                   (unsigned long long)left(p));
    return 0;
}

/* A name (key or tensor name): 1..GGUF_MAX_NAME bytes without NUL, returned
 * as a new NUL-terminated string. */
static int rd_name(Parser *p, char **out)
{
    uint64_t len;
    int      rc = rd_str_len(p, GGUF_MAX_NAME, &len);
    if (rc) return rc;
    if (len == 0) return bad(p->f, ERR_FORMAT, "%s: empty name", p->what);
    char *s = xmalloc((size_t)len + 1);
    if ((rc = rd(p, s, (size_t)len)) != 0) {
        free(s);
        return rc;
    }
    s[len] = '\0';
    if (strlen(s) != len) {
        free(s);
        return bad(p->f, ERR_FORMAT, "%s: name contains a NUL byte", p->what);
    }
    *out = s;
    return 0;
}

/* Reads n strings into one buffer (each followed by a NUL) and fills strs. */
static int rd_strings(Parser *p, size_t n, GgufStr *strs, char **buf_out)
{
    size_t  cap = 4096, used = 0;
    char   *buf = xmalloc(cap);
    size_t *offs = xmalloc(sizeof *offs * (n ? n : 1));
    int     rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        uint64_t len;
        if ((rc = rd_str_len(p, GGUF_MAX_STRING, &len)) != 0) break;
        /* The total is bounded by the file size, checked above per string. */
        if (cap - used < (size_t)len + 1) {
            while (cap - used < (size_t)len + 1) cap *= 2;
            buf = xrealloc(buf, cap);
        }
        offs[i] = used;
        strs[i].len = (size_t)len;
        if ((rc = rd(p, buf + used, (size_t)len)) != 0) break;
        buf[used + len] = '\0';
        used += (size_t)len + 1;
    }
    if (rc == 0)
        for (size_t i = 0; i < n; i++) strs[i].s = buf + offs[i];
    free(offs);
    if (rc) {
        free(buf);
        return rc;
    }
    *buf_out = buf;
    return 0;
}

static int parse_value(Parser *p, Kv *kv, uint64_t *n_array_total)
{
    GgufFile *f = p->f;
    int       rc;
    if (kv->type == GGUF_VAL_STRING) {
        uint64_t len;
        if ((rc = rd_str_len(p, GGUF_MAX_STRING, &len)) != 0) return rc;
        kv->str_buf = xmalloc((size_t)len + 1);
        if ((rc = rd(p, kv->str_buf, (size_t)len)) != 0) return rc;
        kv->str_buf[len] = '\0';
        kv->str = (GgufStr){kv->str_buf, (size_t)len};
        return 0;
    }
    if (kv->type != GGUF_VAL_ARRAY) return rd(p, kv->raw, (size_t)val_size((uint32_t)kv->type));
    uint32_t et;
    uint64_t n;
    if ((rc = rd_u32(p, &et)) != 0) return rc;
    int es = val_size(et);
    if (es < 0)
        return bad(f, ERR_FORMAT,
                   "key '%s': array element type %u is not a GGUF value type (0..12)", kv->key, et);
    if (et == GGUF_VAL_ARRAY)
        return bad(f, ERR_UNSUPPORTED, "key '%s': arrays of arrays are not supported", kv->key);
    uint64_t at = p->pos;
    if ((rc = rd_u64(p, &n)) != 0) return rc;
    /* Each element takes at least one byte (a string at least its 8-byte
     * length), so a count the rest of the file cannot hold is refused before
     * anything is allocated for it. */
    uint64_t min_size = et == GGUF_VAL_STRING ? 8 : (uint64_t)es;
    if (n > GGUF_MAX_ARRAY - *n_array_total)
        return bad(f, ERR_FORMAT,
                   "key '%s': array count %llu at offset %llu exceeds the limit of %llu elements "
                   "per file",
                   kv->key, (unsigned long long)n, (unsigned long long)at,
                   (unsigned long long)GGUF_MAX_ARRAY);
    if (n > left(p) / min_size)
        return bad(f, ERR_FORMAT,
                   "truncated: key '%s': array of %llu %s needs at least %llu bytes at offset %llu "
                   "but only %llu are left",
                   kv->key, (unsigned long long)n, val_name((int)et),
                   (unsigned long long)(n * min_size), (unsigned long long)at,
                   (unsigned long long)left(p));
    *n_array_total += n;
    kv->elem_type = (int)et;
    kv->n = (size_t)n;
    if (et == GGUF_VAL_STRING) {
        kv->arr = xmalloc(sizeof(GgufStr) * (n ? (size_t)n : 1));
        return rd_strings(p, (size_t)n, kv->arr, &kv->str_buf);
    }
    kv->arr = xmalloc(n ? (size_t)n * (size_t)es : 1);
    return rd(p, kv->arr, (size_t)n * (size_t)es);
}

static int parse_kv(Parser *p, uint64_t i, Kv *kv, uint64_t *n_array_total)
{
    int rc;
    set_what(p, "the key of metadata entry %llu", (unsigned long long)i);
    if ((rc = rd_name(p, &kv->key)) != 0) return rc;
    set_what(p, "the value of key '%s'", kv->key);
    uint32_t type;
    if ((rc = rd_u32(p, &type)) != 0) return rc;
    if (val_size(type) < 0)
        return bad(p->f, ERR_FORMAT, "key '%s': value type %u is not a GGUF value type (0..12)",
                   kv->key, type);
    kv->type = (int)type;
    return parse_value(p, kv, n_array_total);
}

static int parse_tensor(Parser *p, uint64_t i, Tensor *t)
{
    GgufFile *f = p->f;
    int       rc;
    set_what(p, "the name of tensor %llu", (unsigned long long)i);
    if ((rc = rd_name(p, &t->name)) != 0) return rc;
    set_what(p, "the directory entry of tensor '%s'", t->name);
    uint32_t nd;
    if ((rc = rd_u32(p, &nd)) != 0) return rc;
    if (nd < 1 || nd > GGUF_MAX_DIMS)
        return bad(f, ERR_FORMAT, "tensor '%s': n_dims %u, expected 1..%d", t->name, nd,
                   GGUF_MAX_DIMS);
    t->n_dims = (int)nd;
    uint64_t numel = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) {
        uint64_t ne = 1;
        if (d < t->n_dims && (rc = rd_u64(p, &ne)) != 0) return rc;
        if (ne < 1 || ne > (uint64_t)GGUF_MAX_DIM)
            return bad(f, ERR_FORMAT, "tensor '%s': dimension ne[%d] = %llu, expected 1..%lld",
                       t->name, d, (unsigned long long)ne, (long long)GGUF_MAX_DIM);
        t->ne[d] = (int64_t)ne;
        if (__builtin_mul_overflow(numel, ne, &numel) || numel > (uint64_t)GGUF_MAX_NUMEL)
            return bad(f, ERR_FORMAT, "tensor '%s': more than %lld elements (absurd dimensions)",
                       t->name, (long long)GGUF_MAX_NUMEL);
    }
    uint32_t type;
    if ((rc = rd_u32(p, &type)) != 0) return rc;
    t->type = gguf_type_find(type);
    if (!t->type) {
        /* A reserved id names a format this reader has no block layout
         * for; anything else is no ggml type at all. */
        bool known = gguf_type_is_reserved(type);
        return bad(f, known ? ERR_UNSUPPORTED : ERR_FORMAT,
                   "tensor '%s': %s tensor type %u (supported: " GGUF_TYPE_SUPPORTED_NAMES ")",
                   t->name, known ? "unsupported" : "unknown", type);
    }
    if (t->ne[0] % t->type->block != 0)
        return bad(f, ERR_FORMAT,
                   "tensor '%s': row length ne[0] = %lld is not a multiple of the %s block size %d",
                   t->name, (long long)t->ne[0], t->type->name, t->type->block);
    t->numel = (size_t)numel;
    /* numel <= 2^40 and a block is at most 292 bytes: no overflow. */
    t->nbytes = (size_t)(numel / (uint64_t)t->type->block) * (size_t)t->type->size;
    return rd_u64(p, &t->rel);
}

typedef struct {
    uint64_t begin, end;
    int      idx;
} Span;

static int span_cmp(const void *a, const void *b)
{
    const Span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->idx - y->idx;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Finds a duplicate among n names in O(n log n); returns it or NULL. */
static const char *find_duplicate(char **names, size_t n)
{
    qsort(names, n, sizeof *names, name_cmp);
    for (size_t i = 1; i < n; i++)
        if (!strcmp(names[i - 1], names[i])) return names[i];
    return NULL;
}

static int check_unique(GgufFile *f)
{
    size_t n = (size_t)(f->n_kv > f->n_tensors ? f->n_kv : f->n_tensors);
    char **names = xmalloc(sizeof *names * (n ? n : 1));
    int    rc = 0;
    for (int i = 0; i < f->n_kv; i++) names[i] = f->kv[i].key;
    const char *dup = find_duplicate(names, (size_t)f->n_kv);
    if (dup) rc = bad(f, ERR_FORMAT, "metadata key '%s' appears twice", dup);
    for (int i = 0; i < f->n_tensors && rc == 0; i++) names[i] = f->tensors[i].name;
    if (rc == 0 && (dup = find_duplicate(names, (size_t)f->n_tensors)))
        rc = bad(f, ERR_FORMAT, "tensor '%s' appears twice", dup);
    free(names);
    return rc;
}

static int set_alignment(GgufFile *f)
{
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    int i = gguf_find_key(f, "general.alignment");
    if (i < 0) return 0;
    const Kv *kv = &f->kv[i];
    if (kv->type != GGUF_VAL_UINT32)
        return bad(f, ERR_FORMAT, "general.alignment has type %s, expected UINT32",
                   val_name(kv->type));
    uint32_t a;
    memcpy(&a, kv->raw, 4);
    if (a == 0 || (a & (a - 1)) != 0 || a > GGUF_MAX_ALIGNMENT)
        return bad(f, ERR_FORMAT, "general.alignment %u, expected a power of two in 1..%d", a,
                   GGUF_MAX_ALIGNMENT);
    f->alignment = a;
    return 0;
}

/* Offsets aligned, ranges inside the file, no two tensors overlapping. */
static int check_ranges(GgufFile *f)
{
    uint64_t data_len = f->size - f->data_start;
    for (int i = 0; i < f->n_tensors; i++) {
        Tensor *t = &f->tensors[i];
        if (t->rel % f->alignment != 0)
            return bad(f, ERR_FORMAT,
                       "tensor '%s': offset %llu is not a multiple of the alignment %zu", t->name,
                       (unsigned long long)t->rel, f->alignment);
        if (t->rel > data_len || t->nbytes > data_len - t->rel)
            return bad(f, ERR_FORMAT,
                       "tensor '%s': data [%llu, %llu) of the data region extends past the end "
                       "of the file (data region of %llu bytes; truncated or bad offset)",
                       t->name, (unsigned long long)t->rel,
                       (unsigned long long)t->rel + (unsigned long long)t->nbytes,
                       (unsigned long long)data_len);
        t->offset = f->data_start + t->rel;
    }
    Span *s = xmalloc(sizeof *s * (size_t)(f->n_tensors ? f->n_tensors : 1));
    for (int i = 0; i < f->n_tensors; i++)
        s[i] = (Span){f->tensors[i].rel, f->tensors[i].rel + f->tensors[i].nbytes, i};
    qsort(s, (size_t)f->n_tensors, sizeof *s, span_cmp);
    int rc = 0;
    for (int i = 1; i < f->n_tensors && rc == 0; i++)
        if (s[i].begin < s[i - 1].end)
            rc = bad(f, ERR_FORMAT,
                     "tensor '%s' at [%llu, %llu) overlaps tensor '%s' at [%llu, %llu)",
                     f->tensors[s[i].idx].name, (unsigned long long)s[i].begin,
                     (unsigned long long)s[i].end, f->tensors[s[i - 1].idx].name,
                     (unsigned long long)s[i - 1].begin, (unsigned long long)s[i - 1].end);
    free(s);
    return rc;
}

static int parse(GgufFile *f)
{
    Parser *p = xcalloc(1, sizeof *p);
    p->f = f;
    int     rc;
    uint8_t magic[4];
    set_what(p, "the magic");
    if ((rc = rd(p, magic, 4)) != 0) goto done;
    if (memcmp(magic, "GGUF", 4) != 0) {
        uint32_t m;
        memcpy(&m, magic, 4);
        rc = bad(f, ERR_FORMAT, "magic 0x%08x, expected 0x46554747 (\"GGUF\"): not a GGUF file", m);
        goto done;
    }
    set_what(p, "the version");
    if ((rc = rd_u32(p, &f->version)) != 0) goto done;
    if (f->version != 2 && f->version != 3) {
        /* A big-endian file's version reads byte-swapped here. */
        bool swapped = f->version >= (1u << 16) && (f->version & 0xffffu) == 0;
        rc = bad(f, ERR_UNSUPPORTED, "version %u%s, expected 2 or 3", f->version,
                 swapped ? " (a big-endian file; only little-endian files are supported)" : "");
        goto done;
    }
    uint64_t n_tensors, n_kv;
    set_what(p, "the tensor count");
    if ((rc = rd_u64(p, &n_tensors)) != 0) goto done;
    set_what(p, "the metadata count");
    if ((rc = rd_u64(p, &n_kv)) != 0) goto done;
    /* A tensor entry takes at least 33 bytes and a metadata entry 14, so
     * counts the file cannot hold are refused before allocating for them. */
    if (n_tensors > GGUF_MAX_COUNT || n_kv > GGUF_MAX_COUNT) {
        rc = bad(f, ERR_FORMAT, "%s count %llu is absurd (limit %llu)",
                 n_tensors > GGUF_MAX_COUNT ? "tensor" : "metadata",
                 (unsigned long long)(n_tensors > GGUF_MAX_COUNT ? n_tensors : n_kv),
                 (unsigned long long)GGUF_MAX_COUNT);
        goto done;
    }
    if (n_tensors * 33 + n_kv * 14 > left(p)) {
        rc = bad(f, ERR_FORMAT,
                 "truncated: %llu tensors and %llu metadata entries need at least %llu bytes but "
                 "only %llu follow the header",
                 (unsigned long long)n_tensors, (unsigned long long)n_kv,
                 (unsigned long long)(n_tensors * 33 + n_kv * 14), (unsigned long long)left(p));
        goto done;
    }
    f->kv = xcalloc(n_kv ? (size_t)n_kv : 1, sizeof *f->kv);
    uint64_t n_array_total = 0;
    for (uint64_t i = 0; i < n_kv; i++) {
        f->n_kv++; /* counted first so gguf_close frees a half-read entry */
        if ((rc = parse_kv(p, i, &f->kv[i], &n_array_total)) != 0) goto done;
    }
    f->tensors = xcalloc(n_tensors ? (size_t)n_tensors : 1, sizeof *f->tensors);
    for (uint64_t i = 0; i < n_tensors; i++) {
        f->n_tensors++;
        if ((rc = parse_tensor(p, i, &f->tensors[i])) != 0) goto done;
    }
    if ((rc = check_unique(f)) != 0 || (rc = set_alignment(f)) != 0) goto done;
    /* The data region starts at the next multiple of the alignment. */
    f->data_start = (p->pos + f->alignment - 1) / f->alignment * f->alignment;
    if (f->n_tensors > 0 && f->data_start > f->size) {
        rc = bad(f, ERR_FORMAT,
                 "truncated: the data region would start at %llu but the file ends at %llu",
                 (unsigned long long)f->data_start, (unsigned long long)f->size);
        goto done;
    }
    if (f->data_start > f->size) f->data_start = f->size;
    rc = check_ranges(f);
done:
    free(p);
    return rc;
}

int gguf_open(const char *path, GgufFile **out)
{
    CHECK(path && out);
    *out = NULL;
    GgufFile *f = xcalloc(1, sizeof *f);
    f->path = xstrdup(path);
    int rc = fileio_open_regular("gguf_open", path, &f->fd, &f->size);
    if (rc != 0) goto fail;
    if ((rc = parse(f)) != 0) goto fail;
    *out = f;
    return 0;
fail:
    gguf_close(&f);
    return rc;
}

void gguf_close(GgufFile **fp)
{
    if (!fp || !*fp) return;
    GgufFile *f = *fp;
    if (f->fd >= 0) close(f->fd); /* read-only: nothing to lose on close */
    for (int i = 0; i < f->n_kv; i++) {
        free(f->kv[i].key);
        free(f->kv[i].str_buf);
        free(f->kv[i].arr);
    }
    free(f->kv);
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    free(f->path);
    free(f);
    *fp = NULL;
}

const char *gguf_path(const GgufFile *f)
{
    return f->path;
}

uint32_t gguf_version(const GgufFile *f)
{
    return f->version;
}

size_t gguf_alignment(const GgufFile *f)
{
    return f->alignment;
}

/* ---- metadata ---------------------------------------------------------- */

int gguf_kv_count(const GgufFile *f)
{
    return f->n_kv;
}

int gguf_find_key(const GgufFile *f, const char *key)
{
    /* Linear: a few dozen keys, looked up a handful of times per load. */
    for (int i = 0; i < f->n_kv; i++)
        if (!strcmp(f->kv[i].key, key)) return i;
    return ERR_NOTFOUND;
}

void gguf_kv_at(const GgufFile *f, int i, const char **key, int *type, int *elem_type, size_t *n)
{
    CHECK(i >= 0 && i < f->n_kv);
    const Kv *kv = &f->kv[i];
    if (key) *key = kv->key;
    if (type) *type = kv->type;
    if (elem_type) *elem_type = kv->type == GGUF_VAL_ARRAY ? kv->elem_type : -1;
    if (n) *n = kv->type == GGUF_VAL_ARRAY ? kv->n : 0;
}

/* The entry for key if it has one of the wanted types (a bit mask of
 * 1 << GGUF_VAL_*); logs a mismatch. */
static int get_kv(const GgufFile *f, const char *fn, const char *key, unsigned wanted,
                  const char *wanted_name, const Kv **out)
{
    int i = gguf_find_key(f, key);
    if (i < 0) return ERR_NOTFOUND;
    const Kv *kv = &f->kv[i];
    if (!(wanted & (1u << kv->type))) {
        log_error("%s: '%s': key '%s' has type %s, expected %s", fn, f->path, key,
                  val_name(kv->type), wanted_name);
        return ERR_MISMATCH;
    }
    *out = kv;
    return 0;
}

#define INT_TYPES                                                                                  \
    ((1u << GGUF_VAL_UINT8) | (1u << GGUF_VAL_INT8) | (1u << GGUF_VAL_UINT16) |                    \
     (1u << GGUF_VAL_INT16) | (1u << GGUF_VAL_UINT32) | (1u << GGUF_VAL_INT32) |                   \
     (1u << GGUF_VAL_UINT64) | (1u << GGUF_VAL_INT64))

int gguf_get_int(const GgufFile *f, const char *key, int64_t *out)
{
    const Kv *kv;
    int       rc = get_kv(f, "gguf_get_int", key, INT_TYPES, "an integer", &kv);
    if (rc) return rc;
    const uint8_t *r = kv->raw;
    /* The value's bytes as type T, widened into *out. */
#define AS_INT(T)                                                                                  \
    do {                                                                                           \
        T v_;                                                                                      \
        memcpy(&v_, r, sizeof v_);                                                                 \
        *out = v_;                                                                                 \
    } while (0)
    switch (kv->type) {
    case GGUF_VAL_UINT8:
        AS_INT(uint8_t);
        break;
    case GGUF_VAL_INT8:
        AS_INT(int8_t);
        break;
    case GGUF_VAL_UINT16:
        AS_INT(uint16_t);
        break;
    case GGUF_VAL_INT16:
        AS_INT(int16_t);
        break;
    case GGUF_VAL_UINT32:
        AS_INT(uint32_t);
        break;
    case GGUF_VAL_INT32:
        AS_INT(int32_t);
        break;
    case GGUF_VAL_INT64:
        AS_INT(int64_t);
        break;
    default: {
        uint64_t v;
        memcpy(&v, r, 8);
        if (v > (uint64_t)INT64_MAX) {
            log_error("gguf_get_int: '%s': key '%s' = %llu exceeds INT64_MAX", f->path, key,
                      (unsigned long long)v);
            return ERR_RANGE;
        }
        *out = (int64_t)v;
    }
    }
#undef AS_INT
    return 0;
}

int gguf_get_float(const GgufFile *f, const char *key, double *out)
{
    const Kv *kv;
    int rc = get_kv(f, "gguf_get_float", key, (1u << GGUF_VAL_FLOAT32) | (1u << GGUF_VAL_FLOAT64),
                    "FLOAT32 or FLOAT64", &kv);
    if (rc) return rc;
    if (kv->type == GGUF_VAL_FLOAT32) {
        float v;
        memcpy(&v, kv->raw, 4);
        *out = v;
    } else {
        memcpy(out, kv->raw, 8);
    }
    return 0;
}

int gguf_get_bool(const GgufFile *f, const char *key, bool *out)
{
    const Kv *kv;
    int       rc = get_kv(f, "gguf_get_bool", key, 1u << GGUF_VAL_BOOL, "BOOL", &kv);
    if (rc) return rc;
    *out = kv->raw[0] != 0;
    return 0;
}

int gguf_get_str(const GgufFile *f, const char *key, GgufStr *out)
{
    const Kv *kv;
    int       rc = get_kv(f, "gguf_get_str", key, 1u << GGUF_VAL_STRING, "STRING", &kv);
    if (rc) return rc;
    *out = kv->str;
    return 0;
}

int gguf_get_str_array(const GgufFile *f, const char *key, const GgufStr **out, size_t *n)
{
    const Kv *kv;
    int       rc = get_kv(f, "gguf_get_str_array", key, 1u << GGUF_VAL_ARRAY, "ARRAY", &kv);
    if (rc) return rc;
    if (kv->elem_type != GGUF_VAL_STRING) {
        log_error("gguf_get_str_array: '%s': key '%s' is an array of %s, expected STRING", f->path,
                  key, val_name(kv->elem_type));
        return ERR_MISMATCH;
    }
    *out = kv->arr;
    *n = kv->n;
    return 0;
}

int gguf_get_array(const GgufFile *f, const char *key, int *elem_type, const void **data, size_t *n)
{
    const Kv *kv;
    int       rc = get_kv(f, "gguf_get_array", key, 1u << GGUF_VAL_ARRAY, "ARRAY", &kv);
    if (rc) return rc;
    if (kv->elem_type == GGUF_VAL_STRING) {
        log_error("gguf_get_array: '%s': key '%s' is an array of STRING, expected numbers "
                  "(use gguf_get_str_array)",
                  f->path, key);
        return ERR_MISMATCH;
    }
    *elem_type = kv->elem_type;
    *data = kv->arr;
    *n = kv->n;
    return 0;
}

/* ---- tensors ----------------------------------------------------------- */

int gguf_tensor_count(const GgufFile *f)
{
    return f->n_tensors;
}

void gguf_tensor_info(const GgufFile *f, int i, GgufTensorInfo *out)
{
    CHECK(i >= 0 && i < f->n_tensors);
    const Tensor *t = &f->tensors[i];
    out->name = t->name;
    out->type = t->type->id;
    out->type_name = t->type->name;
    out->n_dims = t->n_dims;
    memcpy(out->ne, t->ne, sizeof t->ne);
    out->numel = t->numel;
    out->nbytes = t->nbytes;
    out->offset = t->offset;
}

int gguf_find_tensor(const GgufFile *f, const char *name)
{
    for (int i = 0; i < f->n_tensors; i++)
        if (!strcmp(f->tensors[i].name, name)) return i;
    return ERR_NOTFOUND;
}

int gguf_read_f32(GgufFile *f, int i, float *dst, size_t n)
{
    CHECK(i >= 0 && i < f->n_tensors);
    const Tensor   *t = &f->tensors[i];
    const GgufType *ty = t->type;
    CHECK(n == t->numel && (dst || n == 0));
    if (!ty->supported) {
        log_error("gguf_read_f32: '%s': tensor '%s' has type %s, which cannot be dequantised "
                  "(supported: " GGUF_TYPE_SUPPORTED_NAMES ")",
                  f->path, t->name, ty->name);
        return ERR_UNSUPPORTED;
    }
    uint8_t buf[16384];
    size_t  per_chunk = sizeof buf / (size_t)ty->size; /* blocks */
    size_t  n_blocks = t->numel / (size_t)ty->block;
    for (size_t done = 0; done < n_blocks;) {
        size_t   nb = n_blocks - done < per_chunk ? n_blocks - done : per_chunk;
        uint64_t off = t->offset + (uint64_t)done * (uint64_t)ty->size;
        int      rc = fileio_pread_exact(f->fd, buf, nb * (size_t)ty->size, off, NULL);
        if (rc != 0) {
            log_error("gguf_read_f32: '%s': tensor '%s': reading %zu bytes at offset %llu: %s",
                      f->path, t->name, nb * (size_t)ty->size, (unsigned long long)off,
                      rc == ERR_IO ? strerror(errno) : "the file ends early (shrank after open)");
            return ERR_IO;
        }
        gguf_type_dequant(ty, buf, dst + done * (size_t)ty->block, nb);
        done += nb;
    }
    return 0;
}
