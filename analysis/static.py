"""Static reward benchmarks: `python -m analysis.static reward=<source> bench=<name>`.

Scores a benchmark (analysis/benchmarks.py) with exactly the reward-source object the online loop
trains against (rewards.make_source), so static accuracy and downstream use never diverge. Prints
a table and writes static.json (every number, the per-row scores, what was dropped or cut) in the
run directory.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from analysis import rewardbench as rb
from analysis import seedbench as sb
from analysis.benchmarks import Bench, load
from rewards import call_score
from rl.logger import write_atomic



def _zoo_artifacts(cfg) -> list[str]:
    """The world zoo's artifacts this evaluation reads: the reward's models, `data` for a zoo bench."""
    from rewards import resolve, zoo_artifacts

    paths = cfg.bench.get("path") or []
    paths = [paths] if isinstance(paths, str) else list(paths)
    return zoo_artifacts(resolve(cfg.reward)) + (["data"] if any(str(p).startswith("zoo:") for p in paths) else [])


@dataclass
class Reference:
    """A bench row's reference answer as a verifier reads an item's (None: the bench has none)."""
    answer: str | None


class Cutter:
    """Character caps on long texts (prompt keeps its end, response its start), counted."""

    def __init__(self, prompt: int | None, response: int | None):
        self.prompt, self.response = prompt, response
        self.cut = {"prompt": 0, "response": 0}

    def __call__(self, text: str, what: str) -> str:
        cap = self.prompt if what == "prompt" else self.response
        if cap is None or len(text) <= cap:
            return text
        self.cut[what] += 1
        return text[-cap:] if what == "prompt" else text[:cap]


def score_flat(source, prompts: list[str], responses: list[str], batch_size: int, batch_chars: int,
               desc: str, items: list | None = None) -> list[float]:
    """Scores in the input order, computed in length-sorted batches of at most `batch_size` texts
    and `batch_chars` characters (one longer text goes alone): attention memory grows with the
    square of the length, and real benchmark texts run to thousands of characters."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(responses[i]))
    out = [0.0] * len(prompts)
    bar = tqdm(total=len(order), desc=desc, unit="text")
    start = 0
    while start < len(order):
        end, chars = start, 0
        while end < len(order) and end - start < batch_size:
            n = len(prompts[order[end]]) + len(responses[order[end]])
            if end > start and chars + n > batch_chars:
                break
            chars += n
            end += 1
        idx = order[start:end]
        got = call_score(source, [prompts[i] for i in idx], [responses[i] for i in idx],
                         None if items is None else [items[i] for i in idx])
        if len(got) != len(idx):
            raise ValueError(f"reward source returned {len(got)} scores for {len(idx)} responses")
        for i, v in zip(idx, got):
            out[i] = float(v)
        bar.update(len(idx))
        start = end
    bar.close()
    return out


PAIR_KINDS = ("pairs", "mrb", "rag")  # a chosen and a rejected response per row


def completions(bench: Bench, row: dict) -> list[str]:
    """The responses of one row in scoring order."""
    if bench.kind in PAIR_KINDS:
        return [row["chosen"], row["rejected"]]
    if bench.kind == "bon":
        return list(row["completions"])
    if bench.kind == "long":
        return list(row["answers"])
    return list(row["chosen"]) + list(row["rejected"])


