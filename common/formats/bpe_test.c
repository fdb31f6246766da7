/* The byte-level BPE tokenizer's self-test: pre-tokenizer splits written out
 * by hand from the regex, merges by rank, special tokens, byte fallback,
 * decoding, random round trips, the chat template, a megabyte of text for
 * speed, vocabularies missing bytes, malformed vocabularies and the GGUF
 * adapter on hand-written files. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/formats/bpe.h"
#include "common/formats/bpe_chat.h"
#include "common/formats/bpe_gguf.h"
#include "common/formats/bpe_pre.h"
#include "common/formats/gguf.h"
#include "common/formats/gguf_buf.h"
#include "tests/support/expect.h"
#include "tests/support/fixtures.h"
#include "tests/test_list.h"

/* Joins the pieces of a split with '|' into a buffer. */
typedef struct {
    char  *out;
    size_t cap, k;
} Pieces;

static int add_piece(void *ctx, const uint8_t *s, size_t len, size_t at)
{
    Pieces *p = ctx;
    p->k += (size_t)snprintf(p->out + p->k, p->cap - p->k, "%s%.*s", p->k ? "|" : "", (int)len,
                             (const char *)s);
    return 0;
}

/* The pre-tokenizer's pieces of s joined by '|'. */
static void st_pieces(BpePre pre, const char *s, char *out, size_t cap)
{
    Pieces p = {out, cap, 0};
    out[0] = '\0';
    bpe_pre_split(pre, (const uint8_t *)s, 0, strlen(s), add_piece, &p);
}

/* A tiny vocabulary: 4 special tokens, the 256 byte tokens (less the bytes
 * in drop, which stay out as SmolLM2's missing bytes do) and a few merges. */
static Bpe *st_build(FixtureVocab *sv, const char *drop, const char *tpl, const char *const *merges,
                     int n_merges)
{
    memset(sv, 0, sizeof *sv);
    fixture_vocab_add(sv, "<|endoftext|>", BPE_TOKEN_CONTROL);
    fixture_vocab_add(sv, "<|im_start|>", BPE_TOKEN_CONTROL);
    fixture_vocab_add(sv, "<|im_end|>", BPE_TOKEN_CONTROL);
    fixture_vocab_add(sv, "<tool>", BPE_TOKEN_USER_DEFINED);
    fixture_vocab_add_bytes(sv, drop);
    const char *merged[] = {"Ġt", "he", "Ġthe", "bc", "ab", "ll", "Ġ3", "aa", "aaaa"};
    for (size_t i = 0; i < sizeof merged / sizeof merged[0]; i++)
        fixture_vocab_add(sv, merged[i], BPE_TOKEN_NORMAL);
    return fixture_vocab_bpe(sv, merges, n_merges, tpl);
}

/* Writes sv's vocabulary with merges as a GGUF file (no tensors) declaring
 * tokenizer model, with n_types token types; returns 0 or -1. */
