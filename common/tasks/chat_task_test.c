/* chat_task's self-test: the answer extractor and the scorer on worked
 * examples, the worded problems, and prompt formatting with a hand-made
 * ChatML vocabulary. */
#include "common/tasks/chat_task.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "tests/support/expect.h"
#include "tests/support/fixtures.h"
#include "tests/test_list.h"

/* A hand-made ChatML vocabulary: three special tokens, the 256 byte tokens
 * and no merges, so every byte of the text becomes one id. */
static Bpe *st_tiny_bpe(void)
{
    FixtureVocab fv = {0};
    fixture_vocab_add(&fv, "<|endoftext|>", BPE_TOKEN_CONTROL);
    fixture_vocab_add(&fv, "<|im_start|>", BPE_TOKEN_CONTROL);
    fixture_vocab_add(&fv, "<|im_end|>", BPE_TOKEN_CONTROL);
    fixture_vocab_add_bytes(&fv, "");
    const char *tpl = "{% for message in messages %}{% if loop.first and message['role'] != "
                      "'system' %}{{ '<|im_start|>system\nBe exact.<|im_end|>\n' }}{% endif "
                      "%}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
                      "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ "
                      "'<|im_start|>assistant\\n' }}{% endif %}";
    Bpe        *b = fixture_vocab_bpe(&fv, NULL, 0, tpl);
    fixture_vocab_free(&fv);
    return b;
}

/* The extractor on worked examples: text -> found, value. */
static void test_extract(bool verbose)
{
    struct {
        const char *text;
        bool        found;
        long long   value;
    } ex[] = {
        {"82", true, 82},
        {"The answer is 82.", true, 82},
        {"37 + 45 = 82", true, 82},
        {"-33", true, -33},
        {"12 - 45 = -33.", true, -33},
        {"It is 1,234.", true, 1234},
        {"1,2,3", true, 3},
        {"45-33", true, 33},
        {"82.0", true, 82},
        {"about 82.5", false, 0},
        {"no number here", false, 0},
        {"", false, 0},
        {"  7\n", true, 7},
        {"x-1", true, 1},
        {"The sum is **82**", true, 82},
        {"1000000", true, 1000000},
        {"99999999999999999999", false, 0},
        {"answer: -0", true, 0},
    };
    for (size_t i = 0; i < sizeof ex / sizeof ex[0]; i++) {
        long long v = 0;
        bool      f = chat_task_extract(ex[i].text, &v);
        bool      ok = f == ex[i].found && (!f || v == ex[i].value);
        if (verbose)
            printf("  extract %-24s -> %s %lld %s\n", ex[i].text, f ? "found" : "none", f ? v : 0,
                   ok ? "ok" : "WRONG");
        EXPECT(ok, "chat_task_extract('%s'): %s %lld, expected %s %lld", ex[i].text,
               f ? "found" : "none", f ? v : 0, ex[i].found ? "found" : "none", ex[i].value);
    }
}

/* Scores: completion, answer -> correct, format. */
static void test_score(bool verbose)
{
    struct {
        const char *completion, *answer;
        float       correct, format;
        bool        is_truncated;
    } sc[] = {
        {"82", "82", 1, 0, true},
        {"82 + 1 = 83 and then", "82", 0, 0, true},
        {"The answer is 82", "82", 1, 0, true},
        {"82", "82", 1, 1, false},
        {"82.", "82", 1, 1, false},
        {" 82 ", "82", 1, 1, false},
        {"The answer is 82.", "82", 1, 0, false},
        {"83", "82", 0, 1, false},
        {"-33", "-33", 1, 1, false},
        {"33", "-33", 0, 1, false},
        {"", "82", 0, 0, false},
        {"1,234", "1234", 1, 1, false},
        {"82 apples", "82", 1, 0, false},
    };
    for (size_t i = 0; i < sizeof sc / sizeof sc[0]; i++) {
        ChatTaskScore s;
        chat_task_score(sc[i].completion, sc[i].answer, sc[i].is_truncated, &s);
        bool ok = s.correct == sc[i].correct && s.format == sc[i].format;
        if (verbose)
            printf("  score %-20s answer %-5s -> correct %.0f format %.0f reward %.1f %s\n",
                   sc[i].completion, sc[i].answer, s.correct, s.format, chat_task_reward(&s),
                   ok ? "ok" : "WRONG");
        EXPECT(ok, "chat_task_score('%s', '%s'%s): correct %.0f format %.0f, expected %.0f %.0f",
               sc[i].completion, sc[i].answer, sc[i].is_truncated ? ", truncated" : "", s.correct,
               s.format, sc[i].correct, sc[i].format);
    }
}

