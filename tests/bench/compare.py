#!/usr/bin/env python3
"""compare: the algorithm comparison of issue 12, as one command.

Runs a grid of local clusters on the built-in arithmetic task -- algorithm x
max staleness x seed -- each a real rlhf-learner, rlhf-reward and rlhf-actor
processes on loopback, warm-started from the same SFT checkpoint (made with
`rlhf run`'s settings when it is missing), one run at a time. Then it reads
every run's files and writes

  OUT/results.json   one record per run (the numbers below, and the curve)
  OUT/compare.md     a markdown table, one row per (algorithm, staleness):
                     mean +- sample std over the seeds
  OUT/compare.png    time and samples to reach the target held-out accuracy
                     (or the best reached), final accuracy, KL to the
                     reference, clip fraction and samples/s against the max
                     staleness, one line per algorithm, with error bars
  OUT/curves.png     held-out accuracy against training wall time per run

What each run is measured by:
  - held-out greedy accuracy: the learner's --eval-every evaluations (its
    log line "held-out greedy accuracy at step N: X ... (T s)") plus the
    ones at the start and the end (summary.json);
  - time to target: the learner's loop time at the first evaluation at or
    above --target, minus the time spent in the evaluations before it (they
    pause training); samples to target: completions drawn by then (trained,
    or dropped as too stale or, under dynamic sampling, as flat);
    a run that never reaches it counts with its best accuracy instead;
  - final accuracy (summary), KL to the reference (mean k3 per token over
    the last tenth of the steps), mismatch (mean |logp_learner -
    logp_actor| of fresh tokens), clip fraction, staleness (mean over the
    run, metrics.jsonl), samples/s (summary);
  - per-stage time: the learner's time per update (step_s) and the time
    between updates; from the synchronous runs (staleness 0, where sampling
    and learning alternate) the sampling time per batch is the interval
    minus the update, and the speed-up asynchrony could bring when actors
    and learner have their own machines is modelled as
    (t_sample + t_learn) / max(t_sample, t_learn).

Everything it needs is the Python standard library, except matplotlib for
the plots, which it installs with pip (--user) when it is missing.

Examples:
  tests/bench/compare.py                          # the full grid: 7 x 5 x 3
  tests/bench/compare.py --algos grpo,dapo --staleness 0,2 --seeds 1 \\
      --steps 40 --out runs/compare-tiny          # a quick check
  tests/bench/compare.py --report-only --out runs/compare   # re-read only
  tests/bench/compare.py --model models/SmolLM2-135M-Instruct.Q4_1.gguf \\
      --algos grpo,rloo,dapo --staleness 2 --out runs/compare-smollm2
"""

import argparse
import json
import math
import os
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time

# Per-run defaults of the two kinds of grid: the char model on the built-in
# task (make run's settings), and a GGUF chat model on the chat arithmetic
# task (`rlhf run --model`'s, make run-smollm2's).
CHAR_PRESET = {"steps": 400, "target": 0.9, "eval_every": 20, "eval_n": 300,
               "batch_groups": 16, "lr": 1e-4, "actors": 2}
MODEL_PRESET = {"steps": 40, "target": 0.7, "eval_every": 10, "eval_n": 96,
                "batch_groups": 4, "lr": 2e-5, "actors": 1}
MODEL_LEARNER_FLAGS = ["--group", "4", "--max-new-tokens", "16", "--temperature", "0.7",
                       "--kl-beta", "0.01", "--lease-prompts", "2",
                       "--lease-timeout-ms", "120000", "--warmup", "2"]

ALGOS = ["grpo", "ppo", "reinforce", "rloo", "dr_grpo", "dapo", "gspo"]
EVAL_RE = re.compile(
    r"held-out greedy accuracy at step (\d+): ([0-9.]+) \(reward [-0-9.naif]+, "
    r"format [-0-9.naif]+, n=\d+, ([0-9.]+) s\)")


