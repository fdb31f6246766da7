"""The reward server: a user's score function joined to a running rlhf.c
cluster, speaking the wire protocol as rlhf-reward does.

    actors PUSH --tcp--> [samples PULL, bound] --> decode, check, score -->
        [results PUSH, connected] --tcp--> learner PULL

Each frame on the samples socket is one SampledGroup (proto/rlhf.proto). It
is checked as rlhf-reward checks it (rlhf_reward.wire), its prompt and
completions are rendered as text (rlhf_reward.text), every completion is
scored with score(prompt, completion, answer, meta), and one ScoredGroup per
group goes to the learner, scores in completion order.

A group is refused, counted by reason and logged (rate-limited), never sent,
when: the frame is not a valid SampledGroup (the wire checks); the score
function raises for one of its completions, returns something that is not a
number, or a (number, {name: number}) pair (reason bad_value); it returns
NaN or an infinity (nonfinite); or a reward lies outside reward_min ..
reward_max (bad_value; the learner refuses those too, keep both ranges
alike). That is what rlhf-reward does with a scorer's error: the learner never
sees the group, its lease slot is re-issued at the deadline, and the run goes
on. The server keeps serving.

When the learner is slow, sends block in bounded steps and back-pressure
reaches the actors through the high-water marks. Ownership: a Server owns its
ZeroMQ context, sockets and threads; close() releases them. Threading: one
thread runs start/run/close; stop() may be called from any thread or a signal
handler."""

from __future__ import annotations

import json
import math
import numbers
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Union

import zmq
from google.protobuf.message import DecodeError

from . import rlhf_pb2  # type: ignore[attr-defined]  # generated at build time
from .bpe import BpeTokenizer
from .keys import CertError, Zap, is_loopback, load_cert
from .log import log
from .metrics import MetricsServer
from .text import CHARSET_DEFAULT, CharTokenizer
from .wire import (
    FLOAT32_MAX,
    MAX_COMPONENTS,
    MAX_FRAME,
    MAX_FRAME_RECV,
    MAX_NAME,
    PROTOCOL_VERSION,
    Reject,
    Rejects,
    check_sampled_group,
)

ScoreValue = Union[float, tuple[float, Mapping[str, float]]]
# score(prompt, completion, answer, meta) -> reward, or (reward, {component: value}).
ScoreFn = Callable[[str, str, str, dict[str, Any]], ScoreValue]

ENDPOINT_SAMPLES = "tcp://127.0.0.1:5557"
ENDPOINT_RESULTS = "tcp://127.0.0.1:5558"
REWARD_LIMIT = 1e4  # the learner's default --reward-min/--reward-max magnitude
POLL_MS = 100  # longest wait before the stop flag is looked at again
BURST = 64  # frames taken from the samples socket per wake-up
METRICS_STALE_S = 60.0


class ConfigError(ValueError):
    """A configuration the server cannot run with; the message names the setting."""


