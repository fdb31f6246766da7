#include "tests/bpe_test.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/bpe.h"
#include "common/err.h"
#include "common/log.h"

#define SMOLLM2_GGUF "models/SmolLM2-135M-Instruct.Q4_1.gguf"
#define SMOLLM2_FIXTURE "tests/fixtures/tokenizer_smollm2.json"

/* ---- A minimal GGUF metadata reader ------------------------------------
 * TODO: replace with common/gguf.h once it lands; until then this reads only
 * the tokenizer.* keys of the test's own model file, bounds-checked. */

typedef struct {
    const uint8_t *p, *end;
    bool           bad;
} Cur;

static const uint8_t *take(Cur *c, uint64_t n)
{
    if (c->bad || (uint64_t)(c->end - c->p) < n) {
        c->bad = true;
        return NULL;
    }
    const uint8_t *r = c->p;
    c->p += n;
    return r;
}

static uint64_t take_u(Cur *c, int bytes)
{
    const uint8_t *q = take(c, (uint64_t)bytes);
    uint64_t       v = 0;
    for (int i = bytes - 1; q && i >= 0; i--) v = v << 8 | q[i];
    return v;
}

static const char *take_str(Cur *c, size_t *len)
{
    uint64_t n = take_u(c, 8);
    *len = (size_t)n;
    return (const char *)take(c, n);
}

