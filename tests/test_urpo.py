"""URPO's pieces, each against a hand computation: the ranking parser, concordance (N = 2, 3, 4,
with ties), rank scores, the flip rate, the per-kind split, a left-out group, one mixed batch's
rewards and advantages, and the live referee (new weights, new verdicts)."""
import random
from types import SimpleNamespace

import pytest
import torch

from policies.engine import Rollout
from rewards.ranking import concordance, flip_rate, orders, parse_ranking, rank_scores, referee_prompt, unshuffle
from rewards.referee import LiveReferee
from rl import losses as L
from rl.algos import urpo
from rl.cluster import shutdown_ray


@pytest.mark.parametrize("text, n, expected", [
    ("2>1>3", 3, [[1], [0], [2]]),
    ("Ranking: 2 > 1 > 3.", 3, [[1], [0], [2]]),             # extra text around it
    ("I think 3>2>1 is right", 3, [[2], [1], [0]]),
    ("1>2>3, no: 3>1>2", 3, [[2], [0], [1]]),                 # the last ranking counts
    ("2 > 1 = 3", 3, [[1], [0, 2]]),                          # a tie
    ("2>1", 3, None),                                         # partial: candidate 3 missing
    ("1>1>2", 3, None),                                       # duplicate
    ("1>2>4", 3, None),                                       # unknown index
    ("0>1>2", 3, None),                                       # indices are 1-based
    ("the second one", 3, None),                              # no ranking at all
    ("4>1>3>2", 4, [[3], [0], [2], [1]]),
])
def test_parse_ranking(text, n, expected):
    assert parse_ranking(text, n) == expected


@pytest.mark.parametrize("tiers, truth, expected", [
    ([[0], [1]], [1.0, 0.0], 1.0),                            # N = 2, right
    ([[1], [0]], [1.0, 0.0], 0.0),                            # N = 2, wrong
    ([[0, 1]], [1.0, 0.0], 0.0),                              # N = 2, the verdict ties: wrong
    ([[0], [1], [2]], [0.5, 1.0, 0.0], 2 / 3),                # N = 3: (0,1) wrong, (0,2) (1,2) right
    ([[2], [0], [1]], [1.0, 0.0, 0.0], 1 / 2),                # truth ties 1 and 2: that pair left out
    ([[0, 1], [2], [3]], [3.0, 2.0, 1.0, 0.0], 5 / 6),        # N = 4: the tied pair wrong, 5 of 6 right
    ([[3], [2], [1], [0]], [3.0, 2.0, 1.0, 0.0], 0.0),        # N = 4 reversed
    ([[1], [0], [2]], [0.0, 0.0, 0.0], 1.0),                  # nothing to order: any valid verdict
    (None, [1.0, 0.0], 0.0),                                  # unparsable
])
def test_concordance_by_hand(tiers, truth, expected):
    assert concordance(tiers, truth) == pytest.approx(expected)


def test_rank_scores_flips_and_orders():
    assert rank_scores([[1], [0, 2]]) == [0.25, 1.0, 0.25]    # 1 beats both; 0 and 2 tie: half a win each / 2
    assert rank_scores([[2], [0], [1]]) == [0.5, 0.0, 1.0]
    assert flip_rate([[0], [1], [2]], [[1], [0], [2]]) == pytest.approx(1 / 3)
    assert flip_rate([[0], [1], [2]], [[0], [1], [2]]) == 0.0
    first, second, third = orders(4, 3, random.Random(0))
    assert sorted(first) == [0, 1, 2, 3] and second == first[::-1] and sorted(third) == [0, 1, 2, 3]
    # shown as [c2, c0, c1], the verdict "1>3>2" means c2 > c1 > c0
    assert unshuffle([[0], [2], [1]], [2, 0, 1]) == [[2], [1], [0]]
    assert referee_prompt("Q:1+2=", ["3", "4 ok"], "R:{prompt}{candidates}=", "[{i}]{response}") == "R:Q:1+2=[1]3[2]4 ok="


def test_mix_counts():
    assert urpo.counts(16, [1, 1, 1]) == [6, 5, 5]
    assert urpo.counts(4, [1, 0, 1]) == [2, 0, 2]
    assert urpo.counts(6, [2, 1, 0]) == [4, 2, 0]


class ScriptedEngine:
    """Answers each prompt with a fixed text (a unit test of the sampler, not of an engine)."""

    def __init__(self, answer):
        self.answer, self.calls = answer, []

    def generate(self, prompts, sampling):
        self.calls.append((list(prompts), sampling))
        return [Rollout(p, [1], [2, 3], text, [-0.5, -0.5], "stop")
                for p, prompt in enumerate(prompts) for text in self.answer(prompt, sampling.n)]


