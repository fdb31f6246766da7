/* The character tokenizer's self-test: fixed special ids, charset order,
 * round trips, BOS/EOS placement and rendering, refusals (unknown
 * characters, small buffers, ids out of range) and charset validation. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/formats/tok.h"
#include "tests/support/expect.h"
#include "tests/test_list.h"

/* Encodes then decodes s and compares; returns 0 when it comes back unchanged. */
static int round_trip(const Tok *t, const char *s, int flags)
{
    int    ids[256], n = 0;
    char   back[TOK_DECODE_MAX_BYTES(256)];
    size_t len = 0;
    if (tok_encode(t, s, strlen(s), flags, ids, 256, &n) != 0) return 1;
    if (tok_decode(t, ids, n, 0, back, sizeof back, &len) != 0) return 1;
    return strcmp(back, s) != 0 || len != strlen(s);
}

int tok_selftest(bool verbose)
{
    Tok *t = tok_new(TOK_CHARSET_DEFAULT);
    if (!EXPECT(t != NULL, "tok_new refused the default charset")) return expect_end();

    /* Special ids are fixed and characters follow in charset order. */
    int vocab = tok_vocab_size(t);
    EXPECT(vocab == TOK_N_SPECIAL + (int)strlen(TOK_CHARSET_DEFAULT), "vocab %d, expected %d",
           vocab, TOK_N_SPECIAL + (int)strlen(TOK_CHARSET_DEFAULT));
    EXPECT(tok_id(t, ' ') == TOK_N_SPECIAL && tok_id(t, '0') == TOK_N_SPECIAL + 1,
           "ids of ' ' and '0': %d %d, expected %d %d", tok_id(t, ' '), tok_id(t, '0'),
           TOK_N_SPECIAL, TOK_N_SPECIAL + 1);
    EXPECT(tok_char(t, TOK_N_SPECIAL + 1) == '0' && tok_char(t, TOK_BOS) == '\0',
           "tok_char of the '0' id and of BOS");
    EXPECT(tok_char(t, vocab) == '\0' && tok_char(t, -1) == '\0',
           "tok_char out of range is not '\\0'");
    EXPECT(tok_id(t, '\n') == ERR_NOTFOUND && tok_id(t, (char)0xc3) == ERR_NOTFOUND,
           "ids of '\\n' and 0xc3: %d %d, expected ERR_NOTFOUND", tok_id(t, '\n'),
           tok_id(t, (char)0xc3));
    EXPECT(strcmp(tok_charset(t), TOK_CHARSET_DEFAULT) == 0, "charset '%s', expected the default",
           tok_charset(t));
    int bad_id = -1;
    for (int id = TOK_N_SPECIAL; id < vocab && bad_id < 0; id++)
        if (tok_id(t, tok_char(t, id)) != id) bad_id = id;
    EXPECT(bad_id < 0, "id %d does not map back to itself through its character", bad_id);

    /* Round trips, with and without specials. */
    EXPECT(round_trip(t, "12+34=46", 0) == 0, "round trip of '12+34=46'");
    EXPECT(round_trip(t, "What is 7*6? 42.", TOK_ENC_BOS) == 0, "round trip with BOS");
    EXPECT(round_trip(t, "", TOK_ENC_BOS | TOK_ENC_EOS) == 0, "round trip of '' with BOS and EOS");
    EXPECT(round_trip(t, "(a-b)/c = [x], y: \"z\"!", TOK_ENC_EOS) == 0,
           "round trip of punctuation with EOS");

    /* BOS/EOS placement and rendering. */
    int ids[16] = {0}, n = 0;
    int rc = tok_encode(t, "1+1", 3, TOK_ENC_BOS | TOK_ENC_EOS, ids, 16, &n);
    EXPECT(rc == 0 && n == 5, "encode '1+1' with BOS and EOS: rc %d, %d ids, expected 5", rc, n);
    EXPECT(ids[0] == TOK_BOS && ids[4] == TOK_EOS && ids[2] == tok_id(t, '+'),
           "ids %d %d %d, expected BOS first, '+' third and EOS last", ids[0], ids[2], ids[4]);
    ids[5] = TOK_PAD;
    char   out[TOK_DECODE_MAX_BYTES(16)];
    size_t len = 0;
    rc = tok_decode(t, ids, 6, TOK_DEC_SPECIAL, out, sizeof out, &len);
    EXPECT(rc == 0 && strcmp(out, "<bos>1+1<eos><pad>") == 0 && len == strlen(out),
           "decode with specials: rc %d, '%s'", rc, out);
    rc = tok_decode(t, ids, 6, 0, out, sizeof out, &len);
    EXPECT(rc == 0 && strcmp(out, "1+1") == 0, "decode without specials: rc %d, '%s'", rc, out);
    /* The worst case bound is tight: all specials rendered. */
    int specials[3] = {TOK_BOS, TOK_EOS, TOK_PAD};
    rc = tok_decode(t, specials, 3, TOK_DEC_SPECIAL, out, TOK_DECODE_MAX_BYTES(3), &len);
    EXPECT(rc == 0 && len == 15, "three specials in TOK_DECODE_MAX_BYTES(3): rc %d, length %zu", rc,
           len);

    /* Refusals: unknown characters, small buffers, ids out of range. */
    fileio_capture_begin();
    int   r_unk = tok_encode(t, "1+1\n", 4, 0, ids, 16, &n);
    int   r_utf = tok_encode(t, "caf\xc3\xa9", 5, 0, ids, 16, &n);
    int   r_cap = tok_encode(t, "12345", 5, TOK_ENC_BOS, ids, 5, &n);
    int   n_cap = n;
    int   bad_ids[3] = {TOK_N_SPECIAL, vocab, TOK_N_SPECIAL};
    int   r_id = tok_decode(t, bad_ids, 3, 0, out, sizeof out, &len);
    int   neg_ids[1] = {-1};
    int   r_neg = tok_decode(t, neg_ids, 1, 0, out, sizeof out, &len);
    int   r_small = tok_decode(t, ids, 1, 0, out, 1, &len);
    char *log = fileio_capture_end(verbose);
    bool  logged = strstr(log, "byte 0x0a at byte 3") && strstr(log, "byte 0xc3 at byte 3") &&
                  strstr(log, "at index 1 of 3");
    free(log);
    EXPECT(r_unk == ERR_RANGE && r_utf == ERR_RANGE && r_cap == ERR_RANGE && n_cap == 6,
           "encode refusals: %d %d %d (needed %d ids), expected ERR_RANGE and 6", r_unk, r_utf,
           r_cap, n_cap);
    EXPECT(r_id == ERR_RANGE && r_neg == ERR_RANGE && r_small == ERR_RANGE,
           "decode refusals: %d %d %d, expected ERR_RANGE", r_id, r_neg, r_small);
    EXPECT(logged, "the refusals' log lacks the byte or the index");

    /* Charset validation: duplicates, non-printable, empty, too long. */
    char long_set[TOK_CHARSET_MAX + 2];
    for (int i = 0; i < TOK_CHARSET_MAX; i++) long_set[i] = (char)(0x20 + i);
    long_set[TOK_CHARSET_MAX] = '\0';
    char why[160] = "";
    EXPECT(tok_charset_validate(long_set, why, sizeof why) == 0, "all 95 printable refused: %s",
           why);
    long_set[TOK_CHARSET_MAX] = 'a';
    long_set[TOK_CHARSET_MAX + 1] = '\0';
    EXPECT(tok_charset_validate(long_set, why, sizeof why) == ERR_ARG, "96 characters accepted");
    EXPECT(tok_charset_validate("abca", why, sizeof why) == ERR_ARG && strstr(why, "position 3"),
           "duplicate 'a': why '%s', expected position 3", why);
    EXPECT(tok_charset_validate("ab\tc", NULL, 0) == ERR_ARG, "a tab accepted");
    EXPECT(tok_charset_validate("", NULL, 0) == ERR_ARG, "an empty charset accepted");
    EXPECT(tok_charset_validate(NULL, NULL, 0) == ERR_ARG, "a NULL charset accepted");
    fileio_capture_begin();
    Tok *dup = tok_new("0123456789+0");
    log = fileio_capture_end(verbose);
    logged = strstr(log, "tok_new") && strstr(log, "position 11");
    free(log);
    EXPECT(!dup && logged, "tok_new of a duplicate: %s, log %s 'position 11'",
           dup ? "accepted" : "refused", logged ? "has" : "lacks");
    tok_free(&dup);

    /* A custom charset gets its own ids. */
    Tok *small = tok_new("ab");
    EXPECT(small && tok_vocab_size(small) == 5 && tok_id(small, 'b') == 4 && tok_id(small, '0') < 0,
           "charset 'ab': vocab 5, 'b' id 4 and no '0' expected");
    tok_free(&small);
    tok_free(&small); /* no-op on NULL */
    if (verbose) printf("  tok: vocab %d\n", vocab);
    tok_free(&t);
    return expect_end();
}
