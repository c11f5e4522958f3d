"""TextStream releases exactly the text a whole decode gives, cut before the first stop sequence,
whatever the token boundaries (multi-byte characters split across tokens, invalid bytes, ids that
decode to nothing)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as hs

from wattserve.runtime.engine.tokenizer import ByteTokenizer
from wattserve.runtime.text_stream import TextStream

TOK = ByteTokenizer()
PIECES = ["a", "b", "\u00e9", "\u65e5", " ", "xy", "\n"]


@given(text=hs.lists(hs.sampled_from(PIECES), max_size=20).map("".join),
       extra=hs.lists(hs.integers(0, 300), max_size=2),
       stop=hs.lists(hs.sampled_from(["b", "\u00e9", "\u65e5a", "zz", " x"]), max_size=2, unique=True).map(tuple))
def test_released_text_is_the_whole_decode_cut_at_the_first_stop(text: str, extra: list[int],
                                                                 stop: tuple[str, ...]) -> None:
    ids = TOK.encode(text)[1:] + extra
    stream = TextStream(TOK.decode, stop)
    out = ""
    for t in ids:
        out += stream.push(t)
        if stream.stopped:
            break
    out += stream.flush()
    full = TOK.decode(ids)
    hits = [k for k in (full.find(s) for s in stop) if k >= 0]
    assert out == (full[:min(hits)] if hits else full)
    assert stream.stopped == bool(hits)
