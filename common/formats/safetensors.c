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
#include <xxhash.h>

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
    bool         has_xxh3; /* the file records xxh3 for this tensor */
    uint64_t     xxh3;     /* XXH3-64 of the tensor's bytes, as recorded */
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
    bool     has_xxh3; /* every tensor has a recorded checksum */
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
    size_t got;
    int    rc = fileio_pread_exact(f->fd, buf, n, off, &got);
    if (rc != 0) {
        log_error("st_read_f32: '%s': reading %s at offset %llu: %s", f->path, what,
                  (unsigned long long)(off + got),
                  rc == ERR_IO ? strerror(errno) : "file ends early");
        return ERR_IO;
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

static bool is_xxh3_key(const char *key)
{
    return !strncmp(key, ST_XXH3_PREFIX, sizeof ST_XXH3_PREFIX - 1);
}

/* Builds the header JSON; returns NULL after logging on a bad argument. */
static json_t *build_header(const char *path, const StTensor *t, int n, const StMeta *meta,
                            int n_meta, size_t *data_len)
{
    json_t *root = json_object();
    CHECK(root);
    json_t *m = NULL;
    if (n_meta > 0 || n > 0) {
        m = json_object();
        CHECK(m);
        json_object_set_new(root, ST_METADATA_KEY, m);
        for (int i = 0; i < n_meta; i++) {
            if (!name_ok(meta[i].key) || !meta[i].value) {
                log_error("st_write: '%s': metadata entry %d: key must be 1..%d bytes and value "
                          "non-NULL",
                          path, i, ST_MAX_NAME);
                goto fail;
            }
            if (is_xxh3_key(meta[i].key)) {
                log_error("st_write: '%s': metadata key '%s': the prefix '%s' is reserved for "
                          "the tensors' checksums",
                          path, meta[i].key, ST_XXH3_PREFIX);
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
        /* The bytes written are the floats as they are in memory (a
         * little-endian host), so their hash is the hash of the file's. */
        char key[sizeof ST_XXH3_PREFIX + ST_MAX_NAME], hex[17];
        snprintf(key, sizeof key, "%s%s", ST_XXH3_PREFIX, ti->name);
        snprintf(hex, sizeof hex, "%016llx",
                 (unsigned long long)XXH3_64bits(nbytes ? (const void *)ti->data : "", nbytes));
        json_object_set_new(m, key, json_string(hex));
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

/* Moves the checksum entries out of the metadata into the tensors' entries,
 * validating them: each names a tensor of the file and is 16 lower-case hex
 * digits, and once one tensor has a checksum every tensor must. */
static int parse_checksums(StFile *f)
{
    int kept = 0, found = 0;
    for (int i = 0; i < f->n_meta; i++) {
        char *key = f->meta_keys[i], *val = f->meta_vals[i];
        if (!is_xxh3_key(key)) {
            f->meta_keys[kept] = key;
            f->meta_vals[kept++] = val;
            continue;
        }
        const char *name = key + sizeof ST_XXH3_PREFIX - 1;
        int         rc = 0, j = st_find(f, name);
        size_t      len = strlen(val);
        bool        hex = len == 16;
        for (size_t k = 0; k < len && hex; k++)
            hex = (val[k] >= '0' && val[k] <= '9') || (val[k] >= 'a' && val[k] <= 'f');
        if (j < 0)
            rc = bad(f->path, "checksum entry '%.300s' names no tensor of the file", key);
        else if (!hex)
            rc = bad(f->path, "checksum of tensor '%s' is '%.40s', expected 16 hex digits", name,
                     val);
        else {
            f->entries[j].has_xxh3 = true;
            f->entries[j].xxh3 = strtoull(val, NULL, 16);
            found++;
        }
        free(key);
        free(val);
        if (rc) {
            /* The remaining entries are freed by st_close from their slots. */
            for (int r = i + 1; r < f->n_meta; r++) {
                f->meta_keys[kept] = f->meta_keys[r];
                f->meta_vals[kept++] = f->meta_vals[r];
            }
            f->n_meta = kept;
            return rc;
        }
    }
    f->n_meta = kept;
    if (found == 0) return 0;
    for (int j = 0; j < f->n; j++)
        if (!f->entries[j].has_xxh3)
            return bad(f->path,
                       "tensor '%s' has no checksum though %d other tensor%s have one (entries "
                       "removed from the header?)",
                       f->entries[j].name, found, found > 1 ? "s" : "");
    f->has_xxh3 = true;
    return 0;
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
    if (rc == 0) rc = parse_checksums(f);
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

/* Compares a tensor's hash with the recorded one. */
static int check_xxh3(const StFile *f, const Entry *e, uint64_t got)
{
    if (got == e->xxh3) return 0;
    log_error("st_read_f32: '%s': tensor '%s' is damaged: its %llu bytes hash to xxh3 %016llx, "
              "the file records %016llx",
              f->path, e->name, (unsigned long long)(e->end - e->begin), (unsigned long long)got,
              (unsigned long long)e->xxh3);
    return ERR_FORMAT;
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
    if (!is_f16 && !is_bf16) {
        size_t nbytes = e->numel * sizeof(float);
        int    rc = read_exact(f, dst, nbytes, off, name);
        /* dst holds the file's bytes unchanged (little-endian host). */
        if (rc == 0 && e->has_xxh3)
            rc = check_xxh3(f, e, XXH3_64bits(nbytes ? (const void *)dst : "", nbytes));
        return rc;
    }
    /* Halves go through a small buffer so no allocation is needed; the
     * checksum is of the half-precision bytes, hashed as they stream by. */
    XXH3_state_t *hs = e->has_xxh3 ? XXH3_createState() : NULL;
    CHECK(!e->has_xxh3 || (hs && XXH3_64bits_reset(hs) == XXH_OK));
    uint16_t buf[4096];
    int      rc = 0;
    for (size_t done = 0; done < e->numel && rc == 0;) {
        size_t n = e->numel - done < 4096 ? e->numel - done : 4096;
        if ((rc = read_exact(f, buf, n * 2, off + done * 2, name)) != 0) break;
        if (hs) XXH3_64bits_update(hs, buf, n * 2);
        for (size_t k = 0; k < n; k++)
            dst[done + k] = is_f16 ? half_f16_to_f32(buf[k]) : half_bf16_to_f32(buf[k]);
        done += n;
    }
    if (rc == 0 && hs) rc = check_xxh3(f, e, XXH3_64bits_digest(hs));
    XXH3_freeState(hs);
    return rc;
}

bool st_has_checksums(const StFile *f)
{
    return f->has_xxh3;
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
