"""`wattserve profile --kind iterations`: the latency of one step of our own engine per batch shape,
the table (perf.iteration_table) that `wattserve calibrate --profile` fits the simulator to.

The simulator is fitted to these rows and then compared with our serving runtime, so a row times
what one serving step costs, not a bare model forward: `LLMEngine.step()` as the worker calls it
(schedule, the step governor's view, input preparation, forward, sampling, the per-token
bookkeeping), in one process with `threads` torch threads (the worker's default is 1).

Each shape is staged from synthetic sequences, before every timed step, so that the scheduler's
next batch is exactly that shape: a whole prompt waits to be admitted, as a new request does; the
last chunk of a chunked prefill and a decoding sequence are running with their context already in
the KV cache. Cached K/V values are left as the cache holds them (their values do not change a
step's cost, and writing them would dominate the staging). Sampling is greedy with `ignore_eos`, as
`wattserve bench` asks, and no sequence finishes in the timed step. A prefill row's sequences all
finish their prompt in the step (the table divides its tokens and context by `prefill_seqs`). The
grid runs `warmup` untimed passes, then `repeats` timed ones; each row holds its shape's median.

Each timed step follows an untimed step of the same shape, staged the same way: in serving, a step
follows steps of about its size, and a small step right after a large one runs slower on a CPU
(caches and allocator filled by the large one). In two grid profiles of 2026-12-07 with `validate`'s
grid, the first decode row of each pass (one sequence of 16 tokens, right after two 512-token prompts
on 128 cached tokens) took 0.85 and 0.91 ms against 0.57-0.64 ms for the next three one-sequence
rows; with the untimed step first it took 0.56 ms in both.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from wattserve.errors import UsageError
from wattserve.perf.iteration_table import IterationRow, write_rows

if TYPE_CHECKING:
    from wattserve.runtime.engine.engine import LLMEngine
    from wattserve.schema.profile import ProfileConfig

ENGINE = "wattserve-runtime"
BLOCK = 16
"""KV block size of the profiled engine (the runtime's default, EngineArgs.block_size)."""


@dataclass(frozen=True)
class Shape:
    """One batch: `prefill_seqs` prompts computing `prefill_tokens` each after `prefill_ctx` cached
    tokens each, beside `decode_seqs` decodes of `decode_ctx` tokens of context each."""

    prefill_seqs: int = 0
    prefill_tokens: int = 0
    prefill_ctx: int = 0
    decode_seqs: int = 0
    decode_ctx: int = 0

    @property
    def seqs(self) -> int:
        return self.prefill_seqs + self.decode_seqs

    @property
    def tokens(self) -> int:
        return self.prefill_seqs * self.prefill_tokens + self.decode_seqs

    def blocks(self, block_size: int) -> int:
        """KV blocks the staged sequences hold after the step."""
        per_prefill = -(-(self.prefill_ctx + self.prefill_tokens) // block_size)
        return self.prefill_seqs * per_prefill + self.decode_seqs * -(-self.decode_ctx // block_size)


def shapes(cfg: ProfileConfig) -> list[Shape]:
    """The grid in the order it runs: prefill rows, decode rows, then mixed rows (one prompt with
    nothing cached beside a decode batch), each family in ascending order of its dimensions."""
    prefill = [Shape(s, t, c) for s in cfg.sizes("prefill_seqs") for t in cfg.sizes("prefill_tokens")
               for c in cfg.sizes("prefill_ctx")]
    decode = [Shape(decode_seqs=b, decode_ctx=c) for b in cfg.sizes("decode_seqs") for c in cfg.sizes("decode_ctx")]
    mixed = [Shape(1, t, 0, b, c) for t in cfg.sizes("mixed_tokens") for b in cfg.sizes("mixed_seqs")
             for c in cfg.sizes("mixed_ctx")]
    return prefill + decode + mixed


def check(cfg: ProfileConfig) -> None:
    """What the schema cannot check without torch: a CUDA device, and models the engine can run on
    the device whose positions cover the grid's longest sequence."""
    import torch

    from wattserve.runtime.engine.config import SMALL_CONFIGS, get_config

    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("'cuda' asked for, but torch sees no CUDA device; allowed here: cpu", "device")
    for m in cfg.iteration_models:
        if cfg.device == "cpu" and m not in SMALL_CONFIGS:
            raise UsageError(f"unknown runtime model {m!r}; allowed with --kind iterations on --device cpu: "
                             f"{', '.join(SMALL_CONFIGS)}", "model")
        positions = get_config(m).max_positions
        for field, longest in _longest(cfg):
            if longest + 2 > positions:
                raise UsageError(f"the grid's longest sequence ({longest} tokens, then one generated and room "
                                 f"for another) exceeds {m}'s {positions} positions; allowed: a context (plus "
                                 f"prompt tokens) of at most {positions - 2}", field)
        _check_memory(cfg, m)


def _check_memory(cfg: ProfileConfig, model: str) -> None:
    """The KV cache of the grid's largest shape within half the host's memory (CPU) or 80% of the
    GPU's free memory (the engine's own budget), rather than an out-of-memory kill with no message."""
    import torch

    from wattserve.runtime.engine.config import get_config

    c = get_config(model)
    per_token = 2 * c.layers * c.kv_heads * c.head_dim * (4 if cfg.device == "cpu" else 2)
    largest = max(shapes(cfg), key=lambda s: s.blocks(BLOCK))
    need = (largest.blocks(BLOCK) + largest.seqs + 1) * BLOCK * per_token
    if cfg.device == "cuda":
        budget = int(torch.cuda.mem_get_info()[0] * 0.8)
    else:
        budget = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    if need > budget:
        field = "decode_seqs" if largest.decode_seqs and not largest.prefill_seqs else (
            "mixed_seqs" if largest.decode_seqs else "prefill_seqs")
        raise UsageError(f"the grid's largest batch needs {need / 2**30:.1f} GiB of KV cache for {model}, more "
                         f"than the {budget / 2**30:.1f} GiB allowed on {cfg.device}; allowed: fewer sequences or "
                         f"shorter contexts", field)


def _longest(cfg: ProfileConfig) -> list[tuple[str, int]]:
    """(the field to blame, the most positions a sequence of that family holds) per family of rows."""
    out = []
    if cfg.sizes("prefill_tokens"):
        out.append(("prefill_ctx", max(cfg.sizes("prefill_ctx")) + max(cfg.sizes("prefill_tokens"))))
    if cfg.sizes("decode_seqs"):
        out.append(("decode_ctx", max(cfg.sizes("decode_ctx"))))
    if cfg.sizes("mixed_tokens"):
        out.append(("mixed_tokens", max(cfg.sizes("mixed_tokens"))))
        out.append(("mixed_ctx", max(cfg.sizes("mixed_ctx"))))
    return out


def steps(cfg: ProfileConfig) -> int:
    """Timed (or warm-up pass) steps the profile runs: every shape, every pass, every model; each
    comes after an untimed step of its shape, not counted here."""
    return len(shapes(cfg)) * (cfg.warmup + cfg.repeats) * len(cfg.iteration_models)


def profile_iterations(cfg: ProfileConfig, progress: Callable[[int], None] | None = None) -> list[IterationRow]:
    """One row per (model, shape), sorted; models one after another, with torch's thread count set to
    `cfg.threads` for the run and restored after it. `progress` gets the steps run so far.

    The grid runs `warmup + repeats` times over, one step of each shape per pass, rather than all of
    one shape's steps back to back: a burst of load from elsewhere on the machine then lands on one
    sample of many shapes, which the median drops, not on every sample of a few."""
    import torch

    check(cfg)
    grid = shapes(cfg)
    rows: list[IterationRow] = []
    done = 0
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        for m in cfg.iteration_models:
            engine = engine_for(cfg, m, grid)
            device = _device_column(engine)
            times: list[list[float]] = [[] for _ in grid]
            for p in range(cfg.warmup + cfg.repeats):
                for shape, samples in zip(grid, times):
                    stage(engine, shape)
                    timed_step(engine, shape)
                    stage(engine, shape)
                    t = timed_step(engine, shape)
                    if p >= cfg.warmup:
                        samples.append(t)
                    done += 1
                    if progress:
                        progress(done)
            _clear(engine)
            rows += [_row(m, device, shape, statistics.median(samples) * 1e3) for shape, samples in zip(grid, times)]
    finally:
        torch.set_num_threads(threads)
    return sorted(rows, key=_order)


def _row(model: str, device: str, shape: Shape, ms: float) -> IterationRow:
    """The table's row of a shape: per-sequence sizes become the batch's totals."""
    return IterationRow(engine=ENGINE, device=device, model=model, tp=1,
                        prefill_tokens=shape.prefill_seqs * shape.prefill_tokens, prefill_seqs=shape.prefill_seqs,
                        prefill_ctx=shape.prefill_seqs * shape.prefill_ctx, decode_seqs=shape.decode_seqs,
                        decode_ctx=shape.decode_seqs * shape.decode_ctx, iter_ms=round(ms, 4))


def _order(r: IterationRow) -> tuple[str, str, int, int, int, int, int, int]:
    return (r.model, r.device, r.tp, r.prefill_seqs, r.prefill_tokens, r.prefill_ctx, r.decode_seqs, r.decode_ctx)


def engine_for(cfg: ProfileConfig, model: str, grid: list[Shape]) -> LLMEngine:
    """One engine for every shape: limits wide enough that the scheduler takes each staged shape in
    one step, and a KV cache that holds the largest (plus a block per sequence of slack, the
    scheduler's admission headroom)."""
    from wattserve.runtime.engine.engine import EngineArgs, LLMEngine

    blocks = max(s.blocks(BLOCK) + s.seqs for s in grid) + 1
    args = EngineArgs(model=model, seed=cfg.seed, device=cfg.device, block_size=BLOCK, num_blocks=blocks,
                      max_num_seqs=max(s.seqs for s in grid), max_batched_tokens=max(s.tokens for s in grid))
    return LLMEngine(args)


def _device_column(engine: LLMEngine) -> str:
    from wattserve.runtime.engine.catalog_device import catalog_device

    return catalog_device(engine.device)


def timed_step(engine: LLMEngine, shape: Shape) -> float:
    """One engine step, in seconds; a RuntimeError if the scheduler did not take the staged shape
    whole (the engine's limits or the staging would then be wrong, and the row with them)."""
    import torch

    cuda = engine.device.type == "cuda"
    tokens, before, preempted = engine.tokens_computed, engine.steps, engine.scheduler.preemptions
    if cuda:
        torch.cuda.synchronize(engine.device)
    t0 = time.perf_counter()
    outs = engine.step()
    if cuda:
        torch.cuda.synchronize(engine.device)
    elapsed = time.perf_counter() - t0
    ran = (engine.tokens_computed - tokens, engine.steps - before, len(outs), engine.scheduler.preemptions)
    if ran != (shape.tokens, 1, shape.seqs, preempted) or any(o.finished for o in outs):
        raise RuntimeError(f"iteration profile: the engine did not run {shape} as one step "
                           f"({ran[0]} tokens, {ran[2]} sequences)")
    return elapsed


def _clear(engine: LLMEngine) -> None:
    for seq_id in list(engine.seqs):
        engine.abort(seq_id)


def _token_ids(vocab: int, n: int, salt: int) -> list[int]:
    """n deterministic token ids below `vocab`, different per sequence."""
    return [(salt * 7919 + i * 31) % vocab for i in range(n)]


def stage(engine: LLMEngine, shape: Shape) -> None:
    """The engine holding exactly `shape`'s sequences, ids the same at every repeat: decodes running,
    then chunks running (context > 0), or whole prompts waiting (context 0)."""
    from wattserve.runtime.engine.sequence import SamplingParams

    _clear(engine)
    vocab = engine.cfg.vocab
    for i in range(shape.decode_seqs):
        ids = _token_ids(vocab, shape.decode_ctx, i)
        _place(engine, f"d{i}", ids, prompt_len=shape.decode_ctx - 1, computed=shape.decode_ctx - 1)
    for i in range(shape.prefill_seqs):
        total = shape.prefill_ctx + shape.prefill_tokens
        ids = _token_ids(vocab, total, shape.decode_seqs + i)
        if shape.prefill_ctx:
            _place(engine, f"p{i}", ids, prompt_len=total, computed=shape.prefill_ctx)
        else:
            engine.add(f"p{i}", ids, SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True))


def _place(engine: LLMEngine, seq_id: str, ids: list[int], prompt_len: int, computed: int) -> None:
    """A running sequence whose first `computed` positions are in the KV cache, as a chunked prompt or
    a decode is between two steps (LLMEngine.add_with_kv without loading K/V)."""
    from wattserve.runtime.engine.sequence import SamplingParams, Sequence, Status

    params = SamplingParams(max_tokens=len(ids) - prompt_len + 2, temperature=0.0, ignore_eos=True)
    seq = Sequence(seq_id, ids, prompt_len, params, num_computed=computed, status=Status.RUNNING)
    seq.arrival_s = engine.now_s()
    if seq.num_generated:
        seq.decode_from = (seq.arrival_s, seq.num_generated)
    engine.cache.grow(seq.block_table, computed)
    engine.seqs[seq_id] = seq
    engine.scheduler.running.append(seq)


def write(rows: list[IterationRow], path: str) -> None:
    """The table at `path`, written to a hidden sibling and moved in whole, so that an interrupted
    run leaves no partial table."""
    out = Path(path)
    tmp = out.with_name(f".{out.name}.partial")
    try:
        write_rows(rows, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
