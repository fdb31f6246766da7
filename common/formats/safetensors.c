#include "tests/test_list.h"
#include "common/formats/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/log.h"
#include "common/base/rng.h"
#include "common/nn/half.h"

/* Tensor bytes go between memory and disk without swapping. */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

typedef struct {
    const char *name;
    int         size; /* bytes per element */
} Dtype;

/* The dtypes of the safetensors format with whole-byte elements. Only the
 * first three can be read as F32; the rest are accepted so a file that also
 * holds, say, integer buffers can still be opened. */
static const Dtype k_dtypes[] = {
    {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"F64", 8},     {"I64", 8},
    {"I32", 4}, {"I16", 2}, {"I8", 1},   {"U64", 8},     {"U32", 4},
    {"U16", 2}, {"U8", 1},  {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1},
};

typedef struct {
    char        *name;
    const Dtype *dtype;
    int          ndim;
    int64_t      shape[ST_MAX_NDIM];
    size_t       numel;
    uint64_t     begin; /* byte offsets into the data region */
    uint64_t     end;
} Entry;

struct StFile {
    char    *path;
    int      fd;
    uint64_t data_start; /* 8 + header length */
    uint64_t data_len;   /* bytes from data_start to the end of the file */
    Entry   *entries;    /* (n) in header order */
    int      n;
    char   **meta_keys; /* (n_meta) */
    char   **meta_vals; /* (n_meta) */
    int      n_meta;
};

/* ---- shared helpers ---------------------------------------------------- */

static void shape_str(const int64_t *shape, int ndim, char *out, size_t len)
{
    size_t k = 0;
    k += (size_t)snprintf(out, len, "[");
    for (int d = 0; d < ndim && k < len; d++)
        k += (size_t)snprintf(out + k, len - k, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (k < len) snprintf(out + k, len - k, "]");
}

/* Product of the dims times elem_size, or false on overflow of size_t. */
static bool shape_bytes(const int64_t *shape, int ndim, size_t elem_size, size_t *numel,
                        size_t *nbytes)
{
    size_t n = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0) return false;
        if (__builtin_mul_overflow(n, (size_t)shape[d], &n)) return false;
    }
    size_t b;
    if (__builtin_mul_overflow(n, elem_size, &b)) return false;
    /* Offsets are JSON integers and file positions: keep them in int64 range. */
    if (b > (size_t)INT64_MAX) return false;
    *numel = n;
    *nbytes = b;
    return true;
}

/* Reads exactly n bytes at off. A short read means the file shrank after
 * st_open validated it. */
