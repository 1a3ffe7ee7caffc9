"""PPO with a learned critic (Ouyang et al. 2022 / Ziegler et al. 2019 as OpenRLHF and TRL run it).

Per step: the critic's values V(s_t) of every response token (state = the prefix before token t);
per-token rewards -beta * KL_t (placement=reward) plus the score at the last token; GAE(gamma,
lambda) advantages, whitened over the batch; the shared clipped policy update (optional dual-clip,
entropy bonus, target-KL early stop); then the critic's clipped value loss over the same epochs x
minibatches with its own optimizer and learning rate.

The critic is a transformer body with a scalar head, initialised from the policy (head zero: V = 0
at the start) or from a Bradley-Terry reward model (its score head copied), `algo.critic.init`.
"""
from __future__ import annotations

import glob
import json
import os

import torch
from safetensors import safe_open
from transformers import AutoModel

from rl import losses as L
from rl.algos import common


class Critic(torch.nn.Module):
    def __init__(self, path: str):
        super().__init__()
        self.body = AutoModel.from_pretrained(path, dtype=torch.float32, use_safetensors=True)
        hidden = self.body.config.hidden_size
        self.head = torch.nn.Linear(hidden, 1)
        torch.nn.init.zeros_(self.head.weight)
        torch.nn.init.zeros_(self.head.bias)
        score = _score_head(path)
        if score is not None:
            if tuple(score.shape) != (1, hidden):
                raise ValueError(f"critic init {path!r}: score head of shape {tuple(score.shape)}, expected (1, {hidden})")
            self.head.weight.data.copy_(score)

    def forward(self, ids: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """(B, T) -> values (B, T-1) aligned with the completion mask: V of the prefix ids[:, :t+1]."""
        hidden = self.body(input_ids=ids, attention_mask=attn).last_hidden_state
        return self.head(hidden[:, :-1]).squeeze(-1).float()


def _score_head(path: str) -> torch.Tensor | None:
    """A sequence-classification RM's `score.weight`, or None for any other checkpoint."""
    for file in sorted(glob.glob(os.path.join(path, "*.safetensors"))):
        with safe_open(file, "pt") as f:
            if "score.weight" in f.keys():
                return f.get_tensor("score.weight").float()
    return None


def critic_path(cfg, policy_path: str, zoo_dir) -> str:
    """Where `algo.critic.init` points: `policy`, `reward` (the run's reward model) or a directory.
    Its vocabulary must be the policy's: the critic reads the policy's token ids."""
    from rewards import artifact_path

    init = cfg.algo.critic.init
    if init == "policy":
        return policy_path
    if init == "reward":
        if cfg.reward.type != "rm":
            raise ValueError(f"algo.critic.init=reward needs a reward model (reward.type=rm), "
                             f"but reward {cfg.reward.name!r} has type {cfg.reward.type!r}")
        path = artifact_path(cfg.reward, "artifact", zoo_dir)
    else:
        path = str(init)
        if not os.path.isdir(path):
            raise ValueError(f"algo.critic.init={init!r}: expected policy, reward or a model directory")
    if _vocab(path) != _vocab(policy_path):
        raise ValueError(f"algo.critic.init={init!r}: {path!r} has a different vocabulary from the policy {policy_path!r}")
    return path


def _vocab(path: str):
    file = os.path.join(path, "tokenizer.json")
    if not os.path.exists(file):
        return None
    with open(file) as f:
        return json.load(f)["model"]["vocab"]


def update(learner, rollouts, rewards: list[float]) -> dict:
    cfg = learner.cfg
    b = common.prepare(learner, rollouts, rewards)
    mask = b.mask.float()
    with torch.no_grad():
        old_values = torch.zeros(mask.shape)
        for idx, w, values in _values(learner, b, torch.arange(len(b.ids))):
            old_values[idx, : w - 1] = values.cpu()
        old_values *= mask
    r = L.token_rewards(b.scores, b.mask, b.kl, common.reward_beta(learner))
    adv, returns = L.gae(r, old_values, b.mask, cfg.gamma, cfg.lam)
    if cfg.whiten_advantages:
        adv = L.masked_whiten(adv, b.mask)
    stats = common.policy_update(learner, b, adv, mask)
    return (stats | value_update(learner, b, old_values, returns) | common.metrics(b, adv)
            | {"value/explained_variance": L.explained_variance(old_values, returns, b.mask),
               "value/mean": L.masked_mean(old_values, b.mask).item(),
               "value/returns_mean": L.masked_mean(returns, b.mask).item()})


def _values(learner, b: common.Batch, rows: torch.Tensor):
    """The critic's values of `rows` in the policy's passes (`algo.micro_batch` / `micro_tokens`: the
    critic is a model of the policy's size, so the same memory bound holds), each pass cut to its
    longest sequence: (the pass's rows, its width w, values (rows, w - 1) on the learner's device)."""
    micro, _, tokens, _ = common.pass_args(learner.cfg)
    for idx in common.micro_batches(rows, b.attn, micro, tokens):
        w = common._width(b.attn[idx])
        yield idx, w, learner.critic(b.ids[idx, :w].to(learner.device), b.attn[idx, :w].to(learner.device))


def value_update(learner, b: common.Batch, old_values: torch.Tensor, returns: torch.Tensor) -> dict:
    """The critic's epochs x minibatches on the clipped value loss (coefficient `critic.value_coef`), a
    minibatch's gradient accumulated over its passes (each pass's masked sum over the minibatch's tokens)."""
    cfg, critic, opt, dev = learner.cfg, learner.critic, learner.critic_optimizer, learner.device
    losses, clipfracs = [], []
    for _ in range(cfg.epochs):
        for mb in torch.randperm(len(b.ids)).split(cfg.minibatch):
            tokens = b.mask[mb].sum().clamp_min(1).item()
            opt.zero_grad(set_to_none=True)
            loss = clipped_sum = 0.0
            for idx, w, values in _values(learner, b, mb):
                cols = slice(0, w - 1)
                m = b.mask[idx, cols].to(dev)
                per_token, clipped = L.clipped_value_loss(values, old_values[idx, cols].to(dev), returns[idx, cols].to(dev),
                                                          cfg.critic.value_clip)
                part = cfg.critic.value_coef * (per_token * m).sum() / tokens
                part.backward()
                loss += part.item()
                clipped_sum += (clipped * m).sum().item()
            torch.nn.utils.clip_grad_norm_(critic.parameters(), cfg.max_grad_norm)
            opt.step()
            losses.append(loss)
            clipfracs.append(clipped_sum / tokens)
    return {"value/loss": common.mean(losses), "value/clipfrac": common.mean(clipfracs)}