static int val_size(uint32_t type)
{
    static const int sizes[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return type < 13 ? sizes[type] : -1;
}

typedef struct {
    uint8_t     *file; /* the metadata part of the file */
    const char **tokens;
    size_t      *token_lens;
    int32_t     *token_types;
    int          n_tokens;
    const char **merges;
    size_t      *merge_lens;
    int          n_merges;
    char        *pre, *model, *chat_template;
    int32_t      ids[4]; /* bos, eos, unk, pad */
} Meta;

static char *dup_n(const char *s, size_t n)
{
    char *r = xmalloc(n + 1);
    memcpy(r, s, n);
    r[n] = '\0';
    return r;
}

static void meta_free(Meta *m)
{
    free(m->file);
    free(m->tokens);
    free(m->token_lens);
    free(m->token_types);
    free(m->merges);
    free(m->merge_lens);
    free(m->pre);
    free(m->model);
    free(m->chat_template);
}

/* Reads a string array into pointer and length arrays (pointers into the buffer). */
static int str_array(Cur *c, const char ***out, size_t **lens, int *n_out)
{
    uint32_t et = (uint32_t)take_u(c, 4);
    uint64_t n = take_u(c, 8);
    if (c->bad || et != 8 || n > (1u << 22)) return ERR_FORMAT;
    *out = xmalloc((n + 1) * sizeof **out);
    *lens = xmalloc((n + 1) * sizeof **lens);
    for (uint64_t i = 0; i < n; i++) (*out)[i] = take_str(c, &(*lens)[i]);
    *n_out = (int)n;
    return c->bad ? ERR_FORMAT : 0;
}

static int skip_value(Cur *c, uint32_t type, int depth)
{
    if (type == 8) {
        size_t len;
        take_str(c, &len);
    } else if (type == 9) {
        uint32_t et = (uint32_t)take_u(c, 4);
        uint64_t n = take_u(c, 8);
        if (depth > 2 || c->bad || n > (1u << 24)) return ERR_FORMAT;
        for (uint64_t i = 0; i < n && !c->bad; i++)
            if (skip_value(c, et, depth + 1)) return ERR_FORMAT;
    } else {
        int s = val_size(type);
        if (s <= 0) return ERR_FORMAT;
        take(c, (uint64_t)s);
    }
    return c->bad ? ERR_FORMAT : 0;
}

static int meta_read(const char *path, Meta *m)
{
    memset(m, 0, sizeof *m);
    for (int i = 0; i < 4; i++) m->ids[i] = -1;
    FILE *f = fopen(path, "rb");
    if (!f) return ERR_NOTFOUND;
    /* The tokenizer metadata of a small model fits in the first 16 MiB. */
    size_t cap = 16u << 20;
    m->file = xmalloc(cap);
    size_t got = fread(m->file, 1, cap, f);
    fclose(f);
    Cur c = {m->file, m->file + got, false};
    if (got < 24 || memcmp(m->file, "GGUF", 4) != 0) return ERR_FORMAT;
    take(&c, 4);
    uint32_t version = (uint32_t)take_u(&c, 4);
    take_u(&c, 8);
    uint64_t n_kv = take_u(&c, 8);
    if (version < 2 || version > 3 || n_kv > (1u << 20)) return ERR_FORMAT;
    for (uint64_t k = 0; k < n_kv && !c.bad; k++) {
        size_t      kl;
        const char *key = take_str(&c, &kl);
        uint32_t    type = (uint32_t)take_u(&c, 4);
        if (c.bad) break;
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(kl < 255 ? kl : 255), key);
        int rc = 0;
        if (!strcmp(name, "tokenizer.ggml.tokens") && type == 9) {
            rc = str_array(&c, &m->tokens, &m->token_lens, &m->n_tokens);
        } else if (!strcmp(name, "tokenizer.ggml.merges") && type == 9) {
            rc = str_array(&c, &m->merges, &m->merge_lens, &m->n_merges);
        } else if (!strcmp(name, "tokenizer.ggml.token_type") && type == 9) {
            uint32_t et = (uint32_t)take_u(&c, 4);
            uint64_t n = take_u(&c, 8);
            if (et != 5 || n > (1u << 22)) return ERR_FORMAT;
            m->token_types = xmalloc((n + 1) * sizeof *m->token_types);
            for (uint64_t i = 0; i < n; i++) m->token_types[i] = (int32_t)take_u(&c, 4);
        } else if ((!strcmp(name, "tokenizer.ggml.pre") || !strcmp(name, "tokenizer.ggml.model") ||
                    !strcmp(name, "tokenizer.chat_template")) &&
                   type == 8) {
            size_t      len;
            const char *s = take_str(&c, &len);
            if (!s) return ERR_FORMAT;
            char **dst = name[10] == 'c'   ? &m->chat_template
                         : name[15] == 'p' ? &m->pre
                                           : &m->model;
            *dst = dup_n(s, len);
        } else if (type == 4 && (!strcmp(name, "tokenizer.ggml.bos_token_id") ||
                                 !strcmp(name, "tokenizer.ggml.eos_token_id") ||
                                 !strcmp(name, "tokenizer.ggml.unknown_token_id") ||
                                 !strcmp(name, "tokenizer.ggml.padding_token_id"))) {
            int which = name[15] == 'b' ? 0 : name[15] == 'e' ? 1 : name[15] == 'u' ? 2 : 3;
            m->ids[which] = (int32_t)take_u(&c, 4);
        } else {
            rc = skip_value(&c, type, 0);
        }
        if (rc) return rc;
    }
    return c.bad || !m->tokens ? ERR_FORMAT : 0;
}

/* ---- The test ----------------------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The text with the bytes the vocabulary cannot encode removed. */
static size_t strip_unencodable(const Bpe *b, const char *s, size_t n, char *out)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (bpe_byte_encodable(b, (uint8_t)s[i])) out[k++] = s[i];
    return k;
}

/* Encodes text and compares with the fixture's ids; prints the first
 * difference. */