def scripted_ctx(task, answer, mix, prompts: int):
    """The sampler's context: G = 2, the arith verifier as proxy and its gold, a scripted engine."""
    from worlds.arith.gold import ArithVerifier, Gold

    verifier, gold = ArithVerifier(), Gold()

    def score(items, texts):
        return verifier.score([i.text for i in items], texts), gold.score([i.text for i in items], texts)

    cfg = SimpleNamespace(seed=0, algo=SimpleNamespace(
        samples_per_prompt=2, prompts_per_step=prompts, temperature=1.0, top_p=1.0, max_tokens=8,
        urpo=SimpleNamespace(mix=mix, ranking_size=2, referee_orders=2, referee_temperature=0.0,
                             referee_max_tokens=8, max_candidate_chars=None, template="R:{prompt}{candidates}=",
                             item="[{i}]{response}")))
    return SimpleNamespace(cfg=cfg, task=task, engine=ScriptedEngine(answer), score=score)


def test_one_mixed_batch_gets_the_hand_computed_rewards_and_advantages(monkeypatch):
    """1 verifiable, 1 ranking and 1 open group of G = 2. Player answers: the add prompt gets one
    right and one wrong answer; the open prompt "abcd" and "zzzz". The referee ranks the listed
    candidates "1>2" whatever they are: shown in a shuffle and its reverse, each candidate wins once,
    so both get 0.5. The ranking prompt's two samples write the true order and its reverse."""
    from worlds.arith.task import ArithTask

    task = ArithTask(0.5)
    ranking = {"prompt": "Q:01+01=", "kind": "add", "candidates": ["3", "2"], "gold": [0.0, 1.0]}
    monkeypatch.setattr(task, "ranking_items", lambda split, n, seed, size: [ranking] * n)

    def answer(prompt, n):
        if prompt.startswith("R:"):
            return ["2>1", "1>2"] if n == 2 else ["1>2"]
        if prompt.startswith("Q:"):
            a, b = prompt[2:-1].split("+")
            return [str(int(a) + int(b)), "999"]
        return ["abcd", "zzzz"]

    ctx = scripted_ctx(task, answer, [1, 1, 1], 3)
    rs, rewards, golds, stats = urpo.sample(ctx, step=0)
    assert rewards == [1.0, 0.0, 0.5, 0.5, 1.0, 0.0]          # (a) verifier, (c) referee, (b) concordance
    assert golds[:2] == [1.0, 0.0] and all(g != g for g in golds[4:])  # ranking rollouts carry no gold (NaN)
    open_prompt = ctx.engine.calls[0][0][1]
    letters = set(open_prompt[2:-1])
    assert golds[2:4] == [len(letters & set("abcd")) / 4, len(letters & set("zzzz")) / 4]
    assert stats["reward/ranking"] == 0.5 and stats["referee/flip_rate"] == 1.0 and stats["urpo/open_groups_left_out"] == 0
    # GRPO advantages per group of 2 (std with n - 1 = 1): [1, 0] -> +-1/sqrt(2) * ... by hand:
    # mean 0.5, std sqrt(0.5) -> (1 - 0.5) / 0.7071 = 0.7071; the open group is flat -> 0
    adv = L.group_advantages(torch.tensor(rewards), 2)
    assert adv.tolist() == pytest.approx([0.70711, -0.70711, 0.0, 0.0, 0.70711, -0.70711], abs=1e-4)


def test_an_unparsable_verdict_leaves_the_group_out():
    from worlds.arith.task import ArithTask

    def answer(prompt, n):
        return ["no idea"] * n if prompt.startswith("R:") else ["abcd", "zzzz"]

    ctx = scripted_ctx(ArithTask(0.5), answer, [0, 0, 1], 1)
    _, rewards, _, stats = urpo.sample(ctx, step=0)
    assert all(r != r for r in rewards) and stats["urpo/open_groups_left_out"] == 1.0
    assert stats["referee/open_parse_rate"] == 0.0


def test_a_left_out_group_changes_nothing_in_the_update(tmp_path):
    """The update on [kept, left out (NaN)] equals GRPO's on the kept group alone: the same gradient.
    (Not the parameters after AdamW: its first step moves every weight by about lr * sign(grad), so
    a gradient element within rounding of 0, which differs with the batch's padded shape and the
    CPU's kernels, moves by +-lr either way.)"""
    from policies.tiny import random_model
    from rl.learner import Learner
    from tests.test_microbatch import algo_cfg, rollouts

    path = str(random_model(tmp_path / "m", "tiny", seed=3))
    rs = rollouts(Learner(path, algo_cfg()).policy.config.vocab_size)[:4]  # 2 groups of 2
    cfg = algo_cfg("algo=urpo", "algo.samples_per_prompt=2", "algo.lr=1e-2", "algo.minibatch=4")
    both = Learner(path, cfg)
    torch.manual_seed(0)
    m = both.update(rs, [1.0, 0.0, float("nan"), float("nan")])
    alone = Learner(path, cfg)
    torch.manual_seed(0)
    alone.update(rs[:2], [1.0, 0.0])
    assert m["urpo/groups_left_out"] == 1.0
    scale = max(q.grad.abs().max().item() for q in alone.policy.parameters())
    for (name, p), q in zip(both.policy.named_parameters(), alone.policy.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-6 * scale), name


