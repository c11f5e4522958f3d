"""Per-request state while a request is inside the simulator."""

from __future__ import annotations

QUEUED, PREFILL, TRANSFER, DECODE, DONE, FAILED = range(6)


class SimRequest:
    """`generated` counts output tokens already emitted. While decoding, a request holds
    prompt + generated - 1 tokens of KV; its last token's KV is written by the next iteration.
    `target` is how many tokens the next prefill must process: the prompt, or after a recompute
    preemption the prompt plus the tokens generated so far (as vLLM recomputes)."""

    __slots__ = ("rid", "arrival", "prompt", "output", "generated", "target", "prefilled", "t_first_token",
                 "t_last_token", "t_scheduled", "max_itl", "prefill_inst", "decode_inst", "state", "fin",
                 "g_join", "preemptions", "kv_held")

    def __init__(self, rid: int, arrival: float, prompt: int, output: int) -> None:
        self.rid = rid
        self.arrival = arrival
        self.prompt = prompt
        self.output = output
        self.generated = 0
        self.target = prompt
        self.prefilled = 0
        self.t_first_token = -1.0
        self.t_last_token = -1.0
        self.t_scheduled = -1.0
        self.max_itl = 0.0
        self.prefill_inst = -1
        self.decode_inst = -1
        self.state = QUEUED
        self.fin = 0
        self.g_join = 0
        self.preemptions = 0
        self.kv_held = 0
