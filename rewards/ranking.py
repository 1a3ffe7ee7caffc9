"""Rankings as text: a referee (URPO's, rewards/referee.py) is shown a question and a numbered list
of candidate responses and writes a ranking ("2 > 1 > 3", best first; "=" for a tie). Pure
functions for the prompt, the parser and the scores (the arith zoo builds its referee's SFT data
with the prompt, so this file is part of its cache key: rewards/referee.py, the live part, is not).

Conventions (ours; URPO's own prompt and formula are not public, see METHODS.md §6):
- a verdict is valid when it names every candidate 1..N exactly once; anything else (missing,
  duplicate or unknown index) is unparsable. Text around it is ignored; the last ranking in the
  text counts (models restate).
- concordance with a true order = the share of candidate pairs the verdict orders as the truth
  does; pairs the truth ties are left out (no order is right), a pair the verdict ties counts wrong.
- a candidate's rank score = (candidates it beats + half the ones it ties) / (N - 1), in [0, 1].
"""
from __future__ import annotations

import random
import re
from itertools import combinations

RANKING = re.compile(r"\d+(?:\s*[>=]\s*\d+)+")


def referee_prompt(question: str, candidates: list[str], template: str, item: str) -> str:
    """`template` with {prompt} and {candidates}; each candidate written as `item` ({i}, {response})."""
    listed = "".join(item.replace("{i}", str(i + 1)).replace("{response}", c) for i, c in enumerate(candidates))
    return template.replace("{prompt}", question).replace("{candidates}", listed)


def parse_ranking(text: str, n: int) -> list[list[int]] | None:
    """The verdict as tiers of 0-based candidate indices, best tier first ("2 > 1 = 3" -> [[1], [0, 2]]),
    or None when it does not name each of the n candidates exactly once."""
    found = RANKING.findall(text)
    if not found:
        return None
    tiers = [[int(x) - 1 for x in re.split(r"\s*=\s*", tier.strip())] for tier in re.split(r"\s*>\s*", found[-1])]
    named = [i for tier in tiers for i in tier]
    if sorted(named) != list(range(n)):
        return None
    return tiers


def _levels(tiers: list[list[int]]) -> dict[int, int]:
    """candidate -> its tier number (0 = best)."""
    return {i: t for t, tier in enumerate(tiers) for i in tier}


def concordance(tiers: list[list[int]] | None, truth: list[float]) -> float:
    """Share of candidate pairs ordered as `truth` (higher is better) orders them; truth-tied pairs
    are left out, verdict-tied pairs count wrong; an unparsable verdict (None) scores 0. With no
    pair the truth orders, 1 for any valid verdict."""
    if tiers is None:
        return 0.0
    level = _levels(tiers)
    pairs = [(i, j) for i, j in combinations(range(len(truth)), 2) if truth[i] != truth[j]]
    if not pairs:
        return 1.0
    right = sum((truth[i] > truth[j]) == (level[i] < level[j]) and level[i] != level[j] for i, j in pairs)
    return right / len(pairs)


def rank_scores(tiers: list[list[int]]) -> list[float]:
    """Each candidate's (beaten + ties / 2) / (N - 1), by candidate index."""
    level = _levels(tiers)
    n = len(level)
    return [(sum(level[i] < level[j] for j in range(n)) + 0.5 * sum(level[i] == level[j] for j in range(n) if j != i))
            / (n - 1) for i in range(n)]


def flip_rate(a: list[list[int]], b: list[list[int]]) -> float:
    """Share of candidate pairs whose relation (better / worse / tied) differs between two verdicts
    of the same candidates (shown in different orders)."""
    la, lb = _levels(a), _levels(b)
    pairs = list(combinations(range(len(la)), 2))
    sign = lambda lv, i, j: (lv[i] > lv[j]) - (lv[i] < lv[j])  # noqa: E731
    return sum(sign(la, i, j) != sign(lb, i, j) for i, j in pairs) / len(pairs)


def orders(n: int, count: int, rng: random.Random) -> list[list[int]]:
    """`count` presentation orders of n candidates: a seeded shuffle, then its reverse (each
    candidate's position mirrored, so position bias cancels in the mean), then fresh shuffles."""
    first = list(range(n))
    rng.shuffle(first)
    out = [first, first[::-1]]
    while len(out) < count:
        nxt = list(range(n))
        rng.shuffle(nxt)
        out.append(nxt)
    return out[:count]


def unshuffle(tiers: list[list[int]], order: list[int]) -> list[list[int]]:
    """A verdict on candidates shown in `order` (shown position p = candidate order[p]), back to
    candidate indices."""
    return [[order[p] for p in tier] for tier in tiers]
