#include "common/tasks/chat_task.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/formats/bpe_chat.h"
#include "common/tasks/task.h"

void chat_task_problem(const ChatTaskConfig *cfg, uint64_t seed, uint64_t index, bool held_out,
                       ChatTaskProblem *out)
{
    /* The char task's problem, worded as a question: same operands, same split. */
    TaskProblem p;
    task_problem(cfg, seed, index, held_out, &p);
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
