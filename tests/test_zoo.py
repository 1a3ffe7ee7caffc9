"""A reduced zoo build (world=arith_small): every artifact is built, loads and does its job."""
import json
import subprocess
import sys

import pytest

from policies import zoo
from policies.engine import Sampling, make_engine
from tests.test_arith import validate_v1, validate_v2


@pytest.fixture(scope="session")
def small_zoo():
    cache = zoo.default_cache_dir()  # the suite's throw-away cache (conftest), shared with rl.run tests
    world = zoo.world_config("arith_small")
    return world, zoo.ensure(world, cache), cache


def test_build_writes_every_artifact(small_zoo):
    world, path, _ = small_zoo
    for name in ["base", *world.rms, "cdr_strong"]:
        assert (path / name / "model.safetensors").is_file() and (path / name / "tokenizer.json").is_file()
    assert (path / "judge" / "adapter_model.safetensors").is_file()
    assert not (path / "judge" / "model.safetensors").exists()  # an adapter, not a merged model
    validate_v1(zoo.read_jsonl(path / "data" / "bench_v1.jsonl"))
    validate_v2(zoo.read_jsonl(path / "data" / "bench_v2.jsonl"))
    assert not list(path.parent.glob(".building-*"))  # nothing half-written left behind


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
    sources = zoo.reward_sources(path, world)
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
    out = subprocess.run([sys.executable, "-m", "policies.zoo", "info", "--world", "arith_small", "--json",
                          "--cache-dir", str(cache)], capture_output=True, text=True, check=True)
    info = json.loads(out.stdout)
    assert set(info["static_accuracy"]) == {"gold", *world.rms, "judge", "cdr"}
    assert info["static_accuracy"]["gold"] == 1.0


def test_info_cli_unbuilt_world_is_clear(tmp_path):
    out = subprocess.run([sys.executable, "-m", "policies.zoo", "info", "--world", "arith_small", "--cache-dir",
                          str(tmp_path)], capture_output=True, text=True)
    assert out.returncode != 0 and "is not built" in out.stderr and "policies.zoo build" in out.stderr
