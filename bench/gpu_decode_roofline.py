"""Decode step of Llama-3.1-8B (dummy weights) at batch 32 on one GPU, against the weight-streaming
roofline: a decode step must read every weight once, so it cannot beat weight bytes / HBM bandwidth.

Needs a CUDA GPU (run it through the device tool: `python bench/gpu_decode_roofline.py --gpu h100`).
Prints one JSON object: step_ms, roofline_ms, ratio (step / roofline; 1.0 is the bound). Decode
steps replay CUDA graphs unless --enforce-eager (run both to see what the graphs save).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from wattserve.catalog import get_gpu, get_model
from wattserve.runtime.engine.engine import EngineArgs, LLMEngine
from wattserve.runtime.engine.sequence import SamplingParams


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpu", default="h100")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs for decode")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark needs a GPU")
    e = LLMEngine(EngineArgs(model="llama-3.1-8b", device="cuda", max_num_seqs=a.batch,
                             max_batched_tokens=a.batch * a.context, enforce_eager=a.enforce_eager))
    params = SamplingParams(max_tokens=a.steps + 8, temperature=0.0, ignore_eos=True)
    for i in range(a.batch):
        e.add(f"s{i}", [1] * a.context, params)
    e.step()
    for _ in range(4):
        e.step()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(a.steps):
        e.step()
    torch.cuda.synchronize()
    step = (time.perf_counter() - t) / a.steps
    spec, gpu = get_model("llama-3.1-8b"), get_gpu(a.gpu)
    roofline = spec.weight_bytes / gpu.hbm_bytes_s
    print(json.dumps({"gpu": torch.cuda.get_device_name(0), "batch": a.batch, "context": a.context,
                      "cuda_graphs": not a.enforce_eager,
                      "step_ms": step * 1e3, "roofline_ms": roofline * 1e3, "ratio": step / roofline}))


if __name__ == "__main__":
    main()