def parse_args():
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.split("\n")[2:]))
    p.add_argument("--algos", default=",".join(ALGOS),
                   help="comma-separated --algo names (default: all seven)")
    p.add_argument("--staleness", default="0,1,2,4,8",
                   help="comma-separated --max-staleness values; 0 is the synchronous mode")
    p.add_argument("--seeds", default="1,2,3", help="comma-separated seeds")
    p.add_argument("--model", default=None,
                   help="a GGUF chat model (SmolLM2-135M-Instruct: make model) trained on the "
                        "built-in chat arithmetic task instead of the char model; the flags "
                        "below marked [char | model] then take their second default, "
                        "`rlhf run --model`'s settings (group 4, 16 new tokens, temperature "
                        "0.7, KL beta 0.01, leases of 2 prompts)")
    p.add_argument("--steps", type=int, default=None,
                   help="learner steps per run [400 | 40]")
    p.add_argument("--target", type=float, default=None,
                   help="held-out accuracy to reach [0.9 | 0.7]")
    p.add_argument("--eval-every", type=int, default=None,
                   help="held-out evaluation every N steps, the curve's resolution [20 | 10]")
    p.add_argument("--eval-n", type=int, default=None,
                   help="held-out problems per evaluation [300 | 96]")
    p.add_argument("--batch-groups", type=int, default=None,
                   help="groups per update [16 | 4]")
    p.add_argument("--lr", type=float, default=None, help="learner learning rate [1e-4 | 2e-5]")
    p.add_argument("--max-digits", type=int, default=2, help="operands of 1..N digits")
    p.add_argument("--actors", type=int, default=None, help="actors per run [2 | 1]")
    p.add_argument("--rewards", type=int, default=1, help="reward servers per run")
    p.add_argument("--learner-args", default="",
                   help="more rlhf-learner flags for every run (one shell-quoted string)")
    p.add_argument("--algo-args", action="append", default=[], metavar="ALGO=FLAGS",
                   help="more rlhf-learner flags for one algorithm, e.g. "
                        "'ppo=--epochs 2 --minibatch 32' (repeatable)")
    p.add_argument("--init", default="runs/sft",
                   help="warm-start checkpoint; made by rlhf-sft if missing")
    p.add_argument("--sft-steps", type=int, default=4000, help="SFT steps if it is made")
    p.add_argument("--sft-layers", type=int, default=2,
                   help="layers of the warm start if it is made (rlhf run's --sft-layers)")
    p.add_argument("--label-noise", type=float, default=0.6, help="SFT label noise if it is made")
    p.add_argument("--bin", default="build", help="directory of the rlhf-* programs")
    p.add_argument("--out", default="runs/compare", help="where runs and reports go")
    p.add_argument("--port-base", type=int, default=17300,
                   help="first port to try (a free block is searched from here)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds before a run is killed")
    p.add_argument("--nice", type=int, default=10, help="niceness of the cluster processes")
    p.add_argument("--resume", action="store_true",
                   help="keep runs that already have a summary.json")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing; read OUT's runs and write the reports")
    p.add_argument("--no-plot", action="store_true", help="skip the PNGs (and matplotlib)")
    a = p.parse_args()
    preset = MODEL_PRESET if a.model else CHAR_PRESET
    for k, v in preset.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if a.model and not os.path.isfile(a.model):
        p.error(f"--model: no file '{a.model}' (make model fetches SmolLM2-135M-Instruct)")
    a.algos = [x for x in a.algos.split(",") if x]
    for x in a.algos:
        if x not in ALGOS:
            p.error(f"--algos: unknown algorithm '{x}' (known: {', '.join(ALGOS)})")
    try:
        a.staleness = [int(x) for x in a.staleness.split(",") if x]
        a.seeds = [int(x) for x in a.seeds.split(",") if x]
    except ValueError as e:
        p.error(f"--staleness/--seeds: {e}")
    if not a.algos or not a.staleness or not a.seeds:
        p.error("empty grid")
    extra = {}
    for item in a.algo_args:
        name, sep, flags = item.partition("=")
        if not sep or name not in ALGOS:
            p.error(f"--algo-args '{item}': expected ALGO=FLAGS with ALGO one of {ALGOS}")
        extra[name] = extra.get(name, []) + shlex.split(flags)
    a.algo_extra = extra
    return a