@dataclass
class Config:
    """Everything a Server needs besides the score function. The defaults
    are rlhf-reward's; README "A reward server in Python" lists them."""

    samples: str = ENDPOINT_SAMPLES  # bind: actors push SampledGroups here
    results: str = ENDPOINT_RESULTS  # connect: the learner's results PULL
    id: str = "reward-py"  # this server's name in logs
    scorer_id: str = ""  # ScoredGroup.scorer_id; "" = "python:<module>.<function>"
    charset: str = CHARSET_DEFAULT  # the char tokenizer's charset (the model's)
    model_path: str = ""  # a GGUF model: decode with its BPE tokenizer instead (the chat task)
    reward_min: float = -REWARD_LIMIT  # lowest valid reward
    reward_max: float = REWARD_LIMIT  # highest valid reward
    status_every_s: float = 5.0  # seconds between status lines; 0 = none
    metrics_addr: str = ""  # HOST:PORT of /metrics and /healthz; "" = off
    metrics_stale_s: float = METRICS_STALE_S  # /healthz turns 503 after this long
    keys_dir: str = ""  # CURVE keys directory (README "Keys"); "" = plaintext
    key_name: str = "reward"  # this server's key pair keys_dir/<key_name>.key
    insecure: bool = False  # without keys, bind non-loopback endpoints anyway

    def check(self) -> None:
        """Raises ConfigError naming the first bad setting."""
        for name in ("samples", "results"):
            ep = getattr(self, name)
            if not ep or len(ep.encode()) > 255:
                raise ConfigError(f"{name} endpoint '{ep}': expected 1..255 bytes")
        if not self.id or len(self.id.encode()) > MAX_NAME:
            raise ConfigError(f"id '{self.id}': expected 1..{MAX_NAME} bytes")
        if len(self.scorer_id.encode()) > MAX_NAME:
            raise ConfigError(f"scorer id '{self.scorer_id[:40]}...': expected <= {MAX_NAME} bytes")
        for name in ("reward_min", "reward_max"):
            v = getattr(self, name)
            if not (math.isfinite(v) and abs(v) <= FLOAT32_MAX):
                raise ConfigError(f"{name} {v}: expected a finite float32")
        if not self.reward_min < self.reward_max:
            raise ConfigError(
                f"reward_min {self.reward_min:g} >= reward_max {self.reward_max:g}: expected min < max"
            )
        if not 0.0 <= self.status_every_s < 1e6:
            raise ConfigError(f"status interval {self.status_every_s:g} s, expected [0, 1e6)")
        if not 0.1 <= self.metrics_stale_s <= 86400:
            raise ConfigError(f"metrics stale time {self.metrics_stale_s:g} s, expected 0.1..86400")
        if self.model_path and self.charset != CHARSET_DEFAULT:
            raise ConfigError(
                "a model and a charset: give one (the model's tokenizer or the char one)"
            )
        if not self.keys_dir and not self.insecure and not is_loopback(self.samples):
            raise ConfigError(
                f"bind '{self.samples}' is not loopback and there are no keys: give --keys DIR "
                '(README "Keys"), or --insecure to let anyone who reaches it in'
            )


@dataclass
class Stats:
    groups_received: int = 0  # frames taken from the samples socket
    groups_scored: int = 0  # ScoredGroups handed to the results socket
    completions_scored: int = 0  # completions in those groups
    groups_unsent: int = 0  # scored but dropped at shutdown (no learner)
    score_seconds: float = 0.0  # time spent scoring (decoding and the score function)
    rejects: dict[str, int] = field(default_factory=dict)  # refused frames and groups, by reason
    refused_auth: int = 0  # connections refused by CURVE/ZAP (also rejects "unauthorized")


def _default_scorer_id(score: ScoreFn) -> str:
    module = getattr(score, "__module__", None) or "?"
    name = getattr(score, "__qualname__", None) or type(score).__name__
    return f"python:{module}.{name}"[:MAX_NAME]


def _sock_opts(s: zmq.Socket[Any], send_timeout_ms: int) -> None:
    """rlhf.c's socket defaults (common/net/zsock.h WIRE_SOCK_DEFAULTS)."""
    s.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_RECV)
    s.setsockopt(zmq.LINGER, 200)
    s.setsockopt(zmq.SNDHWM, 1000)
    s.setsockopt(zmq.RCVHWM, 1000)
    s.setsockopt(zmq.SNDTIMEO, send_timeout_ms)
    s.setsockopt(zmq.RECONNECT_IVL, 100)
    s.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
    # A peer silent for three heartbeats is dead; libzmq then reconnects.
    s.setsockopt(zmq.HEARTBEAT_IVL, 2000)
    s.setsockopt(zmq.HEARTBEAT_TIMEOUT, 6000)
    s.setsockopt(zmq.IMMEDIATE, 1)


