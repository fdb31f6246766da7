#include "tests/test_list.h"
#include "common/tasks/chat_task.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/formats/bpe_chat.h"
#include "common/tasks/task.h"

void chat_task_problem(const ChatTaskConfig *cfg, uint64_t seed, uint64_t index, bool held_out,
                       ChatTaskProblem *out)
{
    /* The char task's problem, worded as a question: same operands, same split. */
    TaskConfig  tc = {.max_digits = cfg->max_digits, .eval_every = cfg->eval_every};
    TaskProblem p;
    task_problem(&tc, seed, index, held_out, &p);
    long long a = 0, b = 0;
    char      op = 0;
    CHECK(sscanf(p.prompt, "%lld%c%lld=", &a, &op, &b) == 3);
    snprintf(out->question, sizeof out->question,
             "What is %lld %c %lld? Reply with the number only.", a, op, b);
    snprintf(out->answer, sizeof out->answer, "%s", p.answer);
}

int chat_task_prompt_ids(const Bpe *b, const char *question, int *ids, int cap, int *n_ids)
{
    char           text[1024];
    size_t         len = 0;
    BpeChatMessage msg = {.role = "user", .content = question};
    int            rc = bpe_chat_format(b, &msg, 1, true, text, sizeof text, &len);
    if (rc) return rc;
    int flags = BPE_ENC_SPECIAL | (bpe_add_bos(b) ? BPE_ENC_BOS : 0);
    return bpe_encode(b, text, len, flags, ids, cap, n_ids);
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_alnum(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

bool chat_task_extract(const char *text, long long *value)
{
    bool      found = false, is_int = false;
    long long last = 0;
    size_t    n = strlen(text);
    for (size_t i = 0; i < n;) {
        if (!is_digit(text[i])) {
            i++;
            continue;
        }
        size_t    start = i;
        long long v = 0;
        int       nd = 0;
        for (;;) {
            for (; i < n && is_digit(text[i]); i++, nd++)
                v = nd < 18 ? v * 10 + (text[i] - '0') : v;
            /* ",ddd" not followed by another digit continues the number as
             * a thousands group; "1,2,3" stays a list of three numbers. */
            if (i + 3 < n && text[i] == ',' && is_digit(text[i + 1]) && is_digit(text[i + 2]) &&
                is_digit(text[i + 3]) && (i + 4 >= n || !is_digit(text[i + 4]))) {
                i++;
                continue;
            }
            break;
        }
        /* A '-' right before the digits is a sign unless it joins two words
         * or numbers ("45-33", "x-1" are not negative numbers). */
        if (start > 0 && text[start - 1] == '-' && (start < 2 || !is_alnum(text[start - 2])))
            v = -v;
        is_int = nd <= 18;
        /* A decimal fraction: "82.0" is still 82, "82.5" is not an integer. */
        if (i + 1 < n && text[i] == '.' && is_digit(text[i + 1])) {
            for (i++; i < n && is_digit(text[i]); i++)
                if (text[i] != '0') is_int = false;
        }
        last = v;
        found = true;
    }
    if (!found || !is_int) return false;
    *value = last;
    return true;
}

/* Just the number: whitespace, an optional '-', digits (with thousands
 * commas), an optional '.', whitespace. */
static bool is_bare_number(const char *s)
{
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r') s++;
    if (*s == '-') s++;
    if (!is_digit(*s)) return false;
    while (is_digit(*s) || (*s == ',' && is_digit(s[1]))) s++;
    if (*s == '.') s++;
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r') s++;
    return *s == '\0';
}

void chat_task_score(const char *completion, const char *answer, bool is_truncated,
                     ChatTaskScore *out)
{
    long long got = 0, want = 0;
    char     *end = NULL;
    want = strtoll(answer, &end, 10);
    bool answer_ok = end != answer && *end == '\0';
    out->correct = answer_ok && chat_task_extract(completion, &got) && got == want ? 1.0f : 0.0f;
    out->format = !is_truncated && is_bare_number(completion) ? 1.0f : 0.0f;
}

float chat_task_reward(const ChatTaskScore *s)
{
    return s->correct * (1.0f + CHAT_TASK_FORMAT_BONUS * s->format);
}

/* ---- Self-test -------------------------------------------------------- */

/* GPT-2's byte-to-code-point map: printable Latin-1 bytes stand for
 * themselves, the others take code points from 256 up, in byte order. */
static int st_byte_cp(int c)
{
    if ((c >= '!' && c <= '~') || (c >= 0xa1 && c <= 0xac) || (c >= 0xae && c <= 0xff)) return c;
    int k = 0;
    for (int d = 0; d < c; d++)
        if (!((d >= '!' && d <= '~') || (d >= 0xa1 && d <= 0xac) || (d >= 0xae && d <= 0xff))) k++;
    return 256 + k;
}

/* A hand-made ChatML vocabulary: three special tokens, the 256 byte tokens
 * and no merges, so every byte of the text becomes one id. */
static Bpe *st_tiny_bpe(void)
{
    enum { N = 3 + 256 };
    char       *toks[N];
    int32_t     types[N];
    const char *special[3] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
    for (int i = 0; i < 3; i++) {
        toks[i] = xstrdup(special[i]);
        types[i] = BPE_TOKEN_CONTROL;
    }
    for (int c = 0; c < 256; c++) {
        int  cp = st_byte_cp(c);
        char u[4];
        if (cp < 0x80) {
            u[0] = (char)cp;
            u[1] = 0;
        } else {
            u[0] = (char)(0xc0 | (cp >> 6));
            u[1] = (char)(0x80 | (cp & 0x3f));
            u[2] = 0;
        }
        toks[3 + c] = xstrdup(u);
        types[3 + c] = BPE_TOKEN_NORMAL;
    }
    const char *tpl = "{% for message in messages %}{% if loop.first and message['role'] != "
                      "'system' %}{{ '<|im_start|>system\nBe exact.<|im_end|>\n' }}{% endif "
                      "%}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
                      "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ "
                      "'<|im_start|>assistant\\n' }}{% endif %}";
    BpeVocab    v = {.n_tokens = N,
                     .tokens = (const char *const *)toks,
                     .token_types = types,
                     .pre = "smollm",
                     .bos_id = 0,
                     .eos_id = 0,
                     .unk_id = -1,
                     .pad_id = -1,
                     .chat_template = tpl};
    Bpe        *b = bpe_new(&v);
    for (int i = 0; i < N; i++) free(toks[i]);
    return b;
}

int chat_task_selftest(bool verbose)
{
    int fails = 0;
    /* The extractor on worked examples: text -> found, value. */
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
        if (verbose || !ok)
            printf("  extract %-24s -> %s %lld %s\n", ex[i].text, f ? "found" : "none", f ? v : 0,
                   ok ? "ok" : "WRONG");
        fails += !ok;
    }
    /* Scores: completion, answer -> correct, format. */
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
        if (verbose || !ok)
            printf("  score %-20s answer %-5s -> correct %.0f format %.0f reward %.1f %s\n",
                   sc[i].completion, sc[i].answer, s.correct, s.format, chat_task_reward(&s),
                   ok ? "ok" : "WRONG");
        fails += !ok;
    }
    /* Problems: deterministic, worded, the answer is the question's arithmetic,
     * and the held-out split is the char task's. */
    ChatTaskConfig  cfg = CHAT_TASK_DEFAULTS;
    ChatTaskProblem p, q;
    for (uint64_t i = 0; i < 500; i++) {
        for (int split = 0; split < 2; split++) {
            chat_task_problem(&cfg, 3, i, split, &p);
            chat_task_problem(&cfg, 3, i, split, &q);
            long long a, b, want;
            char      op;
            if (strcmp(p.question, q.question) ||
                sscanf(p.question, "What is %lld %c %lld?", &a, &op, &b) != 3 || a > 99 || b > 99 ||
                !strstr(p.question, "? Reply with the number only.")) {
                fails++;
                continue;
            }
            want = op == '+' ? a + b : a - b;
            if (want != strtoll(p.answer, NULL, 10)) fails++;
        }
    }
    /* Formatting with a hand-made vocabulary: the ids spell the ChatML text. */
    Bpe *b = st_tiny_bpe();
    if (!b) return fails + 1;
    chat_task_problem(&cfg, 1, 0, false, &p);
    int  ids[512], n = 0;
    char text[1024], want[1024];
    if (chat_task_prompt_ids(b, p.question, ids, 512, &n) != 0) fails++;
    snprintf(want, sizeof want,
             "<|im_start|>system\nBe exact.<|im_end|>\n<|im_start|>user\n%s<|im_end|>\n"
             "<|im_start|>assistant\n",
             p.question);
    size_t len = 0;
    if (bpe_decode(b, ids, n, BPE_DEC_SPECIAL, text, sizeof text, &len) || strcmp(text, want))
        fails++;
    if (ids[0] != bpe_token_id(b, "<|im_start|>", 12) || bpe_eot_id(b) != 2 ||
        n != (int)strlen(want) - 3 * 11 - 2 * 9) /* each special token is one id */
        fails++;
    /* Too small a buffer is an error, not a crash. */
    fileio_capture_begin();
    int   small = chat_task_prompt_ids(b, p.question, ids, 8, &n);
    char *log = fileio_capture_end(verbose);
    free(log);
    if (small != ERR_RANGE) fails++;
    if (verbose) printf("  chat_task: %s -> %s, %d prompt ids\n", p.question, p.answer, n);
    bpe_free(&b);
    return fails ? 1 : 0;
}