# ---- running --------------------------------------------------------------

def port_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_base(start, rewards):
    """A first port whose cluster layout (common/net/endpoints.h) is free."""
    for base in range(start, 60000, 50):
        ports = [base + i for i in range(5)] + [base + 10 + i for i in range(rewards)]
        if all(port_free(p) for p in ports):
            return base
    sys.exit("compare: no free block of ports found")


def spawn(argv, log_path, niceness):
    log = open(log_path, "wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True,
                            preexec_fn=(lambda: os.nice(niceness)) if niceness else None)
    log.close()
    return proc


def stop(proc, grace=10.0):
    """SIGTERM to the process group, then SIGKILL after grace seconds."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def ensure_warm_start(a):
    if os.path.exists(os.path.join(a.init, "config.json")):
        return
    print(f"compare: no warm start at {a.init}; running rlhf-sft ({a.sft_steps} steps)",
          flush=True)
    argv = [os.path.join(a.bin, "rlhf-sft"), "--out", a.init, "--steps", str(a.sft_steps),
            "--layers", str(a.sft_layers),
            "--seed", "1", "--max-digits", str(a.max_digits), "--label-noise",
            str(a.label_noise), "--eval-every", "0"]
    rc = subprocess.run(argv, preexec_fn=(lambda: os.nice(a.nice)) if a.nice else None).returncode
    if rc != 0:
        sys.exit(f"compare: rlhf-sft failed (exit {rc})")


def run_one(a, algo, stale, seed, run_dir):
    """One cluster run; returns the learner's exit code (None on timeout)."""
    if os.path.isdir(run_dir):
        subprocess.run(["rm", "-rf", run_dir], check=True)
    os.makedirs(run_dir)
    base = free_base(a.port_base, a.rewards)
    ep = lambda off: f"tcp://127.0.0.1:{base + off}"  # noqa: E731
    learner = [os.path.join(a.bin, "rlhf-learner"),
               "--lease", ep(0), "--weights", ep(1), "--results", ep(3), "--snapshot", ep(4),
               *(["--model", a.model] if a.model else ["--init", a.init]), "--ckpt-dir", os.path.join(run_dir, "ckpt"),
               "--metrics", os.path.join(run_dir, "metrics.jsonl"),
               "--summary", os.path.join(run_dir, "summary.json"),
               "--steps", str(a.steps), "--seed", str(seed), "--eval-n", str(a.eval_n),
               "--eval-every", str(a.eval_every), "--ckpt-every", "0",
               "--algo", algo, "--max-staleness", str(stale),
               "--max-digits", str(a.max_digits), "--lr", str(a.lr),
               "--batch-groups", str(a.batch_groups), "--status-every", "0"]
    if a.model:
        learner += MODEL_LEARNER_FLAGS
    learner += shlex.split(a.learner_args) + a.algo_extra.get(algo, [])
    with open(os.path.join(run_dir, "command.txt"), "w") as f:
        f.write(shlex.join(learner) + "\n")
    procs = [spawn(learner, os.path.join(run_dir, "learner.log"), a.nice)]
    samples = []
    for i in range(a.rewards):
        samples.append(ep(10 + i))
        procs.append(spawn([os.path.join(a.bin, "rlhf-reward"), "--samples", ep(10 + i),
                            "--results", ep(3), "--id", f"reward-{i}",
                            *(["--model", a.model] if a.model else [])],
                           os.path.join(run_dir, f"reward-{i}.log"), a.nice))
    for i in range(a.actors):
        procs.append(spawn([os.path.join(a.bin, "rlhf-actor"), "--lease", ep(0),
                            "--weights", ep(1), "--snapshot", ep(4),
                            "--reward", ",".join(samples), "--id", f"actor-{i}",
                            "--seed", str(seed * 100 + i)],
                           os.path.join(run_dir, f"actor-{i}.log"), a.nice))
    rc = None
    try:
        rc = procs[0].wait(a.timeout)
    except subprocess.TimeoutExpired:
        print(f"compare: {run_dir}: timed out after {a.timeout:.0f} s", flush=True)
    finally:
        for p in reversed(procs):
            stop(p)
    return rc


