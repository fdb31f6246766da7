"""The wire rules a reward server keeps, as rlhf.c's common/net/wire.h states
them: the protocol version, the bounds on everything a peer sends, the checks
of a SampledGroup (what wire_check_sampled_group refuses, this refuses, under
the same reason) and the per-reason rejection counters with their
rate-limited log lines (common/net/reject.h).

Framing: every message is one protobuf in one ZeroMQ frame; nothing else is
in a frame. Nothing received is trusted: a refusal is a Reject (a reason from
REASONS and one sentence naming the field, the bad value and the expected
one), counted in a Rejects and logged, never a crash."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable
from typing import Any

from .log import log

PROTOCOL_VERSION = 1

MAX_FRAME = 32 << 20  # bytes of one payload frame
MAX_FRAME_RECV = 2 * MAX_FRAME  # libzmq drops larger frames itself (ZMQ_MAXMSGSIZE)
MAX_TOKENS = 8192  # tokens in one completion
MAX_PROMPT_TOKENS = 8192  # tokens in one prompt
MAX_GROUP = 256  # completions per group
MAX_PROMPTS = 1024  # prompts per lease
MAX_COMPONENTS = 32  # named reward components per score
MAX_NAME = 128  # bytes of an id or name string
MAX_TEXT = 4096  # bytes of an answer
MAX_META = 64 << 10  # bytes of a prompt's meta_json
MAX_TEMPERATURE = 100.0
LOGP_EPS = 1e-4  # log-probs may exceed 0 by this much (rounding)
FLOAT32_MAX = 3.4028234663852886e38  # larger finite doubles become inf on the wire

FINISH_STOP = 1
FINISH_LENGTH = 2

# In rlhf.c's order (common/net/reject.h WireReason).
REASONS = (
    "garbage",
    "oversized",
    "bad_version",
    "bad_run",
    "bad_shape",
    "bad_tokens",
    "nonfinite",
    "bad_value",
    "bad_chunk",
    "checksum",
    "unknown",
    "unauthorized",
    "busy",
    "over_budget",
)

LOG_BURST = 5  # the first rejections of a reason are logged each
LOG_EVERY_S = 5.0  # then one line per reason this often


class Reject(Exception):
    """A refused frame or group: reason (one of REASONS) and why."""

    def __init__(self, reason: str, why: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"reject reason '{reason}', expected one of {REASONS}")
        super().__init__(f"{reason}: {why}")
        self.reason = reason
        self.why = why


class Rejects:
    """Rejections by reason. Thread-safe (the ZAP thread counts refused
    connections); note() logs at WARN, rate-limited per reason."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._n: dict[str, int] = {r: 0 for r in REASONS}
        self._last_log: dict[str, float] = {r: 0.0 for r in REASONS}
        self._suppressed: dict[str, int] = {r: 0 for r in REASONS}

    def count(self, reason: str) -> int:
        with self._lock:
            self._n[reason] += 1
            return self._n[reason]

    def note(self, where: str, what: str, rej: Reject) -> None:
        """Counts rej and logs "<where>: rejected <what>: <reason>: <why>"."""
        now = time.monotonic()
        with self._lock:
            r = rej.reason
            self._n[r] += 1
            if self._n[r] > LOG_BURST and now - self._last_log[r] < LOG_EVERY_S:
                self._suppressed[r] += 1
                return
            more = ""
            if self._suppressed[r]:
                more = f" ({self._suppressed[r]} more {r} since the last line)"
            self._last_log[r] = now
            self._suppressed[r] = 0
        log.warning("%s: rejected %s: %s: %s%s", where, what, r, rej.why, more)

    def get(self, reason: str) -> int:
        with self._lock:
            return self._n[reason]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._n)

    def total(self) -> int:
        with self._lock:
            return sum(self._n.values())

    def format(self) -> str:
        """ "garbage=1 bad_value=3" (non-zero reasons only), or "none"."""
        n = self.snapshot()
        parts = [f"{r}={n[r]}" for r in REASONS if n[r]]
        return " ".join(parts) if parts else "none"


def _bytes(s: str) -> int:
    return len(s.encode("utf-8"))


def _check_str(msg: str, field: str, s: str, cap: int, required: bool) -> None:
    n = _bytes(s)
    if n > cap:
        raise Reject("bad_shape", f"{msg}.{field} longer than {cap} bytes")
    if required and n == 0:
        raise Reject("bad_shape", f"{msg}.{field} is empty, expected 1..{cap} bytes")


def _check_count(msg: str, field: str, n: int, lo: int, hi: int) -> None:
    if n < lo or n > hi:
        raise Reject("bad_shape", f"{msg}.{field} has {n} entries, expected {lo}..{hi}")


def _check_tokens(msg: str, ids: Iterable[int], vocab: int) -> None:
    for i, t in enumerate(ids):
        if t < 0 or t >= vocab:
            raise Reject("bad_tokens", f"{msg}.tokens[{i}] = {t}, expected [0, {vocab})")


