"""Every shipped YAML composes, and the CLI turns bad input into one clear line."""
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parent.parent / "conf"
OPTIONS = [(g.name, y.stem) for g in sorted(CONF.iterdir()) if g.is_dir() for y in sorted(g.glob("*.yaml"))]


def _drop_interpolations(node) -> None:
    for key in list(node):
        if OmegaConf.is_interpolation(node, key):
            del node[key]
        elif not OmegaConf.is_missing(node, key) and OmegaConf.is_dict(node[key]):
            _drop_interpolations(node[key])


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_config_option_composes(group, option):
    extra = ["policy.path=/some/model"] if (group, option) == ("policy", "path") else []
    if (group, option) == ("bench", "rewardmath"):
        extra = ["bench.path=/some/file.json"]
    # benchmarks belong to the static harness; a study's parameters to its own primary config
    primary = {"bench": "static", "study": option}.get(group, "config")
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(primary, overrides=[f"{group}={option}"] + extra)
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    own = OmegaConf.load(CONF / group / f"{option}.yaml")
    own.pop("defaults", None)
    _drop_interpolations(own)  # e.g. task.open_frac: ${world.open_frac}, which only the whole config resolves
    # Every value the file sets is what the run sees (a file may extend another via defaults).
    assert OmegaConf.to_container(OmegaConf.merge(resolved[group], own), resolve=True) == resolved[group] | (
        {"path": extra[0].split("=")[1]} if extra else {})


def run_cli(run_dir, *args, timeout=600):
    return subprocess.run([sys.executable, "-m", "rl.run", *args, f"hydra.run.dir={run_dir}"],
                          capture_output=True, text=True, timeout=timeout, cwd=CONF.parent)


def test_cfg_job_prints_composed_config(tmp_path):
    out = run_cli(tmp_path, "--cfg", "job", "engine=hf")
    assert out.returncode == 0, out.stderr
    cfg = OmegaConf.create(out.stdout)
    assert cfg.engine.name == "hf" and cfg.policy.source == "zoo" and cfg.world.name == "arith"
    assert cfg.cluster.num_cpus == 2


@pytest.mark.parametrize("args, message", [
    (["no_such_key=1"], "Key 'no_such_key' is not in struct"),
    (["engine=sglang"], "Could not find 'engine/sglang'"),
    (["engine.name=sglang"], "unknown engine 'sglang' (config key engine.name); expected one of: hf, vllm"),
    (["policy=path", "policy.path=/no/such/model"], "model path '/no/such/model' (config key policy.path) does not exist"),
])
def test_bad_cli_input_gives_one_clear_error(args, message, tmp_path):
    out = run_cli(tmp_path, *args)
    assert out.returncode != 0
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_engine_demo_runs_end_to_end(tmp_path):
    """The main job (engine demo) on the reduced world's base policy, built on first need by the run."""
    out = run_cli(tmp_path, "job=engine_demo", "world=arith_small", "demo.sync_rounds=2")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("sync ") == 2
    summary = OmegaConf.load(tmp_path / "summary.json")
    assert summary.samples == 12 and all(s.logprob_diff_mean < 1e-3 for s in summary.syncs)
