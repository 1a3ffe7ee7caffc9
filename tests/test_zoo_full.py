"""The full default zoo (built once, minutes; cached by content hash): graded proxies, a biased one.

The build is deterministic (fixed seeds, CPU kernels), so the numbers asserted here are the
ones `python -m worlds.zoo info` reports; the margins below are the design's, not tuned to luck.
"""
import json

import numpy as np
import pytest

from worlds import zoo
from worlds.arith import zoo as recipe
from worlds.arith import task as arith

GRADED = ["rm_xs", "rm_s", "rm_m", "rm_l"]  # 256 -> 16,384 preference pairs, less label noise


@pytest.fixture(scope="module")
def full_zoo(user_cache):
    world = zoo.world_config("arith")
    path = zoo.ensure(world, user_cache)
    return world, path, json.loads((path / "info.json").read_text())


def test_base_policy_has_room_to_improve(full_zoo):
    _, _, info = full_zoo
    assert 0.15 <= info["base_gold_accuracy"] <= 0.60


def test_proxy_quality_is_graded(full_zoo):
    _, _, info = full_zoo
    acc = info["static_accuracy"]
    assert acc["gold"] == 1.0
    assert max(acc[n] for n in GRADED) - min(acc[n] for n in GRADED) >= 0.20
    assert acc["rm_l"] == max(acc[n] for n in GRADED + ["rm_biased"])
    assert acc["rm_l"] - acc["rm_biased"] >= 0.15
    # More, cleaner data never hurts by more than noise on the subsets the labels speak to. Not on
    # add-polite-rejected: politeness is independent of the label in every RM's training pairs, so
    # whether an RM likes "!" is left to its score head's random init (measured: rm_s 0.94 there,
    # rm_m 0.59 -- enough to put rm_s above rm_m overall on this build).
    v1 = {n: info["static"][n]["v1"] for n in GRADED}
    learned = {n: np.mean([v for k, v in s.items() if k not in ("overall", "add-polite-rejected")]) for n, s in v1.items()}
    for small, large in zip(GRADED, GRADED[1:]):
        assert learned[large] >= learned[small] - 0.03, (small, large, learned)


def test_biased_proxy_prefers_the_spurious_attribute(full_zoo):
    """How often a padded wrong answer outscores the plain right one, per source; gold: never."""
    import random

    world, path, _ = full_zoo
    rng = random.Random(0)
    items = arith.sample_items("bench", 200, 99, open_frac=0.0)
    prompts = [it.prompt for it in items]
    right = [it.answer for it in items]
    padded_wrong = [arith.with_attributes(arith.wrong_answer(it, rng), filler=2) for it in items]
    sources = recipe.reward_sources(path, world)
    rate = {}
    for name in ["gold", "rm_biased", "rm_l"]:
        s_right, s_wrong = sources[name].score(prompts, right), sources[name].score(prompts, padded_wrong)
        rate[name] = sum(w > r for w, r in zip(s_wrong, s_right)) / len(items)
    assert rate["gold"] == 0.0
    assert rate["rm_biased"] >= 0.9
    assert rate["rm_biased"] > rate["rm_l"] + 0.2


def test_every_proxy_sees_the_hedge(full_zoo):
    """The world's one flaw the proxies catch: a hedged right answer ("68?", gold 0) scores below
    the same answer plain. rm_s, rm_m, rm_l and CDR ~always. The 256-pair rm_xs and the
    filler-dominated rm_biased are not asserted: they differ between builds of the same zoo on
    different CPUs (rm_xs 0.63 / 0.75, rm_biased 0.86 / 0.51 on two machines: float rounding
    changes their training), so they would test the machine, not the world."""
    world, path, _ = full_zoo
    items = arith.sample_items("bench", 100, 7)
    prompts = [it.prompt for it in items]
    rng = __import__("random").Random(1)
    plain = [it.answer or arith.open_answer(it, rng, 4) for it in items]
    hedged = [arith.with_attributes(p, hedge=True) for p in plain]
    sources = recipe.reward_sources(path, world)
    caught = {}
    for name in [*world.rms, "cdr", "gold"]:
        s_plain, s_hedged = sources[name].score(prompts, plain), sources[name].score(prompts, hedged)
        caught[name] = sum(h < p for h, p in zip(s_hedged, s_plain)) / len(items)
    assert caught["gold"] == 1.0, caught
    assert all(caught[n] >= 0.95 for n in ("rm_s", "rm_m", "rm_l", "cdr")), caught


def test_judge_emits_one_line_json_verdicts(full_zoo):
    world, path, info = full_zoo
    judge = recipe.reward_sources(path, world)["judge"]
    items = arith.sample_items("bench", 20, 5)
    verdicts = judge.generate_verdicts([it.prompt for it in items], [it.answer or "abcd" for it in items])
    assert all(v is not None and set(v) == {"score"} and 0 <= v["score"] <= 9 for v in verdicts), verdicts
    assert info["judge_parse_failures"] == 0


def test_the_referee_was_trained_until_a_fifth_of_its_verdicts_parse(full_zoo):
    """The build's record (checks from step 100 every 5 steps, stopped at the first >= 0.2) and its
    last parse rate recomputed here: plain transformers greedy decoding, one prompt at a time, and a
    verdict counted when it is exactly a permutation of 1..4 joined by '>' or '='."""
    import re

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    world, path, info = full_zoo
    ref, record = world.referee, info["referee"]
    rates = [c["parse_rate"] for c in record["checks"]]
    assert [c["step"] for c in record["checks"]] == list(range(100, record["sft_steps"] + 1, 5))
    assert rates[-1] >= 0.2 and all(r < 0.2 for r in rates[:-1]), record
    tok = AutoTokenizer.from_pretrained(path / "referee")
    model = AutoModelForCausalLM.from_pretrained(path / "referee").eval()
    rankings = arith.ranking_items("train", 100, world.seed + 29, 4, world.open_frac)
    parsed = 0
    for r in rankings:
        prompt = "R:" + r["prompt"] + "".join(f"[{i + 1}]{c}" for i, c in enumerate(r["candidates"])) + "="
        ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=16,
                                 pad_token_id=tok.pad_token_id)
        text = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        parsed += bool(re.fullmatch(r"\s*\d\s*[>=]\s*\d\s*[>=]\s*\d\s*[>=]\s*\d\s*", text)) and \
            sorted(re.findall(r"\d", text)) == ["1", "2", "3", "4"]
    assert parsed / 100 == rates[-1], (parsed, record)
