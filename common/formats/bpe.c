#include "tests/test_list.h"
#include "common/formats/bpe.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/base/log.h"

/* ---- Unicode classes ---------------------------------------------------- */

enum { BPE_UC_OTHER = 0, BPE_UC_L = 1, BPE_UC_N = 2, BPE_UC_WS = 3 };

typedef struct {
    uint32_t lo, hi; /* inclusive code point range */
    uint8_t  cls;    /* BPE_UC_L or BPE_UC_N */
} BpeUcRange;

#include "common/formats/bpe_unicode.inc"

/* Marks a byte that is not the start of a valid UTF-8 sequence. */
#define BPE_CP_INVALID 0xFFFFFFFFu

/* Decodes the code point at s[p] (p < end) into *cp and returns its length.
 * Invalid UTF-8 (stray continuation bytes, overlong forms, surrogates, values
 * above U+10FFFF, truncated sequences) yields BPE_CP_INVALID and length 1, so
 * every byte still belongs to exactly one piece. */
static size_t utf8_next(const uint8_t *s, size_t p, size_t end, uint32_t *cp)
{
    uint8_t c = s[p];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t   n;
    uint32_t v, min;
    if ((c & 0xE0) == 0xC0) {
        n = 2, v = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        n = 3, v = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        n = 4, v = c & 0x07, min = 0x10000;
    } else {
        *cp = BPE_CP_INVALID;
        return 1;
    }
    if (end - p < n) {
        *cp = BPE_CP_INVALID;
        return 1;
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[p + i] & 0xC0) != 0x80) {
            *cp = BPE_CP_INVALID;
            return 1;
        }
        v = (v << 6) | (s[p + i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) {
        *cp = BPE_CP_INVALID;
        return 1;
    }
    *cp = v;
    return n;
}

/* The Unicode White_Space property, which is what \s matches in the
 * Oniguruma regex engine Hugging Face tokenizers run the split regex with. */
static bool uc_is_space(uint32_t cp)
{
    if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
    if (cp < 0x85) return false;
    return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

static int uc_class(uint32_t cp)
{
    if (cp == BPE_CP_INVALID) return BPE_UC_OTHER;
    if (cp < 0x80) {
        if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') return BPE_UC_L;
        if (cp >= '0' && cp <= '9') return BPE_UC_N;
        if (uc_is_space(cp)) return BPE_UC_WS;
        return BPE_UC_OTHER;
    }
    if (uc_is_space(cp)) return BPE_UC_WS;
    int lo = 0, hi = BPE_UC_N_RANGES - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < k_bpe_uc_ranges[mid].lo)
            hi = mid - 1;
        else if (cp > k_bpe_uc_ranges[mid].hi)
            lo = mid + 1;
        else
            return k_bpe_uc_ranges[mid].cls;
    }
    return BPE_UC_OTHER;
}

/* Class and length of the character at s[p]. */
static int char_at(const uint8_t *s, size_t p, size_t end, size_t *clen)
{
    uint32_t cp;
    *clen = utf8_next(s, p, end, &cp);
    return uc_class(cp);
}

/* ---- Pre-tokenizer ------------------------------------------------------ */

typedef enum { BPE_PRE_GPT2 = 0, BPE_PRE_SMOLLM = 1 } BpePre;

/* Length of the match of the GPT-2 split regex
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * at s[p] within [p, end); the end of the range counts as the end of the
 * text, as it does for each piece Hugging Face hands the regex. Always > 0. */
static size_t gpt2_match(const uint8_t *s, size_t p, size_t end)
{
    if (s[p] == '\'' && end - p >= 2) {
        uint8_t c1 = s[p + 1];
        if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return 2;
        if (end - p >= 3) {
            uint8_t c2 = s[p + 2];
            if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l'))
                return 3;
        }
    }
    /* ' ?\p{L}+', ' ?\p{N}+' and ' ?[^\s\p{L}\p{N}]+': an optional ASCII
     * space, then a run of one class. A space followed by whitespace matches
     * none of them. */
    size_t q = p, clen;
    if (s[p] == ' ' && end - p >= 2) q = p + 1;
    int cls = char_at(s, q, end, &clen);
    if (cls != BPE_UC_WS) {
        size_t r = q + clen;
        while (r < end) {
            if (char_at(s, r, end, &clen) != cls) break;
            r += clen;
        }
        return r - p;
    }
    /* '\s+(?!\S)' then '\s+': the whitespace run, less its last character
     * when a non-space follows and the run has more than one character (that
     * last one then joins the next word, " ?\p{L}+" and its kin). */
    size_t r = p, last = p;
    while (r < end) {
        if (char_at(s, r, end, &clen) != BPE_UC_WS) break;
        last = r;
        r += clen;
    }
    if (r == end || last == p) return r - p;
    return last - p;
}

/* ---- The tokenizer ------------------------------------------------------ */

typedef struct {
    uint64_t key;    /* left id << 32 | right id; 0 marks an empty slot (pairs are offset by 1) */
    int32_t  rank;   /* merge priority, lower first */
    int32_t  result; /* the merged token id */
} BpeMergeSlot;

typedef struct {
    int32_t id;  /* a special token matched in text */
    size_t  len; /* its byte length */
} BpeSpecial;

typedef enum { BPE_CHAT_NONE = 0, BPE_CHAT_CHATML = 1 } BpeChatStyle;

struct Bpe {
    int           n_tokens;
    char         *text;      /* stored spellings, NUL-separated */
    size_t       *text_off;  /* (n_tokens+1) offsets into text */
    uint8_t      *bytes;     /* decoded bytes, concatenated */
    size_t       *bytes_off; /* (n_tokens+1) offsets into bytes */
    uint8_t      *type;      /* (n_tokens) BPE_TOKEN_* */
    int32_t      *tok_hash;  /* (tok_hash_cap) token ids by spelling, -1 empty */
    size_t        tok_hash_cap;
    BpeMergeSlot *merge; /* (merge_cap) merge table */
    size_t        merge_cap;
    int32_t       byte_id[256]; /* the token of each lone byte, or -1 */
    BpeSpecial   *special;      /* (n_special) matched in text, longest first */
    int           n_special;
    bool          special_first[256]; /* whether some special token starts with this byte */
    size_t        max_token_bytes;
    BpePre        pre;
    char         *pre_name;
    int32_t       bos_id, eos_id, unk_id, pad_id, eot_id;
    BpeChatStyle  chat;
    char         *chat_default_system; /* NULL if none */
    bool          add_bos;             /* GGUF tokenizer.ggml.add_bos_token */
    char         *chat_template;       /* the template text as given, NULL if none */
    int32_t      *merge_pair;          /* (n_merges, 2) left and right ids in rank order */
    int           n_merges;
    atomic_bool   warned_drop;
};

/* GPT-2's byte-to-unicode mapping: printable Latin-1 bytes stand for
 * themselves; the other 68 (0x00..0x20, 0x7f..0xa0 and the soft hyphen 0xad)
 * for U+0100 onwards in byte order. */
static uint32_t byte_to_cp(uint8_t c)
{
    if (c <= 0x20) return 256u + c;
    if (c >= 0x7F && c <= 0xA0) return 256u + 33 + (c - 0x7Fu);
    if (c == 0xAD) return 256u + 67;
    return c;
}

/* The inverse: a byte, or -1 for code points outside the alphabet. */
static int cp_to_byte(uint32_t cp)
{
    if (cp < 256) return cp <= 0x20 || (cp >= 0x7F && cp <= 0xA0) || cp == 0xAD ? -1 : (int)cp;
    if (cp < 256 + 33) return (int)(cp - 256);
    if (cp < 256 + 67) return (int)(cp - 256 - 33 + 0x7F);
    if (cp == 256 + 67) return 0xAD;
    return -1;
}

static size_t utf8_put(uint32_t cp, uint8_t *out)
{
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xC0 | (cp >> 6));
        out[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xE0 | (cp >> 12));
        out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | (cp >> 18));
    out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

