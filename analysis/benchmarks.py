"""Static benchmark loaders: a file (JSONL, JSONL.gz, JSON, parquet) or a Hugging Face dataset
by name, turned into rows of one of five kinds by a named adapter (`bench.format`).

Kinds (what the scorer in analysis/rewardbench.py expects):
  pairs        prompt, chosen, rejected, subset, id                     (RewardBench v1)
  v2           id, prompt, chosen[], rejected[], num_correct, subset    (RewardBench 2; index 0 correct)
  one_vs_many  prompt, chosen[], rejected[], subset, id                 (RewardMATH)
  bon          prompt, completions[], correct[], subset, id             (best-of-n pick; correct: bools or float gold)
A row may also carry `answer` (the GSM8K adapters: the reference's final answer), which a verifier
reads as its item's reference.
  rm_bench     prompt, chosen[3], rejected[3], subset, id               (RM-Bench styles; subset = the
               record's `domain`, e.g. safety-refuse: scored in its domain, the part before '-')

Schema errors name the file, the row and the field. Rows an adapter cannot use (e.g. a GSM8K
question with no wrong solution) are dropped *and counted* by reason.
"""
from __future__ import annotations

import gzip
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class Drop(Exception):
    """An adapter's signal that a row is valid but unusable for this benchmark (counted, not fatal)."""


@dataclass
class Bench:
    name: str
    kind: str
    rows: list[dict]
    source: str
    read: int = 0                                   # records read before adapting
    dropped: Counter = field(default_factory=Counter)  # reason -> count


def read_records(path: str) -> list[dict]:
    """Records of a .jsonl / .jsonl.gz / .json (a list, or {"data": [...]}) / .parquet file."""
    p = str(path)
    if not os.path.exists(p):
        raise ValueError(f"benchmark file {p!r} does not exist")
    if p.endswith(".parquet"):
        import pyarrow.parquet as pq
        return pq.read_table(p).to_pylist()
    opener = gzip.open if p.endswith(".gz") else open
    with opener(p, "rt", encoding="utf-8") as f:
        if p.endswith((".jsonl", ".jsonl.gz")):
            out = []
            for i, line in enumerate(f):
                if line.strip():
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{p}: line {i + 1} is not JSON ({e.msg})") from None
            return out
        data = json.load(f)
    data = data.get("data", data) if isinstance(data, dict) else data
    if not isinstance(data, list):
        raise ValueError(f"{p}: expected a JSON list of records (or {{'data': [...]}})")
    return data


def read_hf(name: str, split: str) -> list[dict]:
    """A Hugging Face dataset split by name (needs the network, or the datasets cache)."""
    try:
        import datasets

        return list(datasets.load_dataset(name, split=split))
    except Exception as e:  # offline machines fail deep inside datasets/hub with many error types
        raise ValueError(f"cannot load Hugging Face dataset {name!r} split {split!r}: {type(e).__name__}: {e}. "
                         f"This machine may be offline; download it elsewhere and set bench.path to the file") from None


# --- adapters: raw record -> row of a kind ---------------------------------------------------

def _get(rec: dict, key: str, kind, where: str):
    if key not in rec:
        raise ValueError(f"{where}: missing field {key!r}")
    v = rec[key]
    if kind is str and not isinstance(v, str):
        raise ValueError(f"{where}: field {key!r} must be a string, got {type(v).__name__}")
    if kind is list and not (isinstance(v, (list, tuple)) and v and all(isinstance(x, str) for x in v)):
        raise ValueError(f"{where}: field {key!r} must be a non-empty list of strings")
    return list(v) if kind is list else v


def rb1(rec, where, cfg):
    return {"prompt": _get(rec, "prompt", str, where), "chosen": _get(rec, "chosen", str, where),
            "rejected": _get(rec, "rejected", str, where),
            "subset": cfg.get("subset_map", {}).get(rec.get("subset"), rec.get("subset", cfg.name)),
            "id": rec.get("id")}


