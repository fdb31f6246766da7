#!/usr/bin/env python3
"""Writes the example datasets of examples/ (deterministic: run it again and
the files come out the same).

  arith-chat/train.jsonl, eval.jsonl  the chat arithmetic task as JSONL:
      {"prompt": "What is 37 + 45? Reply with the number only.", "answer": "82"}
      operands of 1 or 2 digits as the built-in task draws them, + and -;
      no "task", so a run picks the scorer
      (rlhf-learner --task number); the two files share no problem.
  code/train.jsonl, eval.jsonl  small Python functions to write, checked by
      unit tests in a sandbox (scorer "code", run by the reward server):
      {"prompt": ..., "task": "code",
       "meta": {"tests": ["assert f(...) == ...", ...], "prefix": ""}}
  formats/train.jsonl  one record per built-in scorer and a weighted spec,
      to show the record format (answers, tasks, meta).
  prefs-chat/train.jsonl, eval.jsonl  chat preference pairs for rlhf-rm and
      rlhf-dpo: the bare right number is preferred over a wrong number or a
      chatty (several-line) answer; train.jsonl mixes the three pair forms
      (strings, message lists with "prompt", conversations without it);
      ranking.jsonl ranks three completions (bare right, chatty right, wrong);
      reference.jsonl holds {"prompt", "completion"} lines for --norm-data.

Usage: python3 examples/make_examples.py [OUT_DIR]   (default: examples/)
"""
import json
import os
import random
import sys


def write(path, records):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{path}: {len(records)} records")


def arith_chat(out):
    # As the built-in chat task draws them (common/tasks/task.c): the number
    # of digits first (1 or 2), then the operand, so one-digit operands are
    # as common as two-digit ones; distinct problems, none in both files.
    rng = random.Random(9001)

    def operand():
        return rng.randrange(0, 10) if rng.randrange(2) == 0 else rng.randrange(10, 100)

    problems, seen = [], set()
    while len(problems) < 496:
        p = (operand(), "+-"[rng.randrange(2)], operand())
        if p not in seen:
            seen.add(p)
            problems.append(p)

    def record(p):
        a, op, b = p
        v = a + b if op == "+" else a - b
        return {"prompt": f"What is {a} {op} {b}? Reply with the number only.", "answer": str(v)}

    write(os.path.join(out, "arith-chat", "eval.jsonl"), [record(p) for p in problems[:96]])
    write(os.path.join(out, "arith-chat", "train.jsonl"), [record(p) for p in problems[96:]])


# Small functions: (name, prompt, reference body, tests), each family with a
# parameter so train and eval get different instances.
def code_family(k):
    return [
        ("add_k", f"Write a Python function `add_k(x)` that returns x plus {k}.",
         [f"assert add_k(0) == {k}", f"assert add_k(5) == {5 + k}", f"assert add_k(-{k}) == 0"]),
        ("times_k", f"Write a Python function `times_k(x)` that returns x times {k}.",
         [f"assert times_k(1) == {k}", f"assert times_k(3) == {3 * k}", "assert times_k(0) == 0"]),
        ("is_multiple", f"Write a Python function `is_multiple(n)` that returns True when n is "
         f"a multiple of {k} and False otherwise.",
         [f"assert is_multiple({k}) is True", f"assert is_multiple({k * 7}) is True",
          f"assert is_multiple({k + 1}) is False"]),
        ("repeat_word", f"Write a Python function `repeat_word(w)` that returns the string w "
         f"repeated {k} times.",
         [f"assert repeat_word('ab') == {'ab' * k!r}", "assert repeat_word('') == ''"]),
        ("first_k", f"Write a Python function `first_k(xs)` that returns the first {k} elements "
         f"of the list xs (all of them if it is shorter).",
         [f"assert first_k(list(range(10))) == {list(range(min(k, 10)))!r}",
          "assert first_k([]) == []"]),
        ("count_above", f"Write a Python function `count_above(xs)` that returns how many "
         f"numbers in the list xs are greater than {k}.",
         [f"assert count_above([{k}, {k + 1}, {k + 2}]) == 2", "assert count_above([]) == 0"]),
    ]


