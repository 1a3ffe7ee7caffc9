"""Safe defaults: no remote code unless asked, weights from safetensors only, no pickle of a user's
files, a Ray that listens on loopback only and starts no dashboard."""
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from policies.engine import EngineError
from rl.cluster import shutdown_ray

ROOT = Path(__file__).resolve().parents[1]
CODE = sorted(p for d in ("analysis", "policies", "rewards", "rl", "worlds") for p in (ROOT / d).rglob("*.py"))
# The zoo builders read back only what the zoo itself wrote (safetensors) or the shipped GGUF.
ZOO_BUILDERS = {"worlds/arith/zoo.py", "worlds/smol/zoo.py"}


def calls(text: str, name: str):
    """The argument text of every call of `name(` in `text` (parentheses matched)."""
    for m in re.finditer(re.escape(name) + r"\(", text):
        depth, i = 1, m.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        yield text[m.end() : i - 1]


def test_code_is_scanned():
    assert len(CODE) > 40 and any(p.name == "learner.py" for p in CODE)
    assert list(calls("f(a, g(b)) + f(c)", "f")) == ["a, g(b)", "c"]


@pytest.mark.parametrize("path", CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_unsafe_deserialisation(path):
    text = path.read_text()
    assert not re.search(r"\b(pickle|cPickle|dill|joblib|cloudpickle)\.loads?\(|allow_pickle\s*=\s*True", text)
    for args in calls(text, "torch.load"):
        assert re.search(r"weights_only\s*=\s*True", args), f"torch.load({args}) without weights_only=True"


@pytest.mark.parametrize("path", [p for p in CODE if str(p.relative_to(ROOT)) not in ZOO_BUILDERS],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_models_load_from_safetensors_only(path):
    text = path.read_text()
    for cls in re.findall(r"\b(AutoModel\w*)\.from_pretrained\(", text):
        for args in calls(text, f"{cls}.from_pretrained"):
            if "gguf_file" not in args:
                assert re.search(r"use_safetensors\s*=\s*True", args), f"{cls}.from_pretrained({args})"


@pytest.fixture
def remote_code_model(echo_model, tmp_path):
    """The echo model with an `auto_map` to a custom module that, when imported, leaves a marker file."""
    d = tmp_path / "model"
    shutil.copytree(echo_model, d)
    marker = tmp_path / "remote_code_ran"
    (d / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                               "from transformers import Qwen2Config as EvilConfig, Qwen2ForCausalLM as EvilModel\n")
    config = json.loads((d / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (d / "config.json").write_text(json.dumps(config))
    return d, marker


def test_remote_code_is_not_run_unless_asked(remote_code_model):
    from policies.hf_engine import HFEngine
    from rl.learner import Learner
    from tests.test_loop import config

    d, marker = remote_code_model
    for load in (lambda: HFEngine(str(d)), lambda: Learner(str(d), config().algo)):
        try:
            load()
        except ValueError as e:  # refusing is as good as not running it
            assert "trust_remote_code" in str(e)
        assert not marker.exists()
    cfg = config()
    assert cfg.engine.get("trust_remote_code", False) is False


def test_pickle_weights_are_refused(echo_model, tmp_path):
    from policies.hf_engine import HFEngine
    from policies.vllm_engine import checkpoint_keys
    from safetensors.torch import load_file

    d = tmp_path / "model"
    shutil.copytree(echo_model, d)
    weights = load_file(d / "model.safetensors")
    (d / "model.safetensors").unlink()
    torch.save(weights, d / "pytorch_model.bin")
    with pytest.raises(EngineError, match=r"has no \.safetensors weights \(only safetensors are loaded\)"):
        checkpoint_keys(d)
    with pytest.raises(OSError, match=r"model\.safetensors"):
        HFEngine(str(d))


def test_a_local_ray_listens_on_loopback_only_and_serves_no_dashboard():
    import psutil
    import ray

    from rl.cluster import init_ray
    from tests.test_loop import config

    if ray.is_initialized():
        shutdown_ray()
    init_ray(config().cluster)
    try:
        procs = psutil.Process().children(recursive=True)
        listening = [(p.pid, c.laddr.ip, c.laddr.port) for p in procs for c in p.net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN]
        listening += [(0, c.laddr.ip, c.laddr.port) for c in psutil.Process().net_connections(kind="inet")
                      if c.status == psutil.CONN_LISTEN]
        assert len(listening) >= 3  # GCS, raylet, workers at least
        assert all(ip in ("127.0.0.1", "::1", "::ffff:127.0.0.1") for _, ip, _ in listening), listening
        dashboards = [" ".join(p.cmdline()) for p in procs if "dashboard/dashboard.py" in " ".join(p.cmdline())]
        assert all("--disable-frontend" in c for c in dashboards)
        assert not any(port == 8265 for _, _, port in listening)
    finally:
        shutdown_ray()
