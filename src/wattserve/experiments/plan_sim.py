"""The planner's models, built for a cluster: the simulator itself as the model of each candidate
layout (a short simulation of the estimated load on that layout, from the queue the cluster holds
now), and the closed-form screen that ranks every candidate first (perf/plan_analytic.py).

A candidate's simulation replays `horizon_s` seconds of arrivals at the estimated rate (Poisson, or
a gamma renewal process whose squared coefficient of variation is the estimated index of dispersion,
which a renewal process's counts approach over long windows; its gaps are scaled to span exactly the
horizon's share of the rate, since their sum scatters by sqrt(dispersion / n), so that a burst
changes how the arrivals bunch and not how many come) with lengths of the estimated means
(lognormal, `length_cv` 1.0) (at most `max_requests` new requests, after the queued backlog,
which arrives at once and loads the cluster but is not scored), on the layout with static caps, and
reports its SLO attainment and average draw: the same simulator the comparison runs, so the
planner's model and the world it is judged in agree except in the load estimate. Seeds are fixed,
so a plan is reproducible. A candidate told the attainment it needs stops once it certainly falls
below it (`predict`'s `need`)."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from wattserve.catalog import get_gpu, get_model
from wattserve.errors import UsageError
from wattserve.governors.registry import sharing_factory
from wattserve.metrics.summary import records_met, slo_met
from wattserve.perf.perf_profile import load_profile
from wattserve.perf.plan_analytic import AnalyticPlanModel
from wattserve.results.records import PENDING
from wattserve.schema.cluster import ClusterConfig
from wattserve.seam import Layout, LoadEstimate, want_of
from wattserve.seam.roles import instant_switch, role_moves
from wattserve.sim.cluster import Cluster
from wattserve.workload import Workload


def kv_tokens(cluster: ClusterConfig) -> int:
    """KV-cache capacity of one of the cluster's instances, tokens."""
    return get_model(cluster.model).kv_capacity_tokens(get_gpu(cluster.gpu).hbm_bytes, cluster.tp,
                                                       cluster.engine.mem_util)


def analytic_model(cluster: ClusterConfig, slo_ttft_s: float | None, slo_tpot_s: float | None) -> AnalyticPlanModel:
    gpu, model = get_gpu(cluster.gpu), get_model(cluster.model)
    profile = load_profile(cluster.perf_profile)
    kv = kv_tokens(cluster)
    return AnalyticPlanModel(gpu, model, cluster.tp, cluster.num_gpus // cluster.tp,
                             profile.latency_model(gpu, model, cluster.tp), profile.power_model(gpu),
                             slo_ttft_s, slo_tpot_s, kv)


