"""Step times of the MoE models at TP4, expert parallelism off (ep=1) and on (ep=4), from the
roofline latency model (wattserve.perf.latency): the table in docs/moe.md.

Each row is one decode iteration of `batch` sequences at 1,000 tokens of context each, at the GPU's
top SM clock; `comm` is the ep=4 step's dispatch + combine all-to-all time (perf/collectives.py),
`skew` the ep=4 step with the busiest expert at its largest share (1/top_k).
Usage: python scripts/moe_step_times.py [--gpus h100,a100] [--batches 1,8,64,256] [--context 1000]
"""

from __future__ import annotations

import argparse

from wattserve.catalog.gpus import get_gpu
from wattserve.catalog.models import BatchShape, get_model
from wattserve.perf.latency import RooflineLatencyModel

MODELS = ("mixtral-8x7b", "qwen3-30b-a3b")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpus", default="h100,a100")
    ap.add_argument("--batches", default="1,8,64,256")
    ap.add_argument("--context", type=int, default=1000)
    a = ap.parse_args()
    print("| GPU | model | batch | ep=1 ms | ep=4 ms | ep=4 / ep=1 | ep=4 comm ms | ep=4 max skew ms |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for g in a.gpus.split(","):
        gpu = get_gpu(g)
        for name in MODELS:
            model = get_model(name)
            tp = RooflineLatencyModel(gpu, model, 4)
            ep = RooflineLatencyModel(gpu, model, 4, 4)
            skew = RooflineLatencyModel(gpu, model, 4, 4, model.max_share)
            for b in (int(x) for x in a.batches.split(",")):
                shape = BatchShape.decode(b, a.context)
                t1 = tp.iteration(shape, gpu.clock_max_mhz).time_s * 1e3
                t4 = ep.iteration(shape, gpu.clock_max_mhz).time_s * 1e3
                ts = skew.iteration(shape, gpu.clock_max_mhz).time_s * 1e3
                print(f"| {gpu.name} | {model.name} | {b} | {t1:.2f} | {t4:.2f} | {t4 / t1:.3f} | "
                      f"{ep.comm_s(b) * 1e3:.2f} | {ts:.2f} |")


if __name__ == "__main__":
    main()
