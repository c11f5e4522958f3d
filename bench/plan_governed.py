"""Time of one judgement by the planner's trim model of a layout whose decode-slack governors have a
target (issue 15), with the governors of its simulated engines sharing what they learn of the models
(`SlackCaches`, as experiments/plan_sim.py builds them) and with a fresh governor per engine, side by
side, and the same layout with no slack spent (target 0).

The layout: rapid-h100's cluster (8x H100, llama-3.1-8b), 5 prefill + 3 decode instances at 500 W,
each decode instance running 90 requests, at 144 req/s of 1,000-token prompts and 250-token outputs
(azure-conv at 100 req/s, planned for at 1.15x and judged at 1.25x that), targets 0, 0.5, 0.7 and
0.9 of the TPOT SLO (40 ms). Each judgement is the warm model's (experiments/plan_sim.WARM): 8 s of
arrivals, at most 800 requests. Rounds alternate the two arms; the first round warms the shared
caches. Both arms' answers are printed so that a reader can check they agree.

Usage: python bench/plan_governed.py [--rounds 5]
Last line printed: one JSON object with, per arm, the median seconds of a judgement per target.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from statistics import median

from wattserve.experiments.plan_sim import WARM, SimPlanModel
from wattserve.experiments.scenarios import get_scenario
from wattserve.seam import Layout, LoadEstimate

TARGETS = (0.0, 0.5, 0.7, 0.9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    sc = get_scenario("rapid-h100")
    cluster = sc.scenario(sc.arm("planner")).cluster
    shared = SimPlanModel(cluster, 1.0, 0.04, **WARM)
    fresh = SimPlanModel(cluster, 1.0, 0.04, share_governors=False, **WARM)
    load = LoadEstimate(144.0, 1000.0, 250.0, running=(("prefill", 0),) * 5 + (("decode", 90),) * 3)
    times: dict[str, dict[float, list[float]]] = {"shared": {t: [] for t in TARGETS}, "fresh": {t: [] for t in TARGETS}}
    answers: dict[str, dict[float, tuple[float, float]]] = {"shared": {}, "fresh": {}}
    for _ in range(a.rounds):
        for arm, model in (("shared", shared), ("fresh", fresh)):
            for t in TARGETS:
                lay = replace(Layout(5, 500.0, 500.0), step_target=t)
                t0 = time.perf_counter()
                answers[arm][t] = model.predict(load, [lay], lay)[0]
                times[arm][t].append(time.perf_counter() - t0)
    for t in TARGETS:
        print(f"target {t}: shared {median(times['shared'][t]) * 1e3:.0f} ms, fresh {median(times['fresh'][t]) * 1e3:.0f} ms,"
              f" answers {answers['shared'][t]} / {answers['fresh'][t]}")
    print(json.dumps({arm: {str(t): round(median(v), 4) for t, v in d.items()} for arm, d in times.items()}))


if __name__ == "__main__":
    main()
