#include "common/formats/bpe.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "common/formats/bpe_chat.h"
#include "common/formats/bpe_int.h"
#include "common/formats/bpe_pre.h"

/* ---- The tokenizer ------------------------------------------------------ */

static uint64_t hash_bytes(const void *p, size_t n)
{
    const uint8_t *s = p;
    uint64_t       h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
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

static size_t pow2_at_least(size_t n)
{
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

/* Spells token text the way Hugging Face's GGUF loader does: a token whose
 * characters all belong to the byte alphabet stays as it is; any other is
 * respelled byte by byte. out needs 2 * n + 1 bytes. */
static size_t respell(const uint8_t *s, size_t n, char *out)
{
    bool in_alphabet = true;
    for (size_t p = 0; p < n;) {
        uint32_t cp;
        p += bpe_pre_utf8_next(s, p, n, &cp);
        if (bpe_pre_cp_to_byte(cp) < 0) in_alphabet = false;
    }
    if (in_alphabet) {
        memcpy(out, s, n);
        out[n] = '\0';
        return n;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += bpe_pre_utf8_put(bpe_pre_byte_to_cp(s[i]), (uint8_t *)out + k);
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
        if (!bpe_pre_utf8_valid((const uint8_t *)v->tokens[i], len)) {
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
                p += bpe_pre_utf8_next((const uint8_t *)b->text + to, p, k, &cp);
                b->bytes[bo++] = (uint8_t)bpe_pre_cp_to_byte(cp);
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
        size_t  k = bpe_pre_utf8_put(bpe_pre_byte_to_cp((uint8_t)c), ch);
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
    b->chat =
        bpe_chat_parse(v->chat_template, &b->chat_default_system) ? BPE_CHAT_CHATML : BPE_CHAT_NONE;
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

bool bpe_chat_supported(const Bpe *b)
{
    return b->chat == BPE_CHAT_CHATML;
}

const char *bpe_chat_default_system(const Bpe *b)
{
    return b->chat_default_system;
}
