"""Token ids to text for a pretrained model's byte-level BPE (GGUF
tokenizer.ggml.model "gpt2", as SmolLM2 uses), rendered as rlhf-reward
--model renders them (common/formats/bpe.h, reward_server/reward.h):

- a token of type CONTROL or UNKNOWN is skipped; a USER_DEFINED token is its
  own text; any other token is GPT-2's byte-level spelling (each byte shown
  as one printable code point, a space as "Ġ") turned back into its bytes,
  or, when a character lies outside that alphabet, its text's UTF-8 bytes;
- a completion is the ids before its first end-of-turn token: <|im_end|>
  when the chat template is ChatML, else the EOS token;
- the bytes are read as UTF-8 (a malformed sequence becomes U+FFFD).

Only the GGUF header and metadata are read (the tokenizer.* entries), never
the tensors. Errors name the file: GgufError."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any, BinaryIO

TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED = 1, 2, 3, 4
MAX_TOKENS = 1 << 22
MAX_TOKEN_BYTES = 1024
MAX_STRING = 1 << 26  # bytes of one metadata string (a chat template is a few KiB)

# GGUF value types (common/formats/gguf.h GGUF_VAL_*): struct format of the scalars.
_SCALAR = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9


class GgufError(ValueError):
    """A GGUF file this reader cannot use; the message names the file."""


def _cp_to_byte(cp: int) -> int:
    """GPT-2's byte alphabet: the byte a code point spells, or -1 (bpe_pre.c)."""
    if cp < 256:
        return -1 if cp <= 0x20 or 0x7F <= cp <= 0xA0 or cp == 0xAD else cp
    if cp < 256 + 33:
        return cp - 256
    if cp < 256 + 67:
        return cp - 256 - 33 + 0x7F
    return 0xAD if cp == 256 + 67 else -1


def token_bytes(raw: bytes, token_type: int) -> bytes:
    """The bytes a token decodes to (types CONTROL and UNKNOWN included)."""
    if token_type in (TOKEN_CONTROL, TOKEN_USER_DEFINED):
        return raw
    text = raw.decode("utf-8", errors="surrogateescape")
    spelled = [_cp_to_byte(ord(ch)) for ch in text]
    if all(b >= 0 for b in spelled):
        return bytes(spelled)
    return raw


