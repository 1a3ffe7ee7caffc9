"""The prepared GPU check (`make gpu-check`): its runs compose, and without CUDA it stops with one clear line."""
import subprocess
import sys
from pathlib import Path

import pytest

from analysis import gpu_check
from worlds.zoo import compose

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("algo", ["grpo", "bon"])
def test_gpu_check_runs_compose_to_the_gpu_settings(algo):
    overrides = gpu_check.SMOL + (gpu_check.GRPO if algo == "grpo" else gpu_check.BON) + gpu_check.GPU
    cfg = compose("config", overrides)
    assert cfg.algo.name == algo and cfg.policy.world == "smol" and cfg.task.name == "smol_arith"
    assert cfg.cluster.num_gpus == 1 and cfg.engine.num_gpus + cfg.cluster.learner_gpus == 1
    assert cfg.engine.dtype == "bfloat16" and cfg.engine.sync_tolerance == 0.05
    if algo == "grpo":
        assert (cfg.algo.steps, cfg.algo.device, cfg.algo.precision) == (20, "cuda", "bf16")
    else:
        assert cfg.algo.n_max == 16


def test_gpu_check_without_cuda_names_the_gpu_extra(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA machine: the check would run")
    out = subprocess.run([sys.executable, "-m", "analysis.gpu_check", "--out", str(tmp_path)], capture_output=True,
                         text=True, cwd=REPO, timeout=300)
    assert out.returncode == 1 and "EXTRAS=gpu,dev" in out.stderr and "no CUDA device" in out.stderr
    assert not (tmp_path / "gpu_check.json").exists()
