"""Log lines in the shape rlhf.c's daemons print them (common/base/log.c):
"HH:MM:SS.mmm LEVEL role: message" on stderr, UTC, one line per call, so a
Python reward server's log reads like the others beside it. The level is the
one given, else the RLHF_LOG environment variable (error, warn, info, debug),
else info."""

from __future__ import annotations

import logging
import os
import sys
import time

LOGGER_NAME = "rlhf_reward"
LEVELS = {
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
}
_NAMES = {
    logging.ERROR: "ERROR",
    logging.WARNING: "WARN",
    logging.INFO: "INFO",
    logging.DEBUG: "DEBUG",
}

log = logging.getLogger(LOGGER_NAME)


class _Formatter(logging.Formatter):
    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        t = time.gmtime(record.created)
        ms = int(record.msecs)
        level = _NAMES.get(record.levelno, record.levelname)
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return (
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{ms:03d} {level:<5} {self.role}: {text}"
        )


def level_from_env(default: str = "info") -> str:
    value = os.environ.get("RLHF_LOG", "").strip().lower()
    return value if value in LEVELS else default


def setup(role: str = "reward", level: str | None = None) -> None:
    """Sends this package's log lines to stderr in rlhf.c's format. Called by
    the command line and by serve(); a program that configured logging on its
    own keeps its handlers (this adds one to the package's logger only)."""
    name = level if level is not None else level_from_env()
    if name not in LEVELS:
        raise ValueError(f"log level '{name}', expected one of {', '.join(LEVELS)}")
    for h in list(log.handlers):
        if getattr(h, "_rlhf_reward", False):
            log.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(role))
    handler._rlhf_reward = True  # type: ignore[attr-defined]
    log.addHandler(handler)
    log.setLevel(LEVELS[name])
    log.propagate = False
