"""Resolve `policy.*` to a local HF model directory, building random models on first use."""
from __future__ import annotations

import hashlib
import inspect
import os
import shutil
import tempfile
from pathlib import Path

from policies.engine import EngineError, check_model_dir


def resolve_policy(cfg, cache_dir: str, world=None) -> str:
    """`policy.source`: `path` (a local HF directory), `zoo` (an artifact of the world's zoo, or of
    `policy.world`'s when set, built on first need) or `random` (a randomly initialised shape, built on first need)."""
    if cfg.source == "path":
        return str(check_model_dir(cfg.path, "policy.path"))
    if cfg.source == "random":
        from policies import tiny

        # Keyed by the builder's source too: a changed tokenizer or shape must not reuse an old build.
        key = hashlib.sha256(f"{cfg.shape}|{cfg.seed}|{inspect.getsource(tiny)}".encode()).hexdigest()[:12]
        target = Path(cache_dir) / "random" / f"{cfg.shape}-seed{cfg.seed}-{key}"
        if not (target / "config.json").is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".building-"))
            try:  # build aside, then rename: a crash leaves no half-written model behind
                tiny.random_model(tmp, cfg.shape, cfg.seed)
                if not target.exists():  # another process may have finished first
                    os.replace(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return str(target)
    if cfg.source == "zoo":
        from worlds import zoo

        world = policy_world(cfg, world)
        if world is None:
            raise EngineError("policy.source=zoo needs a world config (config group `world`)")
        try:
            path = zoo.ensure(world, cache_dir, [cfg.artifact]) / cfg.artifact
        except ValueError as e:
            raise EngineError(f"policy.artifact: {e}") from None
        return str(check_model_dir(path, "policy.artifact"))
    raise EngineError(f"unknown policy source {cfg.source!r} (config key policy.source); expected 'path', 'zoo' or 'random'")


def policy_world(cfg, world):
    """The world whose zoo a `source: zoo` policy comes from: `policy.world` when it names one (a
    real-model policy such as smollm2_135m works with any task), else the run's world."""
    name = cfg.get("world")
    if not name or (world is not None and world.name == name):
        return world
    from worlds import zoo

    return zoo.world_config(name)
