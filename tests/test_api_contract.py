"""The serving API's contract with clients (issue 17), against a live `wattserve serve --model tiny`:
every OpenAI parameter honoured or refused with a 400 naming it, client mistakes answered as 4xx in
OpenAI's error shape (never 5xx), and no request, however malformed, wedges the service: after
the table and after a fuzz of request bodies, a normal request is still served."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from serverutil import get, post, start_server

pytest.importorskip("torch")
openai = pytest.importorskip("openai")

COMPLETIONS, CHAT = "/v1/completions", "/v1/chat/completions"
MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    srv = start_server("--prefill", "1", "--decode", "1", "--max-prompt-tokens", "600", "--num-blocks", "128")
    yield srv.url
    out = srv.stop()
    assert "Traceback" not in out and "engine step failed" not in out, out


def assert_error(status: int, body: dict[str, Any], want_status: int, param: str | None, text: str = "") -> None:
    assert status == want_status, (status, body)
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert err["param"] == param, err
    assert text in err["message"], err


def assert_serves(url: str) -> None:
    status, body = post(url, COMPLETIONS, {"prompt": "still there?", "max_tokens": 4, "ignore_eos": True})
    assert status == 200 and body["usage"]["completion_tokens"] == 4, body


CASES: list[tuple[str, str, dict[str, Any], int, str | None, str]] = [
    ("token-id-too-large", COMPLETIONS, {"prompt": [999999]}, 400, "prompt", "outside the vocabulary"),
    ("token-id-negative", COMPLETIONS, {"prompt": [-1]}, 400, "prompt", "outside the vocabulary"),
    ("stream-as-string", COMPLETIONS, {"prompt": "x", "stream": "yes"}, 400, "stream", "boolean"),
    ("ignore-eos-as-string", COMPLETIONS, {"prompt": "x", "ignore_eos": "false"}, 400, "ignore_eos", "boolean"),
    ("echo-as-number", COMPLETIONS, {"prompt": "x", "echo": 1}, 400, "echo", "boolean"),
    ("best-of-3", COMPLETIONS, {"prompt": "x", "best_of": 3}, 400, "best_of", "best_of=1"),
    ("presence-penalty-3", COMPLETIONS, {"prompt": "x", "presence_penalty": 3}, 400, "presence_penalty", "-2"),
    ("frequency-penalty-minus-3", CHAT, {"messages": MSG, "frequency_penalty": -3}, 400, "frequency_penalty", "-2"),
    ("tools", CHAT, {"messages": MSG, "tools": [{"type": "function", "function": {"name": "f"}}]}, 400, "tools",
     "tool calling"),
    ("tool-choice-auto", CHAT, {"messages": MSG, "tool_choice": "auto"}, 400, "tool_choice", "tool calling"),
    ("response-format-json", CHAT, {"messages": MSG, "response_format": {"type": "json_object"}}, 400,
     "response_format", "JSON mode"),
    ("logit-bias", COMPLETIONS, {"prompt": "x", "logit_bias": {"5": 10}}, 400, "logit_bias", ""),
    ("suffix", COMPLETIONS, {"prompt": "x", "suffix": "end"}, 400, "suffix", ""),
    ("n-2", COMPLETIONS, {"prompt": "x", "n": 2}, 400, "n", "n=1"),
    ("unknown-argument", COMPLETIONS, {"prompt": "x", "foo": 1}, 400, "foo", "Unrecognized request argument"),
    ("chat-only-argument-on-completions", COMPLETIONS, {"prompt": "x", "messages": MSG}, 400, "messages",
     "Unrecognized"),
    ("stop-five", COMPLETIONS, {"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop", "at most 4"),
    ("stop-number", COMPLETIONS, {"prompt": "x", "stop": 5}, 400, "stop", "string"),
    ("stream-options-without-stream", COMPLETIONS, {"prompt": "x", "stream_options": {"include_usage": True}}, 400,
     "stream_options", "stream"),
    ("top-logprobs-without-logprobs", CHAT, {"messages": MSG, "top_logprobs": 2}, 400, "top_logprobs", "logprobs"),
    ("image-part", CHAT, {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]}, 400, "messages", "only text parts"),
    ("tool-role", CHAT, {"messages": [{"role": "tool", "content": "x"}]}, 400, "messages", "not supported"),
    ("content-a-number", CHAT, {"messages": [{"role": "user", "content": 5}]}, 400, "messages", "string"),
    ("max-tokens-0", COMPLETIONS, {"prompt": "x", "max_tokens": 0}, 400, "max_tokens", "between"),
    ("max-completion-tokens-0", CHAT, {"messages": MSG, "max_completion_tokens": 0}, 400, "max_completion_tokens",
     "between"),
    ("temperature-5", COMPLETIONS, {"prompt": "x", "temperature": 5}, 400, "temperature", "between"),
    ("prompt-a-number", COMPLETIONS, {"prompt": 12}, 400, "prompt", "string or a list"),
    ("prompt-too-long", COMPLETIONS, {"prompt": "y" * 2000}, 400, "prompt", "limit"),
    ("beyond-the-kv-cache", COMPLETIONS, {"prompt": "y" * 500, "max_tokens": 2048}, 400, None,
     "exceeds the KV cache (2048 tokens)"),
    ("model-not-served", COMPLETIONS, {"prompt": "x", "model": "gpt-4"}, 404, "model", "not served"),
]


@pytest.mark.parametrize(("path", "body", "status", "param", "text"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_each_bad_request_gets_openais_error(url: str, path: str, body: dict[str, Any], status: int,
                                             param: str | None, text: str) -> None:
    got, answer = post(url, path, body)
    assert_error(got, answer, status, param, text)


@pytest.mark.parametrize(("method", "path", "data", "status"), [
    ("GET", "/v1/nothing", None, 404),
    ("GET", COMPLETIONS, None, 405),
    ("POST", COMPLETIONS, b"{" + b" " * (9 * 2**20) + b"}", 413),
    ("POST", COMPLETIONS, b"{not json", 400),
    ("POST", COMPLETIONS, b"[1, 2]", 400),
])
def test_http_errors_use_openais_shape(url: str, method: str, path: str, data: bytes | None, status: int) -> None:
    req = urllib.request.Request(url + path, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=30)
        raise AssertionError("expected an error")
    except urllib.error.HTTPError as e:
        assert e.code == status
        assert e.headers["Content-Type"].startswith("application/json")
        assert set(json.loads(e.read())["error"]) == {"message", "type", "param", "code"}


def test_the_service_is_not_wedged_by_the_table(url: str) -> None:
    for _, path, body, *_ in CASES:
        post(url, path, body)
    assert_serves(url)
    assert get(url, "/health") == (200, "ok")


def test_stop_strings_end_the_text_before_them(url: str) -> None:
    free = post(url, COMPLETIONS, {"prompt": "abc", "max_tokens": 40, "temperature": 0, "ignore_eos": True})[1]
    text = free["choices"][0]["text"]
    stop = text[10:13]
    assert len(stop) == 3 and text.index(stop) >= 1
    for stream in (False, True):
        status, body = _complete(url, {"prompt": "abc", "max_tokens": 40, "temperature": 0, "ignore_eos": True,
                                       "stop": [stop, "\x00never"]}, stream)
        assert status == 200
        assert body["text"] == text[:text.index(stop)] and body["finish_reason"] == "stop", (body, text, stop)


def _complete(url: str, body: dict[str, Any], stream: bool) -> tuple[int, dict[str, Any]]:
    """Text and finish reason of a completion, streamed (chunks joined) or not."""
    if not stream:
        status, answer = post(url, COMPLETIONS, body)
        return status, {"text": answer["choices"][0]["text"], "finish_reason": answer["choices"][0]["finish_reason"]}
    req = urllib.request.Request(url + COMPLETIONS, data=json.dumps({**body, "stream": True}).encode(),
                                 headers={"Content-Type": "application/json"})
    parts, finish = [], None
    with urllib.request.urlopen(req, timeout=60) as r:
        for raw in r:
            line = raw.decode().strip()
            if line.startswith("data: {"):
                choice = json.loads(line[6:])["choices"][0]
                parts.append(choice["text"])
                finish = choice["finish_reason"] or finish
        return r.status, {"text": "".join(parts), "finish_reason": finish}


def test_echo_returns_the_prompt_first(url: str) -> None:
    plain = post(url, COMPLETIONS, {"prompt": "hello", "max_tokens": 5, "temperature": 0, "ignore_eos": True})[1]
    status, echoed = _complete(url, {"prompt": "hello", "max_tokens": 5, "temperature": 0, "ignore_eos": True,
                                     "echo": True}, stream=False)
    assert status == 200 and echoed["text"] == "hello" + plain["choices"][0]["text"]


def test_max_completion_tokens_is_honoured_through_the_official_client(url: str) -> None:
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused")
    r = client.chat.completions.create(model="tiny", messages=MSG, max_completion_tokens=3,
                                       extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == 3 and r.choices[0].finish_reason == "length"


def test_chat_content_as_text_parts_equals_the_string(url: str) -> None:
    as_string = post(url, CHAT, {"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 6,
                                 "temperature": 0, "ignore_eos": True})[1]
    as_parts = post(url, CHAT, {"messages": [{"role": "user", "content": [{"type": "text", "text": "hello "},
                                                                         {"type": "text", "text": "there"}]}],
                                "max_tokens": 6, "temperature": 0, "ignore_eos": True})[1]
    assert as_parts["choices"][0]["message"] == as_string["choices"][0]["message"]
    assert as_parts["usage"] == as_string["usage"]


JSON_VALUES = hs.recursive(hs.none() | hs.booleans() | hs.integers(-10**6, 10**6) | hs.floats(allow_nan=False)
                           | hs.text(max_size=20),
                           lambda inner: hs.lists(inner, max_size=4) | hs.dictionaries(hs.text(max_size=8), inner,
                                                                                        max_size=4), max_leaves=8)
KEYS = sorted({"prompt", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stream", "stop",
               "seed", "n", "echo", "logprobs", "top_logprobs", "presence_penalty", "frequency_penalty", "best_of",
               "ignore_eos", "stream_options", "tools", "response_format", "user", "model", "logit_bias"})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=hs.sampled_from([COMPLETIONS, CHAT]),
       body=hs.dictionaries(hs.sampled_from(KEYS), JSON_VALUES, max_size=6),
       prompt=hs.one_of(hs.text(max_size=30), hs.lists(hs.integers(-5, 300), max_size=8)))
def test_fuzzed_bodies_never_get_a_5xx(url: str, path: str, body: dict[str, Any], prompt: Any) -> None:
    body = {**body}
    if path == COMPLETIONS:
        body.setdefault("prompt", prompt)
    else:
        body.setdefault("messages", [{"role": "user", "content": prompt if isinstance(prompt, str) else "x"}])
    for k in ("max_tokens", "max_completion_tokens"):
        if isinstance(body.get(k), int) and not isinstance(body.get(k), bool) and body[k] > 16:
            body[k] = 16
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), headers={"Content-Type":
                                                                                      "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.status == 200
            r.read()
    except urllib.error.HTTPError as e:
        assert 400 <= e.code < 500, (e.code, body, e.read())
        assert set(json.loads(e.read())["error"]) == {"message", "type", "param", "code"}


def test_the_service_is_alive_after_the_fuzz(url: str) -> None:
    assert_serves(url)
    assert get(url, "/health") == (200, "ok")


def test_logprobs_come_back_in_both_shapes(url: str) -> None:
    body = {"prompt": "power", "max_tokens": 6, "temperature": 0, "ignore_eos": True, "logprobs": 2}
    status, answer = post(url, COMPLETIONS, body)
    assert status == 200
    lp = answer["choices"][0]["logprobs"]
    assert len(lp["token_logprobs"]) == len(lp["tokens"]) == answer["usage"]["completion_tokens"] == 6
    for chosen, top in zip(lp["token_logprobs"], lp["top_logprobs"]):
        assert chosen <= 0 and 1 <= len(top) <= 2  # keyed by token text: tokens that decode alike share a key
        assert max(top.values()) <= chosen + 1e-5  # greedy: nothing is likelier than the chosen token
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused")
    r = client.chat.completions.create(model="tiny", messages=MSG, max_completion_tokens=4, logprobs=True,
                                       top_logprobs=3, temperature=0, extra_body={"ignore_eos": True})
    content = r.choices[0].logprobs.content
    assert len(content) == 4 and all(len(c.top_logprobs) == 3 and c.logprob <= 0 for c in content)


def test_penalties_change_what_greedy_decoding_repeats(url: str) -> None:
    def distinct(**extra: float) -> int:
        body = {"prompt": [256, 1, 2, 3], "max_tokens": 48, "temperature": 0, "ignore_eos": True, "logprobs": 0,
                **extra}
        answer = post(url, COMPLETIONS, body)[1]
        return len(set(answer["choices"][0]["logprobs"]["tokens"]))

    plain = distinct()
    assert distinct(frequency_penalty=2.0) > plain
    assert distinct(presence_penalty=2.0) > plain
