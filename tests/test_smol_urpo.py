"""URPO on the smol world: the mixed task (light; reads the shipped pair files) and the chat-form
live referee."""
import gzip
import json
import re

import pytest
from omegaconf import OmegaConf

from rewards.referee import LiveReferee, verdict_text
from rl.tasks import REPO

ASKED = re.compile(r"^\D*?(\d+) (?:\+|-|plus|minus) (\d+)")


@pytest.fixture(scope="module")
def mixed():
    from worlds.smol.mixed import make

    return make(OmegaConf.create({"max_operand": 20, "ops": ["+", "-"], "fewshot": 3, "world": "smol",
                                  "instruction": "Give the answer as a number after ####.", "open_frac": 0.3,
                                  "open_max_chars": 300}))


def test_ranking_replies_are_ordered_by_their_arithmetic(mixed):
    """Each reply's gold is whether the number after #### is the question's result, computed here
    from the question's text."""
    rows = mixed.ranking_items("train", 200, seed=3, size=4)
    assert len(rows) == 200
    for r in rows:
        a, b = map(int, ASKED.match(r["prompt"]).groups())
        result = a + b if ("+" in r["prompt"] or "plus" in r["prompt"]) else a - b
        said = [int(re.search(r"####\s*(-?\d+)", c).group(1)) for c in r["candidates"]]
        assert r["gold"] == [float(v == result) for v in said], r
        assert 1 <= sum(r["gold"]) <= 3 and len(set(r["candidates"])) == 4
    assert mixed.ranking_items("train", 5, 3, 4) == rows[:5]  # reproducible from (split, seed)
    evals = {r["prompt"] for r in mixed.ranking_items("eval", 200, seed=3, size=4)}
    assert not evals & {r["prompt"] for r in rows}  # held-out rankings ask held-out questions


def test_open_prompts_are_real_single_turn_prompts_without_an_answer(mixed):
    """Open items are single-turn prompts of the shipped pair files (LLMBar's human pairs, HH
    harmless), at most open_max_chars long, each in one split; about open_frac of the drawn items."""
    raw = set()
    with gzip.open(REPO / "data/real/llmbar/processed_human_pairs.jsonl.gz", "rt") as f:
        raw |= {json.loads(line)["prompt"].strip() for line in f if line.strip()}
    with gzip.open(REPO / "data/real/hh_rlhf/harmless-base_test.jsonl.gz", "rt") as f:
        for line in f:
            text = json.loads(line)["chosen"]
            turns = text.split("\n\nHuman: ")
            if len(turns) == 2:  # one human turn
                raw.add(turns[1].split("\n\nAssistant:")[0].strip())
    items = mixed.items("train", 1000, seed=0, distinct=False)
    opened = [it for it in items if it.kind == "open"]
    assert 240 <= len(opened) <= 360  # 0.3 of 1000, binomial sd 14.5
    for it in opened:
        assert it.answer is None and len(it.prompt) == 1 and it.prompt[0]["role"] == "user"
        assert it.text in raw and len(it.text) <= 300
    assert all(it.answer is not None for it in items if it.kind != "open")
    train = {it.text for it in opened}
    held = {it.text for s in ("eval", "bench") for it in mixed.items(s, 40, 0) if it.kind == "open"}
    assert held and not train & held
    assert mixed.items("train", 50, seed=7, distinct=False) == mixed.items("train", 50, seed=7, distinct=False)
    assert mixed.dropped["open prompts: several turns"] > 0  # counted, not silently dropped


def test_the_verifier_gives_open_prompts_no_gold(mixed):
    """The task's default gold: the tagged answer's correctness on a problem, NaN on an open prompt."""
    from rewards import make_source, resolve

    gold = make_source(resolve(OmegaConf.create({"name": "gold", "type": "task"}), mixed))
    problem = next(it for it in mixed.items("eval", 40, 0) if it.kind != "open")
    opened = next(it for it in mixed.items("eval", 40, 0) if it.kind == "open")
    out = gold.score(["", "", ""], [f"#### {problem.answer}", "#### 123456", f"#### {problem.answer}"],
                     items=[problem, problem, opened])
    assert out[:2] == [1.0, 0.0] and out[2] != out[2]


def test_verdict_text_by_hand():
    assert verdict_text([0.0, 0.0, 1.0, 1.0]) == "3 > 4 > 1 > 2"
    assert verdict_text([1.0, 0.0, 0.5]) == "1 > 3 > 2"


class Echo:
    def __init__(self):
        self.prompts = []

    def generate(self, prompts, sampling):
        from policies.engine import Rollout

        self.prompts += list(prompts)
        return [Rollout(i, [1], [2], "2 > 1", [-0.1], "stop") for i in range(len(prompts))]


def test_a_chat_referee_sends_its_demonstrations_as_earlier_turns():
    engine = Echo()
    ref = LiveReferee(engine, "Q: {prompt}\n{candidates}", "[{i}] {response}\n", orders=1, demos=[("Q: x\n[1] a\n[2] b\n", "1 > 2")])
    assert ref.compare(["What is 1 + 1?"], ["2"], ["3"]) == ["B"]
    assert engine.prompts == [[{"role": "user", "content": "Q: x\n[1] a\n[2] b\n"}, {"role": "assistant", "content": "1 > 2"},
                               {"role": "user", "content": "Q: What is 1 + 1?\n[1] 2\n[2] 3\n"}]]
    plain = LiveReferee(Echo(), "Q: {prompt}\n{candidates}", "[{i}] {response}\n")
    assert plain.prompts("q", ["a", "b"], [1, 0]) == "Q: q\n[1] b\n[2] a\n"


def test_urpo_smol_composes_and_passes_the_checks():
    """The smol URPO config: the chat referee with the task's template, the smol policy, the verifier."""
    from hydra import compose, initialize_config_dir

    from rl.validate import validate

    with initialize_config_dir(str(REPO / "conf"), version_base=None):
        cfg = compose("urpo_smol")
    assert cfg.algo.name == "urpo" and cfg.task.name == "smol_mixed" and cfg.policy.world == "smol"
    assert cfg.algo.urpo.chat and cfg.algo.urpo.template.startswith("Rank the answers") and cfg.reward.type == "rule"
    validate(cfg)
