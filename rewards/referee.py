"""URPO's referee: a policy ranking groups of responses listwise in several presentation orders
(formats and scores: rewards/ranking.py). In a URPO run it is backed by the live engine (the policy
itself, on its current weights, not a frozen copy from disk); as a reward source (`reward=referee`,
`make_source`) it is a model directory (an URPO checkpoint's `policy/`, or the zoo's `referee`) behind
the HF engine, for the static harness's pairwise protocols (`compare`)."""
from __future__ import annotations

import random

from rewards.ranking import flip_rate, orders, parse_ranking, rank_scores, referee_prompt, unshuffle


def verdict_text(truth: list[float]) -> str:
    """A ranking a perfect referee may write for candidates of these gold scores: best first, equal
    scores in the order shown ("1 > 3 > 2"; no ties, which a small model copies badly)."""
    order = sorted(range(len(truth)), key=lambda i: -truth[i])
    return " > ".join(str(i + 1) for i in order)


def pick(tiers: list[list[int]] | None) -> str | None:
    """A verdict on two candidates as a pairwise pick: "A" (the first shown ranked above the second),
    "B" (the second above the first), None for a tie or an unparsable verdict."""
    if tiers is None or len(tiers) != 2:
        return None
    return "A" if tiers[0] == [0] else "B"


class LiveReferee:
    """Ranks groups of responses with the live policy: one engine call for every group and order."""

    def __init__(self, engine, template: str, item: str, orders: int = 2, temperature: float = 0.0,
                 max_tokens: int = 16, max_candidate_chars: int | None = None, name: str = "referee",
                 demos: list[tuple[str, str]] | None = None):
        self.name, self.engine, self.template, self.item = name, engine, template, item
        self.demos = demos  # None: a plain-text prompt; else a chat, these (prompt, verdict) pairs as earlier turns
        self.n_orders, self.temperature, self.max_tokens = orders, temperature, max_tokens
        self.max_chars = max_candidate_chars
        self.cut = 0  # candidate texts cut to max_candidate_chars, counted

    def _cut(self, text: str) -> str:
        if self.max_chars is not None and len(text) > self.max_chars:
            self.cut += 1
            return text[: self.max_chars]
        return text

    def prompts(self, question: str, candidates: list[str], order):
        """The referee prompt listing `candidates` in `order` (indices), each cut to max_candidate_chars:
        text, or a chat whose last user turn is that text."""
        text = referee_prompt(question, [self._cut(candidates[i]) for i in order], self.template, self.item)
        if self.demos is None:
            return text
        turns = [m for q, a in self.demos for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})]
        return turns + [{"role": "user", "content": text}]

    def judge(self, questions: list[str], groups: list[list[str]], seed: int) -> list[dict]:
        """Per group: `scores` (each candidate's rank score, the mean over the orders) or None when
        any order's verdict is unparsable, and the verdicts in candidate indices (`flip` when two
        or more orders parsed)."""
        from policies.engine import Sampling

        rng = random.Random(seed)
        shown = [orders(len(g), self.n_orders, rng) for g in groups]
        prompts = [self.prompts(q, g, o) for q, g, os_ in zip(questions, groups, shown) for o in os_]
        rs = self.engine.generate(prompts, Sampling(n=1, temperature=self.temperature, max_tokens=self.max_tokens,
                                                    seed=seed))
        out = []
        for k, (g, os_) in enumerate(zip(groups, shown)):
            texts = [rs[k * self.n_orders + m].text for m in range(self.n_orders)]
            verdicts = [parse_ranking(t, len(g)) for t in texts]
            verdicts = [None if v is None else unshuffle(v, o) for v, o in zip(verdicts, os_)]
            ok = [v for v in verdicts if v is not None]
            scores = None
            if len(ok) == len(verdicts):
                per = [rank_scores(v) for v in ok]
                scores = [sum(col) / len(col) for col in zip(*per)]
            out.append({"scores": scores, "verdicts": verdicts, "texts": texts, "parsed": len(ok),
                        "flip": flip_rate(ok[0], ok[1]) if len(ok) >= 2 else None})
        return out

    def compare(self, questions: list[str], first: list[str], second: list[str]) -> list[str | None]:
        """Per pair, the two responses ranked in the order given: "A" (first better), "B" (second
        better) or None (a tie or an unparsable verdict); the static harness's pairwise contract."""
        from policies.engine import Sampling

        prompts = [self.prompts(q, [a, b], [0, 1]) for q, a, b in zip(questions, first, second)]
        rs = self.engine.generate(prompts, Sampling(n=1, temperature=self.temperature, max_tokens=self.max_tokens,
                                                    seed=0))
        return [pick(parse_ranking(r.text, 2)) for r in rs]
