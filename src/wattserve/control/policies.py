"""Power and role policies: static baselines and RAPID's dynamic reallocation.

RAPID (power-aware disaggregated serving; the issue tracker summarizes it) moves watts between
prefill and decode GPUs, and GPUs between the two roles, under a cluster power cap. Our reading:
- pressure of a phase = how close its tail latency is to its SLO: prefill from the 90th-percentile
  TTFT of recent requests and the age of the oldest queued prompt, decode from the 90th-percentile
  TPOT and from hand-offs waiting for KV room;
- power moves first, in steps of `step_w` per GPU, from the phase with slack to the phase under
  pressure, but only while the receiving GPUs are power-throttled: a decode GPU drawing less than its
  cap gains nothing from a higher cap (decode on H100/MI300X stops gaining past about 600 W);
- a GPU changes role only when power cannot help (receivers unthrottled, at their maximum cap, or
  donors at their minimum) and the pressure has lasted `persist` periods; a cooldown stops
  oscillation, each phase keeps at least one instance, and the moved GPU takes the receiving
  phase's cap.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wattserve.seam import Action, ClusterState, GpuState, InstanceState, SetPowerCap, SetRole

OTHER = {"prefill": "decode", "decode": "prefill"}


def uniform_caps(state: ClusterState) -> list[Action]:
    n = len(state.gpus)
    return [SetPowerCap(g.index, min(g.cap_max_w, max(g.cap_min_w, state.budget_w / n))) for g in state.gpus]


def role_caps(state: ClusterState, prefill_w: float | None, decode_w: float | None) -> list[Action]:
    if prefill_w is None and decode_w is None:
        return uniform_caps(state)
    role_of = {g: i.role for i in state.instances for g in i.gpus}
    out: list[Action] = []
    for g in state.gpus:
        w = prefill_w if role_of[g.index] == "prefill" else decode_w
        if w is None:
            w = state.budget_w / len(state.gpus)
        out.append(SetPowerCap(g.index, min(g.cap_max_w, max(g.cap_min_w, w))))
    return out


@dataclass
class StaticController:
    """Fixed roles; uniform caps (budget / N), or fixed caps per role (RAPID's static split)."""

    name: str = "static"
    prefill_cap_w: float | None = None
    decode_cap_w: float | None = None
    period_s: float = 0.0

    def start(self, state: ClusterState) -> list[Action]:
        return role_caps(state, self.prefill_cap_w, self.decode_cap_w)

    def decide(self, state: ClusterState) -> list[Action]:
        return []


def phase_pressure(state: ClusterState, phase: str) -> float:
    insts = state.by_role(phase)
    if not insts:
        return 0.0
    if phase == "prefill":
        slo = state.slo_ttft_s or 1.0
        worst = max(max(i.ttft_p90_s or 0.0, i.oldest_wait_s) for i in insts)
        return worst / slo
    slo = state.slo_tpot_s or 0.05
    worst = max(i.tpot_p90_s or 0.0 for i in insts)
    starved = any(i.waiting > 0 and i.kv_usage > 0.9 for i in insts)
    return max(worst / slo, 1.0 if starved else 0.0)


@dataclass
class RapidController:
    name: str = "rapid"
    move_power: bool = True
    move_roles: bool = True
    period_s: float = 1.0
    step_w: float = 50.0
    high: float = 0.8
    low: float = 0.5
    persist: int = 2
    role_cooldown_s: float = 8.0
    prefill_cap_w: float | None = None
    decode_cap_w: float | None = None
    _streak: dict[str, int] = field(default_factory=lambda: {"prefill": 0, "decode": 0})
    _last_role_change: float = -1e18

    def start(self, state: ClusterState) -> list[Action]:
        return role_caps(state, self.prefill_cap_w, self.decode_cap_w)

    def decide(self, state: ClusterState) -> list[Action]:
        p = {ph: phase_pressure(state, ph) for ph in ("prefill", "decode")}
        for ph in p:
            self._streak[ph] = self._streak[ph] + 1 if p[ph] > self.high else 0
        receiver = max(p, key=lambda ph: p[ph])
        donor = OTHER[receiver]
        if p[receiver] <= self.high or p[donor] >= p[receiver] or p[donor] > self.high:
            return []
        gpus = {g.index: g for g in state.gpus}
        recv = [gpus[g] for i in state.by_role(receiver) for g in i.gpus]
        give = [gpus[g] for i in state.by_role(donor) for g in i.gpus]
        actions: list[Action] = []
        power_helps = (any(g.throttled for g in recv) and any(g.cap_target_w < g.cap_max_w - 1 for g in recv)
                       and any(g.cap_target_w > g.cap_min_w + 1 for g in give))
        if self.move_power and power_helps:
            actions += self._move_power(recv, give)
        elif (self.move_roles and self._streak[receiver] >= self.persist and p[donor] < self.low
              and state.time_s - self._last_role_change >= self.role_cooldown_s):
            actions += self._move_role(state, receiver, donor, recv)
        return actions

    def _move_power(self, recv: list[GpuState], give: list[GpuState]) -> list[Action]:
        want = sum(min(self.step_w, g.cap_max_w - g.cap_target_w) for g in recv if g.cap_target_w < g.cap_max_w)
        room = sum(g.cap_target_w - g.cap_min_w for g in give)
        amount = min(want, room)
        if amount < 1.0:
            return []
        out: list[Action] = []
        share = amount / len(give)
        for g in give:
            out.append(SetPowerCap(g.index, max(g.cap_min_w, g.cap_target_w - share)))
        takers = [g for g in recv if g.cap_target_w < g.cap_max_w]
        for g in takers:
            out.append(SetPowerCap(g.index, min(g.cap_max_w, g.cap_target_w + amount / len(takers))))
        return out

    def _move_role(self, state: ClusterState, receiver: str, donor: str, recv: list[GpuState]) -> list[Action]:
        donors = state.by_role(donor)
        if len(donors) <= 1:
            return []
        pick: InstanceState = min(donors, key=lambda i: (i.running + i.waiting, i.kv_usage))
        self._last_role_change = state.time_s
        self._streak = {"prefill": 0, "decode": 0}
        out: list[Action] = [SetRole(pick.iid, receiver)]
        if recv:
            cap = sum(g.cap_target_w for g in recv) / len(recv)
            out += [SetPowerCap(g, cap) for g in pick.gpus]
        return out