static int read_exact(const StFile *f, void *buf, size_t n, uint64_t off, const char *what)
{
    char *p = buf;
    while (n > 0) {
        ssize_t r = pread(f->fd, p, n, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            log_error("st_read_f32: '%s': reading %s at offset %llu: %s", f->path, what,
                      (unsigned long long)off, r < 0 ? strerror(errno) : "file ends early");
            return ERR_IO;
        }
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

/* ---- writing ----------------------------------------------------------- */

static bool name_ok(const char *name)
{
    if (!name) return false;
    size_t n = strnlen(name, ST_MAX_NAME + 1);
    return n >= 1 && n <= ST_MAX_NAME;
}

/* Builds the header JSON; returns NULL after logging on a bad argument. */
static json_t *build_header(const char *path, const StTensor *t, int n, const StMeta *meta,
                            int n_meta, size_t *data_len)
{
    json_t *root = json_object();
    CHECK(root);
    if (n_meta > 0) {
        json_t *m = json_object();
        CHECK(m);
        json_object_set_new(root, ST_METADATA_KEY, m);
        for (int i = 0; i < n_meta; i++) {
            if (!name_ok(meta[i].key) || !meta[i].value) {
                log_error("st_write: '%s': metadata entry %d: key must be 1..%d bytes and value "
                          "non-NULL",
                          path, i, ST_MAX_NAME);
                goto fail;
            }
            if (json_object_get(m, meta[i].key)) {
                log_error("st_write: '%s': metadata key '%s' given twice", path, meta[i].key);
                goto fail;
            }
            json_t *v = json_string(meta[i].value);
            if (!v || json_object_set_new(m, meta[i].key, v) != 0) {
                log_error("st_write: '%s': metadata '%s' is not valid UTF-8", path, meta[i].key);
                goto fail;
            }
        }
    }
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        const StTensor *ti = &t[i];
        if (!name_ok(ti->name) || !strcmp(ti->name, ST_METADATA_KEY)) {
            log_error("st_write: '%s': tensor %d: name must be 1..%d bytes and not '%s'", path, i,
                      ST_MAX_NAME, ST_METADATA_KEY);
            goto fail;
        }
        if (json_object_get(root, ti->name)) {
            log_error("st_write: '%s': tensor '%s' given twice", path, ti->name);
            goto fail;
        }
        if (ti->ndim < 0 || ti->ndim > ST_MAX_NDIM) {
            log_error("st_write: '%s': tensor '%s': ndim %d, expected 0..%d", path, ti->name,
                      ti->ndim, ST_MAX_NDIM);
            goto fail;
        }
        size_t numel, nbytes, end;
        if (!shape_bytes(ti->shape, ti->ndim, sizeof(float), &numel, &nbytes) ||
            __builtin_add_overflow(off, nbytes, &end) || end > (size_t)INT64_MAX) {
            char s[256];
            shape_str(ti->shape, ti->ndim, s, sizeof s);
            log_error("st_write: '%s': tensor '%s': shape %s has a negative dim or is too large",
                      path, ti->name, s);
            goto fail;
        }
        if (numel > 0 && !ti->data) {
            log_error("st_write: '%s': tensor '%s': data is NULL for %zu elements", path, ti->name,
                      numel);
            goto fail;
        }
        json_t *shape = json_array();
        CHECK(shape);
        for (int d = 0; d < ti->ndim; d++) json_array_append_new(shape, json_integer(ti->shape[d]));
        json_t *entry = json_pack("{s:s, s:o, s:[I,I]}", "dtype", "F32", "shape", shape,
                                  "data_offsets", (json_int_t)off, (json_int_t)end);
        if (!entry || json_object_set_new(root, ti->name, entry) != 0) {
            log_error("st_write: '%s': tensor name '%s' is not valid UTF-8", path, ti->name);
            goto fail;
        }
        off = end;
    }
    *data_len = off;
    return root;
fail:
    json_decref(root);
    return NULL;
}

int st_write(const char *path, const StTensor *tensors, int n, const StMeta *meta, int n_meta)
{
    CHECK(path && n >= 0 && n_meta >= 0 && (tensors || n == 0) && (meta || n_meta == 0));
    size_t  data_len = 0;
    json_t *root = build_header(path, tensors, n, meta, n_meta, &data_len);
    if (!root) return ERR_ARG;
    /* Insertion order is kept, so the header lists tensors in data order. */
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    CHECK(text);
    size_t text_len = strlen(text);
    /* Spaces after the JSON are allowed by the format; they put the data at
     * an 8-byte boundary of the file so readers may map it aligned. */
    size_t   hlen = (text_len + 7) & ~(size_t)7;
    uint8_t  len_le[8];
    uint64_t h64 = hlen;
    memcpy(len_le, &h64, 8);

    AtomicFile *af = NULL;
    int         rc = fileio_atomic_open(path, &af);
    if (rc != 0) goto free_text;
    rc = fileio_atomic_write(af, len_le, 8);
    if (rc == 0) rc = fileio_atomic_write(af, text, text_len);
    if (rc == 0) rc = fileio_atomic_write(af, "        ", hlen - text_len);
    for (int i = 0; i < n && rc == 0; i++) {
        size_t numel, nbytes;
        CHECK(shape_bytes(tensors[i].shape, tensors[i].ndim, sizeof(float), &numel, &nbytes));
        if (nbytes > 0) rc = fileio_atomic_write(af, tensors[i].data, nbytes);
    }
    if (rc != 0) {
        fileio_atomic_abort(&af);
        goto free_text;
    }
    rc = fileio_atomic_commit(&af);
free_text:
    free(text);
    return rc;
}

/* ---- reading ----------------------------------------------------------- */

/* Logs "st_open: 'path': <message>" and returns ERR_FORMAT. */
static int bad(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(const char *path, const char *fmt, ...)
{
    char    msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_error("st_open: '%s': %s", path, msg);
    return ERR_FORMAT;
}

static const Dtype *find_dtype(const char *s)
{
    for (size_t i = 0; i < sizeof k_dtypes / sizeof k_dtypes[0]; i++)
        if (!strcmp(k_dtypes[i].name, s)) return &k_dtypes[i];
    return NULL;
}

/* A JSON integer in [0, INT64_MAX]; false for anything else. */
static bool get_nonneg(const json_t *v, int64_t *out)
{
    if (!json_is_integer(v)) return false;
    json_int_t x = json_integer_value(v);
    if (x < 0) return false;
    *out = (int64_t)x;
    return true;
}

static int parse_metadata(StFile *f, const json_t *m)
{
    if (!json_is_object(m)) return bad(f->path, "'%s' is not an object", ST_METADATA_KEY);
    size_t cnt = json_object_size(m);
    f->meta_keys = xcalloc(cnt ? cnt : 1, sizeof *f->meta_keys);
    f->meta_vals = xcalloc(cnt ? cnt : 1, sizeof *f->meta_vals);
    const char *key;
    json_t     *v;
    json_object_foreach((json_t *)m, key, v)
    {
        if (!json_is_string(v))
            return bad(f->path, "metadata '%.64s': value is a JSON %s, expected a string", key,
                       json_is_object(v)  ? "object"
                       : json_is_array(v) ? "array"
                                          : "scalar");
        f->meta_keys[f->n_meta] = xstrdup(key);
        f->meta_vals[f->n_meta] = xstrdup(json_string_value(v));
        f->n_meta++;
    }
    return 0;
}

static int parse_entry(StFile *f, const char *name, const json_t *v, Entry *e)
{
    const char *path = f->path;
    size_t      name_len = strlen(name);
    if (name_len == 0 || name_len > ST_MAX_NAME)
        return bad(path, "tensor name of %zu bytes, expected 1..%d", name_len, ST_MAX_NAME);
    if (!json_is_object(v)) return bad(path, "tensor '%s': entry is not an object", name);
    const char *key;
    json_t     *field;
    json_object_foreach((json_t *)v, key, field)
    {
        if (strcmp(key, "dtype") && strcmp(key, "shape") && strcmp(key, "data_offsets"))
            return bad(path, "tensor '%s': unknown field '%.64s'", name, key);
    }
    const json_t *dt = json_object_get(v, "dtype");
    const json_t *sh = json_object_get(v, "shape");
    const json_t *off = json_object_get(v, "data_offsets");
    if (!dt || !sh || !off)
        return bad(path, "tensor '%s': missing field '%s'", name,
                   !dt   ? "dtype"
                   : !sh ? "shape"
                         : "data_offsets");
    if (!json_is_string(dt)) return bad(path, "tensor '%s': dtype is not a string", name);
    e->dtype = find_dtype(json_string_value(dt));
    if (!e->dtype)
        return bad(path,
                   "tensor '%s': unknown dtype '%.32s', expected one of F32, F16, BF16, "
                   "F64, I64, I32, I16, I8, U64, U32, U16, U8, BOOL, F8_E4M3, F8_E5M2",
                   name, json_string_value(dt));
    if (!json_is_array(sh)) return bad(path, "tensor '%s': shape is not an array", name);
    if (json_array_size(sh) > ST_MAX_NDIM)
        return bad(path, "tensor '%s': shape has %zu dims, limit %d", name, json_array_size(sh),
                   ST_MAX_NDIM);
    e->ndim = (int)json_array_size(sh);
    for (int d = 0; d < e->ndim; d++)
        if (!get_nonneg(json_array_get(sh, (size_t)d), &e->shape[d]))
            return bad(path, "tensor '%s': shape[%d] is not a non-negative integer", name, d);
    int64_t b, en;
    if (!json_is_array(off) || json_array_size(off) != 2 ||
        !get_nonneg(json_array_get(off, 0), &b) || !get_nonneg(json_array_get(off, 1), &en))
        return bad(path, "tensor '%s': data_offsets is not [begin, end] of non-negative integers",
                   name);
    if (b > en)
        return bad(path, "tensor '%s': data_offsets [%lld, %lld] has begin after end", name,
                   (long long)b, (long long)en);
    e->begin = (uint64_t)b;
    e->end = (uint64_t)en;
    char   s[256];
    size_t nbytes;
    shape_str(e->shape, e->ndim, s, sizeof s);
    if (!shape_bytes(e->shape, e->ndim, (size_t)e->dtype->size, &e->numel, &nbytes))
        return bad(path, "tensor '%s': shape %s overflows", name, s);
    if ((uint64_t)nbytes != e->end - e->begin)
        return bad(path,
                   "tensor '%s': shape %s of %s needs %zu bytes but data_offsets [%llu, %llu] "
                   "span %llu",
                   name, s, e->dtype->name, nbytes, (unsigned long long)e->begin,
                   (unsigned long long)e->end, (unsigned long long)(e->end - e->begin));
    if (e->end > f->data_len)
        return bad(path,
                   "tensor '%s': data_offsets [%llu, %llu] out of bounds: data region is "
                   "%llu bytes",
                   name, (unsigned long long)e->begin, (unsigned long long)e->end,
                   (unsigned long long)f->data_len);
    e->name = xstrdup(name);
    return 0;
}

typedef struct {
    uint64_t begin, end;
    int      idx;
} Span;

static int span_cmp(const void *a, const void *b)
{
    const Span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->idx - y->idx;
}

/* The tensors must tile the data region: no overlap, no hole, nothing after. */
static int check_tiling(const StFile *f)
{
    Span *s = xmalloc(sizeof *s * (size_t)(f->n ? f->n : 1));
    for (int i = 0; i < f->n; i++) s[i] = (Span){f->entries[i].begin, f->entries[i].end, i};
    qsort(s, (size_t)f->n, sizeof *s, span_cmp);
    uint64_t covered = 0;
    int      prev = -1, rc = 0;
    for (int i = 0; i < f->n && rc == 0; i++) {
        const Entry *e = &f->entries[s[i].idx];
        if (s[i].begin < covered)
            rc = bad(f->path, "tensor '%s' [%llu, %llu] overlaps tensor '%s' (ends at %llu)",
                     e->name, (unsigned long long)e->begin, (unsigned long long)e->end,
                     f->entries[prev].name, (unsigned long long)covered);
        else if (s[i].begin > covered)
            rc = bad(f->path, "hole of %llu bytes at data offset %llu before tensor '%s'",
                     (unsigned long long)(s[i].begin - covered), (unsigned long long)covered,
                     e->name);
        covered = s[i].end;
        prev = s[i].idx;
    }
    if (rc == 0 && covered != f->data_len)
        rc = bad(f->path, "tensors cover %llu bytes of a %llu-byte data region",
                 (unsigned long long)covered, (unsigned long long)f->data_len);
    free(s);
    return rc;
}

static int parse_header(StFile *f, const char *text, size_t len)
{
    /* The format requires an object; checking the first byte gives a clearer
     * message for binary garbage than the JSON parser would. */
    if (len == 0 || text[0] != '{')
        return bad(f->path, "header starts with byte 0x%02x, expected '{'",
                   len ? (unsigned char)text[0] : 0);
    json_error_t jerr;
    /* Duplicate names would make a lookup ambiguous, so they are refused. */
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return bad(f->path, "header is not valid JSON (line %d, column %d): %s", jerr.line,
                   jerr.column, jerr.text);
    int rc = 0;
    if (!json_is_object(root)) {
        rc = bad(f->path, "header is not a JSON object");
        goto free_root;
    }
    size_t cnt = json_object_size(root);
    f->entries = xcalloc(cnt ? cnt : 1, sizeof *f->entries);
    const char *key;
    json_t     *v;
    json_object_foreach(root, key, v)
    {
        if (!strcmp(key, ST_METADATA_KEY))
            rc = parse_metadata(f, v);
        else if ((rc = parse_entry(f, key, v, &f->entries[f->n])) == 0)
            f->n++;
        if (rc != 0) goto free_root;
    }
    rc = check_tiling(f);
free_root:
    json_decref(root);
    return rc;
}

int st_open(const char *path, StFile **out)
{
    CHECK(path && out);
    *out = NULL;
    StFile *f = xcalloc(1, sizeof *f);
    f->path = xstrdup(path);
    int      rc = 0;
    char    *header = NULL;
    uint64_t size = 0;
    if ((rc = fileio_open_regular("st_open", path, &f->fd, &size)) != 0) goto fail;
    if (size < 8) {
        rc = bad(path, "file is %llu bytes, too small for the 8-byte header length",
                 (unsigned long long)size);
        goto fail;
    }
    uint8_t le[8];
    if ((rc = read_exact(f, le, 8, 0, "the header length")) != 0) goto fail;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | le[i];
    if (hlen > ST_MAX_HEADER) {
        rc = bad(path, "header length %llu exceeds the limit of %llu bytes",
                 (unsigned long long)hlen, (unsigned long long)ST_MAX_HEADER);
        goto fail;
    }
    if (hlen > size - 8) {
        rc = bad(path, "header length %llu but only %llu bytes follow the length field",
                 (unsigned long long)hlen, (unsigned long long)(size - 8));
        goto fail;
    }
    f->data_start = 8 + hlen;
    f->data_len = size - f->data_start;
    header = xmalloc((size_t)hlen + 1);
    if ((rc = read_exact(f, header, (size_t)hlen, 8, "the header")) != 0) goto fail;
    header[hlen] = '\0';
    if ((rc = parse_header(f, header, (size_t)hlen)) != 0) goto fail;
    free(header);
    *out = f;
    return 0;
fail:
    free(header);
    st_close(&f);
    return rc;
}

void st_close(StFile **fp)
{
    if (!fp || !*fp) return;
    StFile *f = *fp;
    if (f->fd >= 0) close(f->fd); /* read-only: nothing to lose on close */
    for (int i = 0; i < f->n; i++) free(f->entries[i].name);
    free(f->entries);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_vals[i]);
    }
    free(f->meta_keys);
    free(f->meta_vals);
    free(f->path);
    free(f);
    *fp = NULL;
}

