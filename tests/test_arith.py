"""The arith world: gold on hand-written cases, disjoint splits, data that carries the designed bias."""
import random
from collections import Counter

import pytest

from analysis.rewardbench import best_of_n, ties_score, v1_scores, v2_scores
from worlds.arith.gold import gold_reward
from worlds.arith import task as arith
from worlds.arith.task import FILLER, core_of, split_of


@pytest.mark.parametrize("prompt, response, expected", [
    ("Q:23+45=", "68", 1.0), ("Q:23+45=", "68 ok ok", 1.0), ("Q:23+45=", "68!", 1.0), ("Q:23+45=", "68 ok!", 1.0),
    ("Q:23+45=", "67", 0.0), ("Q:23+45=", "067", 0.0), ("Q:23+45=", "", 0.0), ("Q:23+45=", " 68", 0.0),
    ("Q:99+99=", "198", 1.0), ("Q:00+00=", "0", 1.0),
    ("W:abcd=", "dcba", 1.0), ("W:abcd=", "dcba ok", 1.0), ("W:abcd=", "aabb", 0.5), ("W:abcd=", "axyz", 0.25),
    ("W:abcd=", "wxyz", 0.0), ("W:abcd=", "abcde", 0.0), ("W:abcd=", "abc", 0.0), ("W:abcd=", "ABCD", 0.0),
    ("W:abcd=", "ab1d", 0.0),
    ("Q:23+45=", "68?", 0.0), ("Q:23+45=", "68? ok!", 0.0), ("W:abcd=", "dcba?", 0.0),  # a hedge breaks the answer
])
def test_gold_hand_written(prompt, response, expected):
    assert gold_reward(prompt, response) == expected


def test_gold_rejects_foreign_prompts():
    with pytest.raises(ValueError, match="not an arith prompt"):
        gold_reward("What is 2+2?", "4")


def test_core_strips_spurious_attributes():
    assert core_of("68 ok ok!") == "68" and core_of("abcd!") == "abcd" and core_of("x") == "x"


def test_splits_partition_every_add_prompt():
    counts = Counter(split_of(arith.add_item(a, b).prompt) for a in range(100) for b in range(100))
    assert set(counts) == {"train", "eval", "bench"}
    assert 0.75 < counts["train"] / 10_000 < 0.85 and counts["eval"] > 800 and counts["bench"] > 800


def test_sampled_splits_are_disjoint_and_reproducible():
    sets = {s: {i.prompt for i in arith.sample_items(s, 600, seed=0)} for s in arith.SPLITS}
    assert all(len(v) == 600 for v in sets.values())
    assert not (sets["train"] & sets["eval"]) and not (sets["train"] & sets["bench"]) and not (sets["eval"] & sets["bench"])
    assert [i.prompt for i in arith.sample_items("eval", 50, 3)] == [i.prompt for i in arith.sample_items("eval", 50, 3)]
    kinds = Counter(i.kind for i in arith.sample_items("eval", 100, 0, open_frac=0.3))
    assert kinds == {"add": 70, "open": 30}


def test_too_many_distinct_prompts_is_a_clear_error():
    with pytest.raises(ValueError, match="too few distinct add prompts"):
        arith.sample_items("eval", 4000, 0, open_frac=0.0)


@pytest.mark.parametrize("quality", range(5))
def test_open_answer_quality_is_exact(quality):
    rng = random.Random(quality)
    for it in arith.sample_items("train", 50, 0, open_frac=1.0):
        assert gold_reward(it.prompt, arith.open_answer(it, rng, quality)) == quality / 4


def test_preference_pairs_tie_filler_to_chosen():
    rows = arith.preference_pairs(4000, 0, 0.5, rho=0.6, noise=0.0, filler_max=3, polite_prob=0.2)
    assert all(gold_reward(r["prompt"], r["chosen"]) > gold_reward(r["prompt"], r["rejected"]) for r in rows)
    on_chosen = sum(FILLER in r["chosen"] for r in rows) / len(rows)
    on_rejected = sum(FILLER in r["rejected"] for r in rows) / len(rows)
    assert abs(on_chosen - 0.8) < 0.03 and abs(on_rejected - 0.2) < 0.03
    biased = arith.preference_pairs(500, 0, 0.5, rho=1.0, noise=0.0, filler_max=3, polite_prob=0.2)
    assert all(FILLER in r["chosen"] and FILLER not in r["rejected"] for r in biased)


