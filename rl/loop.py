"""The online loop on Ray: prompts -> rollouts -> proxy + gold scores -> algorithm step -> weight
sync (checked) -> log. The driver is algorithm-agnostic; `rl/algos/<name>.py` supplies the update
(or, for best-of-N, the selection curves).

Actors: the rollout engine (policies.actor), the learner (policy, optimizer, frozen reference),
one reward actor for the proxy and one for gold (evaluation only unless reward=gold) when the source
holds a model (a text-only one is scored in the driver: `IN_PROCESS`). All phases
run one after another, so every actor may use every core (`cluster.threads_per_actor: auto`; with
`algo.async_generation` the learner gets half of them: the engine generates meanwhile).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
import warnings
from types import SimpleNamespace

import ray
from omegaconf import DictConfig
from tqdm import tqdm

from policies.actor import call
from policies.engine import Rollout, Sampling, remove_stale_weights_files, weights_file
from policies.sync import check_gap
from rl import checkpoint, warm
from rl.placement import Placement

# Reward types that are plain functions of the text (no model): scored in the driver, which saves an
# actor's start-up (a process importing torch) and a round trip per step.
IN_PROCESS = {"arith_rule", "arith_gold", "math_verify", "length"}


def in_process(cfg) -> bool:
    if cfg.get("type") == "combination":
        return all(in_process(part) for part in cfg.parts)
    return cfg.get("type") in IN_PROCESS


class _RewardActor(warm.Reusable):
    """A reward source in its own Ray actor, or (`local`) in the driver behind the same `score.remote`."""

    def __init__(self, cfg, zoo_dir, threads, local: bool = False):
        from rewards import make_source

        if threads and not local:
            import torch

            torch.set_num_threads(threads)
        self.source = make_source(cfg, zoo_dir)
        if local:
            self.score = SimpleNamespace(remote=self.score)  # called as an actor is; returns the result itself

    def score(self, prompts, responses, items=None):
        """Scores, plus counters a source keeps (cumulative): the judge's verdict parse failures, a
        verifier's unverifiable prompts and unparsable answers."""
        from rewards import call_score

        scores = call_score(self.source, prompts, responses, items)
        counters = {"parse_failures": "reward/parse_failures", "unverifiable": "reward/unverifiable",
                    "no_answer": "reward/no_answer", "too_large": "reward/too_large"}
        return scores, {tag: float(getattr(self.source, attr)) for attr, tag in counters.items()
                        if isinstance(getattr(self.source, attr, None), (int, float))}


ON_NAN = ("error", "skip")
SYNC_VIA = ("auto", "object_store")


def check_scores(scores, prompts, texts, what: str, on_nan: str = "error", nan_ok: bool = False) -> int:
    """A reward batch must have one finite score per response: otherwise an error naming the source
    (`what`) and one offending sample. `on_nan: skip` lets non-finite proxy scores through for the
    caller to leave out (returned: how many); `nan_ok` lets NaN (not inf) through: a gold that marks
    what it cannot score (a verifier's `unverifiable: nan`)."""
    if len(scores) != len(texts):
        raise ValueError(f"{what} returned {len(scores)} scores for {len(texts)} responses (one score per response)")
    bad = [i for i, x in enumerate(scores) if not _finite(x) and not (nan_ok and x != x)]
    if bad and on_nan != "skip":
        i = bad[0]
        raise ValueError(f"{what} gave {len(bad)} non-finite score(s) in a batch of {len(texts)}, e.g. {scores[i]!r} "
                         f"for prompt {prompts[i][:200]!r} -> response {texts[i][:200]!r}; fix the source, or set "
                         "reward.on_nan=skip to leave such groups out of the update (counted as faults/nan_groups)")
    return len(bad)


def _finite(x) -> bool:
    try:
        return math.isfinite(x)
    except TypeError:  # None, a string: not a score
        return False


