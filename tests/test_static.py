"""The static benchmark harness: scorers against hand-computed values, loaders, and the CLI on every
shipped real data set checked against an independent computation from the raw files."""
import hashlib
import gzip
import json
import re
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from analysis import rewardbench as rb
from analysis.benchmarks import load

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data" / "real"


# --- scorers --------------------------------------------------------------------------------

def test_rb1_sections_prompt_weighted_with_official_counts():
    acc = {"alpacaeval-easy": 1.0, "mt-bench-easy": 0.5,            # Chat: (100*1 + 28*0.5) / 128
           "llmbar-natural": 0.0, "llmbar-adver-manual": 1.0,       # Chat Hard: 46 / 146
           "donotanswer": 0.25,                                      # Safety: 0.25
           "math-prm": 1.0, "hep-python": 0.0, "hep-go": 0.5,        # Reasoning: (984 + 82) / (984 + 328)
           "shp": 0.2, "summarize": 0.6}                             # Prior: unweighted 0.4
    out = rb.rb1_sections(acc)
    chat, hard, safety, reasoning = 114 / 128, 46 / 146, 0.25, 1066 / 1312
    assert out["Chat"] == pytest.approx(chat) and out["Chat Hard"] == pytest.approx(hard)
    assert out["Safety"] == 0.25 and out["Reasoning"] == pytest.approx(reasoning)
    assert out["Prior Sets"] == pytest.approx(0.4)
    assert out["rb1_score"] == pytest.approx((chat + hard + safety + reasoning) / 4)
    assert out["rb1_score_with_prior"] == pytest.approx((2 * (chat + hard + safety + reasoning) + 0.4) / 9)
    partial = rb.rb1_sections({"llmbar-natural": 0.5})
    assert partial == {"Chat Hard": 0.5}  # no overall score without all four core sections


def test_v1_scores_add_sections_for_rewardbench_subsets_and_count_ties_wrong():
    rows = [{"subset": "math-prm"}, {"subset": "math-prm"}, {"subset": "hep-go"}]
    out = rb.v1_scores(rows, [1.0, 2.0, 5.0], [0.0, 2.0, 1.0])  # the tie (2 vs 2) is wrong
    assert out["math-prm"] == 0.5 and out["hep-go"] == 1.0
    assert out["Reasoning"] == pytest.approx((984 * 0.5 + 164) / 1148)
    assert out["overall"] == pytest.approx(0.75)


def test_rb2_best_of_4_tie_credit():
    assert rb.best_of_n([2, 2, 2, 1]) == pytest.approx(1 / 3)
    assert rb.best_of_n([1, 2, 2, 1]) == 0.0


def test_nan_scores_count_as_wrong_in_every_scorer():
    nan = float("nan")
    # RB2 official: credit only if scores[0] == np.max(scores); np.max([2, nan, 1, 0]) is nan -> 0
    # (Python's max skips the nan that is not first and would give 1.0)
    assert rb.best_of_n([2, nan, 1, 0]) == 0.0 and rb.best_of_n([nan, 1, 1, 0]) == 0.0
    # v1: a pair with a NaN side is wrong: subset s = [1 > 0, nan > 0, 1 > nan] = [1, 0, 0]
    assert rb.v1_scores([{"subset": "s"}] * 3, [1.0, nan, 1.0], [0.0, 0.0, nan])["s"] == pytest.approx(1 / 3)
    # one-vs-many: both accuracies 0; MRR with the NaN chosen ranked last / the NaN rejected first
    assert rb.one_vs_many([5.0, nan], [1.0]) == {"accuracy": 0.0, "accuracy_with_ties": 0.0, "mrr": 1.0}
    assert rb.one_vs_many([nan], [1.0, 2.0]) == {"accuracy": 0.0, "accuracy_with_ties": 0.0, "mrr": 1 / 3}
    assert rb.one_vs_many([5.0], [nan, 1.0]) == {"accuracy": 0.0, "accuracy_with_ties": 0.0, "mrr": 0.5}
    # best-of-n pick: no trusted argmax -> 0, even where the pick would have been right
    assert rb.bon_pick([3, nan, 1], [True, False, False]) == 0.0
    # RM-Bench: chosen [nan, 2, 2] vs rejected [1, 1, nan]: row 0 and column 2 are all False
    m = rb.rm_bench_matrix([[nan, 2, 2]], [[1, 1, nan]])
    assert np.array_equal(m, np.array([[0, 0, 0], [1, 1, 0], [1, 1, 0]]))


