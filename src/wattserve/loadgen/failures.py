"""A failed request's reason, worded so that the same fault gives the same words on every request
(the result counts failures by reason)."""

from __future__ import annotations

import json
import os
from typing import Any

MAX_REASON = 200
"""Longest failure reason kept (a server's message or body), so that a page of HTML stays one line."""


def server_message(error: Any) -> str:
    """The message of an OpenAI error object ({"message", "type", ...}), or the object as text."""
    message = error.get("message") if isinstance(error, dict) else error
    return str(message or error)[:MAX_REASON]


def http_error(status: int, text: str) -> str:
    """"503 worker 1 exited": the status and, from OpenAI's error shape, the server's message (any
    other body is quoted, shortened), so that equal failures group under one reason."""
    try:
        message = server_message(json.loads(text)["error"])
    except (ValueError, KeyError, TypeError):
        message = " ".join(text.split())[:MAX_REASON] or "(empty body)"
    return f"{status} {message}"


def describe(e: Exception) -> str:
    """A failure's reason, worded so that the same fault gives the same reason on every request."""
    import aiohttp

    if isinstance(e, aiohttp.ServerDisconnectedError):
        return "server disconnected"
    if isinstance(e, aiohttp.ClientPayloadError):
        return "connection closed mid-response"
    if isinstance(e, aiohttp.ClientConnectorError):
        errno = e.os_error.errno
        return f"cannot connect ({os.strerror(errno) if errno else e.os_error})"
    if isinstance(e, json.JSONDecodeError):
        return f"bad JSON in the stream ({e.msg})"
    return f"{type(e).__name__}: {e}"[:MAX_REASON]
