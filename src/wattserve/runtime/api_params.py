"""Reading an OpenAI request body: every parameter honoured or refused, none silently ignored.

OpenAI answers an argument it does not know with 400 "Unrecognized request argument supplied"; so
do we, and for each argument of OpenAI's API we either honour it or refuse it with a 400 that names
it (https://platform.openai.com/docs/api-reference/completions/create and .../chat/create). Types
are checked strictly: `"stream": "yes"` is an error, not true. vLLM's extensions that we honour
(`ignore_eos`) are accepted too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wattserve.runtime.engine.sequence import SamplingParams


class ApiError(Exception):
    def __init__(self, message: str, param: str | None = None, status: int = 400,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.param = param
        self.status = status
        self.kind = kind


COMMON = {"model", "max_tokens", "n", "seed", "stop", "stream", "stream_options", "temperature", "top_p", "user",
          "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "ignore_eos"}
COMPLETIONS = COMMON | {"prompt", "echo", "best_of", "suffix"}
CHAT = COMMON | {"messages", "max_completion_tokens", "top_logprobs", "tools", "tool_choice", "functions",
                 "function_call", "parallel_tool_calls", "response_format", "modalities", "audio", "prediction",
                 "store", "metadata", "reasoning_effort", "service_tier"}
REFUSED = {
    "suffix": "insertion (suffix) is not supported",
    "tools": "tool calling is not supported",
    "functions": "function calling is not supported",
    "function_call": "function calling is not supported",
    "audio": "audio output is not supported",
    "prediction": "predicted outputs are not supported",
    "reasoning_effort": "this model has no reasoning effort setting",
}
"""Arguments refused whenever they carry a value (null and their neutral value pass)."""
MAX_STOP = 4
"""OpenAI's limit on stop sequences."""
MAX_TOP_LOGPROBS = {"completions": 5, "chat": 20}


@dataclass
class RequestOptions:
    """What the API layer does around the engine's sampling (`params`, logprobs included): stop
    strings, echo, streaming and usage."""

    params: SamplingParams
    stream: bool = False
    include_usage: bool = False
    stop: tuple[str, ...] = ()
    echo: bool = False


def _bool(body: dict[str, Any], name: str, default: bool = False) -> bool:
    v = body.get(name)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise ApiError(f"'{name}' must be a boolean (true or false), got {v!r}", name)
    return v


def number(body: dict[str, Any], name: str, default: float, lo: float, hi: float, integer: bool = False) -> Any:
    v = body.get(name, default)
    if v is None:
        v = default
    if isinstance(v, bool) or not isinstance(v, int | float) or (integer and not float(v).is_integer()):
        raise ApiError(f"'{name}' must be {'an integer' if integer else 'a number'}, got {v!r}", name)
    if not lo <= v <= hi:
        raise ApiError(f"'{name}' must be between {lo:g} and {hi:g}, got {v}", name)
    return int(v) if integer else float(v)


def _stop(body: dict[str, Any]) -> tuple[str, ...]:
    v = body.get("stop")
    if v is None:
        return ()
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise ApiError("'stop' must be a string or a list of strings", "stop")
    if len(items) > MAX_STOP:
        raise ApiError(f"'stop' takes at most {MAX_STOP} sequences, got {len(items)}", "stop")
    if any(s == "" for s in items):
        raise ApiError("'stop' sequences must not be empty", "stop")
    return tuple(items)


def _refuse_unsupported(body: dict[str, Any], allowed: set[str]) -> None:
    for k in body:
        if k not in allowed:
            raise ApiError(f"Unrecognized request argument supplied: {k}", k)
    for k, why in REFUSED.items():
        if body.get(k) not in (None, [], {}, ""):
            raise ApiError(why, k)
    if body.get("n", 1) not in (1, None):
        raise ApiError("only n=1 is supported", "n")
    if body.get("best_of") not in (None, 1):
        raise ApiError("only best_of=1 is supported", "best_of")
    if body.get("logit_bias") not in (None, {}):
        raise ApiError("logit_bias is not supported", "logit_bias")
    if body.get("tool_choice") not in (None, "none"):
        raise ApiError("tool calling is not supported (tool_choice may only be 'none')", "tool_choice")
    fmt = body.get("response_format")
    if fmt is not None and fmt != {"type": "text"}:
        raise ApiError("only response_format {'type': 'text'} is supported (no JSON mode or schema)",
                       "response_format")
    modalities = body.get("modalities")
    if modalities is not None and modalities != ["text"]:
        raise ApiError("only the 'text' modality is supported", "modalities")
    for k in ("store", "parallel_tool_calls"):
        _bool(body, k)
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise ApiError("'user' must be a string", "user")
    so = body.get("stream_options")
    if so is not None and (not isinstance(so, dict) or set(so) - {"include_usage", "continuous_usage_stats"}):
        raise ApiError("'stream_options' must be an object with include_usage", "stream_options")