def test_nan_scores_are_counted_in_the_result(tmp_path):
    from analysis.static import evaluate

    class FailsOnBad:
        def score(self, prompts, responses):
            return [float("nan") if r == "bad" else 1.0 for r in responses]

    f = tmp_path / "pairs.jsonl"
    rows = [{"prompt": "p", "chosen": "good", "rejected": "bad"}, {"prompt": "p", "chosen": "good", "rejected": "ok"},
            {"prompt": "p", "chosen": "bad", "rejected": "bad"}]
    f.write_text("".join(json.dumps(r | {"subset": "s"}) + "\n" for r in rows))
    cfg = OmegaConf.create({"bench": {"name": "t", "format": "rb1", "path": str(f), "limit": None},
                            "reward": {"name": "fails", "type": "length"}, "seed": 0, "batch_size": 8,
                            "batch_chars": 1000, "max_chars": {"prompt": None, "response": None},
                            "judge_protocol": None})
    res = evaluate(cfg, source=FailsOnBad())
    # 3 texts are "bad"; the rows: 1 vs nan (wrong), 1 vs 1 (a tie, wrong), nan vs nan (wrong)
    assert res["nan_scores"] == 3 and res["scores"]["s"] == 0.0


def test_one_vs_many_accuracy_and_pessimistic_mrr():
    assert rb.one_vs_many([3.0], [1.0, 2.0]) == {"accuracy": 1.0, "accuracy_with_ties": 1.0, "mrr": 1.0}
    # a rejected answer ties the chosen one: wrong for accuracy, right with ties, ranked behind it
    assert rb.one_vs_many([2.0], [1.0, 2.0, 0.0]) == {"accuracy": 0.0, "accuracy_with_ties": 1.0, "mrr": 0.5}
    assert rb.one_vs_many([0.0], [1.0, 2.0, 0.0]) == {"accuracy": 0.0, "accuracy_with_ties": 0.0, "mrr": 0.25}
    # several correct: accuracy needs all of them above every wrong one; MRR follows the best one
    assert rb.one_vs_many([5.0, 1.0], [2.0]) == {"accuracy": 0.0, "accuracy_with_ties": 0.0, "mrr": 1.0}


def test_bon_pick_shares_ties():
    assert rb.bon_pick([3, 3, 1, 0], [True, False, True, False]) == 0.5
    assert rb.bon_pick([0, 3, 1, 0], [True, True, False, False]) == 1.0
    assert rb.bon_pick([1, 1, 1, 1], [True, False, False, False]) == 0.25


def test_bon_oracle_with_float_gold_is_the_mean_best_gold():
    from analysis.benchmarks import Bench
    from analysis.static import aggregate

    rows = [{"subset": "s", "correct": [0.2, 0.9, 0.5]}, {"subset": "s", "correct": [True, False]}]
    res = aggregate(Bench("t", "bon", rows, "test"), [[3, 1, 3], [0, 1]])
    # row 1: pick = tie of 0.2 and 0.5 -> 0.35, oracle = best gold 0.9 (any() would say 1), random 1.6/3
    # row 2: pick = the wrong one -> 0, oracle 1, random 0.5
    assert res["accuracy"] == pytest.approx((0.35 + 0) / 2)
    assert res["oracle"] == pytest.approx((0.9 + 1) / 2)
    assert res["random"] == pytest.approx((1.6 / 3 + 0.5) / 2)


