"""The `arith` world's task behind the task contract (rl/tasks/__init__.py): its prompts are
rl.tasks.arith.sample_items' (same seeds, same items as before tasks were config), its verifier the
arith rule and its default gold the world's gold function.

A thin adapter: rl/tasks/arith.py is part of the arith zoo's content hash, so the world's code
moves there only together with the zoo recipe (issue 13, item 5)."""
from __future__ import annotations

from rl.tasks import Item, check_split
from rl.tasks.arith import sample_items


class ArithTask:
    name = "arith"
    verifier = {"name": "rule", "type": "arith_rule", "unverifiable": 0.0}
    default_gold = {"name": "gold", "type": "arith_gold"}

    def __init__(self, open_frac: float):
        self.open_frac = open_frac
        self.dropped = {}

    def items(self, split: str, n: int, seed, distinct: bool = True) -> list[Item]:
        check_split(split)
        return [Item(it.prompt, it.answer, it.kind) for it in sample_items(split, n, seed, self.open_frac, distinct)]


def make(cfg) -> ArithTask:
    return ArithTask(cfg.open_frac)
