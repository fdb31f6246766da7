/* bpe_test: the byte-level BPE tokenizer on SmolLM2-135M-Instruct's real
 * vocabulary, against tests/fixtures/tokenizer_smollm2.json (written by
 * tests/reference/make_tokenizer_fixture.py with Hugging Face transformers).
 * Skipped, passing, when models/SmolLM2-135M-Instruct.Q4_1.gguf is absent
 * (`make model` fetches it); RLHF_SMOLLM2_GGUF overrides the path and
 * RLHF_BPE_FIXTURE the fixture (for larger, randomized comparisons). */
#include "tests/support/fixtures.h"
#include "tests/test_list.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/formats/bpe.h"
#include "common/formats/bpe_chat.h"
#include "common/formats/bpe_gguf.h"
#include "common/base/err.h"
#include "common/base/log.h"

#define SMOLLM2_FIXTURE "tests/fixtures/tokenizer_smollm2.json"

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
    const char *path = fixture_smollm2_path("bpe_smollm2");
    if (!path) return 0;

    int    fails = 0;
    double t0 = now_s();
    Bpe   *b = NULL;
    if (bpe_load(path, &b) != 0) return 1;
    double t_load = now_s() - t0;

    const char *fixture = getenv("RLHF_BPE_FIXTURE");
    if (!fixture || !*fixture) fixture = SMOLLM2_FIXTURE;
    json_error_t jerr;
    json_t      *fx = json_load_file(fixture, 0, &jerr);
    if (!fx) {
        fprintf(stderr, "bpe_smollm2: %s:%d: %s\n", fixture, jerr.line, jerr.text);
        bpe_free(&b);
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
        printf("bpe_smollm2: %d tokens, pre '%s', add_bos %d; bpe_load (GGUF metadata + "
               "vocabulary) %.0f ms; encode %.1f MB/s (%zu bytes -> %d ids)\n",
               bpe_vocab_size(b), bpe_pre_name(b), bpe_add_bos(b), 1e3 * t_load,
               (double)big_len / 1e6 / dt, big_len, n_ids);
    free(ids);
    free(big);
    free(all);
    json_decref(fx);
    bpe_free(&b);
    return fails ? 1 : 0;
}