def code(out):
    fixed = [
        ("reverse_string", "Write a Python function `reverse_string(s)` that returns s reversed.",
         ["assert reverse_string('abc') == 'cba'", "assert reverse_string('') == ''"]),
        ("count_vowels", "Write a Python function `count_vowels(s)` that returns the number of "
         "vowels (a, e, i, o, u, either case) in s.",
         ["assert count_vowels('Hello') == 2", "assert count_vowels('xyz') == 0",
          "assert count_vowels('AEIOU') == 5"]),
        ("largest", "Write a Python function `largest(xs)` that returns the largest number in "
         "the non-empty list xs.",
         ["assert largest([3, 9, 2]) == 9", "assert largest([-5, -2]) == -2"]),
        ("is_palindrome", "Write a Python function `is_palindrome(s)` that returns True when "
         "the string s reads the same backwards.",
         ["assert is_palindrome('level') is True", "assert is_palindrome('ab') is False",
          "assert is_palindrome('') is True"]),
    ]

    # Each assert is a test of its own (the reward is the fraction that
    # pass); the prompt is prose, not code, so nothing goes before the
    # completion ("prefix": ""; reward_server/sandbox_scorer.h).
    def record(name, prompt, tests):
        return {"prompt": prompt + " Reply with the code only.", "task": "code",
                "meta": {"tests": tests, "prefix": ""}}

    train = [record(*f) for k in range(2, 10) for f in code_family(k)] + [record(*f) for f in fixed]
    evals = [record(*f) for k in (11, 13) for f in code_family(k)]
    write(os.path.join(out, "code", "train.jsonl"), train)
    write(os.path.join(out, "code", "eval.jsonl"), evals)


def formats(out):
    write(os.path.join(out, "formats", "train.jsonl"), [
        {"prompt": "Capital of France?", "answer": "Paris", "task": "exact"},
        {"prompt": "What is 1/3 as a decimal?", "answer": 0.3333, "task": "number",
         "meta": {"abs_tol": 0.001}},
        {"prompt": "Which is a prime? (A) 4 (B) 6 (C) 7 (D) 9", "answer": "C", "task": "choice"},
        {"prompt": "Solve x + 2 = 5. Put the final answer in \\boxed{}.", "answer": "3",
         "task": "boxed:0.9,format_answer_tag:0.1"},
        {"prompt": "Answer yes or no: is 7 odd?", "task": "regex",
         "meta": {"regex": "^[[:space:]]*(yes|Yes)[.!]?[[:space:]]*$"}},
        {"messages": [{"role": "system", "content": "Think first, then answer."},
                      {"role": "user", "content": "What is 6 x 7?"}],
         "answer": "42", "task": "number:0.8,format_think:0.2"},
    ])


def prefs_chat(out):
    # Chat arithmetic as above (other problems), judged as the gold
    # rule judges chat answers: right, and one line.
    rng = random.Random(9002)

    def operand():
        return rng.randrange(0, 10) if rng.randrange(2) == 0 else rng.randrange(10, 100)

    problems, seen = [], set()
    while len(problems) < 384:
        p = (operand(), "+-"[rng.randrange(2)], operand())
        if p not in seen:
            seen.add(p)
            problems.append(p)

    def parts(p):
        a, op, b = p
        v = a + b if op == "+" else a - b
        q = f"What is {a} {op} {b}? Reply with the number only."
        wrong = str(v + rng.choice([-10, -2, -1, 1, 2, 10]))
        chatty = f"Let me work it out: {a} {op} {b} = {v}.\nSo the answer is {v}."
        return q, str(v), wrong, chatty

    def pair(p, form):
        q, right, wrong, chatty = parts(p)
        bad = wrong if rng.randrange(2) == 0 else chatty
        if form == 0:
            return {"prompt": q, "chosen": right, "rejected": bad}
        user = [{"role": "user", "content": q}]
        if form == 1:
            return {"prompt": user, "chosen": [{"role": "assistant", "content": right}],
                    "rejected": [{"role": "assistant", "content": bad}]}
        return {"chosen": user + [{"role": "assistant", "content": right}],
                "rejected": user + [{"role": "assistant", "content": bad}]}

    def ranking(p):
        q, right, wrong, chatty = parts(p)
        comps = [right, chatty, wrong]  # best first
        order = [0, 1, 2]
        rng.shuffle(order)
        return {"prompt": q, "completions": [comps[i] for i in order],
                "ranking": sorted(range(3), key=lambda j: order[j])}

    d = os.path.join(out, "prefs-chat")
    write(os.path.join(d, "eval.jsonl"), [pair(p, 0) for p in problems[:64]])
    write(os.path.join(d, "train.jsonl"), [pair(p, i % 3) for i, p in enumerate(problems[64:320])])
    write(os.path.join(d, "ranking.jsonl"), [ranking(p) for p in problems[320:]])
    write(os.path.join(d, "reference.jsonl"),
          [{"prompt": parts(p)[0], "completion": rng.choice(parts(p)[1:])}
           for p in problems[64:128]])


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    arith_chat(out)
    code(out)
    formats(out)
    prefs_chat(out)


if __name__ == "__main__":
    main()