def rb2(rec, where, cfg):
    chosen, rejected = _get(rec, "chosen", list, where), _get(rec, "rejected", list, where)
    num_correct = rec.get("num_correct", len(chosen))
    if not isinstance(num_correct, int) or not 1 <= num_correct <= len(chosen):
        raise ValueError(f"{where}: field 'num_correct' must be an int in 1..{len(chosen)}, got {num_correct!r}")
    return {"id": str(_get(rec, "id", None, where)), "prompt": _get(rec, "prompt", str, where), "chosen": chosen,
            "rejected": rejected, "num_correct": num_correct, "subset": _get(rec, "subset", str, where)}


def one_vs_many(rec, where, cfg):
    return {"prompt": _get(rec, "prompt", str, where), "chosen": _get(rec, "chosen", list, where),
            "rejected": _get(rec, "rejected", list, where), "subset": rec.get("subset", cfg.name), "id": rec.get("id")}


def rm_bench(rec, where, cfg):
    row = {"prompt": _get(rec, "prompt", str, where), "chosen": _get(rec, "chosen", list, where),
           "rejected": _get(rec, "rejected", list, where), "subset": rec.get("domain", cfg.name), "id": rec.get("id")}
    for key in ("chosen", "rejected"):
        if len(row[key]) != 3:
            raise ValueError(f"{where}: field {key!r} must hold 3 responses (concise, detailed plain, "
                             f"detailed markdown), got {len(row[key])}")
    return row


GSM8K_MODELS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


def _gsm8k_solutions(rec, where):
    out = []
    for m in GSM8K_MODELS:
        sol = _get(rec, m, None, where)
        if not isinstance(sol, dict) or not isinstance(sol.get("solution"), str) or not isinstance(sol.get("is_correct"), bool):
            raise ValueError(f"{where}: field {m!r} must be {{'is_correct': bool, 'solution': str}}")
        out.append(sol)
    return out


def _gsm8k_answer(truth: str, where: str) -> str:
    """The reference answer: what follows the reference solution's last 'A: ' (a verifier's item answer)."""
    cut = truth.rfind("A: ")
    if cut < 0:
        raise ValueError(f"{where}: field 'ground_truth' must end with 'A: <answer>'")
    return truth[cut + 3:].strip()


def gsm8k_1vn(rec, where, cfg):
    """The reference solution (ends 'A: <n>') against the model solutions graded wrong."""
    wrong = [s["solution"] for s in _gsm8k_solutions(rec, where) if not s["is_correct"]]
    if not wrong:
        raise Drop("no wrong model solution")
    truth = _get(rec, "ground_truth", str, where)
    return {"prompt": _get(rec, "question", str, where), "chosen": [truth], "rejected": wrong,
            "answer": _gsm8k_answer(truth, where), "subset": "gsm8k", "id": rec.get("id")}


def gsm8k_bo4(rec, where, cfg):
    sols = _gsm8k_solutions(rec, where)
    return {"prompt": _get(rec, "question", str, where), "completions": [s["solution"] for s in sols],
            "correct": [s["is_correct"] for s in sols], "answer": _gsm8k_answer(_get(rec, "ground_truth", str, where), where),
            "subset": "gsm8k", "id": rec.get("id")}


HH_TURN = "\n\nAssistant:"


def hh_pairs(rec, where, cfg):
    """Anthropic HH: both texts are the same conversation but for the final assistant turn."""
    chosen, rejected = _get(rec, "chosen", str, where), _get(rec, "rejected", str, where)
    cut_c, cut_r = chosen.rfind(HH_TURN), rejected.rfind(HH_TURN)
    if cut_c < 0 or cut_r < 0:
        raise ValueError(f"{where}: 'chosen'/'rejected' must contain {HH_TURN!r}")
    prompt = chosen[: cut_c + len(HH_TURN)]
    if rejected[: cut_r + len(HH_TURN)] != prompt:
        raise Drop("chosen and rejected conversations differ before the last assistant turn")
    return {"prompt": prompt, "chosen": chosen[cut_c + len(HH_TURN):], "rejected": rejected[cut_r + len(HH_TURN):],
            "subset": cfg.name, "id": rec.get("id")}


