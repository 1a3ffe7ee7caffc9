"""The smol world's real preference pairs: what its reward sources train on (the judge's LoRA, the
Bradley-Terry RM) and the judge's demonstrations, kept apart from every benchmark row they are scored on.

The pool: LLMBar's processed human-labelled pairs (MT-Bench, FairEval, LLMEval^2; no benchmark
scores them) and the train side of HH harmless (bench hh_harmless scores only its test side, by a
hash of the prompt). A pool pair whose prompt is also a prompt of any benchmark in
`world.static.benches` is dropped and counted.
"""
from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[2]
HUMAN_PAIRS = "data/real/llmbar/processed_human_pairs.jsonl.gz"


def bench_config(name: str):
    from analysis.study import conf_file

    return OmegaConf.load(conf_file("bench", name))


def bench_prompts(names) -> set[str]:
    """Every prompt of these benchmarks, as the static harness loads them (whole, no row limit)."""
    from analysis.benchmarks import load

    out = set()
    for name in names:
        cfg = bench_config(name)
        cfg.limit = None
        out |= {row["prompt"].strip() for row in load(cfg).rows}
    return out


def pool(world) -> tuple[list[dict], Counter]:
    """Rows {prompt, chosen, rejected, source} and what was dropped, by reason."""
    from analysis.benchmarks import load, read_records

    rows = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"], "source": "human_pairs"}
            for r in read_records(str(REPO / HUMAN_PAIRS))]
    hh = bench_config("hh_harmless")
    hh.split, hh.limit = "train", None
    hh_rows = load(hh)
    rows += [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"], "source": "hh_harmless_train"}
             for r in hh_rows.rows]
    dropped = Counter({f"hh_harmless: {k}": v for k, v in hh_rows.dropped.items()
                       if not k.startswith("in the test split")})
    taken = bench_prompts(world.static.benches)
    kept = []
    for r in rows:
        if r["prompt"].strip() in taken:
            dropped[f"{r['source']}: prompt also in a benchmark"] += 1
        else:
            kept.append(r)
    return kept, dropped


def select(rows: list[dict], n_train: int, n_demos: int, demo_max_chars: int, seed: int) -> tuple[list[dict], list[dict]]:
    """(train pairs, demonstrations), disjoint: demonstrations are short pairs (prompt + both
    responses within `demo_max_chars`), alternately from each source; the train pairs are drawn
    evenly from the sources among the rest."""
    rng = random.Random(seed)
    by_source: dict[str, list[dict]] = {}
    for r in rows:
        by_source.setdefault(r["source"], []).append(r)
    sources = sorted(by_source)
    for s in sources:
        rng.shuffle(by_source[s])
    demos = []
    for k in range(n_demos):
        short = [r for r in by_source[sources[k % len(sources)]]
                 if len(r["prompt"]) + len(r["chosen"]) + len(r["rejected"]) <= demo_max_chars and r not in demos]
        if not short:
            raise ValueError(f"no pool pair within world.pairs.demo_max_chars={demo_max_chars} left for a demonstration")
        demos.append(short[0])
    rest = {s: [r for r in by_source[s] if r not in demos] for s in sources}
    train = []
    while len(train) < n_train and any(rest.values()):
        for s in sources:
            if rest[s] and len(train) < n_train:
                train.append(rest[s].pop())
    if len(train) < n_train:
        raise ValueError(f"world.pairs.train={n_train} but the pool has only {len(train)} pairs besides the demonstrations")
    return train, demos
