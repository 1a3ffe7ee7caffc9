"""GRPO and its variants (Dr. GRPO, DAPO) as one update rule, run inside the learner actor.

Per step: n samples per prompt -> group-normalised outcome advantages -> `epochs` passes of the
clipped objective over minibatches, with an optional k3 KL-to-reference term in the loss
(METHODS.md §9.4-9.6). Variants are config: loss_agg grpo | dr_grpo | dapo, std_norm,
clip_low/clip_high, kl_coef, dynamic_sampling.
"""
from __future__ import annotations

import torch

from policies.logprobs import pad_rollouts, token_logprobs
from rl import losses as L


def rollout_batch(rollouts):
    """Padded tensors plus the engine's sampled log-probs laid out like the learner's (B, T-1)."""
    ids, attn, mask = pad_rollouts(rollouts)
    engine = torch.zeros(mask.shape)
    for b, r in enumerate(rollouts):
        engine[b][mask[b]] = torch.tensor(r.logprobs, dtype=torch.float32)
    return ids, attn, mask, engine


@torch.no_grad()
def forward_stats(model, ids, attn):
    """Token log-probs (B, T-1) and per-token entropy (B, T-1) without grad."""
    logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float()
    logp_all = logits.log_softmax(-1)
    return logp_all.gather(-1, ids[:, 1:, None]).squeeze(-1), -(logp_all.exp() * logp_all).sum(-1)


def update(policy, ref, optimizer, rollouts, rewards: list[float], cfg) -> dict:
    """One GRPO step on a batch of prompt-major rollouts (`cfg.samples_per_prompt` per prompt)."""
    ids, attn, mask, engine_lp = rollout_batch(rollouts)
    old, entropy = forward_stats(policy, ids, attn)
    ref_lp, _ = forward_stats(ref, ids, attn)
    r = torch.tensor(rewards, dtype=torch.float32)
    adv = L.group_advantages(r, cfg.samples_per_prompt, cfg.std_norm, cfg.adv_eps)
    seq_weight = torch.ones(len(rollouts))
    zero_var = (r.view(-1, cfg.samples_per_prompt).std(1) == 0) if cfg.samples_per_prompt > 1 else torch.ones(1, dtype=torch.bool)
    if cfg.dynamic_sampling:  # DAPO: groups with one reward value carry no signal; keep them out
        seq_weight = (~zero_var).repeat_interleave(cfg.samples_per_prompt).float()
    loss_mask = mask.float() * seq_weight[:, None]

    stats = {"loss": [], "clipfrac": [], "grad_norm": []}
    B = len(rollouts)
    for _ in range(cfg.epochs):
        for mb in torch.randperm(B).split(cfg.minibatch):
            if loss_mask[mb].sum() == 0:
                continue
            logits = policy(input_ids=ids[mb], attention_mask=attn[mb]).logits
            logp = token_logprobs(logits, ids[mb])
            pg, clipped = L.clipped_pg_loss(logp, old[mb], adv[mb], cfg.clip_low, cfg.clip_high)
            per_token = pg + cfg.kl_coef * L.kl_estimate(logp, ref_lp[mb], cfg.kl_estimator) if cfg.kl_coef else pg
            loss = L.aggregate(per_token, loss_mask[mb], cfg.loss_agg, constant=cfg.max_tokens)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            stats["grad_norm"].append(float(torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)))
            optimizer.step()
            stats["loss"].append(loss.item())
            stats["clipfrac"].append(L.masked_mean(clipped, loss_mask[mb]).item())

    mean = lambda xs: sum(xs) / len(xs) if xs else 0.0  # noqa: E731
    k1 = (L.kl_estimate(old, ref_lp, "k1") * mask).sum(1)
    k3 = (L.kl_estimate(old, ref_lp, "k3") * mask).sum(1)
    diff = (old - engine_lp).abs()[mask]
    return {"policy/loss": mean(stats["loss"]), "policy/clipfrac": mean(stats["clipfrac"]),
            "policy/grad_norm": mean(stats["grad_norm"]), "policy/entropy": L.masked_mean(entropy, mask).item(),
            "policy/advantage_abs": adv.abs().mean().item(), "grpo/zero_var_groups": zero_var.float().mean().item(),
            "kl/k1": k1.mean().item(), "kl/k3": k3.mean().item(),
            "sync/logprob_diff": diff.mean().item(), "sync/logprob_diff_max": diff.max().item(),
            "sync/tokens": diff.numel()}
