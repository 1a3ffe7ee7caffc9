"""The `smol` world's task (`task=smol_arith`): short arithmetic questions in words for a real
instruct LM (SmolLM2-135M-Instruct), generated procedurally, with a difficulty knob.

A problem is `a <op> b` with operands in 0..`max_operand` and op in `ops` (+, -, *), asked in one
of several phrasings ("What is 7 plus 5?", "Compute 7 + 5.", ...) as a chat user turn with an
instruction to end with the answer after "####" (GSM8K's tag, which the math verifier reads).
`fewshot` solved examples (train problems, fixed) go before it as earlier chat turns: a 135M model
rambles without them (DESIGN.md §2). A problem's split is a hash of its question text, so train,
eval and bench never share one. Verifier and default gold: the math verifier on the tagged answer
(`extract: answer_tag`: no tag, no answer) — the format is part of the task.
"""
from __future__ import annotations

import itertools
import random

from rl.tasks import Item, check_split, draw, split_of

OPS = {"+": ("plus", lambda a, b: a + b), "-": ("minus", lambda a, b: a - b), "*": ("times", lambda a, b: a * b)}
PHRASINGS = ("What is {a} {word} {b}?", "Compute {a} {op} {b}.", "Calculate {a} {word} {b}.", "{a} {op} {b} = ?")
INSTRUCTION = "Give the answer as a number after ####."


def question(a: int, op: str, b: int, phrasing: int) -> str:
    return PHRASINGS[phrasing].format(a=a, b=b, op=op, word=OPS[op][0])


def solution(a: int, op: str, b: int) -> str:
    """A worked answer in the tag format (the few-shot examples' replies)."""
    return f"{a} {op} {b} = {OPS[op][1](a, b)}\n#### {OPS[op][1](a, b)}"


class SmolArithTask:
    """The task contract (rl/tasks/__init__.py) over every (a, op, b, phrasing) problem."""
    name = "smol_arith"

    def __init__(self, max_operand: int, ops, fewshot: int, instruction: str, extract: str = "answer_tag"):
        bad = [op for op in ops if op not in OPS]
        if bad or not ops:
            raise ValueError(f"task.ops={list(ops)}: expected a non-empty list of {', '.join(OPS)}")
        if max_operand < 1 or fewshot < 0:
            raise ValueError("task.max_operand must be >= 1 and task.fewshot >= 0")
        self.verifier = {"name": "math", "type": "math_verify", "extract": extract}
        self.default_gold = {"name": "gold", "type": "math_verify", "extract": extract}
        self.dropped = {}
        self.instruction = instruction
        self.pools = {"train": [], "eval": [], "bench": []}
        for a, b, op, k in itertools.product(range(max_operand + 1), range(max_operand + 1), ops, range(len(PHRASINGS))):
            q = question(a, op, b, k)
            self.pools[split_of(q)].append((q, str(OPS[op][1](a, b)), op, (a, b)))
        if fewshot > len(self.pools["train"]):
            raise ValueError(f"task.fewshot={fewshot}: the train split has {len(self.pools['train'])} problems")
        shots = random.Random("fewshot").sample(self.pools["train"], fewshot)
        self.shots = [m for q, _, op, (a, b) in shots
                      for m in ({"role": "user", "content": self._ask(q)},
                                {"role": "assistant", "content": solution(a, op, b)})]

    def _ask(self, q: str) -> str:
        return f"{q}\n{self.instruction}" if self.instruction else q

    def item(self, q: str, answer: str, op: str) -> Item:
        return Item(tuple(self.shots) + ({"role": "user", "content": self._ask(q)},), answer, op, {"question": q})

    def items(self, split: str, n: int, seed, distinct: bool = True) -> list[Item]:
        check_split(split)
        return [self.item(q, ans, op) for q, ans, op, _ in draw(self.pools[split], split, n, seed, distinct, self.name)]


def make(cfg) -> SmolArithTask:
    return SmolArithTask(int(cfg.max_operand), list(cfg.ops), int(cfg.fewshot), str(cfg.get("instruction", INSTRUCTION)),
                         str(cfg.get("extract", "answer_tag")))
