"""A reduced zoo build (world=arith_small): every artifact is built, loads and does its job; a run
builds only the artifacts it reads, and an artifact built alone is the one a full build makes."""
import hashlib
import json
import subprocess
import sys

import pytest

from worlds import zoo
from worlds.arith import zoo as recipe
from policies.engine import Sampling, make_engine
from tests.test_arith import validate_v1, validate_v2


@pytest.fixture(scope="session")
def small_zoo():
    cache = zoo.default_cache_dir()  # the suite's own cache (conftest), shared with rl.run tests
    world = zoo.world_config("arith_small")
    return world, zoo.ensure(world, cache), cache


def test_build_writes_every_artifact(small_zoo):
    world, path, _ = small_zoo
    for name in ["base", *world.rms, "cdr_strong", "referee"]:
        assert (path / name / "model.safetensors").is_file() and (path / name / "tokenizer.json").is_file()
    assert (path / "judge" / "adapter_model.safetensors").is_file()
    # arith_small's referee: parse_target 0, so exactly its 20 steps and no check
    assert json.loads((path / "referee" / "referee.json").read_text()) == {"sft_steps": 20, "checks": []}
    assert not (path / "judge" / "model.safetensors").exists()  # an adapter, not a merged model
    validate_v1(recipe.read_jsonl(path / "data" / "bench_v1.jsonl"))
    validate_v2(recipe.read_jsonl(path / "data" / "bench_v2.jsonl"))
    assert not list(path.glob(".building-*"))  # nothing half-written left behind


def test_same_config_same_key_and_no_rebuild(small_zoo):
    world, path, cache = small_zoo
    mtime = (path / "info.json").stat().st_mtime
    assert zoo.ensure(world, str(cache)) == path and (path / "info.json").stat().st_mtime == mtime
    changed = zoo.world_config("arith_small", ["base.steps=61"])
    assert zoo.zoo_dir(changed, str(cache)) != path


@pytest.mark.parametrize("engine", ["hf", "vllm"])
def test_base_policy_loads_in_both_engines(small_zoo, engine):
    _, path, _ = small_zoo
    e = make_engine(engine, str(path / "base"))
    rs = e.generate(["Q:12+34=", "W:abcd="], Sampling(n=2, max_tokens=16, seed=0))
    assert len(rs) == 4 and all(r.completion_ids for r in rs)
    e.close()


def test_reward_sources_score(small_zoo):
    world, path, _ = small_zoo
    sources = recipe.reward_sources(path, world)
    assert set(sources) == {"gold", *world.rms, "judge", "cdr"}
    prompts, responses = ["Q:12+34=", "Q:12+34=", "W:abcd="], ["46", "47 ok ok", "dcba"]
    for name, src in sources.items():
        s = src.score(prompts, responses)
        assert len(s) == 3 and all(isinstance(x, float) and x == x for x in s), name
    judge = sources["judge"]
    assert any("lora_A" in n for n, _ in judge.model.named_parameters())
    assert all(0.0 <= x <= 1.0 for x in judge.score(prompts, responses))
    # CDR is a log-ratio: a response scored against itself (strong == weak) is exactly 0.
    from rewards.cdr import CDR
    same = CDR(str(path / "base"), str(path / "base"))
    assert same.score(prompts, responses) == [0.0, 0.0, 0.0]


def test_info_cli_json(small_zoo):
    world, path, cache = small_zoo
    out = subprocess.run([sys.executable, "-m", "worlds.zoo", "info", "--world", "arith_small", "--json",
                          "--cache-dir", str(cache)], capture_output=True, text=True, check=True)
    info = json.loads(out.stdout)
    assert set(info["static_accuracy"]) == {"gold", *world.rms, "judge", "cdr"}
    assert info["static_accuracy"]["gold"] == 1.0


def test_info_cli_unbuilt_world_is_clear(tmp_path):
    out = subprocess.run([sys.executable, "-m", "worlds.zoo", "info", "--world", "arith_small", "--cache-dir",
                          str(tmp_path)], capture_output=True, text=True)
    assert out.returncode != 0 and "is not built" in out.stderr and "worlds.zoo build" in out.stderr


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_only_the_artifacts_asked_for_are_built_and_equal_the_full_builds(small_zoo, tmp_path):
    """cdr_strong needs base, nothing else; rm_s built after them (not after rm_xs as in a full build)
    is still bit-identical to the full build's: every artifact starts from the same seed."""
    world, full, _ = small_zoo
    path = zoo.ensure(world, str(tmp_path), ["cdr_strong"])
    assert sorted(p.name for p in path.iterdir()) == ["base", "cdr_strong"]
    zoo.ensure(world, str(tmp_path), ["rm_s"])
    assert sorted(p.name for p in path.iterdir()) == ["base", "cdr_strong", "rm_s"]
    for name in ("base", "cdr_strong", "rm_s"):
        assert _digest(path / name / "model.safetensors") == _digest(full / name / "model.safetensors"), name
    out = subprocess.run([sys.executable, "-m", "worlds.zoo", "info", "--world", "arith_small", "--cache-dir",
                          str(tmp_path)], capture_output=True, text=True)
    assert out.returncode != 0 and "artifacts built: base, rm_s, cdr_strong" in out.stderr


def test_an_unknown_artifact_is_named(tmp_path):
    world = zoo.world_config("arith_small")
    with pytest.raises(ValueError, match="world 'arith_small' has no zoo artifact 'rm_xxl'; it has: base, data, rm_xs"):
        zoo.ensure(world, str(tmp_path), ["rm_xxl"])
    assert not (tmp_path / "zoo").exists() or not any((tmp_path / "zoo").rglob("*.safetensors"))


def test_a_second_builder_waits_for_the_first_and_builds_nothing(tmp_path):
    """While this process holds the zoo's build lock, `build --only data` in another process waits;
    once the artifact is built here and the lock let go, the waiter finds it and builds nothing."""
    import fcntl
    import os

    world = zoo.world_config("arith_small")
    root = zoo.zoo_dir(world, str(tmp_path))
    root.mkdir(parents=True)
    env = os.environ | {"PYTHONPATH": str(zoo.CONF.parent)}
    with open(root.with_name(root.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = subprocess.Popen([sys.executable, "-m", "worlds.zoo", "build", "--world", "arith_small", "--only", "data",
                                 "--cache-dir", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)
        err = []
        for line in proc.stderr:
            err.append(line)
            if "zoo: waiting for another process building" in line:
                break
        assert err and "waiting" in err[-1], "".join(err)[-2000:]
        zoo._build(world, root, ["data"])
        made = (root / "data" / "build.json").stat().st_mtime_ns
    out, rest = proc.communicate(timeout=300)
    assert proc.returncode == 0, rest[-2000:]
    assert f"zoo: {root} (built: data)" in out and "zoo arith_small: data" not in out, out
    assert (root / "data" / "build.json").stat().st_mtime_ns == made
