"""OpenAI-compatible HTTP API (aiohttp): /v1/completions, /v1/chat/completions (SSE streaming or not),
/v1/models, vLLM's /tokenize, /health, /metrics.

Errors use OpenAI's shape, {"error": {"message", "type", "param", "code"}}, for every status: 400
for bad JSON, a bad or unsupported parameter (api_params.py) or a request the model cannot hold,
401 for a missing or wrong API key, 404/405/413 for a wrong path, method or body size, 503 when no
live worker can serve. When a client goes away mid-request, the request is aborted on its worker
and its KV blocks are freed.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from wattserve.runtime.api_params import ApiError, RequestOptions, chat_messages, prompt_ids, read_options
from wattserve.runtime.engine.tokenizer import Tokenizer, chat_prompt
from wattserve.runtime.logprobs_format import chat_logprobs, completion_logprobs
from wattserve.runtime.request_state import Failure, RequestState, Unavailable
from wattserve.runtime.router import Router
from wattserve.runtime.text_stream import TextStream

MAX_BODY_BYTES = 8 * 2**20
HTTP_KINDS = {404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error"}


def error_response(e: ApiError) -> web.Response:
    body = {"error": {"message": str(e), "type": e.kind, "param": e.param, "code": None}}
    return web.json_response(body, status=e.status)


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
        app = web.Application(middlewares=[self._guard], client_max_size=MAX_BODY_BYTES)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/tokenize", self.tokenize)
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
        except web.HTTPException as e:
            if e.status < 400:
                raise
            message = {404: f"no route {request.method} {request.path}",
                       405: f"method {request.method} is not allowed on {request.path}",
                       413: f"request body is larger than {MAX_BODY_BYTES} bytes"}.get(e.status, e.reason)
            return error_response(ApiError(message, None, e.status, HTTP_KINDS.get(e.status, "invalid_request_error")))

    async def health(self, request: web.Request) -> web.Response:
        """200 `ok` while every worker serves; 503 with the dead workers named once one is down (the
        server still serves with the rest, so a load balancer can see it is degraded)."""
        dead = self.router.dead()
        if not dead:
            return web.Response(text="ok")
        return web.json_response({"status": "degraded", "dead_workers": dead,
                                  "live_workers": len(self.router.workers) - len(dead)}, status=503)

    async def tokenize(self, request: web.Request) -> web.Response:
        """vLLM's /tokenize: {"prompt": text} -> {"tokens", "count", "max_model_len"}, with the
        server's own tokenizer (the load generator sizes its prompts with it)."""
        body = await self._body(request)
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise ApiError("'prompt' must be a string", "prompt")
        ids = self.tok.encode(prompt)
        return web.json_response({"tokens": ids, "count": len(ids), "max_model_len": self.max_prompt_tokens})

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

    def _vocab(self) -> int:
        """The served model's vocabulary size, as its workers report it."""
        return min((int(w.stats["vocab"]) for w in self.router.workers if "vocab" in w.stats), default=2**31)

    def _check_prompt(self, ids: list[int]) -> list[int]:
        if not ids:
            raise ApiError("prompt is empty", "prompt")
        if len(ids) > self.max_prompt_tokens:
            raise ApiError(f"prompt has {len(ids)} tokens; the limit is {self.max_prompt_tokens}", "prompt")
        return ids

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        opts = read_options(body, "completions", 16, self.max_tokens_limit)
        ids = self._check_prompt(prompt_ids(body, self.tok.encode, self._vocab()))
        st = self._submit(ids, opts)
        return await self._respond(request, st, opts, chat=False)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        opts = read_options(body, "chat", 128, self.max_tokens_limit)
        ids = self._check_prompt(self.tok.encode(chat_prompt(chat_messages(body))))
        st = self._submit(ids, opts)
        return await self._respond(request, st, opts, chat=True)

    def _submit(self, ids: list[int], opts: RequestOptions) -> RequestState:
        try:
            return self.router.submit(ids, opts.params)
        except Unavailable as e:
            raise ApiError(str(e), None, 503, "server_error") from None

    def _echo(self, st: RequestState, opts: RequestOptions) -> str:
        """The prompt's text, for `echo` (the tokenizer leaves special tokens such as BOS out)."""
        return self.tok.decode(st.prompt_ids) if opts.echo else ""

    async def _respond(self, request: web.Request, st: RequestState, opts: RequestOptions, chat: bool
                       ) -> web.StreamResponse:
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        obj = "chat.completion" if chat else "text_completion"
        try:
            if opts.stream:
                return await self._stream(request, st, opts, rid, created, chat)
            text_stream = TextStream(self.tok.decode, opts.stop)
            parts = [self._echo(st, opts)]
            ids: list[int] = []
            while not text_stream.stopped:
                kind, value = await st.queue.get()
                if kind == "token":
                    ids.append(value)
                    parts.append(text_stream.push(value))
                elif kind == "error":
                    f = value if isinstance(value, Failure) else Failure(str(value), 500)
                    raise ApiError(f.message, None, f.status, f.kind)
                else:
                    parts.append(text_stream.flush())
                    break
            finish = "stop" if text_stream.stopped else st.finish_reason
            text = "".join(parts)
            choice: dict[str, Any] = {"index": 0, "finish_reason": finish,
                                      "logprobs": self._logprobs(ids, st.logprobs, opts, chat, len(parts[0]))}
            if chat:
                choice["message"] = {"role": "assistant", "content": text}
            else:
                choice["text"] = text
            return web.json_response({"id": rid, "object": obj, "created": created, "model": self.model_name,
                                      "choices": [choice], "usage": self._usage(st, len(ids))})
        finally:
            if st.stage != "done":
                self.router.abort(st.rid)

    def _logprobs(self, ids: list[int], lps: list[list], opts: RequestOptions, chat: bool, offset: int = 0
                  ) -> dict[str, Any] | None:
        if opts.params.logprobs is None:
            return None
        lps = lps[:len(ids)]
        if chat:
            return chat_logprobs(ids, lps, self.tok.decode)
        return completion_logprobs(ids, lps, self.tok.decode, offset)

    def _usage(self, st: RequestState, n: int) -> dict[str, int]:
        return {"prompt_tokens": len(st.prompt_ids), "completion_tokens": n, "total_tokens": len(st.prompt_ids) + n}

    async def _stream(self, request: web.Request, st: RequestState, opts: RequestOptions, rid: str, created: int,
                      chat: bool) -> web.StreamResponse:
        """Server-sent events, one per token as vLLM streams them: a token whose text is not whole
        yet (part of a UTF-8 character, a special token, text held back by a stop sequence) streams as
        empty text, so that a client times every token, the first included. A client that goes away
        before the headers or mid-stream makes a write fail before aiohttp cancels the handler: that
        ends the stream quietly (the caller aborts the request on its worker), not with a logged
        traceback."""
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        try:
            await resp.prepare(request)
        except ConnectionResetError:
            return resp
        obj = "chat.completion.chunk" if chat else "text_completion"

        def chunk(text: str | None, finish: str | None, first: bool = False) -> dict[str, Any]:
            nonlocal shown
            c: dict[str, Any] = {"index": 0, "finish_reason": finish,
                                 "logprobs": self._logprobs(ids[shown:], st.logprobs[shown:], opts, chat)}
            shown = len(ids)
            if chat:
                c["delta"] = ({"role": "assistant", "content": text or ""} if first else
                              ({"content": text} if text is not None else {}))
            else:
                c["text"] = text or ""
            return {"id": rid, "object": obj, "created": created, "model": self.model_name, "choices": [c]}

        async def send(obj_: dict[str, Any]) -> None:
            await resp.write(f"data: {json.dumps(obj_)}\n\n".encode())

        text_stream = TextStream(self.tok.decode, opts.stop)
        ids: list[int] = []
        shown = 0
        first = True
        echo = self._echo(st, opts)
        try:
            if echo:
                await send(chunk(echo, None))
            while True:
                kind, value = await st.queue.get()
                if kind == "token":
                    ids.append(value)
                    text = text_stream.push(value)
                    if text_stream.stopped:
                        await send(chunk(text or None, "stop", first))
                        break
                    await send(chunk(text, None, first))
                    first = False
                elif kind == "error":
                    f = value if isinstance(value, Failure) else Failure(str(value), 500)
                    await send({"error": {"message": f.message, "type": f.kind, "param": None, "code": f.status}})
                    break
                else:
                    await send(chunk(text_stream.flush() or None, st.finish_reason, first))
                    break
            if opts.include_usage and kind != "error":
                await send({"id": rid, "object": obj, "created": created, "model": self.model_name, "choices": [],
                            "usage": self._usage(st, len(ids))})
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp
        except ConnectionResetError:
            return resp