/* Problems: deterministic, worded, the answer is the question's arithmetic,
 * and the held-out split is the char task's. */
static void test_problems(void)
{
    ChatTaskConfig  cfg = CHAT_TASK_DEFAULTS;
    ChatTaskProblem p, q;
    for (uint64_t i = 0; i < 500; i++) {
        for (int split = 0; split < 2; split++) {
            chat_task_problem(&cfg, 3, i, split, &p);
            chat_task_problem(&cfg, 3, i, split, &q);
            long long a, b, want;
            char      op;
            if (!EXPECT(!strcmp(p.question, q.question) &&
                            sscanf(p.question, "What is %lld %c %lld?", &a, &op, &b) == 3 &&
                            a <= 99 && b <= 99 &&
                            strstr(p.question, "? Reply with the number only."),
                        "problem %llu split %d: '%s' then '%s', expected the same worded question "
                        "with operands of at most 2 digits",
                        (unsigned long long)i, split, p.question, q.question))
                continue;
            want = op == '+' ? a + b : a - b;
            EXPECT(want == strtoll(p.answer, NULL, 10), "'%s': answer %s, expected %lld",
                   p.question, p.answer, want);
        }
    }
}

/* Formatting with a hand-made vocabulary: the ids spell the ChatML text. */
static void test_prompt_ids(bool verbose)
{
    Bpe *b = st_tiny_bpe();
    if (!EXPECT(b != NULL, "bpe_new refused the hand-made ChatML vocabulary")) return;
    ChatTaskConfig  cfg = CHAT_TASK_DEFAULTS;
    ChatTaskProblem p;
    chat_task_problem(&cfg, 1, 0, false, &p);
    int  ids[512], n = 0;
    char text[1024], want[1024];
    int  rc = chat_task_prompt_ids(b, p.question, ids, 512, &n);
    EXPECT(rc == 0, "chat_task_prompt_ids: %s, expected ok", err_str(rc));
    snprintf(want, sizeof want,
             "<|im_start|>system\nBe exact.<|im_end|>\n<|im_start|>user\n%s<|im_end|>\n"
             "<|im_start|>assistant\n",
             p.question);
    size_t len = 0;
    rc = bpe_decode(b, ids, n, BPE_DEC_SPECIAL, text, sizeof text, &len);
    EXPECT(rc == 0 && !strcmp(text, want), "the prompt ids decode to '%s' (%s), expected '%s'",
           rc ? "" : text, err_str(rc), want);
    /* Each special token is one id. */
    int want_n = (int)strlen(want) - 3 * 11 - 2 * 9;
    EXPECT(ids[0] == bpe_token_id(b, "<|im_start|>", 12) && bpe_eot_id(b) == 2 && n == want_n,
           "first id %d, end-of-turn id %d, %d ids; expected <|im_start|>, 2, %d", ids[0],
           bpe_eot_id(b), n, want_n);
    /* Too small a buffer is an error, not a crash. */
    fileio_capture_begin();
    int   small = chat_task_prompt_ids(b, p.question, ids, 8, &n);
    char *log = fileio_capture_end(verbose);
    free(log);
    EXPECT(small == ERR_RANGE, "chat_task_prompt_ids into 8 ids: %d (%s), expected ERR_RANGE",
           small, err_str(small));
    if (verbose) printf("  chat_task: %s -> %s, %d prompt ids\n", p.question, p.answer, n);
    bpe_free(&b);
}

int chat_task_selftest(bool verbose)
{
    test_extract(verbose);
    test_score(verbose);
    test_problems();
    test_prompt_ids(verbose);
    return expect_end();
}
