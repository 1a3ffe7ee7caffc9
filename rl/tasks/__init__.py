"""Tasks (`task=` group): where a run's prompts, reference answers and default gold come from.

The contract, one module per task under rl/tasks/ (a world's own task lives with its world:
worlds/arith/task.py) and one YAML under conf/task/, plus its line in TASKS below:

    make(cfg) -> a task object with
      name: str
      items(split, n, seed, distinct=True) -> list[Item]
          `split` is train | eval | bench (disjoint); the same (split, n, seed) gives the same items,
          so a resumed run replays its data. distinct=False draws with replacement (training).
      verifier: dict | None        the reward config `reward=rule` means on this task
      default_gold: dict           the reward config `gold=task` means on this task
      dropped: dict[str, int]      rows skipped while loading, by reason (reported in the summary)

Every reward source's `score(prompts, responses, items=...)` may take the items (a verifier needs
the reference answer, a reference-based reward any column it names); sources that do not take
them are called as before.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

SPLITS = ("train", "eval", "bench")
TASKS = {"arith": "worlds.arith.task", "smol_arith": "worlds.smol.task", "smol_mixed": "worlds.smol.mixed", "gsm8k": "rl.tasks.gsm8k", "math500": "rl.tasks.math500",
         "prompts": "rl.tasks.prompts"}


@dataclass(frozen=True)
class Item:
    prompt: str | tuple  # plain text, or chat messages as a tuple of {"role", "content"} dicts
    answer: str | None = None  # the reference answer, when the task has one
    kind: str = ""  # kind / subset, for per-kind metrics
    meta: dict = field(default_factory=dict, hash=False, compare=False)  # any other column a reward needs

    @property
    def text(self) -> str:
        """The prompt as text for reward sources that read text: a chat prompt's last user message."""
        if isinstance(self.prompt, str):
            return self.prompt
        return next(m["content"] for m in reversed(self.prompt) if m["role"] == "user")

    @property
    def engine_prompt(self):
        """What the engine takes: the text, or the message list (rendered with the chat template)."""
        return self.prompt if isinstance(self.prompt, str) else [dict(m) for m in self.prompt]


def make_task(cfg):
    """The task a `task` config names (its module's `make`)."""
    name = cfg.get("name")
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r} (config key task.name); expected one of: {', '.join(TASKS)}")
    return importlib.import_module(TASKS[name]).make(cfg)


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")


def draw(pool: list[Item], split: str, n: int, seed, distinct: bool, task: str) -> list[Item]:
    """n items of a split's pool, reproducible from (split, seed): a seeded sample without
    replacement (distinct) or with it (training batches)."""
    rng = random.Random(f"{split}-{seed}")
    if not pool:
        raise ValueError(f"task {task!r} has no {split} items")
    if distinct:
        if n > len(pool):
            raise ValueError(f"task {task!r}: {n} distinct {split} items asked, the split has {len(pool)}")
        return rng.sample(pool, n)
    return [pool[rng.randrange(len(pool))] for _ in range(n)]


# ---------------------------------------------------------------- shared by the file-backed tasks
# (gsm8k, math500, prompts): shipped data, reading JSONL, hash splits, the prompt format.

REPO = Path(__file__).resolve().parent.parent.parent
DATA = REPO / "data"  # shipped with the repository: a run never reads the data mirror
FORMATS = ("chat", "plain")
MATH_VERIFIER = {"name": "math", "type": "math_verify", "extract": "auto"}
MATH_GOLD = {"name": "gold", "type": "math_verify", "extract": "auto"}


def opt(cfg, key: str, default=None):
    """A task config value as plain Python (Hydra hands DictConfig / ListConfig)."""
    value = cfg.get(key, default)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def read_jsonl(path) -> list[tuple[int, object]]:
    """(1-based line number, JSON value) for each non-blank line of a .jsonl or .jsonl.gz file."""
    path = str(path)
    if not os.path.exists(path):
        raise ValueError(f"data file {path!r} does not exist")
    out = []
    with (gzip.open if path.endswith(".gz") else open)(path, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append((i, json.loads(line)))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}: row {i} is not JSON ({e.msg})") from None
    return out


def hash_unit(text: str) -> float:
    """A number in [0, 1) from a hash of the text (stable across runs and machines)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def split_of(text: str, fractions=(0.8, 0.1, 0.1)) -> str:
    """train / eval / bench from a hash of the text: a function of the text alone, so splits are
    disjoint whatever seeds or sizes a run asks for, and a row keeps its split when a file grows."""
    u = hash_unit(text)
    if u < fractions[0]:
        return "train"
    return "eval" if u < fractions[0] + fractions[1] else "bench"


def split_exact(texts: list[str], fractions) -> list[str]:
    """Each text's split for a fixed shipped file: rows ranked by the hash of their text and cut at
    the exact fractions (per-row hashing left MATH-500 at 371 / 65 / 64, not 400 / 50 / 50)."""
    cut_train = round(fractions[0] * len(texts))
    cut_eval = cut_train + round(fractions[1] * len(texts))
    out = [""] * len(texts)
    for rank, i in enumerate(sorted(range(len(texts)), key=lambda i: hash_unit(texts[i]))):
        out[i] = "train" if rank < cut_train else ("eval" if rank < cut_eval else "bench")
    return out


def prompt_options(cfg, default_instruction: str) -> tuple[str, str]:
    """(format, instruction) of a task config, checked."""
    fmt, instruction = opt(cfg, "format", "chat"), opt(cfg, "instruction", default_instruction)
    if fmt not in FORMATS:
        raise ValueError(f"unknown prompt format {fmt!r} (config key task.format); "
                         f"expected one of: {', '.join(FORMATS)}")
    if not isinstance(instruction, str):
        raise ValueError(f"task.instruction must be a string, got {instruction!r}")
    return fmt, instruction


def format_prompt(question, fmt: str, instruction: str):
    """The item's prompt: the question (a str, or chat messages) with the instruction appended to it
    (to the last user turn of messages), as plain text or as chat messages (a str becomes a
    one-message user turn)."""
    def add(text):
        return f"{text}\n\n{instruction}" if instruction else text
    if isinstance(question, str):
        return add(question) if fmt == "plain" else ({"role": "user", "content": add(question)},)
    if fmt == "plain":
        raise ValueError("chat-message prompts need task.format=chat")
    last = max(i for i, m in enumerate(question) if m["role"] == "user")
    return tuple({"role": m["role"], "content": add(m["content"]) if i == last else m["content"]}
                 for i, m in enumerate(question))


@dataclass
class PoolTask:
    """A task whose items are drawn from fixed per-split pools (in file order, so draws replay)."""
    name: str
    pools: dict  # split -> list[Item]
    verifier: dict | None
    default_gold: dict | None
    dropped: dict = field(default_factory=dict)

    def items(self, split: str, n: int, seed, distinct: bool = True) -> list[Item]:
        check_split(split)
        return draw(self.pools[split], split, n, seed, distinct, self.name)