static bool ids_match(const Bpe *b, const char *what, const char *text, size_t len, json_t *want)
{
    size_t cap = BPE_ENCODE_MAX_IDS(len);
    int   *ids = xmalloc(cap * sizeof *ids);
    int    n = 0;
    bool   ok = bpe_encode(b, text, len, BPE_ENC_SPECIAL, ids, (int)cap, &n) == 0 &&
              json_is_array(want) && (size_t)n == json_array_size(want);
    for (int i = 0; ok && i < n; i++) ok = ids[i] == json_integer_value(json_array_get(want, i));
    if (!ok) {
        fprintf(stderr, "bpe_smollm2: %s '%.60s': ours (%d ids):", what, text, n);
        for (int i = 0; i < n && i < 40; i++) fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, "\n  reference (%zu ids):", json_array_size(want));
        for (size_t i = 0; i < json_array_size(want) && i < 40; i++)
            fprintf(stderr, " %lld", (long long)json_integer_value(json_array_get(want, i)));
        fprintf(stderr, "\n");
    }
    free(ids);
    return ok;
}

static bool round_trips(const Bpe *b, const char *text, size_t len)
{
    size_t cap = BPE_ENCODE_MAX_IDS(len);
    int   *ids = xmalloc(cap * sizeof *ids);
    int    n = 0;
    bool   ok = bpe_encode(b, text, len, BPE_ENC_SPECIAL, ids, (int)cap, &n) == 0;
    size_t dcap = bpe_decode_max_bytes(b, n), got = 0;
    char  *out = xmalloc(dcap), *want = xmalloc(len + 1);
    size_t wl = strip_unencodable(b, text, len, want);
    ok = ok && bpe_decode(b, ids, n, BPE_DEC_SPECIAL, out, dcap, &got) == 0 && got == wl &&
         memcmp(out, want, wl) == 0;
    free(ids);
    free(out);
    free(want);
    return ok;
}