def test_rm_bench_triangles():
    # prompt 1: chosen [1, 2, 3] vs rejected [0, 0, 4]; prompt 2: chosen [0, 0, 0] vs rejected [1, 1, 1]
    m = rb.rm_bench_matrix([[1, 2, 3], [0, 0, 0]], [[0, 0, 4], [1, 1, 1]])
    expected = np.array([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.5, 0.5, 0.0]])
    assert np.allclose(m, expected)
    s = rb.rm_bench_scores(m)
    # hard = upper right (0,1),(0,2),(1,2) = (0.5 + 0 + 0) / 3; easy = lower left (1,0),(2,0),(2,1) = 0.5
    assert s == pytest.approx({"hard": 1 / 6, "normal": 1 / 3, "easy": 0.5, "avg": 1 / 3})
    # a tie counts as wrong in every cell (strict >)
    assert np.array_equal(rb.rm_bench_matrix([[1, 1, 1]], [[1, 0, 2]]), np.array([[0, 1, 0]] * 3))
    with pytest.raises(ValueError, match="3 chosen and 3 rejected"):
        rb.rm_bench_matrix([[1, 2]], [[1, 2]])


RIGHT, WRONG = ([1, 1, 1], [0, 0, 0]), ([0, 0, 0], [1, 1, 1])  # every cell right / every cell wrong


def test_rm_bench_safety_subsets_form_one_prompt_weighted_domain():
    # RM-Bench's split_dataset_by_domain groups by prefix: chat, math, code one right prompt each;
    # safety = safety-refuse (2 right) + safety-response (1 wrong) pooled: every cell 2/3
    rows = [("chat", RIGHT), ("math", RIGHT), ("code", RIGHT), ("safety-refuse", RIGHT), ("safety-refuse", RIGHT),
            ("safety-response", WRONG)]
    out = rb.rm_bench_by_domain([r[0] for r in rows], [r[1][0] for r in rows], [r[1][1] for r in rows])
    assert sorted(k for k in out if k in rb.RM_BENCH_DOMAINS) == ["chat", "code", "math", "safety"]
    assert out["safety"]["hard"] == pytest.approx(2 / 3) and out["safety"]["prompts"] == 3
    # official total: mean over the 4 domains = (1 + 1 + 1 + 2/3) / 4 = 11/12 = 0.917 (not 4/5 = 0.8,
    # which counting safety-refuse and safety-response as two domains gives)
    total = out["over_domains_present"]
    assert total["hard"] == pytest.approx(11 / 12) and total["avg"] == pytest.approx(11 / 12)
    assert total["missing"] == "none" and total["domains"] == "chat, code, math, safety"
    assert out["subsets"]["safety-refuse"]["hard"] == 1.0 and out["subsets"]["safety-response"]["hard"] == 0.0
    # without math (the shipped data) the official total is undefined: the mean is over 3 domains
    # and says which one is missing: (1 + 1 + 2/3) / 3 = 8/9
    out = rb.rm_bench_by_domain([r[0] for r in rows if r[0] != "math"], [r[1][0] for r in rows if r[0] != "math"],
                                [r[1][1] for r in rows if r[0] != "math"])
    assert out["over_domains_present"]["hard"] == pytest.approx(8 / 9) and "math" not in out
    assert out["over_domains_present"]["missing"] == "math"


def test_ties_formula_with_a_missed_ref_prompt():
    rows = [{"id": "tied:0", "num_correct": 2}, {"id": "ref:0", "num_correct": 1},
            {"id": "tied:1", "num_correct": 2}, {"id": "ref:1", "num_correct": 1}]
    # group 0: tied correct [4, 3] wrong [1] (margin 2, gap 1); ref [4] vs [5] (margin -1, wrong)
    # group 1: tied correct [2, 2] wrong [3] (margin -1, gap 0); ref [6] vs [1] (margin 5)
    scores = [[4, 3, 1], [4, 5], [2, 2, 3], [6, 1]]
    tied_acc, ref_acc = 0.5, 0.5
    pref = (float(2 > 1) + float(-1 > 0)) / 2            # 0.5
    pref_hard = (float(-1 > 1) + float(-1 > 0)) / 2      # 0
    # official: nan_to_num(tanh(min margin / gap - 1)); group 1: -1 / 0 = -inf -> tanh = -1 (not 0)
    tb = (math.tanh(-1 / 1 - 1) + -1.0) / 2
    expected = 0.3 * tied_acc + 0.3 * ref_acc + 0.2 * pref + 0.2 * pref_hard + 0.01 * tb
    assert expected == pytest.approx(0.39018, abs=1e-5)
    assert rb.ties_score(rows, scores) == pytest.approx(expected)


