"""URPO (Lu et al. 2025, arXiv 2507.17515): one model as player and referee in one GRPO loop.

Each step mixes three kinds of prompt groups (`algo.urpo.mix`, verifiable : ranking : open):
  (a) verifiable prompts (the task's items with a reference answer): reward = the task's verifier
      (the run's `reward=rule`);
  (b) ranking prompts built from preference data with a known order (`task.ranking_items`): the
      model writes a ranking of the listed candidates; reward = pairwise concordance with the true
      order (rewards/ranking.py), 0 when it does not parse;
  (c) open prompts (items without a reference answer): G player samples, then the same engine, on
      the same weights, ranks the group listwise in `referee_orders` presentation orders (a shuffle
      and its reverse: position bias cancels); reward = the mean normalised rank. A group whose
      verdict does not parse in every order is left out of the update (counted). The referee's
      own tokens for (c) are not trained (no label for them).
All groups go into one GRPO update with advantages normalised per group (rl/algos/grpo.py).

The referee prompt, its reward and the mix are not public; these are our defaults after the open
analogues (GRRM's listwise concordance, ART's RULER one call per group), see METHODS.md §6.
"""
from __future__ import annotations

import math
import time

import torch

from rl.algos import grpo


def check(cfg) -> None:
    grpo.check(cfg)
    u = cfg.urpo
    if len(u.mix) != 3 or min(u.mix) < 0 or sum(u.mix) <= 0:
        raise ValueError(f"algo.urpo.mix={list(u.mix)}: expected three weights >= 0 (verifiable, ranking, open), not all 0")
    if u.referee_orders < 1 or u.ranking_size < 2:
        raise ValueError("algo.urpo.referee_orders must be >= 1 and algo.urpo.ranking_size >= 2")


def counts(total: int, mix) -> list[int]:
    """`total` prompts split by the mix weights, rounded by largest remainders (a kind with a small
    weight may get none)."""
    w = [float(x) for x in mix]
    raw = [total * x / sum(w) for x in w]
    out = [math.floor(r) for r in raw]
    for i in sorted(range(3), key=lambda i: raw[i] - out[i], reverse=True)[: total - sum(out)]:
        out[i] += 1
    return out


def update(learner, rollouts, rewards: list[float]) -> dict:
    """GRPO on the mixed batch; a NaN reward marks a group left out (an open group whose verdict did
    not parse): advantage 0 and out of the loss and its counts."""
    k = learner.cfg.samples_per_prompt
    r = torch.tensor(rewards, dtype=torch.float32)
    left_out = torch.isnan(r).view(-1, k).any(1)
    stats = grpo.group_update(learner, rollouts, torch.nan_to_num(r, nan=0.0).tolist(), left_out)
    return stats | {"urpo/groups_left_out": left_out.float().sum().item()}


# ------------------------------------------------------------------ driver side (rl/loop.py)


def referee(ctx):
    """The live referee; in chat form (`algo.urpo.chat`) with `algo.urpo.demos` of the task's train
    rankings and their true verdicts as earlier turns (an instruct model's in-context format)."""
    from rewards.ranking import referee_prompt
    from rewards.referee import LiveReferee, verdict_text

    u = ctx.cfg.algo.urpo
    demos = None
    if getattr(u, "chat", False):
        rows = ctx.task.ranking_items("train", u.demos, "referee-demos", u.ranking_size) if u.demos else []
        demos = [(referee_prompt(r["prompt"], r["candidates"], u.template, u.item), verdict_text(r["gold"])) for r in rows]
    return LiveReferee(ctx.engine, u.template, u.item, u.referee_orders, u.referee_temperature, u.referee_max_tokens,
                       u.max_candidate_chars, demos=demos)


def player_items(task, n_verifiable: int, n_open: int, seed):
    """Train items with a reference answer (a) and without (c), from the task's own draws."""
    want, have = {True: n_verifiable, False: n_open}, {True: [], False: []}
    for attempt in range(20):
        for it in task.items("train", 4 * (n_verifiable + n_open) + 8, f"{seed}u{attempt}", distinct=False):
            kind = it.answer is not None
            if len(have[kind]) < want[kind]:
                have[kind].append(it)
        if all(len(have[k]) == want[k] for k in want):
            return have[True], have[False]
    raise ValueError(f"task {task.name!r}: could not draw {n_verifiable} items with answers and {n_open} without "
                     "(algo.urpo.mix asks for both kinds)")


