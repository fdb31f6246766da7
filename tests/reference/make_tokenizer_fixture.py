#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizer_smollm2.json: token ids of SmolLM2-135M-Instruct
for ~70 varied strings and the rendered chat template of sample conversations,
produced by Hugging Face transformers (an implementation independent of ours)
from the same GGUF file common/formats/bpe.c reads. The C self-test (bpe_smollm2 in
tests/bpe_test.c) checks that our ids are identical.

Requirements (installs nothing itself; Python 3.10+, PyPI reachable):

    python3 -m venv /tmp/tokref && . /tmp/tokref/bin/activate
    pip install transformers gguf torch jinja2 numpy
    # transformers' GGUF loader imports torch even for the tokenizer only; the
    # CPU wheel is enough. Written with transformers 5.23, tokenizers 0.23,
    # gguf 0.19, torch 2.x.
    make model      # or any copy of SmolLM2-135M-Instruct.Q4_1.gguf
    python3 tests/reference/make_tokenizer_fixture.py \\
        [models/SmolLM2-135M-Instruct.Q4_1.gguf] [tests/fixtures/tokenizer_smollm2.json]

Quirk of transformers' GGUF tokenizer loading (documented in the fixture as
well): the file declares tokenizer.ggml.pre = "smollm", which transformers'
GGUF loader does not know, so it silently falls back to GPT-2's plain
ByteLevel pre-tokenizer. SmolLM2's own tokenizer.json (and llama.cpp's
"smollm" pre-tokenizer) first isolates every numeric character
(Digits(individual_digits=True)) and only then applies the ByteLevel regex.
The two disagree wherever a whitespace run precedes a digit ("x  = 1":
"ĠĠ" vs "Ġ","Ġ"...). We therefore set the pre-tokenizer SmolLM2 declares
explicitly; everything else (vocabulary, merges, special tokens, decoder,
chat template) is transformers' own from the GGUF. The script records how
many fixture strings the unpatched loader would have encoded differently.
"""
import hashlib
import json
import os
import sys

CASES = [
    # English and punctuation
    "Hello world",
    "Hello, world! How are you today?",
    "The quick brown fox jumps over the lazy dog.",
    "I'm sure they'll say it's fine, isn't it? We've done what you'd expect.",
    "DON'T SHOUT. I'LL WAIT'S",
    "\"Quoted\" text, (parentheses), [brackets], {braces} and <angles>.",
    "Ellipsis... dash -- em—dash; semi; colon: end",
    "e-mail: someone@example.com, url: https://example.org/path?q=1&r=2#frag",
    "snake_case_name camelCaseName PascalCase SCREAMING_CASE",
    "a",
    "",
    " ",
    "!!!???...",
    # digits and arithmetic
    "37+45=82",
    "What is 37 + 45? Reply with the number only.",
    "12345678901234567890",
    "3.14159 and -2.5e-3 and 1,000,000",
    "x  = 1",
    "Total:    42",
    "  1. first\n  2. second\n 10. tenth",
    "(12*7)-(3/4)=83.25",
    "Version 2.0.1 released on 2024-11-22 at 09:30.",
    "x²+y³ = z¹ and ½ + ¼ = ¾",
    "Roman Ⅻ and circled ① ② ③",
    "Arabic-Indic digits ٠١٢٣٤٥٦٧٨٩ and Devanagari ०१२३",
    # code
    "def add(a, b):\n    return a + b\n",
    "for (int i = 0; i < n; i++) {\n\tsum += x[i];\n}",
    "if __name__ == \"__main__\":\n    main()",
    "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 42); return 0; }",
    "const f = (x) => x ** 2; // square",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
    "<div class=\"box\">Hi</div>",
    # whitespace runs
    "two  spaces",
    "three   spaces and    four",
    "trailing spaces   ",
    "   leading spaces",
    "tab\tseparated\tvalues",
    "\t\tdouble tab",
    "line one\nline two\n\nline four",
    "windows\r\nline\r\nendings",
    "\n\n\n",
    "mixed \t \n whitespace \n\t end",
    "non-breaking\u00a0space and ideographic\u3000space and em\u2003space",
    "zero\u200bwidth space",
    # accented and non-Latin text
    "Café, naïve, résumé, Zürich, São Paulo, Ångström",
    "Ça va? Très bien. Déjà vu.",
    "Größenordnung und Straße",
    "中文测试：你好，世界！",
    "日本語のテキストとカタカナ",
    "한국어 텍스트입니다",
    "Привет, мир! Как дела?",
    "Ελληνικά γράμματα",
    "مرحبا بالعالم",
    "नमस्ते दुनिया",
    "שלום עולם",
    "ภาษาไทย",
    "Tiếng Việt có dấu",
    # emoji
    "I love pizza 🍕!",
    "😀😃😄",
    "Family: 👨‍👩‍👧‍👦 and flag 🇫🇷 and skin tone 👍🏽",
    "Heart ❤️ and keycap 1️⃣",
    # chat special tokens
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>",
    "text before<|endoftext|>text after",
    "<|im_start|><|im_end|><|im_start|>",
    "almost special <|im_star|> and <|im_end",
    "<repo_name>rlhf.c<file_sep>main.c<filename>",
    # control characters without a token (SmolLM2 lacks bytes 0x04, 0x06, ...):
    # both references drop them
    "bell\x07 and eot\x04 and ack\x06 here",
    # long word and long run
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "a" * 300,
    " " * 50 + "x",
]

CONVERSATIONS = [
    # No system message: the template inserts its default system prompt.
    ([{"role": "user", "content": "What is 37 + 45? Reply with the number only."}], True),
    (
        [
            {"role": "system", "content": "You are a careful calculator."},
            {"role": "user", "content": "What is 12 * 7?"},
            {"role": "assistant", "content": "84"},
            {"role": "user", "content": "And 84 - 9?"},
        ],
        True,
    ),
    (
        [
            {"role": "user", "content": "Hi!"},
            {"role": "assistant", "content": "Hello! How can I help you today? 😊"},
        ],
        False,
    ),
]


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    gguf_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        root, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
    out_path = sys.argv[2] if len(sys.argv) > 2 else os.path.join(
        root, "tests", "fixtures", "tokenizer_smollm2.json")

    import tokenizers
    import transformers
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer

    gguf_path = os.path.abspath(gguf_path)
    tok = AutoTokenizer.from_pretrained(os.path.dirname(gguf_path),
                                        gguf_file=os.path.basename(gguf_path))
    raw = tok.backend_tokenizer.pre_tokenizer
    unpatched = [tok.encode(s, add_special_tokens=False) for s in CASES]
    # The quirk described above: apply the pre-tokenizer the file declares.
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])

    cases = []
    for s, old in zip(CASES, unpatched):
        ids = tok.encode(s, add_special_tokens=False)
        back = tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        cases.append({"text": s, "ids": ids, "hf_round_trip": back == s,
                      "unpatched_loader_differs": ids != old})

    chats = []
    for messages, gen in CONVERSATIONS:
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
        chats.append({"messages": messages, "add_generation_prompt": gen, "text": text,
                      "ids": tok.encode(text, add_special_tokens=False)})

    with open(gguf_path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    fixture = {
        "model_file": os.path.basename(gguf_path),
        "model_sha256": sha,
        "generator": "tests/reference/make_tokenizer_fixture.py",
        "reference": "transformers %s, tokenizers %s: AutoTokenizer.from_pretrained(dir, gguf_file=...)"
                     % (transformers.__version__, tokenizers.__version__),
        "quirk": "transformers does not know tokenizer.ggml.pre 'smollm' and loaded the "
                 "pre-tokenizer %s; replaced with Sequence[Digits(individual_digits), ByteLevel] "
                 "as SmolLM2 declares; %d of %d strings would differ unpatched"
                 % (raw.__class__.__name__ if raw is not None else None,
                    sum(c["unpatched_loader_differs"] for c in cases), len(cases)),
        "encode": "add_special_tokens=False; special token text is matched as special tokens",
        "eot_token": "<|im_end|>",
        "eot_id": tok.convert_tokens_to_ids("<|im_end|>"),
        "cases": cases,
        "chat": chats,
    }
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(fixture, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("%s: %d strings, %d conversations; %s" % (out_path, len(cases), len(chats),
                                                   fixture["quirk"]))
    bad = [c["text"] for c in cases if not c["hf_round_trip"]]
    if bad:
        print("reference decode(encode(s)) != s for %d strings: %r" % (len(bad), bad))
    return 0


if __name__ == "__main__":
    sys.exit(main())
