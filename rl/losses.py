"""The RL math as small pure tensor functions (shapes in docstrings). References: GRPO (Shao et al.
2024, DeepSeekMath), Dr. GRPO (Liu et al. 2025), DAPO (Yu et al. 2025), PPO/GAE (Schulman et al.
2017, 2016), RLOO (Ahmadian et al. 2024), REINFORCE++ (Hu 2025), best-of-n (Gao et al. 2023).

B = sequences in a batch, T = response tokens (right-padded), `mask` (B, T) marks real response
tokens. Log-probs are per token, float32.
"""
from __future__ import annotations

import math

import torch

# verl's names are accepted too: token_mean is DAPO's rule, seq_mean_token_mean GRPO's.
LOSS_AGGREGATIONS = {"grpo": "grpo", "dr_grpo": "dr_grpo", "dapo": "dapo", "token_mean": "dapo",
                     "seq_mean_token_mean": "grpo", "seq_mean_token_sum_norm": "dr_grpo"}


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim=None) -> torch.Tensor:
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp_min(1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp_min(1)


def zero_variance(rewards: torch.Tensor, group_size: int, rtol: float = 1e-6) -> torch.Tensor:
    """(B,) -> (G,) bool: the group's rewards are all equal up to float noise.

    A tolerance, not `std == 0`: identical non-dyadic floats ([0.1] * 8) have a float32 std of ~1e-8,
    and dividing by it turns rounding into advantages of one sign (TRL tests with isclose too).
    """
    r = rewards.view(-1, group_size).double()
    spread = r.max(dim=1).values - r.min(dim=1).values
    return spread <= rtol * r.abs().max(dim=1).values.clamp_min(1.0)


def group_advantages(rewards: torch.Tensor, group_size: int, std_norm: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """GRPO outcome advantages (B,) -> (B,): (r - group mean) / (group std + eps).

    Groups are consecutive runs of `group_size` samples of one prompt. std is the unbiased
    (n-1) one, as verl and TRL use; `std_norm=False` gives Dr. GRPO's r - mean. A group whose
    rewards are all equal (`zero_variance`) gets advantage exactly 0 (no signal), whatever `std_norm`.
    """
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    r = rewards.view(-1, group_size).float()
    centered = r - r.mean(dim=1, keepdim=True)
    if std_norm and group_size > 1:
        centered = centered / (r.std(dim=1, keepdim=True) + eps)
    if group_size > 1:
        centered = torch.where(zero_variance(rewards, group_size)[:, None], torch.zeros_like(centered), centered)
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


def clipped_pg_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, clip_low: float = 0.2,
                    clip_high: float = 0.2, dual_clip: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO-clip per-token loss (B, T) and a clipped indicator (B, T).

    loss = max(-A rho, -A clip(rho, 1 - clip_low, 1 + clip_high)), rho = exp(logp - old_logp);
    `adv` is (B, T) or (B,) (broadcast over tokens, as GRPO's outcome advantage).
    Dual-clip (Ye et al. 2020, c = `dual_clip` > 1): where A < 0 the loss is also capped at -c A, so
    a token whose ratio has run far up cannot push the loss without bound.
    """
    if adv.dim() == 1:
        adv = adv[:, None].expand_as(logp)
    ratio = torch.exp(logp - old_logp)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1 - clip_low, 1 + clip_high)
    loss = torch.maximum(unclipped, clipped)
    was_clipped = clipped > unclipped
    if dual_clip is not None:
        if dual_clip <= 1:
            raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
        capped = (adv < 0) & (loss > -dual_clip * adv)
        loss = torch.where(capped, -dual_clip * adv, loss)
        was_clipped = was_clipped | capped
    return loss, was_clipped.float()


def aggregate(loss: torch.Tensor, mask: torch.Tensor, mode: str, constant: float | None = None) -> torch.Tensor:
    """Per-token loss (B, T) -> scalar.

    grpo:    mean over sequences of each sequence's token mean (the paper's 1/G sum_i 1/|o_i| sum_t)
    dapo:    sum over all tokens / number of tokens (token-level, DAPO)
    dr_grpo: sum over all tokens / (B * constant), `constant` fixed, e.g. max_tokens (Dr. GRPO)
    A sequence with no token in the mask (e.g. a zero-variance group left out by dynamic sampling)
    is not counted in B, as verl's agg_loss: otherwise masking it would only rescale the loss.
    """
    return aggregate_numerator(loss, mask, mode) / aggregate_denominator(mask, mode, constant)


def aggregate_numerator(loss: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """What `aggregate` divides: a batch's is the sum of its parts', so micro-batches each divided
    by the whole minibatch's `aggregate_denominator` add up to the minibatch's loss."""
    mask = mask.to(loss.dtype)
    if _agg_mode(mode) == "grpo":
        return ((loss * mask).sum(1) / mask.sum(1).clamp_min(1)).sum()
    return (loss * mask).sum()


def aggregate_denominator(mask: torch.Tensor, mode: str, constant: float | None = None) -> torch.Tensor:
    mode, mask = _agg_mode(mode), mask.float()
    if mode == "dapo":
        return mask.sum().clamp_min(1)
    sequences = (mask.sum(1) > 0).sum().clamp_min(1)
    if mode == "grpo":
        return sequences
    if not constant:
        raise ValueError("dr_grpo aggregation needs a fixed constant (e.g. max_tokens)")
    return sequences * constant


def _agg_mode(mode: str) -> str:
    if mode not in LOSS_AGGREGATIONS:
        raise ValueError(f"unknown loss aggregation {mode!r}; expected one of {', '.join(LOSS_AGGREGATIONS)}")
    return LOSS_AGGREGATIONS[mode]


def truncated_is_weights(learner_logp: torch.Tensor, engine_logp: torch.Tensor, cap: float) -> torch.Tensor:
    """Per-token min(pi_learner / pi_engine, cap) on the sampled tokens, no gradient (TIS, Yao et al.
    2025; TRL's vllm_importance_sampling_correction): the engine (e.g. bf16) sampled from a slightly
    different distribution than the learner's; the capped ratio re-weights the loss towards it."""
    if cap <= 0:
        raise ValueError(f"truncated importance-sampling cap must be > 0, got {cap}")
    return torch.exp(learner_logp - engine_logp).clamp(max=cap).detach()


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) over the masked entries only; var is the unbiased (n-1) one, as
    TRL's masked_whiten. `shift_mean=False` adds the mean back (scale only). Unmasked entries -> 0."""
    mask = mask.to(x.dtype)
    n = mask.sum()
    if n < 2:
        raise ValueError(f"whitening needs at least 2 masked entries, got {int(n)}")
    mean = (x * mask).sum() / n
    var = ((x - mean).square() * mask).sum() / (n - 1)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


def token_rewards(scores: torch.Tensor, mask: torch.Tensor, kl: torch.Tensor | None = None, beta: float = 0.0) -> torch.Tensor:
    """Per-token rewards (B, T): -beta * kl on every response token, plus the sequence's score (B,)
    on its last response token (EOS, or the last one when truncated)."""
    mask = mask.to(torch.float32)
    r = -beta * kl * mask if kl is not None and beta else torch.zeros_like(mask)
    last = (mask * torch.arange(mask.shape[1])).argmax(1)
    r[torch.arange(len(scores)), last] += scores.float()
    return r


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """Generalised advantage estimation over right-padded response tokens (B, T).

    delta_t = r_t + gamma V_{t+1} - V_t (V after the last token is 0: the episode ends there);
    A_t = delta_t + gamma lam A_{t+1}; returns A and the value targets A + V. Masked-out entries
    (prompt positions, right padding) contribute nothing and come back as 0.
    """
    mask = mask.to(torch.float32)
    values, rewards = values * mask, rewards * mask
    adv = torch.zeros_like(rewards)
    next_value, next_adv = torch.zeros(len(rewards)), torch.zeros(len(rewards))
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv[:, t] = (delta + gamma * lam * next_adv) * mask[:, t]
        # a masked step (right padding) passes the next real token's value and advantage through
        next_value = torch.where(mask[:, t] > 0, values[:, t], next_value)
        next_adv = torch.where(mask[:, t] > 0, adv[:, t], next_adv)
    return adv, (adv + values) * mask


def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """G_t = sum_{t' >= t} gamma^(t'-t) r_t' over the response tokens (B, T) (REINFORCE++)."""
    zeros = torch.zeros_like(rewards)
    return gae(rewards, zeros, mask, gamma, 1.0)[0]


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       clip: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token value loss (B, T) 0.5 max((V - R)^2, (V_clip - R)^2), V_clip = V_old + clip(V - V_old,
    -clip, clip) (PPO2 / OpenRLHF); `clip=None` gives 0.5 (V - R)^2. Also the clipped indicator."""
    unclipped = (values - returns).square()
    if clip is None:
        return 0.5 * unclipped, torch.zeros_like(values)
    v_clip = old_values + (values - old_values).clamp(-clip, clip)
    clipped = (v_clip - returns).square()
    return 0.5 * torch.maximum(unclipped, clipped), (clipped > unclipped).float()


def explained_variance(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var[target - pred] / Var[target] over masked entries (1: perfect, 0: no better than the mean)."""
    var_t = masked_mean((target - masked_mean(target, mask)).square(), mask)
    resid = target - pred
    var_r = masked_mean((resid - masked_mean(resid, mask)).square(), mask)
    return float("nan") if var_t == 0 else (1 - var_r / var_t).item()


def adaptive_kl_coef(beta: float, kl: float, target: float, horizon: float, n: int) -> float:
    """Ziegler et al. (2019) proportional controller: one update after a batch of n sequences whose
    measured KL is `kl` (same unit as `target`): beta * (1 + clip(kl / target - 1, -0.2, 0.2) * n / horizon)."""
    error = min(max(kl / target - 1.0, -0.2), 0.2)
    return beta * (1.0 + error * n / horizon)


def bon_kl(n: int) -> float:
    """KL(best-of-n || policy) <= log n - (n - 1) / n nats: exact only for a continuous (tie-free)
    proxy, an upper bound otherwise (Beirami et al. 2024, "Theoretical guarantees on the best-of-n
    alignment policy"); far off when the proxy ties (see `bon_kl_exact`)."""
    return math.log(n) - (n - 1) / n


def _proxy_classes(proxy: list[float]) -> list[tuple[float, list[int]]]:
    """(value, pool indices) per distinct proxy value, ascending. A NaN proxy has no place in the
    order and would silently scramble the sort, so it is an error."""
    if any(math.isnan(p) for p in proxy):
        raise ValueError("best-of-n needs proxy scores without NaN")
    by = {}
    for i, p in enumerate(proxy):
        by.setdefault(p, []).append(i)
    return sorted(by.items())


def bon_kl_exact(proxy: list[float], n: int) -> float:
    """KL(best-of-n || base) in nats, taking the pool (uniform over its M samples) as the base policy.

    Best-of-n of n iid draws with a uniform tie-break picks proxy class k (value v_k, share p_k of
    the pool) with q_k = F(v_k)^n - F(v_{k-1})^n (F the pool's CDF) and is uniform within the class,
    as the base is, so the KL is the classes' sum q_k log(q_k / p_k). Ties make it far smaller than
    `bon_kl`'s bound: a binary proxy at p = 0.5 gives about log 2 at n = 32, the bound 2.50.
    """
    if n < 1:
        raise ValueError(f"best-of-{n} needs n >= 1")
    M, below, kl = len(proxy), 0, 0.0
    for _, members in _proxy_classes(proxy):
        k = len(members)
        q = ((below + k) ** n - below**n) / M**n  # exact integers, one rounding: n = 1 gives q = p
        if q > 0:
            kl += q * math.log(q * M / k)
        below += k
    return kl


def bon_expected_gold(proxy: list[float], gold: list[float], n: int) -> float:
    """Unbiased E[gold of the proxy-argmax among n samples drawn without replacement] from one pool,
    proxy ties broken uniformly at random (Gao et al. 2023 estimate best-of-n from one pool this way).

    Given the subset's max proxy is v_k the pick is uniform over the subset's members of value v_k,
    which by symmetry is uniform over the pool's class k; so E = sum_k P(max = v_k) * mean gold of
    class k, P(max = v_k) = [C(#<=v_k, n) - C(#<v_k, n)] / C(M, n). Tie-free it is the order-statistic
    sum_j C(j-1, n-1) / C(M, n) gold_(j).
    """
    M = len(proxy)
    if not 1 <= n <= M:
        raise ValueError(f"best-of-{n} needs 1 <= n <= pool size {M}")
    total, below, out = math.comb(M, n), 0, 0.0
    for _, members in _proxy_classes(proxy):
        k = len(members)
        p_max = (math.comb(below + k, n) - math.comb(below, n)) / total
        out += p_max * sum(gold[i] for i in members) / k
        below += k
    return out