def test_the_referee_is_the_live_policy(tmp_path):
    """The same groups judged before and after new weights reach the engine get other verdicts."""
    from policies.hf_engine import HFEngine
    from policies.tiny import random_model

    path = str(random_model(tmp_path / "m", "tiny", seed=4))
    engine = HFEngine(path)
    ref = LiveReferee(engine, "R:{prompt}{candidates}=", "[{i}]{response}", orders=2, max_tokens=8)
    groups = [["68", "67 ok", "68?"], ["abcd", "dcba", "zzzz"]]
    before = [v["texts"] for v in ref.judge(["Q:23+45=", "W:abcd="], groups, seed=0)]
    assert before == [v["texts"] for v in ref.judge(["Q:23+45=", "W:abcd="], groups, seed=0)]  # greedy: reproducible
    state = {k: v + 0.5 * torch.randn_like(v) for k, v in engine.model.state_dict().items()}
    engine.load_weights(state)
    after = [v["texts"] for v in ref.judge(["Q:23+45=", "W:abcd="], groups, seed=0)]
    assert after != before


def test_the_referee_learns_in_a_short_urpo_run(tmp_path, user_cache):
    """40 URPO steps of ranking groups only (`algo.urpo.mix=[0,1,0]`) from the arith zoo's referee (SFT'd
    until a fifth of its greedy verdicts parse: it ranks 4 candidates badly): its ranking reward
    (concordance with gold, 0 when unparsable) and parse rate on each step's fresh training rankings at
    T=1 rise from steps 1-10 to steps 21-40.

    Ranking groups only, because in the joint mix the referee's gain is a coin toss at this scale. Measured
    on zoo arith-1805a1a4b97d built on an AVX-512 CPU, ranking reward over steps 1-10 -> 31-40: mix [1,1,1]
    seed 0 0.096 -> 0.101 (0.204 over steps 11-20, then the player's verifier reward took over), seed 1
    0.117 -> 0.118; [1,2,1] seeds 0-2 +0.08, +0.09, -0.04; the same zoo built on an AVX2 CPU gave +0.18
    with [1,1,1] seed 0. Ranking groups alone rose steadily in every seed tried: steps 1-10 -> 21-40,
    reward +0.069, +0.088, +0.041 and parse rate +0.12, +0.18, +0.08 (seeds 0, 1, 2); the margins
    asked are a bit over half the smallest. Without learning, 20 steps of 64 rankings put the difference
    within about +-0.012 (reward) of 0. Not the greedy held-out accuracy: a referee this young flips between
    parsable and not from one evaluation to the next (final 0.35, 0.51, 0.08 in those seeds)."""
    import json

    from rl.loop import run
    from tests.test_loop import config

    try:
        summary = run(config("algo=urpo", "policy=arith_referee", "reward=rule", "algo.urpo.mix=[0,1,0]",
                             "algo.steps=40", "eval.every=40", "algo.urpo.eval_rankings=100", "checkpoint.every=0",
                             f"cache_dir={user_cache}"),
                      str(tmp_path / "run"))
    finally:
        shutdown_ray()
    assert {"referee_accuracy_initial", "referee_accuracy_final", "referee_parse_rate_final"} <= set(summary)
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for key in ("reward/ranking", "referee/ranking_parse_rate", "urpo/open_groups_left_out"):
        assert key in metrics[1], key
    train = {m["step"]: m for m in metrics if "reward/ranking" in m}
    assert sorted(train) == list(range(1, 41))
    mean = lambda key, steps: sum(train[s][key] for s in steps) / len(steps)  # noqa: E731
    first, last = range(1, 11), range(21, 41)
    assert mean("reward/ranking", last) >= mean("reward/ranking", first) + 0.025, [train[s]["reward/ranking"] for s in train]
    assert mean("referee/ranking_parse_rate", last) >= mean("referee/ranking_parse_rate", first) + 0.05


class Canned:
    """A stand-in engine for compare(): fixed verdict texts, the prompts it was sent kept."""

    def __init__(self, texts):
        self.texts, self.sent = texts, None

    def generate(self, prompts, sampling):
        self.sent = list(prompts)
        return [SimpleNamespace(text=t) for t in self.texts]


