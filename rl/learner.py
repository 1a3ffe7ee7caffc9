"""The learner actor: the trained policy, its optimizer and the frozen reference."""
from __future__ import annotations

import copy
import os

import torch
from transformers import AutoModelForCausalLM

from policies.logprobs import completion_logprobs
from rl.algos import get_algo


class Learner:
    def __init__(self, path: str, cfg, threads: int | None = None, seed: int = 0):
        if threads:
            torch.set_num_threads(threads)
        torch.manual_seed(seed)
        self.cfg = cfg
        self.policy = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True)
        self.policy.train()
        self.ref = copy.deepcopy(self.policy).eval().requires_grad_(False)
        self.optimizer = torch.optim.AdamW(self.policy.parameters(), lr=cfg.lr, betas=(0.9, 0.95),
                                           weight_decay=cfg.get("weight_decay", 0.0))
        self.algo = get_algo(cfg.name)

    def update(self, rollouts, rewards: list[float]) -> dict:
        return self.algo.update(self.policy, self.ref, self.optimizer, rollouts, rewards, self.cfg)

    def state_dict(self) -> dict:
        return {k: v.detach().clone() for k, v in self.policy.state_dict().items()}

    @torch.no_grad()
    def kl_to_ref(self, rollouts) -> list[float]:
        """Per-sequence summed k1 = log pi - log ref on the rollouts' completion tokens (nats)."""
        pol, ref = completion_logprobs(self.policy, rollouts), completion_logprobs(self.ref, rollouts)
        return [(p - r).sum().item() for p, r in zip(pol, ref)]

    def save_checkpoint(self, path: str) -> None:
        """Policy in HF format (safetensors) + optimizer and RNG state."""
        self.policy.save_pretrained(os.path.join(path, "policy"), safe_serialization=True)
        torch.save({"optimizer": self.optimizer.state_dict(), "rng": torch.get_rng_state()},
                   os.path.join(path, "learner.pt"))

    def load_checkpoint(self, path: str) -> None:
        loaded = AutoModelForCausalLM.from_pretrained(os.path.join(path, "policy"), dtype=torch.float32,
                                                      use_safetensors=True)
        self.policy.load_state_dict(loaded.state_dict())
        state = torch.load(os.path.join(path, "learner.pt"), weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
