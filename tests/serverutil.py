"""A `wattserve serve` subprocess for tests: started, its URL and worker pids read from its banner,
and stopped (SIGTERM, then its exit status and output kept for assertions)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    pids: dict[int, int]
    """Worker id -> process id."""
    roles: dict[int, str]
    lines: list[str] = field(default_factory=list)

    def stop(self, timeout_s: float = 30.0) -> str:
        """SIGTERM, wait, and return everything the server printed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=timeout_s)
        return "".join(self.lines) + (out or "")


def start_server(*args: str, timeout_s: float = 120.0) -> Server:
    proc = subprocess.Popen([sys.executable, "-m", "wattserve", "serve", "--model", "tiny", "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    deadline = time.time() + timeout_s
    while time.time() < deadline and proc.poll() is None:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        lines.append(line)
        m = re.search(r"\[(.*)\], listening on (http://\S+)", line)
        if m:
            workers = re.findall(r"(\d+):(\w+) pid (\d+)", m.group(1))
            return Server(proc, m.group(2), {int(w): int(p) for w, _, p in workers},
                          {int(w): r for w, r, _ in workers}, lines)
    proc.kill()
    raise RuntimeError("server did not start: " + "".join(lines))


def post(url: str, path: str, body: dict | bytes, key: str | None = None, timeout_s: float = 60.0
         ) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    req = urllib.request.Request(url + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def get(url: str, path: str, timeout_s: float = 10.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url + path, timeout=timeout_s) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def greedy_texts(url: str, prompts: list[str], max_tokens: int = 12) -> list[str]:
    """Each prompt's greedy completion (temperature 0, EOS ignored), for comparing two servers."""
    out = []
    for p in prompts:
        status, body = post(url, "/v1/completions", {"model": "tiny", "prompt": p, "max_tokens": max_tokens,
                                                     "temperature": 0, "ignore_eos": True})
        assert status == 200, body
        out.append(body["choices"][0]["text"])
    return out
