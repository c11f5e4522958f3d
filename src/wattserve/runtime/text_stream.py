"""Generated tokens to text, with OpenAI's stop sequences: text is released as soon as it is whole
(no half UTF-8 character) and cannot be the start of a stop sequence; at a stop sequence the text
ends before it, and the request ends with finish_reason "stop" (the sequence itself is not
returned, as in OpenAI's API and vLLM's default).

Decoding is incremental, as vLLM's detokenizer does it (`detokenize_incrementally`): each token
decodes a short window of ids (from the last point where the text was whole), not the whole output
again, so a long generation costs linear time, not quadratic."""

from __future__ import annotations

from collections.abc import Callable


class TextStream:
    def __init__(self, decode: Callable[[list[int]], str], stop: tuple[str, ...] = ()) -> None:
        self.decode = decode
        self.stop = stop
        self.ids: list[int] = []
        self.text = ""
        """The output decoded so far, up to the last whole character."""
        self._prefix = 0
        self._read = 0
        self.sent = 0
        """Characters of `text` already released."""
        self.hold = max((len(s) for s in stop), default=1) - 1
        self.stopped = False

    def _extend(self, final: bool = False) -> None:
        """Append the text the ids since the last whole point decode to (all of it when `final`)."""
        before = self.decode(self.ids[self._prefix:self._read])
        after = self.decode(self.ids[self._prefix:])
        if len(after) > len(before) and (final or not after.endswith("\ufffd")):
            self.text += after[len(before):]
            self._prefix, self._read = self._read, len(self.ids)

    def push(self, token: int) -> str:
        """The text this token releases ('' if none yet); sets `stopped` at a stop sequence."""
        self.ids.append(token)
        self._extend()
        text = self.text
        if self.stop:
            start = max(0, self.sent - self.hold)
            hits = [k for k in (text.find(s, start) for s in self.stop) if k >= 0]
            if hits:
                k = min(hits)
                out = text[self.sent:k]
                self.sent = max(self.sent, k)
                self.stopped = True
                return out
        end = len(text) - self.hold if self.stop else len(text)
        if end <= self.sent:
            return ""
        out = text[self.sent:end]
        self.sent = end
        return out

    def flush(self) -> str:
        """What is left once generation ended without a stop sequence (held-back tail included)."""
        if self.stopped:
            return ""
        self._extend(final=True)
        out = self.text[self.sent:]
        self.sent = len(self.text)
        return out
