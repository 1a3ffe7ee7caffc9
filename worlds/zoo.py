"""A world's model zoo, built locally on CPU artifact by artifact and cached by content hash.

    python -m worlds.zoo build [--world arith|arith_small] [--only base,cdr_strong] [key=value ...]
    python -m worlds.zoo info  [--world ...] [--json]
    python -m worlds.zoo path  [--world ...]

A world config (conf/world/<name>.yaml) names its recipe module (`recipe:`), which lists the
artifacts (`artifacts(world)`: name -> (artifacts it needs, builder)), the modules whose code the
cache key hashes (`SOURCES`) and the report `info` prints (`report(world, zoo)`). A run builds only
the artifacts it reads (the default run: the base policy and the CDR pair); `build` without
`--only` builds every artifact and the report. Each artifact starts from the same torch seed, so it
is the same whether built alone or with the others, and is written aside and renamed into place:
a build that is stopped leaves no half-written artifact behind. One process builds a zoo at a time
(a lock file beside it); another that needs it meanwhile waits, then builds only what is missing.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib
import inspect
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONF = Path(__file__).resolve().parent.parent / "conf"
REPORT = "info.json"


def world_config(name: str = "arith", overrides: list[str] | None = None) -> DictConfig:
    """The `world` group of the Hydra tree, composed as `python -m rl.run world=NAME` would."""
    if not (CONF / "world" / f"{name}.yaml").is_file():
        have = sorted(p.stem for p in (CONF / "world").glob("*.yaml"))
        raise ValueError(f"unknown world {name!r}; expected one of: {', '.join(have)}")
    return compose("config", [f"world={name}"] + [f"world.{o}" for o in overrides or []]).world


def compose(config: str, overrides: list[str]) -> DictConfig:
    """conf/<config>.yaml composed with `overrides`, inside a Hydra app (whose search path is conf/) or not."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return hydra_compose(config, overrides=overrides)
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return hydra_compose(config, overrides=overrides)


def default_cache_dir() -> str:
    return os.environ.get("RLHF_TESTBED_CACHE", os.path.expanduser("~/.cache/rlhf-testbed"))


def recipe(world: DictConfig):
    return importlib.import_module(world.recipe)


def zoo_key(world: DictConfig) -> str:
    h = hashlib.sha256(OmegaConf.to_yaml(world, resolve=True).encode())
    for name in (__name__, *recipe(world).SOURCES):
        h.update(inspect.getsource(importlib.import_module(name)).encode())
    return h.hexdigest()[:12]


def zoo_dir(world: DictConfig, cache_dir: str | None = None) -> Path:
    return Path(cache_dir or default_cache_dir()) / "zoo" / f"{world.name}-{zoo_key(world)}"


def built(world: DictConfig, cache_dir: str | None = None) -> list[str]:
    root = zoo_dir(world, cache_dir)
    return [name for name in recipe(world).artifacts(world) if (root / name).is_dir()]


def plan(world: DictConfig, wanted) -> list[str]:
    """`wanted` and every artifact they need, each after what it needs."""
    arts, order = recipe(world).artifacts(world), []

    def visit(name, via):
        if name not in arts:
            raise ValueError(f"world {world.name!r} has no zoo artifact {name!r}{via}; it has: {', '.join(arts)}")
        for dep in arts[name][0]:
            visit(dep, f" (needed by {name!r})")
        if name not in order:
            order.append(name)

    for name in wanted:
        visit(name, "")
    return order


def ensure(world: DictConfig, cache_dir: str | None = None, artifacts=None) -> Path:
    """The zoo directory for `world` with `artifacts` (and what they need) built on first need;
    `artifacts=None`: every artifact and the report (info.json)."""
    root = zoo_dir(world, cache_dir)
    order = plan(world, list(recipe(world).artifacts(world)) if artifacts is None else artifacts)
    missing = lambda: [name for name in order if not (root / name).is_dir()]  # noqa: E731
    if not missing() and (artifacts is not None or (root / REPORT).is_file()):
        return root
    # One builder per zoo: two on 2 cores would each take many times as long (their threads
    # contend), so a second process waits for the first and then builds only what is still missing.
    with _build_lock(root):
        if todo := missing():
            _build(world, root, todo)
        if artifacts is None and not (root / REPORT).is_file():
            info = {"world": world.name, "key": root.name, "stage_s": _stage_times(root, order)}
            info |= recipe(world).report(world, root)
            info["config"] = OmegaConf.to_container(world, resolve=True)
            _write_aside(root / REPORT, json.dumps(info, indent=2))
    return root


@contextlib.contextmanager
def _build_lock(root: Path):
    """An exclusive lock on `<zoo dir>.lock` (flock: released when the holder exits, even if killed)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.with_name(root.name + ".lock"), "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"zoo: waiting for another process building {root}", file=sys.stderr, flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build(world: DictConfig, root: Path, todo: list[str]) -> None:
    import torch
    from tqdm import tqdm
    from transformers.utils import logging as hf_logging

    warnings.filterwarnings("ignore")
    hf_logging.set_verbosity_error()
    logging.getLogger("datasets").setLevel(logging.ERROR)
    arts = recipe(world).artifacts(world)
    root.mkdir(parents=True, exist_ok=True)
    bar = tqdm(todo, desc=f"zoo {world.name}", unit="artifact", file=sys.stdout)
    for name in bar:
        bar.set_description(f"zoo {world.name}: {name}")
        t0 = time.time()
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".building-{name}-"))
        try:
            torch.manual_seed(world.seed)  # the same artifact whatever was built before it
            arts[name][1](world, tmp, root)
            (tmp / "build.json").write_text(json.dumps({"artifact": name, "build_s": round(time.time() - t0, 1)}))
            if not (root / name).exists():  # another process may have finished it first (identical)
                os.replace(tmp, root / name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    bar.close()


def _stage_times(root: Path, order: list[str]) -> dict:
    return {name: json.loads((root / name / "build.json").read_text())["build_s"] for name in order
            if (root / name / "build.json").is_file()}


def _write_aside(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m worlds.zoo", description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["build", "info", "path"])
    ap.add_argument("--world", default="arith", help="a config under conf/world/")
    ap.add_argument("--only", default=None, help="build: these artifacts (comma-separated) and what they need")
    ap.add_argument("--cache-dir", default=None, help="default: $RLHF_TESTBED_CACHE or ~/.cache/rlhf-testbed")
    ap.add_argument("--json", action="store_true", help="info: one JSON object")
    ap.add_argument("overrides", nargs="*", help="world config overrides, e.g. base.steps=300")
    a = ap.parse_args(argv)
    world = world_config(a.world, a.overrides)
    path = zoo_dir(world, a.cache_dir)
    if a.command == "path":
        print(path)
    elif a.command == "build" and a.only:
        try:
            ensure(world, a.cache_dir, a.only.split(","))
        except ValueError as e:
            sys.exit(f"error: {e}")
        print(f"zoo: {path} (built: {', '.join(built(world, a.cache_dir))})")
    elif a.command == "build":
        ensure(world, a.cache_dir)
        print(recipe(world).format_info(json.loads((path / REPORT).read_text())))
        print(f"zoo: {path}")
    elif not (path / REPORT).is_file():
        have = built(world, a.cache_dir)
        sys.exit(f"zoo for world {a.world!r} is not built ({path}; artifacts built: {', '.join(have) or 'none'}); "
                 f"run: python -m worlds.zoo build --world {a.world}")
    else:
        info = json.loads((path / REPORT).read_text())
        print(json.dumps(info) if a.json else recipe(world).format_info(info))


if __name__ == "__main__":
    main()