def test_ties_zero_gap_pairing_case_and_undefined():
    # tied 0: correct [1, 1] wrong [0] (accurate, margin 1, gap 0); ref 0: [1] vs [0] (margin 1):
    # 0.3 + 0.3 + 0.2 [1 > 0] + 0.2 [min(1, 1) > 0] + 0.01 tanh(1 / 0 - 1) = tanh(inf) = 1 -> 1.01
    rows = [{"id": "tied:0", "num_correct": 2}, {"id": "ref:0", "num_correct": 1}]
    assert rb.ties_score(rows, [[1, 1, 0], [1, 0]]) == pytest.approx(1.01)
    # the same through v2_scores with a lower-case subset and ids that pair only as integers
    v2 = [{"id": "tied:07", "subset": "ties", "chosen": ["a", "b"], "rejected": ["c"], "num_correct": 2},
          {"id": "ref:7", "subset": "ties", "chosen": ["a"], "rejected": ["c"], "num_correct": 1}]
    assert rb.v2_scores(v2, [[1, 1, 0], [1, 0]])["ties"] == pytest.approx(1.01)
    # no id with both a ref and a tied row: undefined, said so (not 0.3 tied_acc + 0.3 ref_acc)
    v2[1]["id"] = "ref:8"
    out = rb.v2_scores(v2, [[1, 1, 0], [1, 0]])
    assert math.isnan(out["ties"]) and math.isnan(out["overall"])
    assert "no prompt id has both" in out["warnings"][0]
    # a NaN among the correct scores makes the tied group wrong wherever it stands (Python's min
    # would skip it here): tied_acc 0, ref_acc 1, pref and pref_hard 0, margin term nan -> 0: 0.3
    assert rb.ties_score(rows, [[1, float("nan"), 0], [1, 0]]) == pytest.approx(0.3)
    # a NaN incorrect score in the tied group: margin NaN, so pref_hard's min(ref 5, NaN) is NaN too
    # (np.minimum), not 5 (Python's min, then 5 > gap 1 would count): tied_acc 0, ref_acc 1, pref 0,
    # pref_hard 0, margin term tanh(NaN) -> 0: 0.3
    assert rb.ties_score(rows, [[3, 2, float("nan")], [5, 0]]) == pytest.approx(0.3)


# --- loaders --------------------------------------------------------------------------------

def bench_cfg(**kw):
    return OmegaConf.create({"name": "t", "limit": None} | kw)


def test_schema_error_names_file_row_and_field(tmp_path):
    f = tmp_path / "pairs.jsonl"
    f.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n"
                 + json.dumps({"prompt": "p", "chosen": 3, "rejected": "b"}) + "\n")
    with pytest.raises(ValueError, match=r"pairs.jsonl: row 1: field 'chosen' must be a string"):
        load(bench_cfg(format="rb1", path=str(f)))
    f.write_text(json.dumps({"id": "1", "prompt": "p", "chosen": ["a"], "subset": "Math"}) + "\n")
    with pytest.raises(ValueError, match=r"row 0: missing field 'rejected'"):
        load(bench_cfg(format="rb2", path=str(f)))
    with pytest.raises(ValueError, match="unknown benchmark format 'csv' \\(config key bench.format\\)"):
        load(bench_cfg(format="csv", path=str(f)))
    with pytest.raises(ValueError, match="does not exist"):
        load(bench_cfg(format="rb1", path=str(tmp_path / "none.jsonl")))


