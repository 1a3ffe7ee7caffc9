"""Run checkpoints: `<run_dir>/checkpoints/step_NNNNNN/` = the learner's part (policy, optimizer, RNG,
KL coefficient, critic) + `driver.json` (step, data position, first evaluation) + `manifest.json`
(every file's size and SHA-256, written last).

A checkpoint is written under `step_NNNNNN.tmp` and renamed when whole, so a process killed mid-save
(SIGKILL included) leaves no directory a resume would pick; the manifest catches what a rename
cannot (a file truncated or overwritten later, a copy gone wrong)."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil

MANIFEST = "manifest.json"
NAME = re.compile(r"step_\d{6}")


class CheckpointError(RuntimeError):
    pass


def listing(run_dir: str) -> list[str]:
    """The run's complete checkpoints, oldest first (an unfinished `.tmp` is not one)."""
    root = os.path.join(run_dir, "checkpoints")
    if not os.path.isdir(root):
        return []
    return sorted(os.path.join(root, d) for d in os.listdir(root) if NAME.fullmatch(d))


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _files(ckpt: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), ckpt) for d, _, fs in os.walk(ckpt) for f in fs if f != MANIFEST)


def write_manifest(ckpt: str) -> None:
    files = {rel: {"bytes": os.path.getsize(os.path.join(ckpt, rel)), "sha256": _sha256(os.path.join(ckpt, rel))}
             for rel in _files(ckpt)}
    with open(os.path.join(ckpt, MANIFEST), "w") as f:
        json.dump(files, f, indent=1)


def verify(ckpt: str) -> str | None:
    """What is wrong with a checkpoint (None: nothing). One without a manifest (written before
    manifests existed) is checked for its driver state only."""
    if not os.path.isfile(os.path.join(ckpt, "driver.json")):
        return "driver.json is missing"
    path = os.path.join(ckpt, MANIFEST)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            files = json.load(f)
    except (OSError, ValueError) as e:
        return f"{MANIFEST} is unreadable ({e})"
    for rel, want in files.items():
        full = os.path.join(ckpt, rel)
        if not os.path.isfile(full):
            return f"{rel} is missing"
        if os.path.getsize(full) != want["bytes"]:
            return f"{rel} has {os.path.getsize(full)} bytes, {want['bytes']} when saved (truncated?)"
        if _sha256(full) != want["sha256"]:
            return f"{rel} differs from what was saved (SHA-256 mismatch: corrupted)"
    return None


def resume_point(resume, run_dir: str) -> tuple[str, dict] | None:
    """`resume=true`: the newest checkpoint of the run; `resume=<checkpoint dir>`: that one. A damaged
    checkpoint is an error naming it and what is wrong, and the one to resume from instead."""
    if not resume:
        return None
    found = listing(run_dir)
    if resume is True:
        if not found:
            return None
        ckpt = found[-1]
    else:
        ckpt = str(resume)
        if not os.path.isdir(ckpt):
            raise CheckpointError(f"resume={ckpt!r}: no such checkpoint directory")
    problem = verify(ckpt)
    if problem:
        older = [c for c in found if os.path.basename(c) < os.path.basename(ckpt) and verify(c) is None]
        hint = (f"the previous checkpoint {older[-1]} is intact: resume from it with resume={older[-1]}"
                if older else "no earlier intact checkpoint: start afresh (resume=false)")
        raise CheckpointError(f"checkpoint {ckpt} is damaged: {problem}; {hint}")
    with open(os.path.join(ckpt, "driver.json")) as f:
        return ckpt, json.load(f)


def save(run_dir: str, step: int, save_learner, state: dict, keep: int) -> str:
    """`save_learner(dir)` writes the learner's part; then the driver state and the manifest; then the
    rename. A failure (disk full, ...) removes the unfinished directory and names the intact one."""
    final = os.path.join(run_dir, "checkpoints", f"step_{step:06d}")
    tmp = final + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)  # left by a process killed mid-save
    try:
        save_learner(tmp)
        with open(os.path.join(tmp, "driver.json"), "w") as f:
            json.dump(state, f)
        write_manifest(tmp)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        found = listing(run_dir)
        kept = f"the previous checkpoint {found[-1]} is intact" if found else "there is no earlier checkpoint"
        raise CheckpointError(f"saving checkpoint {final} failed: {e}; {kept}") from e
    if os.path.isdir(final):  # the same step saved again (a run resumed from an older checkpoint)
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in listing(run_dir)[:-keep]:
        shutil.rmtree(old)
    return final
