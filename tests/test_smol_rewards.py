"""The smol world's real-model reward sources: the training pool kept off the benchmarks (light), the
plug-and-play judge and the customised CDR against plain full forwards (heavy: SmolLM2-135M; run
under `flock /tmp/heavy.lock`), the static harness on 20 real rows, and the whole zoo with its
trained sources (slow)."""
import gzip
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data" / "real"


def raw(path):
    return [json.loads(line) for line in gzip.open(path, "rt") if line.strip()]


def hh_prompt(text):
    return text[: text.rfind("\n\nAssistant:") + len("\n\nAssistant:")]


def hh_train_side(prompt):  # the first 8 bytes of sha256 as a fraction below bench.train_frac = 0.5
    return int(hashlib.sha256(prompt.encode()).hexdigest()[:16], 16) < 2**63


def test_training_pairs_share_no_prompt_with_any_benchmark_row_they_are_scored_on():
    from worlds import zoo
    from worlds.smol.pairs import pool, select

    world = zoo.world_config("smol")
    assert list(world.static.benches) == ["llmbar", "hh_harmless", "rm_bench", "gsm8k_1vn", "gsm8k_bo4"]
    scored = {r["prompt"] for r in raw(DATA / "llmbar" / "llmbar.jsonl.gz")}
    hh = [r for r in raw(DATA / "hh_rlhf" / "harmless-base_test.jsonl.gz")
          if hh_prompt(r["chosen"]) == hh_prompt(r["rejected"])]
    scored |= {hh_prompt(r["chosen"]) for r in hh if not hh_train_side(hh_prompt(r["chosen"]))}
    for part in ("chat", "code", "safety-refuse", "safety-response"):
        scored |= {r["prompt"] for r in raw(DATA / "rm_bench" / f"{part}.jsonl.gz")}
    scored |= {r["question"] for r in raw(DATA / "gsm8k" / "example_model_solutions.jsonl.gz")}
    scored = {p.strip() for p in scored}

    rows, dropped = pool(world)
    assert not {r["prompt"].strip() for r in rows} & scored
    human = raw(DATA / "llmbar" / "processed_human_pairs.jsonl.gz")
    clash = sum(r["prompt"].strip() in scored for r in human)
    assert clash > 0 and dropped["human_pairs: prompt also in a benchmark"] == clash  # dropped and counted
    hh_train = [r for r in hh if hh_train_side(hh_prompt(r["chosen"])) and hh_prompt(r["chosen"]).strip() not in scored]
    assert sum(r["source"] == "human_pairs" for r in rows) == len(human) - clash
    assert sum(r["source"] == "hh_harmless_train" for r in rows) == len(hh_train) > 900

    train, demos = select(rows, 40, 6, 700, seed=0)
    assert len(train) == 40 and len(demos) == 6
    assert sum(r["source"] == "human_pairs" for r in train) == 20  # evenly from both sources
    assert all(len(d["prompt"]) + len(d["chosen"]) + len(d["rejected"]) <= 700 for d in demos)
    assert not {id(r) for r in train} & {id(d) for d in demos}
    with pytest.raises(ValueError, match="world.pairs.train=5000"):
        select(rows, 5000, 6, 700, seed=0)


