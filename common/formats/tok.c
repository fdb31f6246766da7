#include "common/formats/tok.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
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
