"""A math verifier for real text, built on Hugging Face's `math-verify` (pinned 0.9.0).

`MathVerifier.score(prompts, responses, items)` is 1.0 when a response's answer equals the item's
reference answer (`items[i].answer`: "72", "1,080", "\\frac{14}{3}", "\\boxed{3}",
"(3, \\frac{\\pi}{2})", ...) and 0.0 otherwise. Equality is math-verify's `verify(gold, pred)`:
sympy equality of the parsed expressions (numbers to 6 decimals, so 0.5 = \\frac{1}{2} but
4.67 != \\frac{14}{3}; sets, intervals, tuples and equations such as `x = 5` against `5` too).

How the response's answer is found (`extract`, config key `reward.extract`):

    auto         math-verify's own extraction (`parse` with LatexExtractionConfig +
                 ExprExtractionConfig): \\boxed{...} first, then "final answer is ..." anchors,
                 then the last LaTeX ($...$, \\[...\\]) or plain expression / number in the text.
    last_number  the last number in the text, commas as thousands separators removed
                 ("so she earns $1,080." -> 1080; "x = -5" -> -5; "3,4" -> 4).
    answer_tag   the text after the last "####" (GSM8K's format; up to the end of that line) or
                 inside the last <answer>...</answer>, whichever comes later, parsed as a bare
                 answer (below). No tag -> no answer.

A reference (and an answer_tag's content) is parsed as a bare answer: wrapped as `$...$` so
LaTeX without delimiters parses (math-verify's extraction ignores "\\frac{1}{2}" or
"(3, \\frac{\\pi}{2})" outside $...$), unless it holds an unescaped `$` or words (then
math-verify's own extraction runs on it), each falling back to the other. A reference is parsed
once per distinct string (cached).

Counters (cumulative ints): `unverifiable` — items with no reference (items None, answer None or
blank) or one from which math-verify extracts nothing; they score `unverifiable` (default 0).
`no_answer` — responses from which nothing could be extracted; they score 0. (Text math-verify
finds but cannot turn into sympy, e.g. "}{", comes back as a string and compares by exact string
match: that is an answer, not a missing one.) `too_large` — responses whose answer is a number too
large to compare safely (below); they score 0. rl/loop.py logs the three as reward/unverifiable,
reward/no_answer and reward/too_large.

Timeouts: math-verify guards `parse` and `verify` with `signal.alarm` by default, which only works
in the main thread of the main interpreter (elsewhere it raises ValueError). The reward source runs
inside a Ray actor, whose methods are not guaranteed to run in the main thread (a threaded actor or
one with concurrency groups runs them on executor threads), and SIGALRM there would also fight
with anything else in the worker using it. So both are called with their timeouts disabled
(`parse(..., parsing_timeout=None)`, `verify(..., timeout_seconds=None)`), and math-verify's
one-time "timeout is disabled" warning is silenced. Without a timeout, sympy hangs comparing
answers such as 10^{10^{10}}, (10^{10})! or \\binom{10^8}{5 \\cdot 10^7} (measured: no result
after 20 s each), which would stall the whole run; a response whose parsed answer holds a power
with a numeric exponent above 1e6 or a factorial / binomial / gamma of a number above 1e5 is
therefore not compared (scores 0, counted in `too_large`). Answers below those bounds (2^{10^7},
100000!) compare in well under a second.
"""
from __future__ import annotations

import logging
import re

EXTRACT = ("auto", "last_number", "answer_tag")
MAX_EXPONENT = 1e6  # |numeric exponent| above this: not compared (sympy may never finish)
MAX_FACTORIAL = 1e5  # numeric argument of factorial / binomial / gamma above this: same

log = logging.getLogger(__name__)

# A number: optional minus (not after a word character, so "5-3" gives 3), digits with comma
# thousands groups or plain digits, optional decimals; or ".5". Not inside a word or after a dot.
_NUMBER = re.compile(r"(?<![\w.])(?:-?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)")
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S)
_LATEX_CMD = re.compile(r"\\(?:begin|end)\{[^}]*\}|\\[A-Za-z]+")  # \begin{pmatrix} holds no words
_WORD = re.compile(r"[A-Za-z]{2,}")
_DOLLAR = re.compile(r"(?<!\\)\$")


def last_number(text: str) -> str | None:
    """The last number in `text` as a plain numeral (thousands commas removed), or None."""
    found = _NUMBER.findall(text)
    return found[-1].replace(",", "") if found else None