def aggregate(bench: Bench, scores: list[list[float]]) -> dict:
    """Benchmark numbers from per-row scores (same order as `completions`)."""
    rows, kind = bench.rows, bench.kind
    if kind in PAIR_KINDS:
        pairs_scorer = {"pairs": rb.v1_scores, "mrb": sb.mrb_scores, "rag": sb.rag_scores}[kind]
        return pairs_scorer(rows, [s[0] for s in scores], [s[1] for s in scores])
    if kind == "v2":
        return rb.v2_scores(rows, scores)
    if kind == "long":
        return sb.long_scores(rows, [sb.scalar_credit(row["golden"], s) for row, s in zip(rows, scores)])
    per = defaultdict(list)
    if kind == "one_vs_many":
        for row, s in zip(rows, scores):
            per[row["subset"]].append(rb.one_vs_many(s[: len(row["chosen"])], s[len(row["chosen"]):]))
        return _means(per)
    if kind == "bon":
        for row, s in zip(rows, scores):
            c = row["correct"]  # bools, or float gold: the oracle is then the best gold on offer
            per[row["subset"]].append({"accuracy": rb.bon_pick(s, c), "oracle": float(max(c)),
                                       "random": sum(c) / len(c)})
        return _means(per)
    if kind == "rm_bench":  # domains by subset prefix, the total over the domains present
        return rb.rm_bench_by_domain([row["subset"] for row in rows], [s[:3] for s in scores], [s[3:] for s in scores])
    raise ValueError(f"unknown benchmark kind {kind!r}")


def _means(per: dict[str, list[dict]]) -> dict:
    out = {sub: {k: float(np.mean([x[k] for x in xs])) for k in xs[0]} | {"prompts": len(xs)}
           for sub, xs in sorted(per.items())}
    everything = [x for xs in per.values() for x in xs]
    return out | {k: float(np.mean([x[k] for x in everything])) for k in everything[0]}


def evaluate(cfg: DictConfig, source=None) -> dict:
    """Load the bench, score every completion with the reward source, aggregate."""
    from rewards import make_source

    from rewards import check_world

    t0 = time.time()
    if cfg.get("world") is not None:  # a config without a world (a test's) reads no zoo
        check_world(cfg.reward, cfg.world.name)
    zoo_dir = None
    artifacts = _zoo_artifacts(cfg)
    if artifacts:
        from worlds import zoo
        zoo_dir = zoo.ensure(cfg.world, cfg.cache_dir, artifacts)
    bench = load(cfg.bench, zoo_dir)
    source = source or make_source(cfg.reward, zoo_dir)
    cut = Cutter(cfg.max_chars.prompt, cfg.max_chars.response)
    flat, scores, result, protocol = [], None, None, None
    if bench.kind == "vl":  # a judge protocol only: its per-item verdicts stand as the row scores
        result = vl_judge(cfg, source, bench)
        scores = result.pop("verdicts")
    elif hasattr(source, "score"):
        flat_p, flat_r, sizes, items = [], [], [], []
        for row in bench.rows:
            comps = completions(bench, row)
            flat_p += [cut(row["prompt"], "prompt")] * len(comps)
            flat_r += [cut(c, "response") for c in comps]
            sizes.append(len(comps))
            items += [Reference(row.get("answer"))] * len(comps)
        flat = score_flat(source, flat_p, flat_r, cfg.batch_size, cfg.batch_chars, f"{cfg.reward.name} on {bench.name}", items)
        scores = rb.regroup(flat, sizes)
        result = aggregate(bench, scores)  # every scorer counts a row with a NaN score as wrong
    elif not cfg.get("judge_protocol"):
        raise ValueError(f"reward {cfg.reward.name!r} ranks responses against each other and has no pointwise score: "
                         "set judge_protocol=both_orders or pairwise_once (a pairs benchmark)")
    if cfg.get("judge_protocol"):
        protocol = judge_protocol(cfg, source, bench, cut)
    return {"bench": bench.name, "kind": bench.kind, "reward": cfg.reward.name, "source": bench.source,
            "records_read": bench.read, "rows_scored": len(bench.rows), "rows_dropped": dict(bench.dropped),
            "texts_cut": {"prompts": cut.cut["prompt"], "responses": cut.cut["response"], "max_chars": dict(cfg.max_chars)},
            "completions_scored": len(flat), "nan_scores": sum(math.isnan(x) for x in flat), "scores": result,
            "judge_protocol": protocol,
            "wall_s": round(time.time() - t0, 1),
            "row_scores": scores}


PROTOCOLS = ("ratings", "pairwise_once", "both_orders")