static uint64_t hash_bytes(const void *p, size_t n)
{
    const uint8_t *s = p;
    uint64_t       h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static uint64_t hash_u64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

static const char *tok_text(const Bpe *b, int id, size_t *len)
{
    *len = b->text_off[id + 1] - b->text_off[id] - 1;
    return b->text + b->text_off[id];
}

static int lookup(const Bpe *b, const char *s, size_t len)
{
    size_t mask = b->tok_hash_cap - 1;
    for (size_t i = hash_bytes(s, len) & mask;; i = (i + 1) & mask) {
        int32_t id = b->tok_hash[i];
        if (id < 0) return ERR_NOTFOUND;
        size_t      tl;
        const char *t = tok_text(b, id, &tl);
        if (tl == len && memcmp(t, s, len) == 0) return id;
    }
}

static const BpeMergeSlot *merge_find(const Bpe *b, int32_t left, int32_t right)
{
    uint64_t key = ((uint64_t)(uint32_t)(left + 1) << 32) | (uint32_t)(right + 1);
    size_t   mask = b->merge_cap - 1;
    for (size_t i = hash_u64(key) & mask;; i = (i + 1) & mask) {
        if (b->merge[i].key == key) return &b->merge[i];
        if (b->merge[i].key == 0) return NULL;
    }
}

static size_t pow2_at_least(size_t n)
{
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

/* Whether s[0..n) is valid UTF-8 (every character decodes). */
static bool utf8_valid(const uint8_t *s, size_t n)
{
    for (size_t p = 0; p < n;) {
        uint32_t cp;
        p += utf8_next(s, p, n, &cp);
        if (cp == BPE_CP_INVALID) return false;
    }
    return true;
}

/* Spells token text the way Hugging Face's GGUF loader does: a token whose
 * characters all belong to the byte alphabet stays as it is; any other is
 * respelled byte by byte. out needs 2 * n + 1 bytes. */
static size_t respell(const uint8_t *s, size_t n, char *out)
{
    bool in_alphabet = true;
    for (size_t p = 0; p < n;) {
        uint32_t cp;
        p += utf8_next(s, p, n, &cp);
        if (cp_to_byte(cp) < 0) in_alphabet = false;
    }
    if (in_alphabet) {
        memcpy(out, s, n);
        out[n] = '\0';
        return n;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += utf8_put(byte_to_cp(s[i]), (uint8_t *)out + k);
    out[k] = '\0';
    return k;
}

static bool is_special_type(int type)
{
    return type == BPE_TOKEN_CONTROL || type == BPE_TOKEN_USER_DEFINED;
}

static int cmp_special(const void *a, const void *b)
{
    const BpeSpecial *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Reads a Jinja string literal's text starting after its opening quote q at
 * s[i]; returns a malloc'd copy with \n, \t, \\ and \' decoded, or NULL if
 * the literal does not close. */
static char *chat_literal(const char *s, size_t i, char q, size_t *end)
{
    size_t n = strlen(s);
    char  *out = xmalloc(n - i + 1);
    size_t k = 0;
    for (; i < n && s[i] != q; i++) {
        if (s[i] == '\\' && i + 1 < n) {
            char e = s[++i];
            out[k++] = e == 'n' ? '\n' : e == 't' ? '\t' : e;
        } else {
            out[k++] = s[i];
        }
    }
    if (i >= n) {
        free(out);
        return NULL;
    }
    out[k] = '\0';
    *end = i;
    return out;
}

/* Recognises a ChatML template and the default system prompt it inserts: a
 * literal that opens with "<|im_start|>system" and a newline, inside an
 * {% if %} on the first message not being a system message, as SmolLM2's
 * and Qwen's templates have it. */
static void chat_parse(Bpe *b, const char *tpl)
{
    if (!tpl || !strstr(tpl, "<|im_start|>") || !strstr(tpl, "<|im_end|>")) return;
    b->chat = BPE_CHAT_CHATML;
    if (!strstr(tpl, "!= 'system'") && !strstr(tpl, "!= \"system\"")) return;
    for (const char *p = tpl; (p = strstr(p, "<|im_start|>system")) != NULL; p++) {
        if (p == tpl || (p[-1] != '\'' && p[-1] != '"')) continue;
        size_t end;
        char  *lit = chat_literal(tpl, (size_t)(p - tpl), p[-1], &end);
        if (!lit) return;
        const char *head = "<|im_start|>system\n";
        char       *stop = strstr(lit, "<|im_end|>");
        if (strncmp(lit, head, strlen(head)) == 0 && stop) {
            *stop = '\0';
            b->chat_default_system = xstrdup(lit + strlen(head));
        }
        free(lit);
        return;
    }
}

void bpe_free(Bpe **pb)
{
    if (!pb || !*pb) return;
    Bpe *b = *pb;
    free(b->text);
    free(b->text_off);
    free(b->bytes);
    free(b->bytes_off);
    free(b->type);
    free(b->tok_hash);
    free(b->merge);
    free(b->special);
    free(b->pre_name);
    free(b->chat_default_system);
    free(b->chat_template);
    free(b->merge_pair);
    free(b);
    *pb = NULL;
}

static int check_special_id(const char *what, int32_t id, int n)
{
    if (id < -1 || id >= n) {
        log_error("bpe_new: %s %d out of range, expected -1 or 0..%d", what, (int)id, n - 1);
        return ERR_RANGE;
    }
    return 0;
}

static int load_tokens(Bpe *b, const BpeVocab *v)
{
    int    n = v->n_tokens;
    size_t total_text = 0, total_bytes = 0;
    for (int i = 0; i < n; i++) {
        if (!v->tokens[i]) {
            log_error("bpe_new: token %d is NULL", i);
            return ERR_FORMAT;
        }
        size_t len =
            v->token_lens ? v->token_lens[i] : strnlen(v->tokens[i], BPE_MAX_TOKEN_BYTES + 1);
        if (len == 0 || len > BPE_MAX_TOKEN_BYTES) {
            log_error("bpe_new: token %d has %zu bytes, expected 1..%d", i, len,
                      BPE_MAX_TOKEN_BYTES);
            return ERR_FORMAT;
        }
        if (!utf8_valid((const uint8_t *)v->tokens[i], len)) {
            log_error("bpe_new: token %d is not valid UTF-8", i);
            return ERR_FORMAT;
        }
        int type = v->token_types ? v->token_types[i] : BPE_TOKEN_NORMAL;
        if (type < BPE_TOKEN_NORMAL || type > BPE_TOKEN_BYTE) {
            log_error("bpe_new: token %d has type %d, expected %d..%d", i, type, BPE_TOKEN_NORMAL,
                      BPE_TOKEN_BYTE);
            return ERR_FORMAT;
        }
        b->type[i] = (uint8_t)type;
        total_text += 2 * len + 1;
        total_bytes += len;
    }
    b->text = xmalloc(total_text);
    b->bytes = xmalloc(total_bytes + 1);
    size_t to = 0, bo = 0;
    for (int i = 0; i < n; i++) {
        const uint8_t *s = (const uint8_t *)v->tokens[i];
        size_t         len = v->token_lens ? v->token_lens[i] : strlen(v->tokens[i]);
        b->text_off[i] = to;
        b->bytes_off[i] = bo;
        size_t k = respell(s, len, b->text + to);
        if (is_special_type(b->type[i])) {
            /* Special tokens keep their own text: it is what the text
             * contains and what decoding renders. */
            memcpy(b->text + to, s, len);
            b->text[to + len] = '\0';
            k = len;
            memcpy(b->bytes + bo, s, len);
            bo += len;
        } else {
            for (size_t p = 0; p < k;) {
                uint32_t cp;
                p += utf8_next((const uint8_t *)b->text + to, p, k, &cp);
                b->bytes[bo++] = (uint8_t)cp_to_byte(cp);
            }
        }
        to += k + 1;
        if (bo - b->bytes_off[i] > b->max_token_bytes) b->max_token_bytes = bo - b->bytes_off[i];
    }
    b->text_off[n] = to;
    b->bytes_off[n] = bo;

    /* Later ids win on duplicate spellings, as in both reference loaders. */
    b->tok_hash_cap = pow2_at_least((size_t)n * 2);
    b->tok_hash = xmalloc(b->tok_hash_cap * sizeof *b->tok_hash);
    for (size_t i = 0; i < b->tok_hash_cap; i++) b->tok_hash[i] = -1;
    size_t mask = b->tok_hash_cap - 1;
    int    n_dup = 0;
    for (int id = 0; id < n; id++) {
        size_t      len;
        const char *t = tok_text(b, id, &len);
        for (size_t i = hash_bytes(t, len) & mask;; i = (i + 1) & mask) {
            int32_t     other = b->tok_hash[i];
            size_t      ol;
            const char *o = other >= 0 ? tok_text(b, other, &ol) : NULL;
            if (other < 0 || (ol == len && memcmp(o, t, len) == 0)) {
                n_dup += other >= 0;
                b->tok_hash[i] = id;
                break;
            }
        }
    }
    if (n_dup) log_warn("bpe_new: %d duplicate token spellings; the later id is used", n_dup);

    for (int c = 0; c < 256; c++) {
        uint8_t ch[4];
        size_t  k = utf8_put(byte_to_cp((uint8_t)c), ch);
        int     id = lookup(b, (const char *)ch, k);
        b->byte_id[c] = id >= 0 && !is_special_type(b->type[id]) ? id : -1;
    }

    int n_special = 0;
    for (int i = 0; i < n; i++) n_special += is_special_type(b->type[i]);
    b->special = xcalloc((size_t)n_special + 1, sizeof *b->special);
    for (int i = 0; i < n; i++) {
        if (!is_special_type(b->type[i])) continue;
        size_t len;
        tok_text(b, i, &len);
        b->special[b->n_special++] = (BpeSpecial){.id = i, .len = len};
        b->special_first[(uint8_t)b->text[b->text_off[i]]] = true;
    }
    qsort(b->special, (size_t)b->n_special, sizeof *b->special, cmp_special);
    return 0;
}

static int load_merges(Bpe *b, const BpeVocab *v)
{
    b->merge_cap = pow2_at_least((size_t)v->n_merges * 2 + 2);
    b->merge = xcalloc(b->merge_cap, sizeof *b->merge);
    char  *buf = xmalloc(2 * BPE_MAX_TOKEN_BYTES + 2);
    int    rc = 0;
    size_t mask = b->merge_cap - 1;
    b->merge_pair = xmalloc(((size_t)v->n_merges + 1) * 2 * sizeof *b->merge_pair);
    for (int r = 0; r < v->n_merges; r++) {
        const char *m = v->merges[r];
        size_t      len =
            m ? (v->merge_lens ? v->merge_lens[r] : strnlen(m, 2 * BPE_MAX_TOKEN_BYTES + 2)) : 0;
        if (!m || len < 3 || len > 2 * BPE_MAX_TOKEN_BYTES + 1) {
            log_error("bpe_new: merge %d is NULL or has %zu bytes, expected 3..%d", r, len,
                      2 * BPE_MAX_TOKEN_BYTES + 1);
            rc = ERR_FORMAT;
            goto out;
        }
        const char *sp = memchr(m, ' ', len);
        if (!sp || sp == m || sp == m + len - 1 ||
            memchr(sp + 1, ' ', (size_t)(m + len - sp - 1))) {
            log_error("bpe_new: merge %d '%.*s' is not two tokens joined by one space", r, (int)len,
                      m);
            rc = ERR_FORMAT;
            goto out;
        }
        size_t ll = (size_t)(sp - m), rl = len - ll - 1;
        int    left = lookup(b, m, ll), right = lookup(b, sp + 1, rl);
        memcpy(buf, m, ll);
        memcpy(buf + ll, sp + 1, rl);
        int merged = lookup(b, buf, ll + rl);
        if (left < 0 || right < 0 || merged < 0) {
            log_error("bpe_new: merge %d '%.*s': '%.*s' is not in the vocabulary", r, (int)len, m,
                      left < 0    ? (int)ll
                      : right < 0 ? (int)rl
                                  : (int)(ll + rl),
                      left < 0    ? m
                      : right < 0 ? sp + 1
                                  : buf);
            rc = ERR_FORMAT;
            goto out;
        }
        b->merge_pair[2 * r] = left;
        b->merge_pair[2 * r + 1] = right;
        b->n_merges = r + 1;
        uint64_t key = ((uint64_t)(uint32_t)(left + 1) << 32) | (uint32_t)(right + 1);
        for (size_t i = hash_u64(key) & mask;; i = (i + 1) & mask) {
            /* A repeated pair keeps its first (best) rank. */
            if (b->merge[i].key == key) break;
            if (b->merge[i].key == 0) {
                b->merge[i] = (BpeMergeSlot){.key = key, .rank = r, .result = merged};
                break;
            }
        }
    }
out:
    free(buf);
    return rc;
}

Bpe *bpe_new(const BpeVocab *v)
{
    CHECK(v);
    if (v->n_tokens < 1 || v->n_tokens > BPE_MAX_TOKENS || !v->tokens) {
        log_error("bpe_new: %d tokens, expected 1..%d", v->n_tokens, BPE_MAX_TOKENS);
        return NULL;
    }
    if (v->n_merges < 0 || (v->n_merges > 0 && !v->merges) || v->n_merges > BPE_MAX_TOKENS) {
        log_error("bpe_new: %d merges, expected 0..%d", v->n_merges, BPE_MAX_TOKENS);
        return NULL;
    }
    BpePre pre;
    if (v->pre && strcmp(v->pre, "smollm") == 0) {
        pre = BPE_PRE_SMOLLM;
    } else if (v->pre && strcmp(v->pre, "gpt2") == 0) {
        pre = BPE_PRE_GPT2;
    } else {
        log_error("bpe_new: pre-tokenizer '%s' is not supported, expected 'smollm' or 'gpt2'",
                  v->pre ? v->pre : "(none)");
        return NULL;
    }
    int n = v->n_tokens;
    if (check_special_id("bos id", v->bos_id, n) || check_special_id("eos id", v->eos_id, n) ||
        check_special_id("unknown id", v->unk_id, n) ||
        check_special_id("padding id", v->pad_id, n))
        return NULL;

    Bpe *b = xcalloc(1, sizeof *b);
    b->n_tokens = n;
    b->pre = pre;
    b->pre_name = xstrdup(v->pre);
    b->bos_id = v->bos_id;
    b->eos_id = v->eos_id;
    b->unk_id = v->unk_id;
    b->pad_id = v->pad_id;
    b->add_bos = v->add_bos;
    atomic_init(&b->warned_drop, false);
    b->text_off = xmalloc(((size_t)n + 1) * sizeof *b->text_off);
    b->bytes_off = xmalloc(((size_t)n + 1) * sizeof *b->bytes_off);
    b->type = xmalloc((size_t)n);
    if (load_tokens(b, v) != 0 || load_merges(b, v) != 0) {
        bpe_free(&b);
        return NULL;
    }
    chat_parse(b, v->chat_template);
    if (v->chat_template) b->chat_template = xstrdup(v->chat_template);
    int im_end = lookup(b, "<|im_end|>", 10);
    b->eot_id = b->chat == BPE_CHAT_CHATML && im_end >= 0 ? im_end : b->eos_id;
    return b;
}

int bpe_vocab_size(const Bpe *b)
{
    return b->n_tokens;
}
int bpe_bos_id(const Bpe *b)
{
    return b->bos_id;
}
int bpe_eos_id(const Bpe *b)
{
    return b->eos_id;
}
int bpe_pad_id(const Bpe *b)
{
    return b->pad_id;
}
int bpe_eot_id(const Bpe *b)
{
    return b->eot_id;
}
bool bpe_add_bos(const Bpe *b)
{
    return b->add_bos;
}
const char *bpe_pre_name(const Bpe *b)
{
    return b->pre_name;
}
int bpe_unk_id(const Bpe *b)
{
    return b->unk_id;
}
const char *bpe_chat_template(const Bpe *b)
{
    return b->chat_template;
}
int bpe_merge_count(const Bpe *b)
{
    return b->n_merges;
}
void bpe_merge_at(const Bpe *b, int rank, int *left, int *right)
{
    CHECK(rank >= 0 && rank < b->n_merges);
    *left = b->merge_pair[2 * rank];
    *right = b->merge_pair[2 * rank + 1];
}

int bpe_token_id(const Bpe *b, const char *text, size_t len)
{
    if (!text) return ERR_NOTFOUND;
    return lookup(b, text, len);
}

const char *bpe_token_text(const Bpe *b, int id)
{
    if (id < 0 || id >= b->n_tokens) return NULL;
    return b->text + b->text_off[id];
}

const uint8_t *bpe_token_bytes(const Bpe *b, int id, size_t *len)
{
    if (id < 0 || id >= b->n_tokens) {
        *len = 0;
        return NULL;
    }
    *len = b->bytes_off[id + 1] - b->bytes_off[id];
    return b->bytes + b->bytes_off[id];
}

int bpe_token_type(const Bpe *b, int id)
{
    if (id < 0 || id >= b->n_tokens) return 0;
    return b->type[id];
}

bool bpe_byte_encodable(const Bpe *b, uint8_t c)
{
    return b->byte_id[c] >= 0;
}

/* ---- Encoding ----------------------------------------------------------- */

/* Scratch for merging one piece, grown to the longest piece of a call (so
 * memory follows the longest piece, not the text). */
typedef struct {
    size_t   scratch; /* pieces of up to this many bytes fit */
    int32_t *id;      /* (cap) symbol token ids; -1 once merged into its left neighbour */
    int32_t *prev;    /* (cap) previous live symbol, -1 at the start */
    int32_t *next;    /* (cap) next live symbol, -1 at the end */
    struct BpeCand {
        int32_t rank, left, right, left_id, right_id;
    } * heap; /* (3 * cap) candidate merges, min-heap on (rank, left) */
    int  n_heap;
    int *out; /* caller's ids */
    int  cap; /* caller's capacity */
    int  n;   /* ids produced (counted past cap) */
} BpeWork;

static bool cand_less(const struct BpeCand *a, const struct BpeCand *b)
{
    return a->rank != b->rank ? a->rank < b->rank : a->left < b->left;
}

static void heap_push(BpeWork *w, struct BpeCand c)
{
    int i = w->n_heap++;
    w->heap[i] = c;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!cand_less(&w->heap[i], &w->heap[p])) break;
        struct BpeCand t = w->heap[i];
        w->heap[i] = w->heap[p];
        w->heap[p] = t;
        i = p;
    }
}

static struct BpeCand heap_pop(BpeWork *w)
{
    struct BpeCand top = w->heap[0];
    w->heap[0] = w->heap[--w->n_heap];
    for (int i = 0;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < w->n_heap && cand_less(&w->heap[l], &w->heap[m])) m = l;
        if (r < w->n_heap && cand_less(&w->heap[r], &w->heap[m])) m = r;
        if (m == i) break;
        struct BpeCand t = w->heap[i];
        w->heap[i] = w->heap[m];
        w->heap[m] = t;
        i = m;
    }
    return top;
}

static void emit(BpeWork *w, int id)
{
    if (w->n < w->cap) w->out[w->n] = id;
    w->n++;
}

static void push_pair(const Bpe *b, BpeWork *w, int left, int right)
{
    if (left < 0 || right < 0) return;
    const BpeMergeSlot *m = merge_find(b, w->id[left], w->id[right]);
    if (m)
        heap_push(w, (struct BpeCand){.rank = m->rank,
                                      .left = left,
                                      .right = right,
                                      .left_id = w->id[left],
                                      .right_id = w->id[right]});
}

/* Encodes one pre-tokenized piece: its bytes as byte tokens, then merges,
 * lowest rank first and leftmost first among equals, as Hugging Face's BPE
 * model applies them. Bytes without a token are dropped before merging, so
 * their neighbours may merge, as there. Returns 0 or ERR_RANGE (strict). */
static int encode_piece(const Bpe *b, BpeWork *w, const uint8_t *s, size_t len, size_t at,
                        int flags)
{
    if (len > w->scratch) {
        w->scratch = len < 64 ? 64 : len;
        w->id = xrealloc(w->id, w->scratch * sizeof *w->id);
        w->prev = xrealloc(w->prev, w->scratch * sizeof *w->prev);
        w->next = xrealloc(w->next, w->scratch * sizeof *w->next);
        /* Each merge retires one candidate pair and adds at most two. */
        w->heap = xrealloc(w->heap, 3 * w->scratch * sizeof *w->heap);
    }
    int n = 0;
    for (size_t i = 0; i < len; i++) {
        int32_t id = b->byte_id[s[i]];
        if (id < 0) {
            if (flags & BPE_ENC_STRICT) {
                log_error("bpe_encode: byte 0x%02x at position %zu has no token", s[i], at + i);
                return ERR_RANGE;
            }
            if (!atomic_exchange(&b->warned_drop, true))
                log_warn("bpe_encode: byte 0x%02x at position %zu has no token in this vocabulary "
                         "and is dropped (reported once)",
                         s[i], at + i);
            continue;
        }
        w->id[n] = id;
        w->prev[n] = n - 1;
        w->next[n] = -1;
        if (n > 0) w->next[n - 1] = n;
        n++;
    }
    if (n == 0) return 0;
    w->n_heap = 0;
    for (int i = 0; i + 1 < n; i++) push_pair(b, w, i, i + 1);
    while (w->n_heap > 0) {
        struct BpeCand c = heap_pop(w);
        /* Stale candidates: a side was merged away or changed since. */
        if (w->id[c.left] != c.left_id || w->id[c.right] != c.right_id ||
            w->next[c.left] != c.right)
            continue;
        const BpeMergeSlot *m = merge_find(b, c.left_id, c.right_id);
        w->id[c.left] = m->result;
        w->id[c.right] = -1;
        int nx = w->next[c.right];
        w->next[c.left] = nx;
        if (nx >= 0) w->prev[nx] = c.left;
        push_pair(b, w, w->prev[c.left], c.left);
        push_pair(b, w, c.left, nx);
    }
    for (int i = 0; i >= 0; i = w->next[i]) emit(w, w->id[i]);
    return 0;
}

/* Pre-tokenizes text[start, end) (no special tokens inside) and encodes each
 * piece. */
static int encode_text(const Bpe *b, BpeWork *w, const uint8_t *s, size_t start, size_t end,
                       int flags)
{
    size_t p = start;
    while (p < end) {
        size_t seg_end = end;
        if (b->pre == BPE_PRE_SMOLLM) {
            /* Every numeric character is a piece of its own, and the regex
             * then runs on the text between them as on separate strings. */
            size_t clen;
            if (char_at(s, p, end, &clen) == BPE_UC_N) {
                int rc = encode_piece(b, w, s + p, clen, p, flags);
                if (rc) return rc;
                p += clen;
                continue;
            }
            for (seg_end = p; seg_end < end; seg_end += clen)
                if (char_at(s, seg_end, end, &clen) == BPE_UC_N) break;
        }
        while (p < seg_end) {
            size_t m = gpt2_match(s, p, seg_end);
            int    rc = encode_piece(b, w, s + p, m, p, flags);
            if (rc) return rc;
            p += m;
        }
    }
    return 0;
}

/* The longest special token at s[p], or NULL. CONTROL tokens only count with
 * BPE_ENC_SPECIAL; USER_DEFINED ones always do, as in llama.cpp and in
 * Hugging Face's handling of added tokens. */
static const BpeSpecial *match_special(const Bpe *b, const uint8_t *s, size_t p, size_t end,
                                       int flags)
{
    for (int i = 0; i < b->n_special; i++) {
        const BpeSpecial *sp = &b->special[i];
        if (sp->len > end - p) continue;
        if (b->type[sp->id] == BPE_TOKEN_CONTROL && !(flags & BPE_ENC_SPECIAL)) continue;
        if (memcmp(s + p, b->text + b->text_off[sp->id], sp->len) == 0) return sp;
    }
    return NULL;
}

int bpe_encode(const Bpe *b, const char *text, size_t len, int flags, int *ids, int cap, int *n_ids)
{
    CHECK(b && n_ids && (text || len == 0) && (ids || cap == 0) && cap >= 0);
    *n_ids = 0;
    if ((flags & BPE_ENC_BOS) && b->bos_id < 0) {
        log_error("bpe_encode: BOS requested but the vocabulary has no bos id");
        return ERR_ARG;
    }
    const uint8_t *s = (const uint8_t *)text;
    BpeWork        w = {.out = ids, .cap = cap};
    int            rc = 0;
    if (flags & BPE_ENC_BOS) emit(&w, b->bos_id);
    size_t chunk = 0;
    for (size_t p = 0; p < len;) {
        const BpeSpecial *sp = b->special_first[s[p]] ? match_special(b, s, p, len, flags) : NULL;
        if (!sp) {
            p++;
            continue;
        }
        rc = encode_text(b, &w, s, chunk, p, flags);
        if (rc) goto done;
        emit(&w, sp->id);
        p += sp->len;
        chunk = p;
    }
    rc = encode_text(b, &w, s, chunk, len, flags);
    if (rc) goto done;
    if (w.n > cap) {
        log_error("bpe_encode: %d ids do not fit in %d", w.n, cap);
        rc = ERR_RANGE;
    }
done:
    *n_ids = w.n;
    free(w.id);
    free(w.prev);
    free(w.next);
    free(w.heap);
    return rc;
}

/* ---- Decoding ----------------------------------------------------------- */

size_t bpe_decode_max_bytes(const Bpe *b, int n)
{
    return (size_t)(n > 0 ? n : 0) * b->max_token_bytes + 1;
}

int bpe_decode(const Bpe *b, const int *ids, int n, int flags, char *out, size_t cap,
               size_t *len_out)
{
    CHECK(b && (ids || n == 0) && n >= 0 && (out || cap == 0));
    if (len_out) *len_out = 0;
    if (cap > 0) out[0] = '\0';
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        int id = ids[i];
        if (id < 0 || id >= b->n_tokens) {
            log_error("bpe_decode: id %d at index %d, expected 0..%d", id, i, b->n_tokens - 1);
            if (cap > 0) out[0] = '\0';
            return ERR_RANGE;
        }
        int t = b->type[id];
        if ((t == BPE_TOKEN_CONTROL || t == BPE_TOKEN_UNKNOWN) && !(flags & BPE_DEC_SPECIAL))
            continue;
        size_t tl = b->bytes_off[id + 1] - b->bytes_off[id];
        if (k + tl + 1 > cap) {
            log_error("bpe_decode: output needs more than %zu bytes", cap);
            if (cap > 0) out[0] = '\0';
            return ERR_RANGE;
        }
        memcpy(out + k, b->bytes + b->bytes_off[id], tl);
        k += tl;
    }
    if (cap == 0) {
        log_error("bpe_decode: output capacity 0");
        return ERR_RANGE;
    }
    out[k] = '\0';
    if (len_out) *len_out = k;
    return 0;
}