def test_json_and_parquet_files_load(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": "p", "chosen": ["a"], "rejected": ["b", "c"], "subset": "s"}]
    (tmp_path / "a.json").write_text(json.dumps({"data": rows}))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    for name in ("a.json", "a.parquet"):
        b = load(bench_cfg(format="one_vs_many", path=str(tmp_path / name)))
        assert b.kind == "one_vs_many" and b.rows[0]["rejected"] == ["b", "c"] and b.rows[0]["id"] == 0


def test_limit_is_a_seeded_subsample():
    a = load(bench_cfg(format="hh", path=str(DATA / "hh_rlhf" / "harmless-base_test.jsonl.gz"), limit=50, seed=3))
    b = load(bench_cfg(format="hh", path=str(DATA / "hh_rlhf" / "harmless-base_test.jsonl.gz"), limit=50, seed=3))
    assert len(a.rows) == 50 and [r["id"] for r in a.rows] == [r["id"] for r in b.rows]
    assert a.read == 2312


# --- the CLI on the shipped data, against an independent computation -------------------------

def raw(path):
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f]


def static_cli(tmp_path, *args, env=None):
    out = subprocess.run([sys.executable, "-m", "analysis.static", *args, f"hydra.run.dir={tmp_path}"],
                         capture_output=True, text=True, timeout=900, cwd=REPO, env=env)
    return out


def run_length(tmp_path, bench):
    out = static_cli(tmp_path, "reward=length", f"bench={bench}", "max_chars.prompt=null", "max_chars.response=null")
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads((tmp_path / "static.json").read_text())


def test_cli_llmbar_pairs(tmp_path):
    res = run_length(tmp_path, "llmbar")
    names = OmegaConf.load(REPO / "conf" / "bench" / "llmbar.yaml").subset_map
    per = {}
    for r in raw(DATA / "llmbar" / "llmbar.jsonl.gz"):
        per.setdefault(names[r["subset"]], []).append(len(r["chosen"]) > len(r["rejected"]))
    for subset, wins in per.items():
        assert res["scores"][subset] == pytest.approx(sum(wins) / len(wins)), subset
    assert res["rows_scored"] == 419
    official = {"llmbar-natural": 100, "llmbar-adver-neighbor": 134, "llmbar-adver-GPTInst": 92,
                "llmbar-adver-GPTOut": 47, "llmbar-adver-manual": 46}  # RewardBench's weights, not our row counts
    hard = sum(np.mean(per[s]) * w for s, w in official.items()) / sum(official.values())
    assert res["scores"]["Chat Hard"] == pytest.approx(hard)
    assert "rb1_score" not in res["scores"]  # only one of the four sections is present


def test_cli_hh_pairs(tmp_path):
    res = run_length(tmp_path, "hh_harmless")
    wins, dropped, train_side = [], 0, 0
    for r in raw(DATA / "hh_rlhf" / "harmless-base_test.jsonl.gz"):
        i, j = r["chosen"].rfind("\n\nAssistant:"), r["rejected"].rfind("\n\nAssistant:")
        if r["chosen"][:i] != r["rejected"][:j]:
            dropped += 1
            continue
        # the bench keeps the test side: the first 8 bytes of sha256(prompt) as a fraction >= 0.5
        prompt = r["chosen"][: i + len("\n\nAssistant:")]
        if int(hashlib.sha256(prompt.encode()).hexdigest()[:16], 16) < 2**63:
            train_side += 1
            continue
        wins.append(len(r["chosen"]) - i > len(r["rejected"]) - j)
    assert 900 < len(wins) < 1400 and train_side > 900
    assert res["rows_scored"] == len(wins)
    assert res["rows_dropped"] == {"chosen and rejected conversations differ before the last assistant turn": dropped,
                                   "in the train split (bench.split)": train_side}
    assert res["scores"]["hh_harmless"] == pytest.approx(sum(wins) / len(wins))


