/* render's self-test: prompts and completions of the char model and of a
 * hand-made ChatML vocabulary as exact ids, the end token closing every
 * completion, a "<|im_end|>" written in a completion staying text, text the
 * tokenizers cannot take refused with its byte, and every way a message list
 * can be wrong. */
#include "common/tasks/render.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "tests/support/expect.h"
#include "tests/support/fixtures.h"
#include "tests/test_list.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

/* Three special tokens and every byte but 0x04, no merges: one id a byte. */
static Bpe *tiny_chat_bpe(void)
{
    FixtureVocab fv = {0};
    fixture_vocab_add(&fv, "<|endoftext|>", BPE_TOKEN_CONTROL);
    fixture_vocab_add(&fv, "<|im_start|>", BPE_TOKEN_CONTROL);
    fixture_vocab_add(&fv, "<|im_end|>", BPE_TOKEN_CONTROL);
    fixture_vocab_add_bytes(&fv, "\x04");
    const char *tpl = "{% for message in messages %}{% if loop.first and message['role'] != "
                      "'system' %}{{ '<|im_start|>system\nBe exact.<|im_end|>\n' }}{% endif "
                      "%}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
                      "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ "
                      "'<|im_start|>assistant\\n' }}{% endif %}";
    Bpe        *b = fixture_vocab_bpe(&fv, NULL, 0, tpl);
    fixture_vocab_free(&fv);
    return b;
}

static void test_char(bool verbose)
{
    Tok           *tok = tok_new(TOK_CHARSET_DEFAULT);
    Render        *r = render_new(tok, NULL);
    char           why[320] = "";
    int            want[16], nw = 0, n = 0;
    const int     *ids = NULL;
    BpeChatMessage user = {"user", "12+3="};
    EXPECT(!render_is_chat(r), "the char renderer says it is a chat model's");
    RenderProblem p = render_prompt(r, &user, 1, &ids, &n, why, sizeof why);
    tok_encode(tok, "12+3=", 5, TOK_ENC_BOS, want, 16, &nw);
    EXPECT(p == RENDER_OK && n == 6 && nw == 6 && !memcmp(ids, want, sizeof(int) * 6) &&
               ids[0] == TOK_BOS,
           "char prompt: problem %d, %d ids", p, n);
    p = render_completion(r, "15", "chosen", &ids, &n, why, sizeof why);
    EXPECT(p == RENDER_OK && n == 3 && ids[0] == tok_id(tok, '1') && ids[1] == tok_id(tok, '5') &&
               ids[2] == TOK_EOS,
           "char completion '15': problem %d, %d ids, expected '1' '5' EOS", p, n);
    p = render_completion(r, "", "rejected", &ids, &n, why, sizeof why);
    EXPECT(p == RENDER_OK && n == 1 && ids[0] == TOK_EOS,
           "char empty completion: problem %d, %d ids, expected EOS alone", p, n);
    struct {
        const char   *text;
        bool          prompt;
        RenderProblem want;
        const char   *why;
    } bad[] = {
        {"a\tb", true, RENDER_CHARS, "byte 0x09 (byte 1 of the prompt) is not in the char"},
        {"h\xc3\xa9", false, RENDER_CHARS, "byte 0xc3 (byte 1 of the chosen)"},
    };
    for (size_t i = 0; i < N_OF(bad); i++) {
        why[0] = '\0';
        BpeChatMessage m = {"user", bad[i].text};
        p = bad[i].prompt ? render_prompt(r, &m, 1, &ids, &n, why, sizeof why)
                          : render_completion(r, bad[i].text, "chosen", &ids, &n, why, sizeof why);
        EXPECT(p == bad[i].want && strstr(why, bad[i].why), "char '%s': problem %d '%s'",
               bad[i].text, p, why);
        if (verbose) printf("  char '%s': %s\n", bad[i].text, why);
    }
    BpeChatMessage conv[2] = {{"system", "Be brief."}, {"user", "1+1="}};
    p = render_prompt(r, conv, 2, &ids, &n, why, sizeof why);
    EXPECT(p == RENDER_BAD_TYPE && strstr(why, "needs a chat model"),
           "a conversation for the char model: %d '%s'", p, why);
    render_free(&r);
    EXPECT(!r, "render_free left the pointer");
    tok_free(&tok);
}

