#include "common/formats/bpe_chat.h"

#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/log.h"

/* Reads a Jinja string literal's text starting after its opening quote q at
 * s[i]; returns a malloc'd copy with \n, \t, \\ and \' decoded, or NULL if
 * the literal does not close. */
static char *chat_literal(const char *s, size_t i, char q, size_t *end)
{
    size_t n = strlen(s);
    char  *out = xmalloc(n - i + 1);
    size_t k = 0;
    for (; i < n && s[i] != q; i++) {
        if (s[i] == '\\' && i + 1 < n) {
            char e = s[++i];
            out[k++] = e == 'n' ? '\n' : e == 't' ? '\t' : e;
        } else {
            out[k++] = s[i];
        }
    }
    if (i >= n) {
        free(out);
        return NULL;
    }
    out[k] = '\0';
    *end = i;
    return out;
}

/* Recognises a ChatML template and the default system prompt it inserts: a
 * literal that opens with "<|im_start|>system" and a newline, inside an
 * {% if %} on the first message not being a system message, as SmolLM2's
 * and Qwen's templates have it. */
bool bpe_chat_parse(const char *tpl, char **default_system)
{
    *default_system = NULL;
    if (!tpl || !strstr(tpl, "<|im_start|>") || !strstr(tpl, "<|im_end|>")) return false;
    if (!strstr(tpl, "!= 'system'") && !strstr(tpl, "!= \"system\"")) return true;
    for (const char *p = tpl; (p = strstr(p, "<|im_start|>system")) != NULL; p++) {
        if (p == tpl || (p[-1] != '\'' && p[-1] != '"')) continue;
        size_t end;
        char  *lit = chat_literal(tpl, (size_t)(p - tpl), p[-1], &end);
        if (!lit) return true;
        const char *head = "<|im_start|>system\n";
        char       *stop = strstr(lit, "<|im_end|>");
        if (strncmp(lit, head, strlen(head)) == 0 && stop) {
            *stop = '\0';
            *default_system = xstrdup(lit + strlen(head));
        }
        free(lit);
        return true;
    }
    return true;
}

/* Appends n bytes to out if they fit, counting them either way. */
static void put(char *out, size_t cap, size_t *k, const char *s, size_t n)
{
    if (*k + n < cap) memcpy(out + *k, s, n);
    *k += n;
}

static void put_turn(char *out, size_t cap, size_t *k, const char *role, const char *content)
{
    put(out, cap, k, "<|im_start|>", 12);
    put(out, cap, k, role, strlen(role));
    put(out, cap, k, "\n", 1);
    put(out, cap, k, content, strlen(content));
    put(out, cap, k, "<|im_end|>\n", 11);
}

int bpe_chat_format(const Bpe *b, const BpeChatMessage *msgs, int n, bool add_generation_prompt,
                    char *out, size_t cap, size_t *len_out)
{
    CHECK(b && (msgs || n == 0) && n >= 0 && (out || cap == 0));
    if (len_out) *len_out = 0;
    if (cap > 0) out[0] = '\0';
    if (!bpe_chat_supported(b)) {
        log_error("bpe_chat_format: the vocabulary has no ChatML chat template");
        return ERR_UNSUPPORTED;
    }
    for (int i = 0; i < n; i++) {
        if (!msgs[i].role || !msgs[i].content) {
            log_error("bpe_chat_format: message %d has a NULL %s", i,
                      msgs[i].role ? "content" : "role");
            return ERR_ARG;
        }
    }
    size_t k = 0;
    if (n > 0 && bpe_chat_default_system(b) && strcmp(msgs[0].role, "system") != 0)
        put_turn(out, cap, &k, "system", bpe_chat_default_system(b));
    for (int i = 0; i < n; i++) put_turn(out, cap, &k, msgs[i].role, msgs[i].content);
    if (add_generation_prompt) put(out, cap, &k, "<|im_start|>assistant\n", 22);
    if (len_out) *len_out = k;
    if (k + 1 > cap) {
        log_error("bpe_chat_format: the conversation needs %zu bytes, capacity %zu", k + 1, cap);
        if (cap > 0) out[0] = '\0';
        return ERR_RANGE;
    }
    out[k] = '\0';
    return 0;
}