/* ---- Chat template ------------------------------------------------------ */

bool bpe_chat_supported(const Bpe *b)
{
    return b->chat == BPE_CHAT_CHATML;
}

const char *bpe_chat_default_system(const Bpe *b)
{
    return b->chat_default_system;
}

/* Appends n bytes to out if they fit, counting them either way. */
static void put(char *out, size_t cap, size_t *k, const char *s, size_t n)
{
    if (*k + n < cap) memcpy(out + *k, s, n);
    *k += n;
}

static void put_turn(char *out, size_t cap, size_t *k, const char *role, const char *content)
{
    put(out, cap, k, "<|im_start|>", 12);
    put(out, cap, k, role, strlen(role));
    put(out, cap, k, "\n", 1);
    put(out, cap, k, content, strlen(content));
    put(out, cap, k, "<|im_end|>\n", 11);
}

int bpe_chat_format(const Bpe *b, const BpeChatMessage *msgs, int n, bool add_generation_prompt,
                    char *out, size_t cap, size_t *len_out)
{
    CHECK(b && (msgs || n == 0) && n >= 0 && (out || cap == 0));
    if (len_out) *len_out = 0;
    if (cap > 0) out[0] = '\0';
    if (b->chat != BPE_CHAT_CHATML) {
        log_error("bpe_chat_format: the vocabulary has no ChatML chat template");
        return ERR_UNSUPPORTED;
    }
    for (int i = 0; i < n; i++) {
        if (!msgs[i].role || !msgs[i].content) {
            log_error("bpe_chat_format: message %d has a NULL %s", i,
                      msgs[i].role ? "content" : "role");
            return ERR_ARG;
        }
    }
    size_t k = 0;
    if (n > 0 && b->chat_default_system && strcmp(msgs[0].role, "system") != 0)
        put_turn(out, cap, &k, "system", b->chat_default_system);
    for (int i = 0; i < n; i++) put_turn(out, cap, &k, msgs[i].role, msgs[i].content);
    if (add_generation_prompt) put(out, cap, &k, "<|im_start|>assistant\n", 22);
    if (len_out) *len_out = k;
    if (k + 1 > cap) {
        log_error("bpe_chat_format: the conversation needs %zu bytes, capacity %zu", k + 1, cap);
        if (cap > 0) out[0] = '\0';
        return ERR_RANGE;
    }
    out[k] = '\0';
    return 0;
}