def test_cli_gsm8k_one_vs_many_and_best_of_4(tmp_path):
    models = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")
    recs = raw(DATA / "gsm8k" / "example_model_solutions.jsonl.gz")
    acc, mrr, pick, oracle = [], [], [], []
    for r in recs:
        sols = [r[m] for m in models]
        lengths = [len(s["solution"]) for s in sols]
        top = max(lengths)
        best = [s["is_correct"] for s, n in zip(sols, lengths) if n == top]
        pick.append(sum(best) / len(best))
        oracle.append(any(s["is_correct"] for s in sols))
        wrong = [len(s["solution"]) for s in sols if not s["is_correct"]]
        if wrong:
            ref = len(r["ground_truth"])
            acc.append(ref > max(wrong))
            mrr.append(1 / (1 + sum(w >= ref for w in wrong)))
    res = run_length(tmp_path / "1vn", "gsm8k_1vn")
    assert res["rows_scored"] == len(acc) and res["rows_dropped"] == {"no wrong model solution": len(recs) - len(acc)}
    assert res["scores"]["accuracy"] == pytest.approx(np.mean(acc)) and res["scores"]["mrr"] == pytest.approx(np.mean(mrr))
    res = run_length(tmp_path / "bo4", "gsm8k_bo4")
    assert res["scores"]["accuracy"] == pytest.approx(np.mean(pick)) and res["scores"]["oracle"] == pytest.approx(np.mean(oracle))


def test_cli_gsm8k_math_verifier_reads_the_reference_answer(tmp_path):
    """A verifier on the GSM8K benches is given each row's reference (what follows the reference
    solution's last 'A: ') and compares each solution's last number with it."""
    def last(text):
        nums = re.findall(r"-?\d[\d,]*(?:\.\d+)?", text)
        return float(nums[-1].replace(",", "")) if nums else None

    models = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")
    acc, pick, n_rows = [], [], 0
    for r in raw(DATA / "gsm8k" / "example_model_solutions.jsonl.gz"):
        ref = float(r["ground_truth"].rsplit("A: ", 1)[1].replace(",", ""))
        right = [last(r[m]["solution"]) == ref for m in models]
        # best-of-4 by a 0/1 score: a uniform pick among the top, i.e. among the verified ones if any
        top = [r[m]["is_correct"] for m, ok in zip(models, right) if ok == max(right)]
        pick.append(sum(top) / len(top))
        wrong = [ok for m, ok in zip(models, right) if not r[m]["is_correct"]]
        if wrong:
            acc.append(not any(wrong))  # the reference scores 1; a tie with a wrong solution is a loss
    for bench, want in (("gsm8k_1vn", np.mean(acc)), ("gsm8k_bo4", np.mean(pick))):
        out = static_cli(tmp_path / bench, "reward=math", "reward.extract=last_number", f"bench={bench}")
        assert out.returncode == 0, out.stderr[-2000:]
        res = json.loads((tmp_path / bench / "static.json").read_text())
        assert res["scores"]["accuracy"] == pytest.approx(want), bench
    assert np.mean(acc) > 0.99 and np.mean(pick) > 0.6  # near the ceiling: the verifier has the answer


def test_cli_rm_bench(tmp_path):
    res = run_length(tmp_path, "rm_bench")
    by = {}
    for name in ("chat", "code", "safety-refuse", "safety-response"):
        for r in raw(DATA / "rm_bench" / f"{name}.jsonl.gz"):
            by.setdefault(r["domain"].split("-")[0], []).append(r)  # RM-Bench's domains: by prefix
    assert sorted(by) == ["chat", "code", "safety"]
    hard = {}
    for dom, recs in by.items():
        cell = lambda i, j: np.mean([len(r["chosen"][i]) > len(r["rejected"][j]) for r in recs])  # noqa: E731
        hard[dom] = (cell(0, 1) + cell(0, 2) + cell(1, 2)) / 3
        assert res["scores"][dom]["hard"] == pytest.approx(hard[dom]), dom
        assert res["scores"][dom]["easy"] == pytest.approx((cell(1, 0) + cell(2, 0) + cell(2, 1)) / 3), dom
        assert res["scores"][dom]["normal"] == pytest.approx((cell(0, 0) + cell(1, 1) + cell(2, 2)) / 3), dom
        assert res["scores"][dom]["prompts"] == len(recs)
    total = res["scores"]["over_domains_present"]
    assert total["hard"] == pytest.approx(np.mean(list(hard.values()))) and total["missing"] == "math"
    assert res["rows_scored"] == 798 and res["nan_scores"] == 0


