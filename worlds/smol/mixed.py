"""The smol world's mixed task (`task=smol_mixed`), URPO's data on a real model: smol_arith's
problems (verifiable: the math verifier) mixed with open prompts that have no reference answer, and
ranking items with a known order for the referee.

- Open prompts are real user prompts: the single-turn prompts of the world's preference-pair pool
  (LLMBar's human-labelled pairs and HH harmless's train side, worlds/smol/pairs.py: none is a
  prompt of a benchmark the static harness scores), at most `open_max_chars` long; each is a chat
  user turn. Their split is a hash of the text. The default gold (the verifier) has nothing to check
  on them: it scores them NaN, which every mean leaves out (a gold that reads them: `gold=rm`).
- Ranking items: an arithmetic problem of the split with `size` replies in the task's answer format,
  some right, the others with a wrong number, in random order; their order is the verifier's (right
  above wrong, ties within).
"""
from __future__ import annotations

import random

from omegaconf import OmegaConf

from analysis.benchmarks import HH_TURN as ASSISTANT
from rl.tasks import Item, check_split, draw, split_of
from worlds.smol.task import make as make_arith

FORMATS = ("{a} {op} {b} = {v}\n#### {v}", "#### {v}", "The answer is {v}.\n#### {v}")
HUMAN = "\n\nHuman: "


def single_turn(prompt: str) -> str | None:
    """An HH-style "\\n\\nHuman: ...\\n\\nAssistant:" prompt's one human turn; None for several turns.
    Other prompts are returned stripped."""
    if not prompt.startswith(HUMAN):
        return prompt.strip()
    body = prompt[len(HUMAN):]
    if body.endswith(ASSISTANT):
        body = body[: -len(ASSISTANT)]
    return None if HUMAN in body or ASSISTANT in body else body.strip()


class SmolMixedTask:
    """The task contract (rl/tasks/__init__.py) plus `ranking_items` (what algo=urpo needs)."""
    name = "smol_mixed"

    def __init__(self, arith, open_frac: float, open_max_chars: int, world):
        from worlds.smol.pairs import pool

        if not 0.0 <= open_frac < 1.0:
            raise ValueError(f"task.open_frac={open_frac}: expected a share in [0, 1)")
        self.arith, self.open_frac = arith, open_frac
        self.verifier = arith.verifier
        self.default_gold = dict(arith.default_gold, unverifiable=float("nan"))
        self.dropped = {"open prompts: several turns": 0, f"open prompts: over {open_max_chars} characters": 0}
        self.open = {"train": [], "eval": [], "bench": []}
        seen = set()
        for row in pool(world)[0]:
            text = single_turn(row["prompt"])
            if text is None:
                self.dropped["open prompts: several turns"] += 1
            elif len(text) > open_max_chars:
                self.dropped[f"open prompts: over {open_max_chars} characters"] += 1
            elif text not in seen:
                seen.add(text)
                self.open[split_of(text)].append(Item(({"role": "user", "content": text},), None, "open"))

    def items(self, split: str, n: int, seed, distinct: bool = True) -> list[Item]:
        check_split(split)
        rng = random.Random(f"mixed-{split}-{seed}")
        is_open = [rng.random() < self.open_frac for _ in range(n)]
        opened = iter(draw(self.open[split], split, sum(is_open), f"{seed}-open", distinct, self.name) if any(is_open) else [])
        verifiable = iter(self.arith.items(split, n - sum(is_open), seed, distinct))
        return [next(opened) if o else next(verifiable) for o in is_open]

    def ranking_items(self, split: str, n: int, seed, size: int) -> list[dict]:
        """n rankings of `size` replies to the split's problems: 1..min(size - 1, 3) right ones (distinct
        formats), the rest distinct wrong numbers (off by 1..10); gold 1 right, 0 wrong."""
        check_split(split)
        rng = random.Random(f"mixed-rank-{split}-{seed}-{size}")
        rows = []
        for q, answer, op, (a, b) in draw(self.arith.pools[split], split, n, f"{seed}-rank", False, self.name):
            right = int(answer)
            n_right = rng.randint(1, min(size - 1, len(FORMATS)))
            wrong = rng.sample([right + d for d in range(-10, 11) if d], size - n_right)
            replies = [(FORMATS[k].format(a=a, op=op, b=b, v=right), 1.0) for k in rng.sample(range(len(FORMATS)), n_right)]
            replies += [(rng.choice(FORMATS).format(a=a, op=op, b=b, v=v), 0.0) for v in wrong]
            rng.shuffle(replies)
            rows.append({"prompt": q, "kind": op, "candidates": [r for r, _ in replies], "gold": [g for _, g in replies]})
        return rows


def make(cfg) -> SmolMixedTask:
    from analysis.study import conf_file

    world = OmegaConf.load(conf_file("world", str(cfg.get("world", "smol"))))
    arith = make_arith(cfg)
    return SmolMixedTask(arith, float(cfg.open_frac), int(cfg.open_max_chars), world)