def test_compare_asks_in_the_order_given_and_reads_the_verdicts():
    from rewards.referee import pick

    assert (pick([[0], [1]]), pick([[1], [0]]), pick([[0, 1]]), pick(None)) == ("A", "B", None, None)
    engine = Canned(["2>1", "Ranking: 1 > 2", "1=2", "1>1", "no idea"])
    ref = LiveReferee(engine, "R:{prompt}{candidates}=", "[{i}]{response}", orders=1, max_candidate_chars=3)
    picks = ref.compare(["Q:1+1="] * 5, ["2", "3", "2", "2", "2 ok"], ["3 ok", "2", "2", "3", "3"])
    assert picks == ["B", "A", None, None, None]
    assert engine.sent[0] == "R:Q:1+1=[1]2[2]3 o="  # second candidate cut to 3 characters
    assert engine.sent[4] == "R:Q:1+1=[1]2 o[2]3="
    assert ref.cut == 2


def test_a_referee_from_disk_gives_the_picks_of_greedy_decoding_by_hand(tmp_path):
    """reward=referee (the zoo's referee behind the HF engine): each pick equals what greedy
    decoding of the hand-written prompt with plain transformers gives, read by a regex here."""
    import re

    from omegaconf import OmegaConf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rewards import make_source
    from worlds import zoo
    from worlds.arith.task import ranking_items

    world = zoo.world_config("arith_small")
    zoo_dir = zoo.ensure(world, zoo.default_cache_dir(), ["referee"])
    cfg = OmegaConf.create({"name": "referee", "type": "referee", "artifact": "referee", "path": None,
                            "template": "R:{prompt}{candidates}=", "item": "[{i}]{response}", "max_tokens": 16,
                            "max_candidate_chars": None})
    ref = make_source(cfg, zoo_dir)
    tok = AutoTokenizer.from_pretrained(zoo_dir / "referee")
    model = AutoModelForCausalLM.from_pretrained(zoo_dir / "referee").eval()
    # the reduced zoo's referee (20 SFT steps) writes a verdict on few rankings, and which ones
    # depends on the CPU's numerics: more rankings until some verdict parses
    for n in (16, 64, 256):
        rows = ranking_items("eval", n, 3, 2)
        q, a, b = [r["prompt"] for r in rows], [r["candidates"][0] for r in rows], [r["candidates"][1] for r in rows]
        picks = ref.compare(q, a, b) + ref.compare(q, b, a)
        expected = []
        for first, second in ((a, b), (b, a)):
            for qi, x, y in zip(q, first, second):
                ids = tok(f"R:{qi}[1]{x}[2]{y}=", add_special_tokens=False, return_tensors="pt").input_ids
                out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=16,
                                     pad_token_id=tok.pad_token_id)
                found = re.findall(r"\d+(?:\s*[>=]\s*\d+)+", tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
                verdict = re.sub(r"\s", "", found[-1]) if found else ""
                expected.append({"1>2": "A", "2>1": "B"}.get(verdict))
        assert picks == expected, n
        if any(p is not None for p in picks):
            break
    assert any(p is not None for p in picks)


def test_score_tiers_and_the_comparison_run_config():
    from hydra import compose, initialize_config_dir

    from analysis.study import CONF
    from analysis.urpo import arms, baseline_cfg, score_tiers

    assert score_tiers([0.2, 0.9, 0.2, 0.5]) == [[1], [3], [0, 2]]
    assert score_tiers([0.4, 0.4]) == [[0, 1]]
    assert concordance(score_tiers([0.2, 0.9, 0.2, 0.5]), [1.0, 3.0, 0.0, 2.0]) == pytest.approx(5 / 6)  # (0,2) tied
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("urpo", overrides=["algo.steps=7", "algo.lr=2e-4"])
    base = baseline_cfg(cfg, "judge")
    assert base.algo.name == "grpo" and "urpo" not in base.algo
    assert base.reward.type == "lora_judge" and cfg.reward.type == "rule"
    assert [p.type for p in baseline_cfg(cfg, "rule_plus_judge").reward.parts] == ["rule", "lora_judge"]
    assert arms(cfg) == ["urpo", "judge", "rule_plus_judge"]
    cfg.study.baselines = ["judge", "nope"]
    with pytest.raises(ValueError, match=r"no config reward=nope"):  # before any run starts
        arms(cfg)
    for key in ("steps", "prompts_per_step", "samples_per_prompt", "lr", "temperature", "max_tokens"):
        assert base.algo[key] == cfg.algo[key], key
    assert (base.algo.steps, base.algo.lr, base.policy.artifact, base.seed) == (7, 2e-4, "referee", cfg.seed)
