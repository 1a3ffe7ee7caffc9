"""The learner actor: the trained policy, its optimizer, the frozen reference, the KL coefficient
(and its controller state) and, for PPO, the critic with its own optimizer.

The models live on `algo.device` (cpu | cuda | auto: cuda when one is visible); rollout batches stay
on the CPU and each micro-batch is moved there; what leaves the learner (metrics, KLs, weights) is
on the CPU. `algo.precision=bf16` runs the forward passes under bfloat16 autocast (weights, optimizer
and log-softmax stay float32). With `policy.lora.r > 0` only a PEFT LoRA adapter is trained: the
reference is the same model with the adapter switched off (no second copy), and the engine gets the
merged weights W + (alpha / r) B A at every sync."""
from __future__ import annotations

import contextlib
import copy
import os
import time

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from policies import shm_weights
from policies.logprobs import gap_stats, pad_rollouts
from rl import losses as L
from rl.algos import common, get_algo
from rl.warm import Reusable

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")


class Learner(Reusable):
    def __init__(self, path: str, cfg, threads: int | None = None, seed: int = 0, critic_path: str | None = None,
                 lora=None):
        if threads:
            torch.set_num_threads(threads)
        torch.manual_seed(seed)
        self.cfg, self.path = cfg, path
        self.sync_file = shm_weights.Writer()  # a run syncs through one path: rewritten in place
        self.device = resolve_device(cfg.get("device", "auto"))
        self.precision = cfg.get("precision", "fp32")
        if self.precision not in PRECISIONS:
            raise ValueError(f"algo.precision={self.precision!r}; expected one of: {', '.join(PRECISIONS)}")
        self.policy = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True)
        self.lora = bool(lora and lora.get("r"))
        if self.lora:
            self.policy = _with_lora(self.policy, lora)
        self.policy.to(self.device)
        # eval mode = dropout off (gradients still flow): with dropout on, two forward passes of the
        # same weights differ, so the first ratio is not 1 and the log-probs miss the engine's (TRL
        # disables dropout in the policy too)
        self.policy.eval()
        self.ref = AdapterOff(self.policy) if self.lora else copy.deepcopy(self.policy).eval().requires_grad_(False)
        self.moved = False  # the policy is still the reference (no update, no checkpoint loaded)
        self.optimizer = _adamw(self.policy, cfg.lr, cfg.get("weight_decay", 0.0))
        self.algo = get_algo(cfg.name)
        self.kl_coef = float(cfg.kl.coef)
        self.critic = self.critic_optimizer = None
        if critic_path is not None:
            from rl.algos.ppo import Critic

            self.critic = Critic(critic_path).to(self.device).eval()  # dropout off, as the policy
            self.critic_optimizer = _adamw(self.critic, cfg.critic.lr, cfg.get("weight_decay", 0.0))

    def autocast(self):
        """bfloat16 autocast on the learner's device with algo.precision=bf16, else nothing."""
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def update(self, rollouts, rewards: list[float]) -> dict:
        self.moved = True
        t = time.perf_counter()
        with self.autocast():
            m = self.algo.update(self, rollouts, rewards)
        # inside the actor: the driver's perf/learn_s less this is the call's own cost (transfer, queue)
        m["perf/update_s"] = time.perf_counter() - t
        m["kl/coef"] = self.kl_coef  # the beta this step used
        if self.cfg.kl.controller == "adaptive":  # measured KL: summed k1 per sequence, batch mean
            self.kl_coef = L.adaptive_kl_coef(self.kl_coef, m["kl/k1"], self.cfg.kl.target, self.cfg.kl.horizon,
                                              len(rollouts))
        return m

    def state_dict(self) -> dict:
        """A CPU copy of the policy's weights (what the engine loads): with LoRA, merged into the base
        weights (computed aside: merging in place and back would drift the base by rounding)."""
        return self._engine_weights(copy=True)

    def _engine_weights(self, copy: bool) -> dict:
        if self.lora:  # merged_state_dict computes new tensors anyway
            return merged_state_dict(self.policy)
        return {k: v.detach().to("cpu", copy=copy) for k, v in self.policy.state_dict().items()}

    def node(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def write_weights(self, path: str) -> str:
        """The engine's weights as a safetensors file at `path` (`policies.engine.weights_file`, in shared
        memory; the driver, on this node, owns and removes it): an engine on this node reads it straight
        away, with no trip through Ray's object store. A tied head is left out (its storage is the
        embedding's). Returns `path`."""
        tensors = self._engine_weights(copy=False)  # copied into the file in place
        if getattr(self.policy.config, "tie_word_embeddings", False):
            tensors.pop("lm_head.weight", None)
        return self.sync_file.write(path, tensors)

    def close_sync_file(self) -> None:
        self.sync_file = shm_weights.Writer()

    @torch.no_grad()
    def evaluate(self, rollouts, temperature: float = 1.0, engine_gap: bool = False) -> dict:
        """What an evaluation asks of the learner about its rollouts. "kl": per sequence, the summed k1 =
        log pi - log ref on the completion tokens (nats), both at the temperature the rollouts were sampled
        at (greedy rollouts, temperature 0: at 1). With `engine_gap`, "gap": mean and max |learner - engine|
        log-prob at temperature 1 over the tokens, the sync check where the step's own batch cannot give
        it (asynchronous generation), from the same policy pass when that pass is float32."""
        ids, attn, mask = pad_rollouts(rollouts)
        # chunked log-probs, `algo.micro_batch` sequences (16 when unset: an eval set) per pass
        micro, *rest = common.pass_args(self.cfg)
        t = temperature if temperature > 0 else 1.0
        out, raw = {"kl": [0.0] * len(rollouts)}, None
        if self.moved:  # else the reference's own weights: 0 exactly, without two passes (at 135M, minutes)
            with self.autocast():
                pol, raw, _ = common._forward(self.policy, ids, attn, mask, t, micro or 16, *rest)
                ref = common._forward(self.ref, ids, attn, mask, t, micro or 16, *rest)[0]
            out["kl"] = ((pol - ref) * mask).sum(1).tolist()
        if engine_gap:
            if raw is None or self.precision != "fp32":
                raw = common._forward(self.policy, ids, attn, mask, 1.0, micro or 16, *rest)[1]
            out["gap"] = gap_stats((raw - common.engine_logprobs(rollouts, mask)).abs()[mask], "evaluation")
        return out

    def save_checkpoint(self, path: str) -> None:
        """Policy in HF format with its tokenizer (safetensors; with LoRA the PEFT adapter), critic weights, optimizer(s),
        RNG and the KL coefficient."""
        self.policy.save_pretrained(os.path.join(path, "policy"), safe_serialization=True)
        # with its tokenizer the checkpoint's policy/ is a model directory any HF loader (or
        # policy=path, reward=referee) takes as it is
        AutoTokenizer.from_pretrained(self.path).save_pretrained(os.path.join(path, "policy"))
        state = {"optimizer": self.optimizer.state_dict(), "rng": torch.get_rng_state(), "kl_coef": self.kl_coef}
        if self.critic is not None:
            critic = {k: v.cpu() for k, v in self.critic.state_dict().items()}
            save_file(critic, os.path.join(path, "critic.safetensors"))
            state["critic_optimizer"] = self.critic_optimizer.state_dict()
        torch.save(state, os.path.join(path, "learner.pt"))

    def load_checkpoint(self, path: str) -> None:
        if self.lora:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(self.policy, load_file(os.path.join(path, "policy", "adapter_model.safetensors")))
        else:
            loaded = AutoModelForCausalLM.from_pretrained(os.path.join(path, "policy"), dtype=torch.float32,
                                                          use_safetensors=True)
            self.policy.load_state_dict(loaded.state_dict())
        # the optimizer's state goes to its parameters' device on load
        state = torch.load(os.path.join(path, "learner.pt"), weights_only=True, map_location="cpu")
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        self.kl_coef = state["kl_coef"]
        if self.critic is not None:
            self.critic.load_state_dict(load_file(os.path.join(path, "critic.safetensors")))
            self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        self.moved = True


def resolve_device(name: str) -> torch.device:
    """`algo.device`: cpu | cuda | auto (cuda when one is visible, else cpu)."""
    if name not in DEVICES:
        raise ValueError(f"algo.device={name!r}; expected one of: {', '.join(DEVICES)}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    elif name == "cuda" and not torch.cuda.is_available():
        raise ValueError("algo.device=cuda but no CUDA device is visible (in Ray, the learner actor needs num_gpus)")
    return torch.device(name)


def _adamw(model, lr: float, weight_decay: float):
    params = [p for p in model.parameters() if p.requires_grad]  # with LoRA: the adapter alone
    # fused: one kernel over all tensors; on CPU 5-9x faster than the per-tensor default at 135M
    # (0.08 vs 0.40-0.71 s a step, `python -m analysis.bench pieces`), the same update up to rounding
    fused = params[0].device.type in ("cpu", "cuda")
    return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay, fused=fused)


def _with_lora(model, lora):
    """`policy.lora`: r, alpha, target_modules (a list, or "all-linear"), dropout (0: the ratio of two
    passes must be 1)."""
    from peft import LoraConfig, get_peft_model

    targets = lora.get("target_modules", "all-linear")
    targets = targets if isinstance(targets, str) else list(targets)
    r = int(lora["r"])
    config = LoraConfig(r=r, lora_alpha=float(lora.get("alpha", 2 * r)), lora_dropout=float(lora.get("dropout", 0.0)),
                        target_modules=targets, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


class AdapterOff(torch.nn.Module):
    """The LoRA policy's base model as the frozen reference: the same weights, adapter disabled."""

    def __init__(self, peft_model):
        super().__init__()
        self.peft_model = peft_model
        self.config = peft_model.config

    def forward(self, **inputs):
        with torch.no_grad(), self.peft_model.disable_adapter():
            return self.peft_model(**inputs)

    def get_output_embeddings(self):
        return self.peft_model.get_output_embeddings()


@torch.no_grad()
def merged_state_dict(peft_model) -> dict:
    """The base model's state dict (its own key names) with each LoRA layer's delta added, on the CPU."""
    from peft.tuners.lora import LoraLayer

    base = peft_model.get_base_model()
    deltas = {}
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer):
            deltas[f"{name}.base_layer.weight"] = sum(module.get_delta_weight(a) for a in module.active_adapters)
    out = {}
    for key, value in base.state_dict().items():
        if ".lora_" in key:
            continue
        if key in deltas:
            value = value + deltas[key]
        out[key.replace(".base_layer.", ".")] = value.detach().to("cpu", copy=True)
    return out
