"""MATH-500 (the 500-problem MATH test subset of PRM800K): the shipped file.

Only 500 problems, so all three splits come from them: 400 / 50 / 50 train / eval / bench, by a
hash of the problem text (rl.tasks.split_exact). kind = the subject (per-subject metrics); meta =
the level (1-5) and the id; the reference answer is MATH's LaTeX answer.
"""
from __future__ import annotations

from rl.tasks import (DATA, MATH_GOLD, MATH_VERIFIER, Item, PoolTask, format_prompt, prompt_options,
                      read_jsonl, split_exact)

FILE = DATA / "real/math/math500_test.jsonl.gz"
INSTRUCTION = "Solve the problem step by step. Put the final answer in \\boxed{}."


def make(cfg) -> PoolTask:
    fmt, instruction = prompt_options(cfg, INSTRUCTION)
    recs = [rec for _, rec in read_jsonl(FILE)]
    pools = {"train": [], "eval": [], "bench": []}
    for rec, split in zip(recs, split_exact([r["problem"] for r in recs], (0.8, 0.1, 0.1))):
        pools[split].append(Item(format_prompt(rec["problem"], fmt, instruction), rec["answer"], rec["subject"],
                                 {"level": rec["level"], "id": rec["id"]}))
    return PoolTask("math500", pools, MATH_VERIFIER, MATH_GOLD)