class _Reader:
    def __init__(self, f: BinaryIO, path: str) -> None:
        self.f, self.path = f, path

    def take(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise GgufError(f"{self.path}: truncated at byte {self.f.tell()} (wanted {n} more)")
        return data

    def scalar(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> bytes:
        n = self.scalar("<Q")
        if n > MAX_STRING:
            raise GgufError(f"{self.path}: a string of {n} bytes at byte {self.f.tell()}")
        return self.take(n)

    def value(self, vtype: int, keep: bool) -> Any:
        if vtype in _SCALAR:
            return self.scalar(_SCALAR[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, n = self.scalar("<I"), self.scalar("<Q")
            if etype == _ARRAY or (etype not in _SCALAR and etype != _STRING):
                raise GgufError(f"{self.path}: array of element type {etype}")
            if n > MAX_TOKENS * 4:
                raise GgufError(f"{self.path}: array of {n} elements")
            if etype == _STRING:
                items = [self.string() for _ in range(n)]
                return items if keep else None
            size = struct.calcsize(_SCALAR[etype])
            data = self.take(size * n)
            return list(struct.unpack(f"<{n}{_SCALAR[etype][1]}", data)) if keep else None
        raise GgufError(f"{self.path}: value type {vtype}")


def read_tokenizer_metadata(path: str) -> dict[str, Any]:
    """The tokenizer.* metadata entries of a GGUF file (strings as bytes)."""
    try:
        with open(path, "rb") as f:
            r = _Reader(f, path)
            if r.take(4) != b"GGUF":
                raise GgufError(f"{path}: not a GGUF file (magic)")
            version = r.scalar("<I")
            if version not in (2, 3):
                raise GgufError(f"{path}: GGUF version {version}, expected 2 or 3")
            r.scalar("<Q")  # tensors: not read
            n_kv = r.scalar("<Q")
            if n_kv > 1 << 20:
                raise GgufError(f"{path}: {n_kv} metadata entries")
            meta: dict[str, Any] = {}
            for _ in range(n_kv):
                key = r.string().decode("utf-8", errors="replace")
                vtype = r.scalar("<I")
                keep = key.startswith("tokenizer.")
                value = r.value(vtype, keep)
                if keep:
                    meta[key] = value
            return meta
    except OSError as e:
        raise GgufError(f"{path}: {e.strerror}") from None


class BpeTokenizer:
    """A GGUF model's byte-level BPE, for decoding only."""

    def __init__(
        self, tokens: Sequence[bytes], types: Sequence[int], eos_id: int, chat_template: str
    ) -> None:
        n = len(tokens)
        if not 1 <= n <= MAX_TOKENS:
            raise ValueError(f"{n} tokens, expected 1..{MAX_TOKENS}")
        self.vocab_size = n
        self._bytes: list[bytes] = []
        self._skip: list[bool] = []
        for i, (raw, t) in enumerate(zip(tokens, types)):
            if not 1 <= len(raw) <= MAX_TOKEN_BYTES:
                raise ValueError(f"token {i} of {len(raw)} bytes, expected 1..{MAX_TOKEN_BYTES}")
            self._bytes.append(token_bytes(raw, t))
            self._skip.append(t in (TOKEN_CONTROL, TOKEN_UNKNOWN))
        is_chatml = "<|im_start|>" in chat_template and "<|im_end|>" in chat_template
        im_end = None
        for i, raw in enumerate(tokens):  # later ids win on duplicate spellings
            if raw == b"<|im_end|>":
                im_end = i
        self.eot_id = im_end if is_chatml and im_end is not None else eos_id

    @classmethod
    def from_gguf(cls, path: str) -> BpeTokenizer:
        meta = read_tokenizer_metadata(path)
        model = meta.get("tokenizer.ggml.model", b"")
        if model != b"gpt2":
            raise GgufError(
                f"{path}: tokenizer.ggml.model '{model!r}', expected 'gpt2' (byte-level BPE)"
            )
        tokens: list[bytes] | None = meta.get("tokenizer.ggml.tokens")
        if not isinstance(tokens, list) or not tokens:
            raise GgufError(f"{path}: tokenizer.ggml.tokens missing")
        types = meta.get("tokenizer.ggml.token_type") or [TOKEN_NORMAL] * len(tokens)
        if len(types) != len(tokens):
            raise GgufError(
                f"{path}: tokenizer.ggml.token_type has {len(types)} entries for {len(tokens)} tokens"
            )
        eos = meta.get("tokenizer.ggml.eos_token_id", -1)
        if not isinstance(eos, int) or not -1 <= eos < len(tokens):
            raise GgufError(f"{path}: tokenizer.ggml.eos_token_id {eos!r}")
        tpl = meta.get("tokenizer.chat_template", b"")
        tpl_text = tpl.decode("utf-8", errors="replace") if isinstance(tpl, bytes) else ""
        try:
            return cls(tokens, types, eos, tpl_text)
        except ValueError as e:
            raise GgufError(f"{path}: {e}") from None

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ids (all in [0, vocab_size)), control ids skipped."""
        out = b"".join(self._bytes[i] for i in ids if not self._skip[i])
        return out.decode("utf-8", errors="replace")

    def completion_text(self, ids: Sequence[int]) -> str:
        """The text of a completion: the ids before the first end-of-turn token."""
        ids = list(ids)
        end = ids.index(self.eot_id) if self.eot_id in ids else len(ids)
        return self.decode(ids[:end])
