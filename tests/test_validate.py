"""The whole run config is checked before anything is built or started: each problem one line, all
of them in one error, and nothing written to the cache."""
import json

import pytest

from rl.validate import validate
from tests.test_loop import config


def problems(tmp_path, *overrides) -> list[str]:
    with pytest.raises(ValueError) as e:
        validate(config(f"cache_dir={tmp_path / 'cache'}", *overrides))
    head, *lines = str(e.value).split("\n")
    assert head == "invalid config:"
    assert not (tmp_path / "cache").exists()  # nothing built
    return [line.strip() for line in lines]


def bare_model(tmp_path, template: bool):
    """A model directory as far as validation reads it (config.json, tokenizer_config.json)."""
    d = tmp_path / ("with" if template else "without")
    d.mkdir()
    (d / "config.json").write_text("{}")
    (d / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"} if template else {}))
    return str(d)


def test_every_problem_is_reported_at_once(tmp_path):
    lines = problems(tmp_path, "algo.name=ppo9", "task.name=nope", "engine.name=sglang", "eval.every=0")
    assert len(lines) == 4
    assert lines[0].startswith("unknown algorithm 'ppo9' (config key algo.name)")
    assert lines[1].startswith("unknown engine 'sglang' (config key engine.name)")
    assert lines[2].startswith("unknown task 'nope' (config key task.name)")
    assert lines[3] == "eval.every=0: expected a positive integer"


def test_a_reward_needing_reference_answers_on_a_task_without_them(tmp_path):
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Say {i}."}) + "\n" for i in range(40)))
    lines = problems(tmp_path, "task=prompts", f"task.path={data}", "reward=math", "gold=math", "eval.prompts=4")
    assert lines == [f"{g} {n!r} (type math_verify) needs a reference answer per prompt, but task 'prompts' has none "
                     f"(set task.answer_key, or choose another {g})" for g, n in (("reward", "math"), ("gold", "gold"))]


def test_an_arith_only_source_on_another_task(tmp_path):
    [line] = problems(tmp_path, "task=gsm8k", "policy=tiny_random", "reward.type=arith_rule", "reward.name=arith")
    assert line.startswith("reward 'arith' (type arith_rule) scores arith prompts (Q:23+45=) only, and task 'gsm8k' has none")


def test_chat_prompts_need_a_chat_template(tmp_path):
    path = bare_model(tmp_path, template=False)
    [line] = problems(tmp_path, "task=gsm8k", "policy=path", f"policy.path={path}", "reward=rule")
    assert line == (f"task 'gsm8k' gives chat prompts (task.format=chat), but the tokenizer of policy.path={path!r} "
                    "has no chat template: set task.format=plain, or use an instruct model")
    ok = bare_model(tmp_path, template=True)
    assert validate(config("task=gsm8k", "policy=path", f"policy.path={ok}", "reward=rule")).task.name == "gsm8k"
    assert validate(config("task=gsm8k", "task.format=plain", "policy=path", f"policy.path={path}", "reward=rule"))


def test_more_eval_prompts_than_the_split_holds(tmp_path):
    [line] = problems(tmp_path, "task=math500", "policy=tiny_random", "reward=rule", "eval.prompts=51")
    assert line == "task 'math500': 51 distinct eval items asked, the split has 50"


def test_an_unknown_zoo_artifact_before_any_build(tmp_path):
    [line] = problems(tmp_path, "reward=rm_l", "reward.artifact=rm_xxl")
    assert line.startswith("world 'arith' has no zoo artifact 'rm_xxl'; it has: base, data, rm_xs")
    [line] = problems(tmp_path, "policy.artifact=base2")
    assert line.startswith("world 'arith' has no zoo artifact 'base2'")


def test_the_default_config_is_valid_and_resolved(tmp_path):
    c = validate(config(f"cache_dir={tmp_path}"))
    assert (c.task.name, c.proxy.type, c.gold.type) == ("arith", "cdr", "arith_gold")
    assert not any(tmp_path.iterdir())


def test_a_referee_is_not_a_training_reward(tmp_path):
    [line] = problems(tmp_path, "reward=referee")
    assert line.startswith("a referee (type referee) ranks responses against each other and gives no pointwise reward")
    assert "analysis.static reward=referee judge_protocol=both_orders" in line


def test_a_policy_from_another_worlds_zoo(tmp_path):
    [line] = problems(tmp_path, "task=smol_arith", "policy=smollm2_135m", "reward=rule", "policy.world=nope")
    assert line == "unknown world 'nope'; expected one of: arith, arith_small, smol"
    [line] = problems(tmp_path, "task=smol_arith", "policy=smollm2_135m", "reward=rule", "policy.artifact=rm_l")
    assert line == "world 'smol' has no zoo artifact 'rm_l'; it has: base, pairs, judge_lora, rm"
    validate(config(f"cache_dir={tmp_path / 'cache'}", "task=smol_arith", "policy=smollm2_135m", "reward=rule"))


def test_fault_and_scale_out_keys(tmp_path):
    lines = problems(tmp_path, "reward.on_nan=ignore", "engine.sync_via=nfs", "engine.cpu_gemm=mkl", "engine.replicas=0")
    assert lines == ["reward.on_nan='ignore'; expected one of: error, skip",
                     "engine.sync_via='nfs'; expected one of: auto, object_store",
                     "engine.cpu_gemm='mkl'; expected one of: auto, onednn, torch",
                     "engine.replicas=0: expected a positive integer"]


def test_actors_must_fit_the_local_ray(tmp_path):
    # 2 engines x 1 + learner 0.5 + one reward actor (rm_l; the arith gold runs in the driver) x 0.25 = 2.75 > 2
    [line] = problems(tmp_path, "engine.replicas=2", "reward=rm_l")
    assert line.startswith("the run's actors ask Ray for 2.75 CPUs (engine.replicas=2 x engine.num_cpus=1 + "
                           "cluster.learner_cpus=0.5 + 1 reward actor(s) x cluster.reward_cpus=0.25) but cluster.num_cpus=2")
    assert validate(config("engine.replicas=2", "engine.num_cpus=0.5", "reward=rm_l"))  # 1 + 0.5 + 0.25
    assert validate(config("engine.replicas=2", "cluster=existing", "reward=rm_l"))  # a cluster's own resources


def test_threads_per_actor(tmp_path):
    from rl.cluster import actor_threads

    # auto: every core of the local Ray, half of them while the engine generates beside the learner
    def threads(*overrides):
        cfg = config(*overrides)
        return actor_threads(cfg.cluster, bool(cfg.algo.get("async_generation")))

    assert threads("cluster.num_cpus=2") == 2
    assert threads("cluster.num_cpus=2", "algo.async_generation=true") == 1
    assert threads("cluster.num_cpus=6", "algo.async_generation=true") == 3
    assert threads("cluster.num_cpus=1", "algo.async_generation=true") == 1
    assert threads("cluster.threads_per_actor=3", "algo.async_generation=true") == 3
    assert threads("cluster=existing") is None  # torch's own default on a joined cluster
    [line] = problems(tmp_path, "cluster.threads_per_actor=0")
    assert line == "cluster.threads_per_actor=0; expected auto, null (torch's default) or a count >= 1"
    [line] = problems(tmp_path, "cluster.threads_per_actor=true")  # a bool is an int to Python
    assert line == "cluster.threads_per_actor=True; expected auto, null (torch's default) or a count >= 1"


def test_engine_threads(tmp_path):
    """engine.threads null: every core of the local Ray (not Ray's OMP_NUM_THREADS = the actor's num_cpus
    share, 1), split among the replicas, halved while the learner updates beside the engine; on a
    joined cluster left to Ray."""
    from rl.cluster import engine_config

    def threads(*overrides):
        return engine_config(config(*overrides)).threads

    assert threads("cluster.num_cpus=2") == 2
    assert threads("cluster.num_cpus=2", "algo.async_generation=true") == 1
    assert threads("cluster.num_cpus=2", "engine.replicas=2", "engine.num_cpus=0.5") == 1
    assert threads("cluster.num_cpus=8", "engine.replicas=2", "algo.async_generation=true") == 2
    assert threads("cluster.num_cpus=3", "engine.replicas=2") == 1
    assert threads("cluster.num_cpus=2", "engine.threads=3") == 3
    assert threads("cluster=existing") is None
    [line] = problems(tmp_path, "engine.threads=0")
    assert line == "engine.threads=0; expected null (the run's cores, rl/cluster.py) or a count >= 1"
