#include "tests/test_list.h"
#include "common/formats/tok.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/log.h"

struct Tok {
    char charset[TOK_CHARSET_MAX + 1]; /* NUL-terminated, as given */
    int  n_chars;                      /* strlen(charset) */
    int  id_of[128];                   /* character -> id, or -1 */
};

static const char *const k_special_names[TOK_N_SPECIAL] = {"<pad>", "<bos>", "<eos>"};

static bool is_printable(unsigned char c)
{
    return c >= 0x20 && c <= 0x7e;
}

/* Renders byte c for a log line: 'x' when printable, else its hex code. */
static void describe_char(unsigned char c, char *out, size_t len)
{
    if (is_printable(c))
        snprintf(out, len, "'%c' (0x%02x)", c, c);
    else
        snprintf(out, len, "byte 0x%02x", c);
}

int tok_charset_validate(const char *charset, char *why, size_t why_len)
{
    char scratch[160];
    if (!why) {
        why = scratch;
        why_len = sizeof scratch;
    }
    if (!charset) {
        snprintf(why, why_len, "charset is NULL");
        return ERR_ARG;
    }
    /* strnlen bounds the scan of a string that may lack its terminator. */
    size_t n = strnlen(charset, TOK_CHARSET_MAX + 1);
    if (n == 0 || n > TOK_CHARSET_MAX) {
        snprintf(why, why_len, "charset length %s, expected 1..%d", n == 0 ? "0" : "over the limit",
                 TOK_CHARSET_MAX);
        return ERR_ARG;
    }
    int first_at[128];
    for (int i = 0; i < 128; i++) first_at[i] = -1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)charset[i];
        char          desc[24];
        describe_char(c, desc, sizeof desc);
        if (!is_printable(c)) {
            snprintf(why, why_len, "charset position %zu: %s is not printable ASCII (0x20..0x7e)",
                     i, desc);
            return ERR_ARG;
        }
        if (first_at[c] >= 0) {
            snprintf(why, why_len, "charset position %zu: %s repeats position %d", i, desc,
                     first_at[c]);
            return ERR_ARG;
        }
        first_at[c] = (int)i;
    }
    return 0;
}

Tok *tok_new(const char *charset)
{
    char why[160];
    if (tok_charset_validate(charset, why, sizeof why) != 0) {
        log_error("tok_new: %s", why);
        return NULL;
    }
    Tok *t = xcalloc(1, sizeof *t);
    t->n_chars = (int)strlen(charset);
    memcpy(t->charset, charset, (size_t)t->n_chars + 1);
    for (int c = 0; c < 128; c++) t->id_of[c] = -1;
    for (int i = 0; i < t->n_chars; i++) t->id_of[(unsigned char)charset[i]] = TOK_N_SPECIAL + i;
    return t;
}

void tok_free(Tok **t)
{
    if (!t || !*t) return;
    free(*t);
    *t = NULL;
}

int tok_vocab_size(const Tok *t)
{
    return TOK_N_SPECIAL + t->n_chars;
}

const char *tok_charset(const Tok *t)
{
    return t->charset;
}

int tok_id(const Tok *t, char c)
{
    unsigned char u = (unsigned char)c;
    if (u >= 128 || t->id_of[u] < 0) return ERR_NOTFOUND;
    return t->id_of[u];
}

char tok_char(const Tok *t, int id)
{
    if (id < TOK_N_SPECIAL || id >= tok_vocab_size(t)) return '\0';
    return t->charset[id - TOK_N_SPECIAL];
}

int tok_encode(const Tok *t, const char *text, size_t len, int flags, int *ids, int cap, int *n_ids)
{
    CHECK(t && (text || len == 0) && n_ids && cap >= 0 && (ids || cap == 0));
    int n_special = ((flags & TOK_ENC_BOS) ? 1 : 0) + ((flags & TOK_ENC_EOS) ? 1 : 0);
    /* The count must fit an int before anything is sized from it. */
    if (len > (size_t)(__INT_MAX__ - n_special)) {
        *n_ids = -1;
        log_error("tok_encode: text of %zu bytes, limit %d", len, __INT_MAX__ - n_special);
        return ERR_RANGE;
    }
    int need = (int)len + n_special;
    *n_ids = need;
    if (need > cap) {
        log_error("tok_encode: %d ids needed for %zu bytes of text, capacity %d", need, len, cap);
        return ERR_RANGE;
    }
    int k = 0;
    if (flags & TOK_ENC_BOS) ids[k++] = TOK_BOS;
    for (size_t i = 0; i < len; i++) {
        int id = tok_id(t, text[i]);
        if (id < 0) {
            char desc[24];
            describe_char((unsigned char)text[i], desc, sizeof desc);
            log_error("tok_encode: %s at byte %zu of %zu is not in the vocabulary", desc, i, len);
            return ERR_RANGE;
        }
        ids[k++] = id;
    }
    if (flags & TOK_ENC_EOS) ids[k++] = TOK_EOS;
    return 0;
}

