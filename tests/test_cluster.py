"""Engines inside Ray actors: the same contract, a checked sync, and calls that cannot hang."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import ray
import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM

from policies.actor import EngineClient, start_engine
from policies.engine import EngineError, Sampling
from policies.sync import sync_weights
from rl.cluster import init_ray, shutdown_ray

CONF = OmegaConf.load("conf/cluster/local.yaml")


@pytest.fixture(scope="module")
def ray_local():
    init_ray(CONF)
    yield
    shutdown_ray()


@pytest.mark.parametrize("name", ["hf", "vllm"])
def test_engine_actor_generates_and_syncs(ray_local, echo_model, name):
    cfg = OmegaConf.load(f"conf/engine/{name}.yaml")
    client = start_engine(cfg, echo_model)
    try:
        rs = client.generate(["Q:123=", "Q:456="], Sampling(n=2, max_tokens=12, seed=0))
        assert [r.prompt_index for r in rs] == [0, 0, 1, 1]
        assert all(r.finish_reason == "stop" and len(r.text) == 8 for r in rs)
        policy = AutoModelForCausalLM.from_pretrained(echo_model, dtype=torch.float32)
        with torch.no_grad():
            for p in policy.parameters():
                p.mul_(1.05)
        report = sync_weights(client, policy, ["Q:111="], tolerance=cfg.sync_tolerance)
        assert report.logprob_diff_mean < 1e-5
    finally:
        client.close()


def test_a_parked_engine_is_closed_by_shutdown_ray_and_at_exit_and_leaves_no_file(echo_model, tmp_path):
    """vLLM's engine meets itself through a file in the temp dir (`vllm_dist_<id>`) that only its close
    removes; an engine parked for a next run (rl/warm.py) and killed with Ray (`ray.shutdown()`, or Ray's
    own handler at the process's exit) left one in /tmp per start. `shutdown_ray()` and the exit close it
    first. The engine actors' temp dir is pointed at tmp_path to see the files."""
    script = f"""
import glob
from omegaconf import OmegaConf
from policies.actor import start_engine
from rl import warm
from rl.cluster import init_ray, shutdown_ray
def park_an_engine():
    init_ray(OmegaConf.load("conf/cluster/local.yaml"))
    warm.park(("engine",), start_engine(OmegaConf.load("conf/engine/vllm.yaml"), {echo_model!r},
                                        [{{"runtime_env": {{"env_vars": {{"TMPDIR": {str(tmp_path)!r}}}}}}}]))
    print("files while it runs:", len(glob.glob({str(tmp_path / "vllm_dist_*")!r})), flush=True)
park_an_engine()
shutdown_ray()
print("files after shutdown_ray:", len(glob.glob({str(tmp_path / "vllm_dist_*")!r})), flush=True)
park_an_engine()
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=400,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    counts = [int(line.rsplit(":", 1)[1]) for line in out.stdout.splitlines() if line.startswith("files ")]
    assert counts == [1, 0, 1], out.stdout[-2000:]
    assert not list(tmp_path.glob("vllm_dist_*"))  # after the exit


def test_engine_actor_call_times_out(ray_local, echo_model):
    client = EngineClient("hf", echo_model, rpc_timeout_s=0.01)
    try:
        with pytest.raises(EngineError, match=r"'generate' gave no answer within 0.01s \(engine.rpc_timeout_s\)"):
            client.generate(["Q:1="] * 64, Sampling(n=8, max_tokens=200, temperature=1.0))
    finally:
        client.close()


def test_engine_actor_reports_errors_from_inside(ray_local, echo_model):
    client = EngineClient("hf", echo_model)
    try:
        with pytest.raises(EngineError, match="prompt 0 must be"):
            client.generate([{"not": "a prompt"}], Sampling())
    finally:
        client.close()


def test_engine_actor_bad_path_fails_before_starting(ray_local, tmp_path):
    with pytest.raises(EngineError, match="does not exist"):
        EngineClient("vllm", str(tmp_path / "missing"))


def test_workers_get_the_openmp_spin_count(ray_local):
    """cluster.omp_spincount reaches every Ray worker's environment as GNU OpenMP's GOMP_SPINCOUNT
    (read when the worker's libgomp starts: it cannot be changed from inside a running actor)."""
    @ray.remote
    def env():
        import os

        return os.environ.get("GOMP_SPINCOUNT")

    assert CONF.omp_spincount == 2000 and ray.get(env.remote()) == "2000"


def test_workers_get_the_malloc_settings(ray_local):
    """cluster.malloc_reuse: off by default (a worker starts with glibc's own settings); on, the variables
    that keep freed memory: no block of its own mapping (unmapped when freed), a heap top returned only
    past 2 GB. glibc reads them when a worker starts, so they must be in its start-up environment."""
    from rl.cluster import malloc_env

    def start_env():
        return sorted(e for e in open("/proc/self/environ", "rb").read().decode().split("\0") if e.startswith("MALLOC_"))

    assert not CONF.malloc_reuse and ray.get(ray.remote(start_env).remote()) == []
    on = ray.remote(runtime_env={"env_vars": malloc_env(OmegaConf.merge(CONF, {"malloc_reuse": True}))})(start_env)
    assert ray.get(on.remote()) == ["MALLOC_MMAP_MAX_=0", "MALLOC_TRIM_THRESHOLD_=2147483647"]


def test_an_engine_actor_computes_with_the_threads_its_config_resolves_to(ray_local, echo_model):
    """Ray gives an actor OMP_NUM_THREADS = its num_cpus, so an engine actor left alone computes on one of
    the two cores; `engine_config` resolves engine.threads null to both (rl/cluster.py), and the actor's
    torch uses them."""
    from rl.cluster import engine_config

    cfg = OmegaConf.create({"cluster": CONF, "engine": OmegaConf.load("conf/engine/hf.yaml"), "algo": {}})
    for engine, expected in ((cfg.engine, 1), (engine_config(cfg), 2)):
        client = start_engine(engine, echo_model)
        try:
            assert ray.get(client.actor.__ray_call__.remote(lambda actor: torch.get_num_threads())) == expected
        finally:
            client.close()


def test_engine_replicas_split_prompts_and_all_get_the_weights(ray_local, echo_model):
    """Two vLLM replicas: each prompt keeps the seed it has in one engine, so the rollouts are one
    engine's; a sync reaches both (greedy continuations from both halves are the new policy's)."""
    from policies.logprobs import check_logprobs

    cfg = OmegaConf.merge(OmegaConf.load("conf/engine/vllm.yaml"), {"num_cpus": 0.5, "threads": 1})
    prompts = [f"Q:{i}{i}{i}=" for i in range(1, 6)]  # 5 prompts: chunks of 3 and 2
    one = start_engine(cfg, echo_model)
    try:
        want = one.generate(prompts, Sampling(n=2, max_tokens=12, seed=7))
    finally:
        one.close()
    two = start_engine(OmegaConf.merge(cfg, {"replicas": 2}), echo_model)
    try:
        assert len(set(two.nodes())) == 1 and len(two.clients) == 2
        got = two.generate(prompts, Sampling(n=2, max_tokens=12, seed=7))
        assert [(r.prompt_index, r.completion_ids) for r in got] == [(r.prompt_index, r.completion_ids) for r in want]
        policy = AutoModelForCausalLM.from_pretrained(echo_model, dtype=torch.float32)
        with torch.no_grad():
            for p in policy.parameters():
                p.mul_(1.05)
        two.load_weights(policy.state_dict())
        greedy = two.generate(prompts, Sampling(n=1, temperature=0, max_tokens=12))
        assert [r.prompt_index for r in greedy] == [0, 1, 2, 3, 4]
        assert check_logprobs(policy, greedy)["max"] < 1e-4
        assert check_logprobs(policy, greedy[3:])["max"] < 1e-4  # the second replica's half
    finally:
        two.close()
