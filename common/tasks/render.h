/* render: the one way a record's text becomes token ids, shared by the JSONL
 * readers (prompt datasets, preference data): chat messages read from JSON,
 * a prompt rendered for the model, a completion encoded as an actor samples
 * it.
 *
 * A prompt for the char model is its text, BOS first (one user message
 * only); for a chat model (a BPE with a ChatML template) the conversation
 * rendered by the template, with its default system prompt and the
 * assistant's generation prompt, encoded with special tokens (BOS when the
 * model wants one). A completion is its text encoded on its own, without
 * special tokens, closed by the end token: EOS for the char model, the
 * template's end of turn (<|im_end|>) for a chat model: the ids an actor
 * samples after the prompt when it stops by itself.
 *
 * Text a tokenizer cannot take is refused, never dropped: a character the
 * char tokenizer lacks, or a byte the BPE has no token for.
 *
 * Ownership: the tokenizer is borrowed and outlives the Render; messages
 * borrow the JSON's strings; returned ids live in the Render's scratch
 * until its next call. Threading: one thread per Render. Errors: the
 * problems below with a reason in why, for the reader to count and log. */
#ifndef RLHF_RENDER_H
#define RLHF_RENDER_H

#include <jansson.h>
#include <stddef.h>

#include "common/formats/bpe.h"
#include "common/formats/bpe_chat.h"
#include "common/formats/tok.h"

#define RENDER_MAX_MESSAGES 64 /* messages of one conversation */

typedef enum {
    RENDER_OK = 0,
    RENDER_BAD_TYPE, /* a member of the wrong type, a bad role or order */
    RENDER_EMPTY,    /* an empty conversation, message or completion */
    RENDER_TOO_LONG, /* more than RENDER_MAX_MESSAGES messages */
    RENDER_CHARS,    /* text the tokenizer cannot take */
} RenderProblem;

typedef struct Render Render;

/* A renderer for the char tokenizer or (exclusively) a BPE whose template
 * bpe_chat_supported accepts (CHECKed). Caller owns. */
Render *render_new(const Tok *tok, const Bpe *bpe);
void    render_free(Render **r);

/* Whether the renderer is a chat model's. */
bool render_is_chat(const Render *r);

/* Reads the array m of {"role": "system"|"user"|"assistant", "content":
 * string} objects into msgs (RENDER_MAX_MESSAGES, strings borrowed from m)
 * and their count into *n. name is the member's name for the reasons
 * ("messages", "chosen"). The last message must be last_role's; a user's
 * must not be blank (a prompt asks something), an assistant's may be (an
 * empty reply is a reply: the model stopped at once). */
RenderProblem render_read_messages(const json_t *m, const char *name, const char *last_role,
                                   BpeChatMessage *msgs, int *n, char *why, size_t wl);

/* The prompt ids of a conversation that ends with the user's message (as
 * described at the top) into *ids (borrowed) and *n_ids. The char model
 * takes one user message only (RENDER_BAD_TYPE otherwise). */
RenderProblem render_prompt(Render *r, const BpeChatMessage *msgs, int n, const int **ids,
                            int *n_ids, char *why, size_t wl);

/* The ids of a completion of text, closed by the end token. what names the
 * text in reasons ("completion 2"). An empty text is a completion too (the
 * model stopped at once: the end token alone), and a reward model must see
 * such completions: a policy that learns to stop at once is scored by it. */
RenderProblem render_completion(Render *r, const char *text, const char *what, const int **ids,
                                int *n_ids, char *why, size_t wl);

#endif