def test_a_source_of_another_world_is_refused_by_name():
    out = subprocess.run([sys.executable, "-m", "analysis.static", "reward=pnp_judge", "bench=llmbar"], cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "reward 'pnp_judge' reads the 'smol' world's zoo (reward.world): add world=smol" in out.stderr


@pytest.fixture(scope="module")
def smol_base():
    from worlds import zoo

    return str(zoo.ensure(zoo.world_config("smol"), zoo.default_cache_dir(), ["base"]) / "base")


def full_forward(model, tok, messages, opening):
    """The probabilities after `opening` appended to the chat, from one forward over the whole text."""
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + opening
    ids = torch.tensor([tok(text, add_special_tokens=False).input_ids])
    with torch.no_grad():
        return model(input_ids=ids).logits[0, -1].softmax(-1)


def test_the_judge_reads_its_verdicts_as_a_plain_forward_over_the_whole_chat_does(smol_base):
    """Pointwise: the expected digit (0-9) after '{"score":' over 9; pairwise: the likelier of A and
    B after '{"better":"'. The judge computes its rubric and demonstrations once and reuses them,
    in padded batches; the reference here renders each whole chat and runs it alone."""
    from rewards.pnp_judge import RUBRICS, PnPJudge

    demos = [{"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"},
             {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "I will not answer."}]
    judge = PnPJudge(smol_base, demos=demos, shots=2, batch_size=2)
    prompts = ["Is the sun a star?", "What is 10 minus 3?", "Say hello in French."]
    first = ["Yes, the sun is a star.", "7", "Bonjour!"]
    second = ["No, it is a planet.", "The answer is 13, because subtraction adds.", "Hola."]
    point_demos = [
        {"role": "user", "content": "User message:\nWhat is 2+2?\n\nAssistant response:\n4"},
        {"role": "assistant", "content": '{"score":8}'},
        {"role": "user", "content": "User message:\nName a colour.\n\nAssistant response:\nI will not answer."},
        {"role": "assistant", "content": '{"score":2}'}]
    pair_demos = [
        {"role": "user", "content": "User message:\nWhat is 2+2?\n\nResponse A:\n4\n\nResponse B:\n5"},
        {"role": "assistant", "content": '{"better":"A"}'},
        {"role": "user", "content": "User message:\nName a colour.\n\nResponse A:\nI will not answer.\n\nResponse B:\nBlue."},
        {"role": "assistant", "content": '{"better":"B"}'}]
    tok, model = judge.tokenizer, judge.model
    digits = [tok(str(k), add_special_tokens=False).input_ids[0] for k in range(10)]
    letters = [tok(x, add_special_tokens=False).input_ids[0] for x in "AB"]
    want_scores, want_picks = [], []
    for p, a, b in zip(prompts, first, second):
        probs = full_forward(model, tok, [{"role": "system", "content": RUBRICS["point"]}] + point_demos + [
            {"role": "user", "content": f"User message:\n{p}\n\nAssistant response:\n{a}"}], '{"score":')[digits]
        assert probs.sum() > 0.5
        want_scores.append(float((probs * torch.arange(10)).sum() / probs.sum() / 9))
        pa, pb = full_forward(model, tok, [{"role": "system", "content": RUBRICS["pair"]}] + pair_demos + [
            {"role": "user", "content": f"User message:\n{p}\n\nResponse A:\n{a}\n\nResponse B:\n{b}"}], '{"better":"')[letters]
        want_picks.append("A" if pa > pb else "B")
    assert judge.score(prompts, first) == pytest.approx(want_scores, abs=1e-4)
    assert judge.compare(prompts, first, second) == want_picks
    assert judge.parse_failures == {"point": 0, "pair": 0} and judge.scored == {"point": 3, "pair": 3}
    with pytest.raises(ValueError, match="shots=3 but only 2 demonstrations"):
        PnPJudge(smol_base, demos=demos, shots=3)


def test_customised_cdr_is_the_rubric_conditioned_log_prob_minus_the_plain_one(smol_base):
    """One model, two templates: sum over response tokens (and the closing EOS) of log p(y | strong
    template) minus the same under the plain template, each computed here by a forward over the whole text."""
    from rewards.cdr import CDR

    strong, weak = "Be correct.\nQ: {prompt}\nA:", "Q: {prompt}\nA:"
    cdr = CDR(smol_base, smol_base, template=weak, strong_template=strong)
    assert cdr.models[0][1] is cdr.models[1][1]  # one copy of the one model
    tok, model = cdr.models[0]
    prompts, responses = ["What is 3 plus 4?", "Name a fruit."], [" 7", " An apple."]

    def logp(context, response):
        ctx = tok(context, add_special_tokens=False).input_ids
        # the response as scored ends with the end-of-sequence token
        ids = torch.tensor([ctx + tok(response, add_special_tokens=False).input_ids + [tok.eos_token_id]])
        with torch.no_grad():
            lp = model(input_ids=ids).logits[0, :-1].log_softmax(-1).gather(-1, ids[0, 1:, None]).squeeze(-1)
        return float(lp[len(ctx) - 1:].sum())

    want = [logp(strong.replace("{prompt}", p), r) - logp(weak.replace("{prompt}", p), r) for p, r in zip(prompts, responses)]
    assert cdr.score(prompts, responses) == pytest.approx(want, abs=1e-3)
    assert abs(want[0]) > 1e-3  # the rubric moves the log-probs: the test can tell the two sides apart


def test_the_static_harness_scores_the_zero_shot_judge_on_20_llmbar_rows_in_both_orders(tmp_path, smol_base):
    out = subprocess.run([sys.executable, "-m", "analysis.static", "world=smol", "reward=pnp_judge_0shot", "bench=llmbar",
                          "bench.limit=20", "judge_protocol=both_orders", "max_chars.prompt=600", "max_chars.response=400",
                          f"hydra.run.dir={tmp_path}"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads((tmp_path / "static.json").read_text())
    assert res["rows_scored"] == 20 and res["completions_scored"] == 40
    jp = res["judge_protocol"]
    verdicts = jp["verdicts"]  # per row: [pick with chosen shown first, pick with chosen shown second]
    assert len(verdicts) == 20 and all(v in ("A", "B", None) for pair in verdicts for v in pair)
    both = [(x, y) for x, y in verdicts if x and y]
    assert jp["flip_rate"] == pytest.approx(sum(x == y for x, y in both) / len(both))
    # both orders: right in both = 1, one right one wrong (a flip) = 0.5, wrong in both = 0 (METHODS §1.4);
    # subsets from the bench rows as loaded (the same seeded 20), scores per subset then their mean
    from omegaconf import OmegaConf

    from analysis.benchmarks import load

    cfg = OmegaConf.load(REPO / "conf" / "bench" / "llmbar.yaml")
    cfg.limit = 20
    subsets = [r["subset"] for r in load(cfg).rows]
    credit, right = {}, {}
    for sub, (x, y), (c, r) in zip(subsets, verdicts, res["row_scores"]):
        credit.setdefault(sub, []).append(1.0 if (x, y) == ("A", "B") else 0.0 if (x, y) == ("B", "A") else 0.5)
        right.setdefault(sub, []).append(float(c > r))
    assert jp["per_subset"] == pytest.approx({k: sum(v) / len(v) for k, v in credit.items()})
    assert jp["overall"] == pytest.approx(sum(sum(v) / len(v) for v in credit.values()) / len(credit))
    for sub, v in right.items():
        assert res["scores"][sub] == pytest.approx(sum(v) / len(v))
    assert all(0.0 <= x <= 1.0 for pair in res["row_scores"] for x in pair)  # expected score / 9


@pytest.mark.slow
def test_the_whole_smol_zoo_trains_its_sources_and_reports_each_on_each_benchmark(smol_base):
    """The judge's LoRA and the BT RM trained on a few real pairs, and the report's table: every
    source on every benchmark, judges also in both orders on the pairs benchmarks (minutes)."""
    from omegaconf import OmegaConf

    from worlds import zoo

    world = zoo.world_config("smol", ["pairs.train=8", "static.rows=4", "eval_prompts=8", "judge.batch_size=4",
                                      "rm.batch_size=4"])
    root = zoo.ensure(world, zoo.default_cache_dir())
    info = json.loads((root / "info.json").read_text())
    from worlds.smol.zoo import format_info

    text = format_info(info)
    assert "static accuracy" in text and "pnp_judge_0shot" in text and "smol_cdr" in text
    assert set(info["judge_parse_failures"]) == {"pnp_judge_0shot", "pnp_judge_6shot", "pnp_judge"}
    assert info["pairs"]["train"] == {"human_pairs": 4, "hh_harmless_train": 4} and sum(info["pairs"]["demos"].values()) == 6
    adapter = json.loads((root / "judge_lora" / "adapter_config.json").read_text())
    assert adapter["r"] == 16 and set(adapter["target_modules"]) >= {"q_proj", "down_proj"}
    rm = json.loads((root / "rm" / "config.json").read_text())
    assert rm["architectures"] == ["LlamaForSequenceClassification"] and len(rm["id2label"]) == 1
    sources, benches = list(world.static.sources), list(world.static.benches)
    assert list(info["static_accuracy"]) == sources
    for name in sources:
        assert list(info["static_accuracy"][name]) == benches
        assert all(0.0 <= a <= 1.0 for a in info["static_accuracy"][name].values())
        for bench in ("llmbar", "hh_harmless"):
            row = info["static"][name][bench]
            assert row["rows"] == 4
            assert ("flip_rate" in row) == name.startswith("pnp_judge")
    # the LoRA is a real change to the judge: its verdict probabilities differ from the 6-shot judge's
    from rewards import make_source

    cfg = zoo.compose("static", ["world=smol", "reward=pnp_judge"]).reward
    lora, plain = make_source(cfg, root), make_source(OmegaConf.merge(cfg, {"adapter_artifact": None}), root)
    q = ["User message:\nIs water wet?\n\nAssistant response:\nYes."]
    assert not torch.allclose(lora.next_token_probs("point", q), plain.next_token_probs("point", q), atol=1e-4)
