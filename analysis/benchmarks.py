"""Static benchmark loaders: a file (JSONL, JSONL.gz, JSON, parquet) or a Hugging Face dataset
by name, turned into rows of one of these kinds by a named adapter (`bench.format`).

Kinds (what the scorer in analysis/rewardbench.py expects):
  pairs        prompt, chosen, rejected, subset, id                     (RewardBench v1)
  v2           id, prompt, chosen[], rejected[], num_correct, subset    (RewardBench 2; index 0 correct)
  one_vs_many  prompt, chosen[], rejected[], subset, id                 (RewardMATH)
  bon          prompt, completions[], correct[], subset, id             (best-of-n pick; correct: bools or float gold)
  rm_bench     prompt, chosen[3], rejected[3], subset, id               (RM-Bench styles; subset = the
               record's `domain`, e.g. safety-refuse: scored in its domain, the part before '-')
  mrb          pairs + language                                          (M-RewardBench)
  rag          pairs, subset = the scenario                              (RAG-RewardBench)
  long         prompt, answers[] (shown order), golden[], tasktype, subtype, length, subset = the task
                                                                         (Long-RewardBench)
  vl           prompt (the query), responses[2], human_ranking, image (bytes), id
                                                                         (VL-RewardBench: a judge protocol only)
Scorers of the last four: analysis/seedbench.py. A row may also carry `answer` (the GSM8K
adapters: the reference's final answer), which a verifier reads as its item's reference.

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


def read_hf(name: str, split: str, config: str | None = None, data_files: str | None = None) -> list[dict]:
    """A Hugging Face dataset split by name, optionally one config or one data file of it (needs
    the network, or the datasets cache)."""
    what = f"{name!r}" + (f" config {config!r}" if config else "") + (f" file {data_files!r}" if data_files else "")
    try:
        import datasets

        return list(datasets.load_dataset(name, config, split=split, data_files=data_files))
    except Exception as e:  # offline machines fail deep inside datasets/hub with many error types
        raise ValueError(f"cannot load Hugging Face dataset {what} split {split!r}: {type(e).__name__}: {e}. "
                         f"This machine may be offline; download it elsewhere and set bench.path to the file") from None


def hf_parts(cfg) -> list[tuple[str, str, list[dict]]]:
    """(source, label, records) per part of `bench.hf`: one per config (`configs`: M-RewardBench's
    languages, narrowed by `bench.languages`, English from `english` when it is set; Long-RewardBench's
    tasks), one per data file (`files`: RAG-RewardBench's scenarios), or the one split. The label is
    the config, or the file's name up to its first dot."""
    hf = cfg.hf
    if hf.get("configs"):
        out = []
        for c in cfg.get("languages") or hf.configs:
            name, split, config = (hf.english.name, hf.english.split, None) if c == "eng_Latn" and hf.get("english") \
                else (hf.name, hf.split, c)
            out.append((f"hf:{name}" + (f"/{config}" if config else "") + f"[{split}]", c, read_hf(name, split, config)))
        return out
    if hf.get("files"):
        return [(f"hf:{hf.name}/{f}[{hf.split}]", Path(f).name.split(".")[0], read_hf(hf.name, hf.split, data_files=f))
                for f in hf.files]
    return [(f"hf:{hf.name}[{hf.split}]", cfg.name, read_hf(hf.name, hf.split))]


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


def rb1(rec, where, cfg, label):
    return {"prompt": _get(rec, "prompt", str, where), "chosen": _get(rec, "chosen", str, where),
            "rejected": _get(rec, "rejected", str, where),
            "subset": cfg.get("subset_map", {}).get(rec.get("subset"), rec.get("subset", cfg.name)),
            "id": rec.get("id")}


def rb2(rec, where, cfg, label):
    chosen, rejected = _get(rec, "chosen", list, where), _get(rec, "rejected", list, where)
    num_correct = rec.get("num_correct", len(chosen))
    if not isinstance(num_correct, int) or not 1 <= num_correct <= len(chosen):
        raise ValueError(f"{where}: field 'num_correct' must be an int in 1..{len(chosen)}, got {num_correct!r}")
    return {"id": str(_get(rec, "id", None, where)), "prompt": _get(rec, "prompt", str, where), "chosen": chosen,
            "rejected": rejected, "num_correct": num_correct, "subset": _get(rec, "subset", str, where)}


def one_vs_many(rec, where, cfg, label):
    return {"prompt": _get(rec, "prompt", str, where), "chosen": _get(rec, "chosen", list, where),
            "rejected": _get(rec, "rejected", list, where), "subset": rec.get("subset", cfg.name), "id": rec.get("id")}


def rm_bench(rec, where, cfg, label):
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


def gsm8k_1vn(rec, where, cfg, label):
    """The reference solution (ends 'A: <n>') against the model solutions graded wrong."""
    wrong = [s["solution"] for s in _gsm8k_solutions(rec, where) if not s["is_correct"]]
    if not wrong:
        raise Drop("no wrong model solution")
    truth = _get(rec, "ground_truth", str, where)
    return {"prompt": _get(rec, "question", str, where), "chosen": [truth], "rejected": wrong,
            "answer": _gsm8k_answer(truth, where), "subset": "gsm8k", "id": rec.get("id")}


def gsm8k_bo4(rec, where, cfg, label):
    sols = _gsm8k_solutions(rec, where)
    return {"prompt": _get(rec, "question", str, where), "completions": [s["solution"] for s in sols],
            "correct": [s["is_correct"] for s in sols], "answer": _gsm8k_answer(_get(rec, "ground_truth", str, where), where),
            "subset": "gsm8k", "id": rec.get("id")}


HH_TURN = "\n\nAssistant:"


def hh_pairs(rec, where, cfg, label):
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


def mrb(rec, where, cfg, label):
    """M-RewardBench: one language's RewardBench pair; the subset in `source` (the current schema) or
    `subset` (the Sep 2024 one, and RewardBench itself: the English side); the language in
    `language`, else the config or file name (e.g. arb_Arab.jsonl)."""
    lang = rec.get("language") or label
    if cfg.get("languages") and lang not in cfg.languages:
        raise Drop("language not in bench.languages")
    subset = rec.get("source") or rec.get("subset")
    if not isinstance(subset, str):
        raise ValueError(f"{where}: missing field 'source' (or 'subset'): the RewardBench subset of the pair")
    return {"prompt": _get(rec, "prompt", str, where), "chosen": _get(rec, "chosen", str, where),
            "rejected": _get(rec, "rejected", str, where), "subset": subset, "language": lang, "id": rec.get("id")}


def rag(rec, where, cfg, label):
    """RAG-RewardBench: the retrieved references (`prompt`, one rendered string) then the `question`
    make the user turn [the layout is our assumption: no official template exists]; the scenario is
    `subset`, else the file (reason, citation, abstain, conflict, helpful, harmless). The rejected
    side's field is `reject`."""
    question = _get(rec, "question", str, where)
    refs = _get(rec, "prompt", str, where)
    return {"prompt": f"{refs}\n\n{question}" if refs else question, "chosen": _get(rec, "chosen", str, where),
            "rejected": _get(rec, "reject", str, where), "subset": rec.get("subset") or label, "id": rec.get("id")}


def long_file(records: list[dict], label: str) -> tuple[list[dict], Counter]:
    """Long-RewardBench: one task file shuffled as the official preprocessing does (seed 42)."""
    from analysis.seedbench import long_shuffle

    kept = long_shuffle(records)
    dropped = Counter({"tasktype not PairWise or BestOfN": len(records) - len(kept)} if len(records) > len(kept) else {})
    return [rec | {"_index": i, "_order": order} for i, rec, order in kept], dropped


def long_rb(rec, where, cfg, label):
    turns = rec.get("prompt_template")
    if not (isinstance(turns, list) and turns and all(isinstance(t, dict) and isinstance(t.get("content"), str) for t in turns)):
        raise ValueError(f"{where}: field 'prompt_template' must be a non-empty list of {{role, content}} messages")
    best_of_n = rec.get("tasktype") == "BestOfN"
    answers = _get(rec, "candidates", list, where) if best_of_n else [_get(rec, "chosen", str, where), _get(rec, "rejected", str, where)]
    return {"prompt": "\n\n".join(t["content"] for t in turns), "answers": [answers[i] for i in rec["_order"]],
            "golden": rec["_order"], "tasktype": rec.get("tasktype"), "subtype": str(rec.get("subtype")),
            "length": rec.get("ctx_length_for_length"), "subset": label, "id": rec.get("id", rec["_index"])}


def vl_rb(rec, where, cfg, label):
    """VL-RewardBench: an image, a query and two responses with the human ranking ([0, 1]: the first preferred)."""
    responses = _get(rec, "response", list, where)
    ranking = rec.get("human_ranking")
    if len(responses) != 2 or sorted(ranking or []) != [0, 1]:
        raise ValueError(f"{where}: fields 'response' and 'human_ranking' must hold 2 responses and a ranking [0, 1] or [1, 0]")
    image = rec.get("image")
    image = image.get("bytes") if isinstance(image, dict) else image
    if not isinstance(image, bytes):
        raise ValueError(f"{where}: field 'image' must hold the image's bytes (or {{'bytes': ...}})")
    return {"prompt": _get(rec, "query", str, where), "responses": responses, "human_ranking": list(ranking),
            "image": image, "id": str(_get(rec, "id", None, where)), "subset": rec.get("query_source", cfg.name)}


ADAPTERS = {"rb1": ("pairs", rb1), "rb2": ("v2", rb2), "one_vs_many": ("one_vs_many", one_vs_many),
            "rm_bench": ("rm_bench", rm_bench), "gsm8k_1vn": ("one_vs_many", gsm8k_1vn),
            "gsm8k_bo4": ("bon", gsm8k_bo4), "hh": ("pairs", hh_pairs), "mrb": ("mrb", mrb), "rag": ("rag", rag),
            "long_rb": ("long", long_rb), "vl_rb": ("vl", vl_rb)}
PER_FILE = {"long_rb": long_file}  # formats whose rows depend on the whole file (an order drawn per file)


def resolve_path(path: str, zoo_dir: Path | None) -> str:
    """`zoo:<file>`: a file of the world zoo's data dir; relative paths: from the repository."""
    if path.startswith("zoo:"):
        if zoo_dir is None:
            raise ValueError(f"bench path {path!r} needs the world zoo")
        return str(zoo_dir / "data" / path[4:])
    return path if os.path.isabs(path) else str(REPO / path)


DATA_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet")


def expand(path: str) -> list[str]:
    """A file, or a directory's data files in name order (one per task or scenario: Long-RewardBench's
    Cite.jsonl ..., RAG-RewardBench's abstain.jsonl ...)."""
    if not os.path.isdir(path):
        return [path]
    files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(DATA_SUFFIXES))
    if not files:
        raise ValueError(f"benchmark directory {path!r} holds no {', '.join(DATA_SUFFIXES)} files")
    return files


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
        files = [f for p in paths for f in expand(resolve_path(p, zoo_dir))]
        parts = [(src, os.path.basename(src).split(".")[0], read_records(src)) for src in files]
    elif cfg.get("hf"):
        parts = hf_parts(cfg)
    else:
        raise ValueError(f"benchmark {cfg.name!r}: set bench.path (a local file) or bench.hf.name and bench.hf.split")
    sources = [src for src, _, _ in parts]
    rows, dropped, read = [], Counter(), sum(len(recs) for _, _, recs in parts)
    for src, label, recs in parts:
        for i, rec in enumerate(recs):
            if not isinstance(rec, dict):
                raise ValueError(f"{src}: row {i}: expected a JSON object, got {type(rec).__name__}")
        if cfg.format in PER_FILE:
            recs, lost = PER_FILE[cfg.format](recs, label)
            dropped += lost
        for i, rec in enumerate(recs):
            where = f"{src}: row {rec.get('_index', i)}"
            try:
                row = adapt(rec, where, cfg, label)
            except Drop as d:
                dropped[str(d)] += 1
                continue
            if cfg.get("split") and in_split(row["prompt"], cfg) != cfg.split:
                dropped[f"in the {'train' if cfg.split == 'test' else 'test'} split (bench.split)"] += 1
                continue
            if row.get("id") is None:
                row["id"] = len(rows)
            rows.append(row)
    missing = sorted(set(cfg.get("languages") or []) - {r.get("language") for r in rows})
    if missing:
        raise ValueError(f"benchmark {cfg.name!r}: bench.languages names {', '.join(missing)} but {', '.join(sources)} "
                         f"has no rows in {'it' if len(missing) == 1 else 'them'}")
    if not rows:
        raise ValueError(f"benchmark {cfg.name!r}: no usable rows in {', '.join(sources)}")
    if cfg.get("limit") and cfg.limit < len(rows):
        keep = sorted(random.Random(cfg.get("seed", 0)).sample(range(len(rows)), cfg.limit))
        rows = [rows[i] for i in keep]
    return Bench(cfg.name, kind, rows, ", ".join(sources), read, dropped)
