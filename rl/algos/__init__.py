"""Algorithms by name (`algo.name`): one file each."""
from __future__ import annotations

import importlib

ALGOS = {"grpo": "rl.algos.grpo", "ppo": "rl.algos.ppo", "rloo": "rl.algos.rloo", "urpo": "rl.algos.urpo",
         "reinforce_pp": "rl.algos.reinforce_pp", "bon": "rl.algos.bon"}


def get_algo(name: str):
    if name not in ALGOS:
        raise ValueError(f"unknown algorithm {name!r} (config key algo.name); expected one of: {', '.join(ALGOS)}")
    return importlib.import_module(ALGOS[name])