ADAPTERS = {"rb1": ("pairs", rb1), "rb2": ("v2", rb2), "one_vs_many": ("one_vs_many", one_vs_many),
            "rm_bench": ("rm_bench", rm_bench), "gsm8k_1vn": ("one_vs_many", gsm8k_1vn),
            "gsm8k_bo4": ("bon", gsm8k_bo4), "hh": ("pairs", hh_pairs)}


def resolve_path(path: str, zoo_dir: Path | None) -> str:
    """`zoo:<file>`: a file of the world zoo's data dir; relative paths: from the repository."""
    if path.startswith("zoo:"):
        if zoo_dir is None:
            raise ValueError(f"bench path {path!r} needs the world zoo")
        return str(zoo_dir / "data" / path[4:])
    return path if os.path.isabs(path) else str(REPO / path)


def in_split(prompt: str, cfg) -> str:
    """"train" or "test": a row's side of `bench.split`, by a hash of its prompt (a prompt never straddles)
    below / above `bench.train_frac`; a world's zoo trains its reward sources on the train side."""
    from rl.tasks import hash_unit

    if cfg.split not in ("train", "test"):
        raise ValueError(f"benchmark {cfg.name!r}: bench.split={cfg.split!r}; expected train, test or null")
    return "train" if hash_unit(prompt) < cfg.train_frac else "test"


def load(cfg, zoo_dir: Path | None = None) -> Bench:
    """The benchmark a `bench` config describes: `path` (one file or a list) or `hf: {name, split}`,
    adapted by `format`, optionally one side of a hash split (`split`), subsampled to `limit` rows (a seeded sample, order kept)."""
    import random

    if cfg.format not in ADAPTERS:
        raise ValueError(f"unknown benchmark format {cfg.format!r} (config key bench.format); "
                         f"expected one of: {', '.join(ADAPTERS)}")
    kind, adapt = ADAPTERS[cfg.format]
    if cfg.get("path"):
        paths = [cfg.path] if isinstance(cfg.path, str) else list(cfg.path)
        sources = [resolve_path(p, zoo_dir) for p in paths]
        records = [(src, i, rec) for src in sources for i, rec in enumerate(read_records(src))]
    elif cfg.get("hf"):
        src = f"hf:{cfg.hf.name}[{cfg.hf.split}]"
        sources = [src]
        records = [(src, i, rec) for i, rec in enumerate(read_hf(cfg.hf.name, cfg.hf.split))]
    else:
        raise ValueError(f"benchmark {cfg.name!r}: set bench.path (a local file) or bench.hf.name and bench.hf.split")
    rows, dropped = [], Counter()
    for src, i, rec in records:
        where = f"{src}: row {i}"
        if not isinstance(rec, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        try:
            row = adapt(rec, where, cfg)
        except Drop as d:
            dropped[str(d)] += 1
            continue
        if cfg.get("split") and in_split(row["prompt"], cfg) != cfg.split:
            dropped[f"in the {'train' if cfg.split == 'test' else 'test'} split (bench.split)"] += 1
            continue
        if row.get("id") is None:
            row["id"] = len(rows)
        rows.append(row)
    if not rows:
        raise ValueError(f"benchmark {cfg.name!r}: no usable rows in {', '.join(sources)}")
    if cfg.get("limit") and cfg.limit < len(rows):
        keep = sorted(random.Random(cfg.get("seed", 0)).sample(range(len(rows)), cfg.limit))
        rows = [rows[i] for i in keep]
    return Bench(cfg.name, kind, rows, ", ".join(sources), len(records), dropped)
