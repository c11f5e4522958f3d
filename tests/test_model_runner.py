"""ModelRunner: a step's inputs built in one pass (decode rows first), decode attention reading the
paged cache by block table, and one host sync per step."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

from wattserve.runtime.engine.engine import EngineArgs, LLMEngine  # noqa: E402
from wattserve.runtime.engine.sequence import SamplingParams  # noqa: E402
from wattserve.runtime.layers.attention import (  # noqa: E402
    AttnMetadata,
    DecodeBatch,
    LayerInputs,
    PagedAttention,
    PrefillSlice,
)


def test_prepare_puts_decode_rows_first_with_their_slots() -> None:
    e = LLMEngine(EngineArgs(model="tiny", seed=1, block_size=4, max_batched_tokens=64))
    greedy = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)
    e.add("a", [256, *b"first one"], greedy)
    e.step()
    e.add("b", [256, *b"second"], greedy)
    batch = e.scheduler.schedule()
    assert [(s.seq_id, n) for s, n in batch] == [("a", 1), ("b", 7)]
    step = e.runner.prepare(batch)
    a, b = batch[0][0], batch[1][0]
    assert step.ids == [a.token_ids[-1], *b.token_ids]
    assert step.positions == [10, *range(7)]
    assert step.slots == [*e.cache.slots(a.block_table, 10, 11).tolist(), *e.cache.slots(b.block_table, 0, 7).tolist()]
    assert step.decode_tables == [a.block_table[:3]] and step.decode_lens == [11]
    assert step.prefills == [(1, 7, 0, None)] and step.sample_rows == [0, 7] and step.sample_seqs == [a, b]


def slot_gather_reference(attn: PagedAttention, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                          slots: list[list[int]]) -> torch.Tensor:
    """The previous decode path: gather every context slot and repeat KV heads per query head."""
    out = []
    for i, s in enumerate(slots):
        keys = k_cache[s].transpose(0, 1).repeat_interleave(attn.rep, 0)
        vals = v_cache[s].transpose(0, 1).repeat_interleave(attn.rep, 0)
        out.append(F.scaled_dot_product_attention(q[i].unsqueeze(1), keys, vals).squeeze(1))
    return torch.stack(out)


def test_block_table_decode_and_chunk_match_slot_gather() -> None:
    g = torch.Generator().manual_seed(0)
    heads, kv_heads, dim, bs, blocks = 8, 2, 16, 4, 12
    attn = PagedAttention(32, heads, kv_heads, dim)
    k_cache = torch.randn(blocks * bs, kv_heads, dim, generator=g)
    v_cache = torch.randn(blocks * bs, kv_heads, dim, generator=g)
    tables, lens = [[7, 2, 9], [4], [11, 0]], [10, 3, 8]
    slots = [[t[p // bs] * bs + p % bs for p in range(n)] for t, n in zip(tables, lens)]
    q = torch.randn(3, heads, dim, generator=g)
    padded = torch.tensor([t + [0] * (3 - len(t)) for t in tables])
    d = DecodeBatch(3, padded, torch.tensor(lens))
    keep = torch.arange(3 * bs).unsqueeze(0) < d.context_lens.unsqueeze(1)
    mask = torch.zeros(keep.shape).masked_fill(~keep, float("-inf"))[:, None, None, :]
    got = attn._decode(q, k_cache.view(-1, bs, kv_heads, dim), v_cache.view(-1, bs, kv_heads, dim), d, mask)
    torch.testing.assert_close(got, slot_gather_reference(attn, q, k_cache, v_cache, slots))
    chunk = torch.randn(4, heads, dim, generator=g)
    s = PrefillSlice(0, 4, 6, torch.tensor(tables[0]))
    got = attn._prefill(chunk, chunk, chunk, k_cache.view(-1, bs, kv_heads, dim), v_cache.view(-1, bs, kv_heads, dim), s)
    for i in range(4):
        ref = slot_gather_reference(attn, chunk[i:i + 1], k_cache, v_cache, [slots[0][:6 + i + 1]])
        torch.testing.assert_close(got[i:i + 1], ref)
    assert LayerInputs(AttnMetadata(torch.zeros(1), torch.zeros(1), []), q, q, None, bs).block_size == bs


def test_one_host_sync_per_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """A mixed step (decode rows, a prefill chunk, greedy and sampled rows) reads back once."""
    e = LLMEngine(EngineArgs(model="tiny", seed=1))
    e.add("g", [256, *b"greedy"], SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True))
    e.add("s", [256, *b"sampled"], SamplingParams(max_tokens=8, temperature=0.9, top_p=0.8, seed=3, ignore_eos=True))
    e.step()
    e.add("p", [256, *b"a prompt"], SamplingParams(max_tokens=8, temperature=0.7, seed=4, ignore_eos=True))
    calls = {"tolist": 0, "item": 0}
    for name in calls:
        real = getattr(torch.Tensor, name)

        def counted(self: torch.Tensor, *a: object, _real: object = real, _name: str = name) -> object:
            calls[_name] += 1
            return _real(self, *a)  # type: ignore[operator]

        monkeypatch.setattr(torch.Tensor, name, counted)
    outs = e.step()
    assert sorted(o.seq_id for o in outs) == ["g", "p", "s"]
    assert calls == {"tolist": 1, "item": 0}