def judge_protocol(cfg, source, bench: Bench, cut) -> dict:
    """A generative judge on pairs by `cfg.judge_protocol` (reported apart from the scalar scores).

    ratings needs `source.generate_verdicts(prompts, responses) -> [{"score": n} | None]` (the LoRA
    judge); pairwise_once / both_orders need `source.compare(prompts, first, second) -> ['A'|'B'|None]`.
    """
    import random

    name = cfg.judge_protocol
    if name not in PROTOCOLS:
        raise ValueError(f"judge_protocol={name!r}; expected one of: {', '.join(PROTOCOLS)} (or null)")
    if bench.kind not in PAIR_KINDS:
        raise ValueError(f"judge_protocol applies to pairs benchmarks; {bench.name!r} is {bench.kind!r}")
    method = "generate_verdicts" if name == "ratings" else "compare"
    if not hasattr(source, method):
        raise ValueError(f"reward {cfg.reward.name!r} has no {method}(): the {name} protocol needs a "
                         f"{'rating' if name == 'ratings' else 'pairwise'} generative judge")
    prompts = [cut(r["prompt"], "prompt") for r in bench.rows]
    chosen = [cut(r["chosen"], "response") for r in bench.rows]
    rejected = [cut(r["rejected"], "response") for r in bench.rows]
    per, extra = defaultdict(list), {}
    if name == "ratings":
        def rate(texts):
            out = []
            for i in tqdm(range(0, len(texts), cfg.batch_size), desc=f"{name} verdicts", unit="batch"):
                out += [v["score"] if isinstance(v.get("score") if v else None, (int, float)) else None
                        for v in source.generate_verdicts(prompts[i : i + cfg.batch_size], texts[i : i + cfg.batch_size])]
            return out
        rc, rr = rate(chosen), rate(rejected)
        results = [rb.ratings_pair(c, r) for c, r in zip(rc, rr)]
        errors = sum(x is None for x in rc + rr)
        verdicts = [list(x) for x in zip(rc, rr)]
    elif name == "pairwise_once":
        rng = random.Random(cfg.seed)
        chosen_is_a = [rng.random() < 0.5 for _ in bench.rows]
        first = [c if a else r for c, r, a in zip(chosen, rejected, chosen_is_a)]
        second = [r if a else c for c, r, a in zip(chosen, rejected, chosen_is_a)]
        picks = source.compare(prompts, first, second)
        results = [rb.pairwise_once(p, a) for p, a in zip(picks, chosen_is_a)]
        errors = sum(p not in ("A", "B") for p in picks)
        verdicts = [list(x) for x in zip(picks, chosen_is_a)]
    else:
        ab, ba = source.compare(prompts, chosen, rejected), source.compare(prompts, rejected, chosen)
        results = [rb.both_orders(x, y) for x, y in zip(ab, ba)]
        errors = sum(p not in ("A", "B") for p in ab + ba)
        verdicts = [list(x) for x in zip(ab, ba)]
        both = [(x, y) for x, y in zip(ab, ba) if x in ("A", "B") and y in ("A", "B")]
        # a position flip: the same letter picked in both orders, so the verdict followed the slot
        extra = {"flip_rate": sum(x == y for x, y in both) / len(both) if both else None, "both_parsed": len(both)}
    for row, v in zip(bench.rows, results):
        per[row["subset"]].append(v)
    out = {s: float(np.mean(v)) for s, v in sorted(per.items())}
    # per row, so the numbers can be checked: ratings [chosen, rejected] (None: unparsed),
    # pairwise_once [pick, chosen shown as A], both_orders [pick chosen first, pick chosen second]
    # a referee cuts each candidate to its own max_candidate_chars (counted on the source)
    return {"protocol": name, "per_subset": out, "overall": float(np.mean(list(out.values()))), **extra,
            "verdict_parse_errors": errors, "candidates_cut": getattr(source, "cut", 0), "verdicts": verdicts}


