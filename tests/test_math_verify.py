"""The math verifier (rewards/math_verify.py, on math-verify 0.9.0): hand-checked cases.

Every expected value in the hand cases was worked out by hand from the reference and the
response; where math-verify's own decision is what a case shows (0.5 = \\frac{1}{2}, "3,4" read as
3.4), the test says so. Two checks at the end run on shipped real data (GSM8K's human labels,
MATH-500's references).
"""
import threading
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rewards import make_source
from rewards.math_verify import MathVerifier, last_number, tagged_answer
from rl.tasks import Item

ROOT = Path(__file__).resolve().parent.parent


def score(verifier, response, answer):
    return verifier.score(["q"], [response], [Item("q", answer)])[0]


@pytest.fixture(scope="module")
def auto():
    return MathVerifier()


def test_boxed_right_and_wrong(auto):
    assert score(auto, "Adding them, the answer is $\\boxed{3}$.", "3") == 1.0
    assert score(auto, "Adding them, the answer is $\\boxed{4}$.", "3") == 0.0
    # a reference written as \boxed{...} (MATH's solutions) parses to the same 3
    assert score(auto, "The answer is \\boxed{3}.", "\\boxed{3}") == 1.0


def test_boxed_wins_over_a_later_number(auto):
    # math-verify tries \boxed before bare numbers: 3 is the answer, not the trailing 5
    assert score(auto, "\\boxed{3} (I checked it 5 times)", "3") == 1.0


def test_fractions(auto):
    assert score(auto, "So $x = \\frac{14}{3}$.", "\\frac{14}{3}") == 1.0
    assert score(auto, "\\boxed{\\dfrac{14}{3}}", "\\frac{14}{3}") == 1.0
    assert score(auto, "\\boxed{\\frac{3}{14}}", "\\frac{14}{3}") == 0.0
    # math-verify's documented behaviour: numbers compare as values, so 0.5 equals 1/2 both ways
    assert score(auto, "The answer is 0.5", "\\frac{1}{2}") == 1.0
    assert score(auto, "The answer is $\\frac{1}{2}$", "0.5") == 1.0
    # ... rounded to 6 decimals: 4.666667 is 14/3, 4.67 is not
    assert score(auto, "The answer is 4.666667", "\\frac{14}{3}") == 1.0
    assert score(auto, "The answer is 4.67", "\\frac{14}{3}") == 0.0


def test_thousands_commas(auto):
    # "1,080" (reference) = 1080; the response's "$1,080." is money, not LaTeX, and still 1080
    assert score(auto, "So she earns $1,080.", "1,080") == 1.0
    assert score(auto, "So she earns 1080 dollars.", "1,080") == 1.0
    assert score(auto, "So she earns $1,080.", "1080") == 1.0
    assert score(auto, "So she earns $1,008.", "1,080") == 0.0


def test_gsm8k_hashes(auto):
    response = "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether.\n#### 72"
    assert score(auto, response, "72") == 1.0
    assert score(MathVerifier(extract="answer_tag"), response, "72") == 1.0
    assert score(MathVerifier(extract="last_number"), response, "72") == 1.0


def test_tuple_answer(auto):
    # MATH-style reference without $...$: parsed as LaTeX (bare math-verify would find nothing)
    assert score(auto, "In polar form: $\\boxed{\\left(3, \\frac{\\pi}{2}\\right)}$", "(3, \\frac{\\pi}{2})") == 1.0
    assert score(auto, "In polar form: $\\boxed{(3, \\pi)}$", "(3, \\frac{\\pi}{2})") == 0.0


def test_wrong_number(auto):
    assert score(auto, "48 + 24 = 71, so 71 clips.", "72") == 0.0
    assert auto.no_answer == 0  # a wrong answer is an answer


def test_no_answer_scores_zero_and_is_counted():
    for extract in ("auto", "last_number", "answer_tag"):
        v = MathVerifier(extract=extract)
        assert v.score(["q", "q"], ["I don't know.", ""], [Item("q", "72"), Item("q", "72")]) == [0.0, 0.0]
        assert (v.no_answer, v.unverifiable) == (2, 0), extract
    # answer_tag: a number but no tag is no answer; an empty tag too
    v = MathVerifier(extract="answer_tag")
    assert v.score(["q"] * 2, ["it is 72", "<answer> </answer>"], [Item("q", "72")] * 2) == [0.0, 0.0]
    assert v.no_answer == 2


def test_missing_reference_is_unverifiable_and_counted():
    v = MathVerifier(unverifiable=0.25)
    assert v.score(["q", "q"], ["\\boxed{3}", "\\boxed{3}"]) == [0.25, 0.25]  # no items
    assert v.score(["q", "q", "q"], ["\\boxed{3}"] * 3, [Item("q", None), Item("q", "  "), Item("q", "3")]) == [0.25, 0.25, 1.0]
    assert (v.unverifiable, v.no_answer) == (4, 0)


def test_unparsable_reference_is_unverifiable():
    v = MathVerifier(unverifiable=0.5)
    assert score(v, "\\boxed{3}", "\\text{}") == 0.5  # math-verify extracts nothing from it
    assert v.unverifiable == 1


def test_reference_parsed_once_per_string():
    v = MathVerifier()
    v.score(["q"] * 3, ["1", "2", "3"], [Item("q", "3")] * 3)
    assert list(v._refs) == ["3"]


