/* fuzz: what the libFuzzer harnesses of tests/fuzz share: the start-up of a
 * harness (quiet logs, the seed writer), inputs as files without touching
 * the disk (a memfd named by its /proc path, or a file in a private tmpfs
 * directory), a cursor that cuts one input into several frames, and the
 * seed files written with our own encoders.
 *
 * A harness is tests/fuzz/<name>_fuzz.c: LLVMFuzzerInitialize calls
 * fuzz_init with the harness's seed writer, LLVMFuzzerTestOneInput feeds
 * the input to the decoder the way the daemon or loader does and checks
 * what it can (a property such as decode(encode(s)) == s) with FUZZ_CHECK.
 * `make fuzz` (tests/fuzz/run.sh) builds each against the library compiled
 * with clang, ASan and UBSan and runs it.
 *
 * Seeds: with RLHF_FUZZ_SEEDS=DIR in the environment, fuzz_init calls the
 * seed writer with DIR (which it creates) and exits: the seeds always come
 * from the current encoders, so they never drift from the format.
 *
 * Ownership: every path returned is borrowed and valid until the next call
 * that returns one of the same kind. Threading: one thread (libFuzzer runs
 * inputs one by one). Errors: a failure of the harness's own plumbing (no
 * memfd, no temp directory) aborts with a message: it is not a finding of
 * the decoder but the run cannot go on. */
#ifndef RLHF_FUZZ_H
#define RLHF_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "common/formats/bpe.h"

/* Writes the harness's seed files into dir (which exists). */
typedef void (*FuzzSeedFn)(const char *dir);

/* Sets up a harness: logs at ERROR only (every refusal is still formatted,
 * so a bad format string or argument is found) and, with RLHF_FUZZ_SEEDS
 * set, writes the seeds with seeds and exits 0. */
void fuzz_init(const char *name, FuzzSeedFn seeds);

/* A property of the decoder that failed: prints the message and aborts, so
 * libFuzzer saves the input as a crash. */
#define FUZZ_CHECK(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) fuzz_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);                            \
    } while (0)
_Noreturn void fuzz_fail(const char *file, int line, const char *expr, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- inputs as files ---------------------------------------------------- */

/* Replaces the content of the harness's memfd with p[0..n) and returns a
 * path that opens it ("/proc/self/fd/N"): a regular file for fstat, read
 * with pread like any other, never on disk. */
const char *fuzz_memfd_path(const void *p, size_t n);

/* The harness's private directory (under $TMPDIR, else /dev/shm, else
 * /tmp), removed with its files at exit. */
const char *fuzz_tmpdir(void);
/* Writes p[0..n) to fuzz_tmpdir()/name (replacing it) and returns its path. */
const char *fuzz_tmpfile(const char *name, const void *p, size_t n);
/* Removes fuzz_tmpdir()/name if it exists. */
void fuzz_tmpfile_remove(const char *name);

/* ---- the byte-level BPE tokenizer ---------------------------------------- */

/* The tokenizer the BPE harnesses use: SmolLM2's, from the GGUF file
 * fixture_smollm2_path would find ($RLHF_SMOLLM2_GGUF, else `make model`'s
 * models/ file), when it is readable; else fuzz_bpe_small's. Prints "fuzz:
 * tokenizer: <which>" on stdout (it lands in run.sh's log). Caller owns. */
Bpe *fuzz_bpe(void);
/* A small hand-made tokenizer: the ChatML special tokens, a user-defined
 * one, the byte tokens less 0x04, ten merges and a ChatML template. Caller
 * owns. */
Bpe *fuzz_bpe_small(void);

/* ---- cutting one input into parts --------------------------------------- */

typedef struct {
    const uint8_t *p; /* (n) what is left */
    size_t         n;
} FuzzIn;

/* The next byte, or 0 once the input is used up. */
uint8_t fuzz_u8(FuzzIn *in);
/* The next 2 bytes as a little-endian number (missing bytes read as 0). */
uint16_t fuzz_u16(FuzzIn *in);
/* A frame: a u16 length, then that many bytes (fewer if the input ends).
 * Returns false when nothing is left. *p points into the input. */
bool fuzz_frame(FuzzIn *in, const uint8_t **p, size_t *n);

/* ---- seeds -------------------------------------------------------------- */

/* Writes p[0..n) to dir/name; aborts if it cannot. */
void fuzz_seed(const char *dir, const char *name, const void *p, size_t n);
/* Writes message m, packed, to dir/name. */
void fuzz_seed_msg(const char *dir, const char *name, const ProtobufCMessage *m);
/* Appends one frame (the u16 length fuzz_frame reads, then the bytes) to a
 * growing buffer *buf of *len bytes (realloc'd; start with NULL, 0). */
void fuzz_frame_put(uint8_t **buf, size_t *len, const void *p, size_t n);
/* Appends message m, packed, as one frame. */
void fuzz_frame_put_msg(uint8_t **buf, size_t *len, const ProtobufCMessage *m);

#endif