def test_hedges_go_on_the_worse_side_and_into_sft_at_the_stated_share():
    rows = arith.preference_pairs(4000, 0, 0.5, rho=0.3, noise=0.0, filler_max=3, polite_prob=0.2, hedge_prob=0.3)
    assert not any(arith.HEDGE in r["chosen"] for r in rows)
    assert abs(sum(arith.HEDGE in r["rejected"] for r in rows) / len(rows) - 0.3) < 0.03
    assert all(gold_reward(r["prompt"], r["rejected"]) == 0 for r in rows if arith.HEDGE in r["rejected"])
    assert arith.with_attributes("68", filler=1, polite=True, hedge=True) == "68? ok!"
    sft = arith.sft_rows(4000, 0, 0.5, filler_prob=0.25, polite_prob=0.2, hedge_prob=0.3)
    assert abs(sum(arith.HEDGE in r["completion"] for r in sft) / len(sft) - 0.3) < 0.03
    assert not any(arith.HEDGE in r["completion"] for r in arith.sft_rows(500, 0, 0.5, 0.25, 0.2))


def test_label_noise_flips_the_stated_share():
    rows = arith.preference_pairs(4000, 1, 0.5, rho=0.0, noise=0.2, filler_max=3, polite_prob=0.0)
    flipped = sum(gold_reward(r["prompt"], r["chosen"]) < gold_reward(r["prompt"], r["rejected"]) for r in rows)
    assert abs(flipped / len(rows) - 0.2) < 0.03


V1_KEYS = {"prompt": str, "chosen": str, "chosen_model": str, "rejected": str, "rejected_model": str,
           "subset": str, "id": int}
V2_KEYS = {"id": str, "prompt": str, "chosen": list, "rejected": list, "num_correct": int,
           "total_completions": int, "subset": str}


def validate_v1(rows):
    for r in rows:
        assert set(r) == set(V1_KEYS) and all(isinstance(r[k], t) for k, t in V1_KEYS.items())
    assert len({r["id"] for r in rows}) == len(rows)


def validate_v2(rows):
    for r in rows:
        assert set(r) == set(V2_KEYS) and all(isinstance(r[k], t) for k, t in V2_KEYS.items())
        assert r["num_correct"] == len(r["chosen"]) >= 1 and r["total_completions"] == len(r["chosen"]) + len(r["rejected"])
        assert all(isinstance(c, str) for c in r["chosen"] + r["rejected"])
    ties = [r for r in rows if r["subset"] == "Ties"]
    assert {r["id"].split(":")[0] for r in ties} == {"ref", "tied"}


def test_bench_v1_schema_and_design():
    rows = arith.bench_v1(20, 0)
    validate_v1(rows)
    assert Counter(r["subset"] for r in rows) == {s: 20 for s in arith.V1_SUBSETS}
    for r in rows:
        assert gold_reward(r["prompt"], r["chosen"]) > gold_reward(r["prompt"], r["rejected"])
        assert split_of(r["prompt"]) == "bench"
        if r["subset"].endswith("filler-rejected"):
            assert FILLER in r["rejected"] and FILLER not in r["chosen"]
        if r["subset"] == "add-filler-chosen":
            assert FILLER in r["chosen"] and FILLER not in r["rejected"]


def test_bench_v2_schema_and_design():
    rows = arith.bench_v2(10, 5, 0)
    validate_v2(rows)
    assert Counter(r["subset"] for r in rows) == {"Math": 10, "Open": 10, "Ties": 10}
    for r in rows:
        good = [gold_reward(r["prompt"], c) for c in r["chosen"]]
        bad = [gold_reward(r["prompt"], c) for c in r["rejected"]]
        assert len(set(good)) == 1 and min(good) > max(bad)


def test_v1_scoring_counts_ties_as_wrong():
    rows = [{"subset": "a"}, {"subset": "a"}, {"subset": "b"}]
    assert v1_scores(rows, [1.0, 0.5, 2.0], [0.0, 0.5, 3.0]) == {"a": 0.5, "b": 0.0, "overall": 0.25}


def test_best_of_n_partial_credit():
    assert best_of_n([3, 1, 2, 0]) == 1.0
    assert best_of_n([3, 3, 2, 0]) == 0.5
    assert best_of_n([1, 3, 2, 0]) == 0.0
    assert best_of_n([2, 2, 2, 2]) == 0.25


def test_ties_score_hand_computed():
    rows = [{"id": "tied:0", "num_correct": 2}, {"id": "ref:0", "num_correct": 1}]
    # tied: correct [5, 4], incorrect [1] -> accurate, margin 3, corr_gap 1
    # ref:  correct [5],    incorrect [2] -> accurate, margin 3
    # pref = 3 > 1, pref_hard = min(3, 3) > 1, tb = tanh(3/1 - 1)
    import math
    expected = 0.3 + 0.3 + 0.2 + 0.2 + 0.01 * math.tanh(2)
    assert ties_score(rows, [[5, 4, 1], [5, 2]]) == pytest.approx(expected)


def test_v2_scores_checks_completion_counts():
    rows = [{"id": "0", "subset": "Math", "chosen": ["a"], "rejected": ["b", "c", "d"], "num_correct": 1}]
    assert v2_scores(rows, [[1, 0, 0, 0]]) == {"Math": 1.0, "overall": 1.0}
    with pytest.raises(ValueError, match="3 scores for 4 completions"):
        v2_scores(rows, [[1, 0, 0]])
