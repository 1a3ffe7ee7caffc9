"""Weight sync with a check: after loading, the engine's log-probs must match the trainer's."""
from __future__ import annotations

from dataclasses import dataclass

from policies.engine import Sampling
from policies.logprobs import check_logprobs


class WeightSyncError(RuntimeError):
    pass


@dataclass
class SyncReport:
    seconds: float
    logprob_diff_mean: float
    logprob_diff_max: float


def verify(model, rollouts, tolerance: float) -> tuple[float, float]:
    """Raise WeightSyncError when the mean |engine - model| log-prob gap exceeds `tolerance`."""
    diff = check_logprobs(model, rollouts)
    if not diff["mean"] <= tolerance:  # written so that NaN fails too
        raise WeightSyncError(
            f"engine and policy disagree after weight sync: mean |Δ log p| = {diff['mean']:.3g}, "
            f"max = {diff['max']:.3g} over {diff['tokens']} tokens, tolerance (engine.sync_tolerance) = "
            f"{tolerance:g}. Stale or skipped weights on the engine side are the usual cause.")
    return diff["mean"], diff["max"]


def sync_weights(engine, model, probe_prompts, tolerance: float, max_tokens: int = 16, seed: int = 0) -> SyncReport:
    """Load `model`'s weights into `engine`, sample the probe prompts and check the log-probs.

    `engine` is anything with the engine contract (a local engine or an `EngineClient`).
    """
    seconds = engine.load_weights(model.state_dict())
    rollouts = engine.generate(probe_prompts, Sampling(n=1, temperature=1.0, max_tokens=max_tokens, seed=seed))
    return SyncReport(seconds, *verify(model, rollouts, tolerance))