def sample(ctx, step: int):
    """One step's mixed batch: prompt-major rollouts (a, then c, then b groups), the reward each
    rollout is trained on (NaN: group left out), gold (NaN for ranking rollouts) and metrics."""
    from policies.engine import Sampling
    from rewards.ranking import concordance, parse_ranking
    from rl.loop import data_seed

    cfg, a, u = ctx.cfg, ctx.cfg.algo, ctx.cfg.algo.urpo
    k = a.samples_per_prompt
    n_a, n_b, n_c = counts(a.prompts_per_step, u.mix)
    seed = data_seed(cfg.seed, step)
    items_a, items_c = player_items(ctx.task, n_a, n_c, seed)
    rankings = ctx.task.ranking_items("train", n_b, seed, u.ranking_size) if n_b else []
    ref = referee(ctx)
    prompts = [it.engine_prompt for it in items_a + items_c]
    prompts += [ref.prompts(r["prompt"], r["candidates"], range(len(r["candidates"]))) for r in rankings]
    t = time.time()
    rs = ctx.engine.generate(prompts, Sampling(n=k, temperature=a.temperature, top_p=a.top_p, max_tokens=a.max_tokens,
                                               seed=cfg.seed * 100_003 + step))
    gen_s = time.time() - t
    players = items_a + items_c
    n_play = len(players) * k
    t = time.time()
    proxy, gold = ctx.score([players[r.prompt_index] for r in rs[:n_play]], [r.text for r in rs[:n_play]])
    reward_s = time.time() - t
    rewards = list(proxy[: n_a * k])  # (a): the verifier
    t = time.time()
    verdicts = ref.judge([it.text for it in items_c], [[r.text for r in rs[n_a * k + g * k : n_a * k + (g + 1) * k]]
                                                       for g in range(n_c)], seed)
    referee_s = time.time() - t
    for v in verdicts:  # (c): the referee's rank scores, NaN when any order did not parse
        rewards += v["scores"] if v["scores"] is not None else [float("nan")] * k
    parsed_b = []
    for r in rs[n_play:]:  # (b): concordance with the true order
        tiers = parse_ranking(r.text, u.ranking_size)
        parsed_b.append(tiers is not None)
        rewards.append(concordance(tiers, rankings[r.prompt_index - len(players)]["gold"]))
    gold = list(gold) + [float("nan")] * (len(rs) - n_play)
    flips = [v["flip"] for v in verdicts if v["flip"] is not None]
    nanmean = lambda xs: float(sum(xs) / len(xs)) if xs else float("nan")  # noqa: E731
    stats = {"reward/verifiable": nanmean(rewards[: n_a * k]), "reward/ranking": nanmean(rewards[n_play:]),
             "gold/verifiable": nanmean(gold[: n_a * k]), "gold/open": nanmean(gold[n_a * k : n_play]),
             "referee/ranking_parse_rate": nanmean([float(p) for p in parsed_b]),
             "referee/open_parse_rate": nanmean([v["parsed"] / u.referee_orders for v in verdicts]),
             "referee/flip_rate": nanmean(flips), "referee/candidates_cut": float(ref.cut),
             "urpo/open_groups_left_out": float(sum(v["scores"] is None for v in verdicts)),
             "perf/gen_s": gen_s, "perf/reward_s": reward_s, "perf/referee_s": referee_s,
             "perf/tokens_per_s": sum(len(r.completion_ids) for r in rs) / max(gen_s, 1e-9)}
    return rs, rewards, gold, stats


def evaluate(ctx, step: int) -> dict:
    """The referee's accuracy (mean concordance, greedy) and parse rate on held-out rankings."""
    from policies.engine import Sampling
    from rewards.ranking import concordance, parse_ranking

    u = ctx.cfg.algo.urpo
    rankings = ctx.task.ranking_items("eval", u.eval_rankings, ctx.cfg.seed, u.ranking_size)
    ref = referee(ctx)
    prompts = [ref.prompts(r["prompt"], r["candidates"], range(len(r["candidates"]))) for r in rankings]
    rs = ctx.engine.generate(prompts, Sampling(n=1, temperature=0.0, max_tokens=u.referee_max_tokens, seed=0))
    tiers = [parse_ranking(r.text, u.ranking_size) for r in rs]
    acc = [concordance(t, r["gold"]) for t, r in zip(tiers, rankings)]
    return {"eval/referee_accuracy": sum(acc) / len(acc), "eval/referee_parse_rate": sum(t is not None for t in tiers) / len(tiers)}
