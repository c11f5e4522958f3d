"""A cluster of instances behind a router, fed by a workload: the simulator's top level.

The cluster is each instance's `Host`: it routes prompts and hand-offs, owns the KV links, records
completions and ends the run when the last request completes or fails (timers the control plane
left in the queue are not simulated time).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from wattserve.catalog.gpus import GpuSpec, get_gpu
from wattserve.catalog.models import ModelSpec, get_model
from wattserve.errors import UsageError
from wattserve.governors.registry import make_governor, targeted_governors
from wattserve.perf.perf_profile import load_profile
from wattserve.results.histogram import LogHistogram
from wattserve.results.records import RequestRecords
from wattserve.results.sim_result import GpuTrace, InstanceTrace, LinkTrace, SimResult
from wattserve.routing import make_policy
from wattserve.schema.cluster import ClusterConfig
from wattserve.seam.governor import StepGovernor, Targeted
from wattserve.seam.roles import DECODE_SIDE, SWITCHABLE, WITH_CONCURRENT, check_role_change, instant_switch
from wattserve.sim.concurrent_instance import ConcurrentInstance
from wattserve.sim.events import EventLoop
from wattserve.sim.gpu import SimGpu, check_cap, check_clock
from wattserve.sim.instance import PROMPT_ROLES, ROLES, Instance
from wattserve.sim.link import Link
from wattserve.sim.request import DECODE, SimRequest
from wattserve.workload.workload import Workload

CAP_SETTLE_S = 0.3
"""Assumed: NVIDIA's power limiter enforces a new limit over a window of about 100 ms plus driver latency;
RAPID (see issue 3) reports cap changes in the hundreds of milliseconds. To be measured through NVML."""
RECONFIG_S = 3.0
"""RAPID measured 2-5 s to switch a GPU's role (issue 3); weights stay loaded."""
CLOCK_DELAY_S = 0.02
"""Assumed: a locked-clock change applies within tens of milliseconds."""