# ---- reading a run --------------------------------------------------------

def read_jsonl(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError:
                        pass
    except FileNotFoundError:
        pass
    return out


def mean(xs):
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else None


def read_run(run_dir, algo, stale, seed, target):
    """The measurements of one run (see the top), or None without a summary."""
    try:
        with open(os.path.join(run_dir, "summary.json")) as f:
            summ = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    recs = read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
    evals = []  # (step, accuracy, seconds the evaluation took)
    try:
        with open(os.path.join(run_dir, "learner.log"), errors="replace") as f:
            for line in f:
                m = EVAL_RE.search(line)
                if m:
                    evals.append((int(m.group(1)), float(m.group(2)), float(m.group(3))))
    except FileNotFoundError:
        pass
    # The loop starts after setup and the first evaluation: wall_s counts from
    # the learner's start, train_wall_s from the loop's.
    t_loop = summ.get("wall_s", 0) - summ.get("train_wall_s", 0)
    by_step = {r["step"]: r for r in recs}
    # Samples drawn: the completions trained on, plus the groups dropped
    # before training (too stale, or flat under dynamic sampling), which the
    # actors paid for as well.
    cum_samples, total = {}, 0
    for r in recs:
        total += r.get("samples", 0)
        G = r["samples"] / r["groups"] if r.get("groups") else 0
        cum_samples[r["step"]] = total + round(
            G * (r.get("groups_flat", 0) + r.get("dropped_stale", 0)))
    curve, eval_time = [], 0.0
    for step, acc, secs in evals:
        if step == 0:
            curve.append((0.0, 0, acc))  # the start, before the loop
            continue
        r = by_step.get(step)
        if r is None:
            continue
        t = r["wall_s"] - t_loop - eval_time
        curve.append((t, cum_samples.get(r["step"], 0), acc))
        eval_time += secs
    acc_after = summ.get("accuracy_after")
    if acc_after is not None and (not curve or curve[-1][2] != acc_after) and recs:
        curve.append((recs[-1]["wall_s"] - t_loop - eval_time, cum_samples[recs[-1]["step"]],
                      acc_after))
    hit = next((c for c in curve if c[2] >= target), None)
    best = max(curve, key=lambda c: c[2]) if curve else None
    n = len(recs)
    tail = recs[-max(1, n // 10):] if recs else []
    step_s = mean([r.get("step_s") for r in recs])
    intervals = [b["wall_s"] - a["wall_s"] for a, b in zip(recs, recs[1:])]
    return {
        "algo": algo, "staleness": stale, "seed": seed, "run_dir": run_dir,
        "steps": summ.get("steps"), "samples": summ.get("samples"),
        "accuracy_before": summ.get("accuracy_before"), "accuracy_after": acc_after,
        "reached": hit is not None,
        "time_to_target": hit[0] if hit else None,
        "samples_to_target": hit[1] if hit else None,
        "best_accuracy": best[2] if best else None,
        "time_to_best": best[0] if best else None,
        "samples_to_best": best[1] if best else None,
        "kl_final": mean([r.get("kl_ref") for r in tail]),
        "mismatch": mean([r.get("mismatch_abs") for r in recs if r.get("n_fresh", 0) > 0]),
        "clip_frac": mean([r.get("clip_frac") for r in recs]),
        "staleness_mean": mean([r.get("staleness_mean") for r in recs]),
        "dropped_stale": summ.get("dropped_stale"),
        "groups_flat": summ.get("groups_flat", 0),
        "samples_per_s": summ.get("samples_per_s"),
        "train_wall_s": summ.get("train_wall_s"),
        "learn_s": step_s,
        "interval_s": mean(intervals),
        "curve": curve,
    }


# ---- reports --------------------------------------------------------------

def agg(vals):
    """(mean, sample std or None, n) of the finite values."""
    xs = [v for v in vals if v is not None and math.isfinite(v)]
    if not xs:
        return None, None, 0
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None), len(xs)


def fmt(vals, digits=3, scale=1.0):
    m, s, n = agg(vals)
    if m is None:
        return "-"
    txt = f"{m * scale:.{digits}f}"
    if s is not None:
        txt += f" ± {s * scale:.{digits}f}"
    return txt


def cells(rows, target):
    """The table's columns of one (algorithm, staleness) cell of the grid."""
    reached = [r for r in rows if r["reached"]]
    # A run that never reaches the target counts with its best accuracy.
    t_to = [r["time_to_target"] if r["reached"] else r["time_to_best"] for r in rows]
    s_to = [r["samples_to_target"] if r["reached"] else r["samples_to_best"] for r in rows]
    return {
        "runs": str(len(rows)),
        "reached": f"{len(reached)}/{len(rows)}",
        "time": fmt(t_to, 1) + ("" if len(reached) == len(rows) else " *"),
        "samples": fmt(s_to, 0) + ("" if len(reached) == len(rows) else " *"),
        "best": fmt([r["best_accuracy"] for r in rows]),
        "final": fmt([r["accuracy_after"] for r in rows]),
        "kl": fmt([r["kl_final"] for r in rows], 4),
        "mismatch": fmt([r["mismatch"] for r in rows], 2, 1e6),
        "clip": fmt([r["clip_frac"] for r in rows], 3),
        "stale": fmt([r["staleness_mean"] for r in rows], 2),
        "sps": fmt([r["samples_per_s"] for r in rows], 1),
        "learn": fmt([r["learn_s"] for r in rows], 3),
        "interval": fmt([r["interval_s"] for r in rows], 3),
    }


def write_markdown(a, results, path):
    algos = [x for x in ALGOS if any(r["algo"] == x for r in results)]
    stales = sorted({r["staleness"] for r in results})
    cols = [("algo", "algorithm"), ("staleness", "max staleness"), ("reached", f"≥ {a.target}"),
            ("time", f"time to {a.target} (s)"), ("samples", f"samples to {a.target}"),
            ("best", "best acc"), ("final", "final acc"), ("kl", "KL to ref"),
            ("mismatch", "mismatch (1e-6)"), ("clip", "clip frac"), ("stale", "staleness"),
            ("sps", "samples/s"), ("learn", "update s"), ("interval", "s between updates")]
    task = (f"{os.path.basename(a.model)} on the chat arithmetic task" if a.model
            else "built-in task")
    lines = [f"# Algorithm comparison: {task}, target held-out accuracy {a.target}", "",
             f"{time.strftime('%Y-%m-%d %H:%M')} on {os.uname().nodename} "
             f"({os.cpu_count()} cores); {len(results)} runs; "
             f"{a.steps} steps of {a.batch_groups} groups, lr {a.lr}, "
             f"{a.actors} actor(s), {a.rewards} reward server(s); seeds "
             f"{','.join(map(str, sorted({r['seed'] for r in results})))}.", "",
             "Each cell: mean ± sample std over the seeds. Times are training wall time "
             "(the learner's loop, periodic evaluations excluded). * = not every seed "
             "reached the target: those count with the time/samples to their best "
             "accuracy. KL: mean k3 per token to the reference over the last tenth of "
             "the steps. Mismatch: mean |logp learner - logp actor| of fresh tokens.", "",
             "| " + " | ".join(h for _, h in cols) + " |",
             "|" + "---|" * len(cols)]
    for algo in algos:
        for st in stales:
            rows = [r for r in results if r["algo"] == algo and r["staleness"] == st]
            if not rows:
                continue
            c = cells(rows, a.target)
            c["algo"], c["staleness"] = algo, str(st)
            lines.append("| " + " | ".join(c[k] for k, _ in cols) + " |")
    # Synchronous against asynchronous, and the model of a cluster.
    lines += ["", "## Synchronous (staleness 0) against asynchronous", "",
              "Measured: time to the target at staleness 0 and at the best staleness. "
              "Modelled: with actors and learner on their own machines, a synchronous step "
              "costs t_sample + t_learn and an asynchronous one max(t_sample, t_learn); "
              "t_learn is the update time and t_sample the rest of the interval between "
              "updates of the synchronous runs (on a shared machine both are inflated by "
              "sharing the cores).", "",
              "| algorithm | sync time (s) | best async time (s) | at staleness | measured speed-up "
              "| t_sample (s) | t_learn (s) | modelled speed-up |", "|---|---|---|---|---|---|---|---|"]
    for algo in algos:
        sync = [r for r in results if r["algo"] == algo and r["staleness"] == 0]
        if not sync:
            continue
        ts, _, _ = agg([r["time_to_target"] for r in sync])
        best = None
        for st in stales:
            if st == 0:
                continue
            rows = [r for r in results if r["algo"] == algo and r["staleness"] == st]
            m, _, n = agg([r["time_to_target"] for r in rows])
            if m is not None and n == len(rows) and (best is None or m < best[0]):
                best = (m, st)
        learn, _, _ = agg([r["learn_s"] for r in sync])
        inter, _, _ = agg([r["interval_s"] for r in sync])
        samp = inter - learn if inter is not None and learn is not None else None
        model = ((samp + learn) / max(samp, learn)
                 if samp is not None and samp > 0 and learn else None)
        meas = ts / best[0] if ts is not None and best else None
        f = lambda x, d=1: "-" if x is None else f"{x:.{d}f}"  # noqa: E731
        lines.append(f"| {algo} | {f(ts)} | {f(best[0] if best else None)} | "
                     f"{best[1] if best else '-'} | {f(meas, 2)} | {f(samp, 3)} | "
                     f"{f(learn, 3)} | {f(model, 2)} |")
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def ensure_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("compare: installing matplotlib (pip --user)", flush=True)
        rc = subprocess.run([sys.executable, "-m", "pip", "install", "--user", "--quiet",
                             "matplotlib"]).returncode
        if rc != 0:
            print("compare: pip could not install matplotlib; no plots", file=sys.stderr)
            return None
        import site
        import importlib
        if site.getusersitepackages() not in sys.path:
            sys.path.append(site.getusersitepackages())
        importlib.invalidate_caches()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def write_plots(a, results, out):
    plt = ensure_matplotlib()
    if plt is None:
        return
    algos = [x for x in ALGOS if any(r["algo"] == x for r in results)]
    stales = sorted({r["staleness"] for r in results})
    panels = [
        ("time_to", f"training time to {a.target} (s; * best if not reached)"),
        ("samples_to", f"samples to {a.target} (best if not reached)"),
        ("accuracy_after", "final held-out accuracy"),
        ("kl_final", "KL to the reference (k3/token)"),
        ("clip_frac", "clip fraction"),
        ("samples_per_s", "samples/s"),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    for ax, (key, title) in zip(axes.flat, panels):
        for algo in algos:
            xs, ms, ss, hollow = [], [], [], []
            for st in stales:
                rows = [r for r in results if r["algo"] == algo and r["staleness"] == st]
                if not rows:
                    continue
                if key == "time_to":
                    vals = [r["time_to_target"] if r["reached"] else r["time_to_best"]
                            for r in rows]
                elif key == "samples_to":
                    vals = [r["samples_to_target"] if r["reached"] else r["samples_to_best"]
                            for r in rows]
                else:
                    vals = [r[key] for r in rows]
                m, s, _ = agg(vals)
                if m is None:
                    continue
                xs.append(st)
                ms.append(m)
                ss.append(s or 0.0)
                hollow.append(not all(r["reached"] for r in rows))
            if not xs:
                continue
            ax.errorbar(xs, ms, yerr=ss, marker="o", capsize=3, label=algo)
            if key in ("time_to", "samples_to"):
                for x, m, h in zip(xs, ms, hollow):
                    if h:
                        ax.plot([x], [m], marker="x", color="k", markersize=9)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("max staleness (0 = synchronous)")
        ax.set_xticks(stales)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    task = os.path.basename(a.model) if a.model else "built-in task"
    fig.suptitle(f"{task}: {len(results)} runs, mean ± std over seeds "
                 f"(x: some seeds did not reach {a.target})")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "compare.png"), dpi=110)
    plt.close(fig)

    n = len(algos)
    cols = min(n, 4)
    rows_n = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.2 * cols, 3.4 * rows_n), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for ax, algo in zip(axes.flat, algos):
        for r in results:
            if r["algo"] != algo or not r["curve"]:
                continue
            i = stales.index(r["staleness"])
            ax.plot([c[0] for c in r["curve"]], [c[2] for c in r["curve"]],
                    color=cmap(i / max(1, len(stales) - 1)), alpha=0.8,
                    label=f"staleness {r['staleness']}" if r["seed"] == min(a.seeds) else None)
        ax.axhline(a.target, color="k", lw=0.8, ls="--")
        ax.set_title(algo)
        ax.set_xlabel("training wall time (s)")
        ax.set_ylabel("held-out accuracy")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "curves.png"), dpi=110)
    plt.close(fig)


