"""RLOO (Ahmadian et al. 2024): k samples per prompt, each one's baseline the mean reward of the
other k-1; the KL to the reference (default) enters the reward per sequence, r - beta sum_t k1_t.
"""
from __future__ import annotations

from rl import losses as L
from rl.algos import common


def check(cfg) -> None:
    if cfg.samples_per_prompt < 2:
        raise ValueError(f"algo.samples_per_prompt={cfg.samples_per_prompt}: RLOO's leave-one-out baseline needs >= 2")


def update(learner, rollouts, rewards: list[float]) -> dict:
    b = common.prepare(learner, rollouts, rewards)
    adv = L.rloo_advantages(common.sequence_rewards(learner, b), learner.cfg.samples_per_prompt)
    return common.policy_update(learner, b, adv, b.mask.float()) | common.metrics(b, adv)
