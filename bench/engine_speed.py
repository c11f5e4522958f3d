"""Engine speed on this CPU, side by side with Hugging Face transformers on the same model.

For each model (tiny, small) both engines get the same config and the same seeded weights (our
module names follow HF checkpoints, so LlamaForCausalLM loads our state dict as is). Reported:
- prefill tokens/s: BATCH prompts of PROMPT tokens, first token only;
- decode step time: BATCH sequences generating NEW tokens after that prompt, per step (for HF, a
  loop of forwards over its own KV cache, timed apart from the prefill);
- whether greedy tokens agree (a check that our Llama matches HF's).
Ours and HF alternate, repeat by repeat, and each figure is the best of its repeats, so load from
elsewhere on a shared machine hits both alike; compare ratios, not absolute times.
The last line is one JSON object. Usage: python bench/engine_speed.py [--threads 2] [--repeats 3]
Needs the `bench` extra (transformers). To measure another checkout's engine with this same script,
put its src first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from wattserve.runtime.engine.engine import EngineArgs, LLMEngine
from wattserve.runtime.engine.sequence import SamplingParams

BATCH, PROMPT, NEW = 8, 256, 32


def hf_model(engine: LLMEngine):  # noqa: ANN201
    from transformers import LlamaConfig, LlamaForCausalLM

    c = engine.cfg
    cfg = LlamaConfig(vocab_size=c.vocab, hidden_size=c.hidden, intermediate_size=c.ffn, num_hidden_layers=c.layers,
                      num_attention_heads=c.heads, num_key_value_heads=c.kv_heads, head_dim=c.head_dim,
                      rms_norm_eps=c.rms_eps, rope_theta=c.rope_theta, max_position_embeddings=c.max_positions,
                      tie_word_embeddings=False, attn_implementation="sdpa")
    m = LlamaForCausalLM(cfg).eval()
    missing, unexpected = m.load_state_dict(engine.model.state_dict(), strict=False)
    assert not [k for k in missing if "rotary" not in k], missing
    return m


def prompts(vocab: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, min(vocab, 256), (PROMPT,), generator=g).tolist() for _ in range(BATCH)]


def ours(model: str, ps: list[list[int]]) -> tuple[float, float, list[int]]:
    e = LLMEngine(EngineArgs(model=model, max_batched_tokens=BATCH * PROMPT, max_num_seqs=BATCH, seed=1))
    one = SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True)
    for i, p in enumerate(ps):
        e.add(f"w{i}", p, one)
    while e.has_work():
        e.step()
    for i, p in enumerate(ps):
        e.add(f"p{i}", p, one)
    t = time.perf_counter()
    while e.has_work():
        e.step()
    prefill_tps = BATCH * PROMPT / (time.perf_counter() - t)
    params = SamplingParams(max_tokens=NEW, temperature=0.0, ignore_eos=True)
    for i, p in enumerate(ps):
        e.add(f"d{i}", p, params)
    toks = [o.token for o in e.step() if o.seq_id == "d0"]
    t = time.perf_counter()
    steps = 0
    while e.has_work():
        for o in e.step():
            if o.seq_id == "d0":
                toks.append(o.token)
        steps += 1
    return prefill_tps, (time.perf_counter() - t) / steps, toks


def hf(engine: LLMEngine, ps: list[list[int]]) -> tuple[float, float, list[int]]:
    """HF's forward with its own KV cache: one timed prefill of the batch, then NEW - 1 greedy
    decode steps timed as a loop (what `generate` runs inside, without its per-call set-up)."""
    m = hf_model(engine)
    ids = torch.tensor(ps)
    with torch.inference_mode():
        m(ids[:1, :8])
        t = time.perf_counter()
        out = m(ids, use_cache=True)
        prefill_tps = BATCH * PROMPT / (time.perf_counter() - t)
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        toks = [int(nxt[0, 0])]
        past = out.past_key_values
        t = time.perf_counter()
        for _ in range(NEW - 1):
            out = m(nxt, past_key_values=past, use_cache=True)
            past = out.past_key_values
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            toks.append(int(nxt[0, 0]))
        step = (time.perf_counter() - t) / (NEW - 1)
    return prefill_tps, step, toks


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    result = {"batch": BATCH, "prompt_tokens": PROMPT, "new_tokens": NEW, "threads": a.threads,
              "torch": torch.__version__}
    for model in ("tiny", "small"):
        ref = LLMEngine(EngineArgs(model=model, seed=1))
        ps = prompts(ref.cfg.vocab)
        runs_o, runs_h = [], []
        for _ in range(a.repeats):
            runs_o.append(ours(model, ps))
            runs_h.append(hf(ref, ps))
        o_pre, o_dec = max(r[0] for r in runs_o), min(r[1] for r in runs_o)
        h_pre, h_dec = max(r[0] for r in runs_h), min(r[1] for r in runs_h)
        same = runs_o[0][2] == runs_h[0][2][:len(runs_o[0][2])]
        params = sum(p.numel() for p in ref.model.parameters())
        print(f"{model} ({params / 1e6:.1f}M params): prefill {o_pre:,.0f} tok/s (HF {h_pre:,.0f}); decode step "
              f"{o_dec * 1e3:.2f} ms at batch {BATCH} (HF {h_dec * 1e3:.2f} ms); greedy tokens agree: {same}")
        result[model] = {"params_m": round(params / 1e6, 2), "prefill_tok_s": round(o_pre), "hf_prefill_tok_s": round(h_pre),
                         "decode_step_ms": round(o_dec * 1e3, 3), "hf_decode_step_ms": round(h_dec * 1e3, 3),
                         "prefill_ratio_vs_hf": round(o_pre / h_pre, 2), "decode_ratio_vs_hf": round(h_dec / o_dec, 2),
                         "greedy_tokens_agree": same}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
