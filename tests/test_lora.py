"""A LoRA policy (policy.lora.r) and bf16 autocast (algo.precision): the learner trains the adapter
only, its reference is the base model, the engine gets the merged weights; end to end through the
loop with the engine's log-probs checked at every step."""
import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from policies.logprobs import completion_logprobs
from policies.tiny import random_model
from rl.cluster import shutdown_ray
from rl.learner import Learner
from rl.loop import run
from tests.test_loop import config
from tests.test_microbatch import algo_cfg, rollouts

LORA = {"r": 4, "alpha": 8, "target_modules": "all-linear", "dropout": 0.0}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return str(random_model(tmp_path_factory.mktemp("lora") / "model", "tiny", seed=2))


def fresh(path):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def updated_lora_learner(path):
    learner = Learner(path, algo_cfg("algo.samples_per_prompt=2", "algo.lr=1e-2"), lora=LORA)
    rs = rollouts(learner.policy.config.vocab_size)
    learner.update(rs, [1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0])
    return learner, rs


def test_lora_trains_the_adapter_only_and_the_reference_is_the_base_model(model_path):
    learner, rs = updated_lora_learner(model_path)
    trained = {n for n, p in learner.policy.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n for n in trained)
    assert sum(len(g["params"]) for g in learner.optimizer.param_groups) == len(trained)
    base = fresh(model_path)
    # the base weights did not move: the reference's log-probs are the untouched model's
    for got, want in zip(completion_logprobs(learner.ref, rs), completion_logprobs(base, rs)):
        assert torch.allclose(got, want, atol=1e-6)
    # the adapter did: the policy's log-probs are not the base model's any more
    assert max((a - b).abs().max().item() for a, b in
               zip(completion_logprobs(learner.policy, rs), completion_logprobs(base, rs))) > 1e-3


def test_the_engine_gets_W_plus_scaled_BA(model_path):
    """merged weight = W + (alpha / r) B A, from the adapter's own tensors by hand; loaded into a
    plain model it gives the LoRA policy's log-probs."""
    learner, rs = updated_lora_learner(model_path)
    merged = learner.state_dict()
    base = fresh(model_path)
    assert set(merged) == set(base.state_dict())
    layer = learner.policy.get_base_model().model.layers[0].self_attn.q_proj
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    want = base.state_dict()["model.layers.0.self_attn.q_proj.weight"] + (LORA["alpha"] / LORA["r"]) * B @ A
    assert torch.allclose(merged["model.layers.0.self_attn.q_proj.weight"], want.detach(), atol=1e-6)
    assert not torch.equal(B, torch.zeros_like(B))  # B starts at zero: the update moved it
    base.load_state_dict(merged, strict=True)
    for got, want in zip(completion_logprobs(base, rs), completion_logprobs(learner.policy, rs)):
        assert torch.allclose(got, want, atol=1e-5)


def test_lora_checkpoint_round_trip(model_path, tmp_path):
    learner, _ = updated_lora_learner(model_path)
    learner.save_checkpoint(str(tmp_path))
    assert (tmp_path / "policy" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "policy" / "model.safetensors").exists()  # the adapter, not a full copy
    other = Learner(model_path, algo_cfg("algo.samples_per_prompt=2", "algo.lr=1e-2"), lora=LORA)
    other.load_checkpoint(str(tmp_path))
    for k, v in learner.state_dict().items():
        assert torch.equal(v, other.state_dict()[k]), k


def test_bf16_autocast_rounds_the_forward_pass_only(model_path):
    """bf16 keeps 8 bits of mantissa: the log-probs move by more than float32 rounding and much less
    than a nat; the weights stay float32."""
    rs = rollouts(fresh(model_path).config.vocab_size)
    kl = {p: Learner(model_path, algo_cfg(f"algo.precision={p}")) for p in ("fp32", "bf16")}
    lp = {}
    for p, learner in kl.items():
        with learner.autocast():
            lp[p] = torch.cat(completion_logprobs(learner.policy, rs))
    gap = (lp["fp32"] - lp["bf16"]).abs().max().item()
    assert 1e-4 < gap < 0.2
    assert all(p.dtype == torch.float32 for p in kl["bf16"].policy.parameters())
    m = kl["bf16"].update(rs, [1.0, 0.0] * 4)
    assert m["policy/loss"] == m["policy/loss"] and 0 < m["policy/grad_norm"] < float("inf")


def test_a_lora_run_syncs_merged_weights_into_vllm(tmp_path):
    """Two GRPO steps of a LoRA policy with vLLM: the run checks the engine's log-probs against the
    learner's on every step's samples (WeightSyncError otherwise) and checkpoints the adapter."""
    try:
        summary = run(config("policy=tiny_random", "policy.lora.r=8", "reward=length", "algo.steps=2",
                             "algo.prompts_per_step=2", "algo.samples_per_prompt=2", "algo.max_tokens=8", "eval.prompts=4",
                             "eval.every=2", "checkpoint.every=2", f"cache_dir={tmp_path / 'cache'}"), str(tmp_path / "run"))
    finally:
        shutdown_ray()
    assert summary["steps"] == 2
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(m["sync/logprob_diff"] < 1e-3 for m in metrics[1:])
    adapter = load_file(tmp_path / "run" / "checkpoints" / "step_000002" / "policy" / "adapter_model.safetensors")
    assert adapter and all("lora_" in k for k in adapter)