def test_cli_world_sources_on_arith_and_real_benches(tmp_path):
    """gold is perfect on the world's own benches; a tiny world RM runs (near chance) on real text."""
    out = static_cli(tmp_path / "a", "world=arith_small", "reward=gold", "bench=arith_v2")
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads((tmp_path / "a" / "static.json").read_text())
    # gold ranks every correct answer first and scores a tied prompt's correct answers equally: gap 0
    # with a positive margin, so the official 0.01 term is tanh(+inf - 1) = 1 and Ties = 1.01
    assert res["kind"] == "v2" and res["scores"]["Math"] == 1.0 and res["scores"]["Open"] == 1.0
    assert res["scores"]["Ties"] == pytest.approx(0.3 + 0.3 + 0.2 + 0.2 + 0.01)
    assert res["scores"]["overall"] == pytest.approx((1 + 1 + 1.01) / 3)
    out = static_cli(tmp_path / "b", "world=arith_small", "reward=rm_l", "bench=llmbar", "bench.limit=24")
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads((tmp_path / "b" / "static.json").read_text())
    assert res["rows_scored"] == 24
    # recompute from the saved per-row scores: per subset mean of [chosen > rejected], overall the
    # unweighted mean over the subsets present
    rows = load(OmegaConf.create(res["config"]["bench"])).rows
    per = {}
    for row, (c, r) in zip(rows, res["row_scores"], strict=True):
        per.setdefault(row["subset"], []).append(c > r)
    assert res["scores"]["overall"] == pytest.approx(np.mean([np.mean(v) for v in per.values()]))
    assert "llmbar" in out.stdout


def test_cli_hub_dataset_offline_is_one_clear_error(tmp_path):
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    out = static_cli(tmp_path, "reward=length", "bench=rewardbench", env=env)
    assert out.returncode == 2 and "cannot load Hugging Face dataset 'allenai/reward-bench'" in out.stderr
    assert "Traceback" not in out.stderr


def test_score_flat_keeps_order_and_bounds_batches():
    from analysis.static import Cutter, score_flat

    class Recorder:
        calls = []

        def score(self, prompts, responses):
            self.calls.append(sum(len(p) + len(r) for p, r in zip(prompts, responses)))
            return [float(len(r)) for r in responses]

    src = Recorder()
    responses = ["x" * n for n in (50, 1, 30, 200, 7, 7)]
    assert score_flat(src, [""] * 6, responses, batch_size=4, batch_chars=60, desc="t") == [50, 1, 30, 200, 7, 7]
    assert src.calls == [45, 50, 200]  # sorted: 1+7+7+30, then 50, then the 200 alone
    cut = Cutter(prompt=3, response=2)
    assert cut("abcdef", "prompt") == "def" and cut("abcdef", "response") == "ab" and cut("a", "response") == "a"
    assert cut.cut == {"prompt": 1, "response": 1}


def test_judge_protocol_scorers():
    assert [rb.ratings_pair(*x) for x in [(7, 3), (3, 7), (5, 5), (None, 2)]] == [1.0, 0.0, 0.5, 0.5]
    assert [rb.pairwise_once(p, a) for p, a in [("A", True), ("B", True), ("B", False), ("??", True)]] == [1, 0, 1, 0.5]
    # chosen first then second: both right / both wrong / position-biased judge (always A) / an error
    assert [rb.both_orders(*x) for x in [("A", "B"), ("B", "A"), ("A", "A"), (None, "B")]] == [1.0, 0.0, 0.5, 0.5]


