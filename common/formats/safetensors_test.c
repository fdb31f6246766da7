/* The safetensors self-test: bit-exact round trips, every F16 bit pattern
 * and BF16 read as F32, truncations, wrong header lengths, one malformed
 * header per defect, reads that do not fit, the writer's refusals, and the
 * tensors' checksums (damage found and named, bad entries refused, files
 * without them read unverified). */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/rng.h"
#include "common/formats/safetensors.h"
#include "tests/support/expect.h"
#include "tests/test_list.h"

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
 * expect. */
static void expect_open_fails(const char *path, int want, const char *expect, const char *what)
{
    StFile *f = NULL;
    fileio_capture_begin();
    int   rc = st_open(path, &f);
    char *log = fileio_capture_end(expect_verbose());
    bool  logged = strstr(log, expect) != NULL;
    free(log);
    EXPECT(rc == want && !f && logged, "%s: st_open returned %d (%s), expected %d; log %s '%s'",
           what, rc, err_str(rc), want, logged ? "has" : "lacks", expect);
    st_close(&f);
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

/* st_read_f32 of name expecting code want and, when want is an error, a log
 * line containing expect. */
static bool expect_read(StFile *f, const char *name, float *dst, int ndim, const int64_t *shape,
                        int want, const char *expect, const char *what)
{
    fileio_capture_begin();
    int   rc = st_read_f32(f, name, dst, ndim, shape);
    char *log = fileio_capture_end(expect_verbose());
    bool  logged = !expect || strstr(log, expect) != NULL;
    free(log);
    return EXPECT(rc == want && logged,
                  "%s: st_read_f32('%s') returned %d (%s), expected %d; log %s '%s'", what, name,
                  rc, err_str(rc), want, logged ? "has" : "lacks", expect ? expect : "");
}

/* Checksums: written for every tensor, hidden from the metadata, verified
 * on every read (F32 and half precision), damage named with the tensor, bad
 * entries refused at open, a file without them read unverified. */
static void test_checksums(const char *dir)
{
    char path[PATH_MAX], bad_path[PATH_MAX];
    snprintf(path, sizeof path, "%s/ck.safetensors", dir);
    snprintf(bad_path, sizeof bad_path, "%s/ck-bad.safetensors", dir);
    float a[64], b[8], got[64];
    for (int i = 0; i < 64; i++) a[i] = 0.25f * (float)i - 3.0f;
    for (int i = 0; i < 8; i++) b[i] = (float)(i * i);
    StTensor t[3] = {{"a", a, 2, {8, 8}}, {"b", b, 1, {8}}, {"empty", NULL, 1, {0}}};
    StMeta   meta = {"format", "pt"};
    StFile  *f = NULL;
    char    *raw = NULL;
    size_t   len = 0;
    if (!EXPECT(st_write(path, t, 3, &meta, 1) == 0 && st_open(path, &f) == 0 &&
                    fileio_read_all(path, 1 << 20, false, &raw, &len) == 0,
                "checksums: write, open and read back"))
        goto out;
    /* The header records XXH3 of each tensor's bytes, 16 hex digits. */
    char want_a[80];
    snprintf(want_a, sizeof want_a, "\"%sa\":\"%016llx\"", ST_XXH3_PREFIX,
             (unsigned long long)XXH3_64bits(a, sizeof a));
    EXPECT(st_has_checksums(f) && st_meta_count(f) == 1 && !st_meta_get(f, ST_XXH3_PREFIX "a") &&
               strstr(raw + 8, want_a),
           "checksums recorded (header has %s) and kept out of the metadata (%d entries)", want_a,
           st_meta_count(f));
    expect_read(f, "a", got, 2, (int64_t[]){8, 8}, 0, NULL, "intact tensor");
    expect_read(f, "empty", got, 1, (int64_t[]){0}, 0, NULL, "empty tensor");
    st_close(&f);

    /* One float of b changed in place: b is refused and named, a still reads. */
    uint64_t hlen;
    memcpy(&hlen, raw, 8);
    char  *damaged = xmalloc(len);
    size_t b_off = 8 + hlen + sizeof a + 3 * sizeof(float);
    memcpy(damaged, raw, len);
    memcpy(damaged + b_off, &(float){1000.0f}, sizeof(float));
    EXPECT(fileio_write_atomic(bad_path, damaged, len) == 0 && st_open(bad_path, &f) == 0,
           "the damaged file still opens (its header is intact)");
    char expect[PATH_MAX + 64];
    snprintf(expect, sizeof expect, "'%s': tensor 'b' is damaged: its 32 bytes hash to xxh3",
             bad_path);
    if (f) {
        expect_read(f, "b", got, 1, (int64_t[]){8}, ERR_FORMAT, expect, "a changed float");
        expect_read(f, "a", got, 2, (int64_t[]){8, 8}, 0, NULL, "the other tensor");
    }
    st_close(&f);
    free(damaged);

    /* Half precision: the checksum is of the file's 2-byte values. */
    uint16_t h[4] = {0x3c00, 0xc000, 0x3800, 0x0000}; /* 1, -2, 0.5, 0 */
    char     hdr[400];
    snprintf(hdr, sizeof hdr,
             "{\"__metadata__\":{\"%sh\":\"%016llx\"},\"h\":{\"dtype\":\"F16\",\"shape\":[4],"
             "\"data_offsets\":[0,8]}}",
             ST_XXH3_PREFIX, (unsigned long long)XXH3_64bits(h, sizeof h));
    EXPECT(write_raw(bad_path, hdr, -1, h, sizeof h) == 0 && st_open(bad_path, &f) == 0,
           "F16 file with a checksum");
    if (f && expect_read(f, "h", got, 1, (int64_t[]){4}, 0, NULL, "F16 with a checksum"))
        EXPECT(got[0] == 1.0f && got[1] == -2.0f && got[2] == 0.5f && got[3] == 0.0f,
               "F16 values %g %g %g %g", got[0], got[1], got[2], got[3]);
    st_close(&f);
    h[2] = 0x3801;
    EXPECT(write_raw(bad_path, hdr, -1, h, sizeof h) == 0 && st_open(bad_path, &f) == 0,
           "F16 file, one value changed");
    if (f)
        expect_read(f, "h", got, 1, (int64_t[]){4}, ERR_FORMAT, "tensor 'h' is damaged",
                    "a changed F16 value");
    st_close(&f);

    /* Bad checksum entries are refused when the file is opened. */
    const char *t2 = "\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                     "\"y\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}";
    struct {
        const char *meta, *expect, *what;
    } bad[] = {
        {"\"" ST_XXH3_PREFIX "x\":\"0123456789abcdef\",\"" ST_XXH3_PREFIX
         "z\":\"0123456789abcdef\"",
         "checksum entry 'rlhf_xxh3:z' names no tensor", "a checksum of no tensor"},
        {"\"" ST_XXH3_PREFIX "x\":\"0123456789ABCDEF\",\"" ST_XXH3_PREFIX "y\":\"0\"",
         "checksum of tensor 'x' is '0123456789ABCDEF', expected 16 hex digits", "upper case"},
        {"\"" ST_XXH3_PREFIX "x\":\"0123456789abcdef\"",
         "tensor 'y' has no checksum though 1 other tensor have one", "one checksum missing"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(hdr, sizeof hdr, "{\"__metadata__\":{%s},%s", bad[i].meta, t2);
        EXPECT(write_raw(bad_path, hdr, -1, NULL, 8) == 0, "%s: write", bad[i].what);
        expect_open_fails(bad_path, ERR_FORMAT, bad[i].expect, bad[i].what);
    }

    /* A file without checksums (an older writer, another tool) reads unverified. */
    snprintf(hdr, sizeof hdr, "{\"__metadata__\":{\"format\":\"pt\"},%s", t2);
    float xy[2] = {7, 8};
    EXPECT(write_raw(bad_path, hdr, -1, xy, sizeof xy) == 0 && st_open(bad_path, &f) == 0 &&
               !st_has_checksums(f),
           "a file without checksums opens and says so");
    if (f) expect_read(f, "y", got, 1, (int64_t[]){1}, 0, NULL, "unverified read");
    st_close(&f);

    /* The writer keeps the prefix for itself. */
    StMeta reserved = {ST_XXH3_PREFIX "a", "0000000000000000"};
    fileio_capture_begin();
    int   rc = st_write(bad_path, t, 1, &reserved, 1);
    char *log = fileio_capture_end(expect_verbose());
    EXPECT(rc == ERR_ARG && strstr(log, "is reserved for the tensors' checksums"),
           "a metadata key with the checksum prefix: %d, expected ERR_ARG", rc);
    free(log);
out:
    st_close(&f);
    free(raw);
}

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
    if (!EXPECT(st_write(path, t, 4, meta, 2) == 0 && st_open(path, &f) == 0,
                "round trip: write or open failed"))
        goto cleanup;
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
        EXPECT(ok, "round trip: contents differ");
        free(raw);
        raw = NULL;
    }

    /* 2. Overwriting replaces the file whole. */
    {
        float    c[2] = {1, 2};
        StTensor t2 = {"c", c, 1, {2}};
        bool     ok = st_write(path, &t2, 1, NULL, 0) == 0 && st_open(path, &f) == 0 &&
                  st_count(f) == 1 && st_meta_count(f) == 0 && st_find(f, "c") == 0;
        st_close(&f);
        EXPECT(ok, "overwrite failed");
    }

    /* 3. F16 and BF16 read as F32: every F16 bit pattern against arithmetic,
     *    through the chunked conversion path. */
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
        EXPECT(ok, "F16/BF16 conversion failed");
    }

    /* 4. Truncation at every kind of cut point of a valid file. */
    {
        float    w[6] = {1, 2, 3, 4, 5, 6};
        StTensor tt[2] = {{"w", w, 2, {2, 2}}, {"v", w + 4, 1, {2}}};
        StMeta   m1 = {"format", "pt"};
        size_t   len = 0;
        if (!EXPECT(st_write(path, tt, 2, &m1, 1) == 0 &&
                        fileio_read_all(path, 1 << 20, false, &raw, &len) == 0,
                    "writing and reading back the file to cut"))
            goto cleanup;
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
            EXPECT(fileio_write_atomic(bad_path, raw, cuts[i].cut) == 0, "%s: write", what);
            expect_open_fails(bad_path, ERR_FORMAT, cuts[i].expect, what);
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
            EXPECT(fileio_write_atomic(bad_path, raw, len) == 0, "%s: write", what);
            expect_open_fails(bad_path, ERR_FORMAT, lens[i].expect, what);
        }
        free(raw);
        raw = NULL;
    }

    /* 6. Malformed headers, one defect each. */
    for (size_t i = 0; i < sizeof k_bad_headers / sizeof k_bad_headers[0]; i++) {
        const BadHeader *c = &k_bad_headers[i];
        EXPECT(write_raw(bad_path, c->header, -1, NULL, c->data_len) == 0, "%s: write", c->what);
        expect_open_fails(bad_path, ERR_FORMAT, c->expect, c->what);
    }

    /* 7. Missing file and a directory in its place. */
    char missing[PATH_MAX + 16];
    snprintf(missing, sizeof missing, "%s/none", dir);
    expect_open_fails(missing, ERR_NOTFOUND, "No such file", "missing file");
    expect_open_fails(dir, ERR_IO, "not a regular file", "directory");

    /* 8. Well-formed files that do not fit the request: missing tensor, wrong
     *    shape, wrong rank, dtype that is not a float, file shrunk after open. */
    {
        const char *hdr = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
                          "\"i\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[16,24]}}";
        float       buf[8];
        if (!EXPECT(write_raw(bad_path, hdr, -1, NULL, 24) == 0 && st_open(bad_path, &f) == 0,
                    "writing and opening the file to read from"))
            goto cleanup;
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
            fileio_capture_begin();
            int   rc = st_read_f32(f, reads[i].name, buf, reads[i].ndim, reads[i].shape);
            char *log = fileio_capture_end(verbose);
            EXPECT(rc == reads[i].want && strstr(log, reads[i].expect),
                   "read '%s': rc %d, expected %d; log %s '%s'", reads[i].name, rc, reads[i].want,
                   strstr(log, reads[i].expect) ? "has" : "lacks", reads[i].expect);
            free(log);
        }
        fileio_capture_begin();
        int   rc_trunc = truncate(bad_path, 8 + 8) == 0
                             ? st_read_f32(f, "w", buf, 2, (int64_t[]){2, 2})
                             : ERR_OK;
        char *log = fileio_capture_end(verbose);
        EXPECT(rc_trunc == ERR_IO && strstr(log, "file ends early"),
               "read after truncation: rc %d, expected %d", rc_trunc, ERR_IO);
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
        bool old_intact = st_open(path, &f) == 0 && st_count(f) == 2 && st_find(f, "v") == 1;
        st_close(&f);
        bool codes = true;
        for (int i = 0; i < 6; i++) codes = codes && r[i] == ERR_ARG;
        EXPECT(codes && r[6] == ERR_IO && logged && old_intact,
               "writer refusals: codes %s, logged %d, old file %s", codes ? "ok" : "wrong", logged,
               old_intact ? "intact" : "damaged");
    }

    test_checksums(dir);

cleanup:
    st_close(&f);
    free(raw);
    EXPECT(fileio_remove_tree(dir) == 0, "removing the test directory %s", dir);
    return expect_end();
}
