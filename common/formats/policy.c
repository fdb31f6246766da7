/* policy.c: a program's model and tokenizer from --ckpt and/or --model
 * (policy.h). */
#include "common/formats/policy.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "common/formats/bpe_gguf.h"
#include "common/formats/ckpt.h"
#include "common/formats/ckpt_config.h"
#include "common/formats/gguf_llama.h"

int policy_ckpt_model(const char *dir, Model **out)
{
    *out = NULL;
    ModelConfig mc;
    int         rc = ckpt_load_config(dir, &mc);
    if (rc) return rc;
    Model *m = model_new(&mc);
    /* ERR_AGAIN: a save replaced the directory between the config and the
     * weights; reading again gets one consistent save. */
    for (int attempt = 0; attempt < 3; attempt++)
        if ((rc = ckpt_load(dir, m)) != ERR_AGAIN) break;
    if (rc) {
        model_free(&m);
        return rc;
    }
    *out = m;
    return 0;
}

static int check_dir(const char *flag, const char *dir)
{
    struct stat st;
    if (stat(dir, &st) != 0) {
        log_error("%s '%s': %s", flag, dir, strerror(errno));
        return ERR_NOTFOUND;
    }
    if (!S_ISDIR(st.st_mode)) {
        log_error("%s '%s': not a directory (a checkpoint is one)", flag, dir);
        return ERR_NOTFOUND;
    }
    return 0;
}

static int load(const PolicySpec *s, const char *flag, Policy *p)
{
    int rc;
    if (s->model) {
        if ((rc = bpe_load(s->model, &p->bpe))) return rc;
        if (s->need_chat && !bpe_chat_supported(p->bpe)) {
            log_error("--model '%s': no chat template this program can render", s->model);
            return ERR_FORMAT;
        }
    }
    if (!s->ckpt) return gguf_load(s->model, s->max_seq_len, &p->m);
    if ((rc = check_dir(flag, s->ckpt))) return rc;
    if (!p->bpe && (rc = ckpt_load_tok(s->ckpt, &p->tok))) {
        if (rc == ERR_NOTFOUND)
            log_error("%s '%s' holds no char tokenizer: give the GGUF it was trained from with "
                      "--model for its BPE tokenizer",
                      flag, s->ckpt);
        return rc;
    }
    if ((rc = policy_ckpt_model(s->ckpt, &p->m))) {
        log_error("%s '%s': cannot load the model: %s", flag, s->ckpt, err_str(rc));
        return rc;
    }
    return 0;
}

int policy_load(const PolicySpec *s, Policy *out)
{
    memset(out, 0, sizeof *out);
    const char *flag = s->ckpt_flag ? s->ckpt_flag : "--ckpt";
    if (!s->ckpt && !s->model) {
        log_error("no policy: give %s DIR or --model FILE.gguf", flag);
        return ERR_ARG;
    }
    int rc = load(s, flag, out);
    if (rc == 0 && out->bpe) {
        int vocab = model_config(out->m)->vocab_size;
        if (bpe_vocab_size(out->bpe) > vocab) {
            log_error("%s '%s' has %d token embeddings, the tokenizer of --model '%s' %d: not "
                      "the model it was trained from",
                      s->ckpt ? flag : "--model", s->ckpt ? s->ckpt : s->model, vocab, s->model,
                      bpe_vocab_size(out->bpe));
            rc = ERR_MISMATCH;
        }
    }
    if (rc) policy_free(out);
    return rc;
}

void policy_free(Policy *p)
{
    model_free(&p->m);
    tok_free(&p->tok);
    bpe_free(&p->bpe);
}
