"""Any prompt set: JSONL (.jsonl / .jsonl.gz), JSON-list (.json) or parquet files (`task.path`, one
or a list), or a Hugging Face dataset (`task.hf_name`, through the `datasets` library).

Columns: `prompt_key` (a str, or a list of {"role", "content"} chat messages), optional
`answer_key` (the reference, a str or a number), `kind_key`, and `meta_keys` copied into
Item.meta. Splits: the `split_key` column (train / eval / bench) when given, else a per-row hash
of the prompt (before the instruction is added, so changing it never moves a row) with
`split_fractions`. A bad row is a ValueError naming the file, the row (1-based; the line for JSONL)
and the field, or with `on_bad_row: skip` is dropped and counted by reason. A prompt seen before
is always dropped (counted as "duplicate_prompt"): one prompt in two splits would break their
disjointness, and a distinct draw could repeat it.
"""
from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

from rl.tasks import REPO, SPLITS, Item, PoolTask, format_prompt, opt, prompt_options, read_jsonl, split_of

ROLES = ("system", "user", "assistant")


class BadRow(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def make(cfg) -> PoolTask:
    fmt, instruction = prompt_options(cfg, "")
    keys = {k: opt(cfg, k, d) for k, d in (("prompt_key", "prompt"), ("answer_key", None), ("kind_key", None),
                                           ("split_key", None))}
    meta_keys = list(opt(cfg, "meta_keys") or [])
    fractions = _fractions(opt(cfg, "split_fractions", [0.8, 0.1, 0.1]))
    on_bad_row = opt(cfg, "on_bad_row", "error")
    if on_bad_row not in ("error", "skip"):
        raise ValueError(f"unknown task.on_bad_row {on_bad_row!r}; expected error or skip")
    pools, dropped, seen = {s: [] for s in SPLITS}, Counter(), set()
    sources = _sources(cfg)
    for where, rows in sources:
        for row, rec in rows:
            try:
                prompt, key, answer, kind, meta, split = _parse(rec, keys, meta_keys)
            except BadRow as e:
                if on_bad_row == "error":
                    raise ValueError(f"{where}: row {row}: {e}") from None
                dropped[e.reason] += 1
                continue
            if key in seen:
                dropped["duplicate_prompt"] += 1
                continue
            seen.add(key)
            if fmt == "plain" and not isinstance(prompt, str):
                raise ValueError(f"{where}: row {row}: field {keys['prompt_key']!r} holds chat messages; "
                                 f"task.format=plain needs text prompts (use task.format=chat)")
            item = Item(format_prompt(prompt, fmt, instruction), answer, kind, meta)
            pools[split or split_of(key, fractions)].append(item)
    if not seen:
        raise ValueError(f"task prompts: no usable rows in {', '.join(w for w, _ in sources)} "
                         f"(dropped: {dict(dropped)})")
    return PoolTask("prompts", pools, opt(cfg, "verifier"), opt(cfg, "default_gold"), dict(dropped))


def _parse(rec, keys: dict, meta_keys: list):
    """(prompt, its hash/dedup key, answer, kind, meta, split or None) of one record, or BadRow."""
    if not isinstance(rec, dict):
        raise BadRow("not_object", f"not an object (a {type(rec).__name__})")
    pk = keys["prompt_key"]
    prompt = rec.get(pk)
    if prompt is None:
        raise BadRow("prompt_missing", f"field {pk!r} is missing (task.prompt_key)")
    if isinstance(prompt, list) and not prompt:
        raise BadRow("prompt_empty", f"field {pk!r} is empty")
    if isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt):
        if any(m.get("role") not in ROLES or not isinstance(m.get("content"), str) for m in prompt) \
                or not any(m["role"] == "user" for m in prompt):
            raise BadRow("prompt_type", f"field {pk!r}: chat messages need a str role ({', '.join(ROLES)}), "
                                        f"str content and at least one user turn")
        prompt = [{"role": m["role"], "content": m["content"]} for m in prompt]
        key = json.dumps(prompt, ensure_ascii=False)
        empty = not any(m["content"].strip() for m in prompt)
    elif isinstance(prompt, str):
        key, empty = prompt, not prompt.strip()
    else:
        raise BadRow("prompt_type", f"field {pk!r} is not a str or a list of chat messages (a {type(prompt).__name__})")
    if empty:
        raise BadRow("prompt_empty", f"field {pk!r} is empty")
    answer = None
    if keys["answer_key"] is not None:
        ak = keys["answer_key"]
        answer = rec.get(ak)
        if answer is None or answer == "":
            raise BadRow("answer_missing", f"field {ak!r} is missing or empty (task.answer_key)")
        if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
            raise BadRow("answer_type", f"field {ak!r} is not a str or a number (a {type(answer).__name__})")
        # integral floats (parquet / pandas turn int columns with nulls into floats) read as ints
        answer = str(int(answer)) if isinstance(answer, float) and answer.is_integer() else str(answer)
    kind = ""
    if keys["kind_key"] is not None:
        if rec.get(keys["kind_key"]) is None:
            raise BadRow("kind_missing", f"field {keys['kind_key']!r} is missing (task.kind_key)")
        kind = str(rec[keys["kind_key"]])
    for k in meta_keys:
        if k not in rec:
            raise BadRow("meta_missing", f"field {k!r} is missing (task.meta_keys)")
    split = None
    if keys["split_key"] is not None:
        split = rec.get(keys["split_key"])
        if split not in SPLITS:
            raise BadRow("split_value", f"field {keys['split_key']!r} is {split!r}, expected one of "
                                        f"{', '.join(SPLITS)} (task.split_key)")
    return prompt, key, answer, kind, {k: rec[k] for k in meta_keys}, split


