"""Reward sources by config (`reward=` and `gold=` groups).

Types: rm, lora_judge, pnp_judge (the plug-and-play judge of a real instruct LM), cdr, referee (ranks; pairwise `compare` only, no pointwise score), arith_rule, math_verify, length, arith_gold, combination; and three that a run
resolves against its task (`resolve`): `rule` = the task's own verifier, `task` = the task's default
gold, `gold` = the run's gold (reward=gold optimises it). With no task (the static harness) they
mean the arith world's verifier and gold, as before tasks were config.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

TYPES = ("rm", "lora_judge", "pnp_judge", "cdr", "referee", "arith_rule", "math_verify", "length", "arith_gold", "combination", "rule", "task", "gold")
ZOO_FIELDS = {"rm": [("artifact", "path")], "referee": [("artifact", "path")], "lora_judge": [("base_artifact", "base_path"), ("adapter_artifact", "adapter_path")],
              "cdr": [("strong_artifact", "strong_path"), ("weak_artifact", "weak_path")],
              "pnp_judge": [("base_artifact", "base_path"), ("adapter_artifact", "adapter_path"), ("demos_artifact", "demos_path")]}
OPTIONAL = {"adapter_artifact", "demos_artifact"}  # a model part a source may go without (both keys null)
ARITH = {"rule": {"type": "arith_rule"}, "task": {"name": "gold", "type": "arith_gold"}, "gold": {"name": "gold", "type": "arith_gold"}}


def resolve(cfg, task=None, gold=None):
    """`cfg` with the task-relative types replaced by concrete ones (keys the user set, such as
    name or unverifiable, are kept); parts of a combination too. `gold` is the run's gold config."""
    kind = cfg.get("type")
    if kind == "combination":
        out = OmegaConf.create(OmegaConf.to_container(cfg))
        out.parts = [resolve(part, task, gold) for part in cfg.parts]
        return out
    if kind == "gold" and gold is not None:
        return resolve(gold, task)
    if kind in ("rule", "task", "gold"):
        if task is None:
            base = ARITH[kind]
        else:
            base = task.verifier if kind == "rule" else task.default_gold
            if base is None:
                raise ValueError(f"task {task.name!r} has no reference answers, so no verifier "
                                 f"({'reward=rule' if kind == 'rule' else 'gold=task'} needs one): set task.answer_key, "
                                 "or choose another reward / gold (e.g. gold=rm gold.path=<RM>)")
        own = {k: v for k, v in OmegaConf.to_container(cfg).items() if k != "type"}
        return OmegaConf.merge(base, own)
    return cfg


def zoo_artifacts(cfg) -> list[str]:
    """The world zoo's artifacts a (resolved) source reads: each model field left to the zoo (its
    *_artifact set, its *_path not). Empty: the source builds nothing."""
    if cfg.get("type") == "combination":
        return [a for p in cfg.parts for a in zoo_artifacts(p)]
    return [cfg[key] for key, field in ZOO_FIELDS.get(cfg.get("type"), []) if cfg.get(key) and not cfg.get(field)]


def artifact_path(cfg, key: str, zoo_dir: Path | None, field: str = "path", group: str = "reward") -> str:
    """A model path: `cfg.<field>` if given, else the world zoo's artifact `cfg.<key>`."""
    if cfg.get(field):
        path = Path(cfg[field])
    elif cfg.get(key) and zoo_dir is not None:
        path = zoo_dir / cfg[key]
    else:
        raise ValueError(f"{group} {cfg.get('name')!r}: set {group}.{field} (a local model directory) or "
                         f"{group}.{key} (an artifact of the world zoo)")
    if not path.exists():
        raise ValueError(f"{group} {cfg.get('name')!r}: model path {str(path)!r} (config key {group}.{field}) does not exist")
    return str(path)


def check_source(cfg, zoo_dir: Path | None = None, group: str = "reward", zoo: bool = True) -> None:
    """Validate a `reward` / `gold` config (type, model paths) without loading any model;
    `zoo=False`: before the zoo is built (paths one set must exist; zoo artifacts are not looked at)."""
    kind = cfg.get("type")
    if kind not in TYPES:
        raise ValueError(f"unknown reward type {kind!r} (config key {group}.type); expected one of: {', '.join(TYPES)}")
    for key, field in ZOO_FIELDS.get(kind, []):
        if key in OPTIONAL and not cfg.get(key) and not cfg.get(field):
            continue
        if zoo or cfg.get(field) or not cfg.get(key):
            artifact_path(cfg, key, zoo_dir, field, group)
    for part in cfg.get("parts", []) if kind == "combination" else []:
        check_source(part, zoo_dir, group, zoo)