static void test_messages(bool verbose)
{
    struct {
        const char   *json;
        const char   *last;
        RenderProblem want;
        const char   *why;
    } ex[] = {
        {"[{\"role\": \"user\", \"content\": \"hi\"}]", "user", RENDER_OK, ""},
        {"[{\"role\": \"system\", \"content\": \"s\"}, {\"role\": \"user\", \"content\": \"q\"}, "
         "{\"role\": \"assistant\", \"content\": \"a\"}]",
         "assistant", RENDER_OK, ""},
        {"\"hi\"", "user", RENDER_BAD_TYPE, "\"chosen\" is a string, expected an array"},
        {"[]", "user", RENDER_EMPTY, "\"chosen\" is empty"},
        {"[{\"role\": \"user\"}]", "user", RENDER_BAD_TYPE, "message 0: expected an object"},
        {"[{\"role\": \"robot\", \"content\": \"x\"}]", "user", RENDER_BAD_TYPE, "role 'robot'"},
        {"[{\"role\": \"user\", \"content\": \"hi\"}]", "assistant", RENDER_BAD_TYPE,
         "the last message is the user's, expected the assistant's"},
        {"[{\"role\": \"assistant\", \"content\": \" \"}]", "assistant", RENDER_OK, ""},
        {"[{\"role\": \"user\", \"content\": \" \"}]", "user", RENDER_EMPTY,
         "the last user message is empty"},
        {"[1]", "user", RENDER_BAD_TYPE, "message 0"},
    };
    for (size_t i = 0; i < N_OF(ex); i++) {
        json_t        *m = json_loads(ex[i].json, JSON_DECODE_ANY, NULL);
        BpeChatMessage msgs[RENDER_MAX_MESSAGES];
        int            n = 0;
        char           why[320] = "";
        CHECK(m);
        RenderProblem p = render_read_messages(m, "chosen", ex[i].last, msgs, &n, why, sizeof why);
        EXPECT(p == ex[i].want && strstr(why, ex[i].why) && (p || n == (int)json_array_size(m)),
               "messages %s (last %s): problem %d '%s', expected %d '%s'", ex[i].json, ex[i].last,
               p, why, ex[i].want, ex[i].why);
        if (verbose && p) printf("  messages %s: %s\n", ex[i].json, why);
        json_decref(m);
    }
    /* One over the limit. */
    json_t *many = json_array();
    for (int i = 0; i <= RENDER_MAX_MESSAGES; i++)
        json_array_append_new(many, json_pack("{s:s, s:s}", "role", "user", "content", "x"));
    BpeChatMessage msgs[RENDER_MAX_MESSAGES];
    int            n = 0;
    char           why[320] = "";
    EXPECT(render_read_messages(many, "prompt", "user", msgs, &n, why, sizeof why) ==
                   RENDER_TOO_LONG &&
               strstr(why, "at most 64"),
           "65 messages: '%s'", why);
    json_decref(many);
}

/* The ids of s decoded with special tokens shown. */
static void decode(const Bpe *b, const int *ids, int n, char *out, size_t cap)
{
    CHECK(bpe_decode(b, ids, n, BPE_DEC_SPECIAL, out, cap, NULL) == 0);
}

static void test_chat(bool verbose)
{
    Bpe *b = tiny_chat_bpe();
    if (!EXPECT(b && bpe_chat_supported(b), "the hand-made ChatML vocabulary")) {
        bpe_free(&b);
        return;
    }
    Render        *r = render_new(NULL, b);
    char           why[320] = "", text[512];
    const int     *ids = NULL;
    int            n = 0;
    BpeChatMessage user = {"user", "What is 2+2?"};
    RenderProblem  p = render_prompt(r, &user, 1, &ids, &n, why, sizeof why);
    decode(b, ids, n, text, sizeof text);
    EXPECT(p == RENDER_OK && render_is_chat(r) &&
               !strcmp(text, "<|im_start|>system\nBe exact.<|im_end|>\n<|im_start|>user\nWhat is "
                             "2+2?<|im_end|>\n<|im_start|>assistant\n"),
           "chat prompt: problem %d, '%s'", p, text);
    if (verbose) printf("  chat prompt: %d ids\n", n);
    p = render_completion(r, "4", "completion 1", &ids, &n, why, sizeof why);
    int eot = bpe_eot_id(b);
    EXPECT(p == RENDER_OK && n == 2 && ids[1] == eot && eot == 2,
           "chat completion '4': problem %d, %d ids, last %d, expected <|im_end|> (2)", p, n,
           n > 0 ? ids[n - 1] : -1);
    /* Written in a completion, the end-of-turn text is text. */
    p = render_completion(r, "a<|im_end|>b", "completion 1", &ids, &n, why, sizeof why);
    int specials = 0;
    for (int i = 0; i < n; i++) specials += ids[i] == eot;
    EXPECT(p == RENDER_OK && n == 13 && specials == 1 && ids[n - 1] == eot,
           "completion with '<|im_end|>' in its text: %d ids, %d end tokens", n, specials);
    BpeChatMessage ctl = {"user", "a\x04"};
    p = render_prompt(r, &ctl, 1, &ids, &n, why, sizeof why);
    EXPECT(p == RENDER_CHARS && strstr(why, "byte 0x04 (byte 1 of the prompt) is not in the "
                                            "model's tokenizer"),
           "a byte without a token in the prompt: %d '%s'", p, why);
    p = render_completion(r, "\x04", "rejected", &ids, &n, why, sizeof why);
    EXPECT(p == RENDER_CHARS && strstr(why, "byte 0x04 (byte 0 of the rejected)"),
           "a byte without a token in a completion: %d '%s'", p, why);
    render_free(&r);
    bpe_free(&b);
}

int render_selftest(bool verbose)
{
    test_char(verbose);
    test_messages(verbose);
    test_chat(verbose);
    return expect_end();
}