class Cluster:
    def __init__(self, spec: ClusterConfig, workload: Workload,
                 governor: Callable[[], StepGovernor] | None = None,
                 slo_s: tuple[float | None, float | None] = (None, None), concurrent_switch: bool = False) -> None:
        """`governor` makes one step governor per instance (default: the one `spec.engine.governor`
        names); `slo_s` (TTFT, TPOT in seconds) is what governors see of the SLOs; with
        `concurrent_switch` every instance can switch into and out of concurrent as well
        (seam/roles.WITH_CONCURRENT)."""
        self.spec = spec
        self.roles = WITH_CONCURRENT if concurrent_switch else SWITCHABLE
        """The roles `set_role` switches between."""
        self.gpu_spec: GpuSpec = get_gpu(spec.gpu)
        self.model: ModelSpec = get_model(spec.model)
        _validate(spec, self.gpu_spec, self.model)
        make = governor or (lambda: make_governor(spec.engine.governor))
        self.workload = workload
        self.loop = EventLoop()
        self.itl_hist = LogHistogram()
        self.records = RequestRecords(workload.arrival_s, workload.prompt_tokens, workload.output_tokens)
        self.router = make_policy(spec.router)
        profiles = {r: load_profile(spec.profile_of(r), f"cluster.{r}_perf_profile" if r in ("prefill", "decode")
                                    and spec.profile_of(r) != spec.perf_profile else "cluster.perf_profile")
                    for r in ROLES}
        prompt_side = profiles["colocated" if spec.colocated else "concurrent" if spec.concurrent else "prefill"]
        self._handoff_s = profiles["prefill"].latency.handoff_overhead_s
        self._ingress_s = prompt_side.latency.request_overhead_s
        eng = spec.engine
        latency = {r: p.latency_model(self.gpu_spec, self.model, spec.tp_of(r), spec.ep, spec.expert_skew)
                   for r, p in profiles.items()}
        power = {r: p.power_model(self.gpu_spec) for r, p in profiles.items()}
        budgets = {"prefill": eng.prefill_token_budget, "decode": eng.colocated_token_budget,
                   "colocated": eng.colocated_token_budget, "concurrent": eng.prefill_token_budget}
        self.gpus: list[SimGpu] = []
        self.instances: list[Instance] = []
        self.links: list[Link] = []
        self._local_link: dict[int, Link] = {}
        self._net_link: dict[int, Link] = {}
        roles = spec.instance_roles()
        for iid, role in enumerate(roles):
            cap = {"prefill": spec.prefill_cap_w, "decode": spec.decode_cap_w}.get(role) or spec.power_cap_w
            tp = spec.tp_of(role)
            gpus = []
            for _ in range(tp):
                idx = len(self.gpus)
                g = SimGpu(idx, self.gpu_spec, idx // spec.gpus_per_node, cap, spec.clock_of(role))
                self.gpus.append(g)
                gpus.append(g)
            kv_tokens = self.model.kv_capacity_tokens(self.gpu_spec.hbm_bytes, tp, eng.mem_util)
            kind = ConcurrentInstance if role == "concurrent" or concurrent_switch else Instance
            inst = kind(iid, role, gpus, self.loop, self, latency[role], power[role], make(), self.itl_hist,
                            kv_tokens, eng.block_size, eng.max_seqs, budgets,
                            self.model.kv_bytes_per_token_per_rank(tp), spec.max_run_iters, slo_s)
            self.instances.append(inst)
            if role == "prefill":
                self._link_between(inst, inst)
        self._instance_of_gpu = {g.index: inst for inst in self.instances for g in inst.gpus}
        self.prefillers: list[Instance] = []
        self.decoders: list[Instance] = []
        self._refresh_routing()
        self._arr = workload.arrival_s.tolist()
        self._prompt = workload.prompt_tokens.tolist()
        self._output = workload.output_tokens.tolist()
        self.completed = 0
        self.failed = 0
        self.seeded = 0
        """How many of the workload's first rows were seeded running (`seed_running`): they do not
        arrive."""
        self.role_events: list[tuple[float, int, str]] = [(0.0, i.iid, i.role) for i in self.instances]

    # ---- Host ----
    def route(self, req: SimRequest) -> None:
        self.router.pick_prefill(self.prefillers, req).enqueue_prefill(req)

    def hand_off(self, req: SimRequest, src: object) -> None:
        self.router.pick_decode(self.decoders, req).accept_handoff(req, src)  # type: ignore[arg-type]

    def transfer(self, src: object, dst: object, nbytes: float) -> float:
        return self._link_between(src, dst).submit(self.loop.now, nbytes)  # type: ignore[arg-type]

    def complete(self, req: SimRequest, t: float) -> None:
        self.records.complete(req, t)
        self.completed += 1
        if self.done():
            self.loop.stop()

    def fail(self, req: SimRequest, reason: str) -> None:
        self.records.fail(req, reason)
        self.failed += 1
        if self.done():
            self.loop.stop()

    def role_changed(self, inst: object) -> None:
        assert isinstance(inst, Instance)
        self.role_events.append((self.loop.now, inst.iid, inst.role))
        self._refresh_routing()

    # ---- control ----
    def done(self) -> bool:
        return self.completed + self.failed >= len(self._arr)

    def _refresh_routing(self) -> None:
        self.prefillers = [i for i in self.instances if i.role in PROMPT_ROLES and i.switching_to is None]
        self.decoders = [i for i in self.instances if i.role in DECODE_SIDE and i.switching_to is None]

    def set_role(self, iid: int, role: str, reconfig_s: float = RECONFIG_S, migrate: bool = True) -> None:
        """Switch an instance between prefill, decode and colocated, and concurrent when the cluster
        was built for it (`self.roles`, seam/roles.py). Between prefill and decode it drains and
        reconfigures; into or out of colocated or concurrent it switches at once, and what it holds
        finishes there. Refused (UsageError) if it would leave no instance taking prompts or none
        decoding, if the instance is already switching, or when the roles' TP or perf profiles
        differ."""
        inst = self.instances[iid]
        tps = {r: self.spec.tp_of(r) for r in self.roles}
        if len(set(tps.values())) > 1:
            raise UsageError(f"instance {iid} cannot change role: its roles have different TP "
                             f"({', '.join(f'{r} {t}' for r, t in tps.items())}); allowed: role changes with one TP "
                             "for every role", "cluster.prefill_tp")
        profiles = {r: self.spec.profile_of(r) for r in self.roles}
        if len(set(profiles.values())) > 1:
            raise UsageError(f"instance {iid} cannot change role: its roles have different perf profiles "
                             f"({', '.join(f'{r} {p}' for r, p in profiles.items())}); allowed: role changes with "
                             "one profile for every role", "cluster.prefill_perf_profile")
        others = [i.role for i in self.instances if i.switching_to is None and i is not inst]
        if not check_role_change(f"instance {iid}", inst.role, inst.switching_to, role, others, self.roles):
            return
        if instant_switch(inst.role, role):
            inst.switch_now(role)
            return
        self.role_events.append((self.loop.now, iid, "switching"))
        inst.begin_switch(role, reconfig_s, migrate and len(self.decoders) > 1)
        self._refresh_routing()
        inst.poke()

    def set_batch_limit(self, iid: int, max_seqs: int) -> None:
        """Set instance `iid`'s batch limit (`SetBatchLimit`): the most requests admitted at once.
        Requests already admitted stay; the next admissions honour it."""
        if max_seqs < 1:
            raise UsageError(f"max_seqs {max_seqs}; allowed: >= 1", "max_seqs")
        inst = self.instances[iid]
        inst.max_seqs = max_seqs
        inst.poke()

    def set_step_target(self, iid: int, share: float) -> None:
        """Set instance `iid`'s step-governor target (`SetStepTarget`): the share of the TPOT SLO a
        decode iteration may take; the iteration in flight finishes as planned and the governor is
        asked again with its new target."""
        inst = self.instances[iid]
        gov = inst.governor
        if not isinstance(gov, Targeted):
            raise UsageError(f"instance {iid}'s step governor {gov.name!r} takes no target; allowed: "
                             f"{', '.join(targeted_governors())}", "governor")
        try:
            gov.retarget(share)
        except ValueError as e:
            raise UsageError(str(e), "share") from None
        inst.on_clock_change()

    def set_compute_share(self, iid: int, phase: str, fraction: float) -> None:
        """Pin a concurrent instance's split of its compute units: `phase` ('prefill' or 'decode')
        gets `fraction` of them and the other phase the rest; 1.0 gives both all of them
        (overallocation). It holds until the next SetComputeShare, over the step governor's answers."""
        inst = self.instances[iid]
        if not isinstance(inst, ConcurrentInstance) or inst.role != "concurrent":
            raise UsageError(f"instance {iid} is {inst.role}; allowed: concurrent instances (cluster.concurrent)",
                             "instance")
        if phase not in ("prefill", "decode"):
            raise UsageError(f"phase {phase!r}; allowed: prefill, decode", "phase")
        if not 0.0 < fraction <= 1.0:
            raise UsageError(f"fraction {fraction:g}; allowed: 0 < fraction <= 1", "fraction")
        share = None if fraction == 1.0 else (fraction if phase == "decode" else 1.0 - fraction)
        inst.pin_share(share)

    def _link_between(self, src: Instance, dst: Instance) -> Link:
        if src.iid not in self._local_link:
            g0 = self.gpu_spec
            self._local_link[src.iid] = Link(f"inst{src.iid}-nvlink", g0.link_gb_s * 1e9, 2e-6 + self._handoff_s)
            self._net_link[src.iid] = Link(f"inst{src.iid}-net", g0.network_gb_s * 1e9,
                                            g0.network_latency_s + self._handoff_s)
            self.links += [self._local_link[src.iid], self._net_link[src.iid]]
        if src.gpus[0].node == dst.gpus[0].node:
            return self._local_link[src.iid]
        return self._net_link[src.iid]

    def set_power_cap(self, gpu_index: int, watts: float, settle_s: float = CAP_SETTLE_S) -> float:
        """Ask for a new cap; it is in force `settle_s` later (until then the old cap holds, so a GPU
        may draw up to the old cap). Returns the time it settles. Out-of-range caps are refused."""
        g = self.gpus[gpu_index]
        check_cap(g.spec, watts)
        g.cap_target_w = watts
        t = self.loop.now + settle_s
        self.loop.at(t, self._settle_cap, (g, watts))
        return t

    def _settle_cap(self, arg: tuple[SimGpu, float]) -> None:
        g, watts = arg
        g.settle_cap(self.loop.now, watts)
        self._instance_of_gpu[g.index].on_clock_change()

    def set_clock(self, gpu_index: int, mhz: int | None, delay_s: float = CLOCK_DELAY_S) -> float:
        """Lock the SM clock (None releases it); takes effect after `delay_s`."""
        g = self.gpus[gpu_index]
        if mhz is not None:
            check_clock(g.spec, mhz)
        t = self.loop.now + delay_s
        self.loop.at(t, self._apply_clock, (g, mhz))
        return t

    def _apply_clock(self, arg: tuple[SimGpu, int | None]) -> None:
        g, mhz = arg
        g.locked_clock_mhz = mhz
        self._instance_of_gpu[g.index].on_clock_change()

    def seed_running(self, iid: int) -> None:
        """Put the workload's next unseeded row in instance `iid`'s decode batch at time 0, its
        first token produced (arrival, first token at 0; its prompt is its context): a request the
        modelled cluster is decoding when a model of it starts. The planner's model
        (experiments/plan_sim.py) starts each candidate from the batches running now, since a decode
        batch takes a request's life to fill from empty. Seeded rows are the workload's first rows
        and never arrive; call before `run`."""
        inst = self.instances[iid]
        if self.loop.now > 0:
            raise ValueError("requests are seeded before the run")
        rid = self.seeded
        req = SimRequest(rid, self._arr[rid], self._prompt[rid], self._output[rid])
        req.generated = 1
        req.t_first_token = req.t_last_token = req.t_scheduled = req.arrival
        req.state = DECODE
        req.decode_inst = iid
        req.kv_held = req.prompt
        inst.kv.reserve(req.kv_held)
        inst.pending_join.append(req)
        self.seeded += 1

    # ---- the run ----
    def _arrive(self, i: int) -> None:
        """Route every request that arrives at this instant before any instance plans, so requests
        that arrive together are scheduled together at the next step boundary (as vLLM does)."""
        arr = self._arr
        t = arr[i]
        n = len(arr)
        woken: dict[Instance, None] = {}
        while True:
            req = SimRequest(i, t, self._prompt[i], self._output[i])
            inst = self.router.pick_prefill(self.prefillers, req)
            inst.enqueue_prefill(req, wake=False)
            woken[inst] = None
            i += 1
            if i >= n or arr[i] != t:
                break
        for inst in woken:
            inst.poke()
        if i < n:
            self.loop.at(arr[i] + self._ingress_s, self._arrive, i)

    def run(self, progress: Callable[[float], None] | None = None, until: float | None = None) -> SimResult:
        """Runs until the workload is done or, with `until`, until that simulated time (a backlog
        that never drains is measured over a window; requests still in flight stay unfinished)."""
        for inst in self.instances:
            if inst.pending_join and not inst.busy:
                inst.poke()
        if len(self._arr) > self.seeded:
            self.loop.at(self._arr[self.seeded] + self._ingress_s, self._arrive, self.seeded)
        self.loop.run(until=until, progress=progress)
        if until is not None and not self.loop.stopped and self.loop.pending():
            self.loop.now = max(self.loop.now, until)
        end = self.loop.now
        for g in self.gpus:
            g.close(end)
        return self.result()

    def result(self) -> SimResult:
        end = self.loop.now
        gpus = [GpuTrace(g.index, self._instance_of_gpu[g.index].iid, g.node, g.spec.idle_w, g.cap_w,
                         np.array(g.times), np.array(g.watts), np.array(g.cap_times), np.array(g.cap_values),
                         np.array(g.clock_times), np.array(g.clock_values), g.prefill_energy_j,
                         g.decode_energy_j, g.idle_energy_j) for g in self.gpus]
        insts = [InstanceTrace(i.iid, i.role, tuple(g.index for g in i.gpus), i.preemptions, i.kv.peak,
                               i.kv.blocks, i.role_changes, i.iterations, i.busy_s) for i in self.instances]
        links = [LinkTrace(lk.name, lk.bytes_moved, lk.transfers, lk.busy_s) for lk in self.links]
        return SimResult(self.spec, self.workload, self.records, gpus, insts, links, self.itl_hist, end,
                         self.loop.processed, list(self.role_events))


def _validate(spec: ClusterConfig, gpu: GpuSpec, model: ModelSpec) -> None:
    """Refuse a cluster the catalog cannot build; each error names the field as a scenario's dotted
    path (`cluster.prefill_cap_w`), which the command line renames to the flag the user typed."""
    tps = {f"cluster.{role}_tp" if getattr(spec, f"{role}_tp", None) else "cluster.tp": spec.tp_of(role)
           for role in ROLES if getattr(spec, role)}
    for field, tp in tps.items():
        if tp < 1 or spec.gpus_per_node % tp:
            raise UsageError(f"{tp} must divide the GPUs per node ({spec.gpus_per_node}); "
                             f"allowed: {', '.join(str(t) for t in (1, 2, 4, 8) if spec.gpus_per_node % t == 0)}",
                             field)
    for name in ("power_cap_w", "prefill_cap_w", "decode_cap_w"):
        cap = getattr(spec, name)
        if cap is not None:
            check_cap(gpu, cap, f"cluster.{name}")
    for name in ("clock_mhz", "prefill_clock_mhz", "decode_clock_mhz"):
        mhz = getattr(spec, name)
        if mhz is not None:
            check_clock(gpu, mhz, f"cluster.{name}")
    for field, tp in tps.items():
        check_moe(model, tp, spec.ep, spec.expert_skew)
        if model.kv_capacity_tokens(gpu.hbm_bytes, tp, spec.engine.mem_util) < spec.engine.block_size:
            per_gpu = model.weight_bytes_per_rank(tp) / 1e9
            raise UsageError(f"{model.name} needs {per_gpu:.1f} GB of weights per GPU at tp={tp}, more than "
                             f"{gpu.name}'s {gpu.hbm_gb:g} GB leaves for KV; raise tp", field)


def check_moe(model: ModelSpec, tp: int, ep: int, expert_skew: float | None,
              fields: tuple[str, str] = ("cluster.ep", "cluster.expert_skew")) -> None:
    """Expert parallelism as vLLM runs it inside one instance: ep = tp spreads whole experts over
    the TP group, so ep must be 1 or tp, the model must have experts, and ep must divide them. The
    skew is the busiest expert's share of (token, expert) assignments, between uniform (1/E) and 1/k
    (a token picks k distinct experts). `fields` name ep and the skew in the errors."""
    if ep != 1:
        if not model.is_moe:
            raise UsageError(f"{ep} needs a mixture-of-experts model, and {model.name} is dense; "
                             "allowed: 1", fields[0])
        if ep != tp:
            raise UsageError(f"{ep} must be 1 or equal tp ({tp}): experts spread over the TP group; "
                             f"allowed: 1, {tp}", fields[0])
        if model.experts % ep:
            raise UsageError(f"{ep} must divide {model.name}'s {model.experts} experts; allowed: 1"
                             + "".join(f", {d}" for d in (2, 4, 8) if d == tp and model.experts % d == 0),
                             fields[0])
    if expert_skew is not None:
        if not model.is_moe:
            raise UsageError(f"{expert_skew:g} needs a mixture-of-experts model, and {model.name} is dense; "
                             "allowed: unset", fields[1])
        lo, hi = model.uniform_share, model.max_share
        if not lo - 1e-12 <= expert_skew <= hi + 1e-12:
            raise UsageError(f"{expert_skew:g} is outside {model.name}'s range (the busiest expert's share "
                             f"of token-expert assignments, uniform 1/{model.experts} to 1/{model.experts_per_token}); "
                             f"allowed: {lo:g} to {hi:g}", fields[1])


__all__ = ["CAP_SETTLE_S", "CLOCK_DELAY_S", "Cluster", "RECONFIG_S", "SimResult"]
