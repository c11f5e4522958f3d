"""A worker process: one engine on one device, with a role (prefill, decode or colocated), and the
power agent of that device.

It serves one router connection over TCP (JSON frames, see wire.py). Commands: add, import, abort,
set_role, set_batch_limit, set_step_target, the power ops of its own device (set_cap, lock_clock, restore:
runtime.power.ops; the step governor reads the cap in force and the lock from the same agent),
stats, shutdown. Events: tokens (one frame per engine step: [rid, token, finished, reason, logprob] for
each sequence that produced one, plus its [logprob, top] when asked; not a frame per token), prefilled (with its KV handle), migrated,
requeue, stats (the device's power readings under "power"), power (the answer to a power op),
role_ready, error. A role change between prefill and decode stops new admissions, hands queued
prompts back (requeue), lets running prefills finish, migrates running decodes to peers with their KV
(migrated), then switches without reloading weights and reports role_ready. One into or out of
colocated ("instant", seam/roles.instant_switch) switches at once: whatever the worker holds finishes
here as it was sent (each request carries its own prefill_only), and only later requests follow the
new role.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import traceback
from dataclasses import asdict
from typing import Any

from wattserve.errors import UsageError
from wattserve.governors.registry import make_governor, targeted_governors
from wattserve.runtime import wire
from wattserve.runtime.engine.catalog_device import catalog_device
from wattserve.runtime.engine.concurrent import ConcurrentEngine
from wattserve.runtime.engine.engine import LLMEngine
from wattserve.runtime.engine.sampler import TokenLogprob
from wattserve.runtime.engine.sequence import SamplingParams, Status
from wattserve.runtime.engine.step_view import PowerProfile
from wattserve.runtime.power.device import DevicePower
from wattserve.runtime.step_log import StepLog
from wattserve.runtime.transport import make_transport, transport_for
from wattserve.runtime.worker_spec import WorkerSpec
from wattserve.seam.governor import Targeted, target_of

ROLES = ("prefill", "decode", "colocated")
"""Roles a worker may switch between; a `concurrent` worker (RAPID-Serve: prompts prefilled by a
second process or CUDA stream over the same weights and KV cache, runtime/engine/concurrent.py) keeps
its role."""


class Worker:
    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.role = spec.role
        self.switching_to: str | None = None
        engine = ConcurrentEngine if spec.role == "concurrent" else LLMEngine
        self.engine = engine(spec.engine, make_governor(spec.governor), PowerProfile.of(spec.gpu, spec.power_as_model),
                             spec.slo_ttft_s, spec.slo_tpot_s)
        note = getattr(self.engine, "split_note", None)
        if note:
            print(f"worker {spec.wid} (concurrent): {note}", file=sys.stderr, flush=True)
        self.transport = make_transport(spec.transport, spec.shm_prefix, spec.host)
        self.power = DevicePower.open(spec.power_backend, spec.engine.device, spec.gpu, spec.power_as_model,
                                      self.counters)
        self.writer: asyncio.StreamWriter | None = None
        self.wake = asyncio.Event()
        self.started = time.monotonic()
        self.prompt_tokens = 0
        """Prompt tokens prefilled here, recomputation after preemption included (monotonic)."""
        self.step_log = None if spec.step_log is None else StepLog(
            spec.step_log, spec.wid, spec.role, catalog_device(self.engine.device), spec.engine.model)

    def send(self, header: dict[str, Any], payload: bytes = b"") -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(wire.encode(header, payload))

    def stats(self) -> dict[str, Any]:
        """The worker's state; the engine's limits are refreshed from the device's agent first, so
        `cap_w` and `locked_clock_mhz` are what its next step's governor will see (a cap settles
        while the worker idles too)."""
        e = self.engine
        power = self.power.stats()
        self._adopt_limits(power)
        return {"ev": "stats", "wid": self.spec.wid, "role": self.role, "switching_to": self.switching_to,
                "running": len(e.scheduler.running), "waiting": len(e.scheduler.waiting), "kv_usage": e.kv_usage,
                "kv_blocks_used": e.cache.used_blocks, "kv_blocks": e.cache.num_blocks, "busy_s": e.busy_s,
                "steps": e.steps, "tokens": e.tokens_computed, "uptime_s": time.monotonic() - self.started,
                "max_num_seqs": e.scheduler.max_num_seqs, "pid": os.getpid(),
                "governor_clock_mhz": e.governor_clock_mhz, "cap_w": e.cap_w, "locked_clock_mhz": e.locked_clock_mhz,
                "step_target": target_of(e.governor), "power": power, "vocab": e.cfg.vocab, **self.load()}

    def _adopt_limits(self, reading: dict[str, Any]) -> None:
        """The cap in force and the control plane's clock lock, from a power reading (a stats entry
        or an op's answer), for the engine's step governor: read when the worker reports or a
        power op lands (a cap settles within a stats period), never on the step's path."""
        if reading.get("cap_in_force_w") is not None:
            self.engine.cap_w = float(reading["cap_in_force_w"])
        self.engine.locked_clock_mhz = reading.get("locked_clock_mhz")

    def counters(self) -> dict[str, Any]:
        """What the modelled power agent reads of this worker (never the power stats themselves)."""
        e = self.engine
        return {"busy_s": e.busy_s, "steps": e.steps, "tokens": e.tokens_computed, "role": self.role,
                "governor_clock_mhz": e.governor_clock_mhz}

    def load(self) -> dict[str, int]:
        """The scheduler's queues in the seam's terms (`wattserve.seam.state.InstanceState`): a
        running sequence with more than one token left to compute is prefilling (a prompt chunk or a
        recomputation), one with a single token left is decoding."""
        sch = self.engine.scheduler
        prefilling = [s for s in sch.running if s.uncomputed > 1]
        return {"prefilling": len(prefilling), "decoding": len(sch.running) - len(prefilling),
                "waiting_tokens": sum(s.uncomputed for s in sch.waiting) + sum(s.uncomputed for s in prefilling),
                "prompt_tokens": self.prompt_tokens}

    def _step(self) -> list[Any]:
        """One engine step, counting the prompt tokens it computed: every token computed except one
        per sequence that was decoding (a single token left) before the step and produced a token."""
        e = self.engine
        decoding = {s.seq_id for s in e.scheduler.running if s.uncomputed == 1}
        before = e.tokens_computed
        outs = e.step()
        self.prompt_tokens += e.tokens_computed - before - sum(1 for o in outs if o.seq_id in decoding)
        return outs

    async def handle(self, h: dict[str, Any], payload: bytes) -> None:
        op = h["op"]
        if DevicePower.is_power_op(h):
            event = self.power.handle(h)
            self._adopt_limits(event)
            self.send(event)
            return
        if op == "add":
            if self.switching_to is not None:
                self.send({"ev": "requeue", "rid": h["rid"]})
                return
            params = SamplingParams(**h["params"])
            try:
                self.engine.add(h["rid"], h["token_ids"], params, prefill_only=h.get("prefill_only", False))
            except Exception as e:  # noqa: BLE001 - reported to the router as a clean per-request error
                self.send({"ev": "error", "rid": h["rid"], "message": str(e),
                           "status": 400 if isinstance(e, UsageError) else 500})
        elif op == "import":
            if self.switching_to is not None:
                self.send({"ev": "migrated", "rid": h["rid"], "handle": h["handle"], "token_ids": h["token_ids"],
                           "prompt_len": h["prompt_len"], "params": h["params"]}, payload)
                return
            try:
                kv = transport_for(h["handle"]).get(h["handle"], payload)
                self.engine.add_with_kv(h["rid"], h["token_ids"], h["prompt_len"], SamplingParams(**h["params"]), kv)
            except Exception as e:  # noqa: BLE001 - reported to the router as a clean per-request error
                self.send({"ev": "error", "rid": h["rid"], "message": f"KV hand-off failed: {e}"})
        elif op == "abort":
            self.engine.abort(h["rid"])
        elif op == "set_role":
            if h["role"] not in ROLES or self.role not in ROLES:
                self.send({"ev": "error", "rid": None, "message": f"role {h['role']!r}"})
                return
            if h.get("instant"):
                self.role = h["role"]
                self.send({"ev": "role_ready", "wid": self.spec.wid, "role": self.role, "instant": True})
                return
            self.switching_to = h["role"]
            self._evacuate()
        elif op == "set_share":
            pin = getattr(self.engine, "pin_share", None)
            if pin is None:
                self.send({"ev": "error", "rid": None, "message": f"set_share: worker {self.spec.wid} is {self.role}; "
                           "allowed: concurrent workers"})
                return
            f = float(h["fraction"])
            pin(None if f >= 1.0 else (f if h["phase"] == "decode" else 1.0 - f))
        elif op == "set_step_target":
            gov = self.engine.governor
            if not isinstance(gov, Targeted):
                self.send({"ev": "error", "rid": None, "message": f"set_step_target: worker {self.spec.wid}'s governor "
                           f"{gov.name!r} takes no target; allowed: {', '.join(targeted_governors())}"})
                return
            gov.retarget(float(h["share"]))
        elif op == "set_batch_limit":
            self.engine.scheduler.max_num_seqs = max(1, int(h["max_seqs"]))
        elif op == "stats":
            self.send(self.stats())
            return
        elif op == "shutdown":
            raise SystemExit(0)
        self.wake.set()

    def _evacuate(self) -> None:
        """Hand queued prompts back; migrate decoding sequences (with KV) when leaving a decode role."""
        e = self.engine
        for seq in list(e.scheduler.waiting):
            if seq.num_computed == 0 and seq.num_generated == 0:
                e.abort(seq.seq_id)
                self.send({"ev": "requeue", "rid": seq.seq_id})
        if self.role in ("decode", "colocated"):
            for seq in list(e.scheduler.running) + list(e.scheduler.waiting):
                if seq.status is Status.FINISHED:
                    continue
                token_ids, prompt_len, params, kv = e.take(seq.seq_id)
                handle, data = self.transport.put(kv)
                self.send({"ev": "migrated", "rid": seq.seq_id, "token_ids": token_ids, "prompt_len": prompt_len,
                           "params": asdict(params), "handle": handle}, data)

    def _maybe_finish_switch(self) -> None:
        if self.switching_to is not None and not self.engine.has_work():
            self.role = self.switching_to
            self.switching_to = None
            self.send({"ev": "role_ready", "wid": self.spec.wid, "role": self.role})

    async def run_engine(self) -> None:
        while True:
            if not self.engine.has_work():
                self._maybe_finish_switch()
                self.wake.clear()
                await self.wake.wait()
                continue
            started = time.perf_counter()
            try:
                outs = self._step()
            except Exception as e:  # noqa: BLE001 - a faulty step fails its requests, not the worker
                self._fail_running(e)
                continue
            self.power.request_clock(self.engine.governor_clock_mhz)
            tokens = []
            for o in outs:
                if o.finish_reason == "prefilled" and o.kv is not None:
                    handle, data = self.transport.put(o.kv)
                    self.send({"ev": "prefilled", "rid": o.seq_id, "token": o.token, "handle": handle,
                               "logprob": _wire_logprob(o.logprob)}, data)
                else:
                    tokens.append([o.seq_id, o.token, o.finished, o.finish_reason, _wire_logprob(o.logprob)])
            if tokens:
                self.send({"ev": "tokens", "items": tokens})
            if self.writer is not None:
                await self.writer.drain()
            await asyncio.sleep(0)
            if self.step_log is not None:
                self.step_log.record(self.engine.last_shape, time.perf_counter() - started)

    def _fail_running(self, e: Exception) -> None:
        """An exception inside a step: its sequences cannot be trusted (their KV may be half written),
        so each fails with the error and the worker goes on serving the rest of its queue. vLLM fails
        the whole engine here; one bad batch should not take the service down."""
        import sys

        sch = self.engine.scheduler
        print(f"wattserve worker {self.spec.wid}: engine step failed: {type(e).__name__}: {e}", file=sys.stderr,
              flush=True)
        for seq in list(sch.running) or list(sch.waiting):
            self.engine.abort(seq.seq_id)
            self.send({"ev": "error", "rid": seq.seq_id, "status": 500,
                       "message": f"engine step failed on worker {self.spec.wid}: {type(e).__name__}: {e}"})

    async def serve(self, ready: Any) -> None:
        done = asyncio.get_running_loop().create_future()

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.writer = writer
            engine_task = asyncio.create_task(self.run_engine())
            try:
                while True:
                    h, payload = await wire.read_frame(reader)
                    await self.handle(h, payload)
            except (asyncio.IncompleteReadError, ConnectionError, SystemExit):
                pass
            finally:
                engine_task.cancel()
                if not done.done():
                    done.set_result(None)

        server = await asyncio.start_server(on_connect, self.spec.host, 0)
        port = server.sockets[0].getsockname()[1]
        ready.send({"port": port, "pid": os.getpid()})
        ready.close()
        await done
        server.close()


def _wire_logprob(lp: TokenLogprob | None) -> list | None:
    """[logprob, [[token, logprob], ...]] or None: the JSON form of a TokenLogprob."""
    return None if lp is None else [lp.logprob, [list(t) for t in lp.top]]


def worker_main(spec: WorkerSpec, ready: Any) -> None:
    import torch

    torch.set_num_threads(max(1, spec.threads))
    try:
        w = Worker(spec)
    except Exception as e:  # noqa: BLE001 - the parent prints it as one line
        ready.send({"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc(limit=3)})
        ready.close()
        return
    try:
        asyncio.run(w.serve(ready))
    finally:
        close = getattr(w.engine, "close", None)
        if close is not None:
            close()
        w.power.close()
        if w.step_log is not None:
            w.step_log.close()
