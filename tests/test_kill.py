"""Killed processes: the driver (SIGKILL mid-step and mid-checkpoint, then resume=true) and each
actor (the run stops at once with one error naming it). Small world, few steps, the HF engine
(what is tested is the loop's bookkeeping, not the engine)."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from policies.actor import ActorDiedError
from rl.cluster import shutdown_ray
from rl.loop import run
from tests.test_config import CONF
from tests.test_loop import SMALL, config, scalars

COMMON = [*SMALL, "engine=hf", "algo.steps=6", "eval.every=3"]
KEYS = ("reward/proxy", "reward/gold", "policy/entropy", "eval/reward_gold", "sync/logprob_diff")


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    yield
    shutdown_ray()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    d = tmp_path_factory.mktemp("full")
    run(config(*COMMON, "checkpoint.every=2"), str(d))
    return d


def records(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def kill_driver_when(ready, run_dir, args, attempts=3):
    """Start `python -m rl.run` and SIGKILL it the moment `ready(run_dir)` holds; then kill what it left
    (Ray's processes). True when the kill landed with the run unfinished."""
    for _ in range(attempts):
        proc = subprocess.Popen([sys.executable, "-m", "rl.run", *args, f"hydra.run.dir={run_dir}"], cwd=CONF.parent,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        children, landed = set(), False
        try:
            deadline = time.time() + 600
            while proc.poll() is None and time.time() < deadline:
                children |= set(psutil.Process(proc.pid).children(recursive=True))
                if ready(run_dir):
                    os.kill(proc.pid, signal.SIGKILL)
                    landed = ready(run_dir)  # still true after the kill: it hit the moment asked for
                    break
                time.sleep(0.002)
        finally:
            proc.kill()
            proc.wait()
            for c in children:
                try:
                    c.kill()
                except psutil.NoSuchProcess:
                    pass
        if landed and not (run_dir / "summary.json").exists():
            return True
    return False


def same_as_uninterrupted(run_dir, full):
    got, want = records(run_dir), records(full)
    assert [x["step"] for x in got] == list(range(7))  # each step once, none lost
    for x, y in zip(got, want):
        for key in KEYS:
            assert x.get(key) == pytest.approx(y.get(key), abs=1e-6), (x["step"], key)
    assert scalars(run_dir)["reward/gold"] == pytest.approx(scalars(full)["reward/gold"])


def test_sigkill_mid_step_then_resume(tmp_path, uninterrupted):
    def past_checkpoint(d):  # step 2's checkpoint is written and step 3 is under way or done
        return (d / "checkpoints" / "step_000002").is_dir() and (d / "metrics.jsonl").is_file() \
            and len(records(d)) >= 3 and not (d / "checkpoints" / "step_000004").exists()

    assert kill_driver_when(past_checkpoint, tmp_path, [*COMMON, "checkpoint.every=2"])
    resumed = run(config(*COMMON, "checkpoint.every=2", "resume=true"), str(tmp_path))
    same_as_uninterrupted(tmp_path, uninterrupted)
    assert resumed["steps"] == 6
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_000004", "step_000006"]


def test_sigkill_during_a_checkpoint_save_then_resume(tmp_path, uninterrupted):
    def saving(d):  # a checkpoint after step 2 is being written
        tmp = d / "checkpoints"
        return tmp.is_dir() and any(p.name.endswith(".tmp") and p.name >= "step_000003" for p in tmp.iterdir())

    assert kill_driver_when(saving, tmp_path, [*COMMON, "checkpoint.every=1"])
    left = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert any(n.endswith(".tmp") for n in left), left  # the unfinished save is there, and never picked:
    run(config(*COMMON, "checkpoint.every=1", "resume=true"), str(tmp_path))
    same_as_uninterrupted(tmp_path, uninterrupted)
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "checkpoints").iterdir())


def kill_actor_after_step(run_dir, proctitle, step=1):
    def kill():
        deadline = time.time() + 600
        while time.time() < deadline:
            path = run_dir / "metrics.jsonl"
            if path.is_file() and len(path.read_text().splitlines()) > step:
                # this process's own Ray (its raylet's workers): not another test process's
                for p in psutil.Process().children(recursive=True):
                    try:
                        argv = p.cmdline()
                        if argv and argv[0].startswith(f"ray::{proctitle}"):
                            p.kill()
                    except psutil.NoSuchProcess:
                        pass
                return
            time.sleep(0.01)
    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("proctitle, args, named", [
    ("_EngineActor", [], r"hf engine actor: '(generate|load_weights)'"),
    ("_RewardActor", ["reward=rm_l"], r"reward 'rm_l'"),
    ("Learner", [], r"(learner|hf engine actor: 'load_weights')"),
])
def test_a_dead_actor_stops_the_run_with_one_clear_error(tmp_path, proctitle, args, named):
    killer = kill_actor_after_step(tmp_path, proctitle)
    with pytest.raises(ActorDiedError, match=rf"{named}: a Ray actor of the run died .*{proctitle}.* resume=true"):
        run(config(*COMMON, "algo.steps=200", "eval.every=100", *args), str(tmp_path))
    killer.join(timeout=5)
