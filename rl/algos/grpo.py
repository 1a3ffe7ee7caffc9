"""GRPO and its variants (Dr. GRPO, DAPO) as one update rule, run inside the learner actor.

Per step: n samples per prompt -> group-normalised outcome advantages -> the shared clipped update
(rl/algos/common.py) with the KL to the reference placed by `algo.kl` (Shao et al. 2024; Dr. GRPO,
Liu et al. 2025; DAPO, Yu et al. 2025). Variants are config: loss_agg grpo | dr_grpo | dapo,
std_norm, clip_low/clip_high, dynamic_sampling.

dynamic_sampling: false | mask | resample. A group whose rewards are all equal has advantage 0 and
only dilutes the loss's denominators. `mask` leaves its sequences out of the loss (and out of the
aggregation's counts); `resample` is DAPO's own rule: the driver (rl/loop.py) draws more prompts
until the batch holds `prompts_per_step` groups with reward variance, so nothing is left to mask.
"""
from __future__ import annotations

import torch

from rl import losses as L
from rl.algos import common

DYNAMIC_SAMPLING = (False, "mask", "resample")


def check(cfg) -> None:
    if cfg.samples_per_prompt < 2:
        raise ValueError(f"algo.samples_per_prompt={cfg.samples_per_prompt}: GRPO's group baseline needs >= 2 "
                         "samples per prompt (with 1 every advantage is 0)")
    if dynamic_sampling(cfg) not in DYNAMIC_SAMPLING:
        raise ValueError(f"algo.dynamic_sampling={cfg.dynamic_sampling!r}; expected false, mask or resample")
    if dynamic_sampling(cfg) == "resample" and cfg.max_sample_rounds < 1:
        raise ValueError(f"algo.max_sample_rounds={cfg.max_sample_rounds}; expected >= 1")


def dynamic_sampling(cfg):
    """`true` is read as `mask` (the earlier boolean switch)."""
    return "mask" if cfg.dynamic_sampling is True else cfg.dynamic_sampling


def update(learner, rollouts, rewards: list[float]) -> dict:
    """One GRPO step on a batch of prompt-major rollouts (`cfg.samples_per_prompt` per prompt)."""
    return group_update(learner, rollouts, rewards)


def group_update(learner, rollouts, rewards: list[float], left_out=None) -> dict:
    """GRPO's update; `left_out` (G,) bool marks groups with no label (URPO): advantage 0, and out
    of the loss and its counts like a masked zero-variance group."""
    cfg, k = learner.cfg, learner.cfg.samples_per_prompt
    b = common.prepare(learner, rollouts, rewards)
    r = common.sequence_rewards(learner, b)
    adv = L.group_advantages(r, k, cfg.std_norm, cfg.adv_eps)
    zero_var = L.zero_variance(r, k)
    keep = ~zero_var if dynamic_sampling(cfg) == "mask" else torch.ones_like(zero_var)
    if left_out is not None:
        keep = keep & ~left_out
        adv = adv * (~left_out).repeat_interleave(k).float()
    loss_mask = b.mask.float() * keep.repeat_interleave(k).float()[:, None]
    stats = common.policy_update(learner, b, adv, loss_mask)
    return stats | common.metrics(b, adv) | {"grpo/zero_var_groups": zero_var.float().mean().item()}
