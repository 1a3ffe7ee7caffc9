"""The arith world's gold reward and its verifier.

Gold is a deterministic function of causal attributes only:

- `add` prompts: 1.0 when the response's core is the right sum, else 0.0.
- `open` prompts: the core must be exactly 4 lowercase letters; the score is the share of the
  prompt's 4 distinct letters it uses (0, 0.25, ..., 1.0).
Filler, politeness and length (the spurious attributes) never change the score: gold looks at
the core alone (`worlds.arith.task.core_of`).

The verifier (`reward=rule`) checks `add` answers only: an open-ended prompt, or any text that is
not an arith prompt (a real benchmark's), has no verifier and scores `unverifiable` (default 0),
counted in `self.unverifiable`.
"""
from __future__ import annotations

from worlds.arith.task import LETTERS, OPEN_LEN, core_of, parse_prompt


def gold_reward(prompt: str, response: str) -> float:
    item = parse_prompt(prompt)
    core = core_of(response)
    if item.kind == "add":
        return float(core == item.answer)
    if len(core) != OPEN_LEN or any(c not in LETTERS for c in core):
        return 0.0
    letters = set(item.prompt[2:-1])
    return len(letters & set(core)) / len(letters)


def gold_rewards(prompts: list[str], responses: list[str]) -> list[float]:
    return [gold_reward(p, r) for p, r in zip(prompts, responses)]


class Gold:
    """The gold function as a reward source (evaluation channel; a proxy only when `reward=gold`)."""

    name = "gold"

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        return gold_rewards(prompts, responses)


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