class SimPlanModel:
    def __init__(self, cluster: ClusterConfig, slo_ttft_s: float | None, slo_tpot_s: float | None,
                 horizon_s: float = 15.0, max_requests: int = 1500, seed: int = 0, length_cv: float = 1.0,
                 late_share: float = 0.5, check_s: float = 0.5, concurrent_switch: bool = False,
                 seed_running: bool = False, share_governors: bool = True) -> None:
        self.cluster = cluster
        self.seed_running = seed_running
        """Start each candidate from the requests running now (the load's `running`), seeded in
        their instances' decode batches, rather than from an empty cluster (`_workload`)."""
        self.concurrent_switch = concurrent_switch
        """Build each candidate's cluster able to switch into and out of concurrent, as the cluster
        it models is (a candidate starting from a concurrent layout, or moving to one, needs it)."""
        self.slo_s = (slo_ttft_s, slo_tpot_s)
        self.horizon_s = horizon_s
        self.max_requests = max_requests
        self.seed = seed
        self.length_cv = length_cv
        """Spread of the replayed lengths: the Azure LLM 2023 traces' prompt lengths have a
        coefficient of variation of 0.96 (conversation and code alike), so 1.0 stands for production
        traffic; 0 replays the means (a synthetic workload of fixed lengths)."""
        self.late_share = late_share
        """A candidate scores the lower of its attainment over the whole horizon and over the requests
        arriving after this share of it: a layout short of capacity for the load serves the first
        seconds from an empty cluster well and falls behind later, so its mean over a short horizon
        overstates what it would do for the rest of the period and beyond."""
        self.check_s = check_s
        """How often (simulated seconds) a candidate's run checks whether it can still reach the
        attainment of the layout in force."""
        c = cluster
        alike = c.decode_perf_profile in (None, c.perf_profile) and c.decode_tp in (None, c.tp)
        self._governors = sharing_factory(c.engine.governor) if alike and share_governors else None
        """The step governors of every run: engines alike (one perf profile and TP wherever decode
        runs) share what their governors learn of the models, which every run would otherwise
        learn afresh (`governors.registry.sharing_factory`)."""
        self._replay: tuple[tuple[LoadEstimate, Layout | None], Workload, list[int], np.ndarray] | None = None
        """The last (load, layout in force)'s replay, its seeds' instances and which of its requests
        are scored: a planner judges its candidates one call at a time on the same load."""

    def predict(self, load: LoadEstimate, layouts: Sequence[Layout], current: Layout | None = None,
                need: Sequence[float | None] | None = None) -> list[tuple[float, float]]:
        """With `need`, a layout's run stops as soon as the requests it has certainly missed put it
        below its need, and reports that bound with the power drawn so far: overloaded candidates
        are the slowest to simulate, and the rest of their run would change no decision."""
        if self._replay is None or self._replay[0] != (load, current):
            wl, seeds, back = self._workload(load, current)
            self._replay = (load, current), wl, seeds, np.arange(len(wl.arrival_s)) >= len(seeds) + back
        _, wl, seeds, scored = self._replay
        bars = list(need) if need is not None else [None] * len(layouts)
        return [self._run(wl, scored, lay, current, bar, seeds) for lay, bar in zip(layouts, bars)]

    def _seeds(self, load: LoadEstimate, current: Layout | None) -> list[int]:
        """The model instance each request running now is seeded on (Cluster.seed_running), the
        busiest of each role first: the cluster in force's instances of a role, busiest first, map
        onto the model's instances of that role in order (the model builds its instances role by
        role), as many as both have."""
        if current is None or not load.running or not self.seed_running:
            return []
        model_iids: dict[str, list[int]] = {}
        for iid, role in enumerate(self._config(current, current).instance_roles()):
            model_iids.setdefault(role, []).append(iid)
        seeds: list[int] = []
        for role, iids in model_iids.items():
            counts = sorted((n for r, n in load.running if r == role), reverse=True)
            for iid, n in zip(iids, counts):
                seeds += [iid] * n
        return seeds

    def _workload(self, load: LoadEstimate, current: Layout | None = None) -> tuple[Workload, list[int], int]:
        """The replayed requests: those running now (seeded in their instances' decode batches at
        time 0; `_seeds` says where), then the queued backlog (arriving at time 0), then the
        horizon's arrivals; with the seeds' instances and how many are backlog: at most half as
        many as the horizon's arrivals, since a layout that cannot clear that many besides the new
        arrivals fails most of those behind them whatever the backlog's true length, and each
        replayed request costs the search time.

        A running request is seen partway through its output: its output length is drawn
        length-biased (a longer request is more likely to be running at a given instant; for a
        lognormal of mean m and coefficient of variation c, a lognormal of mean m(1 + c^2)) and cut
        at a uniform point, the part before it generated (its context is its prompt plus that) and
        the part after it still to come (renewal theory's age and residual life). An instance is
        seeded with at most its batch limit and at most `SEED_KV_SHARE` of its KV cache: the
        requests it runs now fit it, and drawn contexts that would not are left out rather than set
        off recompute preemptions the cluster is not having."""
        n = int(min(self.max_requests, max(1, round(load.rate_rps * self.horizon_s))))
        rng = np.random.default_rng(self.seed)
        mean_gap = 1.0 / max(load.rate_rps, 1e-9)
        if load.dispersion > 1.0:
            cv2 = load.dispersion
            gaps = rng.gamma(1.0 / cv2, mean_gap * cv2, n)
            gaps *= n * mean_gap / gaps.sum()
        else:
            gaps = rng.exponential(mean_gap, n)
        arrivals = np.cumsum(gaps)
        arrivals -= arrivals[0]
        back = min(load.backlog, n // 2)
        arrivals = np.concatenate([np.zeros(back), arrivals])
        m = len(arrivals)
        prompt = self._lengths(rng, load.prompt_tokens, m)
        output = self._lengths(rng, load.output_tokens, m)
        seeds = self._seeds(load, current)
        if seeds:
            k = len(seeds)
            srng = np.random.default_rng((self.seed, 1))
            whole = self._lengths(srng, load.output_tokens * (1 + self.length_cv**2), k)
            done = np.floor(srng.uniform(0, 1, k) * whole).astype(np.int64)
            context = self._lengths(srng, load.prompt_tokens, k) + done
            keep = self._fitting(seeds, context)
            seeds = [iid for iid, ok in zip(seeds, keep) if ok]
            arrivals = np.concatenate([np.zeros(len(seeds)), arrivals])
            prompt = np.concatenate([context[keep], prompt])
            output = np.concatenate([np.maximum(2, whole - done + 1)[keep], output])
        return Workload(arrivals, prompt, output), seeds, back

    def _fitting(self, seeds: list[int], context: np.ndarray) -> np.ndarray:
        """Which seeds their instance holds: in order, while it has fewer than its batch limit and
        their contexts fill at most `SEED_KV_SHARE` of its KV cache."""
        c = self.cluster
        cap = SEED_KV_SHARE * kv_tokens(c)
        held: Counter[int] = Counter()
        tokens: Counter[int] = Counter()
        keep = np.zeros(len(seeds), dtype=bool)
        for j, (iid, ctx) in enumerate(zip(seeds, context.tolist())):
            if held[iid] < c.engine.max_seqs and tokens[iid] + ctx <= cap:
                held[iid] += 1
                tokens[iid] += ctx
                keep[j] = True
        return keep

    def _lengths(self, rng: np.random.Generator, mean: float, n: int) -> np.ndarray:
        """`n` lengths with this mean: lognormal with coefficient of variation `length_cv` (the
        planner sees only means), or all equal to the mean with `length_cv` 0."""
        mean = max(1.0, mean)
        if self.length_cv <= 0:
            return np.full(n, max(1, int(round(mean))), dtype=np.int64)
        sigma2 = np.log1p(self.length_cv**2)
        x = rng.lognormal(np.log(mean) - sigma2 / 2, np.sqrt(sigma2), n)
        return np.clip(np.round(x), 1, 16 * mean).astype(np.int64)

    def _config(self, roles: Layout, caps: Layout) -> ClusterConfig:
        """The cluster with `roles`' instances and `caps`' per-role caps and clock locks (where
        `caps` locks none, the cluster's own)."""
        c = self.cluster
        n = c.num_gpus // c.tp
        if roles.whole is not None:
            return c.model_copy(update={
                "prefill": 0, "decode": 0, "colocated": n if roles.colocated else 0,
                "concurrent": n if roles.concurrent else 0, "prefill_cap_w": None,
                "decode_cap_w": None, "power_cap_w": caps.decode_cap_w,
                "clock_mhz": _or(caps.decode_clock_mhz, c.clock_mhz)})
        return c.model_copy(update={
            "prefill": roles.prefill, "decode": n - roles.prefill, "colocated": 0, "concurrent": 0,
            "prefill_cap_w": caps.prefill_cap_w, "decode_cap_w": caps.decode_cap_w, "power_cap_w": None,
            "prefill_clock_mhz": _or(caps.prefill_clock_mhz, c.prefill_clock_mhz),
            "decode_clock_mhz": _or(caps.decode_clock_mhz, c.decode_clock_mhz)})

    @staticmethod
    def _move(cluster: Cluster, lay: Layout, load: Counter[int]) -> None:
        """Switch the cluster's instances to `lay` at time 0, as the planner would (the busiest, by
        `load`, keeping their roles): switches into or out of colocated at once, those between
        prefill and decode draining and reconfiguring (the simulator's own role changes), so a
        candidate's price includes its transition; then every instance gets its new role's batch
        limit, and every GPU its new role's cap and clock lock."""
        by_id = {i.iid: i for i in cluster.instances}
        busiest = sorted(cluster.instances, key=lambda i: -load[i.iid])
        moves = [(by_id[iid], role) for iid, role in
                 role_moves([(i.iid, i.role) for i in busiest], want_of(lay, len(cluster.instances)))]
        for inst, role in sorted(moves, key=lambda m: not instant_switch(m[0].role, m[1])):
            with contextlib.suppress(UsageError):
                cluster.set_role(inst.iid, role)
        limit = lay.decode_max_seqs
        for inst, role in moves:
            if limit is not None:
                cluster.set_batch_limit(inst.iid, cluster.spec.engine.max_seqs if role == "prefill" else limit)
            clock = lay.clock_of(role)
            for g in inst.gpus:
                cluster.set_power_cap(g.index, lay.prefill_cap_w if role == "prefill" else lay.decode_cap_w, 0.0)
                if clock != g.locked_clock_mhz:
                    cluster.set_clock(g.index, clock, 0.0)

    def _run(self, wl: Workload, scored: np.ndarray, lay: Layout, current: Layout | None = None,
             bar: float | None = None, seeds: Sequence[int] = ()) -> tuple[float, float]:
        """One candidate: from the layout in force (with its switches) when given, else from `lay`;
        stopped early, reporting its bound, once its attainment is certainly below `bar`. Only the
        new arrivals (`scored`) are scored: the running requests (`seeds`) and the backlog load the
        cluster, but they arrived before the plan, and how long they have waited already is not
        replayed."""
        start = lay if current is None else current
        cluster = Cluster(self._config(start, lay), wl, slo_s=self.slo_s, concurrent_switch=self.concurrent_switch,
                          governor=self._governors)
        if lay.step_target is not None:
            for inst in cluster.instances:
                cluster.set_step_target(inst.iid, lay.step_target)
        if lay.decode_max_seqs is not None:
            for inst in cluster.instances:
                if inst.role != "prefill":
                    cluster.set_batch_limit(inst.iid, lay.decode_max_seqs)
        for iid in seeds:
            cluster.seed_running(iid)
        if start != lay:
            self._move(cluster, lay, Counter(seeds))
        late = scored & (wl.arrival_s >= wl.arrival_s[-1] * self.late_share)
        if bar is not None:
            self._watch(cluster, wl, scored, late, bar)
        res = cluster.run()
        energy = sum(g.energy_j for g in res.gpus)
        power = energy / res.end_s if res.end_s > 0 else 0.0
        if cluster.loop.stopped and not cluster.done():
            return self._bound(cluster, wl, scored, late), power
        ttft, tpot = (s * 1e3 if s else None for s in self.slo_s)
        met = slo_met(res, ttft, tpot)[scored]
        score = float(met.mean()) if not late.any() else min(float(met.mean()), float(met[late[scored]].mean()))
        return score, power

    def _missed(self, cluster: Cluster, wl: Workload) -> np.ndarray:
        """The requests certainly missing an SLO by now: finished and missed, failed, queued without
        a first token past the TTFT SLO, or unfinished past the latest end that meets both (TTFT SLO
        + (output - 1) x TPOT SLO)."""
        rec, now = cluster.records, cluster.loop.now
        ttft, tpot = self.slo_s
        with np.errstate(invalid="ignore"):
            ok = records_met(rec, ttft and ttft * 1e3, tpot and tpot * 1e3)
        latest = (ttft or np.inf) + (wl.output_tokens - 1) * (tpot or np.inf)
        miss = ((rec.status != PENDING) & ~ok) | ((rec.status == PENDING) & (now - wl.arrival_s > latest))
        if ttft is not None:
            miss[[r.rid for i in cluster.instances for q in (i.waiting, i.active) for r in q
                  if r.t_first_token < 0 and now - r.arrival > ttft]] = True
        return miss

    def _bound(self, cluster: Cluster, wl: Workload, scored: np.ndarray, late: np.ndarray) -> float:
        """The best attainment the candidate can still reach, from the misses known now."""
        miss = self._missed(cluster, wl)
        best = 1.0 - float(miss[scored].mean())
        return min(best, 1.0 - float(miss[late].mean())) if late.any() else best

    def _watch(self, cluster: Cluster, wl: Workload, scored: np.ndarray, late: np.ndarray, bar: float) -> None:
        """Check every `check_s` of simulated time whether the candidate can still reach `bar`; stop
        its run once it cannot."""
        def check(_: object) -> None:
            if self._bound(cluster, wl, scored, late) < bar - 1e-9:
                cluster.loop.stop()
            elif not cluster.done():
                cluster.loop.at(cluster.loop.now + self.check_s, check)

        cluster.loop.at(self.check_s, check)


def _or(a: int | None, b: int | None) -> int | None:
    return a if a is not None else b


SEED_KV_SHARE = 0.9
"""The most of an instance's KV cache its seeded requests may fill (the scheduler keeps room for the
batch to grow)."""

WARM = {"seed_running": True, "horizon_s": 8.0, "max_requests": 800}
"""The model a planner that judges concurrent layouts gets: each candidate starts from the batches
running now, over a shorter replay. From an empty cluster a 15 s replay calls every instance
colocated near-perfect on the Azure conversation trace at 160 req/s, where it serves 0.831 of the
trace and every instance concurrent 1.000 (decode batches take a request's life, about 10 s there,
to fill). Of the warm replays tried (6 s and 600 requests, 8 s and 800, 10 s and 1,000), 8 s and
800 was the only one that kept the planner above rapid-roles at every rate of the Azure code trace
(docs/planner.md, `scripts/planner_concurrent.py`)."""


def planner_models(cluster: ClusterConfig, slo_ttft_s: float | None, slo_tpot_s: float | None,
                   seed: int = 0, concurrent_switch: bool = False) -> dict[str, Any]:
    """The planner's `model` (simulated), `screen` (closed form) and `trim_model` (simulated, warm)
    for this cluster; with `concurrent_switch` (a planner judging concurrent layouts), the warm
    model (`WARM`) is its `model` too. The cluster's step governor is the model's: a candidate
    that spends slack through the governors' target is judged running them."""
    warm = SimPlanModel(cluster, slo_ttft_s, slo_tpot_s, seed=seed, concurrent_switch=concurrent_switch, **WARM)
    model = warm if concurrent_switch else SimPlanModel(cluster, slo_ttft_s, slo_tpot_s, seed=seed)
    return {"model": model, "screen": analytic_model(cluster, slo_ttft_s, slo_tpot_s), "trim_model": warm}
