"""ModelRunner: one scheduled batch in, one forward and one sampling pass out.

The layout follows nano-vllm's engine/model_runner.py: prepare the step's inputs in one pass over
the batch (token ids, positions, slot mapping, decode block tables and context lengths, each built
once as a tensor; pinned host memory and non_blocking copies on CUDA), run the model, sample every
row together and read the ids back with a single `.tolist()`. Decode rows go first in the flattened
batch, so attention takes them as one slice. On CUDA, decode-only steps of dense models replay CUDA
graphs (`DecodeGraphs`), captured lazily per (batch, block-table width) bucket.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from wattserve.runtime.engine.kv_cache import KVCache
from wattserve.runtime.engine.sampler import TokenLogprob, sample_step
from wattserve.runtime.engine.sequence import Sequence
from wattserve.runtime.layers.attention import AttnMetadata, DecodeBatch, PrefillSlice
from wattserve.runtime.models.llama import LlamaForCausalLM

GRAPH_MAX_CONTEXT = 8192
"""Longest context (tokens) a captured decode graph covers; longer steps run eagerly, since a graph
gathers its whole block-table width every layer."""


@dataclass
class HostStep:
    """A step's inputs as host lists, decode rows first."""

    ids: list[int]
    positions: list[int]
    slots: list[int]
    decode_tables: list[list[int]]
    decode_lens: list[int]
    prefills: list[tuple[int, int, int, list[int] | None]]
    """(first row, rows, context, blocks covering context + rows or None when context is 0)."""
    sample_rows: list[int]
    sample_seqs: list[Sequence]


def _bucket(n: int, buckets: list[int]) -> int:
    return next(b for b in buckets if b >= n)


