"""`wattserve bench` sizes prompts in the server's tokens (issue 17): --random-input-len N sends
prompts that the server counts as N tokens, BOS included, as vLLM's bench does.

The sizing is checked twice: against tokenizers in the test (a byte tokenizer like the tiny
model's, a word-per-token one like BPE, one that cannot make odd lengths, one that merges words),
and against a real `wattserve serve --model tiny`, whose `usage.prompt_tokens` for every request must
be the length asked for."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from wattserve.errors import UsageError
from wattserve.loadgen.prompts import (
    FILLERS,
    WORDS,
    Check,
    Sizer,
    calibrate,
    check,
    check_lines,
    sample,
    token_count,
)
from wattserve.runtime.engine.tokenizer import ByteTokenizer

from serverutil import Server, start_server


def counter(tokenize: Callable[[str], int]) -> Callable[[str], Any]:
    """A /tokenize stand-in that also counts its calls."""
    calls: list[str] = []

    async def count(text: str) -> int:
        calls.append(text)
        return tokenize(text)

    count.calls = calls  # type: ignore[attr-defined]
    return count


def byte_count(text: str) -> int:
    return len(ByteTokenizer().encode(text))


def word_count(text: str) -> int:
    """A BPE-like tokenizer: BOS and one token per word."""
    return 1 + len(text.split())


def even_count(text: str) -> int:
    """A tokenizer that makes only even lengths (two tokens per byte, no BOS)."""
    return 2 * len(text.encode())


def merging_count(text: str) -> int:
    """A tokenizer that does not count words one by one: "budget token" is one token."""
    return 1 + len(text.split()) - text.count("budget token")


def sizer_for(tokenize: Callable[[str], int]) -> Sizer:
    return Sizer(asyncio.run(calibrate(counter(tokenize))))


@pytest.mark.parametrize("tokenize", [byte_count, word_count], ids=["byte", "word-per-token"])
def test_every_length_from_two_is_exact(tokenize: Callable[[str], int]) -> None:
    sizer = sizer_for(tokenize)
    rng = random.Random(0)
    for n in [*range(2, 300), 1000, 4096]:
        p = sizer.prompt(n, rng)
        assert p.tokens == n and tokenize(p.text) == n, (n, p.text)


def test_prompts_are_words_and_differ() -> None:
    """Random words, so that prompts of one length share no prefix (a server's prefix cache)."""
    sizer = sizer_for(byte_count)
    rng = random.Random(0)
    texts = [sizer.prompt(64, rng).text for _ in range(50)]
    assert all(set(t.split()) <= set(WORDS + FILLERS) for t in texts)
    assert len({t.split()[0] + " " + t.split()[1] for t in texts}) > 10


def test_a_length_no_text_makes_is_the_nearest() -> None:
    """The byte tokenizer's shortest prompt is BOS and one byte: 1 token comes out as 2."""
    assert sizer_for(byte_count).prompt(1, random.Random(0)).tokens == 2
    odd = sizer_for(even_count)
    for n in (9, 63, 65, 301):
        p = odd.prompt(n, random.Random(n))
        assert abs(p.tokens - n) == 1 and even_count(p.text) == p.tokens, (n, p)


def test_calibration_takes_a_fixed_number_of_calls() -> None:
    """Two calls per word and one anchor, however many prompts follow; the check adds 8."""
    count = counter(byte_count)
    sizer = Sizer(asyncio.run(calibrate(count)))
    assert len(count.calls) == 1 + 2 * len(WORDS + FILLERS)  # type: ignore[attr-defined]
    rng = random.Random(0)
    prompts = [sizer.prompt(128, rng) for _ in range(10_000)]
    c = asyncio.run(check(count, prompts, [128] * len(prompts)))
    assert len(count.calls) == 1 + 2 * len(WORDS + FILLERS) + 8  # type: ignore[attr-defined]
    assert c == Check(sampled=8, exact=8, max_off=0, asked_off=0, max_off_asked=0)
    assert check_lines(c, "--random-input-len 128") == []


def test_a_tokenizer_that_merges_words_is_reported() -> None:
    count = counter(merging_count)
    sizer = Sizer(asyncio.run(calibrate(count)))
    rng = random.Random(0)
    prompts = [sizer.prompt(200, rng) for _ in range(20)]
    c = asyncio.run(check(count, prompts, [200] * 20))
    assert c.exact < c.sampled and c.max_off > 0
    lines = check_lines(c, "--random-input-len 200")
    assert len(lines) == 1 and "does not count words one by one" in lines[0]


def test_a_word_that_costs_nothing_is_refused() -> None:
    """"power budget" as one token makes " budget" free after the anchor: no sizing can work."""
    with pytest.raises(UsageError, match="counts 'power' followed by a word as no longer than the word alone"):
        sizer_for(lambda text: 1 + len(text.split()) - text.count("power budget"))


def test_lengths_not_made_are_reported() -> None:
    c = asyncio.run(check(counter(even_count), [sizer_for(even_count).prompt(9, random.Random(0))], [9]))
    assert check_lines(c, "--random-input-len 9") == [
        "wattserve bench: 1 prompts cannot be made exactly as long as --random-input-len 9 by the server's "
        "tokenizer; they are off by at most 1 token"]


def test_the_sample_spans_the_lengths() -> None:
    sizer = sizer_for(word_count)
    rng = random.Random(0)
    prompts = [sizer.prompt(n, rng) for n in range(10, 110)]
    picked = sample(prompts)
    assert len(picked) == 8 and picked[0].tokens == 10 and picked[-1].tokens == 109


@pytest.mark.parametrize(("answer", "count"), [
    ({"tokens": [256, 97], "count": 2, "max_model_len": 2048}, 2),
    ({"tokens": [[1, 2, 3]], "count": [3], "max_model_len": 4096}, 3),
    ({"tokens": [1, 2, 3, 4]}, 4),
], ids=["vllm", "sglang-list", "tokens-only"])
def test_tokenize_answers_of_vllm_and_sglang(answer: dict[str, Any], count: int) -> None:
    assert token_count(answer) == count


@pytest.mark.parametrize("answer", [{"count": "7"}, [], {"ids": [1]}, {"count": True}])
def test_a_tokenize_answer_without_a_count_is_refused(answer: Any) -> None:
    with pytest.raises(UsageError, match="--tokenizer server: /tokenize answered .* use --tokenizer words"):
        token_count(answer)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    s = start_server()
    try:
        yield s
    finally:
        s.stop()


def bench(server: Server, tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict[str, Any]]:
    p = subprocess.run([sys.executable, "-m", "wattserve", "bench", "--base-url", server.url, "--random-output-len",
                        "2", "--save-result", "--result-dir", str(tmp_path), "--result-filename", "r.json", *args],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, (p.stdout, p.stderr)
    return p, json.loads((tmp_path / "r.json").read_text())


@pytest.mark.parametrize("n", [2, 3, 64, 257])
def test_the_server_counts_every_prompt_as_random_input_len(server: Server, tmp_path: Path, n: int) -> None:
    p, res = bench(server, tmp_path, "--num-prompts", "5", "--random-input-len", str(n))
    assert res["input_lens"] == [n] * 5
    assert res["total_input_tokens"] == 5 * n
    assert res["input_len_unit"] == "tokens (server)"
    assert res["input_len_check"]["exact"] == res["input_len_check"]["sampled"] == 5
    assert p.stderr == ""


def test_a_trace_replays_its_context_tokens(server: Server, tmp_path: Path) -> None:
    lengths = [5, 100, 31, 700, 64, 2]
    trace = tmp_path / "t.jsonl"
    trace.write_text("".join(json.dumps({"timestamp": i, "input_length": n, "output_length": 2}) + "\n"
                             for i, n in enumerate(lengths)))
    _, res = bench(server, tmp_path, "--trace", str(trace))
    assert res["input_lens"] == lengths
    assert res["input_len_unit"] == "tokens (server)"


def test_words_are_what_they_were(server: Server, tmp_path: Path) -> None:
    """--tokenizer words keeps the old count: 64 words are far more than 64 byte tokens."""
    _, res = bench(server, tmp_path, "--num-prompts", "3", "--random-input-len", "64", "--tokenizer", "words")
    assert res["input_len_unit"] == "words" and res["input_len_check"] is None
    assert all(n > 300 for n in res["input_lens"])


def test_chat_content_is_sized_and_the_template_adds_the_same_to_each(server: Server, tmp_path: Path) -> None:
    """As in vLLM's bench the message content is N tokens; the server's chat template adds its own."""
    from wattserve.runtime.engine.tokenizer import chat_prompt

    _, res = bench(server, tmp_path, "--num-prompts", "3", "--random-input-len", "64", "--endpoint",
                   "/v1/chat/completions")
    template = len(chat_prompt([{"role": "user", "content": ""}]).encode())
    assert res["input_lens"] == [64 + template] * 3
    assert res["input_len_unit"] == "tokens (server), before the chat template"


async def on_tokenize(handler: Callable[[Any], Any], fn: Callable[[str], Any]) -> Any:
    """Run `fn(base_url)` against a local server whose POST /tokenize is `handler`."""
    from aiohttp import web

    app = web.Application()
    app.router.add_post("/tokenize", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        return await fn(f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()


def size_against(handler: Callable[[Any], Any], lengths: list[int], **config: Any) -> Any:
    from wattserve.loadgen.prompts import size_prompts
    from wattserve.schema.bench import BenchConfig

    async def fn(url: str) -> Any:
        return await size_prompts(BenchConfig(base_url=url, **config), lengths, "--random-input-len")

    return asyncio.run(on_tokenize(handler, fn))


async def vllm_words(request: Any) -> Any:
    """vLLM's answer for a word-per-token tokenizer; 401 without the key, as a guarded server."""
    from aiohttp import web

    if request.headers.get("Authorization") != "Bearer k":
        return web.json_response({"error": {"message": "Unauthorized"}}, status=401)
    body = await request.json()
    ids = list(range(word_count(body["prompt"])))
    return web.json_response({"count": len(ids), "max_model_len": 8192, "tokens": ids, "token_strs": None})


def test_a_vllm_shaped_tokenize_sizes_every_prompt() -> None:
    lengths = [64] * 30 + [2, 3, 500]
    sizing = size_against(vllm_words, lengths, api_key="k", num_prompts=len(lengths))
    assert [word_count(p) for p in sizing.prompts] == lengths
    assert sizing.unit == "tokens (server)" and sizing.notes == []
    assert sizing.check == Check(sampled=8, exact=8, max_off=0, asked_off=0, max_off_asked=0)


@pytest.mark.parametrize(("status", "body", "expect"), [
    (401, None, "answered 401 Unauthorized; use --tokenizer words"),
    (500, "<html>boom</html>", "answered 500 <html>boom</html>; use --tokenizer words"),
    (200, "not json", "answered with something that is not JSON; use --tokenizer words"),
], ids=["no-key", "server-error", "not-json"])
def test_a_tokenize_that_fails_is_one_line(status: int, body: str | None, expect: str) -> None:
    from aiohttp import web

    async def handler(request: Any) -> Any:
        if body is None:
            return await vllm_words(request)
        return web.Response(status=status, text=body)

    with pytest.raises(UsageError, match="^--tokenizer server: POST http://127.0.0.1:[0-9]+/tokenize ") as e:
        size_against(handler, [64])
    assert str(e.value).endswith(expect), str(e.value)


def templated(content: str) -> str:
    return f"<|user|>\n{content}\n<|assistant|>\n"


async def vllm_chat_words(request: Any) -> Any:
    """vLLM's /tokenize, which also takes messages and counts them through the chat template."""
    from aiohttp import web

    body = await request.json()
    text = templated(body["messages"][0]["content"]) if "messages" in body else body["prompt"]
    ids = list(range(word_count(text)))
    return web.json_response({"count": len(ids), "max_model_len": 8192, "tokens": ids, "token_strs": None})


def test_where_tokenize_takes_messages_the_whole_chat_prompt_is_sized() -> None:
    lengths = [64] * 10 + [5, 300]
    sizing = size_against(vllm_chat_words, lengths, endpoint="/v1/chat/completions", num_prompts=len(lengths))
    assert [word_count(templated(p)) for p in sizing.prompts] == lengths
    assert sizing.unit == "tokens (server)"
    assert sizing.check.exact == sizing.check.sampled == 8
