"""wattserve's own planner (`--policy planner`): a receding-horizon search over layouts
(disaggregated splits, every instance colocated, and with `concurrent` every instance concurrent)
and per-role caps under the budget, then clocks, step-governor targets and batch limits, with a
model of the cluster as its judge.

Every `period_s` it estimates the coming load from the state's monotonic counters (requests that
arrived = completed + in flight; prompt tokens = prefilled + still queued; output tokens per finished
request) over a `window_s` window, and over the last period alone: when the two disagree by more than
`shift` in rate or mean prompt length, a phase change is under way and the last period is the
estimate, so a shift is seen in one period, not two (RAPID's pressure needs two periods and a
cooldown before it moves a GPU). It then ranks every candidate (prefill instances 1..N-1 x
`cap_levels` prefill caps, the decode cap spending the rest of the budget) with the closed-form
`screen`, judges the best `keep`, the layout in force and, when `colocated` is on, every instance
colocated under the budget's even cap (which the screen's queueing model cannot price) with `model`
(the simulator itself, in experiments/plan_sim.py, which starts each candidate from the layout in
force and makes its role switches, so a candidate's price includes its transition), and moves to the
best only when its predicted attainment beats the current one's by `margin` plus `move_cost` for
every instance that must drain to change role: the model starts from the queue, not from the batches
running now, so it does not see how long they take to drain. A switch into or out of colocated takes
effect at once (seam/roles.instant_switch) and drains nothing. All instances that must move are moved at once, and
every GPU gets its role's cap in the same decision.

Beyond roles and caps it tunes three knobs. While the load holds (a plan to stay stands), each
period spends one more step of slack where its `trim_model` (the simulator, started from the
batches running now) judges it harmless at `trim_stress` x the planned load and the observed p90
TTFT and TPOT leave room: first the step governors' target (`SetStepTarget`: the share of the TPOT
SLO a decode iteration may take; BiScale's decode-slack governor then lowers the clock iteration by
iteration within it, arXiv 2602.18755), then per-role clock locks (`SetClock`, BiScale's base
clocks). A search at a heavier load than the slack was judged at returns it. Where the decode
instances' observed p90 TPOT is over its SLO, a search also judges the layout in force with a smaller
decode batch limit (`SetBatchLimit`; PALS sets batch size with the cap, arXiv 2605.21427).
Per-iteration work stays with the step governors; the planner sets their targets.

Before any load is seen it switches every instance to colocated (`start`). A search judges the
layout in force first and then each candidate against the attainment it needs to change the
decision, so the model may stop simulating a candidate that cannot (seam.PlanModel's `need`); a
decision to stay stands without a search while the load it was made for holds (`_holds`).

Decisions and their planning times are kept (`decisions`, `planning_s`, `planning_cpu_s`) for
reporting: the search must fit in a fraction of its period (issue 15 asks for 10%).
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field, replace

from wattserve.seam import (
    CAP_LEVELS,
    Action,
    ClusterState,
    Layout,
    LoadEstimate,
    PlanModel,
    SetBatchLimit,
    SetClock,
    SetPowerCap,
    SetRole,
    SetStepTarget,
    cap_grid,
    want_of,
)
from wattserve.seam.roles import WHOLE, WITH_CONCURRENT, instant_switch, role_moves
from wattserve.seam.state import InstanceState


@dataclass(frozen=True)
class Counters:
    t: float
    arrived: float
    prompt: float
    output: float
    completed: float


def counters(state: ClusterState) -> Counters:
    live = [i for i in state.instances if i.alive]
    inflight = sum(i.waiting + i.prefilling + i.running for i in live)
    done = sum(i.completed for i in state.instances)
    prompt = sum(i.prompt_tokens for i in state.instances) + sum(i.waiting_tokens for i in live)
    return Counters(state.time_s, done + inflight, prompt, sum(i.output_tokens for i in state.instances), done)


def near(a: float, b: float, tol: float) -> bool:
    """Whether `a` is within `tol` of `b`, relative to `b`."""
    return abs(a - b) <= tol * max(abs(b), 1e-9)


def estimate(a: Counters, b: Counters, fallback_output: float) -> LoadEstimate | None:
    """The load between two readings, or None when nothing arrived. A request's output length is
    known only when it finishes, so the tokens generated per finished request lag a shift to longer
    outputs by a whole request's life; tokens generated per arriving request see it sooner (and
    equal the mean in steady state), so the larger of the two is taken."""
    dt = b.t - a.t
    arrived = b.arrived - a.arrived
    if dt <= 0 or arrived <= 0:
        return None
    done = b.completed - a.completed
    per_done = (b.output - a.output) / done if done > 0 else fallback_output
    per_arrival = (b.output - a.output) / arrived
    return LoadEstimate(arrived / dt, max(1.0, (b.prompt - a.prompt) / arrived), max(1.0, per_done, per_arrival))


@dataclass
class PlannerController:
    model: PlanModel
    screen: PlanModel | None = None
    trim_model: PlanModel | None = None
    """The model that judges spending slack (`_trim`; default `model`): the simulator started from
    the batches running now over a short replay (experiments/plan_sim.WARM), since a step of slack
    is a small change to the layout in force, judged against it."""
    name: str = "planner"
    period_s: float = 3.0
    window_s: float = 20.0
    shift: float = 1.5
    cap_levels: int = CAP_LEVELS
    keep: int = 2
    margin: float = 0.02
    headroom: float = 1.15
    """The load planned for, as a multiple of the estimate: a window of 20 s at 25 req/s holds 500
    arrivals, whose Poisson noise alone is +-4.5% (one sigma), and load trends between plans; a plan
    sized to the estimate exactly sits at the edge of its capacity, where queues grow without bound."""
    move_cost: float = 0.01
    dispersion_window_s: float = 60.0
    dispersion_periods: int = 6
    energy_margin: float = 0.1
    """With no candidate better by the margin, move to one that serves as well (its predicted
    attainment, less `move_cost` per drained instance, at least the current one's) and draws this
    share less power: attainment first, then energy (issue 15 asks for no more J per output token
    than RAPID's)."""
    screen_step: float = 0.01
    """The screen ranks attainment in steps of this size, then power: it is a ranking estimate, and
    without the steps a split it rates 0.9999 would lose to a costlier one it rates 1.0, so the
    cheap splits that serve a light load (few decode GPUs draw little) never reach the simulator."""
    colocated: bool = True
    """Also judge every instance colocated (hybrid batches) each period: the back end must switch
    roles into and out of colocated (the simulator and the runtime do)."""
    concurrent: bool = False
    """Also judge every instance concurrent (RAPID-Serve's prefill and decode streams on the same
    GPUs, arXiv 2601.11822) each period: the back end must switch roles into and out of concurrent
    (a simulated cluster built with `concurrent_switch` does; the runtime's concurrent workers do
    not). `--policy planner-concurrent` turns it on, with the warm model (experiments/plan_sim.WARM:
    candidates start from the batches running now). Off in `planner`: a concurrent candidate is the
    slowest the model simulates (each prefill batch cuts the decode stream's closed-form run), and
    its decisions take longer (docs/planner.md). A whole layout is judged only while it can win on
    service, not when at best it ties the best so far and could win on power alone: judging every
    instance concurrent at light load was the slowest part of a search (docs/planner.md)."""
    reuse_rate: float = 0.05
    """A plan to stay stands without a new search while the arrival rate is within this share of the
    rate it was searched for (about the Poisson noise of a 20 s window at 25 req/s, 4.5%)..."""
    reuse_length: float = 0.1
    """...and the mean prompt and output lengths and the dispersion within this share..."""
    reuse_backlog: int = 4
    """...and no more than this many more requests are queued for prefill."""
    offload: bool = True
    """A search takes up to a few hundred milliseconds: a back end whose API shares the control
    loop's event loop (the runtime) runs it in a thread (control/loop.py)."""
    start_colocated: bool = True
    """Start every instance colocated (with `colocated` on) rather than in the back end's layout."""
    target_levels: tuple[float, ...] = (0.5, 0.7, 0.9)
    """Step-governor targets (the share of the TPOT SLO a decode iteration may take) the planner may
    raise its governors to, where they take one (`InstanceState.step_target`); it starts them at 0,
    which spends no slack."""
    batch_floor: int = 16
    """The smallest batch limit the decode instances may be reined to (`_reined`), halving from the
    engine's own."""
    clock_levels: tuple[float, ...] = (0.9, 0.8, 0.7, 0.6, 0.5)
    """Clock locks a role may be trimmed to, as fractions of the GPU's highest clock (empty: no clock
    locks). While the load holds, each period judges one step of slack (`_trim`); a search (the
    load changed) also judges the layout in force spending none (`Layout.plain`)."""
    trim_stress: float = 1.25
    """A step of slack (`_trim`) is judged at this multiple of the planned load (itself `headroom` x
    the estimate)..."""
    trim_floor: float = 0.99
    """...where it must serve at least this share, and no less than the layout without it..."""
    trim_energy: float = 0.01
    """...for at least this share less predicted power; and the role's observed p90 TTFT and TPOT,
    stretched by the clock ratio, must stay within `trim_slack` of the SLOs (`_slack`)."""
    trim_slack: float = 0.6
    """Our choice (BiScale's constants are not public): the observed p90 tail may grow by at most
    two thirds before it reaches the SLO, room for the bursts a 5 s window has not shown yet."""
    history: deque[Counters] = field(default_factory=lambda: deque(maxlen=64))
    decisions: list[dict[str, object]] = field(default_factory=list)
    planning_s: list[float] = field(default_factory=list)
    """Wall-clock seconds of each decision."""
    planning_cpu_s: list[float] = field(default_factory=list)
    """CPU seconds of each decision (its thread's): the wall clock less the time it waited for a
    core."""
    _last: tuple[LoadEstimate, Layout, float] | None = None
    """The load, layout in force and its predicted attainment of the last search that chose to stay."""
    _output: float = 128.0
    _settled: set[str] = field(default_factory=set)
    """Knobs whose next step was judged and refused since the last search."""
    _seqs0: int | None = None
    """The engines' own batch limit, read at the first decision (the largest in force)."""
    _base: tuple[LoadEstimate, Layout, tuple[float, float]] | None = None
    """The layout in force judged at the stressed load a trim is judged at, and its (attainment, W)."""

    def start(self, state: ClusterState) -> list[Action]:
        """Before any load is seen, with `colocated` and `start_colocated` on, every instance
        colocated under the even cap: a colocated instance serves any mix of prompt and output
        lengths (Sarathi-Serve, arXiv 2403.02310), and leaving colocated at the first plan is
        instant, whereas a split that fits the first load badly must drain to change."""
        self.history.append(counters(state))
        if self.colocated and self.start_colocated and self._live(state):
            lay = replace(Layout.all_colocated(self._even(state, 0).decode_cap_w), step_target=self._target0(state))
            moves = self._roles(state, lay)
            return [*moves, *self._caps(state, lay, {m.instance: m.role for m in moves}), *self._targets(state, lay)]
        lay = replace(self._even(state, len(state.by_role("prefill"))), step_target=self._target0(state))
        return [*self._caps(state, lay), *self._targets(state, lay)]

    def decide(self, state: ClusterState) -> list[Action]:
        t0, c0 = time.perf_counter(), time.thread_time()
        now = counters(state)
        self.history.append(now)
        load = self._load(now)
        if load is None or any(i.switching_to is not None for i in state.instances):
            return []
        live = self._live(state)
        load = LoadEstimate(load.rate_rps * self.headroom, load.prompt_tokens, load.output_tokens,
                            sum(i.waiting for i in state.by_role("prefill")),
                            self._dispersion(now),
                            tuple((i.role, i.running) for i in live))
        cands = self._candidates(state)
        current = self._current(state, cands)
        if self._seqs0 is None and live:
            self._seqs0 = max(i.max_seqs for i in live) or None
        if self._last is not None and self._last[1] == current and self._holds(self._last[0], load):
            tuned = self._trim(state, self._last[0], current)
            self._timed(t0, c0)
            self.decisions.append({**self._decision(state, load, tuned or current, self._last[2], self._last[2]),
                                   "reused": True})
            if tuned is None:
                return []
            self._last = (self._last[0], tuned, self._last[2])
            return [*self._clocks(state, tuned), *self._targets(state, tuned), *self._batch(state, tuned)]
        self._settled.clear()
        limit = current.decode_max_seqs
        trims = replace(current, decode_max_seqs=None)
        trims = trims if trims.tuned and self._covers(load, current) else None
        current = current.plain()
        screen = self.screen or self.model
        split = [c for c in cands if c.whole is None]
        screened = screen.predict(load, split)
        ranked = sorted(zip(screened, split), key=lambda x: (-round(x[0][0] / self.screen_step), x[0][1]))
        splits = [c for _, c in ranked[: self.keep] if c != current]
        wholes = [c for c in cands if c.whole is not None and c != current]
        short = [current, *(wholes + splits if current.whole is None else splits + wholes)]
        role_of = {i.iid: i.role for i in state.instances}
        moves_of = [self._roles(state, c) for c in short]
        drained = [sum(1 for m in moves if not instant_switch(role_of[m.instance], m.role)) for moves in moves_of]
        judged = self._judge(load, short, drained, {c: w for (_, w), c in zip(screened, split)})
        cur_att = judged[0][0]

        def score(k: int) -> tuple[float, float]:
            att, w = judged[k]
            penalty = 0.0 if k == 0 else self.margin + self.move_cost * drained[k]
            return att - penalty, -w

        k_best = max(judged, key=score)
        if k_best == 0:
            for cand in self._reined(state, current, limit):
                need = cur_att + self.margin
                if need <= 1.0 + 1e-12:
                    short.append(cand)
                    moves_of.append([])
                    drained.append(0)
                    judged[len(short) - 1] = self.model.predict(load, [cand], current, [need])[0]
            k_best = max(judged, key=score)
        if k_best == 0:
            k_best = self._cheaper(judged, drained)
        best, best_att = short[k_best], judged[k_best][0]
        if k_best == 0 and trims is not None:
            best = current = trims
        self._timed(t0, c0)
        self.decisions.append({**self._decision(state, load, best, best_att, cur_att), "reused": False})
        self._last = (load, current, cur_att) if k_best == 0 else None
        if k_best == 0:
            return [*self._clocks(state, best), *self._targets(state, best), *self._batch(state, best)]
        moves = moves_of[k_best]
        moved = {m.instance: m.role for m in moves}
        return [*moves, *self._caps(state, best, moved), *self._clocks(state, best, moved),
                *self._targets(state, best), *self._batch(state, best, moved)]

    def _trim(self, state: ClusterState, load: LoadEstimate, current: Layout) -> Layout | None:
        """The layout in force spending one more step of slack, or None. The steps, in order: the
        step governors' target one level up (`target_levels`; decode iterations, so not on prefill
        instances), then each role's clock lock one level down (`clock_levels`, below the clock
        its GPUs ran at), decode before prefill. A step is taken when the model, at `trim_stress` x
        the planned load, has it serve at least `trim_floor` and no less than without, for
        `trim_energy` less power, and the role's observed latencies leave slack (`_slack`); else
        that knob is settled until the next search. One model run a period: the first judges the
        layout in force at that load, each later one a step. Slack is spent only where the load
        leaves it: judging at a heavier load than planned keeps a step off the edge of capacity,
        where a slower clock costs attainment (BiScale sets base clocks per phase offline and
        lowers the decode clock per iteration within the TPOT slack: arXiv 2602.18755)."""
        if not state.gpus:
            return None
        step = next(((knob, cand, slower) for knob, cand, slower in self._steps(state, current)
                     if knob not in self._settled), None)
        if step is None:
            return None
        knob, cand, slower = step
        if not self._slack(state, "prefill" if knob == "prefill-clock" else "decode", slower):
            self._settled.add(knob)
            return None
        heavy = replace(load, rate_rps=load.rate_rps * self.trim_stress)
        model = self.trim_model or self.model
        if self._base is None or self._base[:2] != (heavy, current):
            self._base = (heavy, current, model.predict(heavy, [current], current)[0])
            return None
        self._settled.add(knob)
        att0, w0 = self._base[2]
        bar = max(self.trim_floor, att0)
        att, w = model.predict(heavy, [cand], current, [bar])[0]
        if att >= bar - 1e-9 and w <= (1 - self.trim_energy) * w0:
            self._settled.discard(knob)
            self._base = (heavy, cand, (att, w))
            return cand
        return None

    def _reined(self, state: ClusterState, current: Layout, limit: int | None) -> list[Layout]:
        """Where the decode instances' observed p90 TPOT is over the SLO, the layout in force
        (`current`, with the engines' batch limits) with their batch limit in force (`limit`, when
        the planner set one) and with it halved (`batch_floor` at least): a smaller batch runs
        shorter iterations but queues more, so the model judges the trade (PALS sets batch size
        with the cap for the TPOT SLO, arXiv 2605.21427). Judged only when the search keeps the
        layout in force, whose TPOT is the one observed, after the other candidates. Elsewhere a
        smaller batch serves no better: none, and a limit in force is then lifted."""
        slo = state.slo_tpot_s
        if slo is None or self._seqs0 is None:
            return []
        decode = [i for i in self._live(state) if i.role != "prefill"]
        if not any(i.tpot_p90_s is not None and i.tpot_p90_s > slo for i in decode):
            return []
        now = limit or self._seqs0
        sizes = ([limit] if limit else []) + ([now // 2] if now // 2 >= self.batch_floor else [])
        return [replace(current, decode_max_seqs=n) for n in sizes]

    def _covers(self, load: LoadEstimate, current: Layout) -> bool:
        """Whether the slack the layout in force spends was judged (`_trim`) at a load at least
        this one's rate, with mean lengths within `reuse_length`: a search then keeps it when it
        keeps the layout; otherwise the search returns it."""
        if self._base is None or self._base[1] != current:
            return False
        then = self._base[0]
        return (load.rate_rps <= then.rate_rps and near(load.prompt_tokens, then.prompt_tokens, self.reuse_length)
                and near(load.output_tokens, then.output_tokens, self.reuse_length))

    def _steps(self, state: ClusterState, current: Layout) -> list[tuple[str, Layout, float]]:
        """The next step of each knob from the layout in force: (knob, the layout with it, how much
        longer an iteration may get, for `_slack`)."""
        out: list[tuple[str, Layout, float]] = []
        if current.step_target is not None:
            up = [t for t in sorted(self.target_levels) if t > current.step_target]
            if up:
                out.append(("target", replace(current, step_target=up[0]), 1.0))
        top = state.gpus[0].clock_max_mhz
        for role in ("decode",) if current.whole is not None else ("decode", "prefill"):
            lock = current.clock_of(role)
            ran = lock if lock is not None else max(
                (g.clock_mhz for i in self._side(state, role) for g in state.gpus if g.index in i.gpus), default=top)
            lower = [m for m in self._levels(top) if m < ran]
            if lower:
                field_ = "prefill_clock_mhz" if role == "prefill" else "decode_clock_mhz"
                out.append((f"{role}-clock", replace(current, **{field_: lower[0]}), ran / lower[0]))
        return out

    def _slack(self, state: ClusterState, role: str, slower: float) -> bool:
        """Whether `role`'s instances' observed p90 TTFT and TPOT, stretched by `slower` (the clock
        ratio: an iteration at most that much longer), stay within `trim_slack` of the SLOs; False
        with none observed. The model replays a smoothed load; the observed tails carry the bursts
        and long requests it does not, so slack is spent only where both show it."""
        seen_any = False
        for i in self._side(state, role):
            for seen, slo in ((i.ttft_p90_s, state.slo_ttft_s), (i.tpot_p90_s, state.slo_tpot_s)):
                if seen is not None and slo is not None:
                    seen_any = True
                    if seen * slower > self.trim_slack * slo:
                        return False
        return seen_any

    def _side(self, state: ClusterState, role: str) -> list[InstanceState]:
        """The live instances of `role`'s side: prefill's, or every other (decode, colocated,
        concurrent: those that run decode iterations)."""
        return [i for i in self._live(state) if (i.role == "prefill") == (role == "prefill")]

    def _levels(self, top: int) -> list[int]:
        return sorted({int(round(f * top)) for f in self.clock_levels if 0 < f < 1}, reverse=True)

    def _batch(self, state: ClusterState, lay: Layout, moved: dict[int, str] | None = None) -> list[Action]:
        """SetBatchLimit for every live instance whose limit differs from its (new) role's in `lay`
        (the engine's own where `lay` sets none, and on prefill instances)."""
        if self._seqs0 is None:
            return []
        moved = moved or {}
        out: list[Action] = []
        for i in self._live(state):
            role = moved.get(i.iid, i.role)
            want = self._seqs0 if role == "prefill" else lay.decode_max_seqs or self._seqs0
            if i.max_seqs != want:
                out.append(SetBatchLimit(i.iid, want))
        return out

    def _targets(self, state: ClusterState, lay: Layout) -> list[Action]:
        """SetStepTarget for every live instance whose governor's target differs from `lay`'s."""
        if lay.step_target is None:
            return []
        return [SetStepTarget(i.iid, lay.step_target) for i in self._live(state)
                if i.step_target is not None and i.step_target != lay.step_target]

    def _clocks(self, state: ClusterState, lay: Layout, moved: dict[int, str] | None = None) -> list[Action]:
        """SetClock for every GPU whose lock differs from its (new) role's in `lay`."""
        role_of = self._gpu_roles(state, moved)
        out: list[Action] = []
        for g in state.gpus:
            want = lay.clock_of(role_of.get(g.index, "decode"))
            if want != g.locked_clock_mhz:
                out.append(SetClock(g.index, want))
        return out

    def _timed(self, t0: float, c0: float) -> None:
        self.planning_s.append(time.perf_counter() - t0)
        self.planning_cpu_s.append(time.thread_time() - c0)

    def _decision(self, state: ClusterState, load: LoadEstimate, best: Layout, best_att: float,
                  cur_att: float) -> dict[str, object]:
        return {"time_s": state.time_s, "rate_rps": load.rate_rps, "prompt_tokens": load.prompt_tokens,
                "output_tokens": load.output_tokens, "layout": best.whole or "disaggregated",
                "prefill": best.prefill, "prefill_cap_w": best.prefill_cap_w, "decode_cap_w": best.decode_cap_w,
                "prefill_clock_mhz": best.prefill_clock_mhz, "decode_clock_mhz": best.decode_clock_mhz,
                "step_target": best.step_target, "decode_max_seqs": best.decode_max_seqs,
                "predicted_attainment": best_att, "current_attainment": cur_att, "planning_s": self.planning_s[-1]}

    def _holds(self, then: LoadEstimate, now: LoadEstimate) -> bool:
        """Whether the load planned for last time still describes this one, so that plan (to stay)
        stands without a search: rate within `reuse_rate`, mean lengths within `reuse_length`,
        dispersion within `reuse_length` (relative), and no more than `reuse_backlog` more requests
        queued. Measured against the load last searched, not last period's, so a slow drift ends
        the reuse once it adds up."""
        return (near(now.rate_rps, then.rate_rps, self.reuse_rate)
                and near(now.prompt_tokens, then.prompt_tokens, self.reuse_length)
                and near(now.output_tokens, then.output_tokens, self.reuse_length)
                and near(now.dispersion, then.dispersion, self.reuse_length)
                and now.backlog <= then.backlog + self.reuse_backlog)

    def _judge(self, load: LoadEstimate, short: list[Layout], drained: list[int],
               screen_w: dict[Layout, float]) -> dict[int, tuple[float, float]]:
        """The model's (attainment, power) of the layout in force (short[0]) and of every candidate
        that can still change the decision, one at a time, each told the attainment it needs: to
        win on service it must beat the best so far by its margin and drain cost, to win on power
        (while none wins on service) it must match the layout in force less its drain cost. When
        the layout in force serves so well that no candidate can win on service, a split the screen
        prices at no less power than the layout in force (its screen price, or what the model
        measured where the screen cannot price it: colocated), or than a split already found to
        serve as well for `energy_margin` less power, is not judged; nor is every instance
        colocated when a split is in force, since all its GPUs run hybrid batches at the even cap,
        and the model priced it above every split serving the same load in this stop's runs on
        rapid-mi300x and rapid-h100 (leaving it out changed no decision there). A whole layout is
        not judged either when at best it would tie the best so far (`concurrent`'s docstring).
        While a split is in force the whole layouts are judged before the other splits: they switch
        at once, so when one serves well a split that must drain instances needs more than full
        attainment to beat it and is not simulated (in this stop's runs the order changed no
        decision and shortened the longest ones)."""
        current = short[0]
        judged = {0: self.model.predict(load, [current], current)[0]}
        att0, w0 = judged[0]
        best = att0
        w_cap = screen_w.get(current, w0)
        for k in range(1, len(short)):
            pen = self.margin + self.move_cost * drained[k]
            if best > att0:
                need = best + pen
            else:
                need = att0 + self.move_cost * drained[k]
                w_k = screen_w.get(short[k], math.inf if short[k].whole is not None else None)
                if att0 + pen > 1.0 and w_k is not None and w_k >= w_cap:
                    continue
            if need > 1.0 + 1e-12 or (short[k].whole is not None and need > 1.0 - 1e-12):
                continue
            judged[k] = att, w = self.model.predict(load, [short[k]], current, [need])[0]
            best = max(best, att - pen)
            if att0 + pen > 1.0 and att >= need and w <= (1 - self.energy_margin) * w0 and short[k] in screen_w:
                w_cap = min(w_cap, screen_w[short[k]])
        return judged

    def _cheaper(self, judged: dict[int, tuple[float, float]], drained: list[int]) -> int:
        """The candidate that serves as well as the layout in force (judged[0]) for the least power,
        if it draws `energy_margin` less; else 0."""
        att0, w0 = judged[0]
        ok = [k for k in judged if k and judged[k][0] - self.move_cost * drained[k] >= att0
              and judged[k][1] <= (1 - self.energy_margin) * w0]
        return min(ok, key=lambda k: judged[k][1]) if ok else 0

    def _dispersion(self, now: Counters) -> float:
        """The arrivals' index of dispersion over the last `dispersion_window_s`, from the requests
        arriving in each planning period. The variance is von Neumann's (half the mean squared
        difference of successive periods), so a change of rate (a phase shift) is not read as
        burstiness; fewer than `dispersion_periods` periods, or less than Poisson's, read as 1."""
        hist = [c for c in self.history if c.t >= now.t - self.dispersion_window_s]
        counts = [b.arrived - a.arrived for a, b in zip(hist, hist[1:]) if b.t - a.t > 0]
        if len(counts) < self.dispersion_periods or sum(counts) <= 0:
            return 1.0
        mean = sum(counts) / len(counts)
        var = sum((b - a) ** 2 for a, b in zip(counts, counts[1:])) / (2 * (len(counts) - 1))
        return max(1.0, var / mean)

    def _load(self, now: Counters) -> LoadEstimate | None:
        old = next((c for c in self.history if c.t >= now.t - self.window_s), None)
        recent = next((c for c in reversed(self.history) if c.t <= now.t - self.period_s + 1e-9), None)
        if old is None or recent is None:
            return None
        wide = estimate(old, now, self._output)
        last = estimate(recent, now, self._output)
        pick = wide
        if wide is not None and last is not None:
            ratio = max(last.rate_rps / wide.rate_rps, wide.rate_rps / last.rate_rps,
                        last.prompt_tokens / wide.prompt_tokens, wide.prompt_tokens / last.prompt_tokens)
            if ratio > self.shift:
                pick = last
        if pick is not None:
            self._output = pick.output_tokens
        return pick

    def _live(self, state: ClusterState) -> list[InstanceState]:
        return [i for i in state.instances if i.alive and i.role in WITH_CONCURRENT]

    def _current(self, state: ClusterState, cands: list[Layout]) -> Layout:
        """The layout in force, read back as the candidate it is closest to, so that caps rounded by
        the guard do not look like a different plan."""
        live = self._live(state)
        gpus = {r: [g for i in live if i.role == r for g in state.gpus if g.index in i.gpus] for r in WITH_CONCURRENT}
        cap = {r: [g.cap_target_w for g in gs] for r, gs in gpus.items()}

        def lock(role: str) -> int | None:
            locks = {g.locked_clock_mhz for g in gpus[role]}
            return locks.pop() if len(locks) == 1 else None

        targets = [i.step_target for i in live if i.step_target is not None]
        target = min(targets) if targets and len(targets) == len(live) else None
        seqs = min((i.max_seqs for i in live if i.role != "prefill"), default=None)
        limit = None if seqs is None or self._seqs0 is None or seqs >= self._seqs0 else seqs

        for whole in WHOLE:
            if live and all(i.role == whole for i in live):
                w = sum(cap[whole]) / max(1, len(cap[whole]))
                lay = Layout.all_in(whole, w)
                same = [c for c in cands if c.whole == whole]
                lay = min(same, key=lambda c: abs(c.decode_cap_w - lay.decode_cap_w)) if same else lay
                return replace(lay, decode_clock_mhz=lock(whole), step_target=target, decode_max_seqs=limit)
        p = sum(1 for i in live if i.role == "prefill")
        lay = Layout(p, sum(cap["prefill"]) / max(1, len(cap["prefill"])),
                     sum(cap["decode"]) / max(1, len(cap["decode"])))
        same = [c for c in cands if c.prefill == p and c.whole is None]
        lay = min(same, key=lambda c: abs(c.prefill_cap_w - lay.prefill_cap_w)) if same else lay
        return replace(lay, prefill_clock_mhz=lock("prefill"), decode_clock_mhz=lock("decode"), step_target=target,
                       decode_max_seqs=limit)

    def _instances(self, state: ClusterState) -> tuple[int, int]:
        live = self._live(state)
        return len(live), max(1, len(live[0].gpus)) if live else 1

    def _candidates(self, state: ClusterState) -> list[Layout]:
        n, tp = self._instances(state)
        g = state.gpus[0]
        lo, hi = g.cap_min_w, g.cap_max_w
        out = []
        for p in range(1, n):
            d = n - p
            for cp in cap_grid(lo, hi, self.cap_levels):
                cd = (state.budget_w / tp - p * cp) / d
                if cd < lo - 1e-6:
                    continue
                out.append(Layout(p, cp, round(min(hi, cd), 3)))
        out = out or [self._even(state, max(1, n // 2))]
        even = round(self._even(state, 0).decode_cap_w, 3)
        out += [Layout.all_in(whole, even) for whole, on in zip(WHOLE, (self.colocated, self.concurrent), strict=True)
                if on and n >= 1]
        target = self._target0(state)
        return out if target is None else [replace(c, step_target=target) for c in out]

    def _target0(self, state: ClusterState) -> float | None:
        """0 (no slack to spend) where every live instance's governor takes a target, else None."""
        live = self._live(state)
        return 0.0 if live and all(i.step_target is not None for i in live) else None

    def _even(self, state: ClusterState, p: int) -> Layout:
        share = state.budget_w / len(state.gpus)
        g = state.gpus[0]
        w = min(g.cap_max_w, max(g.cap_min_w, share))
        return Layout(p, w, w)

    def _roles(self, state: ClusterState, lay: Layout) -> list[SetRole]:
        """SetRole for every instance that must move to reach `lay` (seam/roles.role_moves): the
        busiest instances keep their roles; of the rest, those whose switch is instant go first,
        then the least loaded."""
        live = sorted((i for i in self._live(state) if i.switching_to is None),
                      key=lambda i: (i.running + i.waiting + i.prefilling, i.kv_usage), reverse=True)
        return [SetRole(iid, role) for iid, role in role_moves([(i.iid, i.role) for i in live],
                                                               want_of(lay, len(live)))]

    def _caps(self, state: ClusterState, lay: Layout, moved: dict[int, str] | None = None) -> list[Action]:
        """Every GPU's cap for the role its instance will have (`moved`: instance -> new role); a
        colocated instance gets the layout's one cap."""
        role_of = self._gpu_roles(state, moved)
        return [SetPowerCap(g.index, lay.prefill_cap_w if role_of.get(g.index) == "prefill" else lay.decode_cap_w)
                for g in state.gpus]

    @staticmethod
    def _gpu_roles(state: ClusterState, moved: dict[int, str] | None = None) -> dict[int, str]:
        """Each GPU's role once the instances in `moved` (instance -> new role) have moved."""
        moved = moved or {}
        return {g: moved.get(i.iid, i.role) for i in state.instances for g in i.gpus}
