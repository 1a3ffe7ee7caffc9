"""Rule-based rewards any text can be scored with (the arith verifier lives with its world:
worlds/arith/gold.py; the math verifier in rewards/math_verify.py)."""
from __future__ import annotations


class Length:
    """Response length as the reward (characters or whitespace-separated words): the classic
    length-bias baseline of static benchmarks, and a reward any text can be scored with."""

    def __init__(self, name: str = "length", unit: str = "chars"):
        if unit not in ("chars", "words"):
            raise ValueError(f"length reward unit {unit!r} (config key reward.unit): expected 'chars' or 'words'")
        self.name, self.unit = name, unit

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        return [float(len(r) if self.unit == "chars" else len(r.split())) for r in responses]