def check_sampling(s: Any) -> None:  # s: rlhf_pb2.SamplingParams
    if not math.isfinite(s.temperature) or not math.isfinite(s.top_p):
        raise Reject(
            "nonfinite",
            f"SamplingParams temperature {s.temperature:g} top_p {s.top_p:g}, expected finite",
        )
    if s.temperature < 0.0 or s.temperature > MAX_TEMPERATURE:
        raise Reject(
            "bad_value",
            f"SamplingParams.temperature {s.temperature:g}, expected [0, {MAX_TEMPERATURE:g}]",
        )
    if s.top_k < 0:
        raise Reject("bad_value", f"SamplingParams.top_k {s.top_k}, expected >= 0")
    if not (0.0 < s.top_p <= 1.0):
        raise Reject("bad_value", f"SamplingParams.top_p {s.top_p:g}, expected (0, 1]")
    if s.max_new_tokens < 1 or s.max_new_tokens > MAX_TOKENS:
        raise Reject(
            "bad_value",
            f"SamplingParams.max_new_tokens {s.max_new_tokens}, expected 1..{MAX_TOKENS}",
        )


def check_prompt(p: Any, vocab: int) -> None:  # p: rlhf_pb2.Prompt
    _check_count("Prompt", "tokens", len(p.tokens), 1, MAX_PROMPT_TOKENS)
    _check_tokens("Prompt", p.tokens, vocab)
    _check_str("Prompt", "answer", p.answer, MAX_TEXT, False)
    # The task names the scorer: a prompt without one is refused, as rlhf.c does.
    _check_str("Prompt", "task", p.task, MAX_NAME, True)
    _check_str("Prompt", "meta_json", p.meta_json, MAX_META, False)


def check_completion(c: Any, vocab: int) -> None:  # c: rlhf_pb2.Completion
    n = len(c.tokens)
    _check_count("Completion", "tokens", n, 1, MAX_TOKENS)
    # The learner indexes the three per-token arrays with one index.
    if len(c.logp_behaviour) != n or len(c.logp_sampled) != n or len(c.policy_version) != n:
        raise Reject(
            "bad_shape",
            f"Completion arrays tokens {n}, logp_behaviour {len(c.logp_behaviour)}, logp_sampled "
            f"{len(c.logp_sampled)}, policy_version {len(c.policy_version)}, expected equal lengths",
        )
    _check_tokens("Completion", c.tokens, vocab)
    for i, (lb, ls) in enumerate(zip(c.logp_behaviour, c.logp_sampled)):
        if not math.isfinite(lb) or not math.isfinite(ls):
            raise Reject(
                "nonfinite",
                f"Completion token {i}: logp_behaviour {lb:g} logp_sampled {ls:g}, expected finite",
            )
        if lb > LOGP_EPS or ls > LOGP_EPS:
            raise Reject(
                "bad_value",
                f"Completion token {i}: logp_behaviour {lb:g} logp_sampled {ls:g}, expected <= 0",
            )
    if c.finish not in (FINISH_STOP, FINISH_LENGTH):
        raise Reject("bad_value", f"Completion.finish {c.finish}, expected STOP (1) or LENGTH (2)")


def check_sampled_group(g: Any, vocab: int, run_id: str | None = None) -> None:
    """Raises Reject unless g (rlhf_pb2.SampledGroup) passes everything
    rlhf.c's wire_check_sampled_group checks, token ids against vocab."""
    if g.version != PROTOCOL_VERSION:
        raise Reject(
            "bad_version", f"SampledGroup version {g.version}, expected {PROTOCOL_VERSION}"
        )
    _check_str("SampledGroup", "run_id", g.run_id, MAX_NAME, False)
    if run_id and g.run_id != run_id:
        raise Reject("bad_run", f"SampledGroup.run_id '{g.run_id}', expected '{run_id}'")
    _check_str("SampledGroup", "actor_id", g.actor_id, MAX_NAME, False)
    if not g.HasField("prompt") or not g.HasField("sampling"):
        missing = "prompt" if not g.HasField("prompt") else "sampling"
        raise Reject("bad_shape", f"SampledGroup without {missing}")
    check_prompt(g.prompt, vocab)
    check_sampling(g.sampling)
    _check_count("SampledGroup", "completions", len(g.completions), 1, MAX_GROUP)
    if not (1 <= g.group_count <= MAX_PROMPTS and 0 <= g.group_index < g.group_count):
        raise Reject(
            "bad_shape",
            f"SampledGroup group_index {g.group_index} of group_count {g.group_count}, expected "
            f"0 <= index < count <= {MAX_PROMPTS}",
        )
    for i, c in enumerate(g.completions):
        try:
            check_completion(c, vocab)
        except Reject as e:
            raise Reject(e.reason, f"completion {i}: {e.why}") from None
        if len(c.tokens) > g.sampling.max_new_tokens:
            raise Reject(
                "bad_shape",
                f"completion {i} has {len(c.tokens)} tokens, expected <= max_new_tokens "
                f"{g.sampling.max_new_tokens}",
            )
