"""The whole run config checked before anything is built or started (zoo, Ray, engines): every
problem found, one line each, in one error."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

# What each reward type reads from a task's items, beyond the prompt and the response.
NEEDS_ANSWERS = {"math_verify": "a reference answer per prompt"}
ARITH_ONLY = ("arith_rule", "arith_gold")  # parse arith prompts ("Q:23+45="); nothing else
PROBE = 64  # train items drawn to see what a task's items carry


@dataclass
class Checked:
    algo: object
    task: object
    proxy: DictConfig  # the reward config with task-relative types resolved
    gold: DictConfig


def validate(cfg: DictConfig) -> Checked:
    from policies.engine import EngineError, check_engine_name, check_model_dir
    from rewards import check_source, check_world, resolve, zoo_artifacts
    from rl.algos import get_algo
    from rl.tasks import make_task
    from worlds.zoo import plan

    errors = []

    def check(fn, *args, **kw):
        try:
            return fn(*args, **kw)
        except (ValueError, EngineError, KeyError) as e:
            errors.append(str(e).strip("'\""))

    algo = check(get_algo, cfg.algo.name)
    from policies.vllm_engine import CPU_GEMM
    from rl.loop import ON_NAN, SYNC_VIA
    from rl.placement import LAYOUTS, STRATEGIES

    for key, allowed, default in (("reward.on_nan", ON_NAN, "error"), ("engine.sync_via", SYNC_VIA, "auto"),
                                  ("engine.cpu_gemm", CPU_GEMM, "auto"),
                                  ("cluster.placement", LAYOUTS, "none"), ("cluster.placement_strategy", STRATEGIES, "PACK")):
        value = _get(cfg, key)
        if (default if value is None else value) not in allowed:
            errors.append(f"{key}={value!r}; expected one of: {', '.join(allowed)}")
    threads = _get(cfg, "cluster.threads_per_actor")
    if not (threads is None or threads == "auto" or (type(threads) is int and threads >= 1)):
        errors.append(f"cluster.threads_per_actor={threads!r}; expected auto, null (torch's default) or a count >= 1")
    threads = _get(cfg, "engine.threads")
    if not (threads is None or (type(threads) is int and threads >= 1)):
        errors.append(f"engine.threads={threads!r}; expected null (the run's cores, rl/cluster.py) or a count >= 1")
    check(check_engine_name, cfg.engine.name)
    if cfg.policy.source == "path":
        check(check_model_dir, cfg.policy.path, "policy.path")
    task = check(make_task, cfg.task)
    proxy = gold = None
    if task is not None:
        gold = check(resolve, cfg.gold, task)
        proxy = check(resolve, cfg.reward, task, gold=cfg.gold)
        check(task.items, "eval", cfg.eval.prompts, cfg.seed)  # e.g. more eval prompts than the split has
        probe = check(task.items, "train", PROBE, 0, distinct=False) or []
        for group, source in (("reward", proxy), ("gold", gold)):
            before = len(errors)
            if source is not None:
                check(check_world, source, cfg.world.name, group)
                check(check_source, source, None, group, zoo=False)
                if len(errors) == before:  # a known type: what it reads from the items
                    errors.extend(_column_problems(source, task, probe, group))
        if probe and not isinstance(probe[0].prompt, str) and cfg.policy.source == "path":
            check(_check_chat_template, cfg.policy.path, task.name)
    if proxy is not None and gold is not None:
        from policies.models import policy_world

        own = cfg.policy.source == "zoo" and cfg.policy.get("world") in (None, cfg.world.name)
        check(plan, cfg.world, zoo_artifacts(proxy) + zoo_artifacts(gold) + ([cfg.policy.artifact] if own else []))
        if cfg.policy.source == "zoo" and not own:  # a policy from another world's zoo (policy.world)
            check(lambda: plan(policy_world(cfg.policy, cfg.world), [cfg.policy.artifact]))
    if algo is not None and cfg.algo.name != "bon":
        from rl.algos.common import check_kl

        check(check_kl, cfg.algo.kl)
        if hasattr(algo, "check"):
            check(algo.check, cfg.algo)
        if cfg.algo.temperature <= 0:
            errors.append(f"algo.temperature={cfg.algo.temperature}: a policy-gradient run samples at a temperature "
                          "> 0 (its log-probs are those of softmax(logits / temperature))")
    if cfg.reward.get("type") == "referee" or cfg.gold.get("type") == "referee":
        errors.append("a referee (type referee) ranks responses against each other and gives no pointwise reward: "
                      "score it with `python -m analysis.static reward=referee judge_protocol=both_orders`; a run whose "
                      "policy is its own referee is algo=urpo")
    if cfg.algo.get("async_generation"):
        why = [w for w, bad in (("algo.temperature must be 1 (the ratio uses the engine's log-probs, which are at 1)",
                                 cfg.algo.get("temperature", 1.0) != 1),
                                ("algo.dynamic_sampling=resample draws further rounds after the update",
                                 cfg.algo.get("dynamic_sampling") == "resample"),
                                (f"algo={cfg.algo.name} builds its batch itself", cfg.algo.name in ("urpo", "bon")))
               if bad]
        errors.extend(f"algo.async_generation=true: {w}" for w in why)
    if cfg.algo.name == "urpo":
        if cfg.reward.get("type") != "rule":
            errors.append(f"algo=urpo scores its verifiable prompts with the task's verifier: set reward=rule "
                          f"(got reward {cfg.reward.get('name')!r})")
        if task is not None and not hasattr(task, "ranking_items"):
            errors.append(f"algo=urpo needs preference data as rankings, and task {task.name!r} has none "
                          "(a task with ranking_items, e.g. task=arith)")
    lora = cfg.policy.get("lora")
    if lora is not None and not (isinstance(lora.get("r"), int) and lora.r >= 0):
        errors.append(f"policy.lora.r={lora.get('r')!r}: expected an integer >= 0 (0: full fine-tuning)")
    if cfg.algo.get("precision", "fp32") not in ("fp32", "bf16"):
        errors.append(f"algo.precision={cfg.algo.precision!r}; expected one of: fp32, bf16")
    for key in ("algo.steps", "algo.prompts_per_step", "algo.samples_per_prompt", "algo.max_tokens", "eval.prompts",
                "eval.every", "algo.micro_batch", "algo.micro_tokens"):
        value = _get(cfg, key)
        if value is not None and (not isinstance(value, int) or value < 1):
            errors.append(f"{key}={value!r}: expected a positive integer")
    errors.extend(_resource_problems(cfg, proxy, gold))
    if errors:
        raise ValueError("invalid config:\n  " + "\n  ".join(errors))
    return Checked(algo, task, proxy, gold)


def _resource_problems(cfg, proxy, gold) -> list[str]:
    """On a Ray this run starts (cluster.address null), its actors' CPU shares must fit cluster.num_cpus:
    an actor that does not fit never starts and the run would wait for it until engine.start_timeout_s."""
    replicas = cfg.engine.get("replicas", 1)
    if not isinstance(replicas, int) or replicas < 1:
        return [f"engine.replicas={replicas!r}: expected a positive integer"]
    c = cfg.cluster
    if c.address or c.num_cpus is None or proxy is None or gold is None:
        return []
    from rl.loop import in_process

    rewards = sum(not in_process(x) for x in (proxy, gold))
    need = replicas * cfg.engine.num_cpus + (c.learner_cpus if cfg.algo.name != "bon" else 0) + rewards * c.reward_cpus
    if need <= c.num_cpus + 1e-9:
        return []
    return [f"the run's actors ask Ray for {need:g} CPUs (engine.replicas={replicas} x engine.num_cpus={cfg.engine.num_cpus}"
            f" + cluster.learner_cpus={c.learner_cpus} + {rewards} reward actor(s) x cluster.reward_cpus={c.reward_cpus})"
            f" but cluster.num_cpus={c.num_cpus}: lower engine.num_cpus (a share, e.g. 0.5) or raise cluster.num_cpus"]


def _get(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = node.get(part) if node is not None else None
    return node


def _column_problems(source, task, probe, group: str) -> list[str]:
    """What a (resolved) source reads that the task's items do not have; parts of a combination too."""
    if source.get("type") == "combination":
        return [m for part in source.parts for m in _column_problems(part, task, probe, group)]
    kind, name = source.get("type"), source.get("name")
    if kind in NEEDS_ANSWERS and probe and all(it.answer is None for it in probe):
        return [f"{group} {name!r} (type {kind}) needs {NEEDS_ANSWERS[kind]}, but task {task.name!r} has none "
                "(set task.answer_key, or choose another " + ("reward" if group == "reward" else "gold") + ")"]
    if kind in ARITH_ONLY and probe and not any(_is_arith(it.text) for it in probe):
        return [f"{group} {name!r} (type {kind}) scores arith prompts (Q:23+45=) only, and task {task.name!r} "
                f"has none (e.g. {probe[0].text[:40]!r}); use reward=rule / gold=task for the task's own checks"]
    return []


def _is_arith(text: str) -> bool:
    from worlds.arith.task import parse_prompt

    try:
        parse_prompt(text)
        return True
    except ValueError:
        return False


def _check_chat_template(path: str, task: str) -> None:
    p = Path(path)
    config = p / "tokenizer_config.json"
    has = (p / "chat_template.jinja").is_file() or (config.is_file() and json.loads(config.read_text()).get("chat_template"))
    if not has:
        raise ValueError(f"task {task!r} gives chat prompts (task.format=chat), but the tokenizer of policy.path="
                         f"{path!r} has no chat template: set task.format=plain, or use an instruct model")
