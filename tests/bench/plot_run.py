#!/usr/bin/env python3
"""plot_run: the training curves of one or more run directories, as a PNG.

Reads each RUN_DIR's metrics.jsonl (one record per learner step, written by
rlhf-learner --metrics; `rlhf run`, `make run`, run-prefs.sh and
compare.py all write one) and, when present, the learner's log (RUN_DIR/
learner.log or RUN_DIR/logs/learner.log) for the held-out evaluations, and
draws four panels, one line per run:

  1. reward against step: the mean reward the learner trained on (the
     proxy: what the scorers or the reward model said) and, dashed, each
     reward component the reward servers reported (`components`: for
     example `gold` beside `rm`, the hidden judge watched with weight 0);
  2. KL to the reference against step: the mean per-completion summed
     estimate (`kl_ref_seq`);
  3. reward and components against that KL: the over-optimisation
     picture -- a learned reward that keeps rising while the gold one
     turns down shows here, and so does what the KL penalty holds back;
  4. held-out greedy accuracy and reward against step, from the learner's
     evaluations (--eval-every), when there are any.

Curves are smoothed with a trailing moving average of --smooth steps.
Needs matplotlib, which it installs with pip (--user) when it is missing.

Examples:
  tests/bench/plot_run.py runs/prefs/ppo                  # -> runs/prefs/ppo/curves.png
  tests/bench/plot_run.py runs/a runs/b --out ab.png      # two runs overlaid
  make plot RUN=runs/latest
"""

import argparse
import math
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import EVAL_RE, ensure_matplotlib, read_jsonl  # noqa: E402

# The held-out line's reward, which EVAL_RE does not capture.
EVAL_REWARD_RE = re.compile(r"held-out greedy accuracy at step (\d+): [0-9.]+ \(reward ([-0-9.naif]+),")


def parse_args():
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.split("\n")[2:]))
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (metrics.jsonl)")
    p.add_argument("--out", default=None,
                   help="PNG to write (default: RUN_DIR/curves.png of the first run)")
    p.add_argument("--smooth", type=int, default=10,
                   help="trailing moving average over N steps, 1 = none")
    p.add_argument("--title", default=None, help="figure title (default: the run directories)")
    a = p.parse_args()
    if a.smooth < 1:
        p.error(f"--smooth {a.smooth}: expected >= 1")
    return a


def smooth(xs, n):
    out, acc, q = [], 0.0, []
    for x in xs:
        q.append(x)
        acc += x
        if len(q) > n:
            acc -= q.pop(0)
        out.append(acc / len(q))
    return out


def finite(x):
    return isinstance(x, (int, float)) and math.isfinite(x)


def load(run_dir):
    """The run's per-step series and held-out points; exits naming the problem."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        sys.exit(f"plot_run: {path}: no such file (is {run_dir} a run directory?)")
    recs = [r for r in read_jsonl(path) if isinstance(r.get("step"), int)]
    if not recs:
        sys.exit(f"plot_run: {path}: no step records")
    run = {"name": run_dir.rstrip("/"), "step": [], "reward": [], "kl": [], "comp": {},
           "eval": []}
    for r in recs:
        if not finite(r.get("reward_mean")):
            continue
        run["step"].append(r["step"])
        run["reward"].append(r["reward_mean"])
        kl = r.get("kl_ref_seq")
        run["kl"].append(kl if finite(kl) else float("nan"))
        for name, v in (r.get("components") or {}).items():
            run["comp"].setdefault(name, {})[r["step"]] = v
    # A component is drawn where it was reported; steps without it are gaps.
    run["comp"] = {k: [v.get(s, float("nan")) for s in run["step"]]
                   for k, v in sorted(run["comp"].items())}
    for log in (os.path.join(run_dir, "learner.log"), os.path.join(run_dir, "logs", "learner.log")):
        if not os.path.isfile(log):
            continue
        with open(log, errors="replace") as f:
            for line in f:
                m, mr = EVAL_RE.search(line), EVAL_REWARD_RE.search(line)
                if m:
                    rew = float(mr.group(2)) if mr else float("nan")
                    run["eval"].append((int(m.group(1)), float(m.group(2)), rew))
        break
    return run


def main():
    a = parse_args()
    runs = [load(d) for d in a.runs]
    out = a.out or os.path.join(a.runs[0], "curves.png")
    plt = ensure_matplotlib()
    if plt is None:
        sys.exit("plot_run: matplotlib is not available")
    fig, ax = plt.subplots(2, 2, figsize=(12, 8))
    (a_rew, a_kl), (a_vs, a_eval) = ax
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, r in enumerate(runs):
        c = colors[i % len(colors)]
        lab = r["name"] if len(runs) > 1 else "reward (trained on)"
        rew, kl = smooth(r["reward"], a.smooth), smooth(r["kl"], a.smooth)
        a_rew.plot(r["step"], rew, color=c, label=lab)
        a_kl.plot(r["step"], kl, color=c, label=r["name"])
        a_vs.plot(kl, rew, ".", color=c, ms=3, label=lab)
        for k, (name, ys) in enumerate(r["comp"].items()):
            style = ["--", ":", "-."][k % 3]
            ys_s = smooth(ys, a.smooth)
            a_rew.plot(r["step"], ys_s, color=c, linestyle=style, label=f"{name}"
                       + (f" ({r['name']})" if len(runs) > 1 else ""))
            a_vs.plot(kl, ys_s, ["x", "+", "1"][k % 3], color=c, ms=3, label=name)
        if r["eval"]:
            st = [e[0] for e in r["eval"]]
            a_eval.plot(st, [e[1] for e in r["eval"]], "o-", color=c,
                        label="accuracy" + (f" ({r['name']})" if len(runs) > 1 else ""))
            if any(finite(e[2]) for e in r["eval"]):
                a_eval.plot(st, [e[2] for e in r["eval"]], "s--", color=c, alpha=0.6,
                            label="reward" + (f" ({r['name']})" if len(runs) > 1 else ""))
    a_rew.set(xlabel="learner step", ylabel="mean reward",
              title=f"reward and its components (moving average {a.smooth})")
    a_kl.set(xlabel="learner step", ylabel="KL to reference per completion (nats)",
             title="KL to the reference")
    a_vs.set(xlabel="KL to reference per completion (nats)", ylabel="mean reward",
             title="reward against KL (over-optimisation)")
    a_eval.set(xlabel="learner step", ylabel="held-out greedy", title="held-out evaluations")
    if not any(r["eval"] for r in runs):
        a_eval.text(0.5, 0.5, "no held-out evaluations in the learner log", ha="center",
                    va="center", transform=a_eval.transAxes)
    for x in (a_rew, a_kl, a_vs, a_eval):
        x.grid(alpha=0.3)
        if x.get_legend_handles_labels()[0]:
            x.legend(fontsize=7)
    fig.suptitle(a.title or ", ".join(r["name"] for r in runs))
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(f"plot_run: wrote {out} ({len(runs)} run(s), "
          + ", ".join(f"{len(r['step'])} steps" for r in runs) + ")")


if __name__ == "__main__":
    main()
