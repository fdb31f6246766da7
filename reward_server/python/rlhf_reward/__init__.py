"""rlhf_reward: reward servers for rlhf.c clusters, written in Python.

Write a score function and join a running cluster as a reward server:

    def score(prompt: str, completion: str, answer: str, meta: dict) -> float:
        return 1.0 if completion.strip() == answer else 0.0

    python -m rlhf_reward --module mymod:score --results tcp://learner:5558

or from a script: rlhf_reward.serve(score, results="tcp://learner:5558").
The server speaks rlhf.c's wire protocol (proto/rlhf.proto) as rlhf-reward
does: same sockets, checks, rejects, status lines, CURVE key files and
/metrics. README "A reward server in Python" has the whole story."""

__version__ = "0.1.0"

from .bpe import BpeTokenizer, GgufError
from .keys import CertError
from .server import Config, ConfigError, ScoreFn, ScoreValue, Server, Stats, serve
from .text import CHARSET_DEFAULT, CharTokenizer

__all__ = [
    "CHARSET_DEFAULT",
    "BpeTokenizer",
    "CertError",
    "CharTokenizer",
    "Config",
    "ConfigError",
    "GgufError",
    "ScoreFn",
    "ScoreValue",
    "Server",
    "Stats",
    "__version__",
    "serve",
]
