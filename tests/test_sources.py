"""Reward and gold configs resolved against a task: what `rule`, `gold` and `task` mean, and when the
arith zoo is needed."""
import pytest
from omegaconf import OmegaConf

from rewards import resolve, zoo_artifacts
from tests.test_config import CONF


class FakeTask:
    name = "fake"
    verifier = {"name": "math", "type": "math_verify", "extract": "auto"}
    default_gold = {"name": "gold", "type": "math_verify", "extract": "auto"}


def load(group, option):
    return OmegaConf.load(CONF / group / f"{option}.yaml")


def test_rule_is_the_tasks_verifier_and_keeps_the_users_keys():
    cfg = OmegaConf.merge(load("reward", "rule"), {"unverifiable": 0.5})
    assert OmegaConf.to_container(resolve(cfg, FakeTask())) == {
        "name": "rule", "type": "math_verify", "extract": "auto", "unverifiable": 0.5}
    assert resolve(cfg)["type"] == "arith_rule"  # no task (the static harness): the arith world's


def test_gold_is_the_runs_gold_and_task_the_tasks_default():
    rm_gold = OmegaConf.merge(load("gold", "rm"), {"path": "/models/big_rm"})
    assert resolve(load("reward", "gold"), FakeTask(), gold=rm_gold)["path"] == "/models/big_rm"
    assert resolve(load("reward", "gold"), FakeTask(), gold=load("gold", "task"))["type"] == "math_verify"
    assert resolve(load("gold", "task"), FakeTask())["type"] == "math_verify"
    assert resolve(load("gold", "task"))["type"] == "arith_gold"


def test_combination_parts_resolve_and_keep_weights():
    out = resolve(load("reward", "rule_plus_judge"), FakeTask())
    assert [(p.type, p.weight) for p in out.parts] == [("math_verify", 1.0), ("lora_judge", 0.5)]


def test_a_task_without_answers_has_no_verifier():
    class Plain(FakeTask):
        name, verifier, default_gold = "prompts", None, None

    with pytest.raises(ValueError, match="task 'prompts' has no reference answers, so no verifier .reward=rule"):
        resolve(load("reward", "rule"), Plain())
    with pytest.raises(ValueError, match=r"gold=task needs one\): set task.answer_key"):
        resolve(load("gold", "task"), Plain())


@pytest.mark.parametrize("group, option, overrides, expected", [
    ("reward", "rm_l", {}, ["rm_l"]),                          # an artifact of the zoo
    ("reward", "rm_l", {"path": "/models/rm"}, []),            # a path of one's own
    ("reward", "cdr", {}, ["cdr_strong", "base"]),              # the strong and the weak model
    ("reward", "cdr", {"weak_path": "/models/w"}, ["cdr_strong"]),
    ("reward", "rule_plus_judge", {}, ["base", "judge"]),       # the judge part: base model + adapter
    ("reward", "rule", {}, []),
    ("reward", "length", {}, []),
    ("gold", "rm", {"path": "/models/rm"}, []),
    ("gold", "task", {}, []),
])
def test_zoo_artifacts(group, option, overrides, expected):
    assert zoo_artifacts(resolve(OmegaConf.merge(load(group, option), overrides), FakeTask())) == expected