def main():
    a = parse_args()
    os.makedirs(a.out, exist_ok=True)
    grid = [(algo, st, seed) for algo in a.algos for st in a.staleness for seed in a.seeds]
    if not a.report_only:
        for prog in ("rlhf-learner", "rlhf-actor", "rlhf-reward", "rlhf-sft"):
            if not os.access(os.path.join(a.bin, prog), os.X_OK):
                sys.exit(f"compare: {a.bin}/{prog} is missing: run make first")
        if not a.model:
            ensure_warm_start(a)
        for k, (algo, st, seed) in enumerate(grid, 1):
            run_dir = os.path.join(a.out, f"{algo}-s{st}-seed{seed}")
            if a.resume and os.path.exists(os.path.join(run_dir, "summary.json")):
                print(f"compare: [{k}/{len(grid)}] {run_dir}: kept", flush=True)
                continue
            t0 = time.time()
            print(f"compare: [{k}/{len(grid)}] {algo}, max staleness {st}, seed {seed} ...",
                  flush=True)
            rc = run_one(a, algo, st, seed, run_dir)
            r = read_run(run_dir, algo, st, seed, a.target)
            if rc != 0 or r is None:
                print(f"compare:   failed (learner exit {rc}); see {run_dir}/learner.log",
                      flush=True)
                continue
            print(f"compare:   accuracy {r['accuracy_before']:.3f} -> {r['accuracy_after']:.3f}"
                  f" (best {r['best_accuracy']:.3f}), "
                  + (f"{a.target} at {r['time_to_target']:.1f} s / {r['samples_to_target']} "
                     "samples" if r["reached"] else f"{a.target} not reached")
                  + f", {r['samples_per_s']:.1f} samples/s, {time.time() - t0:.0f} s in all",
                  flush=True)
    results = []
    for algo, st, seed in grid:
        r = read_run(os.path.join(a.out, f"{algo}-s{st}-seed{seed}"), algo, st, seed, a.target)
        if r:
            results.append(r)
    if not results:
        sys.exit(f"compare: no finished runs under {a.out}")
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    write_markdown(a, results, os.path.join(a.out, "compare.md"))
    if not a.no_plot:
        write_plots(a, results, a.out)
    print(f"compare: {len(results)}/{len(grid)} runs; wrote {a.out}/compare.md"
          + ("" if a.no_plot else f", {a.out}/compare.png, {a.out}/curves.png")
          + f", {a.out}/results.json", flush=True)


if __name__ == "__main__":
    main()