int bpe_smollm2_selftest(bool verbose)
{
    const char *path = getenv("RLHF_SMOLLM2_GGUF");
    if (!path || !*path) path = SMOLLM2_GGUF;
    FILE *probe = fopen(path, "rb");
    if (!probe) {
        printf("bpe_smollm2: skipped: run make model (no %s)\n", path);
        return 0;
    }
    fclose(probe);

    int    fails = 0;
    double t0 = now_s();
    Meta   m;
    int    rc = meta_read(path, &m);
    if (rc != 0 || !m.model || strcmp(m.model, "gpt2") != 0 || !m.token_types || !m.merges) {
        fprintf(stderr, "bpe_smollm2: %s: tokenizer metadata unreadable (%s) or not gpt2\n", path,
                err_str(rc));
        meta_free(&m);
        return 1;
    }
    BpeVocab v = {.n_tokens = m.n_tokens,
                  .tokens = m.tokens,
                  .token_lens = m.token_lens,
                  .token_types = m.token_types,
                  .n_merges = m.n_merges,
                  .merges = m.merges,
                  .merge_lens = m.merge_lens,
                  .pre = m.pre,
                  .bos_id = m.ids[0],
                  .eos_id = m.ids[1],
                  .unk_id = m.ids[2],
                  .pad_id = m.ids[3],
                  .chat_template = m.chat_template};
    Bpe     *b = bpe_new(&v);
    double   t_load = now_s() - t0;
    if (!b) {
        meta_free(&m);
        return 1;
    }

    json_error_t jerr;
    json_t      *fx = json_load_file(SMOLLM2_FIXTURE, 0, &jerr);
    if (!fx) {
        fprintf(stderr, "bpe_smollm2: %s:%d: %s\n", SMOLLM2_FIXTURE, jerr.line, jerr.text);
        bpe_free(&b);
        meta_free(&m);
        return 1;
    }
    json_t *cases = json_object_get(fx, "cases");
    size_t  n_cases = json_array_size(cases), n_same = 0, n_rt = 0, n_dropping = 0;
    char   *all = NULL;
    size_t  all_len = 0;
    for (size_t i = 0; i < n_cases; i++) {
        json_t     *c = json_array_get(cases, i);
        const char *text = json_string_value(json_object_get(c, "text"));
        size_t      len = json_string_length(json_object_get(c, "text"));
        if (!text) {
            fails++;
            continue;
        }
        n_same += ids_match(b, "string", text, len, json_object_get(c, "ids"));
        bool rt = round_trips(b, text, len);
        n_rt += rt;
        if (!rt) fprintf(stderr, "bpe_smollm2: decode(encode('%.60s')) differs\n", text);
        for (size_t k = 0; k < len; k++) {
            if (!bpe_byte_encodable(b, (uint8_t)text[k])) {
                n_dropping++;
                break;
            }
        }
        all = xrealloc(all, all_len + len + 1);
        memcpy(all + all_len, text, len);
        all_len += len;
    }
    printf("bpe_smollm2: %zu/%zu strings identical to the reference; decode(encode(s)) == s for "
           "%zu/%zu (%zu with bytes SmolLM2 has no token for, compared without them)\n",
           n_same, n_cases, n_rt, n_cases, n_dropping);
    if (n_same != n_cases || n_rt != n_cases || n_cases < 50) fails++;

    /* The chat template, rendered and encoded. */
    json_t *chats = json_object_get(fx, "chat");
    size_t  n_chat_ok = 0;
    for (size_t i = 0; i < json_array_size(chats); i++) {
        json_t        *c = json_array_get(chats, i);
        json_t        *jm = json_object_get(c, "messages");
        int            n = (int)json_array_size(jm);
        BpeChatMessage msgs[16];
        if (n > 16) n = 16;
        for (int k = 0; k < n; k++) {
            msgs[k].role =
                json_string_value(json_object_get(json_array_get(jm, (size_t)k), "role"));
            msgs[k].content =
                json_string_value(json_object_get(json_array_get(jm, (size_t)k), "content"));
        }
        char        out[4096];
        size_t      len = 0;
        const char *want = json_string_value(json_object_get(c, "text"));
        bool        gen = json_is_true(json_object_get(c, "add_generation_prompt"));
        bool        ok = bpe_chat_format(b, msgs, n, gen, out, sizeof out, &len) == 0 && want &&
                  strcmp(out, want) == 0;
        if (!ok)
            fprintf(stderr, "bpe_smollm2: chat %zu renders as\n%s\nexpected\n%s\n", i, out, want);
        ok = ok && ids_match(b, "chat", out, len, json_object_get(c, "ids"));
        n_chat_ok += ok;
    }
    printf("bpe_smollm2: %zu/%zu chat templates rendered and encoded identically; eot <|im_end|> "
           "= %d\n",
           n_chat_ok, json_array_size(chats), bpe_eot_id(b));
    if (n_chat_ok != json_array_size(chats) || json_array_size(chats) == 0) fails++;
    if (bpe_eot_id(b) != json_integer_value(json_object_get(fx, "eot_id"))) fails++;

    /* Speed on the real vocabulary: the fixture texts repeated to ~1 MB. */
    size_t big_len = 0, big_cap = (1u << 20) + all_len;
    char  *big = xmalloc(big_cap);
    while (all_len && big_len + all_len <= big_cap) {
        memcpy(big + big_len, all, all_len);
        big_len += all_len;
    }
    int   *ids = xmalloc(BPE_ENCODE_MAX_IDS(big_len) * sizeof *ids);
    int    n_ids = 0;
    double t1 = now_s();
    if (bpe_encode(b, big, big_len, BPE_ENC_SPECIAL, ids, (int)BPE_ENCODE_MAX_IDS(big_len), &n_ids))
        fails++;
    double dt = now_s() - t1;
    if (verbose)
        printf("bpe_smollm2: %d tokens, %d merges, pre '%s'; metadata + vocabulary load %.0f ms; "
               "encode %.1f MB/s (%zu bytes -> %d ids)\n",
               bpe_vocab_size(b), m.n_merges, bpe_pre_name(b), 1e3 * t_load,
               (double)big_len / 1e6 / dt, big_len, n_ids);
    free(ids);
    free(big);
    free(all);
    json_decref(fx);
    bpe_free(&b);
    meta_free(&m);
    return fails ? 1 : 0;
}