def tagged_answer(text: str) -> str | None:
    """The text after the last "####" (to the end of that line) or inside the last
    <answer>...</answer>, whichever comes later; None when there is neither."""
    tags = list(_ANSWER_TAG.finditer(text))
    hashes = text.rfind("####")
    if tags and tags[-1].start() > hashes:
        return tags[-1].group(1).strip()
    if hashes >= 0:
        rest = text[hashes + 4:].strip()
        return rest.split("\n", 1)[0].strip()
    return None


class MathVerifier:
    def __init__(self, name: str = "math", extract: str = "auto", unverifiable: float = 0.0):
        if extract not in EXTRACT:
            raise ValueError(f"math verifier extract {extract!r} (config key reward.extract): expected one of "
                             f"{', '.join(EXTRACT)}")
        import math_verify  # lazily: `import rewards` stays cheap
        import math_verify.grader
        import math_verify.parser

        # We disable the timeouts on purpose (see the module docstring): skip their warning.
        math_verify.parser.TIMEOUT_WARNING_SHOWN = True
        math_verify.grader.TIMEOUT_WARNING_SHOWN = True
        self._mv = math_verify
        self.name, self.extract, self.default = name, extract, float(unverifiable)
        self.unverifiable = 0
        self.no_answer = 0
        self.too_large = 0
        self._refs: dict[str, list] = {}

    def _parse(self, text: str) -> list:
        return self._mv.parse(text, parsing_timeout=None)

    def parse_bare(self, text: str) -> list:
        """A bare answer (a reference, an answer tag's content): as `$text$` unless it holds an
        unescaped `$` or words, then as plain text; each falls back to the other."""
        text = text.strip()
        if not text:
            return []
        wordy = _DOLLAR.search(text) or _WORD.search(_LATEX_CMD.sub(" ", text))
        tries = [text, f"${text}$"] if wordy else [f"${text}$", text]
        first: list = []
        for t in tries:
            got = self._parse(t)
            if any(not isinstance(g, str) for g in got):
                return got
            first = first or got
        return first

    def answer_of(self, response: str) -> list:
        """The response's parsed answer (math-verify's list of sympy objects / strings); [] if none."""
        if self.extract == "auto":
            return self._parse(response)
        if self.extract == "last_number":
            number = last_number(response)
            return self._parse(number) if number is not None else []
        tagged = tagged_answer(response)
        return self.parse_bare(tagged) if tagged else []

    def reference(self, answer) -> list:
        """The parsed reference answer, cached per distinct string; [] if it does not parse."""
        key = str(answer)
        if key not in self._refs:
            self._refs[key] = self.parse_bare(key)
            if not self._refs[key]:
                log.warning("math verifier %r: reference answer %r does not parse; scored as unverifiable",
                            self.name, key)
        return self._refs[key]

    def score(self, prompts: list[str], responses: list[str], items=None) -> list[float]:
        if items is not None and len(items) != len(responses):
            raise ValueError(f"math verifier {self.name!r}: {len(items)} items for {len(responses)} responses")
        out = []
        for i, response in enumerate(responses):
            answer = None if items is None else getattr(items[i], "answer", None)
            gold = self.reference(answer) if answer is not None and str(answer).strip() else []
            if not gold:
                self.unverifiable += 1
                out.append(self.default)
                continue
            pred = self.answer_of(response)
            if not pred:
                self.no_answer += 1
                out.append(0.0)
            elif too_large(pred):
                self.too_large += 1
                out.append(0.0)
            else:
                out.append(float(self._mv.verify(gold, pred, timeout_seconds=None)))
        return out


def too_large(parsed: list) -> bool:
    """Whether a parsed answer holds a number sympy may never finish comparing: a power with a
    numeric exponent above MAX_EXPONENT, or a factorial / binomial / gamma of a number above
    MAX_FACTORIAL. Checked bottom-up, so evaluating an already-checked subtree stays cheap."""
    import sympy
    from sympy.functions.combinatorial.factorials import CombinatorialFunction

    def magnitude(e) -> float:
        try:
            return abs(complex(sympy.N(e, 5)))
        except (TypeError, ValueError, OverflowError, ArithmeticError):
            return float("inf")

    for expr in parsed:
        if not isinstance(expr, sympy.Basic):
            continue
        for node in sympy.postorder_traversal(expr):
            if isinstance(node, sympy.Pow) and node.exp.is_number and magnitude(node.exp) > MAX_EXPONENT:
                return True
            if isinstance(node, (CombinatorialFunction, sympy.gamma)) and any(
                    a.is_number and magnitude(a) > MAX_FACTORIAL for a in node.args):
                return True
    return False