/* ---- GGUF adapter ------------------------------------------------------- */

/* An optional special id: -1 when absent, else the value if it fits int32. */
static int gguf_id(const GgufFile *f, const char *key, int32_t *out)
{
    int64_t v;
    int     rc = gguf_get_int(f, key, &v);
    *out = -1;
    if (rc == ERR_NOTFOUND) return 0;
    if (rc) return rc;
    if (v < 0 || v > INT32_MAX) {
        log_error("bpe_from_gguf: %s: %s = %lld, expected 0..%d", gguf_path(f), key, (long long)v,
                  INT32_MAX);
        return ERR_RANGE;
    }
    *out = (int32_t)v;
    return 0;
}

/* A string of the file, NUL-terminated (GgufStr guarantees the NUL), or NULL
 * when absent. */
static int gguf_opt_str(const GgufFile *f, const char *key, const char **out)
{
    GgufStr s;
    int     rc = gguf_get_str(f, key, &s);
    *out = NULL;
    if (rc == ERR_NOTFOUND) return 0;
    if (rc) return rc;
    if (strlen(s.s) != s.len) {
        log_error("bpe_from_gguf: %s: %s contains a NUL byte", gguf_path(f), key);
        return ERR_FORMAT;
    }
    *out = s.s;
    return 0;
}

