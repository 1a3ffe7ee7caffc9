"""The reward-source contract: score (prompt, response) text pairs in batches."""
from __future__ import annotations

from typing import Protocol


class RewardSource(Protocol):
    name: str

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        """One scalar per pair; higher is better. Responses are text: each source re-tokenizes."""
