"""The PyTorch engine against a dense reference forward (no cache, full causal attention)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

from wattserve.errors import UsageError  # noqa: E402
from wattserve.runtime.engine.engine import EngineArgs, LLMEngine, generate  # noqa: E402
from wattserve.runtime.engine.sequence import SamplingParams  # noqa: E402

GREEDY = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)


def dense_logits(engine: LLMEngine, ids: list[int]) -> torch.Tensor:
    """Next-token logits for every position, recomputing everything with plain causal attention."""
    m, cfg = engine.model, engine.cfg
    with torch.no_grad():
        x = m.model.embed_tokens(torch.tensor(ids))
        pos = torch.arange(len(ids))
        for layer in m.model.layers:
            h = layer.input_layernorm(x)
            a = layer.self_attn
            t = len(ids)
            q = m.rotary.apply(a.q_proj(h).view(t, cfg.heads, cfg.head_dim), pos).transpose(0, 1)
            k = m.rotary.apply(a.k_proj(h).view(t, cfg.kv_heads, cfg.head_dim), pos)
            v = a.v_proj(h).view(t, cfg.kv_heads, cfg.head_dim)
            rep = cfg.heads // cfg.kv_heads
            k = k.repeat_interleave(rep, 1).transpose(0, 1)
            v = v.repeat_interleave(rep, 1).transpose(0, 1)
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(0, 1).reshape(t, -1)
            x = x + a.o_proj(o)
            h = layer.post_attention_layernorm(x)
            x = x + (layer.block_sparse_moe(h) if layer.is_moe else layer.mlp(h))
        return m.logits(m.model.norm(x))


def dense_greedy(engine: LLMEngine, prompt: list[int], n: int) -> list[int]:
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(dense_logits(engine, ids)[-1].argmax()))
    return ids[len(prompt):]


PROMPTS = [[256, *b"hello paged attention"], [256, *b"a"], [256, *(b"long prompt " * 12)]]


@pytest.mark.parametrize("model", ["tiny", "tiny-moe"])
@pytest.mark.parametrize("chunk", [512, 7])
def test_engine_matches_dense_reference(model: str, chunk: int) -> None:
    e = LLMEngine(EngineArgs(model=model, max_batched_tokens=chunk, seed=3))
    got = generate(e, PROMPTS, GREEDY)
    for p, g in zip(PROMPTS, got):
        assert g == dense_greedy(e, p, GREEDY.max_tokens)
    assert e.cache.used_blocks == 0


def test_preemption_recomputes_to_the_same_tokens() -> None:
    e = LLMEngine(EngineArgs(model="tiny", num_blocks=12, block_size=4, seed=3))
    params = SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True)
    prompts = [[256, *b"preempt me %d" % i] for i in range(3)]
    got = generate(e, prompts, params)
    assert e.scheduler.preemptions > 0
    for p, g in zip(prompts, got):
        assert g == dense_greedy(e, p, 20)


def test_kv_handoff_continues_identically() -> None:
    a = LLMEngine(EngineArgs(model="tiny", seed=5))
    b = LLMEngine(EngineArgs(model="tiny", seed=5))
    prompt = [256, *b"disaggregated serving"]
    a.add("r", prompt, GREEDY, prefill_only=True)
    out = []
    while a.has_work():
        out += a.step()
    assert len(out) == 1 and out[0].finish_reason == "prefilled" and out[0].kv is not None
    assert out[0].kv.shape[2] == len(prompt) and a.cache.used_blocks == 0
    b.add_with_kv("r", [*prompt, out[0].token], len(prompt), GREEDY, out[0].kv)
    toks = [out[0].token]
    while b.has_work():
        toks += [o.token for o in b.step()]
    assert toks == generate(LLMEngine(EngineArgs(model="tiny", seed=5)), [prompt], GREEDY)[0]


def test_sampling_is_seeded() -> None:
    p = SamplingParams(max_tokens=16, temperature=0.8, top_p=0.9, seed=7, ignore_eos=True)
    a = generate(LLMEngine(EngineArgs(model="tiny")), [PROMPTS[0]], p)
    b = generate(LLMEngine(EngineArgs(model="tiny")), [PROMPTS[0]], p)
    c = generate(LLMEngine(EngineArgs(model="tiny")), [PROMPTS[0]], SamplingParams(**{**p.__dict__, "seed": 8}))
    assert a == b and a != c


def test_safetensors_weights_load_by_hf_names(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    src = LLMEngine(EngineArgs(model="tiny", seed=11))
    save_file({k: v.contiguous() for k, v in src.model.state_dict().items()}, str(tmp_path / "model.safetensors"))
    cfg = src.cfg
    (tmp_path / "config.json").write_text(json.dumps({
        "hidden_size": cfg.hidden, "num_hidden_layers": cfg.layers, "num_attention_heads": cfg.heads,
        "num_key_value_heads": cfg.kv_heads, "intermediate_size": cfg.ffn, "vocab_size": cfg.vocab,
        "rope_theta": cfg.rope_theta, "max_position_embeddings": cfg.max_positions}))
    loaded = LLMEngine(EngineArgs(model="tiny", weights=str(tmp_path), seed=999))
    assert generate(loaded, PROMPTS[:1], GREEDY) == generate(src, PROMPTS[:1], GREEDY)
    assert "model.layers.0.self_attn.q_proj.weight" in src.model.state_dict()


def test_bad_inputs() -> None:
    e = LLMEngine(EngineArgs(model="tiny", num_blocks=4, block_size=4))
    with pytest.raises(UsageError, match="exceeds the KV cache"):
        e.add("x", [256] * 10, SamplingParams(max_tokens=10))
    with pytest.raises(UsageError, match="unknown value"):
        LLMEngine(EngineArgs(model="nope"))
    with pytest.raises(UsageError, match="not a folder"):
        LLMEngine(EngineArgs(model="tiny", weights="/nonexistent"))
    e2 = LLMEngine(EngineArgs(model="tiny"))
    e2.add("y", [256, 1, 2], SamplingParams(max_tokens=50))
    assert e2.abort("y") and e2.cache.used_blocks == 0 and not e2.has_work()


def test_local_hf_tokenizer_is_used_when_present(tmp_path: Path) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    from wattserve.runtime.engine.tokenizer import ByteTokenizer, HfTokenizer, load_tokenizer

    t = tokenizers.Tokenizer(tokenizers.models.WordLevel({"hello": 0, "world": 1, "</s>": 2, "[UNK]": 3},
                                                         unk_token="[UNK]"))
    t.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    t.save(str(tmp_path / "tokenizer.json"))
    tok = load_tokenizer(tmp_path)
    assert isinstance(tok, HfTokenizer) and tok.encode("hello world") == [0, 1] and tok.eos_id == 2
    assert isinstance(load_tokenizer(None), ByteTokenizer)
    assert ByteTokenizer().decode(ByteTokenizer().encode("héllo")) == "héllo"


def hf_folder(src: LLMEngine, path: Path, **extra: object) -> Path:
    """A folder in HF layout (safetensors, config.json) holding `src`'s weights."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in src.model.state_dict().items()}, str(path / "model.safetensors"))
    cfg = src.cfg
    (path / "config.json").write_text(json.dumps({
        "hidden_size": cfg.hidden, "num_hidden_layers": cfg.layers, "num_attention_heads": cfg.heads,
        "num_key_value_heads": cfg.kv_heads, "intermediate_size": cfg.ffn, "vocab_size": cfg.vocab,
        "rope_theta": cfg.rope_theta, "max_position_embeddings": cfg.max_positions, **extra}))
    return path


