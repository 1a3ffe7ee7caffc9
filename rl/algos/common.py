"""What every policy-gradient algorithm here does the same way: the rollout batch as tensors, the
KL to the reference (where it goes, by config), and the clipped policy update over epochs x
minibatches. The algorithm files differ only in how they turn rewards into advantages.

What the learner computes per step is only what the config needs (as TRL and verl do):
- one update pass (`epochs: 1`, one minibatch of the whole batch, no KL in the reward, no TIS): the
  "old" log-probs are the update forward's own (before the optimizer step they are the sampling
  policy's; ratio = 1 exactly), so no separate no-grad pass; the sync check and the entropy come
  from that forward too. Otherwise a no-grad pass before the update gives them.
- the reference pass only when beta > 0 (or an adaptive beta) or `algo.kl.log_every_step`: then
  kl/k1 and kl/k3 are logged every step; otherwise the KL is measured at evaluation (eval/kl).
- a prompt and its samples as one packed row of a pass (`algo.share_prompt`, `_logits`): the prompt
  once, each completion after it under a mask, no padding inside the group, where that costs less.
- rows whose loss has no gradient (advantage 0 with no KL or entropy term in the loss: a GRPO or RLOO
  group of equal rewards, half the groups or more under a 0/1 verifier) run forward only, for what is
  logged of them; the gradient is the same.

With `algo.async_generation` a step's rollouts were sampled by the weights before the previous
update (one step off-policy): the clipped ratio is then pi_learner / pi_engine, the engine's own
log-probs of the sampled tokens (temperature 1, so the run samples at 1), as verl's and OpenRLHF's
asynchronous modes do.

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

from policies.logprobs import first_completion, logits_from, pad_rollouts
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
    ref: torch.Tensor | None  # (B, T-1) the reference's at the sampling temperature (None: not needed)
    entropy: torch.Tensor    # (B, T-1)
    kl: torch.Tensor         # (B, T-1) the configured KL estimate of old vs ref, 0 off the mask (and without ref)
    scores: torch.Tensor     # (B,) the reward source's scores
    group: torch.Tensor | None = None  # (B,) rows with the same prompt share an id (`prompt_groups`)
    plen: torch.Tensor | None = None   # (B,) prompt lengths
    fused: bool = False      # raw, old, entropy are filled by the update's own forward (single_pass)
    behaviour: bool = False  # ratios against engine_lp, the policy that sampled (algo.async_generation)


class _ChunkedLogprobs(torch.autograd.Function):
    """Rows (N, V) of logits -> the targets' log-probs (N,) and the entropies (N,) of softmax(logits /
    temperature), `chunk` rows at a time in float32, forward and backward: autograd's log_softmax would
    keep a float32 (N, V) output alive for the backward (gigabytes for a 49k vocabulary), this keeps
    only the logits and recomputes each chunk's softmax in the backward."""

    @staticmethod
    def forward(ctx, logits, targets, temperature, chunk):
        logp = torch.empty(len(logits), dtype=torch.float32, device=logits.device)
        entropy = torch.empty_like(logp)
        for s in range(0, len(logits), chunk):
            lsm = (logits[s : s + chunk].float() / temperature).log_softmax(-1)
            logp[s : s + chunk] = lsm.gather(-1, targets[s : s + chunk, None]).squeeze(-1)
            entropy[s : s + chunk] = -(lsm.exp() * lsm).sum(-1)
        ctx.save_for_backward(logits, targets, entropy)
        ctx.temperature, ctx.chunk = temperature, chunk
        ctx.set_materialize_grads(False)  # an unused entropy gets None: its backward is skipped
        return logp, entropy

    @staticmethod
    def backward(ctx, g_logp, g_entropy):
        logits, targets, entropy = ctx.saved_tensors
        grad = torch.empty_like(logits)
        for s in range(0, len(logits), ctx.chunk):
            lsm = (logits[s : s + ctx.chunk].float() / ctx.temperature).log_softmax(-1)
            p = lsm.exp()
            g = torch.zeros_like(lsm)
            if g_logp is not None:  # d log p_y / dz = onehot(y) - p
                gl = g_logp[s : s + ctx.chunk, None]
                g = g.scatter_add_(-1, targets[s : s + ctx.chunk, None], gl) - p * gl
            if g_entropy is not None:  # dH / dz = -p (log p + H)
                g = g - p * (lsm + entropy[s : s + ctx.chunk, None]) * g_entropy[s : s + ctx.chunk, None]
            grad[s : s + ctx.chunk] = (g / ctx.temperature).to(grad.dtype)
        return grad, None, None, None