class Server:
    """One reward server: Server(score, cfg), start(), run(), close()."""

    def __init__(self, score: ScoreFn, cfg: Config | None = None) -> None:
        if not callable(score):
            raise ConfigError(f"score function {score!r} is not callable")
        self.cfg = cfg or Config()
        self.cfg.check()
        self.score = score
        self.scorer_id = self.cfg.scorer_id or _default_scorer_id(score)
        # The BPE of cfg.model_path replaces it in start().
        self.tok: CharTokenizer | BpeTokenizer = CharTokenizer(self.cfg.charset)
        self.samples_endpoint = ""  # as bound, port filled in
        self._rejects = Rejects()
        self._stats = Stats()
        # A plain flag: set from signal handlers and other threads, read by the loop
        # (one store of a bool under the GIL; an Event's lock would not be signal-safe).
        self._stopping = False
        self._ctx: zmq.Context[Any] | None = None
        self._samples: zmq.Socket[Any] | None = None
        self._results: zmq.Socket[Any] | None = None
        self._zap: Zap | None = None
        self._refused_auth = 0
        self._metrics: MetricsServer | None = None
        self._t_status = time.monotonic()
        self._scored_at_status = 0

    # ---- life cycle -------------------------------------------------------

    def start(self) -> None:
        """Loads the model's tokenizer and the keys, binds samples and
        connects results (and starts the metrics endpoint). Raises
        ConfigError, CertError, GgufError or zmq.ZMQError; close() releases
        what was made."""
        cfg = self.cfg
        if cfg.model_path:
            self.tok = BpeTokenizer.from_gguf(cfg.model_path)
        self._ctx = zmq.Context()
        own = None
        learner_pub = None
        if cfg.keys_dir:
            if not zmq.has("curve"):
                raise ConfigError(f"--keys {cfg.keys_dir}: this libzmq has no CURVE")
            own = load_cert(f"{cfg.keys_dir}/{cfg.key_name}.key", need_secret=True)
            if not cfg.results.startswith("inproc://"):
                learner_pub = load_cert(f"{cfg.keys_dir}/learner.pub", need_secret=False)
            self._zap = Zap(self._ctx, f"{cfg.keys_dir}/authorized", cfg.id, self._rejects)

        s = self._samples = self._ctx.socket(zmq.PULL)
        _sock_opts(s, POLL_MS)
        if own and not cfg.samples.startswith("inproc://"):
            s.setsockopt(zmq.CURVE_SERVER, 1)
            s.setsockopt(zmq.CURVE_SECRETKEY, own.secret_z85.encode())
            assert self._zap is not None
            self._zap.watch(s, "samples")
        elif not is_loopback(cfg.samples):
            log.warning(
                "%s: socket 'samples': bound to %s without keys (--insecure): anyone who reaches "
                "it is let in",
                cfg.id,
                cfg.samples,
            )
        try:
            s.bind(cfg.samples)
        except zmq.ZMQError as e:
            raise zmq.ZMQError(e.errno, f"bind samples '{cfg.samples}': {e.strerror}") from None
        self.samples_endpoint = s.getsockopt_string(zmq.LAST_ENDPOINT)

        r = self._results = self._ctx.socket(zmq.PUSH)
        # Short send timeouts so a blocked send notices the stop flag quickly.
        _sock_opts(r, POLL_MS)
        if own and learner_pub:
            r.setsockopt(zmq.CURVE_SERVERKEY, learner_pub.public_z85.encode())
            r.setsockopt(zmq.CURVE_PUBLICKEY, own.public_z85.encode())
            r.setsockopt(zmq.CURVE_SECRETKEY, own.secret_z85.encode())
        try:
            r.connect(cfg.results)
        except zmq.ZMQError as e:
            raise zmq.ZMQError(e.errno, f"connect results '{cfg.results}': {e.strerror}") from None

        if cfg.metrics_addr:
            self._metrics = MetricsServer(
                cfg.metrics_addr, cfg.metrics_stale_s, self._metrics_snapshot
            )
        self._t_status = time.monotonic()
        log.info(
            "%s: samples bound at %s, results to %s, scorer %s (%s, %d ids), rewards in [%g, %g]%s",
            cfg.id,
            self.samples_endpoint,
            cfg.results,
            self.scorer_id,
            f"the BPE of {cfg.model_path}" if cfg.model_path else "char tokenizer",
            self.tok.vocab_size,
            cfg.reward_min,
            cfg.reward_max,
            f", CURVE keys of {cfg.keys_dir}/{cfg.key_name}.key" if own else "",
        )

    def stop(self) -> None:
        """Makes run() return soon. Thread-safe; safe in a signal handler."""
        self._stopping = True

    @property
    def is_stopping(self) -> bool:
        return self._stopping

    def close(self) -> None:
        """Stops the ZAP and HTTP threads, closes the sockets with their
        short linger and terminates the context. Idempotent."""
        if self._metrics:
            self._metrics.close()
            self._metrics = None
        if self._zap:
            self._zap.close()
            self._refused_auth = self._zap.refused  # stats() after close() still has it
            self._zap = None
        for s in (self._samples, self._results):
            if s is not None:
                s.close()
        self._samples = self._results = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    def __enter__(self) -> Server:  # noqa: PYI034 (no typing_extensions dependency)
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the loop ---------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> None:
        """Serves until stop() (or the given event) is set, logging a status
        line every status_every_s and a final one. Wakes at least every 100 ms."""
        assert self._samples is not None, "start() first"
        poller = zmq.Poller()
        poller.register(self._samples, zmq.POLLIN)
        every = self.cfg.status_every_s
        next_status = time.monotonic() + every
        while not self._stopping and not (stop is not None and stop.is_set()):
            if self._metrics:
                self._metrics.tick()
            if poller.poll(POLL_MS):
                for _ in range(BURST):
                    if self._stopping or not self._take_one():
                        break
            if every > 0 and time.monotonic() >= next_status:
                log.info("%s: %s", self.cfg.id, self.status_line())
                next_status = time.monotonic() + every
        log.info("%s: stopping: %s", self.cfg.id, self.status_line())

    def _take_one(self) -> bool:
        """Takes one frame if there is one, and scores and forwards it.
        False when the socket had nothing."""
        assert self._samples is not None
        try:
            frame = self._samples.recv(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return False
        self._stats.groups_received += 1
        where = self.cfg.id
        if self._samples.getsockopt(zmq.RCVMORE):
            while self._samples.getsockopt(zmq.RCVMORE):
                self._samples.recv(copy=False)
            self._rejects.note(
                where, "frame", Reject("unknown", "multipart message, expected one frame")
            )
            return True
        data = frame.bytes
        if len(data) > MAX_FRAME:
            self._rejects.note(
                where,
                "frame",
                Reject("oversized", f"frame of {len(data)} bytes, expected <= {MAX_FRAME}"),
            )
            return True
        g = rlhf_pb2.SampledGroup()
        try:
            g.ParseFromString(data)
            check_sampled_group(g, self.tok.vocab_size)
            t0 = time.monotonic()
            try:
                sg = self._score_group(g)
            finally:
                self._stats.score_seconds += time.monotonic() - t0
        except DecodeError as e:
            self._rejects.note(
                where, "SampledGroup", Reject("garbage", f"not a SampledGroup ({e})")
            )
            return True
        except Reject as rej:
            self._rejects.note(where, "SampledGroup", rej)
            return True
        self._send(sg.SerializeToString(), len(g.completions))
        return True

    def _send(self, data: bytes, n_completions: int) -> None:
        """Blocks (in POLL_MS steps) while the learner is slow or away."""
        assert self._results is not None
        while True:
            try:
                self._results.send(data)
            except zmq.Again:
                if self._stopping:
                    self._stats.groups_unsent += 1
                    return
                continue
            self._stats.groups_scored += 1
            self._stats.completions_scored += n_completions
            return

    # ---- scoring ----------------------------------------------------------

    def _score_group(self, g: Any) -> Any:
        """The ScoredGroup of g (checked), or Reject."""
        head = f"lease {g.lease_id} group {g.group_index}"
        meta_json = g.prompt.meta_json
        if meta_json:
            try:
                meta_obj = json.loads(meta_json)
            except ValueError as e:
                raise Reject("bad_value", f"{head}: meta_json is not JSON ({e})") from None
            if not isinstance(meta_obj, dict):
                raise Reject(
                    "bad_value",
                    f"{head}: meta_json is a {type(meta_obj).__name__}, expected an object",
                )
        prompt = self.tok.decode(g.prompt.tokens)
        answer = g.prompt.answer
        out = rlhf_pb2.ScoredGroup(
            version=PROTOCOL_VERSION, run_id=g.run_id, scorer_id=self.scorer_id
        )
        for i, c in enumerate(g.completions):
            text = self.tok.completion_text(c.tokens)
            # A fresh dict per call: a score function may change what it is given.
            meta: dict[str, Any] = json.loads(meta_json) if meta_json else {}
            try:
                value = self.score(prompt, text, answer, meta)
            except Exception as e:  # noqa: BLE001 (the user's code: any failure is this completion's)
                log.debug("%s: %s completion %d: score raised", self.cfg.id, head, i, exc_info=True)
                raise Reject(
                    "bad_value",
                    f"{head} completion {i}: score raised {type(e).__name__}: {e}"[:300],
                ) from None
            reward, comps = self._check_value(value, f"{head} completion {i}")
            s = out.scores.add(reward=reward)
            for name, v in comps:
                s.components.add(name=name, value=v)
        out.group.CopyFrom(g)
        return out

    def _check_value(self, value: Any, where: str) -> tuple[float, list[tuple[str, float]]]:
        comps: list[tuple[str, float]] = []
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], Mapping):
            value, named = value
            if len(named) > MAX_COMPONENTS:
                raise Reject(
                    "bad_value", f"{where}: {len(named)} components, expected <= {MAX_COMPONENTS}"
                )
            for name, v in named.items():
                if not isinstance(name, str) or not 1 <= len(name.encode()) <= MAX_NAME:
                    raise Reject(
                        "bad_value",
                        f"{where}: component name {name!r}, expected 1..{MAX_NAME} bytes",
                    )
                if not isinstance(v, numbers.Real):
                    raise Reject(
                        "bad_value",
                        f"{where}: component '{name}' is {type(v).__name__}, expected a number",
                    )
                v = float(v)
                if not (math.isfinite(v) and abs(v) <= FLOAT32_MAX):
                    raise Reject(
                        "nonfinite",
                        f"{where}: component '{name}' = {v:g}, expected a finite float32",
                    )
                comps.append((name, v))
        if not isinstance(value, numbers.Real):
            raise Reject(
                "bad_value",
                f"{where}: score returned {type(value).__name__}, expected a number or "
                "(number, {name: number})",
            )
        reward = float(value)
        if not math.isfinite(reward):
            raise Reject("nonfinite", f"{where}: reward {reward:g}, expected finite")
        if not self.cfg.reward_min <= reward <= self.cfg.reward_max:
            raise Reject(
                "bad_value",
                f"{where}: reward {reward:g} is outside the valid range [{self.cfg.reward_min:g}, "
                f"{self.cfg.reward_max:g}] (--reward-min, --reward-max)",
            )
        return reward, comps

    # ---- counters ---------------------------------------------------------

    def stats(self) -> Stats:
        st = Stats(**{k: v for k, v in vars(self._stats).items() if k != "rejects"})
        st.rejects = self._rejects.snapshot()
        st.refused_auth = self._zap.refused if self._zap else self._refused_auth
        return st

    def status_line(self) -> str:
        """ "scored 12 groups (48 completions), 3.1 groups/s, received 14,
        rejects: bad_value=1", with the rate since the previous call, in
        rlhf-reward's words (tests and people read both alike)."""
        st = self._stats
        now = time.monotonic()
        dt = now - self._t_status
        rate = (st.groups_scored - self._scored_at_status) / dt if dt > 0 else 0.0
        self._t_status, self._scored_at_status = now, st.groups_scored
        return (
            f"scored {st.groups_scored} groups ({st.completions_scored} completions), {rate:.1f} "
            f"groups/s, received {st.groups_received}, rejects: {self._rejects.format()}"
            + (", unsent at shutdown" if st.groups_unsent else "")
        )

    def _metrics_snapshot(self) -> tuple[dict[str, float], dict[str, int]]:
        st = self._stats
        values = {
            "rlhf_reward_groups_received_total": float(st.groups_received),
            "rlhf_reward_groups_scored_total": float(st.groups_scored),
            "rlhf_reward_completions_scored_total": float(st.completions_scored),
            "rlhf_reward_groups_unsent_total": float(st.groups_unsent),
            "rlhf_reward_score_seconds_total": st.score_seconds,
        }
        return values, self._rejects.snapshot()


