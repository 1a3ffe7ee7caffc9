"""GRPO and its variants (Dr. GRPO, DAPO) as one update rule, run inside the learner actor.

Per step: n samples per prompt -> group-normalised outcome advantages -> the shared clipped update
(rl/algos/common.py) with the KL to the reference placed by `algo.kl` (METHODS.md §9.4-9.6).
Variants are config: loss_agg grpo | dr_grpo | dapo, std_norm, clip_low/clip_high,
dynamic_sampling.
"""
from __future__ import annotations

from rl import losses as L
from rl.algos import common


def update(learner, rollouts, rewards: list[float]) -> dict:
    """One GRPO step on a batch of prompt-major rollouts (`cfg.samples_per_prompt` per prompt)."""
    cfg, k = learner.cfg, learner.cfg.samples_per_prompt
    b = common.prepare(learner, rollouts, rewards)
    r = common.sequence_rewards(learner, b)
    adv = L.group_advantages(r, k, cfg.std_norm, cfg.adv_eps)
    zero_var = r.view(-1, k).std(1) == 0 if k > 1 else r.new_ones(1, dtype=bool)
    loss_mask = b.mask.float()
    if cfg.dynamic_sampling:  # DAPO: groups with one reward value carry no signal; keep them out
        loss_mask = loss_mask * (~zero_var).repeat_interleave(k).float()[:, None]
    stats = common.policy_update(learner, b, adv, loss_mask)
    return stats | common.metrics(b, adv) | {"grpo/zero_var_groups": zero_var.float().mean().item()}
