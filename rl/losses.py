"""The RL math as small pure tensor functions (shapes in docstrings); METHODS.md §8-9.

B = sequences in a batch, T = response tokens (right-padded), `mask` (B, T) marks real response
tokens. Log-probs are per token, float32.
"""
from __future__ import annotations

import math

import torch

LOSS_AGGREGATIONS = ("grpo", "dr_grpo", "dapo")


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim=None) -> torch.Tensor:
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp_min(1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp_min(1)


def group_advantages(rewards: torch.Tensor, group_size: int, std_norm: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """GRPO outcome advantages (B,) -> (B,): (r - group mean) / (group std + eps).

    Groups are consecutive runs of `group_size` samples of one prompt. std is the unbiased
    (n-1) one, as verl and TRL use; `std_norm=False` gives Dr. GRPO's r - mean. A group whose
    rewards are all equal gets advantage 0 (no signal), whatever `std_norm`.
    """
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    r = rewards.view(-1, group_size).float()
    centered = r - r.mean(dim=1, keepdim=True)
    if std_norm and group_size > 1:
        std = r.std(dim=1, keepdim=True)
        centered = torch.where(std > 0, centered / (std + eps), torch.zeros_like(centered))
    return centered.view(-1)


def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Leave-one-out baseline (B,) -> (B,): r_i - mean of the other k-1 rewards of its group."""
    if group_size < 2:
        raise ValueError("RLOO needs at least 2 samples per prompt")
    r = rewards.view(-1, group_size).float()
    return (r - (r.sum(dim=1, keepdim=True) - r) / (group_size - 1)).view(-1)


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k3", clamp: float = 10.0) -> torch.Tensor:
    """Per-token estimate of KL[pi || ref] from samples of pi (Schulman's k1/k2/k3), clamped to
    +-`clamp` as OpenRLHF/verl do. k1 = log pi - log ref; k2 = (k1)^2 / 2; k3 = e^{-k1} - 1 + k1."""
    d = logp - ref_logp
    if kind == "k1":
        out = d
    elif kind == "k2":
        out = 0.5 * d.square()
    elif kind == "k3":
        out = torch.exp((-d).clamp(-20, 20)) - 1 + d
    else:
        raise ValueError(f"unknown KL estimator {kind!r}; expected k1, k2 or k3")
    return out.clamp(-clamp, clamp)


def clipped_pg_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor,
                    clip_low: float = 0.2, clip_high: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO-clip per-token loss (B, T) and a clipped indicator (B, T).

    loss = max(-A rho, -A clip(rho, 1 - clip_low, 1 + clip_high)), rho = exp(logp - old_logp);
    `adv` is (B, T) or (B,) (broadcast over tokens, as GRPO's outcome advantage).
    """
    if adv.dim() == 1:
        adv = adv[:, None].expand_as(logp)
    ratio = torch.exp(logp - old_logp)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1 - clip_low, 1 + clip_high)
    return torch.maximum(unclipped, clipped), (clipped > unclipped).float()


def aggregate(loss: torch.Tensor, mask: torch.Tensor, mode: str, constant: float | None = None) -> torch.Tensor:
    """Per-token loss (B, T) -> scalar.

    grpo:    mean over sequences of each sequence's token mean (the paper's 1/G sum_i 1/|o_i| sum_t)
    dapo:    sum over all tokens / number of tokens (token-level, DAPO)
    dr_grpo: sum over all tokens / (B * constant), `constant` fixed, e.g. max_tokens (Dr. GRPO)
    """
    mask = mask.to(loss.dtype)
    if mode == "grpo":
        return ((loss * mask).sum(1) / mask.sum(1).clamp_min(1)).mean()
    if mode == "dapo":
        return (loss * mask).sum() / mask.sum().clamp_min(1)
    if mode == "dr_grpo":
        if not constant:
            raise ValueError("dr_grpo aggregation needs a fixed constant (e.g. max_tokens)")
        return (loss * mask).sum() / (loss.shape[0] * constant)
    raise ValueError(f"unknown loss aggregation {mode!r}; expected one of {LOSS_AGGREGATIONS}")


def bon_kl(n: int) -> float:
    """Analytic KL(best-of-n || policy) = log n - (n - 1) / n nats (tie-free proxy scores)."""
    return math.log(n) - (n - 1) / n


def bon_expected_gold(proxy: list[float], gold: list[float], n: int) -> float:
    """Unbiased E[gold of the proxy-argmax among n samples drawn without replacement] from one pool.

    Sort the pool of M by proxy ascending (j = 1..M): sum_{j=n}^{M} C(j-1, n-1) / C(M, n) * gold_j.
    """
    M = len(proxy)
    if not 1 <= n <= M:
        raise ValueError(f"best-of-{n} needs 1 <= n <= pool size {M}")
    order = sorted(range(M), key=lambda i: proxy[i])
    total = math.comb(M, n)
    return sum(math.comb(j - 1, n - 1) / total * gold[order[j - 1]] for j in range(n, M + 1))