def test_extract_modes_differ():
    # "3,4": math-verify reads a European decimal comma (3.4); last_number reads a list (last = 4)
    text = "The roots are 3,4"
    assert [score(MathVerifier(extract=e), text, "4") for e in ("auto", "last_number", "answer_tag")] == [0.0, 1.0, 0.0]
    assert score(MathVerifier(), text, "3.4") == 1.0
    # a tagged answer followed by more numbers: auto and last_number take the last number (15),
    # answer_tag the tag (12)
    text = "<answer>12</answer> Check: 3 + 12 = 15"
    assert [score(MathVerifier(extract=e), text, "12") for e in ("auto", "last_number", "answer_tag")] == [0.0, 0.0, 1.0]
    # \boxed: auto takes it (3), last_number the trailing 5, answer_tag finds no tag
    text = "\\boxed{3}, checked 5 ways"
    vs = {e: MathVerifier(extract=e) for e in ("auto", "last_number", "answer_tag")}
    assert [score(vs[e], text, "3") for e in vs] == [1.0, 0.0, 0.0]
    assert vs["answer_tag"].no_answer == 1


def test_answer_tag_parses_latex_and_money():
    v = MathVerifier(extract="answer_tag")
    assert score(v, "<answer>\\frac{1}{2}</answer>", "0.5") == 1.0
    assert score(v, "so...\n#### $1,080\n\nQuestion: what next? 7", "1080") == 1.0  # rest of the text ignored
    assert score(v, "#### 18 dollars", "18") == 1.0  # words: math-verify's own extraction on the tag
    assert score(v, "<answer>[-2, 7]</answer>", "[-2, 7]") == 1.0  # an interval, not "7"
    assert score(v, "<answer>3</answer> then #### 4", "4") == 1.0  # the later of the two


def test_last_number_and_tag_helpers():
    assert last_number("so she earns $1,080.") == "1080"
    assert last_number("12,345,678 in all") == "12345678"
    assert last_number("x = -5") == "-5"
    assert last_number("5-3=2") == "2"
    assert last_number("pi is 3.14.") == "3.14"
    assert last_number("no digits") is None
    assert tagged_answer("a\n#### 72\nmore") == "72"
    assert tagged_answer("<answer> x </answer> b") == "x"
    assert tagged_answer("none") is None


def test_huge_answers_are_not_compared():
    # sympy never finishes comparing these with 7 (no timeout: see the module docstring)
    v = MathVerifier()
    responses = ["\\boxed{10^{10^{10}}}", "\\boxed{(10^{10})!}", "\\boxed{\\binom{10^{8}}{5 \\cdot 10^{7}}}"]
    assert v.score(["q"] * 3, responses, [Item("q", "7")] * 3) == [0.0, 0.0, 0.0]
    assert v.too_large == 3
    # below the bounds they are compared
    assert score(v, "\\boxed{2^{100000}}", "7") == 0.0 and score(v, "\\boxed{2^{10}}", "1024") == 1.0
    assert v.too_large == 3


def test_works_outside_the_main_thread():
    # math-verify's default signal.alarm timeouts raise there; ours are disabled
    out = []
    t = threading.Thread(target=lambda: out.append(score(MathVerifier(), "\\boxed{\\frac{1}{2}}", "0.5")))
    t.start()
    t.join()
    assert out == [1.0]


def test_bad_extract_value():
    with pytest.raises(ValueError, match=r"reward\.extract.*auto, last_number, answer_tag"):
        MathVerifier(extract="first_number")


def test_reward_config():
    cfg = OmegaConf.load(ROOT / "conf/reward/math.yaml")
    v = make_source(cfg)
    assert isinstance(v, MathVerifier) and (v.name, v.extract, v.default) == ("math", "auto", 0.0)
    v = make_source(OmegaConf.create({"name": "m", "type": "math_verify", "extract": "last_number", "unverifiable": 0.5}))
    assert (v.extract, v.default) == ("last_number", 0.5)


def test_matrix_reference():
    # \begin{pmatrix} is LaTeX, not words: the reference is parsed as a bare answer
    ref = "\\begin{pmatrix} -1/3 \\\\ 2/3 \\\\ 5/3 \\end{pmatrix}"
    v = MathVerifier()
    assert score(v, f"So $\\boxed{{{ref}}}$", ref) == 1.0
    assert score(v, "So $\\boxed{\\begin{pmatrix} 1/3 \\\\ 2/3 \\\\ 5/3 \\end{pmatrix}}$", ref) == 0.0


def read_jsonl(path):
    import gzip
    import json

    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f]


def test_agrees_with_gsm8k_human_labels():
    """OpenAI's GSM8K example solutions (4 models x 1319 problems, each labelled is_correct, final
    answer after "A:"): both auto and last_number extraction agree with every label."""
    recs = read_jsonl(ROOT / "data/real/gsm8k/example_model_solutions.jsonl.gz")
    models = [k for k, v in recs[0].items() if isinstance(v, dict)]
    items = [Item(r["question"], r["ground_truth"].rsplit("A:", 1)[1].strip()) for r in recs for _ in models]
    responses = [r[m]["solution"] for r in recs for m in models]
    labels = [float(r[m]["is_correct"]) for r in recs for m in models]
    assert len(labels) == 5276 and sum(labels) == 2001
    for extract in ("auto", "last_number"):
        v = MathVerifier(extract=extract)
        assert v.score([it.prompt for it in items], responses, items) == labels, extract
        assert (v.no_answer, v.unverifiable) == (0, 0)


MATH500 = ROOT / "data/real/math/math500_test.jsonl.gz"


@pytest.mark.skipif(not MATH500.exists(), reason="data/real/math/math500_test.jsonl.gz not shipped")
def test_every_math500_reference_verifies_against_itself_boxed():
    recs = read_jsonl(MATH500)
    v = MathVerifier()
    scores = v.score(["q"] * len(recs), [f"The final answer is $\\boxed{{{r['answer']}}}$." for r in recs],
                     [Item("q", r["answer"]) for r in recs])
    assert [r["answer"] for r, s in zip(recs, scores) if s != 1.0] == []
    assert v.unverifiable == 0