def run_all(e: LLMEngine) -> list:
    out = []
    while e.has_work():
        out += e.step()
    return out


def first_token(seed: int, prompt: list[int]) -> int:
    return generate(LLMEngine(EngineArgs(model="tiny", seed=seed)), [prompt], SamplingParams(
        max_tokens=1, temperature=0.0, ignore_eos=True))[0][0]


def test_stop_ids_come_from_the_hf_configs(tmp_path: Path) -> None:
    """Llama 3.1 lists several EOS ids; generation_config.json wins over config.json, and the byte
    tokenizer's 257 is an ordinary token then."""
    prompt = PROMPTS[0]
    tok = first_token(5, prompt)
    folder = hf_folder(LLMEngine(EngineArgs(model="tiny", seed=5)), tmp_path, eos_token_id=1)
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [300, tok, 301]}))
    e = LLMEngine(EngineArgs(model="tiny", weights=str(folder)))
    assert e.stop_ids == {300, tok, 301} and 257 not in e.stop_ids
    e.add("c", prompt, SamplingParams(max_tokens=8, temperature=0.0))
    e.add("p", prompt, SamplingParams(max_tokens=8, temperature=0.0), prefill_only=True)
    out = {o.seq_id: o for o in run_all(e)}
    assert out["c"].finish_reason == "stop" and out["c"].token == tok and out["c"].num_generated == 1
    assert out["p"].finish_reason == "stop" and out["p"].finished and out["p"].kv is None
    assert e.cache.used_blocks == 0
    (folder / "generation_config.json").unlink()
    assert LLMEngine(EngineArgs(model="tiny", weights=str(folder))).stop_ids == {1}


