/* bpe: text through the byte-level BPE tokenizer (SmolLM2's when the model
 * file is there, else the small hand-made one: see fuzz_bpe), as prompts
 * and datasets reach it: both pre-tokenizers' splits, bpe_encode with and
 * without special tokens and strictly, bpe_decode, and the chat template
 * around the text as a user message.
 *
 * Input: the text (any bytes). Properties: the pre-tokenizer puts every
 * byte in exactly one piece, in order; an encoding takes at most
 * BPE_ENCODE_MAX_IDS ids, all in the vocabulary, reports its length even
 * when it does not fit, and decodes back to the text less the bytes the
 * vocabulary has no token for (decode(encode(s)) == s, bpe.h's promise),
 * with special tokens matched or not; a strict encoding fails exactly when
 * such a byte is there; the rendered chat round-trips the same way. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/formats/bpe.h"
#include "common/formats/bpe_chat.h"
#include "common/formats/bpe_pre.h"
#include "tests/fuzz/fuzz.h"

/* Longer inputs are skipped (libFuzzer's default max_len is 4096): the
 * buffers below are allocated once, for the text wrapped in the chat. */
#define MAX_TEXT 8192
#define MAX_CHAT (MAX_TEXT + 1024)

static Bpe   *g_b;
static int   *g_ids; /* (BPE_ENCODE_MAX_IDS(MAX_CHAT)) */
static char  *g_out; /* (g_out_cap) decoded bytes */
static size_t g_out_cap;
static char  *g_want; /* (MAX_CHAT) the encodable bytes */
static char  *g_chat; /* (MAX_CHAT) the rendered chat */

typedef struct {
    size_t next; /* where the next piece must start */
} Split;

static int on_piece(void *ctx, const uint8_t *s, size_t len, size_t at)
{
    Split *sp = ctx;
    FUZZ_CHECK(len > 0 && at == sp->next, "piece of %zu bytes at %zu, expected at %zu", len, at,
               sp->next);
    (void)s;
    sp->next = at + len;
    return 0;
}

/* The text less the bytes without a token: what decode(encode(text)) gives. */
static size_t encodable(const Bpe *b, const uint8_t *s, size_t n, char *out)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (bpe_byte_encodable(b, s[i])) out[k++] = (char)s[i];
    return k;
}

/* Encodes s with enc_flags, decodes with dec_flags and compares with the
 * encodable bytes of s; with check_cap, also encodes into one id too few. */
