"""Recompute the log-probs of sampled tokens with an HF model, and compare them with an engine's."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from policies.engine import Rollout


def pad_rollouts(rollouts: list[Rollout], pad_id: int = 0):
    """Right-padded batch of prompt+completion.

    Returns input_ids, attention_mask (B, T) and completion_mask (B, T-1), where
    completion_mask[b, t] marks that token t+1 is a completion token (the target of logits t).
    Right padding keeps position ids 0..L-1 identical to generation, which the log-prob check needs.
    """
    seqs = [r.prompt_ids + r.completion_ids for r in rollouts]
    T = max(map(len, seqs))
    # built from Python lists in one go: a learner step pads every step's batch (a few tensor ops per row
    # cost milliseconds at the arith size)
    ids = torch.tensor([s + [pad_id] * (T - len(s)) for s in seqs], dtype=torch.long)
    n = torch.tensor([len(s) for s in seqs])[:, None]
    p = torch.tensor([len(r.prompt_ids) for r in rollouts])[:, None]
    cols = torch.arange(T)
    return ids, (cols < n).long(), (cols[:-1] >= p - 1) & (cols[:-1] < n - 1)


def first_completion(comp: torch.Tensor) -> int:
    """The first column of a (B, T-1) completion mask (`pad_rollouts`) any row has a completion token at."""
    cols = comp.any(0).nonzero()
    return int(cols[0]) if len(cols) else 0


def logits_from(model, ids: torch.Tensor, attn: torch.Tensor, first: int) -> torch.Tensor:
    """Logits at positions `first`.. of ids (B, w) only: earlier positions predict prompt tokens, and at
    a 49k vocabulary (SmolLM2) their LM-head rows and log-softmax are most of a chat prompt's cost
    (HF's `logits_to_keep`, as TRL cuts them)."""
    return model(input_ids=ids, attention_mask=attn, logits_to_keep=ids.shape[1] - first).logits


def token_logprobs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log p(ids[:, t+1] | ids[:, :t+1]) from logits (B, T, V) -> (B, T-1), in float32."""
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    return logp.gather(-1, ids[:, 1:, None]).squeeze(-1)


@torch.no_grad()
def completion_logprobs(model, rollouts: list[Rollout], batch_size: int = 16) -> list[torch.Tensor]:
    """Per-rollout tensors of the completion tokens' log-probs under `model` (temperature 1)."""
    out = []
    device = next(model.parameters()).device
    for i in range(0, len(rollouts), batch_size):
        chunk = rollouts[i : i + batch_size]
        ids, attn, comp = pad_rollouts(chunk)
        f = first_completion(comp)
        lp = token_logprobs(logits_from(model, ids.to(device), attn.to(device), f), ids[:, f:].to(device))
        out.extend(lp[b][comp[b, f:].to(device)].cpu() for b in range(len(chunk)))
    return out


def check_logprobs(model, rollouts: list[Rollout]) -> dict[str, float]:
    """Mean and max |engine log p - model log p| over every completion token of `rollouts`."""
    ours = completion_logprobs(model, rollouts)
    return gap_stats(torch.cat([(o - torch.tensor(r.logprobs)).abs() for o, r in zip(ours, rollouts)]), "check_logprobs")


def gap_stats(diffs: torch.Tensor, what: str) -> dict[str, float]:
    """Mean and max of per-token |engine - model| log-prob gaps, and how many tokens (`what` names the caller
    in the error when there are none)."""
    if diffs.numel() == 0:
        raise ValueError(f"{what}: the rollouts have no completion tokens")
    return {"mean": diffs.mean().item(), "max": diffs.max().item(), "tokens": diffs.numel()}


def text_rollouts(tokenizer, prompts: list[str], responses: list[str], add_eos: bool = True) -> list[Rollout]:
    """Rollouts for (prompt, response) text pairs, tokenized with *this* model's tokenizer.

    Prompt and response are tokenized apart and joined, as trainers do, so the response's
    tokens are the same whatever the prompt ends with.
    """
    out = []
    for i, (p, r) in enumerate(zip(prompts, responses)):
        pid = tokenizer(p, add_special_tokens=False).input_ids
        rid = tokenizer(r, add_special_tokens=False).input_ids + ([tokenizer.eos_token_id] if add_eos else [])
        out.append(Rollout(i, pid, rid, r, [0.0] * len(rid), "stop"))
    return out
