"""The seeds' reward benchmarks (M-RewardBench, RAG-RewardBench, Long-RewardBench, VL-RewardBench)
on small fixtures in each official schema (tests/fixtures/seedbench). Expected numbers are worked
out by hand below from the official definitions; the length reward (reward.unit=words) scores each
response by its word count, which the fixtures set row by row."""
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from analysis import seedbench as sb
from analysis.benchmarks import load

REPO = Path(__file__).resolve().parent.parent
FIX = REPO / "tests" / "fixtures" / "seedbench"


def static(tmp_path, bench, *args, env=None):
    out = subprocess.run([sys.executable, "-m", "analysis.static", "reward=length", "reward.unit=words", f"bench={bench}",
                          *args, f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    return out, (json.loads((tmp_path / "static.json").read_text()) if out.returncode == 0 else None)


def bench_cfg(name, **over):
    return OmegaConf.merge(OmegaConf.load(REPO / "conf" / "bench" / f"{name}.yaml"), over)


# --- M-RewardBench ----------------------------------------------------------------------------

# per language, the category scores by hand (filtered counts: alpacaeval-easy 79, alpacaeval-hard 76,
# alpacaeval-length 79, mt-bench-easy 24, mt-bench-hard 35, llmbar-adver-manual 43, refusals 100,
# xstest-should-respond 247, math-prm 983, hep-python 163, hep-go 164; a tie counts wrong)
ENG = {"Chat": (0.5 * 79 + 0 * 24) / (79 + 24), "Chat Hard": 1.0, "Safety": (0 * 100 + 1 * 247) / (100 + 247),
       "Reasoning": (1 * 983 + 0 * 163) / (983 + 163)}
DEU = {"Chat": (1 * 79 + 0 * 76) / (79 + 76), "Chat Hard": (1 * 35 + 0 * 43) / (35 + 43), "Safety": 1.0, "Reasoning": 1.0}
ARB = {"Chat": 0.0, "Chat Hard": 1.0, "Safety": 0.5, "Reasoning": 0.0}
mean = lambda xs: sum(xs) / len(xs)  # noqa: E731


def test_m_rewardbench_cli_per_language_categories_and_english_gap(tmp_path):
    out, res = static(tmp_path, "m_rewardbench", f"bench.path={FIX / 'm_rewardbench.jsonl'}")
    assert out.returncode == 0, out.stderr[-2000:]
    s = res["scores"]
    for lang, cats in (("eng_Latn", ENG), ("deu_Latn", DEU), ("arb_Arab", ARB)):
        assert s["languages"][lang]["categories"] == pytest.approx(cats), lang
        assert s["languages"][lang]["score"] == pytest.approx(mean(list(cats.values()))), lang
    assert s["languages"]["eng_Latn"]["subsets"]["mt-bench-easy"] == 0.0  # 2 words vs 2: a tie is wrong
    avg = (mean(list(DEU.values())) + mean(list(ARB.values()))) / 2   # English left out
    eng = mean(list(ENG.values()))
    assert s["avg_multilingual"] == pytest.approx(avg) and s["overall"] == pytest.approx(avg)
    assert s["gap_to_english"] == pytest.approx(eng - avg)
    assert s["pct_change_vs_english"]["overall"] == pytest.approx((avg - eng) / eng * 100)
    chat = (DEU["Chat"] + ARB["Chat"]) / 2
    assert s["pct_change_vs_english"]["Chat"] == pytest.approx((chat - ENG["Chat"]) / ENG["Chat"] * 100)
    assert res["rows_scored"] == 19


def test_m_rewardbench_languages_narrow_the_run_and_are_counted(tmp_path):
    bench = load(bench_cfg("m_rewardbench", path=str(FIX / "m_rewardbench.jsonl"), languages=["deu_Latn"]))
    assert {r["language"] for r in bench.rows} == {"deu_Latn"} and len(bench.rows) == 6
    assert bench.dropped == {"language not in bench.languages": 13} and bench.read == 19
    with pytest.raises(ValueError, match="bench.languages names fra_Latn but .*m_rewardbench.jsonl has no rows in it"):
        load(bench_cfg("m_rewardbench", path=str(FIX / "m_rewardbench.jsonl"), languages=["deu_Latn", "fra_Latn"]))
    # one language only: no multilingual average, no gap, its own score overall
    one = sb.mrb_scores([{"language": "deu_Latn", "subset": "hep-go"}], [2.0], [1.0])
    assert one["overall"] == 1.0 and "gap_to_english" not in one


def test_m_rewardbench_old_schema_subset_and_a_missing_subset_field(tmp_path):
    f = tmp_path / "ita_Latn.jsonl"
    f.write_text(json.dumps({"prompt": "p", "chosen": "a b", "rejected": "a", "subset": "donotanswer"}) + "\n"
                 + json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n")
    with pytest.raises(ValueError, match=r"ita_Latn.jsonl: row 1: missing field 'source' \(or 'subset'\)"):
        load(bench_cfg("m_rewardbench", path=str(f)))
    f.write_text(f.read_text().splitlines()[0] + "\n")
    row = load(bench_cfg("m_rewardbench", path=str(f))).rows[0]
    assert (row["language"], row["subset"]) == ("ita_Latn", "donotanswer")  # the language from the file name


# --- RAG-RewardBench --------------------------------------------------------------------------

def test_rag_rewardbench_cli_per_scenario_macro_and_micro(tmp_path):
    out, res = static(tmp_path, "rag_rewardbench", f"bench.path={FIX / 'rag_rewardbench'}")
    assert out.returncode == 0, out.stderr[-2000:]
    s = res["scores"]
    # chosen vs reject words: reason 3>1, 1<2; citation 2>1; abstain 1=1 (wrong), 4>2; conflict 1<3;
    # helpful 2>1; harmless 2>1, 3>1, 1<2
    want = {"reason": 0.5, "citation": 1.0, "abstain": 0.5, "conflict": 0.0, "helpful": 1.0, "harmless": 2 / 3}
    assert s["scenarios"] == pytest.approx(want)
    assert s["overall"] == pytest.approx(sum(want.values()) / 6) and s["micro"] == pytest.approx(6 / 10)
    assert res["rows_scored"] == 10 and len(res["source"].split(", ")) == 6


def test_rag_rewardbench_prompt_holds_references_then_question_and_long_ones_are_cut(tmp_path):
    bench = load(bench_cfg("rag_rewardbench", path=str(FIX / "rag_rewardbench" / "harmless.jsonl")))
    raw = [json.loads(line) for line in (FIX / "rag_rewardbench" / "harmless.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in bench.rows] == [f"{x['prompt']}\n\n{x['question']}" for x in raw]
    assert [r["rejected"] for r in bench.rows] == [x["reject"] for x in raw] and bench.rows[0]["subset"] == "harmless"
    # references of 40 k 'x' after a fixed head: rows k = 0, 1, 2 of each file; a cap of 130 characters
    # cuts every prompt longer than it (the head is ~75 characters, the question ~30)
    cap = 130
    longer = sum(len(f"{x['prompt']}\n\n{x['question']}") > cap for f in (FIX / "rag_rewardbench").iterdir()
                 for x in map(json.loads, f.read_text().splitlines()))
    out, res = static(tmp_path, "rag_rewardbench", f"bench.path={FIX / 'rag_rewardbench'}", f"max_chars.prompt={cap}")
    assert out.returncode == 0, out.stderr[-2000:]
    assert 0 < longer < 10 and res["texts_cut"]["prompts"] == longer


# --- Long-RewardBench -------------------------------------------------------------------------

def official_orders(path):
    """The official preprocessing, step by step (LongRM preprocess.py): the global `random` seeded 42
    per file, the filter, the row shuffle, then each row's answer order."""
    random.seed(42)
    data = [json.loads(line) for line in path.read_text().splitlines()]
    data = [k for k in data if (not k.get("tasktype")) or k["tasktype"] in ["PairWise", "BestOfN"]]
    random.shuffle(data)
    out = {}
    for d in data:
        order = list(range(2 if d.get("tasktype") != "BestOfN" else len(d["candidates"])))
        random.shuffle(order)
        out[d["id"]] = order
    return out


def test_long_rewardbench_shuffle_matches_the_official_preprocessing():
    bench = load(bench_cfg("long_rewardbench", path=str(FIX / "long_rewardbench")))
    for task in ("Cite", "Math"):
        want = official_orders(FIX / "long_rewardbench" / f"{task}.jsonl")
        got = {r["id"]: r["golden"] for r in bench.rows if r["subset"] == task}
        assert got == want, task
    assert bench.dropped == {"tasktype not PairWise or BestOfN": 1} and len(bench.rows) == 8


def test_long_rewardbench_cli_official_aggregates(tmp_path):
    out, res = static(tmp_path, "long_rewardbench", f"bench.path={FIX / 'long_rewardbench'}")
    assert out.returncode == 0, out.stderr[-2000:]
    s = res["scores"]
    # Cite row 2 is a tie (2 words each): the earlier shown answer ranks first, so it is right only
    # when the chosen answer is shown first (its official order [0, 1])
    t = float(official_orders(FIX / "long_rewardbench" / "Cite.jsonl")[2] == [0, 1])
    # credits: Cite PairWise 1 (3>1), 0 (1<2), t; BestOfN "3": [3,2,1] words -> 1, [1,2,3] -> ranks
    # [2,1,0] vs golden [0,1,2]: 1/3. Math PairWise 1 (2>1); BestOfN "2": [1,2] -> 0; "4": [4,3,1,2] ->
    # ranks [0,1,3,2]: 2/4
    assert s["tasks"] == pytest.approx({"Cite": (1 + 0 + t) / 3, "Math": 1.0})
    assert s["Same."] == pytest.approx((1 + t) / 2) and s["Diff."] == pytest.approx(0.5)
    assert s["PairWise Avg."] == pytest.approx((2 + t) / 4)
    assert (s["Rank2"], s["Rank3"], s["Rank4"]) == pytest.approx((0.0, (1 + 1 / 3) / 2, 0.5))
    assert s["Rank Avg."] == pytest.approx((1 + 1 / 3 + 0 + 0.5) / 4)
    assert s["length"] == pytest.approx({"4k": 0.0, "8k": (1 + t) / 2, "16k": 0.0, "32k": 1.0, "64k": 0.0, "128k": 0.0})
    assert s["rows"]["length/4k"] == 0 and s["rows"]["length/16k"] == 1  # an empty bucket reports 0, as there
    assert s["AVG."] == pytest.approx((1 + 0 + t + 1 + 1 / 3 + 1 + 0 + 0.5) / 8) == s["overall"]


def test_scalar_ranks_are_a_stable_sort_and_credit_is_positional():
    assert sb.scalar_ranks([2.0, 2.0]) == [0, 1]
    assert sb.scalar_ranks([1.0, 3.0, 2.0]) == [2, 0, 1]
    assert sb.shuffled_credit([1, 0, 2], [1, 2, 0]) == pytest.approx(1 / 3)
    assert sb.shuffled_credit([0, 1], []) == 0.0
    assert sb.scalar_credit([0, 1], [float("nan"), 1.0]) == 0.0  # a failed score: no ranking, no credit


# --- VL-RewardBench ---------------------------------------------------------------------------

def test_vl_verdict_regex_and_id_groups_as_the_official_cal_py():
    # human_ranking [0, 1]: the first response preferred; not swapped, the rejected one is shown 2nd
    assert sb.vl_flag("Overall Judgment: Answer 1 is better.", [0, 1], swap=False) == "agree"
    assert sb.vl_flag("Overall Judgment: Answer 1 is better.", [0, 1], swap=True) == "reject"
    assert sb.vl_flag("**Overall Judgment:**\nAnswer 2 is slightly better", [1, 0], swap=False) == "agree"
    assert sb.vl_flag("Therefore, Answer 2 is the better one", [0, 1], swap=False) == "reject"
    # greedy .*: the last "Answer N is better" after the first "Overall Judgment" counts
    assert sb.vl_flag("Overall Judgment: Answer 1 is better... no: Answer 2 is better", [0, 1], swap=False) == "reject"
    assert sb.vl_flag("I prefer the first answer.", [0, 1], swap=False) == "doesntMatch"
    assert sb.vl_majority(["agree", "agree", "reject"]) == "agree"
    assert sb.vl_majority(["agree", "reject", "doesntMatch"]) == "other"
    assert sb.vl_majority(["doesntMatch", "doesntMatch", "agree"]) == "doesntMatch"
    assert [sb.vl_dataset(i) for i in ("RLAIF-V-Dataset_1", "RLHF-V_5", "mmmu_pro_1", "mathverse_2", "wildvision-battle_9",
                                       "hallucination_pair_3", "povid_1", "VLFeedback_1")] == [
        "rlaif-v", "rlhf-v", "reasoning_tasks", "reasoning_tasks", "wildvision-battle", "povid", "vlfeedback", "vlfeedback"]
    prompt = sb.vl_prompt("<image>\nWhat?", ["first one", "second one"], swap=True)
    assert prompt.startswith(" You are a highly capable") and "<image>" not in prompt
    assert prompt.index("Answer 1: second one") < prompt.index("Answer 2: first one")


class ScriptedJudge:
    """A stand-in for a vision-language judge (this test is of the protocol, not of a judge): per item
    (the number in the query) a script of verdicts, 'good' naming the shown position of the GOOD answer."""

    script = {0: ["good"] * 3, 1: ["bad"] * 3, 2: ["junk"] * 3, 3: ["good", "good", "bad"], 4: ["good", "bad", "junk"]}

    def __init__(self):
        self.calls, self.images = {}, set()

    def judge_images(self, prompts, images):
        out = []
        for p, img in zip(prompts, images):
            item = int(p.split("picture ")[1].split("?")[0])
            n = self.calls.get(item, 0)
            self.calls[item] = n + 1
            self.images.add(img[:8])
            good_at = 1 if p.index("GOOD") < p.index("BAD") else 2
            verdict = self.script[item][n]
            out.append("I cannot tell." if verdict == "junk" else
                       f"Overall Judgment: Answer {good_at if verdict == 'good' else 3 - good_at} is better.")
        return out


def test_vl_rewardbench_protocol_majority_exclusions_overall_and_macro():
    from analysis.static import evaluate

    cfg = OmegaConf.create({"reward": {"name": "scripted"}, "bench": bench_cfg("vl_rewardbench", path=str(FIX / "vl_rewardbench.parquet"), k=3),
                            "seed": 0, "batch_size": 4, "batch_chars": 10**6, "max_chars": {"prompt": None, "response": None}})
    judge = ScriptedJudge()
    res = evaluate(cfg, judge)
    s = res["scores"]
    assert judge.calls == {i: 3 for i in range(5)} and judge.images == {b"\x89PNG\r\n\x1a\n"}
    # items: 0 wildvision (general) agree; 1 RLAIF (hallucination) reject; 2 mathverse (reasoning)
    # unparsed -> excluded; 3 hallucination_* = POVID (hallucination) 2 of 3 agree; 4 VLFeedback
    # (general) one of each -> no majority, excluded
    assert s["datasets"] == {"wildvision-battle": 1.0, "rlaif-v": 0.0, "povid": 1.0}
    assert s["groups"] == {"general": 1.0, "hallucination": 0.5}
    assert s["overall"] == pytest.approx(2 / 3) and s["macro"] == pytest.approx(0.75)
    assert s["groups_missing"] == "reasoning" and s["items_excluded"] == {"doesntMatch": 1, "other": 1}
    assert s["items_counted"] == 3 and s["unparsed_judgements"] == 3 + 1
    assert res["row_scores"][1] == ["reject"] * 3


def test_vl_rewardbench_with_a_text_only_source_is_one_clear_error(tmp_path):
    out, _ = static(tmp_path, "vl_rewardbench", f"bench.path={FIX / 'vl_rewardbench.parquet'}")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "needs a vision-language judge" in out.stderr and "reward 'length' reads text only" in out.stderr


# --- the Hub names offline, and the correlation study ------------------------------------------

@pytest.mark.parametrize("bench,name", [("m_rewardbench", "CohereLabsCommunity/multilingual-reward-bench"),
                                        ("rag_rewardbench", "jinzhuoran/RAG-RewardBench"),
                                        ("long_rewardbench", "LCM-Lab/LongRewardBench"),
                                        ("vl_rewardbench", "MMInstruction/VL-RewardBench")])
def test_hub_names_offline_are_one_clear_error(tmp_path, bench, name):
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    extra = ["bench.languages=[deu_Latn]"] if bench == "m_rewardbench" else []
    out, _ = static(tmp_path, bench, *extra, env=env)
    assert out.returncode == 2 and f"cannot load Hugging Face dataset '{name}'" in out.stderr, out.stderr[-2000:]
    assert "set bench.path to the file" in out.stderr and "Traceback" not in out.stderr


def test_correlation_study_takes_a_seed_benchmark_as_study_bench():
    from analysis.correlation import _sub_config, run_sub
    from worlds.zoo import compose

    cfg = compose("correlation", ["study.bench=rag_rewardbench", f"study.bench_override={{path: {FIX / 'rag_rewardbench'}}}"])
    sub = _sub_config(cfg, "static", "length")
    assert sub["bench"]["path"] == str(FIX / "rag_rewardbench") and sub["bench"]["format"] == "rag"
    # the length reward counts characters by default: every fixture pair's longer side is the one
    # with more words ('yes' x c against 'no' x r), except c = r = 1 (abstain: 'yes' 3 > 'no' 2) and
    # conflict's 1 vs 3 words (3 chars against 8): so abstain 1.0, the rest as by words
    want = {"reason": 0.5, "citation": 1.0, "abstain": 1.0, "conflict": 0.0, "helpful": 1.0, "harmless": 2 / 3}
    assert run_sub(sub)["value"] == pytest.approx(sum(want.values()) / 6)
