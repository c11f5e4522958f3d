"""Tokenizers and the stop ids that go with them.

The byte-level tokenizer needs no files (ids 0-255 are bytes; 256 BOS, 257 EOS) and serves the
test-sized models; a local Hugging Face tokenizer.json is used when the weights folder has one. A
model's end-of-sequence ids come from its folder as Hugging Face `generate` reads them:
generation_config.json first, then config.json (`eos_token_id`, an int or, from Llama 3.1 on, a
list such as [128001, 128008, 128009]), then the tokenizer's own end token."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

from wattserve.errors import UsageError
from wattserve.runtime.engine.config import BOS_ID, BYTE_VOCAB, EOS_ID

END_TOKENS = ("</s>", "<|end_of_text|>", "<|eot_id|>", "<|im_end|>", "<|endoftext|>")
"""Special tokens taken as the end of a sequence when no config names one (Llama 2, Llama 3,
ChatML, GPT-style)."""


class Tokenizer(Protocol):
    eos_id: int
    stop_ids: tuple[int, ...]

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class ByteTokenizer:
    eos_id = EOS_ID
    stop_ids = (EOS_ID,)

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
        own = tuple(i for i in (self._tok.token_to_id(t) for t in END_TOKENS) if i is not None)
        self.stop_ids = configured_eos_ids(path.parent) or own[:1]
        self.eos_id = self.stop_ids[0] if self.stop_ids else 0

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text).ids)

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids)


def configured_eos_ids(folder: Path) -> tuple[int, ...]:
    """`eos_token_id` from generation_config.json, else config.json; () when neither names one."""
    for name in ("generation_config.json", "config.json"):
        f = folder / name
        if not f.is_file():
            continue
        eos = json.loads(f.read_text()).get("eos_token_id")
        if eos is None:
            continue
        ids = eos if isinstance(eos, list) else [eos]
        return tuple(dict.fromkeys(int(i) for i in ids))
    return ()


def load_tokenizer(weights: Path | None) -> Tokenizer:
    if weights is not None and (weights / "tokenizer.json").is_file():
        return HfTokenizer(weights / "tokenizer.json")
    return ByteTokenizer()


def stop_ids_for(weights: Path | None) -> tuple[int, ...]:
    """The ids that end generation for a model served from `weights` (None: dummy weights, byte
    tokenizer): the configs' eos_token_id, else the tokenizer's end token, else the byte EOS."""
    if weights is None:
        return ByteTokenizer.stop_ids
    return configured_eos_ids(weights) or load_tokenizer(weights).stop_ids


def chat_prompt(messages: list[dict[str, str]]) -> str:
    """A plain role-tagged transcript ending with the assistant's turn (models without a chat template)."""
    parts = [f"<|{m['role']}|>\n{m['content']}\n" for m in messages]
    return "".join(parts) + "<|assistant|>\n"
