#!/usr/bin/env python3
"""Writes HumanEval as a dataset of ours (README "Bring your own data"), for
rlhf-eval and the code scorer: one record per problem, a chat prompt asking
for the function, the task "code", and the problem's tests in meta.

    deploy/humaneval-tasks.py data/humaneval/HumanEval.jsonl data/humaneval/humaneval-chat.jsonl

The prompt shows the problem's signature and docstring in a ```python fence
and asks for the whole function back in one; the scorer takes the fenced
code (reward_server/sandbox_scorer.h). meta.prefix is the problem's own
prompt (its imports and the signature), put before the answer, so a reply
that leaves out an import still runs as HumanEval's own check would run it;
meta.tests is HumanEval's test code and meta.entry_point the function that
check() is handed. Standard library only."""
import json
import sys

INSTRUCTION = ("Complete the following Python function. Reply with the whole function "
               "in one ```python code block.\n\n```python\n{prompt}```")


def main(src: str, dst: str) -> int:
    out = []
    with open(src, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            p = json.loads(line)
            for key in ("task_id", "prompt", "test", "entry_point"):
                if not isinstance(p.get(key), str):
                    print(f"{src}:{lineno}: '{key}' missing or not a string", file=sys.stderr)
                    return 1
            out.append(json.dumps({
                "prompt": INSTRUCTION.format(prompt=p["prompt"]),
                "task": "code",
                "meta": {"tests": p["test"], "entry_point": p["entry_point"],
                         "prefix": p["prompt"], "task_id": p["task_id"]},
            }))
    with open(dst + ".tmp", "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")
    import os
    os.replace(dst + ".tmp", dst)
    print(f"humaneval-tasks: {len(out)} records in {dst}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2]))
