"""GSM8K (grade-school math word problems, openai/grade-school-math): the shipped train and test files.

train = GSM8K train (7,473); eval and bench = GSM8K test (1,319) halved by a hash of the question
(rl.tasks.split_exact: 660 / 659), so the benchmark split is never trained or evaluated on. The
reference answer is the text after the solution's last "####", stripped, with commas as in the data
("1,080": the verifier reads them); the worked solution before it goes to meta["solution"].
"""
from __future__ import annotations

from collections import Counter

from rl.tasks import (DATA, MATH_GOLD, MATH_VERIFIER, Item, PoolTask, format_prompt, prompt_options,
                      read_jsonl, split_exact)

FILES = {"train": DATA / "real/gsm8k/train.jsonl.gz", "test": DATA / "real/gsm8k/test.jsonl.gz"}
INSTRUCTION = "Solve the problem step by step. Put the final answer in \\boxed{}."


def make(cfg) -> PoolTask:
    fmt, instruction = prompt_options(cfg, INSTRUCTION)
    pools, dropped = {"train": [], "eval": [], "bench": []}, Counter()
    for source, path in FILES.items():
        rows = []
        for _, rec in read_jsonl(path):
            solution, sep, answer = rec["answer"].rpartition("####")
            if not sep or not answer.strip():
                dropped["no_final_answer"] += 1
                continue
            rows.append(Item(format_prompt(rec["question"], fmt, instruction), answer.strip(), "gsm8k",
                             {"question": rec["question"], "solution": solution.strip()}))
        splits = ["train"] * len(rows) if source == "train" else \
            split_exact([it.meta["question"] for it in rows], (0.0, 0.5, 0.5))
        for it, split in zip(rows, splits):
            pools[split].append(it)
    return PoolTask("gsm8k", pools, MATH_VERIFIER, MATH_GOLD, dict(dropped))
