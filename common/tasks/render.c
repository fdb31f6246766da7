#include "common/tasks/render.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/tasks/jsonl.h"

struct Render {
    const Tok *tok; /* one of the two */
    const Bpe *bpe;
    int       *ids; /* (ids_cap) the last result */
    int        ids_cap;
    char      *chat; /* (chat_cap) the rendered conversation */
    size_t     chat_cap;
};

Render *render_new(const Tok *tok, const Bpe *bpe)
{
    CHECK(!tok != !bpe);
    CHECK(!bpe || bpe_chat_supported(bpe));
    Render *r = xcalloc(1, sizeof *r);
    r->tok = tok;
    r->bpe = bpe;
    return r;
}

void render_free(Render **rp)
{
    if (!rp || !*rp) return;
    free((*rp)->ids);
    free((*rp)->chat);
    free(*rp);
    *rp = NULL;
}

bool render_is_chat(const Render *r)
{
    return r->bpe != NULL;
}

static int *ids_scratch(Render *r, size_t need)
{
    CHECK(need < (size_t)1 << 30);
    if ((int)need > r->ids_cap) {
        r->ids_cap = (int)need;
        r->ids = xrealloc(r->ids, sizeof(int) * need);
    }
    return r->ids;
}

RenderProblem render_read_messages(const json_t *m, const char *name, const char *last_role,
                                   BpeChatMessage *msgs, int *n_msgs, char *why, size_t wl)
{
    if (!json_is_array(m)) {
        snprintf(why, wl, "\"%s\" is %s, expected an array", name, jsonl_type_name(m));
        return RENDER_BAD_TYPE;
    }
    size_t n = json_array_size(m);
    if (n == 0) {
        snprintf(why, wl, "\"%s\" is empty", name);
        return RENDER_EMPTY;
    }
    if (n > RENDER_MAX_MESSAGES) {
        snprintf(why, wl, "\"%s\": %zu messages, at most %d", name, n, RENDER_MAX_MESSAGES);
        return RENDER_TOO_LONG;
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(m, i);
        const json_t *role = json_object_get(e, "role"), *content = json_object_get(e, "content");
        if (!json_is_object(e) || !json_is_string(role) || !json_is_string(content)) {
            snprintf(why, wl,
                     "message %zu: expected an object with string \"role\" and \"content\"", i);
            return RENDER_BAD_TYPE;
        }
        const char *rl = json_string_value(role);
        if (strcmp(rl, "system") && strcmp(rl, "user") && strcmp(rl, "assistant")) {
            snprintf(why, wl, "message %zu: role '%.20s', expected system, user or assistant", i,
                     rl);
            return RENDER_BAD_TYPE;
        }
        msgs[i] = (BpeChatMessage){.role = rl, .content = json_string_value(content)};
    }
    if (strcmp(msgs[n - 1].role, last_role)) {
        snprintf(why, wl, "the last message is the %s's, expected the %s's", msgs[n - 1].role,
                 last_role);
        return RENDER_BAD_TYPE;
    }
    if (!strcmp(last_role, "user") && jsonl_is_blank(msgs[n - 1].content)) {
        snprintf(why, wl, "the last %s message is empty", last_role);
        return RENDER_EMPTY;
    }
    *n_msgs = (int)n;
    return RENDER_OK;
}

/* Every byte of text must have a token: the char tokenizer's charset, or a
 * byte token of the BPE (which bpe_encode would otherwise drop). */
static RenderProblem check_chars(const Render *r, const char *text, const char *what, char *why,
                                 size_t wl)
{
    for (size_t i = 0; text[i]; i++) {
        unsigned char c = (unsigned char)text[i];
        bool          ok = r->tok ? tok_id(r->tok, (char)c) >= 0 : bpe_byte_encodable(r->bpe, c);
        if (ok) continue;
        const char *kind = r->tok ? "char tokenizer" : "model's tokenizer";
        if (c >= 0x20 && c < 0x7f)
            snprintf(why, wl, "'%c' (byte %zu of the %s) is not in the %s", c, i, what, kind);
        else
            snprintf(why, wl, "byte 0x%02x (byte %zu of the %s) is not in the %s", c, i, what,
                     kind);
        return RENDER_CHARS;
    }
    return RENDER_OK;
}

RenderProblem render_prompt(Render *r, const BpeChatMessage *msgs, int n, const int **ids,
                            int *n_ids, char *why, size_t wl)
{
    CHECK(n >= 1 && n <= RENDER_MAX_MESSAGES);
    RenderProblem p;
    for (int i = 0; i < n; i++)
        if ((p = check_chars(r, msgs[i].content, "prompt", why, wl))) return p;
    if (r->tok) {
        if (n != 1 || strcmp(msgs[0].role, "user")) {
            snprintf(why, wl,
                     "a conversation needs a chat model (--model); the char model takes "
                     "a plain prompt");
            return RENDER_BAD_TYPE;
        }
        size_t len = strlen(msgs[0].content);
        int   *out = ids_scratch(r, len + 1);
        /* Every character was checked: tok_encode cannot fail. */
        CHECK(tok_encode(r->tok, msgs[0].content, len, TOK_ENC_BOS, out, (int)len + 1, n_ids) == 0);
        *ids = out;
        return RENDER_OK;
    }
    const char *sys = bpe_chat_default_system(r->bpe);
    size_t      need = 64 * (size_t)(n + 2) + (sys ? strlen(sys) : 0);
    for (int i = 0; i < n; i++) need += strlen(msgs[i].role) + strlen(msgs[i].content);
    if (need > r->chat_cap) {
        r->chat_cap = need;
        r->chat = xrealloc(r->chat, need);
    }
    size_t len = 0;
    /* The buffer holds every message and the template's markup: a failure
     * is a template that is not ChatML, which render_new ruled out. */
    CHECK(bpe_chat_format(r->bpe, msgs, n, true, r->chat, r->chat_cap, &len) == 0);
    int *out = ids_scratch(r, BPE_ENCODE_MAX_IDS(len));
    int  flags = BPE_ENC_SPECIAL | (bpe_add_bos(r->bpe) ? BPE_ENC_BOS : 0);
    CHECK(bpe_encode(r->bpe, r->chat, len, flags, out, r->ids_cap, n_ids) == 0);
    *ids = out;
    return RENDER_OK;
}

RenderProblem render_completion(Render *r, const char *text, const char *what, const int **ids,
                                int *n_ids, char *why, size_t wl)
{
    RenderProblem p = check_chars(r, text, what, why, wl);
    if (p) return p;
    size_t len = strlen(text);
    int   *out = ids_scratch(r, BPE_ENCODE_MAX_IDS(len) + 1);
    int    n = 0;
    if (r->tok) {
        CHECK(tok_encode(r->tok, text, len, TOK_ENC_EOS, out, r->ids_cap, &n) == 0);
    } else {
        /* Plain text: a "<|im_end|>" written in a completion is text, not
         * the end of the turn. */
        CHECK(bpe_encode(r->bpe, text, len, 0, out, r->ids_cap - 1, &n) == 0);
        int eot = bpe_eot_id(r->bpe);
        CHECK(eot >= 0); /* a ChatML template has <|im_end|> */
        out[n++] = eot;
    }
    *ids = out;
    *n_ids = n;
    return RENDER_OK;
}