int bpe_from_gguf(const GgufFile *f, Bpe **out)
{
    CHECK(f && out);
    *out = NULL;
    const char *path = gguf_path(f), *model = NULL;
    BpeVocab    v = {0};
    int         rc = gguf_opt_str(f, "tokenizer.ggml.model", &model);
    if (rc) return rc;
    if (!model || strcmp(model, "gpt2") != 0) {
        log_error("bpe_from_gguf: %s: tokenizer.ggml.model '%s', expected 'gpt2' (byte-level BPE)",
                  path, model ? model : "(missing)");
        return ERR_UNSUPPORTED;
    }
    const GgufStr *toks, *merges;
    size_t         n_toks, n_merges;
    rc = gguf_get_str_array(f, "tokenizer.ggml.tokens", &toks, &n_toks);
    if (rc == 0) rc = gguf_get_str_array(f, "tokenizer.ggml.merges", &merges, &n_merges);
    if (rc) {
        if (rc == ERR_NOTFOUND)
            log_error("bpe_from_gguf: %s: tokenizer.ggml.tokens or .merges missing", path);
        return rc;
    }
    if (n_toks == 0 || n_toks > BPE_MAX_TOKENS || n_merges > BPE_MAX_TOKENS) {
        log_error("bpe_from_gguf: %s: %zu tokens and %zu merges, expected 1..%d of each", path,
                  n_toks, n_merges, BPE_MAX_TOKENS);
        return ERR_RANGE;
    }
    const void *types = NULL;
    int         type_elem = 0;
    size_t      n_types = 0;
    rc = gguf_get_array(f, "tokenizer.ggml.token_type", &type_elem, &types, &n_types);
    if (rc == ERR_NOTFOUND) {
        types = NULL;
    } else if (rc) {
        return rc;
    } else if (type_elem != GGUF_VAL_INT32 || n_types != n_toks) {
        log_error("bpe_from_gguf: %s: tokenizer.ggml.token_type has %zu elements of type %d, "
                  "expected %zu INT32",
                  path, n_types, type_elem, n_toks);
        return ERR_MISMATCH;
    }
    if ((rc = gguf_opt_str(f, "tokenizer.ggml.pre", &v.pre)) != 0) return rc;
    if (!v.pre) {
        log_warn("bpe_from_gguf: %s: no tokenizer.ggml.pre; using the GPT-2 split", path);
        v.pre = "gpt2";
    }
    if ((rc = gguf_opt_str(f, "tokenizer.chat_template", &v.chat_template)) != 0) return rc;
    if ((rc = gguf_id(f, "tokenizer.ggml.bos_token_id", &v.bos_id)) != 0 ||
        (rc = gguf_id(f, "tokenizer.ggml.eos_token_id", &v.eos_id)) != 0 ||
        (rc = gguf_id(f, "tokenizer.ggml.unknown_token_id", &v.unk_id)) != 0 ||
        (rc = gguf_id(f, "tokenizer.ggml.padding_token_id", &v.pad_id)) != 0)
        return rc;
    rc = gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &v.add_bos);
    if (rc == ERR_NOTFOUND)
        v.add_bos = false;
    else if (rc)
        return rc;

    const char **tok_p = xmalloc(n_toks * sizeof *tok_p);
    size_t      *tok_l = xmalloc(n_toks * sizeof *tok_l);
    const char **mer_p = xmalloc((n_merges + 1) * sizeof *mer_p);
    size_t      *mer_l = xmalloc((n_merges + 1) * sizeof *mer_l);
    for (size_t i = 0; i < n_toks; i++) tok_p[i] = toks[i].s, tok_l[i] = toks[i].len;
    for (size_t i = 0; i < n_merges; i++) mer_p[i] = merges[i].s, mer_l[i] = merges[i].len;
    v.n_tokens = (int)n_toks;
    v.tokens = tok_p;
    v.token_lens = tok_l;
    v.token_types = types;
    v.n_merges = (int)n_merges;
    v.merges = mer_p;
    v.merge_lens = mer_l;
    *out = bpe_new(&v);
    free(tok_p);
    free(tok_l);
    free(mer_p);
    free(mer_l);
    if (!*out) {
        log_error("bpe_from_gguf: %s: the tokenizer metadata was refused (see above)", path);
        return ERR_FORMAT;
    }
    return 0;
}