class ModelRunner:
    def __init__(self, model: LlamaForCausalLM, cache: KVCache, device: torch.device, max_num_seqs: int,
                 cuda_graphs: bool = True) -> None:
        self.model = model
        self.cache = cache
        self.device = device
        self.pin = device.type == "cuda"
        self.graphs: DecodeGraphs | None = None
        if cuda_graphs and device.type == "cuda" and model.cfg.experts == 0:
            width = cache.blocks_for(min(model.cfg.max_positions, GRAPH_MAX_CONTEXT))
            self.graphs = DecodeGraphs(model, cache, device, max_num_seqs, width)

    def _tensor(self, data: list, dtype: torch.dtype = torch.long) -> torch.Tensor:
        if not self.pin:
            return torch.tensor(data, dtype=dtype)
        return torch.tensor(data, dtype=dtype, pin_memory=True).to(self.device, non_blocking=True)

    def prepare(self, batch: list[tuple[Sequence, int]]) -> HostStep:
        bs = self.cache.block_size
        step = HostStep([], [], [], [], [], [], [], [])
        ordered = [e for e in batch if e[1] == 1] + [e for e in batch if e[1] != 1]
        q = 0
        for seq, n in ordered:
            start, end, table = seq.num_computed, seq.num_computed + n, seq.block_table
            step.ids.extend(seq.token_ids[start:end])
            if n == 1:
                step.positions.append(start)
                step.slots.append(table[start // bs] * bs + start % bs)
                step.decode_tables.append(table[:self.cache.blocks_for(end)])
                step.decode_lens.append(end)
            else:
                step.positions.extend(range(start, end))
                step.slots.extend(table[p // bs] * bs + p % bs for p in range(start, end))
                step.prefills.append((q, n, start, table[:self.cache.blocks_for(end)] if start else None))
            if end == len(seq.token_ids):
                step.sample_rows.append(q + n - 1)
                step.sample_seqs.append(seq)
            q += n
        return step

    def metadata(self, step: HostStep) -> AttnMetadata:
        decode = None
        if step.decode_tables:
            width = max(len(t) for t in step.decode_tables)
            tables = [t + [0] * (width - len(t)) for t in step.decode_tables]
            decode = DecodeBatch(len(tables), self._tensor(tables), self._tensor(step.decode_lens))
        prefills = [PrefillSlice(a, n, c, None if b is None else self._tensor(b)) for a, n, c, b in step.prefills]
        return AttnMetadata(self._tensor(step.positions), self._tensor(step.slots), prefills, decode)

    def forward(self, step: HostStep) -> torch.Tensor:
        if self.graphs is not None and not step.prefills and self.graphs.fits(step):
            return self.graphs.run(step)
        return self.model(self._tensor(step.ids), self.metadata(step), self.cache.k, self.cache.v,
                          self.cache.block_size)

    @torch.inference_mode()
    def run(self, batch: list[tuple[Sequence, int]]) -> list[tuple[Sequence, int, TokenLogprob | None]]:
        """Forward the batch; each sequence that reached its end gets its next token (and its
        log-probability when asked). The caller advances num_computed afterwards."""
        step = self.prepare(batch)
        hidden = self.forward(step)
        if not step.sample_seqs:
            return []
        rows = hidden if len(step.sample_rows) == hidden.shape[0] else hidden[self._tensor(step.sample_rows)]
        seqs = step.sample_seqs
        penalized = any(s.params.presence_penalty or s.params.frequency_penalty for s in seqs)
        toks, lps = sample_step(self.model.logits(rows), [s.params for s in seqs], [s.generator for s in seqs],
                                [s.output_ids for s in seqs] if penalized else None)
        return list(zip(seqs, toks, lps))


class DecodeGraphs:
    """CUDA graphs of decode-only forwards (nano-vllm's capture_cudagraph, captured on first use of
    each (batch, width) bucket instead of all up front). Inputs live in static buffers; padded rows
    write their K/V to the cache's scratch slot and attend one key. UNTESTED on hardware here: no
    GPU was available when it was written; `EngineArgs.enforce_eager` turns it off."""

    def __init__(self, model: LlamaForCausalLM, cache: KVCache, device: torch.device, max_num_seqs: int,
                 max_width: int) -> None:
        self.model, self.cache = model, cache
        self.batch_buckets = [1, 2, 4, 8] + list(range(16, max(16, max_num_seqs) + 16, 16))
        self.width_buckets = [w for w in (2 ** i for i in range(20)) if w < max_width] + [max_width]
        n, w = self.batch_buckets[-1], self.width_buckets[-1]
        self.ids = torch.zeros(n, dtype=torch.long, device=device)
        self.positions = torch.zeros(n, dtype=torch.long, device=device)
        self.slots = torch.zeros(n, dtype=torch.long, device=device)
        self.lens = torch.ones(n, dtype=torch.long, device=device)
        self.tables = torch.zeros(n, w, dtype=torch.long, device=device)
        self.graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.pool = None

    def fits(self, step: HostStep) -> bool:
        return (len(step.ids) <= self.batch_buckets[-1]
                and max(len(t) for t in step.decode_tables) <= self.width_buckets[-1])

    def run(self, step: HostStep) -> torch.Tensor:
        n = len(step.ids)
        b = _bucket(n, self.batch_buckets)
        w = _bucket(max(len(t) for t in step.decode_tables), self.width_buckets)
        host = torch.zeros(b, w + 4, dtype=torch.long, pin_memory=True)
        host[:, 3] = 1
        host[:n, 0] = torch.tensor(step.ids)
        host[:n, 1] = torch.tensor(step.positions)
        host[:n, 2] = torch.tensor(step.slots)
        host[n:, 2] = self.cache.scratch_slot
        host[:n, 3] = torch.tensor(step.decode_lens)
        for i, t in enumerate(step.decode_tables):
            host[i, 4:4 + len(t)] = torch.tensor(t)
        dev = host.to(self.ids.device, non_blocking=True)
        self.ids[:b].copy_(dev[:, 0])
        self.positions[:b].copy_(dev[:, 1])
        self.slots[:b].copy_(dev[:, 2])
        self.lens[:b].copy_(dev[:, 3])
        self.tables[:b, :w].copy_(dev[:, 4:])
        key = (b, w)
        if key not in self.graphs:
            self.graphs[key] = self._capture(b, w)
        graph, out = self.graphs[key]
        graph.replay()
        return out[:n]

    def _capture(self, b: int, w: int) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        meta = AttnMetadata(self.positions[:b], self.slots[:b], [], DecodeBatch(b, self.tables[:b, :w], self.lens[:b]))

        def fwd() -> torch.Tensor:
            return self.model(self.ids[:b], meta, self.cache.k, self.cache.v, self.cache.block_size)

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fwd()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            out = fwd()
        self.pool = graph.pool()
        return graph, out