def install_signal_handlers(server: Server) -> None:
    """SIGINT and SIGTERM stop the server; a second one exits at once with
    status 130, as rlhf.c's daemons do. Main thread only."""

    def on_signal(signum: int, frame: object) -> None:
        if server.is_stopping:
            import os

            os._exit(130)
        server.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)


def serve(score: ScoreFn, cfg: Config | None = None, **settings: Any) -> Stats:
    """Runs a reward server with score until SIGINT or SIGTERM (in the main
    thread) and returns its counters. Settings are Config fields, e.g.
    serve(score, results="tcp://learner:5558", samples="tcp://0.0.0.0:5557",
    keys_dir="keys"). Logging goes to stderr in rlhf.c's format unless the
    package's logger already has handlers. Raises ConfigError, CertError or
    zmq.ZMQError when it cannot start."""
    from . import log as logmod

    if cfg is None:
        cfg = Config(**settings)
    elif settings:
        raise ConfigError("give either cfg or settings, not both")
    if not log.handlers:
        logmod.setup()
    server = Server(score, cfg)
    try:
        server.start()
        if threading.current_thread() is threading.main_thread():
            install_signal_handlers(server)
        server.run()
    finally:
        server.close()
    return server.stats()


__all__ = [
    "CertError",
    "Config",
    "ConfigError",
    "ScoreFn",
    "ScoreValue",
    "Server",
    "Stats",
    "serve",
]
