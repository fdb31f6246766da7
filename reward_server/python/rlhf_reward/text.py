"""Token ids to text, as rlhf.c's reward server renders them for a scorer
(reward_server/reward.h): the character tokenizer of the built-in tasks
(common/formats/tok.h). Ids 0, 1 and 2 are PAD, BOS and EOS; then one id per
character of the charset, in charset order. A prompt is rendered with the
special ids skipped; a completion is the ids before its first EOS (the stop
token is not part of the text), special ids skipped."""

from __future__ import annotations

from collections.abc import Sequence

TOK_PAD, TOK_BOS, TOK_EOS = 0, 1, 2
N_SPECIAL = 3
# common/formats/tok.h TOK_CHARSET_DEFAULT: ids of existing characters never change.
CHARSET_DEFAULT = (
    " 0123456789+-*/=<>()[].,:;!?'\"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
CHARSET_MAX = 95


def check_charset(charset: str) -> None:
    """Raises ValueError unless charset is 1..95 printable ASCII characters
    (0x20..0x7e) without duplicates, as tok_charset_validate."""
    if not 1 <= len(charset) <= CHARSET_MAX:
        raise ValueError(f"charset of {len(charset)} characters, expected 1..{CHARSET_MAX}")
    seen = set()
    for i, ch in enumerate(charset):
        if not " " <= ch <= "~":
            raise ValueError(f"charset character {i} is {ch!r}, expected printable ASCII")
        if ch in seen:
            raise ValueError(f"charset character {i} {ch!r} appears twice")
        seen.add(ch)


class CharTokenizer:
    """The character tokenizer over a charset (default: rlhf.c's)."""

    def __init__(self, charset: str = CHARSET_DEFAULT) -> None:
        check_charset(charset)
        self.charset = charset
        self.vocab_size = N_SPECIAL + len(charset)

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ids (all in [0, vocab_size)), special ids skipped."""
        cs = self.charset
        return "".join(cs[i - N_SPECIAL] for i in ids if i >= N_SPECIAL)

    def completion_text(self, ids: Sequence[int]) -> str:
        """The text of a completion: the ids before the first EOS."""
        ids = list(ids)
        end = ids.index(TOK_EOS) if TOK_EOS in ids else len(ids)
        return self.decode(ids[:end])