const char *st_path(const StFile *f)
{
    return f->path;
}

int st_count(const StFile *f)
{
    return f->n;
}

void st_info_at(const StFile *f, int i, StInfo *out)
{
    CHECK(i >= 0 && i < f->n);
    const Entry *e = &f->entries[i];
    memset(out, 0, sizeof *out);
    out->name = e->name;
    out->dtype = e->dtype->name;
    out->ndim = e->ndim;
    memcpy(out->shape, e->shape, sizeof e->shape);
    out->numel = e->numel;
    out->nbytes = (size_t)(e->end - e->begin);
}

int st_find(const StFile *f, const char *name)
{
    /* Linear: files hold at most a few hundred tensors and lookups are rare. */
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->entries[i].name, name)) return i;
    return ERR_NOTFOUND;
}

int st_read_f32(StFile *f, const char *name, float *dst, int ndim, const int64_t *shape)
{
    CHECK(f && name && ndim >= 0 && ndim <= ST_MAX_NDIM && (shape || ndim == 0));
    int i = st_find(f, name);
    if (i < 0) {
        log_error("st_read_f32: '%s': no tensor '%s'", f->path, name);
        return ERR_NOTFOUND;
    }
    const Entry *e = &f->entries[i];
    bool         same = e->ndim == ndim;
    for (int d = 0; same && d < ndim; d++) same = e->shape[d] == shape[d];
    if (!same) {
        char want[256], got[256];
        shape_str(shape, ndim, want, sizeof want);
        shape_str(e->shape, e->ndim, got, sizeof got);
        log_error("st_read_f32: '%s': tensor '%s' has shape %s, expected %s", f->path, name, got,
                  want);
        return ERR_MISMATCH;
    }
    const char *dt = e->dtype->name;
    bool        is_f16 = !strcmp(dt, "F16"), is_bf16 = !strcmp(dt, "BF16");
    if (strcmp(dt, "F32") && !is_f16 && !is_bf16) {
        log_error("st_read_f32: '%s': tensor '%s' has dtype %s, expected F32, F16 or BF16", f->path,
                  name, dt);
        return ERR_MISMATCH;
    }
    CHECK(e->numel == 0 || dst);
    uint64_t off = f->data_start + e->begin;
    if (!is_f16 && !is_bf16) return read_exact(f, dst, e->numel * sizeof(float), off, name);
    /* Halves go through a small buffer so no allocation is needed. */
    uint16_t buf[4096];
    for (size_t done = 0; done < e->numel;) {
        size_t n = e->numel - done < 4096 ? e->numel - done : 4096;
        int    rc = read_exact(f, buf, n * 2, off + done * 2, name);
        if (rc != 0) return rc;
        for (size_t k = 0; k < n; k++)
            dst[done + k] = is_f16 ? half_f16_to_f32(buf[k]) : half_bf16_to_f32(buf[k]);
        done += n;
    }
    return 0;
}

