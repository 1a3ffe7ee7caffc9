"""What every policy-gradient algorithm here does the same way: the rollout batch as tensors, the
KL to the reference (where it goes, by config), and the clipped policy update over epochs x
minibatches. The algorithm files differ only in how they turn rewards into advantages.

Log-probs for the update (ratios, KL, entropy) are those of the sampling distribution,
softmax(logits / algo.temperature), as TRL, verl and OpenRLHF compute them; the check against the
engine uses temperature-1 log-probs (the engine reports those, vLLM's raw_logprobs).

KL config (`algo.kl`), three orthogonal choices (Schulman's k1/k2/k3 estimators; Ziegler et al. 2019):
  estimator  k1 | k2 | k3, per token, of KL[pi || ref] on the sampled tokens;
  placement  reward: -beta * estimate enters the reward (per token, or summed per sequence for
             outcome-advantage algorithms) | loss: beta * estimate is added to the per-token loss;
  controller fixed | adaptive (Ziegler et al.; the learner updates beta after every step from the
             measured KL in nats per sequence: summed k1 over response tokens, batch mean).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from policies.logprobs import pad_rollouts
from rl import losses as L

PLACEMENTS, CONTROLLERS = ("reward", "loss"), ("fixed", "adaptive")


def check_kl(kl) -> None:
    """Validate `algo.kl` before anything starts."""
    if kl.placement not in PLACEMENTS:
        raise ValueError(f"algo.kl.placement={kl.placement!r}; expected one of: {', '.join(PLACEMENTS)}")
    if kl.controller not in CONTROLLERS:
        raise ValueError(f"algo.kl.controller={kl.controller!r}; expected one of: {', '.join(CONTROLLERS)}")
    if kl.estimator not in ("k1", "k2", "k3"):
        raise ValueError(f"algo.kl.estimator={kl.estimator!r}; expected one of: k1, k2, k3")
    if kl.estimator == "k1" and kl.placement == "loss" and kl.coef > 0:
        raise ValueError("algo.kl.estimator=k1 with algo.kl.placement=loss has zero expected gradient "
                         "(E_pi[grad log pi] = 0: it never pulls the policy to the reference); use k3 or k2 in "
                         "the loss, or k1 with algo.kl.placement=reward")
    if kl.coef < 0:
        raise ValueError(f"algo.kl.coef={kl.coef}; expected >= 0")
    if kl.controller == "adaptive" and not (kl.target > 0 and kl.horizon > 0):
        raise ValueError(f"algo.kl.controller=adaptive needs algo.kl.target > 0 and algo.kl.horizon > 0, "
                         f"got target={kl.target}, horizon={kl.horizon}")


@dataclass
class Batch:
    ids: torch.Tensor        # (B, T) prompt + completion, right-padded
    attn: torch.Tensor       # (B, T)
    mask: torch.Tensor       # (B, T-1) bool: position t predicts a completion token
    engine_lp: torch.Tensor  # (B, T-1) the engine's log-probs of the sampled tokens (temperature 1)
    raw: torch.Tensor        # (B, T-1) the learner's, temperature 1: the sync check and TIS compare these
    old: torch.Tensor        # (B, T-1) the learner's at the sampling temperature, before the update
    ref: torch.Tensor        # (B, T-1) the reference's at the sampling temperature
    entropy: torch.Tensor    # (B, T-1)
    kl: torch.Tensor         # (B, T-1) the configured KL estimate of old vs ref, 0 off the mask
    scores: torch.Tensor     # (B,) the reward source's scores


def _logprobs(model, ids, attn, temperature: float = 1.0):
    """Log-probs of the sampled tokens (B, T-1) and the full log-distributions (B, T-1, V) of
    softmax(logits / temperature)."""
    logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float()
    logp_all = (logits / temperature).log_softmax(-1)
    return logp_all.gather(-1, ids[:, 1:, None]).squeeze(-1), logp_all


@torch.no_grad()
def _forward(model, ids, attn, temperature: float):
    """Sampled tokens' log-probs at `temperature` and at 1, and the entropy at `temperature`."""
    logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float()
    raw = logits.log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    logp_all = (logits / temperature).log_softmax(-1)
    return logp_all.gather(-1, ids[:, 1:, None]).squeeze(-1), raw, -(logp_all.exp() * logp_all).sum(-1)


def prepare(learner, rollouts, rewards: list[float]) -> Batch:
    ids, attn, mask = pad_rollouts(rollouts)
    engine = torch.zeros(mask.shape)
    for b, r in enumerate(rollouts):
        engine[b][mask[b]] = torch.tensor(r.logprobs, dtype=torch.float32)
    temperature = learner.cfg.temperature
    old, raw, entropy = _forward(learner.policy, ids, attn, temperature)
    ref, _, _ = _forward(learner.ref, ids, attn, temperature)
    kl = L.kl_estimate(old, ref, learner.cfg.kl.estimator) * mask
    return Batch(ids, attn, mask, engine, raw, old, ref, entropy, kl, torch.tensor(rewards, dtype=torch.float32))


