"""REINFORCE++ (Hu 2025): no critic and no per-prompt baseline. The KL to the reference (default)
enters the reward per token, the score at the last token; the advantage of a token is its return
G_t whitened over every response token of the batch (global whitening).
"""
from __future__ import annotations

from rl import losses as L
from rl.algos import common


def update(learner, rollouts, rewards: list[float]) -> dict:
    cfg = learner.cfg
    b = common.prepare(learner, rollouts, rewards)
    r = L.token_rewards(b.scores, b.mask, b.kl, common.reward_beta(learner))
    adv = L.masked_whiten(L.discounted_returns(r, b.mask, cfg.gamma), b.mask)
    return common.policy_update(learner, b, adv, b.mask.float()) | common.metrics(b, adv)