const char *st_meta_get(const StFile *f, const char *key)
{
    for (int i = 0; i < f->n_meta; i++)
        if (!strcmp(f->meta_keys[i], key)) return f->meta_vals[i];
    return NULL;
}

int st_meta_count(const StFile *f)
{
    return f->n_meta;
}

void st_meta_at(const StFile *f, int i, const char **key, const char **value)
{
    CHECK(i >= 0 && i < f->n_meta);
    if (key) *key = f->meta_keys[i];
    if (value) *value = f->meta_vals[i];
}

/* ---- self-test --------------------------------------------------------- */

/* Writes a hand-made file: the length field says hlen (or the true length
 * when hlen < 0), then header, then data_len bytes of data (data, or zeros
 * when NULL). */
static int write_raw(const char *path, const char *header, int64_t hlen, const void *data,
                     size_t data_len)
{
    size_t   n = strlen(header);
    uint64_t h = hlen < 0 ? (uint64_t)n : (uint64_t)hlen;
    char    *buf = xcalloc(1, 8 + n + data_len);
    memcpy(buf, &h, 8);
    memcpy(buf + 8, header, n);
    if (data) memcpy(buf + 8 + n, data, data_len);
    int rc = fileio_write_atomic(path, buf, 8 + n + data_len);
    free(buf);
    return rc;
}

