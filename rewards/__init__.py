"""Reward sources by config (`reward=` group): rm, lora_judge, cdr, rule, length, gold, combination."""
from __future__ import annotations

from pathlib import Path

TYPES = ("rm", "lora_judge", "cdr", "rule", "length", "gold", "combination")


def artifact_path(cfg, key: str, zoo_dir: Path | None, field: str = "path") -> str:
    """A model path: `cfg.<field>` if given, else the world zoo's artifact `cfg.<key>`."""
    if cfg.get(field):
        path = Path(cfg[field])
    elif cfg.get(key) and zoo_dir is not None:
        path = zoo_dir / cfg[key]
    else:
        raise ValueError(f"reward {cfg.get('name')!r}: set reward.{field} (a local model directory) or "
                         f"reward.{key} (an artifact of the world zoo)")
    if not path.exists():
        raise ValueError(f"reward {cfg.get('name')!r}: model path {str(path)!r} does not exist")
    return str(path)


def check_source(cfg, zoo_dir: Path | None = None) -> None:
    """Validate a `reward` config (type, model paths) without loading any model."""
    kind = cfg.get("type")
    if kind not in TYPES:
        raise ValueError(f"unknown reward type {kind!r} (config key reward.type); expected one of: {', '.join(TYPES)}")
    fields = {"rm": [("artifact", "path")], "lora_judge": [("base_artifact", "base_path"), ("adapter_artifact", "adapter_path")],
              "cdr": [("strong_artifact", "strong_path"), ("weak_artifact", "weak_path")]}.get(kind, [])
    for key, field in fields:
        artifact_path(cfg, key, zoo_dir, field)
    for part in cfg.get("parts", []) if kind == "combination" else []:
        check_source(part, zoo_dir)


def make_source(cfg, zoo_dir: Path | None = None):
    """Build the reward source a `reward` config describes (inside whichever process calls it)."""
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
    if kind == "cdr":
        from rewards.cdr import CDR
        return CDR(artifact_path(cfg, "strong_artifact", zoo_dir, "strong_path"),
                   artifact_path(cfg, "weak_artifact", zoo_dir, "weak_path"), cfg.name, cfg.get("length_norm", "sum"),
                   cfg.get("template", "{prompt}"), cfg.get("batch_size", 64))
    if kind == "rule":
        from rewards.rule import ArithVerifier
        return ArithVerifier(cfg.name, cfg.get("unverifiable", 0.0))
    if kind == "length":
        from rewards.rule import Length
        return Length(cfg.name, cfg.get("unit", "chars"))
    if kind == "gold":
        from rewards.gold import Gold
        return Gold()
    if kind == "combination":
        return Combination(cfg.name, [(make_source(part, zoo_dir), part.weight) for part in cfg.parts])


class Combination:
    """A weighted sum of reward sources."""

    def __init__(self, name: str, parts: list):
        self.name, self.parts = name, parts

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        total = [0.0] * len(prompts)
        for source, weight in self.parts:
            for i, s in enumerate(source.score(prompts, responses)):
                total[i] += weight * s
        return total
