/* tok: the character tokenizer, which the built-in tasks and every
 * checkpoint of the char task use: its charset (from a checkpoint's
 * config.json) and text through tok_encode / tok_decode, and ids from a
 * peer through tok_decode (the reward server renders completions so).
 *
 * Input: a charset line, then the text; without a newline the whole input
 * is text for the default charset. Properties: tok_new accepts exactly the
 * charsets tok_charset_validate does; text of the charset's characters
 * encodes to one id each (plus BOS/EOS as asked) and decodes back, any
 * other byte is refused; the input's bytes read as ids decode exactly when
 * every one lies in the vocabulary, within TOK_DECODE_MAX_BYTES. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/formats/tok.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    char          *charset = NULL;
    const char    *text = (const char *)data;
    size_t         n = size;
    if (nl) {
        size_t k = (size_t)(nl - data);
        charset = xmalloc(k + 1);
        memcpy(charset, data, k);
        charset[k] = '\0';
        text = (const char *)nl + 1;
        n = size - k - 1;
    }
    const char *cs = charset ? charset : TOK_CHARSET_DEFAULT;
    char        why[160];
    int         valid = tok_charset_validate(cs, why, sizeof why);
    Tok        *t = tok_new(cs);
    FUZZ_CHECK((valid == 0) == (t != NULL), "validate %d, tok_new %p", valid, (void *)t);
    if (!t) goto done;
    int   V = tok_vocab_size(t);
    int  *ids = xmalloc(sizeof(int) * (n + 2));
    char *out = xmalloc(TOK_DECODE_MAX_BYTES(n + 2));
    bool  in_set = true;
    for (size_t i = 0; i < n; i++) in_set = in_set && text[i] && strchr(cs, text[i]);
    int n_ids = -1;
    int rc = tok_encode(t, text, n, TOK_ENC_BOS | TOK_ENC_EOS, ids, (int)n + 2, &n_ids);
    FUZZ_CHECK((rc == 0) == in_set && n_ids == (int)n + 2, "encode %d of %zu bytes: %d ids", rc, n,
               n_ids);
    if (rc == 0) {
        FUZZ_CHECK(ids[0] == TOK_BOS && ids[n + 1] == TOK_EOS, "specials %d %d", ids[0],
                   ids[n + 1]);
        for (size_t i = 1; i <= n; i++)
            FUZZ_CHECK(ids[i] >= TOK_N_SPECIAL && ids[i] < V && tok_char(t, ids[i]) == text[i - 1],
                       "id %d for '%c'", ids[i], text[i - 1]);
        size_t len = 0;
        FUZZ_CHECK(tok_decode(t, ids, n_ids, 0, out, TOK_DECODE_MAX_BYTES(n + 2), &len) == 0 &&
                       len == n && !memcmp(out, text, n),
                   "decode(encode(s)) of %zu bytes", n);
    }
    /* The bytes as ids, as a peer's completion arrives. */
    bool all_in = true;
    for (size_t i = 0; i < n; i++) {
        ids[i] = (int)(uint8_t)text[i] - 8;
        all_in = all_in && ids[i] >= 0 && ids[i] < V;
    }
    size_t len = 0;
    rc = tok_decode(t, ids, (int)n, TOK_DEC_SPECIAL, out, TOK_DECODE_MAX_BYTES(n), &len);
    FUZZ_CHECK((rc == 0) == all_in && len < TOK_DECODE_MAX_BYTES(n) && out[len] == '\0',
               "decode of %zu ids: %d, %zu bytes", n, rc, len);
    free(ids);
    free(out);
    tok_free(&t);
done:
    free(charset);
    return 0;
}

static void seeds(const char *dir)
{
    static const char *const s[] = {
        "12+30=42",
        "What is (3*4)-5? It's 7.",
        TOK_CHARSET_DEFAULT "\n" TOK_CHARSET_DEFAULT,
        "0123456789+-\n12-3+45",
        "abc\nabcabc\xff",
        "aa\nrepeated",
    };
    char name[32];
    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) {
        snprintf(name, sizeof name, "tok-%zu", i);
        fuzz_seed(dir, name, s[i], strlen(s[i]));
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_init("tok", seeds);
    return 0;
}