/* Opens path expecting refusal with code want and a log line containing
 * expect. Returns 0 when that is what happened. */
static int expect_open_fails(const char *path, int want, const char *expect, const char *what,
                             bool verbose)
{
    StFile *f = NULL;
    fileio_capture_begin();
    int   rc = st_open(path, &f);
    char *log = fileio_capture_end(verbose);
    bool  logged = strstr(log, expect) != NULL;
    free(log);
    if (rc == want && !f && logged) return 0;
    fprintf(stderr, "st_selftest: %s: st_open returned %d (%s), expected %d; log %s '%s'\n", what,
            rc, err_str(rc), want, logged ? "has" : "lacks", expect);
    st_close(&f);
    return 1;
}

typedef struct {
    const char *what;     /* the corruption */
    const char *header;   /* JSON written as the header */
    size_t      data_len; /* zero bytes of data after it */
    const char *expect;   /* text the logged error must contain */
} BadHeader;

#define T_(name, rest) "\"" name "\":{" rest "}"
static const BadHeader k_bad_headers[] = {
    {"garbage JSON", "{\"w\": {\"dtype\": \"F32\", ", 0, "not valid JSON"},
    {"binary garbage", "\x01\x02\xff garbage", 0, "expected '{'"},
    {"JSON array", "[1, 2]", 0, "expected '{'"},
    {"trailing junk", "{} xyz", 0, "not valid JSON"},
    {"duplicate tensor",
     "{" T_("w", "\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]") "," T_(
         "w", "\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]") "}",
     8, "duplicate"},
    {"unknown dtype", "{" T_("w", "\"dtype\":\"F99\",\"shape\":[2],\"data_offsets\":[0,8]") "}", 8,
     "tensor 'w': unknown dtype 'F99'"},
    {"dtype not a string", "{" T_("w", "\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]") "}", 8,
     "dtype is not a string"},
    {"shape/offset mismatch",
     "{" T_("w", "\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]") "}", 20,
     "tensor 'w': shape [2, 3] of F32 needs 24 bytes but data_offsets [0, 20] span 20"},
    {"offsets out of bounds",
     "{" T_("w", "\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]") "}", 8,
     "out of bounds: data region is 8 bytes"},
    {"offset past int64",
     "{" T_("w", "\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,"
                 "99999999999999999999]") "}",
     16, "not valid JSON"},
    {"begin after end", "{" T_("w", "\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[8,0]") "}", 8,
     "begin after end"},
    {"overlapping tensors",
     "{" T_("a", "\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]") "," T_(
         "b", "\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]") "}",
     24, "tensor 'b' [8, 24] overlaps tensor 'a'"},
    {"hole between tensors",
     "{" T_("a", "\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]") "," T_(
         "b", "\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[16,24]") "}",
     24, "hole of 8 bytes at data offset 8 before tensor 'b'"},
    {"uncovered trailing data",
     "{" T_("a", "\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]") "}", 16,
     "tensors cover 8 bytes of a 16-byte data region"},
    {"missing shape", "{" T_("w", "\"dtype\":\"F32\",\"data_offsets\":[0,8]") "}", 8,
     "tensor 'w': missing field 'shape'"},
    {"missing dtype", "{" T_("w", "\"shape\":[2],\"data_offsets\":[0,8]") "}", 8,
     "missing field 'dtype'"},
    {"missing offsets", "{" T_("w", "\"dtype\":\"F32\",\"shape\":[2]") "}", 8,
     "missing field 'data_offsets'"},
    {"shape not an array", "{" T_("w", "\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]") "}",
     8, "shape is not an array"},
    {"negative dim", "{" T_("w", "\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]") "}", 8,
     "shape[0] is not a non-negative integer"},
    {"fractional dim",
     "{" T_("w", "\"dtype\":\"F32\",\"shape\":[1,2.0],\"data_offsets\":[0,8]") "}", 8,
     "shape[1] is not a non-negative integer"},
    {"too many dims",
     "{" T_("w", "\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]") "}", 4,
     "shape has 9 dims, limit 8"},
    {"shape product overflow",
     "{" T_("w", "\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,"
                 "16]") "}",
     16, "overflows"},
    {"offsets of three",
     "{" T_("w", "\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,8]") "}", 8,
     "data_offsets is not [begin, end]"},
    {"negative offset", "{" T_("w", "\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]") "}",
     8, "data_offsets is not [begin, end]"},
    {"unknown field",
     "{" T_("w", "\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"foo\":1") "}", 8,
     "unknown field 'foo'"},
    {"entry not an object", "{\"w\":[1,2]}", 0, "tensor 'w': entry is not an object"},
    {"empty name", "{" T_("", "\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]") "}", 8,
     "tensor name of 0 bytes"},
    {"metadata not an object", "{\"__metadata__\":\"x\"}", 0, "'__metadata__' is not an object"},
    {"metadata value not a string", "{\"__metadata__\":{\"k\":1}}", 0,
     "metadata 'k': value is a JSON scalar"},
    {"NUL in a string", "{\"__metadata__\":{\"k\":\"a\\u0000b\"}}", 0, "not valid JSON"},
};
#undef T_

