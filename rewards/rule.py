"""Rule-based verifiers: a reward only where an answer can be checked.

`arith`: an `add` prompt scores 1 when the reply's core is the right sum; an open-ended prompt,
or any text that is not an arith prompt (a real benchmark's), has no verifier and scores
`unverifiable` (default 0), counted in `self.unverifiable`.
"""
from __future__ import annotations

from rl.tasks.arith import core_of, parse_prompt


class ArithVerifier:
    def __init__(self, name: str = "rule", unverifiable: float = 0.0):
        self.name, self.default = name, unverifiable
        self.unverifiable = 0

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        out = []
        for p, r in zip(prompts, responses):
            try:
                item = parse_prompt(p)
            except ValueError:
                item = None
            if item is None or item.answer is None:
                self.unverifiable += 1
                out.append(self.default)
            else:
                out.append(float(core_of(r) == item.answer))
        return out


class Length:
    """Response length as the reward (characters or whitespace-separated words): the classic
    length-bias baseline of static benchmarks, and a reward any text can be scored with."""

    def __init__(self, name: str = "length", unit: str = "chars"):
        if unit not in ("chars", "words"):
            raise ValueError(f"length reward unit {unit!r} (config key reward.unit): expected 'chars' or 'words'")
        self.name, self.unit = name, unit

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        return [float(len(r) if self.unit == "chars" else len(r.split())) for r in responses]