def read_options(body: dict[str, Any], endpoint: str, default_max: int, max_tokens_limit: int) -> RequestOptions:
    """The request's options, or an ApiError naming the first parameter refused. `endpoint` is
    'completions' or 'chat'."""
    _refuse_unsupported(body, COMPLETIONS if endpoint == "completions" else CHAT)
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ApiError("'seed' must be an integer", "seed")
    name = "max_tokens"
    if endpoint == "chat" and body.get("max_completion_tokens") is not None:
        name = "max_completion_tokens"
    stream = _bool(body, "stream")
    so = body.get("stream_options") or {}
    if so and not stream:
        raise ApiError("'stream_options' is only allowed when 'stream' is true", "stream_options")
    include_usage = _bool(so, "include_usage") if so else False
    logprobs: int | None = None
    if endpoint == "completions":
        if body.get("logprobs") is not None:
            logprobs = number(body, "logprobs", 0, 0, MAX_TOP_LOGPROBS["completions"], integer=True)
    elif _bool(body, "logprobs"):
        logprobs = number(body, "top_logprobs", 0, 0, MAX_TOP_LOGPROBS["chat"], integer=True)
    elif body.get("top_logprobs") is not None:
        raise ApiError("'top_logprobs' needs 'logprobs': true", "top_logprobs")
    params = SamplingParams(
        max_tokens=number(body, name, default_max, 1, max_tokens_limit, integer=True),
        temperature=number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=number(body, "top_p", 1.0, 1e-6, 1.0),
        seed=seed,
        ignore_eos=_bool(body, "ignore_eos"),
        presence_penalty=number(body, "presence_penalty", 0.0, -2.0, 2.0),
        frequency_penalty=number(body, "frequency_penalty", 0.0, -2.0, 2.0),
        logprobs=logprobs,
    )
    return RequestOptions(params, stream, include_usage, _stop(body),
                          _bool(body, "echo") if endpoint == "completions" else False)


def prompt_ids(body: dict[str, Any], encode: Any, vocab: int) -> list[int]:
    """A completions prompt as token ids: a string, a list of ids, or a one-element list of either.
    Ids outside the vocabulary are the client's mistake (vLLM answers 400), not the engine's."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return list(encode(prompt))
    if isinstance(prompt, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        bad = [t for t in prompt if not 0 <= t < vocab]
        if bad:
            raise ApiError(f"token id {bad[0]} is outside the vocabulary [0, {vocab})", "prompt")
        return list(prompt)
    raise ApiError("'prompt' must be a string or a list of token ids (one prompt per request)", "prompt")


def chat_messages(body: dict[str, Any]) -> list[dict[str, str]]:
    """Messages with their content as text: a string, or OpenAI's list of content parts of which
    only text parts are accepted (an image or audio part is refused by name)."""
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise ApiError("'messages' must be a non-empty list of {role, content} objects", "messages")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ApiError(f"messages[{i}] must be an object with a 'role' and a 'content'", "messages")
        if m["role"] not in ("system", "developer", "user", "assistant"):
            raise ApiError(f"messages[{i}].role {m['role']!r} is not supported; allowed: system, developer, user, "
                           "assistant", "messages")
        content = m.get("content")
        if isinstance(content, list):
            texts = []
            for j, part in enumerate(content):
                if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                    kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                    raise ApiError(f"messages[{i}].content[{j}]: only text parts are supported, got {kind!r}",
                                   "messages")
                texts.append(part["text"])
            content = "".join(texts)
        if not isinstance(content, str):
            raise ApiError(f"messages[{i}].content must be a string or a list of text parts", "messages")
        out.append({"role": "system" if m["role"] == "developer" else m["role"], "content": content})
    return out