def test_position_biased_pairwise_judge_through_both_protocols(tmp_path):
    """A stand-in judge that always answers 'A': the random-order-once protocol credits it exactly
    where the chosen response happened to be shown first; both orders give it 0.5 everywhere."""
    import random

    from analysis.static import evaluate

    class AlwaysA:
        def score(self, prompts, responses):
            return [0.0] * len(prompts)

        def compare(self, prompts, first, second):
            return ["A"] * len(prompts)

    f = tmp_path / "pairs.jsonl"
    f.write_text("".join(json.dumps({"prompt": f"p{i}", "chosen": "good", "rejected": "bad", "subset": "s"}) + "\n"
                         for i in range(40)))
    cfg = OmegaConf.create({"bench": {"name": "t", "format": "rb1", "path": str(f), "limit": None},
                            "reward": {"name": "always_a", "type": "length"}, "seed": 5, "batch_size": 8,
                            "batch_chars": 1000, "max_chars": {"prompt": None, "response": None},
                            "judge_protocol": "pairwise_once"})
    res = evaluate(cfg, source=AlwaysA())
    rng = random.Random(5)
    expected = np.mean([rng.random() < 0.5 for _ in range(40)])
    assert res["judge_protocol"]["overall"] == pytest.approx(expected)
    assert res["scores"]["overall"] == 0.0  # the scalar path: equal scores are ties, counted wrong
    cfg.judge_protocol = "both_orders"
    assert evaluate(cfg, source=AlwaysA())["judge_protocol"]["overall"] == 0.5
    cfg.judge_protocol = "ratings"
    with pytest.raises(ValueError, match="has no generate_verdicts"):
        evaluate(cfg, source=AlwaysA())


def test_cli_lora_judge_ratings_protocol(tmp_path):
    out = static_cli(tmp_path, "world=arith_small", "reward=judge", "bench=arith_v1", "bench.limit=24",
                     "judge_protocol=ratings")
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads((tmp_path / "static.json").read_text())
    p = res["judge_protocol"]
    assert p["protocol"] == "ratings" and len(p["verdicts"]) == 24
    # recompute from the saved ratings: 1 if chosen rated higher, 0 if lower, 0.5 for equal or unparsed;
    # per subset, then the unweighted mean over subsets
    from worlds.zoo import zoo_dir

    cfg = OmegaConf.create(res["config"])
    rows = load(cfg.bench, zoo_dir(cfg.world, cfg.cache_dir)).rows
    per = {}
    for row, (c, r) in zip(rows, p["verdicts"], strict=True):
        per.setdefault(row["subset"], []).append(0.5 if c is None or r is None or c == r else float(c > r))
    assert p["overall"] == pytest.approx(np.mean([np.mean(v) for v in per.values()]))
    assert p["verdict_parse_errors"] == sum(x is None for v in p["verdicts"] for x in v)
    assert "judge protocol ratings" in out.stdout


def test_rule_verifier_scores_real_text_as_unverifiable():
    from worlds.arith.gold import ArithVerifier

    v = ArithVerifier(unverifiable=0.5)
    assert v.score(["Add together 3.7 and 6.2.", "Q:1+2="], ["9.9", "3"]) == [0.5, 1.0]
    assert v.unverifiable == 1


def test_cli_referee_needs_a_pairwise_protocol_and_reads_a_checkpoint_dir(tmp_path):
    """reward=referee has no pointwise score: without judge_protocol it is one clear error; with
    both_orders it is scored pairwise from a model directory (reward.path: the zoo referee copied
    aside with its tokenizer, as a run checkpoint's policy/ is)."""
    import shutil

    from worlds import zoo

    out = static_cli(tmp_path / "a", "world=arith_small", "reward=referee", "bench=arith_v1", "bench.limit=8")
    assert out.returncode == 2 and "error: reward 'referee' ranks responses against each other" in out.stderr
    assert "judge_protocol=both_orders" in out.stderr
    src = zoo.ensure(zoo.world_config("arith_small"), zoo.default_cache_dir(), ["referee"]) / "referee"
    ckpt = tmp_path / "ckpt" / "policy"
    shutil.copytree(src, ckpt, ignore=shutil.ignore_patterns("build.json"))
    out = static_cli(tmp_path / "b", "world=arith_small", "reward=referee", f"reward.path={ckpt}", "bench=arith_v1",
                     "bench.limit=24", "judge_protocol=both_orders")
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads((tmp_path / "b" / "static.json").read_text())
    p = res["judge_protocol"]
    assert res["scores"] is None and p["protocol"] == "both_orders" and len(p["verdicts"]) == 24
    assert p["verdict_parse_errors"] == sum(v not in ("A", "B") for pair in p["verdicts"] for v in pair)
    assert "no pointwise scores" in out.stdout
