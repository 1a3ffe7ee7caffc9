"""The learner actor: the trained policy, its optimizer, the frozen reference, the KL coefficient
(and its controller state) and, for PPO, the critic with its own optimizer.

The models live on `algo.device` (cpu | cuda | auto: cuda when one is visible); rollout batches stay
on the CPU and each micro-batch is moved there; what leaves the learner (metrics, KLs, weights) is
on the CPU."""
from __future__ import annotations

import copy
import os

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from policies.logprobs import pad_rollouts
from rl import losses as L
from rl.algos import common, get_algo

DEVICES = ("auto", "cpu", "cuda")


class Learner:
    def __init__(self, path: str, cfg, threads: int | None = None, seed: int = 0, critic_path: str | None = None):
        if threads:
            torch.set_num_threads(threads)
        torch.manual_seed(seed)
        self.cfg = cfg
        self.device = resolve_device(cfg.get("device", "auto"))
        self.policy = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True)
        self.policy.to(self.device)
        # eval mode = dropout off (gradients still flow): with dropout on, two forward passes of the
        # same weights differ, so the first ratio is not 1 and the log-probs miss the engine's (TRL
        # disables dropout in the policy too)
        self.policy.eval()
        self.ref = copy.deepcopy(self.policy).eval().requires_grad_(False)
        self.optimizer = _adamw(self.policy, cfg.lr, cfg.get("weight_decay", 0.0))
        self.algo = get_algo(cfg.name)
        self.kl_coef = float(cfg.kl.coef)
        self.critic = self.critic_optimizer = None
        if critic_path is not None:
            from rl.algos.ppo import Critic

            self.critic = Critic(critic_path).to(self.device).eval()  # dropout off, as the policy
            self.critic_optimizer = _adamw(self.critic, cfg.critic.lr, cfg.get("weight_decay", 0.0))

    def update(self, rollouts, rewards: list[float]) -> dict:
        m = self.algo.update(self, rollouts, rewards)
        m["kl/coef"] = self.kl_coef  # the beta this step used
        if self.cfg.kl.controller == "adaptive":  # measured KL: summed k1 per sequence, batch mean
            self.kl_coef = L.adaptive_kl_coef(self.kl_coef, m["kl/k1"], self.cfg.kl.target, self.cfg.kl.horizon,
                                              len(rollouts))
        return m

    def state_dict(self) -> dict:
        """A CPU copy of the policy's weights (what the engine loads)."""
        return {k: v.detach().to("cpu", copy=True) for k, v in self.policy.state_dict().items()}

    @torch.no_grad()
    def kl_to_ref(self, rollouts, temperature: float = 1.0) -> list[float]:
        """Per-sequence summed k1 = log pi - log ref on the rollouts' completion tokens (nats), both
        at the temperature the rollouts were sampled at (greedy rollouts, temperature 0: at 1)."""
        temperature = temperature if temperature > 0 else 1.0
        ids, attn, mask = pad_rollouts(rollouts)
        # chunked log-probs, `algo.micro_batch` sequences (16 when unset: an eval set) per pass
        micro, chunk = self.cfg.get("micro_batch") or 16, common.logprob_chunk(self.cfg)
        pol = common._forward(self.policy, ids, attn, temperature, micro, chunk)[0]
        ref = common._forward(self.ref, ids, attn, temperature, micro, chunk)[0]
        return ((pol - ref) * mask).sum(1).tolist()

    def save_checkpoint(self, path: str) -> None:
        """Policy in HF format (safetensors), critic weights, optimizer(s), RNG and the KL coefficient."""
        self.policy.save_pretrained(os.path.join(path, "policy"), safe_serialization=True)
        state = {"optimizer": self.optimizer.state_dict(), "rng": torch.get_rng_state(), "kl_coef": self.kl_coef}
        if self.critic is not None:
            critic = {k: v.cpu() for k, v in self.critic.state_dict().items()}
            save_file(critic, os.path.join(path, "critic.safetensors"))
            state["critic_optimizer"] = self.critic_optimizer.state_dict()
        torch.save(state, os.path.join(path, "learner.pt"))

    def load_checkpoint(self, path: str) -> None:
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
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay)