int tok_decode(const Tok *t, const int *ids, int n, int flags, char *out, size_t cap,
               size_t *len_out)
{
    CHECK(t && (ids || n == 0) && n >= 0 && (out || cap == 0));
    if (len_out) *len_out = 0;
    if (cap > 0) out[0] = '\0';
    int    vocab = tok_vocab_size(t);
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        int id = ids[i];
        if (id < 0 || id >= vocab) {
            log_error("tok_decode: id %d at index %d of %d, expected 0..%d", id, i, n, vocab - 1);
            if (cap > 0) out[0] = '\0';
            return ERR_RANGE;
        }
        const char *piece;
        char        one[2] = {0, 0};
        if (id < TOK_N_SPECIAL) {
            if (!(flags & TOK_DEC_SPECIAL)) continue;
            piece = k_special_names[id];
        } else {
            one[0] = t->charset[id - TOK_N_SPECIAL];
            piece = one;
        }
        size_t m = strlen(piece);
        /* Keep one byte for the terminator. */
        if (k + m + 1 > cap) {
            log_error("tok_decode: output of %d ids needs more than %zu bytes (at index %d)", n,
                      cap, i);
            if (cap > 0) out[0] = '\0';
            return ERR_RANGE;
        }
        memcpy(out + k, piece, m);
        k += m;
    }
    if (cap > 0) out[k] = '\0';
    if (len_out) *len_out = k;
    return 0;
}

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
    int  rc = 1;
    Tok *t = tok_new(TOK_CHARSET_DEFAULT);
    Tok *small = NULL;
    if (!t) return 1;

    /* Special ids are fixed and characters follow in charset order. */
    int vocab = tok_vocab_size(t);
    if (vocab != TOK_N_SPECIAL + (int)strlen(TOK_CHARSET_DEFAULT)) goto cleanup;
    if (tok_id(t, ' ') != TOK_N_SPECIAL || tok_id(t, '0') != TOK_N_SPECIAL + 1) goto cleanup;
    if (tok_char(t, TOK_N_SPECIAL + 1) != '0' || tok_char(t, TOK_BOS) != '\0') goto cleanup;
    if (tok_char(t, vocab) != '\0' || tok_char(t, -1) != '\0') goto cleanup;
    if (tok_id(t, '\n') != ERR_NOTFOUND || tok_id(t, (char)0xc3) != ERR_NOTFOUND) goto cleanup;
    if (strcmp(tok_charset(t), TOK_CHARSET_DEFAULT) != 0) goto cleanup;
    for (int id = TOK_N_SPECIAL; id < vocab; id++)
        if (tok_id(t, tok_char(t, id)) != id) goto cleanup;

    /* Round trips, with and without specials. */
    if (round_trip(t, "12+34=46", 0) || round_trip(t, "What is 7*6? 42.", TOK_ENC_BOS) ||
        round_trip(t, "", TOK_ENC_BOS | TOK_ENC_EOS) ||
        round_trip(t, "(a-b)/c = [x], y: \"z\"!", TOK_ENC_EOS))
        goto cleanup;

    /* BOS/EOS placement and rendering. */
    int ids[16], n = 0;
    if (tok_encode(t, "1+1", 3, TOK_ENC_BOS | TOK_ENC_EOS, ids, 16, &n) != 0 || n != 5)
        goto cleanup;
    if (ids[0] != TOK_BOS || ids[4] != TOK_EOS || ids[2] != tok_id(t, '+')) goto cleanup;
    ids[5] = TOK_PAD;
    char   out[TOK_DECODE_MAX_BYTES(16)];
    size_t len = 0;
    if (tok_decode(t, ids, 6, TOK_DEC_SPECIAL, out, sizeof out, &len) != 0) goto cleanup;
    if (strcmp(out, "<bos>1+1<eos><pad>") != 0 || len != strlen(out)) goto cleanup;
    if (tok_decode(t, ids, 6, 0, out, sizeof out, &len) != 0 || strcmp(out, "1+1")) goto cleanup;
    /* The worst case bound is tight: all specials rendered. */
    int specials[3] = {TOK_BOS, TOK_EOS, TOK_PAD};
    if (tok_decode(t, specials, 3, TOK_DEC_SPECIAL, out, TOK_DECODE_MAX_BYTES(3), &len) != 0 ||
        len != 15)
        goto cleanup;

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
    if (r_unk != ERR_RANGE || r_utf != ERR_RANGE || r_cap != ERR_RANGE || n_cap != 6 ||
        r_id != ERR_RANGE || r_neg != ERR_RANGE || r_small != ERR_RANGE || !logged)
        goto cleanup;

    /* Charset validation: duplicates, non-printable, empty, too long. */
    char long_set[TOK_CHARSET_MAX + 2];
    for (int i = 0; i < TOK_CHARSET_MAX; i++) long_set[i] = (char)(0x20 + i);
    long_set[TOK_CHARSET_MAX] = '\0';
    char why[160];
    if (tok_charset_validate(long_set, why, sizeof why) != 0) goto cleanup; /* all 95 is fine */
    long_set[TOK_CHARSET_MAX] = 'a';
    long_set[TOK_CHARSET_MAX + 1] = '\0';
    if (tok_charset_validate(long_set, why, sizeof why) != ERR_ARG) goto cleanup;
    if (tok_charset_validate("abca", why, sizeof why) != ERR_ARG || !strstr(why, "position 3"))
        goto cleanup;
    if (tok_charset_validate("ab\tc", NULL, 0) != ERR_ARG) goto cleanup;
    if (tok_charset_validate("", NULL, 0) != ERR_ARG) goto cleanup;
    if (tok_charset_validate(NULL, NULL, 0) != ERR_ARG) goto cleanup;
    fileio_capture_begin();
    Tok *dup = tok_new("0123456789+0");
    log = fileio_capture_end(verbose);
    logged = strstr(log, "tok_new") && strstr(log, "position 11");
    free(log);
    if (dup || !logged) {
        tok_free(&dup);
        goto cleanup;
    }

    /* A custom charset gets its own ids. */
    small = tok_new("ab");
    if (!small || tok_vocab_size(small) != 5 || tok_id(small, 'b') != 4 || tok_id(small, '0') >= 0)
        goto cleanup;
    tok_free(&small);
    tok_free(&small); /* no-op on NULL */
    rc = 0;
cleanup:
    if (verbose)
        printf("  tok: vocab %d, round trips and refusals %s\n", vocab, rc ? "FAILED" : "ok");
    tok_free(&t);
    tok_free(&small);
    return rc;
}
