/* The encoding half of bpe.h: bpe_encode splits text at special tokens,
 * pre-tokenizes the rest (bpe_pre.h) and merges each piece by rank over the
 * merge table that bpe.c built. The Bpe's inside comes from bpe_int.h. */
#include "common/formats/bpe.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "common/formats/bpe_int.h"
#include "common/formats/bpe_pre.h"

static const BpeMergeSlot *merge_find(const Bpe *b, int32_t left, int32_t right)
{
    uint64_t key = ((uint64_t)(uint32_t)(left + 1) << 32) | (uint32_t)(right + 1);
    size_t   mask = b->merge_cap - 1;
    for (size_t i = hash_u64(key) & mask;; i = (i + 1) & mask) {
        if (b->merge[i].key == key) return &b->merge[i];
        if (b->merge[i].key == 0) return NULL;
    }
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
            /* The flag is the one mutable field of a Bpe (bpe.h); C11 atomics take a
             * non-const pointer (clang enforces it), and the Bpe is heap-allocated. */
            if (!atomic_exchange((atomic_bool *)&b->warned_drop, true))
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

/* What encode_text hands each piece to. */
typedef struct {
    const Bpe *b;
    BpeWork   *w;
    int        flags;
} PieceCtx;

static int encode_piece_cb(void *ctx, const uint8_t *s, size_t len, size_t at)
{
    PieceCtx *pc = ctx;
    return encode_piece(pc->b, pc->w, s, len, at, pc->flags);
}

/* Pre-tokenizes text[start, end) (no special tokens inside) and encodes each
 * piece. */
static int encode_text(const Bpe *b, BpeWork *w, const uint8_t *s, size_t start, size_t end,
                       int flags)
{
    PieceCtx pc = {b, w, flags};
    return bpe_pre_split(b->pre, s, start, end, encode_piece_cb, &pc);
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