int bpe_load(const char *path, Bpe **out)
{
    CHECK(path && out);
    *out = NULL;
    GgufFile *f = NULL;
    int       rc = gguf_open(path, &f);
    if (rc) return rc;
    rc = bpe_from_gguf(f, out);
    gguf_close(&f);
    return rc;
}

/* ---- Self-test ---------------------------------------------------------- */

#define ST_CHECK(cond)                                                                             \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "bpe_selftest: %s:%d: %s\n", __FILE__, __LINE__, #cond);               \
            fails++;                                                                               \
        }                                                                                          \
    } while (0)

/* The pre-tokenizer's pieces of s joined by '|', for the self-test. */
static void st_pieces(BpePre pre, const char *s, char *out, size_t cap)
{
    const uint8_t *u = (const uint8_t *)s;
    size_t         n = strlen(s), k = 0;
    for (size_t p = 0; p < n;) {
        size_t seg_end = n, clen;
        if (pre == BPE_PRE_SMOLLM) {
            if (char_at(u, p, n, &clen) == BPE_UC_N) {
                k += (size_t)snprintf(out + k, cap - k, "%s%.*s", k ? "|" : "", (int)clen, s + p);
                p += clen;
                continue;
            }
            for (seg_end = p; seg_end < n; seg_end += clen)
                if (char_at(u, seg_end, n, &clen) == BPE_UC_N) break;
        }
        while (p < seg_end) {
            size_t m = gpt2_match(u, p, seg_end);
            k += (size_t)snprintf(out + k, cap - k, "%s%.*s", k ? "|" : "", (int)m, s + p);
            p += m;
        }
    }
    out[k] = '\0';
}

/* A tiny vocabulary: 4 special tokens, the 256 byte tokens (less the bytes
 * in drop, which stay out as SmolLM2's missing bytes do) and a few merges. */
typedef struct {
    char   *tok[300];
    int32_t type[300];
    int     n;
} StVocab;

static int st_add(StVocab *sv, const char *t, int type)
{
    sv->tok[sv->n] = xstrdup(t);
    sv->type[sv->n] = type;
    return sv->n++;
}

static Bpe *st_build(StVocab *sv, const char *drop, const char *tpl, const char *const *merges,
                     int n_merges)
{
    memset(sv, 0, sizeof *sv);
    st_add(sv, "<|endoftext|>", BPE_TOKEN_CONTROL);
    st_add(sv, "<|im_start|>", BPE_TOKEN_CONTROL);
    st_add(sv, "<|im_end|>", BPE_TOKEN_CONTROL);
    st_add(sv, "<tool>", BPE_TOKEN_USER_DEFINED);
    for (int c = 0; c < 256; c++) {
        if (c && strchr(drop, c)) continue;
        uint8_t u[5];
        u[utf8_put(byte_to_cp((uint8_t)c), u)] = 0;
        st_add(sv, (const char *)u, BPE_TOKEN_NORMAL);
    }
    const char *merged[] = {"Ġt", "he", "Ġthe", "bc", "ab", "ll", "Ġ3", "aa", "aaaa"};
    for (size_t i = 0; i < sizeof merged / sizeof merged[0]; i++)
        st_add(sv, merged[i], BPE_TOKEN_NORMAL);
    BpeVocab v = {.n_tokens = sv->n,
                  .tokens = (const char *const *)sv->tok,
                  .token_types = sv->type,
                  .n_merges = n_merges,
                  .merges = merges,
                  .pre = "smollm",
                  .bos_id = 0,
                  .eos_id = 0,
                  .unk_id = -1,
                  .pad_id = -1,
                  .chat_template = tpl};
    return bpe_new(&v);
}

static void st_free(StVocab *sv)
{
    for (int i = 0; i < sv->n; i++) free(sv->tok[i]);
}

/* A growing byte buffer for writing a small GGUF file by hand. */
typedef struct {
    uint8_t *p;
    size_t   n, cap;
} StBuf;