def vl_judge(cfg, source, bench: Bench) -> dict:
    """VL-RewardBench's protocol (analysis/seedbench.py) with a judge that sees images:
    `source.judge_images(prompts, images) -> [text]`, sampled as the judge is configured (the
    official run: temperature 0.2, top_p 0.2, 2048 tokens). Each item is judged `bench.k` times, each
    time in an order drawn at random (seeded by `seed`; the official draw is unseeded)."""
    import random

    if not hasattr(source, "judge_images"):
        raise ValueError(f"benchmark {bench.name!r} needs a vision-language judge (a reward source with "
                         f"judge_images(prompts, images)); reward {cfg.reward.name!r} reads text only")
    rng, k = random.Random(cfg.seed), int(cfg.bench.get("k", 10))
    calls = [(i, rng.random() < 0.5) for i in range(len(bench.rows)) for _ in range(k)]
    texts = []
    for start in tqdm(range(0, len(calls), cfg.batch_size), desc=f"{cfg.reward.name} on {bench.name}", unit="batch"):
        batch = calls[start : start + cfg.batch_size]
        got = source.judge_images([sb.vl_prompt(bench.rows[i]["prompt"], bench.rows[i]["responses"], swap) for i, swap in batch],
                                  [bench.rows[i]["image"] for i, _ in batch])
        if len(got) != len(batch):
            raise ValueError(f"reward {cfg.reward.name!r} returned {len(got)} judgements for {len(batch)} prompts")
        texts += got
    flags = defaultdict(list)
    for (i, swap), text in zip(calls, texts):
        flags[i].append(sb.vl_flag(text, bench.rows[i]["human_ranking"], swap))
    labels = [sb.vl_majority(flags[i]) for i in range(len(bench.rows))]
    return sb.vl_scores([r["id"] for r in bench.rows], labels) | {
        "protocol": "vl_rewardbench", "k": k, "unparsed_judgements": sum(f.count("doesntMatch") for f in flags.values()),
        "verdicts": [flags[i] for i in range(len(bench.rows))]}


def headline(res: dict) -> float | None:
    """One number per benchmark result (its kind's main accuracy); None for a source with no pointwise score."""
    s = res["scores"]
    if s is None:
        return None
    if res["kind"] == "rm_bench":
        return s["over_domains_present"]["avg"]
    return s["accuracy"] if res["kind"] in ("one_vs_many", "bon") else s["overall"]


def table(res: dict) -> str:
    """The console view: one line per number (nested dicts flattened, matrices left to the JSON)."""
    lines = [f"{res['bench']} ({res['kind']}) scored by {res['reward']}: {res['rows_scored']} rows "
             f"({res['records_read']} read, dropped {res['rows_dropped'] or 0}; cut {res['texts_cut']['prompts']} prompts, "
             f"{res['texts_cut']['responses']} responses; {res['nan_scores']} NaN scores, counted wrong), {res['wall_s']} s"]

    def walk(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k} / ")
            elif isinstance(v, float):
                lines.append(f"  {prefix + k:<40} {v:.4f}")
            elif isinstance(v, (int, str)):
                lines.append(f"  {prefix + k:<40} {v}")
            elif k == "warnings":
                lines.extend(f"  warning: {w}" for w in v)
    if res["scores"] is None:
        lines.append("  no pointwise scores (a ranking source): its accuracy is the judge protocol's")
    else:
        walk(res["scores"])
    if res.get("judge_protocol"):
        lines.append(f"judge protocol {res['judge_protocol']['protocol']} (reported apart from the scalar scores):")
        walk({k: v for k, v in res["judge_protocol"].items() if k != "protocol"})
    return "\n".join(lines)


@hydra.main(config_path="../conf", config_name="static", version_base="1.3")
def main(cfg: DictConfig) -> None:
    out_dir = hydra.core.hydra_config.HydraConfig.get().runtime.output_dir
    try:
        res = evaluate(cfg)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    res["config"] = OmegaConf.to_container(cfg, resolve=True)
    path = os.path.join(out_dir, "static.json")
    write_atomic(path, json.dumps(res, indent=1))
    print(table(res))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
