"""Metrics to TensorBoard event files and metrics.jsonl alike, under stable names."""
from __future__ import annotations

import json
import os


def write_atomic(path: str, text: str) -> None:
    """Write `text` aside and rename it into place: a crash never leaves a half-written file."""
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def read_evals(run_dir: str) -> list[dict]:
    """The evaluation records (those with eval/* metrics) of a run's metrics.jsonl, in order."""
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if "eval/reward_gold" in r]


class MetricLogger:
    def __init__(self, run_dir: str, purge_from: int = 0):
        # purge_step hides older events from `purge_from` on: a resumed run's repeated steps, or
        # (0) everything a previous run left in the same directory. metrics.jsonl likewise.
        from torch.utils.tensorboard import SummaryWriter  # here: the file helpers above need no torch

        self.writer = SummaryWriter(os.path.join(run_dir, "tb"), purge_step=purge_from)
        self.path = os.path.join(run_dir, "metrics.jsonl")
        self.jsonl = open(self.path, "a" if purge_from else "w")

    def truncate(self, step: int) -> None:
        """Drop metrics.jsonl records after `step` (a resumed run repeats them)."""
        self.jsonl.close()
        with open(self.path) as f:
            lines = f.read().splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):  # the last record, torn by a killed process
            print(f"{self.path}: dropped a torn last line ({len(lines[-1])} chars) before resuming")
            lines.pop()
        write_atomic(self.path, "".join(line for line in lines if json.loads(line)["step"] <= step))
        self.jsonl = open(self.path, "a")

    def log(self, step: int, metrics: dict) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, step)
        self.jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
        self.jsonl.flush()

    def close(self) -> None:
        self.writer.close()
        self.jsonl.close()
