"""Metrics to TensorBoard event files and metrics.jsonl alike, under stable names."""
from __future__ import annotations

import json
import os

from torch.utils.tensorboard import SummaryWriter


class MetricLogger:
    def __init__(self, run_dir: str):
        self.writer = SummaryWriter(os.path.join(run_dir, "tb"))
        self.jsonl = open(os.path.join(run_dir, "metrics.jsonl"), "a")

    def log(self, step: int, metrics: dict) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, step)
        self.jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
        self.jsonl.flush()

    def close(self) -> None:
        self.writer.close()
        self.jsonl.close()
