/* safetensors: reading and writing tensor files in the safetensors format.
 *
 * Layout: an 8-byte little-endian header length N, N bytes of JSON mapping
 * each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} plus
 * an optional "__metadata__" object of string values, then the data region.
 * Offsets are relative to the start of the data region, tensors are
 * row-major and little-endian, and they tile the data region exactly.
 *
 * Writing produces F32 tensors, in the order given, with the header padded
 * with spaces so the data starts 8-byte aligned, and replaces the target
 * atomically (fileio: temp file, fsync, rename, directory fsync).
 *
 * Integrity: every file st_write makes records, for each tensor, the XXH3-64
 * of its bytes in the data region, in the metadata under ST_XXH3_PREFIX plus
 * the tensor's name as 16 lower-case hex digits. Metadata values are plain
 * strings, so other readers (Python's safetensors, transformers) load the
 * file as before. st_open validates the entries (each names a tensor of the
 * file, 16 hex digits, and every tensor has one once any has) and keeps them
 * out of st_meta_*; st_read_f32 hashes the bytes it reads and refuses a
 * tensor whose hash differs (ERR_FORMAT, naming file and tensor). A file
 * without the entries (written before they existed, or by another tool) is
 * read unverified; st_has_checksums tells which.
 *
 * Reading treats the file as untrusted: st_open validates the whole header
 * against the file size before anything is used (lengths, JSON, field types,
 * dtypes, shapes against byte ranges with overflow checks, bounds, overlaps
 * and holes) and refuses a bad file with ERR_FORMAT. Tensor data is read with
 * pread straight into the caller's buffer, so the file is never mapped and a
 * file truncated underneath becomes ERR_IO, not a crash. F32, F16 and BF16
 * tensors can be read (converted to F32); other standard dtypes are accepted
 * in the header but refused when read.
 *
 * Ownership: st_open's caller owns the StFile; names, dtypes and metadata
 * strings it returns are borrowed until st_close. Threading: one thread per
 * StFile. Errors: 0 or a negative ERR_* code, each failure logged once with
 * the function, the file, the tensor and the bad vs expected value. */
#ifndef RLHF_SAFETENSORS_H
#define RLHF_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ST_MAX_NDIM 8                               /* most dimensions of one tensor */
#define ST_MAX_NAME 255                             /* longest tensor name or metadata key, bytes */
#define ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000) /* largest JSON header accepted, bytes */
#define ST_METADATA_KEY "__metadata__"
#define ST_XXH3_PREFIX "rlhf_xxh3:" /* metadata key of a tensor's checksum: prefix + name */

/* One tensor to write: F32 data, row-major, numel = product of shape. */
typedef struct {
    const char  *name;               /* unique, 1..ST_MAX_NAME bytes, not ST_METADATA_KEY */
    const float *data;               /* (numel) borrowed; may be NULL when numel == 0 */
    int          ndim;               /* 0..ST_MAX_NDIM; 0 is a scalar of one element */
    int64_t      shape[ST_MAX_NDIM]; /* each >= 0 */
} StTensor;

/* One metadata entry; both strings borrowed. */
typedef struct {
    const char *key;   /* unique, 1..ST_MAX_NAME bytes */
    const char *value; /* any string */
} StMeta;

/* Writes n tensors and n_meta metadata entries to path, atomically replacing
 * any existing file, with each tensor's checksum (see Integrity above).
 * Returns 0; ERR_ARG for a bad name, duplicate name or key, a key that
 * starts with ST_XXH3_PREFIX, bad ndim or shape, or NULL data (logged);
 * ERR_IO on a write failure (the target is untouched). */
int st_write(const char *path, const StTensor *tensors, int n, const StMeta *meta, int n_meta);

typedef struct StFile StFile;

/* What the header says about one tensor. */
typedef struct {
    const char *name;               /* borrowed */
    const char *dtype;              /* borrowed, e.g. "F32", "BF16" */
    int         ndim;               /* 0..ST_MAX_NDIM */
    int64_t     shape[ST_MAX_NDIM]; /* entries past ndim are 0 */
    size_t      numel;              /* product of shape (1 for a scalar) */
    size_t      nbytes;             /* bytes in the data region */
} StInfo;

/* Opens and validates path. Returns 0 with *out set; ERR_NOTFOUND if the
 * file does not exist; ERR_IO if it cannot be read; ERR_FORMAT if anything
 * in it is malformed or inconsistent (logged with the tensor and the
 * problem). Caller owns *out. */
int  st_open(const char *path, StFile **out);
void st_close(StFile **f);

const char *st_path(const StFile *f);
/* Tensors in the file, listed in header order. */
int st_count(const StFile *f);
/* Info for tensor i in 0..st_count-1 (CHECKed). */
void st_info_at(const StFile *f, int i, StInfo *out);
/* Index of the tensor called name, or ERR_NOTFOUND (negative). A lookup:
 * nothing is logged. */
int st_find(const StFile *f, const char *name);

/* Copies tensor name into dst (numel floats) as F32, checking that it has
 * exactly the expected ndim and shape, and that its bytes match the file's
 * checksum when it has one. Returns 0; ERR_NOTFOUND if absent; ERR_MISMATCH
 * if the shape differs or the dtype cannot be converted to F32 (logged with
 * expected and found); ERR_FORMAT if the bytes do not match the recorded
 * checksum (logged: "tensor 'x' is damaged", both hashes); ERR_IO if the read
 * fails. dst is unspecified on error. */
int st_read_f32(StFile *f, const char *name, float *dst, int ndim, const int64_t *shape);

/* True when the file records a checksum for each of its tensors (so every
 * st_read_f32 is verified); false for a file without them. */
bool st_has_checksums(const StFile *f);

/* Value of metadata key, borrowed, or NULL when absent. The checksum
 * entries are not metadata here: st_meta_* never return them. */
const char *st_meta_get(const StFile *f, const char *key);
int         st_meta_count(const StFile *f);
/* Key and value of metadata entry i in 0..st_meta_count-1 (CHECKed). */
void st_meta_at(const StFile *f, int i, const char **key, const char **value);

#endif
