"""The command line of a Python reward server:

    python -m rlhf_reward --module mymod:score --results tcp://learner:5558 ...
    rlhf-reward-py --module path/to/file.py:score ...

--module names the score function: MODULE[:FUNCTION] (a module importable
from the current directory or sys.path) or FILE.py[:FUNCTION]; FUNCTION
defaults to "score". Exit status: 0 after SIGINT/SIGTERM, 1 when the server
cannot start, 2 for a bad command line, 130 for a second signal while
stopping (rlhf.c's daemons use the same)."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import os
import sys
from typing import cast

import zmq

from . import __version__
from . import log as logmod
from .bpe import GgufError
from .keys import CertError
from .log import LEVELS, level_from_env, log
from .server import (
    ENDPOINT_RESULTS,
    ENDPOINT_SAMPLES,
    METRICS_STALE_S,
    REWARD_LIMIT,
    Config,
    ConfigError,
    ScoreFn,
    Server,
    install_signal_handlers,
)
from .text import CHARSET_DEFAULT


class ModuleError(Exception):
    """--module names nothing callable; the message says what is missing."""


def load_score(spec: str) -> ScoreFn:
    """The function --module names: MODULE[:FUNCTION] or FILE.py[:FUNCTION]."""
    target, _, func = spec.partition(":")
    func = func or "score"
    if not target:
        raise ModuleError(f"--module '{spec}': expected MODULE[:FUNCTION] or FILE.py[:FUNCTION]")
    if target.endswith(".py"):
        path = os.path.abspath(target)
        if not os.path.isfile(path):
            raise ModuleError(f"--module '{spec}': no file {path}")
        name = os.path.splitext(os.path.basename(path))[0]
        mod_spec = importlib.util.spec_from_file_location(name, path)
        if mod_spec is None or mod_spec.loader is None:
            raise ModuleError(f"--module '{spec}': cannot load {path}")
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[name] = module
        mod_spec.loader.exec_module(module)
    else:
        # As `python -m` does: modules in the current directory come first.
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as e:
            if e.name and target.split(".")[0] == e.name.split(".")[0]:
                raise ModuleError(
                    f"--module '{spec}': no module '{e.name}' (sys.path: {sys.path[0]}, ...)"
                ) from None
            raise
    fn = getattr(module, func, None)
    if fn is None:
        raise ModuleError(f"--module '{spec}': {module.__name__} has no '{func}'")
    if not callable(fn):
        raise ModuleError(f"--module '{spec}': {module.__name__}.{func} is not callable")
    return cast(ScoreFn, fn)


def _float32(text: str) -> float:
    v = float(text)
    if not math.isfinite(v) or abs(v) > 3e38:
        raise argparse.ArgumentTypeError(f"'{text}': expected a finite number within +-3e38")
    return v


def _nonneg(text: str) -> float:
    v = float(text)
    if not 0 <= v < 1e6:
        raise argparse.ArgumentTypeError(f"'{text}': expected 0 <= S < 1e6")
    return v


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rlhf_reward",
        description=(
            "Reward server in Python for rlhf.c: scores SampledGroups from actors with your\n"
            "score(prompt, completion, answer, meta) -> float and sends ScoredGroups to the\n"
            "learner, as rlhf-reward does. A score function that raises, or returns a\n"
            "non-finite or out-of-range reward, refuses that group (counted as a reject,\n"
            'logged); the learner re-issues it. README "A reward server in Python".'
        ),
        epilog=(
            "SIGINT or SIGTERM stops it cleanly (exit 0; a second one exits 130 at once).\n"
            "Exit 1: cannot start (keys, endpoints, the module failed to load); 2: bad usage."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--module",
        required=True,
        metavar="MOD[:FN]",
        help="the score function: MODULE[:FUNCTION] or FILE.py[:FUNCTION]\n"
        "(FUNCTION defaults to 'score'); required",
    )
    s = p.add_argument_group("sockets")
    s.add_argument(
        "--samples",
        default=ENDPOINT_SAMPLES,
        metavar="EP",
        help="endpoint to bind for actors' samples (default %(default)s)",
    )
    s.add_argument(
        "--results",
        default=ENDPOINT_RESULTS,
        metavar="EP",
        help="learner's results endpoint to connect (default %(default)s)",
    )
    s.add_argument(
        "--id",
        default="reward-py",
        metavar="NAME",
        help="this server's name in logs (default %(default)s)",
    )
    sc = p.add_argument_group("scoring")
    sc.add_argument(
        "--scorer-id",
        default="",
        metavar="NAME",
        help="ScoredGroup.scorer_id (default python:MODULE.FUNCTION)",
    )
    sc.add_argument(
        "--charset",
        default=CHARSET_DEFAULT,
        metavar="CHARS",
        help="the model's char tokenizer, ids 3.. in this order (default rlhf.c's)",
    )
    sc.add_argument(
        "--model",
        default="",
        metavar="PATH.gguf",
        help="decode with this model's BPE tokenizer (the chat task)\n"
        "instead of the char tokenizer (default none: the char tokenizer)",
    )
    sc.add_argument(
        "--reward-min",
        type=_float32,
        default=-REWARD_LIMIT,
        metavar="X",
        help="lowest valid reward; a group with one below is refused (default %(default)g)",
    )
    sc.add_argument(
        "--reward-max",
        type=_float32,
        default=REWARD_LIMIT,
        metavar="X",
        help="highest valid reward; a group with one above is refused (default %(default)g)",
    )
    o = p.add_argument_group("logs and metrics")
    o.add_argument(
        "--status-every",
        type=_nonneg,
        default=5.0,
        metavar="S",
        help="seconds between status lines, 0 = off (default %(default)g)",
    )
    o.add_argument(
        "--log-level",
        choices=list(LEVELS),
        default=None,
        help="error, warn, info or debug (default $RLHF_LOG, else info)",
    )
    o.add_argument(
        "--metrics-addr",
        default="",
        metavar="HOST:PORT",
        help="serve Prometheus /metrics and /healthz over HTTP here\n"
        "(port 0 picks one, logged) (default off)",
    )
    o.add_argument(
        "--metrics-stale-s",
        type=float,
        default=METRICS_STALE_S,
        metavar="S",
        help="/healthz answers 503 after S s without a loop pass (default %(default)g)",
    )
    k = p.add_argument_group("security")
    k.add_argument(
        "--keys",
        default="",
        metavar="DIR",
        help='CURVE keys (README "Keys"): DIR/<key-name>.key, the learner\'s\n'
        "DIR/learner.pub, allow-list DIR/authorized/*.pub (default none: plaintext)",
    )
    k.add_argument(
        "--key-name",
        default="reward",
        metavar="NAME",
        help="this server's key pair DIR/NAME.key (default %(default)s)",
    )
    k.add_argument(
        "--insecure",
        action="store_true",
        help="without --keys, bind non-loopback endpoints anyway\n"
        "(anyone who reaches them is let in) (default off)",
    )
    p.add_argument("--version", action="version", version=f"rlhf-reward {__version__}")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logmod.setup("reward", args.log_level or level_from_env())
    cfg = Config(
        samples=args.samples,
        results=args.results,
        id=args.id,
        scorer_id=args.scorer_id,
        charset=args.charset,
        model_path=args.model,
        reward_min=args.reward_min,
        reward_max=args.reward_max,
        status_every_s=args.status_every,
        metrics_addr=args.metrics_addr,
        metrics_stale_s=args.metrics_stale_s,
        keys_dir=args.keys,
        key_name=args.key_name,
        insecure=args.insecure,
    )
    try:
        score = load_score(args.module)
    except ModuleError as e:
        log.error("%s", e)
        return 2
    except Exception:  # noqa: BLE001 (the user's module failed while loading: show where)
        log.exception("--module '%s': loading it failed", args.module)
        return 1
    try:
        server = Server(score, cfg)
    except (ConfigError, ValueError) as e:
        log.error("%s", e)
        return 2
    log.info("%s: %s", args.id, " ".join(f"{k}={v!r}" for k, v in sorted(vars(args).items())))
    install_signal_handlers(server)
    try:
        server.start()
        server.run()
    except (ConfigError, CertError, GgufError, zmq.ZMQError, OSError, RuntimeError) as e:
        log.error("%s: cannot serve: %s", args.id, e)
        server.close()
        return 1
    server.close()
    log.info("shut down")
    return 0
