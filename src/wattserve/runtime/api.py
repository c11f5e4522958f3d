"""OpenAI-compatible HTTP API (aiohttp): /v1/completions, /v1/chat/completions (SSE streaming or not),
/v1/models, /health, /metrics.

Errors use OpenAI's shape, {"error": {"message", "type", "param", "code"}}, with HTTP 400 for bad JSON
or a bad field, 401 for a missing or wrong API key. When a client goes away mid-request, the request
is aborted on its worker and its KV blocks are freed.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from wattserve.runtime.engine.sequence import SamplingParams
from wattserve.runtime.engine.tokenizer import Tokenizer, chat_prompt
from wattserve.runtime.request_state import Failure, RequestState, Unavailable
from wattserve.runtime.router import Router


class ApiError(Exception):
    def __init__(self, message: str, param: str | None = None, status: int = 400,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.param = param
        self.status = status
        self.kind = kind


def error_response(e: ApiError) -> web.Response:
    body = {"error": {"message": str(e), "type": e.kind, "param": e.param, "code": None}}
    return web.json_response(body, status=e.status)


def _number(body: dict[str, Any], name: str, default: float, lo: float, hi: float, integer: bool = False) -> Any:
    v = body.get(name, default)
    if v is None:
        v = default
    if isinstance(v, bool) or not isinstance(v, int | float) or (integer and not float(v).is_integer()):
        raise ApiError(f"'{name}' must be {'an integer' if integer else 'a number'}", name)
    if not lo <= v <= hi:
        raise ApiError(f"'{name}' must be between {lo:g} and {hi:g}, got {v}", name)
    return int(v) if integer else float(v)


class Api:
    def __init__(self, router: Router, tokenizer: Tokenizer, model_name: str, max_prompt_tokens: int,
                 max_tokens_limit: int, api_key: str | None = None,
                 gpu_samples: Callable[[], list[dict[str, Any]]] | None = None) -> None:
        self.router = router
        self.tok = tokenizer
        self.model_name = model_name
        self.max_prompt_tokens = max_prompt_tokens
        self.max_tokens_limit = max_tokens_limit
        self.api_key = api_key
        self.gpu_samples = gpu_samples or (lambda: [])

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=8 * 2**20)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
        if (self.api_key and request.path.startswith("/v1/")
                and request.headers.get("Authorization", "") != f"Bearer {self.api_key}"):
            return error_response(ApiError("invalid API key", None, 401, "authentication_error"))
        try:
            return await handler(request)
        except ApiError as e:
            return error_response(e)

    async def health(self, request: web.Request) -> web.Response:
        """200 `ok` while every worker serves; 503 with the dead workers named once one is down (the
        server still serves with the rest, so a load balancer can see it is degraded)."""
        dead = self.router.dead()
        if not dead:
            return web.Response(text="ok")
        return web.json_response({"status": "degraded", "dead_workers": dead,
                                  "live_workers": len(self.router.workers) - len(dead)}, status=503)

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": self.model_name, "object": "model", "created": 0, "owned_by": "wattserve"}]})

    async def metrics(self, request: web.Request) -> web.Response:
        workers = [w.stats | {"wid": w.wid, "role": w.role, "alive": w.alive} for w in self.router.workers]
        text = self.router.metrics.render(workers, self.gpu_samples())
        return web.Response(text=text, content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type": "text/plain; version=0.0.4"})

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiError("request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError("request body must be a JSON object")
        model = body.get("model")
        if model is not None and model != self.model_name:
            raise ApiError(f"model {model!r} is not served here; this server serves {self.model_name!r}", "model",
                           404, "not_found_error")
        return body

    def _params(self, body: dict[str, Any], default_max: int) -> SamplingParams:
        seed = body.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ApiError("'seed' must be an integer", "seed")
        if body.get("n", 1) != 1:
            raise ApiError("only n=1 is supported", "n")
        return SamplingParams(
            max_tokens=_number(body, "max_tokens", default_max, 1, self.max_tokens_limit, integer=True),
            temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
            top_p=_number(body, "top_p", 1.0, 1e-6, 1.0),
            seed=seed,
            ignore_eos=bool(body.get("ignore_eos", False)),
        )

    def _check_prompt(self, ids: list[int]) -> list[int]:
        if not ids:
            raise ApiError("prompt is empty", "prompt")
        if len(ids) > self.max_prompt_tokens:
            raise ApiError(f"prompt has {len(ids)} tokens; the limit is {self.max_prompt_tokens}", "prompt")
        return ids

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
            prompt = prompt[0]
        if isinstance(prompt, str):
            ids = self.tok.encode(prompt)
        elif isinstance(prompt, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            ids = list(prompt)
        else:
            raise ApiError("'prompt' must be a string or a list of token ids (one prompt per request)", "prompt")
        params = self._params(body, 16)
        st = self._submit(self._check_prompt(ids), params)
        return await self._respond(request, st, body, chat=False)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in msgs):
            raise ApiError("'messages' must be a non-empty list of {role, content} objects", "messages")
        ids = self.tok.encode(chat_prompt(msgs))
        params = self._params(body, 128)
        st = self._submit(self._check_prompt(ids), params)
        return await self._respond(request, st, body, chat=True)

    def _submit(self, ids: list[int], params: SamplingParams) -> RequestState:
        try:
            return self.router.submit(ids, params)
        except Unavailable as e:
            raise ApiError(str(e), None, 503, "server_error") from None

    async def _respond(self, request: web.Request, st: RequestState, body: dict[str, Any], chat: bool
                       ) -> web.StreamResponse:
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        obj = "chat.completion" if chat else "text_completion"
        try:
            if body.get("stream"):
                return await self._stream(request, st, rid, created, chat, body)
            tokens: list[int] = []
            while True:
                kind, value = await st.queue.get()
                if kind == "token":
                    tokens.append(value)
                elif kind == "error":
                    f = value if isinstance(value, Failure) else Failure(str(value), 500)
                    raise ApiError(f.message, None, f.status, f.kind)
                else:
                    break
            text = self.tok.decode(tokens)
            choice: dict[str, Any] = {"index": 0, "finish_reason": st.finish_reason, "logprobs": None}
            if chat:
                choice["message"] = {"role": "assistant", "content": text}
            else:
                choice["text"] = text
            return web.json_response({"id": rid, "object": obj, "created": created, "model": self.model_name,
                                      "choices": [choice], "usage": self._usage(st, len(tokens))})
        finally:
            if st.stage != "done":
                self.router.abort(st.rid)

    def _usage(self, st: RequestState, n: int) -> dict[str, int]:
        return {"prompt_tokens": len(st.prompt_ids), "completion_tokens": n, "total_tokens": len(st.prompt_ids) + n}

    async def _stream(self, request: web.Request, st: RequestState, rid: str, created: int, chat: bool,
                      body: dict[str, Any]) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        obj = "chat.completion.chunk" if chat else "text_completion"
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(text: str | None, finish: str | None, first: bool = False) -> dict[str, Any]:
            c: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
            if chat:
                c["delta"] = ({"role": "assistant", "content": text or ""} if first else
                              ({"content": text} if text is not None else {}))
            else:
                c["text"] = text or ""
            return {"id": rid, "object": obj, "created": created, "model": self.model_name, "choices": [c]}

        async def send(obj_: dict[str, Any]) -> None:
            await resp.write(f"data: {json.dumps(obj_)}\n\n".encode())

        n = 0
        pending: list[int] = []
        first = True
        while True:
            kind, value = await st.queue.get()
            if kind == "token":
                n += 1
                pending.append(value)
                text = self.tok.decode(pending)
                if text.endswith("\ufffd"):
                    continue
                pending = []
                await send(chunk(text, None, first))
                first = False
            elif kind == "error":
                f = value if isinstance(value, Failure) else Failure(str(value), 500)
                await send({"error": {"message": f.message, "type": f.kind, "param": None, "code": f.status}})
                break
            else:
                await send(chunk(self.tok.decode(pending) if pending else None, st.finish_reason))
                if include_usage:
                    await send({"id": rid, "object": obj, "created": created, "model": self.model_name, "choices": [],
                                "usage": self._usage(st, n)})
                break
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

