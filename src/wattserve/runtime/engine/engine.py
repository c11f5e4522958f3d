"""LLMEngine: owns the model, the KV cache and the scheduler; `step()` runs one batched iteration.

Before each iteration the engine asks its step governor (`seam.governor.StepGovernor`) for an SM
clock, showing it the batch about to run (`step_view`), as the simulator's instance does: one
governor object runs unchanged in both (issue 7). The runtime cannot set a per-worker clock yet, so
the decision is recorded (`governor_clock_mhz`) and reported in the worker's stats, where the
modelled power agent applies it as a clock lock (`runtime.power.modelled`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from wattserve.catalog.models import BatchShape
from wattserve.errors import UsageError
from wattserve.governors.max_clock import MaxClockGovernor
from wattserve.runtime.engine.args import EngineArgs
from wattserve.runtime.engine.config import ModelConfig, config_from_hf, get_config
from wattserve.runtime.engine.kv_cache import KVCache
from wattserve.runtime.engine.latency_window import LatencyWindow
from wattserve.runtime.engine.model_runner import ModelRunner
from wattserve.runtime.engine.sampler import TokenLogprob
from wattserve.runtime.engine.scheduler import Scheduler
from wattserve.runtime.engine.sequence import SamplingParams, Sequence, Status
from wattserve.runtime.engine.step_view import (
    Composition,
    EngineStepView,
    PowerProfile,
    batch_shape,
    phase_of,
)
from wattserve.runtime.engine.tokenizer import stop_ids_for
from wattserve.runtime.models.llama import LlamaForCausalLM
from wattserve.seam.governor import StepDecision, StepGovernor


@dataclass
class StepOutput:
    seq_id: str
    token: int | None
    finished: bool
    finish_reason: str | None
    num_generated: int
    kv: torch.Tensor | None = None
    logprob: TokenLogprob | None = None


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class LLMEngine:
    def __init__(self, args: EngineArgs, governor: StepGovernor | None = None, profile: PowerProfile | None = None,
                 slo_ttft_s: float | None = None, slo_tpot_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`profile` is the catalog GPU and model this engine's power is modelled as (default H100
        running Llama-3.1-8B, the server's defaults). `cap_w` and `locked_clock_mhz` are what the
        control plane has set on this worker's GPU; whoever sets them keeps them current."""
        self.args = args
        self.governor: StepGovernor = governor if governor is not None else MaxClockGovernor()
        self.profile = profile if profile is not None else PowerProfile.of()
        self.slo_ttft_s = slo_ttft_s
        self.slo_tpot_s = slo_tpot_s
        self.cap_w: float = self.profile.gpu.cap_max_w
        self.locked_clock_mhz: int | None = None
        self.governor_clock_mhz: int | None = None
        self.governor_calls = 0
        self.latencies = LatencyWindow()
        self._clock = clock
        self._t0 = clock()
        self._held = 0
        self._hold = 0
        self._composition: Composition = ()
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            raise UsageError(f"device: {args.device!r} asked for, but torch sees no CUDA device; use --device cpu")
        self.device = torch.device(args.device)
        cfg: ModelConfig = get_config(args.model)
        weights = None if args.weights == "dummy" else Path(args.weights)
        if weights is not None:
            if not weights.is_dir():
                raise UsageError(f"weights: {args.weights!r} is not a folder of safetensors (or use 'dummy')")
            cfg = config_from_hf(weights, cfg)
        if args.ep != cfg.ep:
            cfg = replace(cfg, ep=args.ep)
        self.cfg = cfg
        self.stop_ids: frozenset[int] = frozenset([args.eos_id] if args.eos_id is not None else stop_ids_for(weights))
        """Token ids that end a sequence unless its params say ignore_eos."""
        auto = torch.float32 if self.device.type == "cpu" else torch.bfloat16
        self.dtype = _dtype(args.dtype, auto)
        self.kv_dtype = _dtype(args.kv_cache_dtype, self.dtype)
        self.model = LlamaForCausalLM(cfg, self.device)
        if weights is None:
            self.model.init_dummy(args.seed)
        else:
            self.model.load_safetensors(weights)
        self.model.to(device=self.device, dtype=self.dtype).eval()
        num_blocks = args.num_blocks or self._auto_blocks()
        self.cache = KVCache(cfg, num_blocks, args.block_size, self.device, self.kv_dtype)
        self.scheduler = Scheduler(self.cache, args.max_num_seqs, args.max_batched_tokens)
        self.runner = ModelRunner(self.model, self.cache, self.device, args.max_num_seqs, not args.enforce_eager)
        self.seqs: dict[str, Sequence] = {}
        self.busy_s = 0.0
        self.steps = 0
        self.last_shape = BatchShape()
        """The shape of the last step run (the worker's step log records it)."""
        self.tokens_computed = 0

    def _auto_blocks(self) -> int:
        per_token = 2 * self.cfg.layers * self.cfg.kv_heads * self.cfg.head_dim * torch.finfo(self.kv_dtype).bits // 8
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            budget = int(free * 0.8)
        else:
            budget = 256 * 2**20
        return max(16, budget // (per_token * self.args.block_size))

    # ---- requests ----
    def _check(self, seq_id: str, total: int) -> None:
        if seq_id in self.seqs:
            raise ValueError(f"request id {seq_id!r} is already in the engine")
        if total > self.cfg.max_positions:
            raise UsageError(f"prompt plus max_tokens ({total}) exceeds the model's {self.cfg.max_positions} positions")
        if self.cache.blocks_for(total) > self.cache.num_blocks:
            raise UsageError(f"prompt plus max_tokens ({total}) exceeds the KV cache "
                             f"({self.cache.num_blocks * self.cache.block_size} tokens)")

    def _new_seq(self, seq_id: str, token_ids: list[int], prompt_len: int, params: SamplingParams,
                 prefill_only: bool) -> Sequence:
        gen = None
        if params.temperature > 0:
            gen = torch.Generator(device=self.device).manual_seed(params.seed if params.seed is not None else hash(seq_id) & 0xFFFFFFFF)
        seq = Sequence(seq_id, list(token_ids), prompt_len, params, prefill_only=prefill_only, generator=gen)
        seq.arrival_s = self.now_s()
        self.seqs[seq_id] = seq
        return seq

    def now_s(self) -> float:
        return self._clock() - self._t0

    def add(self, seq_id: str, token_ids: list[int], params: SamplingParams, prefill_only: bool = False) -> None:
        if not token_ids:
            raise UsageError("prompt: must have at least one token")
        self._check(seq_id, len(token_ids) + params.max_tokens)
        self.scheduler.waiting.append(self._new_seq(seq_id, token_ids, len(token_ids), params, prefill_only))

    def add_with_kv(self, seq_id: str, token_ids: list[int], prompt_len: int, params: SamplingParams,
                    kv: torch.Tensor) -> None:
        """Continue a sequence whose first kv.shape[2] positions were computed elsewhere (KV hand-off)."""
        self._check(seq_id, prompt_len + params.max_tokens)
        seq = self._new_seq(seq_id, token_ids, prompt_len, params, False)
        n = kv.shape[2]
        if self.cache.can_grow(seq.block_table, n + 1) and len(self.scheduler.running) < self.args.max_num_seqs:
            self.cache.grow(seq.block_table, n)
            self.cache.load(seq.block_table, kv)
            seq.num_computed = n
            seq.decode_from = (seq.arrival_s, seq.num_generated)
            seq.status = Status.RUNNING
            self.scheduler.running.append(seq)
        else:
            self.scheduler.waiting.append(seq)

    def abort(self, seq_id: str) -> bool:
        seq = self.seqs.pop(seq_id, None)
        if seq is None:
            return False
        self.scheduler.remove(seq)
        seq.status = Status.FINISHED
        seq.finish_reason = "abort"
        return True

    def take(self, seq_id: str) -> tuple[list[int], int, SamplingParams, torch.Tensor]:
        """Remove a sequence and return what a peer needs to continue it (for migration)."""
        seq = self.seqs.pop(seq_id)
        kv = self.cache.export(seq.block_table, seq.num_computed)
        self.scheduler.remove(seq)
        params = SamplingParams(**{**seq.params.__dict__, "max_tokens": seq.params.max_tokens})
        return seq.token_ids, seq.prompt_len, params, kv

    def has_work(self) -> bool:
        return bool(self.scheduler.running or self.scheduler.waiting)

    @property
    def kv_usage(self) -> float:
        return self.cache.used_blocks / self.cache.num_blocks

    # ---- one iteration ----
    def step(self) -> list[StepOutput]:
        batch = self.scheduler.schedule()
        if not batch:
            return []
        return self._run_batch(batch)

    def _run_batch(self, batch: list[tuple[Sequence, int]]) -> list[StepOutput]:
        """One forward over `batch` (sequence, tokens to compute), under the governor's answer."""
        self._govern(batch)
        t0 = time.perf_counter()
        sampled = self.runner.run(batch)
        q = 0
        for seq, n in batch:
            seq.num_computed += n
            q += n
        outputs: list[StepOutput] = []
        for seq, tok, lp in sampled:
            seq.token_ids.append(tok)
            out = self._after_token(seq, tok)
            out.logprob = lp
            outputs.append(out)
        self.busy_s += time.perf_counter() - t0
        self.steps += 1
        self.tokens_computed += q
        return outputs

    def _govern(self, batch: list[tuple[Sequence, int]], fresh: bool = False) -> None:
        """Ask the governor again when its last answer has run out, the batch has changed, or the
        caller says the engine's situation did (`fresh`)."""
        shape, comp = batch_shape(batch)
        self.last_shape = shape
        if not fresh and self._held < self._hold and comp == self._composition:
            self._held += 1
            return
        view = EngineStepView(self.now_s(), phase_of(shape), shape, self.kv_usage, self.cap_w,
                              self.locked_clock_mhz, self.slo_ttft_s, self.slo_tpot_s, self.profile,
                              self._queued, self.latencies, self.scheduler.max_batched_tokens, batch)
        decision: StepDecision = self.governor.decide(view)
        self.governor_calls += 1
        self.governor_clock_mhz = decision.clock_mhz
        self._hold = max(1, decision.hold_iters)
        self._held = 1
        self._composition = comp
        self._decided(decision)

    def _queued(self) -> Iterable[Sequence]:
        """The prompts waiting here, as the governor's view lists them."""
        return self.scheduler.waiting

    def _decided(self, decision: StepDecision) -> None:
        """What this engine does with a decision beyond its clock (the clock goes to the worker's
        power agent through `governor_clock_mhz`)."""

    def _record_latency(self, seq: Sequence, reason: str | None) -> None:
        now = self.now_s()
        if seq.decode_from is None:
            seq.decode_from = (now, seq.num_generated)
            self.latencies.add_ttft(now, now - seq.arrival_s)
        elif reason in ("stop", "length"):
            t, n = seq.decode_from
            if seq.num_generated > n:
                self.latencies.add_tpot(now, (now - t) / (seq.num_generated - n))

    def _after_token(self, seq: Sequence, tok: int) -> StepOutput:
        """Decide a sequence's end here, prefill-only ones included: a prefill worker's first token
        that is a stop token, or that uses up max_tokens, finishes the request ("stop"/"length",
        no KV to hand off), so the router never needs to know the tokenizer's stop ids."""
        p = seq.params
        reason = None
        if not p.ignore_eos and tok in self.stop_ids or tok in p.stop_token_ids:
            reason = "stop"
        elif seq.num_generated >= p.max_tokens or len(seq.token_ids) >= self.cfg.max_positions:
            reason = "length"
        elif seq.prefill_only:
            reason = "prefilled"
        self._record_latency(seq, reason)
        kv = None
        if reason is not None:
            if reason == "prefilled":
                kv = self.cache.export(seq.block_table, seq.num_computed)
            self.scheduler.remove(seq)
            self.seqs.pop(seq.seq_id, None)
            seq.status = Status.FINISHED
            seq.finish_reason = reason
        return StepOutput(seq.seq_id, tok, reason is not None, reason, seq.num_generated, kv)


def _dtype(name: str, auto: torch.dtype) -> torch.dtype:
    if name == "auto":
        return auto
    if name not in DTYPES:
        raise UsageError(f"dtype: unknown value {name!r}; allowed: auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def generate(engine: LLMEngine, prompts: list[list[int]], params: SamplingParams) -> list[list[int]]:
    """Run prompts to completion in one engine (offline use and tests)."""
    for i, p in enumerate(prompts):
        engine.add(f"g{i}", p, params)
    out: dict[str, list[int]] = {f"g{i}": [] for i in range(len(prompts))}
    while engine.has_work():
        for o in engine.step():
            if o.token is not None:
                out[o.seq_id].append(o.token)
    return [out[f"g{i}"] for i in range(len(prompts))]