/* Reference F16 decoding by arithmetic, independent of the bit shuffling. */
static double f16_reference(uint16_t h)
{
    int    sign = h >> 15, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    double v = exp == 0    ? ldexp(mant, -24)
               : exp == 31 ? (mant ? NAN : INFINITY)
                           : ldexp(1024 + mant, exp - 25);
    return sign ? -v : v;
}

int st_selftest(bool verbose)
{
    char dir[] = "/tmp/rlhf-st-XXXXXX";
    if (!mkdtemp(dir)) return 1;
    char path[PATH_MAX], bad_path[PATH_MAX];
    snprintf(path, sizeof path, "%s/t.safetensors", dir);
    snprintf(bad_path, sizeof bad_path, "%s/bad.safetensors", dir);
    int      fails = 0, checks = 0;
    StFile  *f = NULL;
    char    *raw = NULL;
    uint16_t halves[65536];
    float    got[65536];

    /* 1. Round trip, bit-exact, including values that compare unequal to
     *    themselves or to their neighbours (NaN with payload, -0, subnormal). */
    float a[15], b[7], sc[1] = {3.25f};
    Rng   rng;
    rng_seed(&rng, 7);
    for (int i = 0; i < 15; i++) a[i] = rng_normal(&rng);
    for (int i = 0; i < 7; i++) b[i] = rng_normal(&rng);
    uint32_t nan_bits = 0x7fc01234u;
    memcpy(&a[0], &nan_bits, 4);
    a[1] = -0.0f;
    a[2] = 1e-40f;
    a[3] = INFINITY;
    StTensor t[4] = {
        {"model.layers.0.w", a, 2, {3, 5}},
        {"b", b, 1, {7}},
        {"scalar", sc, 0, {0}},
        {"empty", NULL, 2, {0, 4}},
    };
    StMeta meta[2] = {{"format", "pt"}, {"step", "42"}};
    checks++;
    if (st_write(path, t, 4, meta, 2) != 0 || st_open(path, &f) != 0) {
        fprintf(stderr, "st_selftest: round trip: write or open failed\n");
        fails++;
        goto cleanup;
    }
    {
        bool ok = st_count(f) == 4 && st_meta_count(f) == 2 &&
                  !strcmp(st_meta_get(f, "format"), "pt") &&
                  !strcmp(st_meta_get(f, "step"), "42") && !st_meta_get(f, "nope") &&
                  st_find(f, "nope") == ERR_NOTFOUND;
        for (int i = 0; i < 4 && ok; i++) {
            StInfo info;
            st_info_at(f, i, &info);
            size_t numel = 1;
            for (int d = 0; d < t[i].ndim; d++) numel *= (size_t)t[i].shape[d];
            ok = !strcmp(info.name, t[i].name) && !strcmp(info.dtype, "F32") &&
                 info.ndim == t[i].ndim && info.numel == numel && info.nbytes == 4 * numel &&
                 !memcmp(info.shape, t[i].shape, sizeof(int64_t) * (size_t)t[i].ndim) &&
                 st_find(f, t[i].name) == i;
            float buf[16];
            memset(buf, 0xab, sizeof buf);
            ok = ok && st_read_f32(f, t[i].name, buf, t[i].ndim, t[i].shape) == 0 &&
                 (numel == 0 || !memcmp(buf, t[i].data, 4 * numel));
        }
        const char *k = NULL, *v = NULL;
        st_meta_at(f, 1, &k, &v);
        ok = ok && !strcmp(k, "step") && !strcmp(v, "42");
        st_close(&f);
        /* The header is padded so the data starts 8-byte aligned. */
        size_t len = 0;
        ok = ok && fileio_read_all(path, 1 << 20, false, &raw, &len) == 0;
        uint64_t hlen = 0;
        if (ok) memcpy(&hlen, raw, 8);
        ok = ok && hlen % 8 == 0 && len == 8 + hlen + 4 * (15 + 7 + 1) && raw[8] == '{' &&
             raw[8 + hlen - 1] != '\0';
        if (!ok) {
            fprintf(stderr, "st_selftest: round trip: contents differ\n");
            fails++;
        }
        free(raw);
        raw = NULL;
    }

    /* 2. Overwriting replaces the file whole. */
    checks++;
    {
        float    c[2] = {1, 2};
        StTensor t2 = {"c", c, 1, {2}};
        bool     ok = st_write(path, &t2, 1, NULL, 0) == 0 && st_open(path, &f) == 0 &&
                  st_count(f) == 1 && st_meta_count(f) == 0 && st_find(f, "c") == 0;
        st_close(&f);
        if (!ok) {
            fprintf(stderr, "st_selftest: overwrite failed\n");
            fails++;
        }
    }

    /* 3. F16 and BF16 read as F32: every F16 bit pattern against arithmetic,
     *    through the chunked conversion path. */
    checks++;
    {
        for (int i = 0; i < 65536; i++) halves[i] = (uint16_t)i;
        uint16_t bf[3] = {0x3f80, 0xc0a0, 0x0000}; /* 1, -5, 0 */
        char     data[65536 * 2 + 6];
        memcpy(data, halves, sizeof halves);
        memcpy(data + sizeof halves, bf, sizeof bf);
        const char *hdr = "{\"h\":{\"dtype\":\"F16\",\"shape\":[256,256],\"data_offsets\":[0,"
                          "131072]},\"b\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":["
                          "131072,131078]}}";
        bool        ok = write_raw(bad_path, hdr, -1, data, sizeof data) == 0 &&
                  st_open(bad_path, &f) == 0 &&
                  st_read_f32(f, "h", got, 2, (int64_t[]){256, 256}) == 0;
        for (int i = 0; ok && i < 65536; i++) {
            double want = f16_reference((uint16_t)i);
            /* signbit only promises non-zero, and differs between float and double. */
            bool same_sign = !signbit(got[i]) == !signbit(want);
            ok = same_sign && (isnan(want) ? isnan(got[i]) : (double)got[i] == want);
            if (!ok)
                fprintf(stderr, "st_selftest: f16 0x%04x -> %g, expected %g\n", i, got[i], want);
        }
        ok = ok && st_read_f32(f, "b", got, 1, (int64_t[]){3}) == 0 && got[0] == 1.0f &&
             got[1] == -5.0f && got[2] == 0.0f;
        st_close(&f);
        if (!ok) {
            fprintf(stderr, "st_selftest: F16/BF16 conversion failed\n");
            fails++;
        }
    }

    /* 4. Truncation at every kind of cut point of a valid file. */
    {
        float    w[6] = {1, 2, 3, 4, 5, 6};
        StTensor tt[2] = {{"w", w, 2, {2, 2}}, {"v", w + 4, 1, {2}}};
        StMeta   m1 = {"format", "pt"};
        size_t   len = 0;
        if (st_write(path, tt, 2, &m1, 1) != 0 ||
            fileio_read_all(path, 1 << 20, false, &raw, &len) != 0) {
            fails++;
            goto cleanup;
        }
        uint64_t hlen;
        memcpy(&hlen, raw, 8);
        struct {
            size_t      cut;
            const char *expect;
        } cuts[] = {
            {0, "too small"},
            {5, "too small"},
            {8, "only 0 bytes follow"},
            {8 + hlen / 2, "bytes follow the length field"},
            {8 + hlen - 1, "bytes follow the length field"},
            {8 + hlen, "out of bounds"},
            {8 + hlen + 10, "out of bounds"},
            {len - 1, "out of bounds"},
        };
        for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
            char what[64];
            snprintf(what, sizeof what, "truncated to %zu of %zu bytes", cuts[i].cut, len);
            checks++;
            if (fileio_write_atomic(bad_path, raw, cuts[i].cut) != 0 ||
                expect_open_fails(bad_path, ERR_FORMAT, cuts[i].expect, what, verbose))
                fails++;
        }

        /* 5. Wrong header lengths: absurd, past the end, short, long. */
        struct {
            uint64_t    hlen;
            const char *expect;
        } lens[] = {
            {(uint64_t)1 << 40, "exceeds the limit"},
            {ST_MAX_HEADER + 1, "exceeds the limit"},
            {len - 7, "only"},
            {hlen - 9, "not valid JSON"},
            {hlen + 8, "not valid JSON"}, /* swallows float data into the header */
            {0, "expected '{'"},
        };
        for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
            char what[64];
            snprintf(what, sizeof what, "header length %llu (true %llu)",
                     (unsigned long long)lens[i].hlen, (unsigned long long)hlen);
            memcpy(raw, &lens[i].hlen, 8);
            checks++;
            if (fileio_write_atomic(bad_path, raw, len) != 0 ||
                expect_open_fails(bad_path, ERR_FORMAT, lens[i].expect, what, verbose))
                fails++;
        }
        free(raw);
        raw = NULL;
    }

    /* 6. Malformed headers, one defect each. */
    for (size_t i = 0; i < sizeof k_bad_headers / sizeof k_bad_headers[0]; i++) {
        const BadHeader *c = &k_bad_headers[i];
        checks++;
        if (write_raw(bad_path, c->header, -1, NULL, c->data_len) != 0 ||
            expect_open_fails(bad_path, ERR_FORMAT, c->expect, c->what, verbose))
            fails++;
    }

    /* 7. Missing file and a directory in its place. */
    checks += 2;
    char missing[PATH_MAX + 16];
    snprintf(missing, sizeof missing, "%s/none", dir);
    if (expect_open_fails(missing, ERR_NOTFOUND, "No such file", "missing file", verbose)) fails++;
    if (expect_open_fails(dir, ERR_IO, "not a regular file", "directory", verbose)) fails++;

    /* 8. Well-formed files that do not fit the request: missing tensor, wrong
     *    shape, wrong rank, dtype that is not a float, file shrunk after open. */
    {
        const char *hdr = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
                          "\"i\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[16,24]}}";
        float       buf[8];
        if (write_raw(bad_path, hdr, -1, NULL, 24) != 0 || st_open(bad_path, &f) != 0) {
            fails++;
            goto cleanup;
        }
        struct {
            const char *name;
            int         ndim;
            int64_t     shape[2];
            int         want;
            const char *expect;
        } reads[] = {
            {"nope", 1, {4}, ERR_NOTFOUND, "no tensor 'nope'"},
            {"w", 2, {2, 3}, ERR_MISMATCH, "tensor 'w' has shape [2, 2], expected [2, 3]"},
            {"w", 1, {4}, ERR_MISMATCH, "expected [4]"},
            {"i", 1, {2}, ERR_MISMATCH, "tensor 'i' has dtype I32, expected F32"},
        };
        for (size_t i = 0; i < sizeof reads / sizeof reads[0]; i++) {
            checks++;
            fileio_capture_begin();
            int   rc = st_read_f32(f, reads[i].name, buf, reads[i].ndim, reads[i].shape);
            char *log = fileio_capture_end(verbose);
            if (rc != reads[i].want || !strstr(log, reads[i].expect)) {
                fprintf(stderr, "st_selftest: read '%s': rc %d, expected %d; log lacks '%s'\n",
                        reads[i].name, rc, reads[i].want, reads[i].expect);
                fails++;
            }
            free(log);
        }
        checks++;
        fileio_capture_begin();
        int   rc_trunc = truncate(bad_path, 8 + 8) == 0
                             ? st_read_f32(f, "w", buf, 2, (int64_t[]){2, 2})
                             : ERR_OK;
        char *log = fileio_capture_end(verbose);
        if (rc_trunc != ERR_IO || !strstr(log, "file ends early")) {
            fprintf(stderr, "st_selftest: read after truncation: rc %d, expected %d\n", rc_trunc,
                    ERR_IO);
            fails++;
        }
        free(log);
        st_close(&f);
    }

    /* 9. The writer refuses bad arguments and leaves the old file alone. */
    {
        float    x[4] = {0};
        StTensor dup[2] = {{"x", x, 1, {4}}, {"x", x, 1, {4}}};
        StTensor meta_name = {ST_METADATA_KEY, x, 1, {4}};
        StTensor neg = {"x", x, 2, {2, -2}};
        StTensor deep = {"x", x, 9, {1}};
        StTensor null_data = {"x", NULL, 1, {4}};
        StTensor ok1 = {"x", x, 1, {4}};
        StMeta   dmeta[2] = {{"k", "1"}, {"k", "2"}};
        char     nodir[PATH_MAX + 16];
        snprintf(nodir, sizeof nodir, "%s/no/such.safetensors", dir);
        fileio_capture_begin();
        int r[7] = {st_write(path, dup, 2, NULL, 0),        st_write(path, &meta_name, 1, NULL, 0),
                    st_write(path, &neg, 1, NULL, 0),       st_write(path, &deep, 1, NULL, 0),
                    st_write(path, &null_data, 1, NULL, 0), st_write(path, &ok1, 1, dmeta, 2),
                    st_write(nodir, &ok1, 1, NULL, 0)};
        char *log = fileio_capture_end(verbose);
        bool  logged = strstr(log, "tensor 'x' given twice") && strstr(log, "ndim 9") &&
                      strstr(log, "metadata key 'k' given twice") && strstr(log, "[2, -2]");
        free(log);
        checks++;
        bool old_intact = st_open(path, &f) == 0 && st_count(f) == 2 && st_find(f, "v") == 1;
        st_close(&f);
        bool codes = true;
        for (int i = 0; i < 6; i++) codes = codes && r[i] == ERR_ARG;
        if (!codes || r[6] != ERR_IO || !logged || !old_intact) {
            fprintf(stderr, "st_selftest: writer refusals: codes %s, logged %d, old file %s\n",
                    codes ? "ok" : "wrong", logged, old_intact ? "intact" : "damaged");
            fails++;
        }
    }

cleanup:
    st_close(&f);
    free(raw);
    if (fileio_remove_tree(dir) != 0) fails++;
    if (verbose)
        printf("  safetensors: %d checks (round trip, F16/BF16, %zu malformed headers, cuts, "
               "lengths, reads, writer), %d failed\n",
               checks, sizeof k_bad_headers / sizeof k_bad_headers[0], fails);
    return fails ? 1 : 0;
}