static int st_write_gguf(const char *path, const FixtureVocab *sv, const char *const *merges,
                         int n_merges, const char *model, int n_types)
{
    GgufBuf b = {0};
    gguf_buf_put(&b, "GGUF", 4);
    gguf_buf_u32(&b, 3);
    gguf_buf_u64(&b, 0);
    gguf_buf_u64(&b, 7);
    gguf_buf_kv_str(&b, "tokenizer.ggml.model", model);
    gguf_buf_kv_str(&b, "tokenizer.ggml.pre", "smollm");
    gguf_buf_kv_array(&b, "tokenizer.ggml.tokens", GGUF_VAL_STRING, (uint64_t)sv->n);
    for (int i = 0; i < sv->n; i++) gguf_buf_str(&b, sv->tok[i]);
    gguf_buf_kv_array(&b, "tokenizer.ggml.merges", GGUF_VAL_STRING, (uint64_t)n_merges);
    for (int i = 0; i < n_merges; i++) gguf_buf_str(&b, merges[i]);
    gguf_buf_kv_array(&b, "tokenizer.ggml.token_type", GGUF_VAL_INT32, (uint64_t)n_types);
    for (int i = 0; i < n_types; i++) gguf_buf_u32(&b, (uint32_t)sv->type[i % sv->n]);
    gguf_buf_kv_u32(&b, "tokenizer.ggml.eos_token_id", 0);
    gguf_buf_kv_str(&b, "tokenizer.chat_template",
                    "{{ '<|im_start|>' + message['role'] }}<|im_end|>");
    int rc = fixture_write_file(path, b.p, b.n) == 0 ? 0 : -1;
    gguf_buf_free(&b);
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
    char buf[1024];

    /* Pre-tokenizer splits, written out by hand from the regex. */
    const char *text = "Hello world's  x\n\ny 37+45=82 ¹²\tend  ";
    st_pieces(BPE_PRE_SMOLLM, text, buf, sizeof buf);
    EXPECT(
        strcmp(buf, "Hello| world|'s| | x|\n|\n|y| |3|7|+|4|5|=|8|2| |¹|²|\t|end|  ") == 0, "%s",
        "strcmp(buf, \"Hello| world|'s| | x|\\n|\\n|y| |3|7|+|4|5|=|8|2| |¹|²|\\t|end| \") == 0");
    st_pieces(BPE_PRE_GPT2, text, buf, sizeof buf);
    EXPECT(strcmp(buf, "Hello| world|'s| | x|\n|\n|y| 37|+|45|=|82| ¹²|\t|end|  ") == 0, "%s",
           "strcmp(buf, \"Hello| world|'s| | x|\\n|\\n|y| 37|+|45|=|82| ¹²|\\t|end| \") == 0");
    st_pieces(BPE_PRE_GPT2, "I'll can't 'RE x'x  \xff\xfe!? Привет 中文", buf, sizeof buf);
    EXPECT(strcmp(buf, "I|'ll| can|'t| '|RE| x|'|x| | \xff\xfe!?| Привет| 中文") == 0, "%s",
           "strcmp(buf, \"I|'ll| can|'t| '|RE| x|'|x| | \\xff\\xfe!?| Привет| 中文\") == 0");
    st_pieces(BPE_PRE_GPT2, "a \u00a0b\u3000\u3000c", buf, sizeof buf);
    EXPECT(strcmp(buf, "a| |\u00a0|b|\u3000|\u3000|c") == 0, "%s",
           "strcmp(buf, \"a| |\\u00a0|b|\\u3000|\\u3000|c\") == 0");

    const char *const merges[] = {"Ġ t", "h e", "Ġt he", "b c",  "a b",
                                  "l l", "Ġ 3", "a a",   "aa aa"};
    const int         n_merges = (int)(sizeof merges / sizeof merges[0]);
    const char  *tpl = "{% for message in messages %}{% if loop.first and messages[0]['role'] != "
                       "'system' %}{{ '<|im_start|>system\nYou are a test.<|im_end|>\n' }}{% endif "
                       "%}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
                       "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ "
                       "'<|im_start|>assistant\\n' }}{% endif %}";
    FixtureVocab sv;
    Bpe         *b = st_build(&sv, "", tpl, merges, n_merges);
    CHECK(b);

    /* Merges by rank: "b c" (rank 3) beats "a b" (rank 4), so "abc" is a|bc. */
    EXPECT(st_encodes_as(b, "abc", 0, "a|bc"), "%s", "st_encodes_as(b, \"abc\", 0, \"a|bc\")");
    EXPECT(st_encodes_as(b, "ab", 0, "ab"), "%s", "st_encodes_as(b, \"ab\", 0, \"ab\")");
    EXPECT(st_encodes_as(b, " the", 0, "Ġthe"), "%s", "st_encodes_as(b, \" the\", 0, \"Ġthe\")");
    EXPECT(st_encodes_as(b, "the other", 0, "t|he|Ġ|o|t|he|r"), "%s",
           "st_encodes_as(b, \"the other\", 0, \"t|he|Ġ|o|t|he|r\")");
    /* Equal ranks merge leftmost first: aaaaa is aaaa|a, not a|aaaa. */
    EXPECT(st_encodes_as(b, "aaaaa", 0, "aaaa|a"), "%s",
           "st_encodes_as(b, \"aaaaa\", 0, \"aaaa|a\")");
    EXPECT(st_encodes_as(b, "aaa", 0, "aa|a"), "%s", "st_encodes_as(b, \"aaa\", 0, \"aa|a\")");
    /* smollm isolates digits, so the "Ġ 3" merge never applies. */
    EXPECT(st_encodes_as(b, "x 3", 0, "x|Ġ|3"), "%s", "st_encodes_as(b, \"x 3\", 0, \"x|Ġ|3\")");
    /* Special tokens: CONTROL ones only with the flag, USER_DEFINED always. */
    EXPECT(st_encodes_as(b, "<|im_start|>the<tool>", BPE_ENC_SPECIAL, "<|im_start|>|t|he|<tool>"),
           "%s",
           "st_encodes_as(b, \"<|im_start|>the<tool>\", BPE_ENC_SPECIAL, "
           "\"<|im_start|>|t|he|<tool>\")");
    EXPECT(st_encodes_as(b, "<|im_start|>", 0, "<|||i|m|_|s|t|a|r|t|||>"), "%s",
           "st_encodes_as(b, \"<|im_start|>\", 0, \"<|||i|m|_|s|t|a|r|t|||>\")");
    EXPECT(st_encodes_as(b, "a<tool>b", 0, "a|<tool>|b"), "%s",
           "st_encodes_as(b, \"a<tool>b\", 0, \"a|<tool>|b\")");
    EXPECT(st_encodes_as(b, "ab", BPE_ENC_BOS, "<|endoftext|>|ab"), "%s",
           "st_encodes_as(b, \"ab\", BPE_ENC_BOS, \"<|endoftext|>|ab\")");
    /* Byte fallback: bytes with no merge and invalid UTF-8 are byte tokens. */
    EXPECT(st_encodes_as(b, "\xff\xc3", 0, "ÿ|Ã"), "%s",
           "st_encodes_as(b, \"\\xff\\xc3\", 0, \"ÿ|Ã\")");
    EXPECT(bpe_eot_id(b) == 2 && bpe_token_id(b, "Ġthe", 5) >= 0, "%s",
           "bpe_eot_id(b) == 2 && bpe_token_id(b, \"Ġthe\", 5) >= 0");
    EXPECT(bpe_token_id(b, "nope", 4) == ERR_NOTFOUND, "%s",
           "bpe_token_id(b, \"nope\", 4) == ERR_NOTFOUND");

    /* Decoding: specials skipped unless asked for; byte 0 decodes to NUL. */
    int    ids[] = {1, bpe_token_id(b, "Ġthe", 5), 2, bpe_token_id(b, "Ā", 2)};
    size_t len;
    EXPECT(bpe_decode(b, ids, 4, 0, buf, sizeof buf, &len) == 0 && len == 5 &&
               memcmp(buf, " the\0", 5) == 0,
           "%s",
           "bpe_decode(b, ids, 4, 0, buf, sizeof buf, &len) == 0 && len == 5 && memcmp(buf, \" "
           "the\\0\", 5) == 0");
    EXPECT(bpe_decode(b, ids, 3, BPE_DEC_SPECIAL, buf, sizeof buf, &len) == 0 &&
               strcmp(buf, "<|im_start|> the<|im_end|>") == 0,
           "%s",
           "bpe_decode(b, ids, 3, BPE_DEC_SPECIAL, buf, sizeof buf, &len) == 0 && strcmp(buf, "
           "\"<|im_start|> the<|im_end|>\") == 0");
    EXPECT(bpe_decode(b, ids, 3, BPE_DEC_SPECIAL, buf, 10, &len) == ERR_RANGE && buf[0] == 0, "%s",
           "bpe_decode(b, ids, 3, BPE_DEC_SPECIAL, buf, 10, &len) == ERR_RANGE && buf[0] == 0");
    int bad = 999;
    EXPECT(bpe_decode(b, &bad, 1, 0, buf, sizeof buf, &len) == ERR_RANGE, "%s",
           "bpe_decode(b, &bad, 1, 0, buf, sizeof buf, &len) == ERR_RANGE");

    /* Capacity: too small is ERR_RANGE with the needed count reported. */
    int n = 0;
    EXPECT(bpe_encode(b, "abc abc", 7, 0, ids, 2, &n) == ERR_RANGE && n == 5, "%s",
           "bpe_encode(b, \"abc abc\", 7, 0, ids, 2, &n) == ERR_RANGE && n == 5");

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
        EXPECT(st_round_trip(b, s, sl), "%s", "st_round_trip(b, s, sl)");
    }
    const char *all = "<|im_start|>user\nHi there 12 é 中 🙂<|im_end|>\n";
    EXPECT(st_round_trip(b, all, strlen(all)), "%s", "st_round_trip(b, all, strlen(all))");

    /* Chat template: the default system prompt and the generation prompt. */
    EXPECT(bpe_chat_supported(b) && strcmp(bpe_chat_default_system(b), "You are a test.") == 0,
           "%s",
           "bpe_chat_supported(b) && strcmp(bpe_chat_default_system(b), \"You are a test.\") == 0");
    BpeChatMessage msgs[] = {{"user", "Hi"}, {"assistant", "Hello!"}, {"user", "2+2?"}};
    EXPECT(bpe_chat_format(b, msgs, 3, true, buf, sizeof buf, &len) == 0, "%s",
           "bpe_chat_format(b, msgs, 3, true, buf, sizeof buf, &len) == 0");
    const char *want =
        "<|im_start|>system\nYou are a test.<|im_end|>\n<|im_start|>user\nHi<|im_end|>"
        "\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
        "<|im_start|>assistant\n";
    EXPECT(strcmp(buf, want) == 0 && len == strlen(want), "%s",
           "strcmp(buf, want) == 0 && len == strlen(want)");
    BpeChatMessage sys[] = {{"system", "Be brief."}, {"user", "Hi"}};
    EXPECT(
        bpe_chat_format(b, sys, 2, false, buf, sizeof buf, &len) == 0 &&
            strcmp(buf,
                   "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n") ==
                0,
        "%s",
        "bpe_chat_format(b, sys, 2, false, buf, sizeof buf, &len) == 0 && strcmp(buf, "
        "\"<|im_start|>system\\nBe brief.<|im_end|>\\n<|im_start|>user\\nHi<|im_end|>\\n\") == 0");
    EXPECT(bpe_chat_format(b, sys, 2, false, buf, 20, &len) == ERR_RANGE && len == 69, "%s",
           "bpe_chat_format(b, sys, 2, false, buf, 20, &len) == ERR_RANGE && len == 69");

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
    EXPECT(bpe_encode(b, big, big_len, 0, big_ids, (int)BPE_ENCODE_MAX_IDS(big_len), &n) == 0, "%s",
           "bpe_encode(b, big, big_len, 0, big_ids, (int)BPE_ENCODE_MAX_IDS(big_len), &n) == 0");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double dt = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    if (verbose) printf("bpe: encode %.1f MB/s on the tiny vocabulary (%d ids)\n", 1.0 / dt, n);
    free(big);
    free(big_ids);
    bpe_free(&b);
    fixture_vocab_free(&sv);

    /* A vocabulary missing bytes 0x04 and 'x' drops them (both references
     * do); inside one piece the neighbours then merge ("a b"), across pieces
     * they cannot. Strict mode refuses such bytes instead. */
    b = st_build(&sv, "\x04x", NULL, merges, n_merges);
    CHECK(b);
    EXPECT(!bpe_byte_encodable(b, 0x04) && bpe_byte_encodable(b, 0x05), "%s",
           "!bpe_byte_encodable(b, 0x04) && bpe_byte_encodable(b, 0x05)");
    EXPECT(st_encodes_as(b, "axb", 0, "ab"), "%s", "st_encodes_as(b, \"axb\", 0, \"ab\")");
    EXPECT(st_encodes_as(b, "a\x04z", 0, "a|z"), "%s", "st_encodes_as(b, \"a\\x04z\", 0, \"a|z\")");
    EXPECT(bpe_encode(b, "a\x04z", 3, BPE_ENC_STRICT, ids, 4, &n) == ERR_RANGE, "%s",
           "bpe_encode(b, \"a\\x04z\", 3, BPE_ENC_STRICT, ids, 4, &n) == ERR_RANGE");
    EXPECT(!bpe_chat_supported(b) && bpe_eot_id(b) == 0, "%s",
           "!bpe_chat_supported(b) && bpe_eot_id(b) == 0");
    EXPECT(bpe_chat_format(b, msgs, 1, true, buf, sizeof buf, &len) == ERR_UNSUPPORTED, "%s",
           "bpe_chat_format(b, msgs, 1, true, buf, sizeof buf, &len) == ERR_UNSUPPORTED");
    bpe_free(&b);
    fixture_vocab_free(&sv);

    /* Malformed vocabularies are refused. */
    const char *const bad_merge[] = {"a b", "x zz"};
    EXPECT(st_build(&sv, "", NULL, bad_merge, 2) == NULL, "%s",
           "st_build(&sv, \"\", NULL, bad_merge, 2) == NULL");
    fixture_vocab_free(&sv);
    const char *const two_spaces[] = {"a b c"};
    EXPECT(st_build(&sv, "", NULL, two_spaces, 1) == NULL, "%s",
           "st_build(&sv, \"\", NULL, two_spaces, 1) == NULL");
    fixture_vocab_free(&sv);
    /* The GGUF adapter, on hand-written files. */
    char path[] = "/tmp/bpe_selftest_XXXXXX";
    int  fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    b = st_build(&sv, "", NULL, merges, n_merges);
    CHECK(b);
    bpe_free(&b);
    EXPECT(st_write_gguf(path, &sv, merges, n_merges, "gpt2", sv.n) == 0, "%s",
           "st_write_gguf(path, &sv, merges, n_merges, \"gpt2\", sv.n) == 0");
    EXPECT(bpe_load(path, &b) == 0 && b && bpe_vocab_size(b) == sv.n, "%s",
           "bpe_load(path, &b) == 0 && b && bpe_vocab_size(b) == sv.n");
    if (b) {
        EXPECT(st_encodes_as(b, "<|im_start|>the abc", BPE_ENC_SPECIAL, "<|im_start|>|t|he|Ġ|a|bc"),
               "%s",
               "st_encodes_as(b, \"<|im_start|>the abc\", BPE_ENC_SPECIAL, "
               "\"<|im_start|>|t|he|Ġ|a|bc\")");
        EXPECT(bpe_eos_id(b) == 0 && bpe_bos_id(b) == -1 && !bpe_add_bos(b), "%s",
               "bpe_eos_id(b) == 0 && bpe_bos_id(b) == -1 && !bpe_add_bos(b)");
        EXPECT(bpe_chat_supported(b) && bpe_eot_id(b) == 2 && !bpe_chat_default_system(b), "%s",
               "bpe_chat_supported(b) && bpe_eot_id(b) == 2 && !bpe_chat_default_system(b)");
        EXPECT(strcmp(bpe_pre_name(b), "smollm") == 0, "%s",
               "strcmp(bpe_pre_name(b), \"smollm\") == 0");
    }
    bpe_free(&b);
    EXPECT(st_write_gguf(path, &sv, merges, n_merges, "llama", sv.n) == 0, "%s",
           "st_write_gguf(path, &sv, merges, n_merges, \"llama\", sv.n) == 0");
    EXPECT(bpe_load(path, &b) == ERR_UNSUPPORTED && !b, "%s",
           "bpe_load(path, &b) == ERR_UNSUPPORTED && !b");
    EXPECT(st_write_gguf(path, &sv, merges, n_merges, "gpt2", sv.n - 1) == 0, "%s",
           "st_write_gguf(path, &sv, merges, n_merges, \"gpt2\", sv.n - 1) == 0");
    EXPECT(bpe_load(path, &b) == ERR_MISMATCH && !b, "%s",
           "bpe_load(path, &b) == ERR_MISMATCH && !b");
    EXPECT(st_write_gguf(path, &sv, bad_merge, 2, "gpt2", sv.n) == 0, "%s",
           "st_write_gguf(path, &sv, bad_merge, 2, \"gpt2\", sv.n) == 0");
    EXPECT(bpe_load(path, &b) == ERR_FORMAT && !b, "%s", "bpe_load(path, &b) == ERR_FORMAT && !b");
    unlink(path);
    fixture_vocab_free(&sv);
    const char *toks[] = {"a", "b"};
    BpeVocab    v = {.n_tokens = 2,
                     .tokens = toks,
                     .pre = "llama3",
                     .bos_id = -1,
                     .eos_id = -1,
                     .unk_id = -1,
                     .pad_id = -1};
    EXPECT(bpe_new(&v) == NULL, "%s", "bpe_new(&v) == NULL");
    v.pre = "gpt2";
    v.eos_id = 2;
    EXPECT(bpe_new(&v) == NULL, "%s", "bpe_new(&v) == NULL");
    v.eos_id = 1;
    const char *bad_utf8[] = {"a", "\xc3"};
    v.tokens = bad_utf8;
    EXPECT(bpe_new(&v) == NULL, "%s", "bpe_new(&v) == NULL");
    v.tokens = toks;
    b = bpe_new(&v);
    EXPECT(b && bpe_vocab_size(b) == 2 && bpe_eot_id(b) == 1, "%s",
           "b && bpe_vocab_size(b) == 2 && bpe_eot_id(b) == 1");
    /* Nothing but 'a' and 'b' is encodable here. */
    EXPECT(b && bpe_encode(b, "abc", 3, 0, ids, 4, &n) == 0 && n == 2, "%s",
           "b && bpe_encode(b, \"abc\", 3, 0, ids, 4, &n) == 0 && n == 2");
    bpe_free(&b);
    bpe_free(&b);

    return expect_end();
}
