"""Tokenizers. The byte-level one needs no files (ids 0-255 are bytes; 256 BOS, 257 EOS) and serves the
test-sized models; a local Hugging Face tokenizer.json is used when the weights folder has one."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from wattserve.errors import UsageError
from wattserve.runtime.engine.config import BOS_ID, BYTE_VOCAB, EOS_ID


class Tokenizer(Protocol):
    eos_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class ByteTokenizer:
    eos_id = EOS_ID

    def encode(self, text: str) -> list[int]:
        return [BOS_ID, *text.encode("utf-8")]

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i < BYTE_VOCAB).decode("utf-8", errors="replace")


class HfTokenizer:
    def __init__(self, path: Path) -> None:
        try:
            from tokenizers import Tokenizer as _Tok
        except ImportError:
            raise UsageError(f"weights: {path} needs the tokenizers package (pip install 'wattserve[runtime]')") from None

        self._tok = _Tok.from_file(str(path))
        eos = self._tok.token_to_id("</s>") or self._tok.token_to_id("<|eot_id|>") or 0
        self.eos_id = int(eos)

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text).ids)

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids)


def load_tokenizer(weights: Path | None) -> Tokenizer:
    if weights is not None and (weights / "tokenizer.json").is_file():
        return HfTokenizer(weights / "tokenizer.json")
    return ByteTokenizer()


def chat_prompt(messages: list[dict[str, str]]) -> str:
    """A plain role-tagged transcript ending with the assistant's turn (models without a chat template)."""
    parts = [f"<|{m['role']}|>\n{m['content']}\n" for m in messages]
    return "".join(parts) + "<|assistant|>\n"
