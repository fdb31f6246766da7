#include "common/formats/bpe_pre.h"

#include <string.h>

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
size_t bpe_pre_utf8_next(const uint8_t *s, size_t p, size_t end, uint32_t *cp)
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
    *clen = bpe_pre_utf8_next(s, p, end, &cp);
    return uc_class(cp);
}

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

/* GPT-2's byte-to-unicode mapping: printable Latin-1 bytes stand for
 * themselves; the other 68 (0x00..0x20, 0x7f..0xa0 and the soft hyphen 0xad)
 * for U+0100 onwards in byte order. */
uint32_t bpe_pre_byte_to_cp(uint8_t c)
{
    if (c <= 0x20) return 256u + c;
    if (c >= 0x7F && c <= 0xA0) return 256u + 33 + (c - 0x7Fu);
    if (c == 0xAD) return 256u + 67;
    return c;
}

/* The inverse: a byte, or -1 for code points outside the alphabet. */
int bpe_pre_cp_to_byte(uint32_t cp)
{
    if (cp < 256) return cp <= 0x20 || (cp >= 0x7F && cp <= 0xA0) || cp == 0xAD ? -1 : (int)cp;
    if (cp < 256 + 33) return (int)(cp - 256);
    if (cp < 256 + 67) return (int)(cp - 256 - 33 + 0x7F);
    if (cp == 256 + 67) return 0xAD;
    return -1;
}

size_t bpe_pre_utf8_put(uint32_t cp, uint8_t *out)
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

/* Whether s[0..n) is valid UTF-8 (every character decodes). */
bool bpe_pre_utf8_valid(const uint8_t *s, size_t n)
{
    for (size_t p = 0; p < n;) {
        uint32_t cp;
        p += bpe_pre_utf8_next(s, p, n, &cp);
        if (cp == BPE_CP_INVALID) return false;
    }
    return true;
}

int bpe_pre_split(BpePre pre, const uint8_t *s, size_t start, size_t end, BpePieceFn fn, void *ctx)
{
    size_t p = start;
    while (p < end) {
        size_t seg_end = end;
        if (pre == BPE_PRE_SMOLLM) {
            /* Every numeric character is a piece of its own, and the regex
             * then runs on the text between them as on separate strings. */
            size_t clen;
            if (char_at(s, p, end, &clen) == BPE_UC_N) {
                int rc = fn(ctx, s + p, clen, p);
                if (rc) return rc;
                p += clen;
                continue;
            }
            for (seg_end = p; seg_end < end; seg_end += clen)
                if (char_at(s, seg_end, end, &clen) == BPE_UC_N) break;
        }
        while (p < seg_end) {
            size_t m = gpt2_match(s, p, seg_end);
            int    rc = fn(ctx, s + p, m, p);
            if (rc) return rc;
            p += m;
        }
    }
    return 0;
}
