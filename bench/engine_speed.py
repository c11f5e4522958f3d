"""Engine speed on this CPU, side by side with Hugging Face transformers on the same model.

For each model (tiny, small) both engines get the same config and the same seeded weights (our
module names follow HF checkpoints, so LlamaForCausalLM loads our state dict as is). Reported:
- prefill tokens/s: BATCH prompts of PROMPT tokens, first token only;
- decode step time: BATCH sequences generating NEW tokens after that prompt, per step (for HF, one
  forward over its own KV cache per step, as `generate` runs);
- whether greedy tokens agree (a check that our Llama matches HF's).
Ours and HF alternate call by call (each prefill, each decode step), and the ratios reported are
medians of those paired ratios, so load from elsewhere on a shared machine hits both alike: compare
the ratios, not absolute times.
The last line is one JSON object. Usage: python bench/engine_speed.py [--threads 2] [--repeats 3]
Needs the `bench` extra (transformers). To measure another checkout's engine with this same script,
put its src first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

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


def _timed(f: Callable[[], object]) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


class Ours:
    def __init__(self, model: str, ps: list[list[int]]) -> None:
        self.e = LLMEngine(EngineArgs(model=model, max_batched_tokens=BATCH * PROMPT, max_num_seqs=BATCH, seed=1))
        self.ps = ps
        self.n = 0
        self.prefill()

    def _add(self, params: SamplingParams) -> list[str]:
        ids = []
        for p in self.ps:
            self.n += 1
            ids.append(f"s{self.n}")
            self.e.add(ids[-1], p, params)
        return ids

    def prefill(self) -> None:
        self._add(SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True))
        while self.e.has_work():
            self.e.step()

    def start_decode(self) -> None:
        self.first = self._add(SamplingParams(max_tokens=NEW, temperature=0.0, ignore_eos=True))[0]
        self.toks = []
        self.step()

    def step(self) -> None:
        self.toks += [o.token for o in self.e.step() if o.seq_id == self.first]


class Hf:
    def __init__(self, engine: LLMEngine, ps: list[list[int]]) -> None:
        self.m = hf_model(engine)
        self.ids = torch.tensor(ps)
        with torch.inference_mode():
            self.m(self.ids[:1, :8])

    @torch.inference_mode()
    def prefill(self) -> None:
        out = self.m(self.ids, use_cache=True)
        self.past = out.past_key_values
        self.nxt = out.logits[:, -1].argmax(-1, keepdim=True)

    def start_decode(self) -> None:
        self.prefill()
        self.toks = [int(self.nxt[0, 0])]

    @torch.inference_mode()
    def step(self) -> None:
        out = self.m(self.nxt, past_key_values=self.past, use_cache=True)
        self.past = out.past_key_values
        self.nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        self.toks.append(int(self.nxt[0, 0]))


def compare(model: str, repeats: int) -> dict[str, object]:
    """Ours and HF alternate call by call (prefills, then every decode step), so load from elsewhere
    on a shared machine falls on both alike; ratios are medians of the paired ratios."""
    ref = LLMEngine(EngineArgs(model=model, seed=1))
    ps = prompts(ref.cfg.vocab)
    ours, hf = Ours(model, ps), Hf(ref, ps)
    pre_o, pre_h, dec_o, dec_h = [], [], [], []
    for _ in range(repeats):
        pre_o.append(_timed(ours.prefill))
        pre_h.append(_timed(hf.prefill))
    same = True
    for _ in range(repeats):
        ours.start_decode()
        hf.start_decode()
        for _ in range(NEW - 1):
            dec_o.append(_timed(ours.step))
            dec_h.append(_timed(hf.step))
        same = same and ours.toks == hf.toks
    params = sum(p.numel() for p in ref.model.parameters())
    pre_ratio = statistics.median(h / o for o, h in zip(pre_o, pre_h))
    dec_ratio = statistics.median(h / o for o, h in zip(dec_o, dec_h))
    o_dec, h_dec = statistics.median(dec_o), statistics.median(dec_h)
    print(f"{model} ({params / 1e6:.1f}M params): prefill {BATCH * PROMPT / min(pre_o):,.0f} tok/s "
          f"(HF {BATCH * PROMPT / min(pre_h):,.0f}); decode step {o_dec * 1e3:.2f} ms median at batch {BATCH} "
          f"(HF {h_dec * 1e3:.2f} ms); paired ratios (HF time / ours): prefill {pre_ratio:.2f}x, "
          f"decode {dec_ratio:.2f}x; greedy tokens agree: {same}")
    return {"params_m": round(params / 1e6, 2), "prefill_tok_s": round(BATCH * PROMPT / min(pre_o)),
            "hf_prefill_tok_s": round(BATCH * PROMPT / min(pre_h)), "decode_step_ms": round(o_dec * 1e3, 3),
            "hf_decode_step_ms": round(h_dec * 1e3, 3), "prefill_ratio_vs_hf": round(pre_ratio, 2),
            "decode_ratio_vs_hf": round(dec_ratio, 2), "greedy_tokens_agree": same}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    result: dict[str, object] = {"batch": BATCH, "prompt_tokens": PROMPT, "new_tokens": NEW, "threads": a.threads,
                                 "torch": torch.__version__}
    for model in ("tiny", "small"):
        result[model] = compare(model, a.repeats)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
