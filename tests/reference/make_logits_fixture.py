#!/usr/bin/env python3
"""Writes tests/fixtures/logits_smollm2.json: the final-position logits and
20-token greedy continuations of SmolLM2-135M-Instruct (Q4_1 GGUF) for a few
prompts, computed by Hugging Face transformers (an implementation independent
of ours: its own GGUF reader, dequantisation via the gguf package, its own
Q/K un-permutation and Llama forward) from the same file common/formats/gguf.c reads.
The C test gguf_smollm2 (tests/gguf_test.c) compares ours against it.

Requirements (installs nothing itself; Python 3.10+, PyPI reachable):

    python3 -m venv ~/.cache/rlhf-ref-venv
    ~/.cache/rlhf-ref-venv/bin/pip install torch transformers gguf numpy accelerate
    make model      # or any copy of SmolLM2-135M-Instruct.Q4_1.gguf
    ~/.cache/rlhf-ref-venv/bin/python tests/reference/make_logits_fixture.py \\
        [models/SmolLM2-135M-Instruct.Q4_1.gguf] [tests/fixtures/logits_smollm2.json]

Written with transformers 5.x, gguf 0.19, torch 2.x on CPU, float32.

What is stored per prompt (kept small, a few KB): the token ids (from
transformers' tokenizer of the same GGUF, so the C side needs no tokenizer);
of the final position's logits (V = 49152 values) the largest absolute value,
the top 50 (id, logit) pairs, every 97th logit (507 values spread over the
vocabulary) and the sum and sum of squares of the whole row; and the greedy
continuation of 20 tokens, taking the argmax at every step and feeding it
back, without stopping at end-of-turn (so both sides run exactly 20 steps).
"""
import json
import os
import sys

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = [
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is 37 + 45? Reply with the number only.<|im_end|>\n<|im_start|>assistant\n",
    "The capital of France is",
    "def fibonacci(n):\n    ",
]
TOP_K = 50
STRIDE = 97
N_GREEDY = 20


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "models/SmolLM2-135M-Instruct.Q4_1.gguf"
    out = sys.argv[2] if len(sys.argv) > 2 else "tests/fixtures/logits_smollm2.json"
    d, f = os.path.split(os.path.abspath(path))
    torch.manual_seed(0)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    model.eval()
    cases = []
    with torch.no_grad():
        for text in PROMPTS:
            ids = tok(text, add_special_tokens=False)["input_ids"]
            logits = model(torch.tensor([ids])).logits[0, -1].to(torch.float64).numpy()
            order = np.argsort(-logits, kind="stable")[:TOP_K]
            seq = list(ids)
            greedy = []
            for _ in range(N_GREEDY):
                nxt = int(torch.argmax(model(torch.tensor([seq])).logits[0, -1]))
                greedy.append(nxt)
                seq.append(nxt)
            cases.append({
                "text": text,
                "ids": [int(i) for i in ids],
                "vocab_size": int(logits.shape[0]),
                "max_abs": float(np.max(np.abs(logits))),
                "top": [[int(i), float(logits[i])] for i in order],
                "stride": STRIDE,
                "strided": [float(x) for x in logits[::STRIDE]],
                "sum": float(np.sum(logits)),
                "sum_sq": float(np.sum(logits * logits)),
                "greedy": greedy,
                "greedy_text": tok.decode(greedy),
            })
            print(f"{len(ids)} ids, top {order[0]} {logits[order[0]]:.4f}, greedy {tok.decode(greedy)!r}")
    doc = {
        "model": os.path.basename(path),
        "generator": "tests/reference/make_logits_fixture.py",
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__,
                     "numpy": np.__version__},
        "dtype": "float32",
        "cases": cases,
    }
    with open(out, "w") as fp:
        json.dump(doc, fp, indent=1)
        fp.write("\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