static void round_trip(const Bpe *b, const char *s, size_t n, int enc_flags, int dec_flags,
                       bool check_cap)
{
    int   *ids = g_ids;
    char  *out = g_out, *want = g_want;
    size_t want_len = encodable(b, (const uint8_t *)s, n, want);
    int    cap = (int)BPE_ENCODE_MAX_IDS(n), n_ids = -1;
    if (check_cap && n > 0) {
        int need = -1;
        FUZZ_CHECK(bpe_encode(b, s, n, enc_flags, ids, 0, &need) == (need ? ERR_RANGE : 0),
                   "%d ids into none", need);
        if (need > 0) {
            int again = -1;
            FUZZ_CHECK(bpe_encode(b, s, n, enc_flags, ids, need - 1, &again) == ERR_RANGE &&
                           again == need,
                       "%d ids into %d: length reported %d", need, need - 1, again);
        }
    }
    int rc = bpe_encode(b, s, n, enc_flags, ids, cap, &n_ids);
    FUZZ_CHECK(rc == 0, "encode (flags %d) of %zu bytes: %d", enc_flags, n, rc);
    FUZZ_CHECK(n_ids >= 0 && n_ids <= cap, "%d ids for %zu bytes", n_ids, n);
    for (int i = 0; i < n_ids; i++)
        FUZZ_CHECK(ids[i] >= 0 && ids[i] < bpe_vocab_size(b), "id %d at %d", ids[i], i);
    size_t len = 0;
    rc = bpe_decode(b, ids, n_ids, dec_flags, out, g_out_cap, &len);
    FUZZ_CHECK(rc == 0, "decode of %d ids: %d", n_ids, rc);
    FUZZ_CHECK(len == want_len && !memcmp(out, want, len),
               "decode(encode(s)) differs (flags %d/%d): %zu bytes, expected %zu", enc_flags,
               dec_flags, len, want_len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const Bpe  *b = g_b;
    const char *s = (const char *)data;
    if (size > MAX_TEXT) return 0;
    for (int pre = BPE_PRE_GPT2; pre <= BPE_PRE_SMOLLM; pre++) {
        Split sp = {0};
        FUZZ_CHECK(bpe_pre_split((BpePre)pre, data, 0, size, on_piece, &sp) == 0 && sp.next == size,
                   "pre-tokenizer %d covered %zu of %zu bytes", pre, sp.next, size);
    }
    round_trip(b, s, size, 0, 0, true);
    round_trip(b, s, size, BPE_ENC_SPECIAL, BPE_DEC_SPECIAL, false);
    int n_ids = -1;
    int rc = bpe_encode(b, s, size, BPE_ENC_STRICT, g_ids, (int)BPE_ENCODE_MAX_IDS(size), &n_ids);
    FUZZ_CHECK((rc == 0) == (encodable(b, data, size, g_want) == size),
               "strict encode %d of %zu bytes", rc, size);
    /* The text as a user's message: the rendered conversation round-trips
     * with its special tokens. A NUL would end the C string early. */
    if (!bpe_chat_supported(b) || memchr(data, '\0', size)) return 0;
    char *content = xmalloc(size + 1);
    memcpy(content, data, size);
    content[size] = '\0';
    BpeChatMessage msgs[1] = {{"user", content}};
    size_t         need = 0, len = 0;
    rc = bpe_chat_format(b, msgs, 1, true, g_chat, 1, &need);
    FUZZ_CHECK(rc == ERR_RANGE && need > size, "chat of %zu bytes: rc %d, needs %zu", size, rc,
               need);
    FUZZ_CHECK(need < MAX_CHAT, "chat of %zu bytes needs %zu", size, need);
    FUZZ_CHECK(bpe_chat_format(b, msgs, 1, true, g_chat, need + 1, &len) == 0 && len == need,
               "chat format into %zu bytes", need + 1);
    round_trip(b, g_chat, len, BPE_ENC_SPECIAL, BPE_DEC_SPECIAL, false);
    free(content);
    return 0;
}

/* ---- seeds ---------------------------------------------------------------- */

static void seeds(const char *dir)
{
    /* Hand-picked: digits, contractions, whitespace runs, scripts, special
     * token text, invalid UTF-8, bytes SmolLM2 has no token for. */
    static const char *const texts[] = {
        "What is 12 + 30? The answer is 42.",
        "I'll can't   they're\n\n\tdone",
        "  leading and trailing spaces  ",
        "Привет мир 中文 日本語 한국어 عربى",
        "emoji \xf0\x9f\x98\x80 and accents caf\xc3\xa9",
        "<|im_start|>user\nhi<|im_end|>\n<|endoftext|><tool>",
        "invalid \xff\xfe \xc3\x28 \xe2\x82 \xed\xa0\x80 overlong \xc0\xaf",
        "control \x01\x04\x7f bytes",
        "1234567890 3.14159 -7e10",
    };
    char name[32];
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        snprintf(name, sizeof name, "text-%zu", i);
        fuzz_seed(dir, name, texts[i], strlen(texts[i]));
    }
    /* The strings of the reference fixture (transformers' own tokenizer). */
    json_t *o = json_load_file("tests/fixtures/tokenizer_smollm2.json", 0, NULL);
    json_t *cases = json_object_get(o, "cases");
    for (size_t i = 0; i < json_array_size(cases); i++) {
        json_t *t = json_object_get(json_array_get(cases, i), "text");
        if (!json_is_string(t)) continue;
        snprintf(name, sizeof name, "reference-%zu", i);
        fuzz_seed(dir, name, json_string_value(t), json_string_length(t));
    }
    json_decref(o);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_init("bpe", seeds);
    g_b = fuzz_bpe();
    g_ids = xmalloc(sizeof(int) * BPE_ENCODE_MAX_IDS(MAX_CHAT));
    g_out_cap = bpe_decode_max_bytes(g_b, (int)BPE_ENCODE_MAX_IDS(MAX_CHAT));
    g_out = xmalloc(g_out_cap);
    g_want = xmalloc(MAX_CHAT);
    g_chat = xmalloc(MAX_CHAT);
    return 0;
}