def token_logprobs_entropy(logits: torch.Tensor, ids: torch.Tensor, temperature: float = 1.0,
                           chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (B, T, V) of a model run on ids (B, T) -> log p(ids[:, t+1]) and the entropy at
    position t, (B, T-1) each, of softmax(logits / temperature), in float32, computed over the B*T
    rows `chunk` rows at a time (no float32 (B, T, V) copy). Gradients flow through both."""
    B, T, V = logits.shape
    # every row is scored (the last position gets a dummy target, dropped below): flattening all of
    # (B, T, V) is a view, flattening logits[:, :-1] would copy it
    targets = torch.cat([ids[:, 1:], torch.zeros_like(ids[:, :1])], 1).reshape(-1)
    logp, entropy = _ChunkedLogprobs.apply(logits.reshape(B * T, V), targets, float(temperature), int(chunk))
    return logp.view(B, T)[:, :-1], entropy.view(B, T)[:, :-1]


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _width(attn: torch.Tensor) -> int:
    """Columns that hold tokens: the batch is right-padded, so columns past its longest sequence
    change nothing before them (causal model) and a micro-batch is cut to this."""
    return int(attn.sum(1).max())


def prompt_groups(ids: torch.Tensor, attn: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded rows (`pad_rollouts`) -> an id per row, equal for rows with the same prompt, and
    each row's prompt length (a row without completion tokens is all prompt)."""
    has = mask.any(1)
    plen = torch.where(has, mask.int().argmax(1) + 1, attn.sum(1))
    seen: dict[tuple, int] = {}
    group = [seen.setdefault(tuple(row[:n]), len(seen)) for row, n in zip(ids.tolist(), plen.tolist())]
    return torch.tensor(group), plen


def micro_batches(idx: torch.Tensor, attn: torch.Tensor, micro: int | None, tokens: int | None,
                  group: torch.Tensor | None = None) -> list[torch.Tensor]:
    """The sequences `idx` as forward passes: longest first, each pass at most `micro` sequences and
    `tokens` padded tokens (its sequences x its longest; one longer sequence is a pass of its own),
    so a pass is cut to its own longest sequence instead of the batch's (`algo.micro_tokens`, verl's
    dynamic batch size). With `group` (`prompt_groups`), a prompt's rows stay next to each other
    (ordered by their longest) so that a pass shares their prompt's forward. All of `idx` in one
    pass, in its order, when neither limit is set."""
    if not micro and not tokens:
        return [idx]
    lengths = attn[idx].sum(1)
    order = torch.argsort(lengths, descending=True, stable=True)
    if group is not None:  # stable sorts: by group within length, then groups by their longest
        g = group[idx]
        longest = torch.zeros(int(g.max()) + 1, dtype=lengths.dtype).scatter_reduce(0, g, lengths, "amax")[g]
        order = order[torch.argsort(g[order], stable=True)]
        order = order[torch.argsort(longest[order], descending=True, stable=True)]
    out, start, width = [], 0, 0
    for i in range(len(order)):
        width = max(width, int(lengths[order[i]]))
        if i > start and ((micro and i - start >= micro) or (tokens and (i - start + 1) * width > tokens)):
            out.append(idx[order[start:i]])
            start, width = i, int(lengths[order[i]])
    return out + [idx[order[start:]]] if len(order) else out


def _pass_cost(rows: int, length: int, hidden: int) -> float:
    """Relative cost of a forward over `rows` x `length` tokens: per token the linear layers (~24 h^2
    flops a layer) plus attention over the row (~4 h flops per key)."""
    return rows * length * (1 + length / (6 * hidden))


def _bins(sizes: list[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: the indices of `sizes` in bins whose sizes sum to at most `capacity` (each
    size at most `capacity`)."""
    bins, room = [], []
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        j = next((j for j, r in enumerate(room) if r >= sizes[i]), len(bins))
        if j == len(bins):
            bins.append([])
            room.append(capacity)
        bins[j].append(i)
        room[j] -= sizes[i]
    return bins


def _packing(sizes: list[int], hidden: int) -> tuple[int, list[list[int]]]:
    """The packed rows' length and which packs each holds: of lengths 1-3x the longest pack (in steps of a
    quarter to 2x, then 2.5x, 3x), the one whose rows cost least (`_pass_cost`). Short packs share a row
    instead of each being padded to the longest; a longer row costs more attention, which the cost weighs."""
    options = [(c, _bins(sizes, c)) for c in sorted({int(max(sizes) * k) for k in (1, 1.25, 1.5, 1.75, 2, 2.5, 3)})]
    return min(options, key=lambda o: _pass_cost(len(o[1]), o[0], hidden))


def _logits(model, x: torch.Tensor, attn: torch.Tensor, plen: torch.Tensor, group: torch.Tensor | None,
            first: int) -> torch.Tensor:
    """`logits_from(model, x, attn, first)` for right-padded rows x (B, w) with prompt lengths `plen`,
    where rows with the same `group` id (the same prompt: a GRPO group) run as one pack when that costs
    less than the padded batch: the prompt once, then each sample's completion after it, under a mask
    that lets a completion see its prompt and its own earlier tokens only, with the positions it had when
    sampled; packs shorter than the longest share a row (`_packing`), each seeing only itself. One
    forward, each prompt computed once, little padding; the same numbers up to float rounding
    (tests/test_microbatch.py). Logits are computed only at the positions that predict completion tokens
    (zeros elsewhere)."""
    B, w = x.shape
    cfg = model.config
    lens, pl = attn.sum(1).tolist(), plen.tolist()
    packs: dict[int, list[int]] = {}
    for b, k in enumerate([] if group is None else group.tolist()):
        packs.setdefault(k, []).append(b)
    packs = list(packs.values())
    if not packs or getattr(cfg, "_attn_implementation", None) != "sdpa":  # packing needs a boolean 4-D mask
        return logits_from(model, x, attn, first)
    R, rows_of = _packing([pl[r[0]] + sum(lens[b] - pl[b] for b in r) for r in packs], cfg.hidden_size)
    if _pass_cost(len(rows_of), R, cfg.hidden_size) >= _pass_cost(B, w, cfg.hidden_size):
        return logits_from(model, x, attn, first)
    G, dev = len(rows_of), x.device
    # each filled slot of the (G, R) rows, flat: where it is, the row and column of x its token comes from (the
    # column is also its position: the one it was sampled at), its pack, its segment (-1: the prompt, b: row b's
    # completion); lists first and tensors once, as a step packs every batch
    at_, from_b, from_c, of_pack, of_seg = [], [], [], [], []
    rows, cols, src = [], [], []  # logits[rows, cols] come from the packed hidden state at flat index src
    for g, held in enumerate(rows_of):
        at = g * R
        for i in held:
            members, p = packs[i], pl[packs[i][0]]
            at_ += range(at, at + p)
            from_b += [members[0]] * p
            from_c += range(p)
            of_pack += [i] * p
            of_seg += [-1] * p
            last = at + p - 1  # the prompt's last slot predicts each completion's first token
            at += p
            for b in members:
                n = lens[b] - pl[b]
                at_ += range(at, at + n)
                from_b += [b] * n
                from_c += range(p, p + n)
                of_pack += [i] * n
                of_seg += [b] * n
                # completion token j of row b is predicted at column p - 1 + j: by the prompt's last position
                # (j = 0, shared by the pack) or by the packed slot of token j - 1
                rows += [b] * n
                cols += range(p - 1 - first, p - 1 - first + n)
                src += [last, *range(at, at + n - 1)] if n else []
                at += n
    at_, from_c = torch.tensor(at_), torch.tensor(from_c)
    ids, pos = torch.zeros(G * R, dtype=x.dtype), torch.zeros(G * R, dtype=torch.long)
    pack, seg = torch.full((G * R,), -1), torch.full((G * R,), -2)  # -1, -2: padding
    ids[at_], pos[at_] = x.cpu()[torch.tensor(from_b), from_c], from_c
    pack[at_], seg[at_] = torch.tensor(of_pack), torch.tensor(of_seg)
    ids, pos, pack, seg = (t.view(G, R) for t in (ids, pos, pack, seg))
    same = (pack[:, :, None] == pack[:, None, :]) & (pack[:, :, None] >= 0)
    q, k = seg[:, :, None], seg[:, None, :]
    causal = pos[:, :, None] >= pos[:, None, :]
    mask = same & ((k == -1) | (q == k)) & causal | torch.eye(R, dtype=torch.bool)  # padding sees itself
    out = model(input_ids=ids.to(dev), attention_mask=mask[:, None].to(dev), position_ids=pos.to(dev),
                output_hidden_states=True, logits_to_keep=1)
    hidden = out.hidden_states[-1].flatten(0, 1)  # the final norm's output
    picked = model.get_output_embeddings()(hidden[torch.tensor(src, device=dev)])
    logits = picked.new_zeros(B, w - first, picked.shape[-1])
    logits[torch.tensor(rows, device=dev), torch.tensor(cols, device=dev)] = picked
    return logits


@torch.no_grad()
def _forward(model, ids, attn, mask, temperature: float, micro: int | None = None, chunk: int = 1024,
             tokens: int | None = None, share: bool = True):
    """Sampled tokens' log-probs at `temperature` and at 1, and the entropy at `temperature`, (B, T-1)
    each on the CPU, in the passes of `micro_batches` (rows with one prompt sharing its forward when
    `share`); 0 off the completion mask `mask` before each pass's first completion position and past
    its longest sequence."""
    B, T = ids.shape
    out = torch.zeros(3, B, T - 1)
    group, plen = prompt_groups(ids, attn, mask)
    group = group if share else None
    for idx in micro_batches(torch.arange(B), attn, micro, tokens, group):
        w, f = _width(attn[idx]), first_completion(mask[idx])
        x = ids[idx, :w].to(_device(model))
        logits = _logits(model, x, attn[idx, :w].to(_device(model)), plen[idx], None if group is None else group[idx], f)
        logp, entropy = token_logprobs_entropy(logits, x[:, f:], temperature, chunk)
        raw = logp if temperature == 1 else token_logprobs_entropy(logits, x[:, f:], 1.0, chunk)[0]
        out[:, idx, f : w - 1] = torch.stack([logp, raw, entropy]).cpu()
    return out[0], out[1], out[2]


def prepare(learner, rollouts, rewards: list[float]) -> Batch:
    ids, attn, mask = pad_rollouts(rollouts)
    engine = engine_logprobs(rollouts, mask)
    cfg = learner.cfg
    fused = single_pass(learner, len(rollouts))
    if fused:
        old, raw, entropy = (torch.zeros(mask.shape) for _ in range(3))
    else:
        old, raw, entropy = _forward(learner.policy, ids, attn, mask, cfg.temperature, *pass_args(cfg))
    ref = _forward(learner.ref, ids, attn, mask, cfg.temperature, *pass_args(cfg))[0] if needs_ref(learner) else None
    kl = L.kl_estimate(old, ref, cfg.kl.estimator) * mask if ref is not None and not fused else torch.zeros(mask.shape)
    return Batch(ids, attn, mask, engine, raw, old, ref, entropy, kl, torch.tensor(rewards, dtype=torch.float32),
                 *prompt_groups(ids, attn, mask), fused, bool(cfg.get("async_generation")))


def engine_logprobs(rollouts, mask: torch.Tensor) -> torch.Tensor:
    """The engine's log-probs of the sampled tokens laid out as the completion mask (`pad_rollouts`), 0 off it."""
    bad = next((b for b, r in enumerate(rollouts) if len(r.logprobs) != len(r.completion_ids)), None)
    if bad is not None:
        raise ValueError(f"rollout {bad}: {len(rollouts[bad].logprobs)} log-probs for {len(rollouts[bad].completion_ids)} "
                         "completion tokens")
    engine = torch.zeros(mask.shape)
    engine[mask] = torch.tensor([x for r in rollouts for x in r.logprobs], dtype=torch.float32)  # row by row, as mask
    return engine


def needs_ref(learner) -> bool:
    """The reference's log-probs are computed on the step's batch: beta > 0, an adaptive beta, or asked for."""
    kl = learner.cfg.kl
    return learner.kl_coef > 0 or kl.controller == "adaptive" or bool(kl.get("log_every_step"))


def single_pass(learner, n: int) -> bool:
    """One optimizer step over the whole batch with nothing needing the old log-probs before it: the
    update's forward gives them (ratio = 1)."""
    cfg = learner.cfg
    return cfg.epochs == 1 and cfg.minibatch >= n and reward_beta(learner) == 0 and not cfg.get("tis_cap")


def pass_args(cfg) -> tuple:
    """`_forward`'s micro, chunk, tokens and share from the algo config."""
    return cfg.get("micro_batch"), logprob_chunk(cfg), cfg.get("micro_tokens"), cfg.get("share_prompt", True)


def logprob_chunk(cfg) -> int:
    """`algo.logprob_chunk`: rows (positions x sequences) per float32 log-softmax chunk."""
    return int(cfg.get("logprob_chunk") or 1024)


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
    dev, (micro, chunk, tokens, shared) = _device(policy), pass_args(cfg)
    share = b.group if shared else None
    beta = learner.kl_coef if cfg.kl.placement == "loss" else 0.0
    tis_cap = cfg.get("tis_cap")
    tis = L.truncated_is_weights(b.raw, b.engine_lp, tis_cap) if tis_cap else None
    stats = {"loss": [], "clipfrac": [], "grad_norm": [], "approx_kl": []}
    stopped = False
    for _ in range(cfg.epochs):
        for mb in torch.randperm(len(b.ids)).split(cfg.minibatch):
            # in batch order: a minibatch of the whole batch then packs its rows exactly as the pass that
            # gave the old log-probs did (the same float rounding: the first ratio is 1 to the bit)
            mb = mb.sort().values
            m = loss_mask[mb]
            live = _live(mb, loss_mask, adv, bool(beta or cfg.entropy_coef))
            # rows without gradient (nothing in the loss, or advantage 0 with no KL or entropy term: a GRPO
            # group of equal rewards) run without autograd, only for what is logged of them
            kl_sum = _quiet_pass(learner, b, mb[~live], loss_mask)
            if m.sum() == 0:
                continue
            # the minibatch's loss is a sum of micro-batch terms, each its numerator over the whole
            # minibatch's denominator, so the accumulated gradient is exactly the minibatch's
            denominator = L.aggregate_denominator(m, cfg.loss_agg, cfg.max_tokens)
            opt.zero_grad(set_to_none=True)
            passes = micro_batches(mb[live], b.attn, micro, tokens, share) if live.any() else []
            if not passes:  # a zero gradient, as if computed: the optimizer's step still runs
                for p in policy.parameters():
                    p.grad = torch.zeros_like(p) if p.requires_grad else None
            loss = clipped_sum = 0.0
            for mu in passes:
                t = _width(b.attn[mu]) - 1
                cols = slice(first_completion(b.mask[mu]), t)  # the positions whose logits can meet the loss
                mu_mask = loss_mask[mu, cols].to(dev)
                x = b.ids[mu, : t + 1].to(dev)
                logits = _logits(policy, x, b.attn[mu, : t + 1].to(dev), b.plen[mu], None if share is None else share[mu],
                                 cols.start)
                logp, entropy = token_logprobs_entropy(logits, x[:, cols.start :], cfg.temperature, chunk)
                if b.fused:  # this forward is the sampling policy's (no step taken yet)
                    with torch.no_grad():
                        raw = logp if cfg.temperature == 1 else token_logprobs_entropy(logits, x[:, cols.start :], 1.0, chunk)[0]
                    b.old[mu, cols], b.raw[mu, cols], b.entropy[mu, cols] = logp.detach().cpu(), raw.cpu(), entropy.detach().cpu()
                # with asynchronous generation the rollouts come from the weights before the last update:
                # the ratio is taken against the policy that sampled them (the engine's, temperature 1)
                old = (b.engine_lp if b.behaviour else b.old)[mu, cols].to(dev)
                kl_sum += (L.kl_estimate(old, logp.detach(), "k3") * mu_mask).sum().item()
                adv_mu = (adv[mu] if adv.dim() == 1 else adv[mu, cols]).to(dev)
                per_token, clipped = L.clipped_pg_loss(logp, old, adv_mu, cfg.clip_low, cfg.clip_high, cfg.dual_clip)
                if tis is not None:  # the policy-gradient term only, as TRL: the KL and entropy terms are exact
                    per_token = per_token * tis[mu, cols].to(dev)
                if beta:
                    per_token = per_token + beta * L.kl_estimate(logp, b.ref[mu, cols].to(dev), cfg.kl.estimator)
                if cfg.entropy_coef:
                    per_token = per_token - cfg.entropy_coef * entropy
                part = L.aggregate_numerator(per_token, mu_mask, cfg.loss_agg) / denominator.to(dev)
                part.backward()
                loss += part.item()
                clipped_sum += (clipped * mu_mask).sum().item()
            approx_kl = kl_sum / m.sum().item()
            if cfg.target_kl is not None and approx_kl > cfg.target_kl:
                # known only after every micro-batch's pass: the gradient is dropped, no step taken
                opt.zero_grad(set_to_none=True)
                stopped = True
                break
            stats["grad_norm"].append(float(torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)))
            opt.step()
            stats["loss"].append(loss)
            stats["clipfrac"].append(clipped_sum / m.sum().item())
            stats["approx_kl"].append(approx_kl)
        if stopped:
            break
    out = {f"policy/{k}": mean(v) for k, v in stats.items()}
    if tis is not None:
        out |= {"policy/tis_weight": L.masked_mean(tis, loss_mask).item(),
                "policy/tis_capped": L.masked_mean((tis >= tis_cap).float(), loss_mask).item()}
    return out | {"policy/updates": float(len(stats["loss"])), "policy/early_stopped": float(stopped)}


def _live(mb: torch.Tensor, loss_mask: torch.Tensor, adv: torch.Tensor, other_terms: bool) -> torch.Tensor:
    """(len(mb),) bool: the rows of minibatch `mb` whose loss can have a gradient: something of theirs in
    the loss, and a non-zero advantage there unless a KL or entropy term is in the loss too (PPO-clip's
    loss and its gradient are 0 where A = 0, whatever the ratio)."""
    m = loss_mask[mb] > 0
    if other_terms:
        return m.any(1)
    a = adv[mb][:, None].expand_as(m) if adv.dim() == 1 else adv[mb]
    return (m & (a != 0)).any(1)


def _quiet_pass(learner, b: Batch, idx: torch.Tensor, loss_mask: torch.Tensor) -> float:
    """The rows `idx` that the update's backward leaves out, forward only: their raw, old and entropy
    when the update's forward was to fill them (fused), and the k3 sum of old vs now over their loss
    tokens, returned (the update's approx_kl and `target_kl` count every loss token). Their clipped
    count is 0 (A = 0)."""
    m = loss_mask[idx]
    if not len(idx) or not (b.fused or m.any()):
        return 0.0
    cfg = learner.cfg
    now, raw, entropy = _forward(learner.policy, b.ids[idx], b.attn[idx], b.mask[idx], cfg.temperature, *pass_args(cfg))
    if b.fused:
        b.old[idx], b.raw[idx], b.entropy[idx] = now, raw, entropy
    old = (b.engine_lp if b.behaviour else b.old)[idx]
    return (L.kl_estimate(old, now, "k3") * m).sum().item()


def metrics(b: Batch, adv: torch.Tensor) -> dict:
    """What every algorithm logs besides its update statistics (the KL to the reference when it was computed)."""
    diff = (b.raw - b.engine_lp).abs()[b.mask]
    adv_tok = adv[:, None].expand_as(b.mask) if adv.dim() == 1 else adv
    out = {"policy/entropy": L.masked_mean(b.entropy, b.mask).item(),
           "policy/advantage_abs": L.masked_mean(adv_tok.abs(), b.mask).item(),
           "sync/logprob_diff": diff.mean().item(), "sync/logprob_diff_max": diff.max().item(),
           "sync/tokens": diff.numel()}
    if b.ref is not None:
        out["kl/k1"] = (L.kl_estimate(b.old, b.ref, "k1") * b.mask).sum(1).mean().item()
        out["kl/k3"] = (L.kl_estimate(b.old, b.ref, "k3") * b.mask).sum(1).mean().item()
    return out


def mean(xs) -> float:
    return float(sum(xs) / len(xs)) if len(xs) else 0.0