def _fractions(fractions) -> tuple:
    if (not isinstance(fractions, (list, tuple)) or len(fractions) != 3
            or any(isinstance(f, bool) or not isinstance(f, (int, float)) or f < 0 for f in fractions)
            or abs(sum(fractions) - 1) > 1e-6):
        raise ValueError(f"task.split_fractions must be 3 non-negative numbers (train, eval, bench) summing to 1, "
                         f"got {fractions!r}")
    return tuple(fractions)


def _sources(cfg) -> list[tuple[str, list]]:
    """(name for messages, [(1-based row, record)]) per file or dataset."""
    path, hf_name = opt(cfg, "path"), opt(cfg, "hf_name")
    if (path is None) == (hf_name is None):
        raise ValueError("task=prompts needs exactly one of task.path (a file or a list of files) "
                         "and task.hf_name (a Hugging Face dataset)")
    if hf_name is not None:
        split = opt(cfg, "hf_split", "train")
        return [(f"Hugging Face dataset {hf_name!r} split {split!r}",
                 list(enumerate(_read_hf(hf_name, opt(cfg, "hf_config"), split), 1)))]
    paths = [path] if isinstance(path, str) else path
    if not paths:
        raise ValueError("task.path is empty")
    return [(str(p), _read_file(_resolve(p))) for p in paths]


def _resolve(path: str) -> str:
    """A relative path is looked up from the working directory, then from the repository root."""
    for p in (Path(path).expanduser(), REPO / path):
        if p.exists():
            return str(p)
    raise ValueError(f"task.path: file {path!r} does not exist (a relative path is looked up from the working "
                     f"directory, then from the repository root)")


def _read_file(path: str) -> list:
    if path.endswith((".jsonl", ".jsonl.gz")):
        return read_jsonl(path)
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq
        return list(enumerate(pq.read_table(path).to_pylist(), 1))
    if path.endswith((".json", ".json.gz")):
        with (gzip.open if path.endswith(".gz") else open)(path, "rt", encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: not JSON ({e.msg}, line {e.lineno})") from None
        if not isinstance(data, list):
            raise ValueError(f"{path}: a .json file must hold a list of records (task.path)")
        return list(enumerate(data, 1))
    raise ValueError(f"task.path: {path!r} is not .jsonl, .jsonl.gz, .json, .json.gz or .parquet")


def _read_hf(name: str, config, split: str) -> list:
    try:
        import datasets
    except ImportError:
        raise ValueError(f"task.hf_name={name!r} needs the `datasets` library (pip install datasets); or save the "
                         f"dataset as JSONL / parquet and set task.path") from None
    try:
        return list(datasets.load_dataset(name, config, split=split))
    except Exception as e:  # offline machines fail deep inside datasets / the hub with many error types
        raise ValueError(f"cannot load Hugging Face dataset {name!r} (task.hf_name) split {split!r}: "
                         f"{type(e).__name__}: {e}. This machine may be offline: download it elsewhere, save it "
                         f"as JSONL or parquet and set task.path") from None
