"""A worker's step log: one iteration-table row per engine step it runs while serving.

`wattserve serve --step-log DIR` turns it on. Each row is the step's batch shape (the engine's own
BatchShape, causal and masked pairs included) and the worker loop's time for it: the step, handing its tokens
and KV to the router, and the loop's turn to read what arrived, which is the period a serving
engine's steps follow each other at under load. A profile fitted to these rows (`wattserve
calibrate --profile`) prices steps as this server runs them, IPC and the cores it shares with its
router included, where a grid profile (`wattserve profile --kind iterations`) prices the engine
step alone. Rows are written line by line, so a log survives a worker that is killed.
"""

from __future__ import annotations

import csv
from dataclasses import astuple, fields
from pathlib import Path
from typing import TextIO

from wattserve.catalog.models import BatchShape
from wattserve.perf.iteration_table import IterationRow

ENGINE = "wattserve-runtime (serving)"


class StepLog:
    def __init__(self, folder: str, wid: int, role: str, device: str, model: str) -> None:
        self.path = Path(folder) / f"steps-worker{wid}-{role}.csv"
        self._file: TextIO = self.path.open("w", newline="", buffering=1)
        self._csv = csv.writer(self._file)
        self._csv.writerow([f.name for f in fields(IterationRow)])
        self.device = device
        self.model = model

    def record(self, shape: BatchShape, seconds: float) -> None:
        if shape.prefill_tokens + shape.decode_seqs == 0:
            return
        row = IterationRow(ENGINE, self.device, self.model, 1, shape.prefill_tokens, shape.prefill_seqs,
                           shape.prefill_ctx, shape.decode_seqs, shape.decode_ctx, round(seconds * 1e3, 4),
                           prefill_attn_pairs=shape.prefill_attn_pairs if shape.prefill_tokens else None,
                           prefill_masked_pairs=shape.prefill_masked_pairs if shape.prefill_tokens else None)
        self._csv.writerow(["" if v is None else v for v in astuple(row)])

    def close(self) -> None:
        self._file.close()