static void sb_put(StBuf *b, const void *d, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = 2 * (b->n + n);
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void sb_u32(StBuf *b, uint32_t v)
{
    uint8_t le[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    sb_put(b, le, 4);
}

static void sb_u64(StBuf *b, uint64_t v)
{
    sb_u32(b, (uint32_t)v);
    sb_u32(b, (uint32_t)(v >> 32));
}

static void sb_str(StBuf *b, const char *s)
{
    sb_u64(b, strlen(s));
    sb_put(b, s, strlen(s));
}

/* Writes sv's vocabulary with merges as a GGUF file (no tensors) declaring
 * tokenizer model, with n_types token types; returns 0 or -1. */
static int st_write_gguf(const char *path, const StVocab *sv, const char *const *merges,
                         int n_merges, const char *model, int n_types)
{
    StBuf b = {0};
    sb_put(&b, "GGUF", 4);
    sb_u32(&b, 3);
    sb_u64(&b, 0);
    sb_u64(&b, 7);
    sb_str(&b, "tokenizer.ggml.model");
    sb_u32(&b, GGUF_VAL_STRING);
    sb_str(&b, model);
    sb_str(&b, "tokenizer.ggml.pre");
    sb_u32(&b, GGUF_VAL_STRING);
    sb_str(&b, "smollm");
    sb_str(&b, "tokenizer.ggml.tokens");
    sb_u32(&b, GGUF_VAL_ARRAY);
    sb_u32(&b, GGUF_VAL_STRING);
    sb_u64(&b, (uint64_t)sv->n);
    for (int i = 0; i < sv->n; i++) sb_str(&b, sv->tok[i]);
    sb_str(&b, "tokenizer.ggml.merges");
    sb_u32(&b, GGUF_VAL_ARRAY);
    sb_u32(&b, GGUF_VAL_STRING);
    sb_u64(&b, (uint64_t)n_merges);
    for (int i = 0; i < n_merges; i++) sb_str(&b, merges[i]);
    sb_str(&b, "tokenizer.ggml.token_type");
    sb_u32(&b, GGUF_VAL_ARRAY);
    sb_u32(&b, GGUF_VAL_INT32);
    sb_u64(&b, (uint64_t)n_types);
    for (int i = 0; i < n_types; i++) sb_u32(&b, (uint32_t)sv->type[i % sv->n]);
    sb_str(&b, "tokenizer.ggml.eos_token_id");
    sb_u32(&b, GGUF_VAL_UINT32);
    sb_u32(&b, 0);
    sb_str(&b, "tokenizer.chat_template");
    sb_u32(&b, GGUF_VAL_STRING);
    sb_str(&b, "{{ '<|im_start|>' + message['role'] }}<|im_end|>");
    FILE *f = fopen(path, "wb");
    int   rc = f && fwrite(b.p, 1, b.n, f) == b.n ? 0 : -1;
    if (f && fclose(f) != 0) rc = -1;
    free(b.p);
    return rc;
}

/* Encodes s and compares with the expected token spellings joined by '|'. */
static bool st_encodes_as(const Bpe *b, const char *s, int flags, const char *want)
{
    int  ids[256], n;
    char got[1024];
    if (bpe_encode(b, s, strlen(s), flags, ids, 256, &n) != 0) return false;
    size_t k = 0;
    got[0] = '\0';
    for (int i = 0; i < n; i++)
        k += (size_t)snprintf(got + k, sizeof got - k, "%s%s", i ? "|" : "",
                              bpe_token_text(b, ids[i]));
    if (strcmp(got, want) != 0) {
        fprintf(stderr, "bpe_selftest: '%s' encodes as '%s', expected '%s'\n", s, got, want);
        return false;
    }
    return true;
}

static bool st_round_trip(const Bpe *b, const char *s, size_t len)
{
    int   *ids = xmalloc(BPE_ENCODE_MAX_IDS(len) * sizeof *ids);
    int    n = 0;
    bool   ok = bpe_encode(b, s, len, BPE_ENC_SPECIAL, ids, (int)BPE_ENCODE_MAX_IDS(len), &n) == 0;
    size_t cap = bpe_decode_max_bytes(b, n), got = 0;
    char  *out = xmalloc(cap);
    ok = ok && bpe_decode(b, ids, n, BPE_DEC_SPECIAL, out, cap, &got) == 0;
    ok = ok && got == len && memcmp(out, s, len) == 0;
    free(ids);
    free(out);
    return ok;
}

int bpe_selftest(bool verbose)
{
    int  fails = 0;
    char buf[1024];

    /* Pre-tokenizer splits, written out by hand from the regex. */
    const char *text = "Hello world's  x\n\ny 37+45=82 ¹²\tend  ";
    st_pieces(BPE_PRE_SMOLLM, text, buf, sizeof buf);
    ST_CHECK(strcmp(buf, "Hello| world|'s| | x|\n|\n|y| |3|7|+|4|5|=|8|2| |¹|²|\t|end|  ") == 0);
    st_pieces(BPE_PRE_GPT2, text, buf, sizeof buf);
    ST_CHECK(strcmp(buf, "Hello| world|'s| | x|\n|\n|y| 37|+|45|=|82| ¹²|\t|end|  ") == 0);
    st_pieces(BPE_PRE_GPT2, "I'll can't 'RE x'x  \xff\xfe!? Привет 中文", buf, sizeof buf);
    ST_CHECK(strcmp(buf, "I|'ll| can|'t| '|RE| x|'|x| | \xff\xfe!?| Привет| 中文") == 0);
    st_pieces(BPE_PRE_GPT2, "a \u00a0b\u3000\u3000c", buf, sizeof buf);
    ST_CHECK(strcmp(buf, "a| |\u00a0|b|\u3000|\u3000|c") == 0);

    const char *const merges[] = {"Ġ t", "h e", "Ġt he", "b c",  "a b",
                                  "l l", "Ġ 3", "a a",   "aa aa"};
    const int         n_merges = (int)(sizeof merges / sizeof merges[0]);
    const char *tpl = "{% for message in messages %}{% if loop.first and messages[0]['role'] != "
                      "'system' %}{{ '<|im_start|>system\nYou are a test.<|im_end|>\n' }}{% endif "
                      "%}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
                      "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ "
                      "'<|im_start|>assistant\\n' }}{% endif %}";
    StVocab     sv;
    Bpe        *b = st_build(&sv, "", tpl, merges, n_merges);
    CHECK(b);

    /* Merges by rank: "b c" (rank 3) beats "a b" (rank 4), so "abc" is a|bc. */
    ST_CHECK(st_encodes_as(b, "abc", 0, "a|bc"));
    ST_CHECK(st_encodes_as(b, "ab", 0, "ab"));
    ST_CHECK(st_encodes_as(b, " the", 0, "Ġthe"));
    ST_CHECK(st_encodes_as(b, "the other", 0, "t|he|Ġ|o|t|he|r"));
    /* Equal ranks merge leftmost first: aaaaa is aaaa|a, not a|aaaa. */
    ST_CHECK(st_encodes_as(b, "aaaaa", 0, "aaaa|a"));
    ST_CHECK(st_encodes_as(b, "aaa", 0, "aa|a"));
    /* smollm isolates digits, so the "Ġ 3" merge never applies. */
    ST_CHECK(st_encodes_as(b, "x 3", 0, "x|Ġ|3"));
    /* Special tokens: CONTROL ones only with the flag, USER_DEFINED always. */
    ST_CHECK(
        st_encodes_as(b, "<|im_start|>the<tool>", BPE_ENC_SPECIAL, "<|im_start|>|t|he|<tool>"));
    ST_CHECK(st_encodes_as(b, "<|im_start|>", 0, "<|||i|m|_|s|t|a|r|t|||>"));
    ST_CHECK(st_encodes_as(b, "a<tool>b", 0, "a|<tool>|b"));
    ST_CHECK(st_encodes_as(b, "ab", BPE_ENC_BOS, "<|endoftext|>|ab"));
    /* Byte fallback: bytes with no merge and invalid UTF-8 are byte tokens. */
    ST_CHECK(st_encodes_as(b, "\xff\xc3", 0, "ÿ|Ã"));
    ST_CHECK(bpe_eot_id(b) == 2 && bpe_token_id(b, "Ġthe", 5) >= 0);
    ST_CHECK(bpe_token_id(b, "nope", 4) == ERR_NOTFOUND);

    /* Decoding: specials skipped unless asked for; byte 0 decodes to NUL. */
    int    ids[] = {1, bpe_token_id(b, "Ġthe", 5), 2, bpe_token_id(b, "Ā", 2)};
    size_t len;
    ST_CHECK(bpe_decode(b, ids, 4, 0, buf, sizeof buf, &len) == 0 && len == 5 &&
             memcmp(buf, " the\0", 5) == 0);
    ST_CHECK(bpe_decode(b, ids, 3, BPE_DEC_SPECIAL, buf, sizeof buf, &len) == 0 &&
             strcmp(buf, "<|im_start|> the<|im_end|>") == 0);
    ST_CHECK(bpe_decode(b, ids, 3, BPE_DEC_SPECIAL, buf, 10, &len) == ERR_RANGE && buf[0] == 0);
    int bad = 999;
    ST_CHECK(bpe_decode(b, &bad, 1, 0, buf, sizeof buf, &len) == ERR_RANGE);

    /* Capacity: too small is ERR_RANGE with the needed count reported. */
    int n = 0;
    ST_CHECK(bpe_encode(b, "abc abc", 7, 0, ids, 2, &n) == ERR_RANGE && n == 5);

    /* Round trip over random bytes, valid UTF-8 or not. */
    uint64_t rs = 0x9e3779b97f4a7c15ull;
    for (int t = 0; t < 300; t++) {
        char   s[200];
        size_t sl = (size_t)(t % 200);
        for (size_t i = 0; i < sl; i++) {
            rs = rs * 6364136223846793005ull + 1442695040888963407ull;
            uint8_t r = (uint8_t)(rs >> 56);
            /* Mix in plenty of the characters merges and the splitter care about. */
            s[i] = (char)(t % 3 == 0 ? r : " abcthe'\n\t3<|>"[r % 15]);
        }
        ST_CHECK(st_round_trip(b, s, sl));
    }
    const char *all = "<|im_start|>user\nHi there 12 é 中 🙂<|im_end|>\n";
    ST_CHECK(st_round_trip(b, all, strlen(all)));

    /* Chat template: the default system prompt and the generation prompt. */
    ST_CHECK(bpe_chat_supported(b) && strcmp(bpe_chat_default_system(b), "You are a test.") == 0);
    BpeChatMessage msgs[] = {{"user", "Hi"}, {"assistant", "Hello!"}, {"user", "2+2?"}};
    ST_CHECK(bpe_chat_format(b, msgs, 3, true, buf, sizeof buf, &len) == 0);
    const char *want =
        "<|im_start|>system\nYou are a test.<|im_end|>\n<|im_start|>user\nHi<|im_end|>"
        "\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
        "<|im_start|>assistant\n";
    ST_CHECK(strcmp(buf, want) == 0 && len == strlen(want));
    BpeChatMessage sys[] = {{"system", "Be brief."}, {"user", "Hi"}};
    ST_CHECK(
        bpe_chat_format(b, sys, 2, false, buf, sizeof buf, &len) == 0 &&
        strcmp(buf, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n") ==
            0);
    ST_CHECK(bpe_chat_format(b, sys, 2, false, buf, 20, &len) == ERR_RANGE && len == 69);

    /* Speed: a megabyte of mixed text. */
    size_t big_len = 1 << 20;
    char  *big = xmalloc(big_len);
    for (size_t i = 0; i < big_len; i++) {
        rs = rs * 6364136223846793005ull + 1442695040888963407ull;
        big[i] = "the cat sat on a mat, 37+45=82.\n"[(rs >> 40) % 32];
    }
    int            *big_ids = xmalloc(BPE_ENCODE_MAX_IDS(big_len) * sizeof *big_ids);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ST_CHECK(bpe_encode(b, big, big_len, 0, big_ids, (int)BPE_ENCODE_MAX_IDS(big_len), &n) == 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double dt = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    if (verbose) printf("bpe: encode %.1f MB/s on the tiny vocabulary (%d ids)\n", 1.0 / dt, n);
    free(big);
    free(big_ids);
    bpe_free(&b);
    st_free(&sv);

    /* A vocabulary missing bytes 0x04 and 'x' drops them (both references
     * do); inside one piece the neighbours then merge ("a b"), across pieces
     * they cannot. Strict mode refuses such bytes instead. */
    b = st_build(&sv, "\x04x", NULL, merges, n_merges);
    CHECK(b);
    ST_CHECK(!bpe_byte_encodable(b, 0x04) && bpe_byte_encodable(b, 0x05));
    ST_CHECK(st_encodes_as(b, "axb", 0, "ab"));
    ST_CHECK(st_encodes_as(b, "a\x04z", 0, "a|z"));
    ST_CHECK(bpe_encode(b, "a\x04z", 3, BPE_ENC_STRICT, ids, 4, &n) == ERR_RANGE);
    ST_CHECK(!bpe_chat_supported(b) && bpe_eot_id(b) == 0);
    ST_CHECK(bpe_chat_format(b, msgs, 1, true, buf, sizeof buf, &len) == ERR_UNSUPPORTED);
    bpe_free(&b);
    st_free(&sv);

    /* Malformed vocabularies are refused. */
    const char *const bad_merge[] = {"a b", "x zz"};
    ST_CHECK(st_build(&sv, "", NULL, bad_merge, 2) == NULL);
    st_free(&sv);
    const char *const two_spaces[] = {"a b c"};
    ST_CHECK(st_build(&sv, "", NULL, two_spaces, 1) == NULL);
    st_free(&sv);
    /* The GGUF adapter, on hand-written files. */
    char path[] = "/tmp/bpe_selftest_XXXXXX";
    int  fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    b = st_build(&sv, "", NULL, merges, n_merges);
    CHECK(b);
    bpe_free(&b);
    ST_CHECK(st_write_gguf(path, &sv, merges, n_merges, "gpt2", sv.n) == 0);
    ST_CHECK(bpe_load(path, &b) == 0 && b && bpe_vocab_size(b) == sv.n);
    if (b) {
        ST_CHECK(
            st_encodes_as(b, "<|im_start|>the abc", BPE_ENC_SPECIAL, "<|im_start|>|t|he|Ġ|a|bc"));
        ST_CHECK(bpe_eos_id(b) == 0 && bpe_bos_id(b) == -1 && !bpe_add_bos(b));
        ST_CHECK(bpe_chat_supported(b) && bpe_eot_id(b) == 2 && !bpe_chat_default_system(b));
        ST_CHECK(strcmp(bpe_pre_name(b), "smollm") == 0);
    }
    bpe_free(&b);
    ST_CHECK(st_write_gguf(path, &sv, merges, n_merges, "llama", sv.n) == 0);
    ST_CHECK(bpe_load(path, &b) == ERR_UNSUPPORTED && !b);
    ST_CHECK(st_write_gguf(path, &sv, merges, n_merges, "gpt2", sv.n - 1) == 0);
    ST_CHECK(bpe_load(path, &b) == ERR_MISMATCH && !b);
    ST_CHECK(st_write_gguf(path, &sv, bad_merge, 2, "gpt2", sv.n) == 0);
    ST_CHECK(bpe_load(path, &b) == ERR_FORMAT && !b);
    unlink(path);
    st_free(&sv);
    const char *toks[] = {"a", "b"};
    BpeVocab    v = {.n_tokens = 2,
                     .tokens = toks,
                     .pre = "llama3",
                     .bos_id = -1,
                     .eos_id = -1,
                     .unk_id = -1,
                     .pad_id = -1};
    ST_CHECK(bpe_new(&v) == NULL);
    v.pre = "gpt2";
    v.eos_id = 2;
    ST_CHECK(bpe_new(&v) == NULL);
    v.eos_id = 1;
    const char *bad_utf8[] = {"a", "\xc3"};
    v.tokens = bad_utf8;
    ST_CHECK(bpe_new(&v) == NULL);
    v.tokens = toks;
    b = bpe_new(&v);
    ST_CHECK(b && bpe_vocab_size(b) == 2 && bpe_eot_id(b) == 1);
    /* Nothing but 'a' and 'b' is encodable here. */
    ST_CHECK(b && bpe_encode(b, "abc", 3, 0, ids, 4, &n) == 0 && n == 2);
    bpe_free(&b);
    bpe_free(&b);

    if (verbose) printf("bpe: %d failures\n", fails);
    return fails ? 1 : 0;
}