def reward_beta(learner) -> float:
    """beta for the reward, 0 when the KL goes in the loss (never both)."""
    return learner.kl_coef if learner.cfg.kl.placement == "reward" else 0.0


def sequence_rewards(learner, b: Batch) -> torch.Tensor:
    """Outcome rewards (B,) with the KL placed in the reward: score - beta * sum_t kl_t."""
    return b.scores - reward_beta(learner) * b.kl.sum(1)


def policy_update(learner, b: Batch, adv: torch.Tensor, loss_mask: torch.Tensor) -> dict:
    """`cfg.epochs` passes of the clipped objective over shuffled minibatches.

    Per token: PPO-clip (optional dual-clip) + beta * KL estimate when placement=loss - entropy_coef
    * entropy; aggregated by `cfg.loss_agg`. With `cfg.target_kl` set, updating stops (for the rest
    of the step) at the first minibatch whose approximate KL to the rollout policy exceeds it.
    With `cfg.tis_cap` set, each token's policy-gradient loss is weighted by min(pi_learner /
    pi_engine, cap), both at temperature 1 (the engine reports no other).
    """
    cfg, policy, opt = learner.cfg, learner.policy, learner.optimizer
    beta = learner.kl_coef if cfg.kl.placement == "loss" else 0.0
    tis_cap = cfg.get("tis_cap")
    tis = L.truncated_is_weights(b.raw, b.engine_lp, tis_cap) if tis_cap else None
    stats = {"loss": [], "clipfrac": [], "grad_norm": [], "approx_kl": []}
    stopped = False
    for _ in range(cfg.epochs):
        for mb in torch.randperm(len(b.ids)).split(cfg.minibatch):
            m = loss_mask[mb]
            if m.sum() == 0:
                continue
            logp, logp_all = _logprobs(policy, b.ids[mb], b.attn[mb], cfg.temperature)
            approx_kl = L.masked_mean(L.kl_estimate(b.old[mb], logp.detach(), "k3"), m).item()
            if cfg.target_kl is not None and approx_kl > cfg.target_kl:
                stopped = True
                break
            per_token, clipped = L.clipped_pg_loss(logp, b.old[mb], adv[mb], cfg.clip_low, cfg.clip_high, cfg.dual_clip)
            if tis is not None:  # the policy-gradient term only, as TRL: the KL and entropy terms are exact
                per_token = per_token * tis[mb]
            if beta:
                per_token = per_token + beta * L.kl_estimate(logp, b.ref[mb], cfg.kl.estimator)
            if cfg.entropy_coef:
                per_token = per_token + cfg.entropy_coef * (logp_all.exp() * logp_all).sum(-1)
            loss = L.aggregate(per_token, m, cfg.loss_agg, constant=cfg.max_tokens)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            stats["grad_norm"].append(float(torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)))
            opt.step()
            stats["loss"].append(loss.item())
            stats["clipfrac"].append(L.masked_mean(clipped, m).item())
            stats["approx_kl"].append(approx_kl)
        if stopped:
            break
    out = {f"policy/{k}": mean(v) for k, v in stats.items()}
    if tis is not None:
        out |= {"policy/tis_weight": L.masked_mean(tis, loss_mask).item(),
                "policy/tis_capped": L.masked_mean((tis >= tis_cap).float(), loss_mask).item()}
    return out | {"policy/updates": float(len(stats["loss"])), "policy/early_stopped": float(stopped)}


def metrics(b: Batch, adv: torch.Tensor) -> dict:
    """What every algorithm logs besides its update statistics."""
    k1 = (L.kl_estimate(b.old, b.ref, "k1") * b.mask).sum(1)
    k3 = (L.kl_estimate(b.old, b.ref, "k3") * b.mask).sum(1)
    diff = (b.raw - b.engine_lp).abs()[b.mask]
    adv_tok = adv[:, None].expand_as(b.mask) if adv.dim() == 1 else adv
    return {"policy/entropy": L.masked_mean(b.entropy, b.mask).item(),
            "policy/advantage_abs": L.masked_mean(adv_tok.abs(), b.mask).item(),
            "kl/k1": k1.mean().item(), "kl/k3": k3.mean().item(),
            "sync/logprob_diff": diff.mean().item(), "sync/logprob_diff_max": diff.max().item(),
            "sync/tokens": diff.numel()}


def mean(xs) -> float:
    return float(sum(xs) / len(xs)) if len(xs) else 0.0