def check_world(cfg, world: str, group: str = "reward") -> None:
    """A source that names its world (`world:`, e.g. the smol world's judge) reads that world's zoo:
    the run or evaluation must be in it."""
    if cfg.get("type") == "combination":
        for part in cfg.parts:
            check_world(part, world, group)
    elif cfg.get("world") and cfg.world != world:
        raise ValueError(f"{group} {cfg.get('name')!r} reads the {cfg.world!r} world's zoo ({group}.world): add "
                         f"world={cfg.world} (this is world={world})")


def make_source(cfg, zoo_dir: Path | None = None):
    """Build the reward source a `reward` config describes (inside whichever process calls it);
    a run resolves task-relative types first (`resolve`), anything else means the arith world's."""
    cfg = resolve(cfg)
    check_source(cfg, zoo_dir)
    kind = cfg.get("type")
    if kind == "rm":
        from rewards.rm import RewardModel
        return RewardModel(artifact_path(cfg, "artifact", zoo_dir), cfg.name, cfg.get("batch_size", 64),
                           cfg.get("template", "plain"))
    if kind == "lora_judge":
        from rewards.judge import LoRAJudge
        return LoRAJudge(artifact_path(cfg, "base_artifact", zoo_dir, "base_path"),
                         artifact_path(cfg, "adapter_artifact", zoo_dir, "adapter_path"), cfg.name, cfg.get("batch_size", 64))
    if kind == "pnp_judge":
        from rewards.pnp_judge import PnPJudge
        adapter = demos = None
        if cfg.get("adapter_artifact") or cfg.get("adapter_path"):
            adapter = artifact_path(cfg, "adapter_artifact", zoo_dir, "adapter_path")
        if cfg.get("demos_artifact") or cfg.get("demos_path"):
            demos = read_demos(artifact_path(cfg, "demos_artifact", zoo_dir, "demos_path"), cfg.name)
        caps = cfg.get("max_chars") or {}
        return PnPJudge(artifact_path(cfg, "base_artifact", zoo_dir, "base_path"), adapter, demos, cfg.get("shots", 0),
                        cfg.name, cfg.get("batch_size", 8), caps.get("prompt"), caps.get("response"))
    if kind == "cdr":
        from rewards.cdr import CDR
        return CDR(artifact_path(cfg, "strong_artifact", zoo_dir, "strong_path"),
                   artifact_path(cfg, "weak_artifact", zoo_dir, "weak_path"), cfg.name, cfg.get("length_norm", "sum"),
                   cfg.get("template", "{prompt}"), cfg.get("batch_size", 64), cfg.get("strong_template"))
    if kind == "referee":
        from policies.hf_engine import HFEngine
        from rewards.referee import LiveReferee
        return LiveReferee(HFEngine(artifact_path(cfg, "artifact", zoo_dir)), cfg.template, cfg.item, 1, 0.0,
                           cfg.get("max_tokens", 16), cfg.get("max_candidate_chars"), cfg.name)
    if kind == "arith_rule":
        from worlds.arith.gold import ArithVerifier
        return ArithVerifier(cfg.name, cfg.get("unverifiable", 0.0))
    if kind == "math_verify":
        from rewards.math_verify import MathVerifier
        return MathVerifier(cfg.name, cfg.get("extract", "auto"), cfg.get("unverifiable", 0.0))
    if kind == "length":
        from rewards.rule import Length
        return Length(cfg.name, cfg.get("unit", "chars"))
    if kind == "arith_gold":
        from worlds.arith.gold import Gold
        return Gold()
    if kind == "combination":
        return Combination(cfg.name, [(make_source(part, zoo_dir), part.weight) for part in cfg.parts])


def read_demos(path: str, name: str) -> list[dict]:
    """Demonstration pairs: a JSONL file of {prompt, chosen, rejected}, or a directory holding demos.jsonl."""
    import json

    file = Path(path) / "demos.jsonl" if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise ValueError(f"reward {name!r}: no demonstrations file {str(file)!r} (config key reward.demos_path)")
    out = []
    for i, line in enumerate(file.read_text().splitlines()):
        if line.strip():
            rec = json.loads(line)
            if not all(isinstance(rec.get(k), str) for k in ("prompt", "chosen", "rejected")):
                raise ValueError(f"{file}: line {i + 1} needs string fields prompt, chosen, rejected")
            out.append(rec)
    return out


class Combination:
    """A weighted sum of reward sources."""

    def __init__(self, name: str, parts: list):
        self.name, self.parts = name, parts

    def score(self, prompts: list[str], responses: list[str], items=None) -> list[float]:
        total = [0.0] * len(prompts)
        for source, weight in self.parts:
            for i, s in enumerate(call_score(source, prompts, responses, items)):
                total[i] += weight * s
        return total


def call_score(source, prompts: list[str], responses: list[str], items=None) -> list[float]:
    """`source.score`, given the task's items when it takes them (verifiers, reference-based rewards)."""
    import inspect

    if items is not None and "items" in inspect.signature(source.score).parameters:
        return source.score(prompts, responses, items=items)
    return source.score(prompts, responses)