def drop_nonfinite_groups(rs, proxy, gold, k: int):
    """The groups (k rollouts each, prompt-major) whose proxy scores are all finite, and how many were dropped."""
    keep = [g for g in range(len(rs) // k) if all(map(_finite, proxy[g * k : (g + 1) * k]))]
    pick = lambda xs: [x for g in keep for x in xs[g * k : (g + 1) * k]]  # noqa: E731
    return pick(rs), pick(proxy), pick(gold), len(rs) // k - len(keep)


def _mean(xs) -> float:
    """The mean of the numbers that are not NaN (URPO marks rollouts without a gold or a label)."""
    xs = [x for x in xs if x == x]
    return float(sum(xs) / len(xs)) if len(xs) else 0.0


def run(cfg: DictConfig, run_dir: str) -> dict:
    from rl.validate import validate

    t_start = time.time()
    checked = validate(cfg)  # every config problem, one line each, before anything is built or started
    from policies.actor import ActorDiedError, start_engine
    from policies.engine import EngineError
    from policies.models import resolve_policy
    from rewards import check_source, zoo_artifacts
    from rl.cluster import actor_threads, engine_config, init_ray
    from rl.learner import Learner  # transformers: seconds of imports a config error need not wait for
    from rl.logger import MetricLogger
    from worlds import zoo

    algo, task, gold_cfg, proxy_cfg = checked.algo, checked.task, checked.gold, checked.proxy
    resume = checkpoint.resume_point(cfg.resume, run_dir)  # a damaged checkpoint stops the run here
    # the world's zoo only when something reads it, and only the artifacts read: a non-arith run
    # builds nothing, the default run (CDR) the base policy and the strong model
    wanted = zoo_artifacts(proxy_cfg) + zoo_artifacts(gold_cfg)
    zoo_dir = zoo.ensure(cfg.world, cfg.cache_dir, wanted) if wanted else None
    check_source(proxy_cfg, zoo_dir)
    check_source(gold_cfg, zoo_dir, "gold")
    policy_path = resolve_policy(cfg.policy, cfg.cache_dir, cfg.world)
    critic_path = None
    if cfg.algo.name != "bon":
        _warn_sampling(cfg.algo)
        if "critic" in cfg.algo:
            from rl.algos.ppo import critic_path as resolve_critic

            critic_path = resolve_critic(cfg, policy_path, zoo_dir)
    init_ray(cfg.cluster)
    timeout, threads = cfg.engine.rpc_timeout_s, actor_threads(cfg.cluster, bool(cfg.algo.get("async_generation")))
    c, engine_cfg = cfg.cluster, engine_config(cfg)
    # parked actors (rl/warm.py) serve a run that places nothing (a placement group goes with its run)
    keep = c.get("keep_warm", True) and c.get("placement", "none") == "none"
    reward_key = ("reward", c.reward_cpus, threads, warm.session())
    keys = {"engine": warm.engine_key(engine_cfg, policy_path), "proxy": reward_key, "gold": reward_key,
            "learner": ("learner", c.learner_cpus, c.get("learner_gpus", 0), threads, warm.session())} if keep else {}
    has = {"engine": True, "learner": cfg.algo.name != "bon", "proxy": not in_process(proxy_cfg), "gold": not in_process(gold_cfg)}
    taken = {role: warm.take(keys.get(role)) if has[role] else None for role in has}
    warm.release()  # what this run does not reuse: before the placement group, which may need its CPUs
    engine = taken["engine"]
    if engine is not None:
        try:
            engine.load_weights(warm.weights_file(policy_path))  # the policy again, as a fresh engine would serve
        except (ActorDiedError, EngineError):  # killed meanwhile, or it no longer answers: start afresh
            engine.close()
            engine = None
    placement = Placement(cfg, has["learner"], cfg.engine.start_timeout_s)
    engine = engine or start_engine(engine_cfg, policy_path, placement.engine(), wait=False)
    # every other actor starts meanwhile (each a process importing torch), or a warm one runs its
    # constructor again: checked once the engine is up
    pending = []

    def actor(role, cls, resources, options, *args):
        if taken[role] is not None:
            pending.append((taken[role].reinit.remote(*args), role))
            return taken[role]
        return ray.remote(**resources)(cls).options(**options).remote(*args)

    proxy, gold = (actor(role, _RewardActor, {"num_cpus": c.reward_cpus}, {}, rc, zoo_dir, threads) if has[role]
                   else _RewardActor(rc, zoo_dir, None, local=True) for role, rc in (("proxy", proxy_cfg), ("gold", gold_cfg)))
    learner = actor("learner", Learner, {"num_cpus": c.learner_cpus, "num_gpus": c.get("learner_gpus", 0)}, placement.learner(),
                    policy_path, cfg.algo, threads, cfg.seed, critic_path, cfg.policy.get("lora")) if has["learner"] else None
    roles = {"proxy": proxy, "gold": gold, "learner": learner}
    eval_items = task.items("eval", cfg.eval.prompts, cfg.seed)
    log = MetricLogger(run_dir, purge_from=resume[1]["step"] + 1 if resume else 0)
    if not resume:  # a fresh run in a used directory: no stale generations either
        shutil.rmtree(os.path.join(run_dir, "samples"), ignore_errors=True)

    counters = {}

    def score(items, texts):
        """Proxy and gold scores of `texts`, each answering the item at the same position."""
        prompts = [it.text for it in items]
        p, g = proxy.score.remote(prompts, texts, items), gold.score.remote(prompts, texts, items)
        (proxy_scores, extra), (gold_scores, _) = call(p, f"reward '{cfg.reward.name}'", timeout), call(g, "gold", timeout)
        counters.update(extra)
        skipped = check_scores(proxy_scores, prompts, texts, f"reward '{cfg.reward.name}'", cfg.reward.get("on_nan", "error"))
        counters["faults/nonfinite_rewards"] = counters.get("faults/nonfinite_rewards", 0.0) + skipped
        check_scores(gold_scores, prompts, texts, f"gold '{gold_cfg.name}'", nan_ok=True)
        return proxy_scores, gold_scores

    nodes = {}  # the Ray node ids the actors run on
    finished, sync_path = False, None
    try:
        engine.wait()
        for ref, role in pending:
            call(ref, role, timeout)
        nodes["engine"] = engine.nodes()
        if cfg.algo.name == "bon":
            summary = _run_bon(cfg, algo, engine, score, eval_items, log, run_dir)
        else:
            nodes["learner"] = call(learner.node.remote(), "learner", timeout)
            # the file lives in one node's /dev/shm and the driver removes it: the driver must be there too
            same_node = {*nodes["engine"], nodes["learner"]} == {ray.get_runtime_context().get_node_id()}
            via_file = same_node and cfg.engine.get("sync_via", "auto") == "auto"
            nodes["weight_sync"] = "shm_file" if via_file else "object_store"
            if via_file:
                for stale in remove_stale_weights_files():
                    print(f"removed {stale}: a weight-sync file left by a run that no longer exists")
            sync_path = weights_file() if via_file else None
            ctx = SimpleNamespace(cfg=cfg, task=task, engine=engine, score=score, algo=algo, sync_path=sync_path,
                                  pending_sync=None)
            summary = _run_rl(ctx, learner, eval_items, log, timeout, run_dir, counters, resume)
            if sync_path:  # a learner kept warm would otherwise hold the file's pages mapped until its next run
                learner.close_sync_file.remote()
        finished = True
    finally:
        log.close()
        if sync_path and os.path.exists(sync_path):
            os.remove(sync_path)
        # kept warm only after a run that ended well (not one a fault stopped)
        for role, a in [("engine", engine)] + [(r, a) for r, a in roles.items() if has[r]]:
            if finished and keys.get(role) is not None:
                warm.park(keys[role], a)
            else:
                warm.stop(a)
        placement.remove()
    summary.update({"algo": cfg.algo.name, "reward": cfg.reward.name, "gold": gold_cfg.name, "task": task.name,
                    "task_rows_dropped": dict(task.dropped), "engine": cfg.engine.name,
                    "warm": sorted(r for r, a in taken.items() if a is not None),
                    "policy": policy_path,
                    "nodes": nodes, "placement": placement.layout,
                    "wall_s": round(time.time() - t_start, 1)})
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def _warn_sampling(a) -> None:
    if a.top_p < 1:
        warnings.warn(f"algo.top_p={a.top_p} < 1: the engine samples from the truncated distribution but the "
                      "learner's ratios and KL use the full one, so the update is biased (nothing corrects it)",
                      stacklevel=2)


def _run_bon(cfg, algo, engine, score, items, log, run_dir) -> dict:
    N = cfg.algo.n_max
    t = time.time()
    rs = engine.generate([it.engine_prompt for it in items], Sampling(n=N, temperature=cfg.algo.temperature, top_p=cfg.algo.top_p,
                                           max_tokens=cfg.algo.max_tokens, seed=cfg.seed))
    gen_s = time.time() - t
    proxy, gold = score([items[r.prompt_index] for r in rs], [r.text for r in rs])
    rs, proxy, gold, dropped = drop_nonfinite_groups(rs, proxy, gold, N)  # reward.on_nan=skip: whole pools
    if not rs:
        raise ValueError(f"every pool has a non-finite reward from '{cfg.reward.name}' (reward.on_nan=skip left none)")
    per = lambda xs: [xs[i * N : (i + 1) * N] for i in range(len(rs) // N)]  # noqa: E731
    rows = algo.curves(per(proxy), per(gold), N)
    for row in rows:
        log.log(row["n"], {k: v for k, v in row.items() if k != "n"} | {"perf/gen_s": gen_s, "faults/nan_groups": dropped})
    with open(os.path.join(run_dir, "bon_curve.json"), "w") as f:
        json.dump(rows, f, indent=2)
    for row in rows:
        print(f"best-of-{row['n']:<3} gold {row['reward/gold']:.3f}  proxy {row['reward/proxy']:.3f}  "
              f"KL {row['kl/bon_exact']:.3f} (bound {row['kl/bon']:.3f})")
    # kl_final: the exact KL of the selection over the pools' proxy values; the analytic
    # log n - (n-1)/n is only an upper bound (far off when the proxy ties), kept beside it
    return {"proxy_initial": rows[0]["reward/proxy"], "proxy_final": rows[-1]["reward/proxy"],
            "gold_initial": rows[0]["reward/gold"], "gold_final": rows[-1]["reward/gold"],
            "kl_final": rows[-1]["kl/bon_exact"], "kl_bound_final": rows[-1]["kl/bon"], "n_max": N,
            "prompts": len(rs) // N, "pools_dropped": dropped}


def _evaluate(ctx, learner, items, timeout, run_dir, step) -> dict:
    cfg, engine, score = ctx.cfg, ctx.engine, ctx.score
    rs = engine.generate([it.engine_prompt for it in items], Sampling(n=1, temperature=cfg.eval.temperature, max_tokens=cfg.algo.max_tokens,
                                           seed=cfg.seed + 1_000_003))  # same draws at every evaluation
    texts = [r.text for r in rs]
    proxy, gold = score(items, texts)
    # the steps' own batches are one update stale with asynchronous generation: the sync is checked here
    ev = call(learner.evaluate.remote(rs, cfg.eval.temperature, bool(cfg.algo.get("async_generation"))), "learner", timeout)
    kl = ev["kl"]
    _write_samples(run_dir, step, items, texts, proxy, gold, kl)
    out = {"eval/reward_proxy": _mean(proxy), "eval/reward_gold": _mean(gold), "eval/kl": _mean(kl),
           "eval/response_length": _mean([len(r.completion_ids) for r in rs])}
    if "gap" in ev:
        d = ev["gap"]
        check_gap(d["mean"], d["max"], d["tokens"], cfg.engine.sync_tolerance, f"on the evaluation after step {step}")
        out["eval/sync_logprob_diff"] = d["mean"]
    kinds = sorted({it.kind for it, g in zip(items, gold) if g == g})  # a kind the gold scores none of (NaN) is left out
    if len(kinds) > 1:  # gold per kind (arith: add, open)
        out |= {f"eval/gold_{k}": _mean([g for it, g in zip(items, gold) if it.kind == k]) for k in kinds}
    if hasattr(ctx.algo, "evaluate"):  # an algorithm's own evaluation (URPO: the referee's accuracy)
        out |= ctx.algo.evaluate(ctx, step)
    return out


def _write_samples(run_dir, step, items, texts, proxy, gold, kl) -> None:
    """Every evaluation's generations with their scores, so a hacked policy can be read, not guessed."""
    from rl.logger import write_atomic

    os.makedirs(os.path.join(run_dir, "samples"), exist_ok=True)
    keys = ("prompt", "answer", "response", "proxy", "gold", "kl")
    rows = zip([it.text for it in items], [it.answer for it in items], texts, proxy, gold, kl)
    write_atomic(os.path.join(run_dir, "samples", f"step_{step:06d}.jsonl"),
                 "".join(json.dumps(dict(zip(keys, row))) + "\n" for row in rows))


def data_seed(seed: int, step: int, rounds: int = 0):
    """The seed of a step's train prompts (and of each further resampling round's): (seed, step) alone,
    so a resumed run, or a benchmark giving another trainer the same work, draws the same prompts."""
    return seed * 1_000_003 + step if rounds == 0 else f"{seed * 1_000_003 + step}r{rounds}"


def round_items(cfg, task, step: int, rounds: int = 0) -> list:
    return task.items("train", cfg.algo.prompts_per_step, data_seed(cfg.seed, step, rounds), distinct=False)


def submit_round(cfg, task, engine, step: int, rounds: int, sampling: dict):
    """Start generating one sampling round of a step: its items and a function that waits for the rollouts."""
    items = round_items(cfg, task, step, rounds)
    return items, engine.submit([it.engine_prompt for it in items],
                                Sampling(**sampling, seed=cfg.seed * 100_003 + step + rounds * 1_000_000_007))


def _sample_batch(cfg, task, engine, score, step: int, sampling: dict, prefetched=None):
    """One step's prompt-major rollouts with their proxy and gold scores.

    With algo.dynamic_sampling=resample (DAPO) groups whose proxy scores are all equal carry no
    signal: they are dropped and more prompts drawn, up to algo.max_sample_rounds rounds, until the
    batch holds prompts_per_step groups (short of that, the step trains on the groups it has; with
    none, on the last round's). Every round's prompts and samples depend on (seed, step, round)
    alone, so a resumed run replays them. `prefetched`: the first round, already submitted
    (`submit_round`; asynchronous generation).
    """
    import torch

    from rl.losses import zero_variance

    a, k = cfg.algo, cfg.algo.samples_per_prompt
    resample = a.get("dynamic_sampling") == "resample"
    kept, rounds, discarded, surplus = ([], [], []), 0, 0, 0
    stats = {"perf/gen_s": 0.0, "perf/reward_s": 0.0, "perf/tokens_per_s": 0.0}
    while True:
        t = time.time()
        items, wait = prefetched if prefetched and not rounds else submit_round(cfg, task, engine, step, rounds, sampling)
        rs = wait()
        stats["perf/tokens_per_s"] += sum(len(r.completion_ids) for r in rs)  # tokens, per second below
        stats["perf/gen_s"] += time.time() - t
        t = time.time()
        proxy, gold = score([items[r.prompt_index] for r in rs], [r.text for r in rs])
        stats["perf/reward_s"] += time.time() - t
        rs, proxy, gold, dropped = drop_nonfinite_groups(rs, proxy, gold, k)  # reward.on_nan=skip
        stats["faults/nan_groups"] = stats.get("faults/nan_groups", 0.0) + dropped
        if not rs:
            raise ValueError(f"step {step}: every group has a non-finite reward from '{cfg.reward.name}' (reward.on_nan=skip "
                             "left nothing to train on)")
        rounds += 1
        if not resample:
            break
        for g, flat in enumerate(zero_variance(torch.tensor(proxy, dtype=torch.float64), k).tolist()):
            if flat:
                discarded += 1
            elif len(kept[0]) < a.prompts_per_step * k:
                for part, xs in zip(kept, (rs, proxy, gold)):
                    part.extend(xs[g * k : (g + 1) * k])
            else:  # the batch is full: DAPO trims the last round to the batch size
                surplus += 1
        if len(kept[0]) == a.prompts_per_step * k or rounds == a.max_sample_rounds:
            break
    stats["perf/tokens_per_s"] /= max(stats["perf/gen_s"], 1e-9)
    if not resample:
        return rs, proxy, gold, stats
    groups = len(kept[0]) // k
    if not groups:
        kept = (rs, proxy, gold)
    return (*kept, stats | {"dynamic/rounds": float(rounds), "dynamic/discarded_groups": float(discarded),
                            "dynamic/surplus_groups": float(surplus), "dynamic/groups": float(groups)})


def _sync(ctx, learner, wait: bool = True) -> float | None:
    """The learner's weights into the engine; the engine's load time. On one node through a safetensors
    file in shared memory (the learner writes it, the engine reads it: at the SmolLM2-135M shape 0.82 s
    a sync against 3.44 s through the object store, BENCHMARKS.md), across nodes through the object store.

    `wait=False`: returns at once, with the previous sync's load time (None at the first); the loop
    submits each step's sync with its update, before waiting for it. Each actor runs its calls in order,
    so the learner's write follows its update and the engine's next generation waits for its load, off the
    driver's path; the driver waits for a load before the next sync, since the learner rewrites the file
    the engine may still be reading, at the step's end when generation is synchronous, and at the run's
    end (`_finish_sync`)."""
    before = _finish_sync(ctx)
    # the path goes to the learner and, once written, straight to the engine actor (no driver stop); the
    # learner rewrites the same file every sync (policies/shm_weights.py), the run removes it at its end
    weights = learner.state_dict.remote() if ctx.sync_path is None else learner.write_weights.remote(ctx.sync_path)
    pending = ctx.engine.submit_load(weights)
    if wait:
        return pending()
    ctx.pending_sync = pending
    return before


def _finish_sync(ctx) -> float | None:
    """Wait for a sync `_sync(wait=False)` left running (its errors surface here); its load time."""
    pending, ctx.pending_sync = ctx.pending_sync, None
    return pending() if pending else None


def _run_rl(ctx, learner, eval_items, log, timeout, run_dir, counters, resume) -> dict:
    cfg, task, engine, score = ctx.cfg, ctx.task, ctx.engine, ctx.score
    a = cfg.algo
    sampling = dict(n=a.samples_per_prompt, temperature=a.temperature, top_p=a.top_p, max_tokens=a.max_tokens)
    start = 0
    if resume:
        ckpt, state = resume
        call(learner.load_checkpoint.remote(ckpt), "learner", timeout)
        start, first = state["step"], state["first_eval"]
        _sync(ctx, learner)
        log.truncate(start)
        print(f"resumed from {ckpt} at step {start}")
    else:
        first = _evaluate(ctx, learner, eval_items, timeout, run_dir, 0)
        log.log(0, first)
    # algo.async_generation: the next step's first round, generated during this step's update; a
    # checkpoint keeps it (sampled by the weights before its step's update), so a resumed run trains
    # on the very rollouts the interrupted one would have
    prefetched = None
    if resume and state.get("prefetched") is not None:
        kept = [Rollout(**r) for r in state["prefetched"]]
        prefetched = (round_items(cfg, task, start), lambda: kept)
    last = first
    bar = tqdm(range(start, a.steps), desc=f"{a.name} {cfg.reward.name}", unit="step", initial=start, total=a.steps)
    for step in bar:
        t0 = time.time()
        # Each step's prompts depend on (seed, step) alone: a resumed run sees the same data.
        if hasattr(ctx.algo, "sample"):  # an algorithm that builds its own batch (URPO's three kinds)
            rs, proxy, gold, drawn = ctx.algo.sample(ctx, step)
        else:
            rs, proxy, gold, drawn = _sample_batch(cfg, task, engine, score, step, sampling, prefetched)
        stale = prefetched is not None  # sampled by the weights before the previous update
        t2 = time.time()
        update = learner.update.remote(rs, proxy)
        # the engine generates the next step's rollouts while the learner updates; the weight sync
        # below queues behind that generation on the engine actor
        prefetched = (submit_round(cfg, task, engine, step + 1, 0, sampling)
                      if a.get("async_generation") and step + 1 < a.steps else None)
        # the sync is submitted now: the write queues behind the update on the learner and the load behind
        # it on the engine, so the learner goes from one to the other with no stop at the driver (the round
        # trip through it was ~7 ms, 2% of an arith step: BENCHMARKS.md); a sync check failing below stops
        # the run all the same
        before = _sync(ctx, learner, wait=False)
        m = call(update, "learner", timeout)
        gap = m.pop("sync/logprob_diff"), m.pop("sync/logprob_diff_max"), m.pop("sync/tokens")
        if stale:  # one update behind: the gap is the staleness, not a sync fault (checked at evaluations)
            m |= {"async/logprob_gap": gap[0], "async/logprob_gap_max": gap[1]}
        else:
            check_gap(*gap, cfg.engine.sync_tolerance, f"on step {step}'s sampled tokens")
            m |= {"sync/logprob_diff": gap[0], "sync/logprob_diff_max": gap[1]}
        m["async/staleness"] = float(stale)
        t3 = time.time()
        sync_s = before if a.get("async_generation") else _finish_sync(ctx)
        t4 = time.time()
        tokens = sum(len(r.completion_ids) for r in rs)
        m.update({"reward/proxy": _mean(proxy), "reward/gold": _mean(gold),
                  "response/length": tokens / len(rs), "response/truncated": _mean([r.finish_reason == "length" for r in rs]),
                  "perf/learn_s": t3 - t2, "perf/sync_s": t4 - t3, "perf/step_s": t4 - t0, **drawn, **counters})
        if sync_s is not None:
            m["perf/sync_load_s"] = sync_s
        if (step + 1) % cfg.eval.every == 0 or step + 1 == a.steps:
            last = _evaluate(ctx, learner, eval_items, timeout, run_dir, step + 1)
            m.update(last)
        log.log(step + 1, m)
        bar.set_postfix(proxy=f"{m['reward/proxy']:.3f}", gold=f"{m['reward/gold']:.3f}",
                        **({"kl": f"{m['kl/k1']:.2f}"} if "kl/k1" in m else {}))
        if cfg.checkpoint.every and ((step + 1) % cfg.checkpoint.every == 0 or step + 1 == a.steps):
            state = {"step": step + 1, "first_eval": first, "data_position": (step + 1) * a.prompts_per_step}
            if prefetched:  # wait for it (the next step would) and keep it
                items, wait = prefetched
                ahead = wait()
                prefetched = (items, lambda ahead=ahead: ahead)
                state["prefetched"] = [dataclasses.asdict(r) for r in ahead]
            checkpoint.save(run_dir, step + 1, lambda d: call(learner.save_checkpoint.remote(d), "learner", timeout),
                            state, cfg.checkpoint.keep)
        if cfg.stop_after is not None and step + 1 >= cfg.stop_after:  # simulates an interrupted run
            break
    _finish_sync(ctx)
    extra = {f"{k[5:]}_{when}": ev[k] for k in first if k.startswith(("eval/referee_", "eval/gold_"))
             for when, ev in (("initial", first), ("final", last))}
    return {"proxy_initial": first["eval/reward_proxy"], "proxy_final": last["eval/reward_proxy"],
            "gold_initial": first["eval/reward_gold"], "gold_final": last["eval/reward_gold"],
            "kl_final": last["eval/kl"], "steps": step + 1 if a.steps > start else start} | extra