def test_stop_ids_fall_back_to_the_tokenizer(tmp_path: Path) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    from wattserve.runtime.engine.tokenizer import stop_ids_for

    t = tokenizers.Tokenizer(tokenizers.models.WordLevel({"hi": 0, "<|eot_id|>": 7, "[UNK]": 3},
                                                         unk_token="[UNK]"))
    t.save(str(tmp_path / "tokenizer.json"))
    assert stop_ids_for(tmp_path) == (7,)
    assert stop_ids_for(None) == (257,)


def test_prefill_only_request_ends_in_the_engine() -> None:
    """Byte tokenizer: a prefill-only first token that is EOS (257) stops; max_tokens=1 is 'length';
    ignore_eos keeps it going to the hand-off. None of them leaves blocks behind."""
    prompt = PROMPTS[1]
    tok = first_token(5, prompt)
    e = LLMEngine(EngineArgs(model="tiny", seed=5))
    assert e.stop_ids == {257}
    w = e.model.lm_head.weight
    with torch.no_grad():
        w[[tok, 257]] = w[[257, tok]]
    e.add("eos", prompt, SamplingParams(max_tokens=8, temperature=0.0), prefill_only=True)
    e.add("ign", prompt, SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True), prefill_only=True)
    e.add("one", prompt, SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True), prefill_only=True)
    out = {o.seq_id: o for o in run_all(e)}
    assert {k: (o.token, o.finish_reason, o.kv is None) for k, o in out.items()} == {
        "eos": (257, "stop", True), "ign": (257, "prefilled", False), "one": (257, "length", True)}
    assert e.cache.used_blocks == 0


@pytest.mark.parametrize("transport", ["shm", "tcp"])
def test_bf16_kv_handoff_matches_colocated(transport: str) -> None:
    """prefill -> hand-off (KV stays bf16 on the way) -> decode gives the tokens colocated does."""
    from wattserve.runtime.transport import live_segments, make_transport, owner_prefix, transport_for

    args = EngineArgs(model="tiny", seed=5, kv_cache_dtype="bfloat16")
    prompts = [[256, *b"bf16 hand-off %d" % i] for i in range(3)]
    want = generate(LLMEngine(args), prompts, GREEDY)
    pre, dec = LLMEngine(args), LLMEngine(args)
    assert pre.cache.k[0].dtype == torch.bfloat16
    prefix = owner_prefix(os.getpid(), 7)
    t = make_transport(transport, prefix)
    for i, p in enumerate(prompts):
        pre.add(f"r{i}", p, GREEDY, prefill_only=True)
    got: dict[str, list[int]] = {}
    for o in run_all(pre):
        assert o.finish_reason == "prefilled" and o.kv.dtype == torch.bfloat16
        handle, payload = t.put(o.kv)
        kv = transport_for(handle).get(handle, payload)
        assert kv.dtype == torch.bfloat16 and torch.equal(kv, o.kv)
        i = int(o.seq_id[1:])
        got[o.seq_id] = [o.token]
        dec.add_with_kv(o.seq_id, [*prompts[i], o.token], len(prompts[i]), GREEDY, kv)
    for o in run_all(dec):
        got[o.seq_id].append(o.token)
    assert [got[f"r{i}"] for i in range(3)] == want
    assert live_segments(prefix) == [] and pre.cache.used_blocks == dec.cache.used_blocks == 0
