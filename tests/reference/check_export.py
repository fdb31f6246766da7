#!/usr/bin/env python3
"""Checks rlhf-export's output with Hugging Face transformers, an
implementation independent of ours: the exported Hugging Face directory
(AutoTokenizer / AutoModelForCausalLM.from_pretrained(dir)) and, if given,
exported GGUF files (transformers' own GGUF reader, dequantisation and Q/K
un-permutation) against transformers running the source GGUF.

Not part of CI (it needs torch and transformers); run it by hand after
changing common/formats/export.c:

    python3 -m venv ~/.cache/rlhf-ref-venv
    ~/.cache/rlhf-ref-venv/bin/pip install torch transformers gguf numpy accelerate
    make model && make
    build/rlhf-export --model models/SmolLM2-135M-Instruct.Q4_1.gguf --out /tmp/x/hf
    build/rlhf-export --model models/SmolLM2-135M-Instruct.Q4_1.gguf --out /tmp/x/m32.gguf
    build/rlhf-export --model models/SmolLM2-135M-Instruct.Q4_1.gguf --out /tmp/x/m16.gguf --type f16
    ~/.cache/rlhf-ref-venv/bin/python tests/reference/check_export.py \\
        models/SmolLM2-135M-Instruct.Q4_1.gguf /tmp/x/hf /tmp/x/m32.gguf /tmp/x/m16.gguf

For each exported model it prints, per prompt, the largest absolute
difference of the final-position logits as a fraction of the largest
absolute reference logit, and whether 20-token greedy continuations are
identical; for the tokenizers, whether the ids of a set of varied strings
and the chat template rendering are identical. Exits 1 if a tokenizer
differs, a greedy continuation differs, or a logit difference exceeds 1e-3
of the largest reference logit (F32) or 2e-2 (F16). Written with
transformers 5.x, gguf 0.19, torch 2.x on CPU, float32.

Measured on SmolLM2-135M-Instruct (transformers 5.23, torch 2.15): the HF
directory and the F32 GGUF give logits identical to the source GGUF's (max
|diff| 0) on all 3 prompts, the F16 GGUF at most 1.0e-3 of the largest
logit; greedy continuations identical for all three; tokenizer ids
identical on 13/13 strings and the chat template rendering identical.
"""
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = [
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is 37 + 45? Reply with the number only.<|im_end|>\n<|im_start|>assistant\n",
    "The capital of France is",
    "def fibonacci(n):\n    ",
]
STRINGS = [
    "Hello, world!",
    "What is 1234 + 5678? Reply with the number only.",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\n\n\nand   runs",
    "Ünïcödé çàfé naïve — “quotes” …",
    "日本語のテキストと中文",
    "Emoji: 🙂🚀👍🏽",
    "def f(x):\n    return x ** 2  # square",
    "<|im_start|>user\nhi<|im_end|>\n",
    "it's they're we've I'm you'll he'd",
]
N_GREEDY = 20


def greedy(model, ids, n):
    out = []
    cur = torch.tensor([ids])
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model(cur).logits[0, -1].argmax())
            out.append(nxt)
            cur = torch.cat([cur, torch.tensor([[nxt]])], dim=1)
    return out


def load_gguf(path):
    d, f = os.path.split(os.path.abspath(path))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    return tok, model.eval()


def main():
    if len(sys.argv) < 3:
        print(__doc__)
        return 2
    src, hf_dir, ggufs = sys.argv[1], sys.argv[2], sys.argv[3:]
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    ref_tok, ref = load_gguf(src)
    candidates = [("hf " + hf_dir, AutoTokenizer.from_pretrained(hf_dir),
                   AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval(), 1e-3)]
    for g in ggufs:
        tok, model = load_gguf(g)
        candidates.append(("gguf " + g, tok, model, 2e-2 if "16" in os.path.basename(g) else 1e-3))
    ok = True
    msgs = [{"role": "user", "content": "What is 37 + 45?"}]
    ref_chat = ref_tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    refs = []
    with torch.no_grad():
        for text in PROMPTS:
            ids = ref_tok(text, add_special_tokens=False)["input_ids"]
            refs.append((ids, ref(torch.tensor([ids])).logits[0, -1], greedy(ref, ids, N_GREEDY)))
    for name, tok, model, tol in candidates:
        same = sum(tok(s, add_special_tokens=False)["input_ids"] ==
                   ref_tok(s, add_special_tokens=False)["input_ids"] for s in STRINGS + PROMPTS)
        rt = sum(tok.decode(tok(s, add_special_tokens=False)["input_ids"]) == s for s in STRINGS)
        chat = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        print(f"{name}: tokenizer ids identical on {same}/{len(STRINGS) + len(PROMPTS)} strings, "
              f"decode(encode(s)) == s on {rt}/{len(STRINGS)}, chat template rendering "
              f"{'identical' if chat == ref_chat else 'DIFFERS'}; eos {tok.eos_token!r}")
        ok &= same == len(STRINGS) + len(PROMPTS) and chat == ref_chat
        worst = 0.0
        with torch.no_grad():
            for (ids, ref_logits, ref_greedy), text in zip(refs, PROMPTS):
                logits = model(torch.tensor([ids])).logits[0, -1]
                ratio = float((logits - ref_logits).abs().max() / ref_logits.abs().max())
                g = greedy(model, ids, N_GREEDY)
                worst = max(worst, ratio)
                print(f"  {text[:30]!r:34} max|diff|/max|ref| = {ratio:.2e}, greedy "
                      f"{'identical' if g == ref_greedy else 'DIFFERS'}")
                ok &= g == ref_greedy
        print(f"  worst {worst:.2e} (tolerance {tol:g})")
        ok &= worst <= tol
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
