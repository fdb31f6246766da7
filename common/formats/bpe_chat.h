/* bpe_chat: the ChatML chat template of a byte-level BPE vocabulary (as
 * SmolLM2 and Qwen ship it in tokenizer.chat_template): recognising it and
 * its default system prompt, and rendering a conversation the way the
 * template does, ready for bpe_encode with BPE_ENC_SPECIAL.
 *
 * Ownership: messages and the Bpe are borrowed; the output buffer is the
 * caller's. Threading: no shared state. Errors: 0 or a negative ERR_* code,
 * logged once. */
#ifndef RLHF_BPE_CHAT_H
#define RLHF_BPE_CHAT_H

#include <stdbool.h>
#include <stddef.h>

#include "common/formats/bpe.h"

/* One chat message: role ("system", "user", "assistant") and content. */
typedef struct {
    const char *role;
    const char *content;
} BpeChatMessage;

/* Whether template text tpl (may be NULL) is ChatML; for one whose first
 * message, when not a system message, gets a system turn (a literal that
 * opens with "<|im_start|>system" and a newline inside an {% if %} on the
 * first role not being 'system'), *default_system is set to a new copy of
 * that prompt (caller frees), else NULL. */
bool bpe_chat_parse(const char *tpl, char **default_system);

/* Renders n messages as the chat template does, followed by the assistant's
 * generation prompt ("<|im_start|>assistant\n") if add_generation_prompt,
 * into out as a NUL-terminated string of at most cap bytes; *len_out (may be
 * NULL) gets the length, and is set to the length needed even when out is too
 * small. Encode the result with BPE_ENC_SPECIAL. Returns 0; ERR_UNSUPPORTED
 * if the template is missing or not ChatML; ERR_ARG for a NULL role or
 * content; ERR_RANGE if out is too small. Each is logged. */
int bpe_chat_format(const Bpe *b, const BpeChatMessage *msgs, int n, bool add_generation_prompt,
                    char *out, size_t cap, size_t *len_out);

#endif
