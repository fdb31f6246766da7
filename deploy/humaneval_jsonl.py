#!/usr/bin/env python3
"""HumanEval as prompt records of rlhf.c (README "Bring your own data"), for
rlhf-eval and the learner's --data. `make humaneval` writes
data/humaneval/HumanEval-code.jsonl with it.

    deploy/humaneval_jsonl.py IN.jsonl OUT.jsonl [--instruct]

Each problem {"task_id", "prompt", "entry_point", "canonical_solution",
"test"} becomes

    {"id": task_id, "prompt": prompt, "task": "code",
     "meta": {"tests": test, "entry_point": entry_point, "prefix": prompt}}

so the code scorer (reward_server/sandbox_scorer.h) runs HumanEval's own
program: prefix + completion + "\\n" + test + "\\n" + "check(entry_point)",
passing when it runs through. The prompt is the function's signature and
docstring, for a model to continue (rlhf-eval --template raw, with stops
such as "\\ndef "). With --instruct the prompt asks a chat model for the
function in a ```python block instead (rlhf-eval --template chat); the
scorer takes the block's inside as the completion, after the same prefix,
which then only brings the imports (the block redefines the function).
The canonical solutions are not copied. OUT is written whole or not at
all (a temporary file renamed over it).
"""
import json
import os
import sys

FIELDS = ("task_id", "prompt", "entry_point", "test")
INSTRUCTION = ("Complete the following Python function. Reply with the whole function "
               "in one ```python code block.\n\n```python\n{prompt}```")


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    flags = [a for a in argv[1:] if a.startswith("--")]
    if len(args) != 2 or any(f != "--instruct" for f in flags):
        sys.stderr.write("usage: humaneval_jsonl.py IN.jsonl OUT.jsonl [--instruct]\n")
        return 2
    src, dst = args
    instruct = "--instruct" in flags
    records = []
    try:
        with open(src, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    p = json.loads(line)
                except ValueError as e:
                    sys.stderr.write(f"{src}:{line_no}: not JSON ({e})\n")
                    return 1
                missing = [k for k in FIELDS if not isinstance(p.get(k), str) or not p.get(k)]
                if missing:
                    sys.stderr.write(f"{src}:{line_no}: no {', '.join(missing)}: not a "
                                     "HumanEval problem\n")
                    return 1
                prompt = INSTRUCTION.format(prompt=p["prompt"]) if instruct else p["prompt"]
                records.append({"id": p["task_id"], "prompt": prompt, "task": "code",
                                "meta": {"tests": p["test"], "entry_point": p["entry_point"],
                                         "prefix": p["prompt"]}})
    except OSError as e:
        sys.stderr.write(f"{src}: {e.strerror}\n")
        return 1
    if not records:
        sys.stderr.write(f"{src}: no problems\n")
        return 1
    tmp = f"{dst}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dst)
    except OSError as e:
        sys.stderr.write(f"{dst}: {e.strerror}\n")
        if os.path.exists(tmp):
            os.unlink(tmp)
        return 1
    sys.stderr.write(f"{dst}: {len(records)} problems as code records\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
