"""Weight sync with a check: after loading, the engine's log-probs must match the trainer's."""
from __future__ import annotations

import math
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


def check_gap(mean: float, max_: float, tokens: int, tolerance: float, where: str = "after weight sync") -> None:
    """Raise WeightSyncError when the mean |engine - trainer| log-prob gap exceeds `tolerance` or is NaN."""
    if math.isnan(mean):  # NaN log-probs on one side: a numerical fault, not a gap that stale weights would make
        raise WeightSyncError(
            f"engine and policy disagree {where}: the log-prob gap is NaN over {tokens} tokens, so the engine or the "
            f"policy computed NaN log-probs. Not stale weights but a numerical fault: an overflow in a low precision "
            f"(algo.precision, engine dtype), or a compiled vLLM engine (engine.enforce_eager=false) reusing kernels "
            f"that torch's compile cache (TORCHINDUCTOR_CACHE_DIR) holds from another CPU or instruction set.")
    if not mean <= tolerance:
        raise WeightSyncError(
            f"engine and policy disagree {where}: mean |Δ log p| = {mean:.3g}, max = {max_:.3g} over {tokens} "
            f"tokens, tolerance (engine.sync_tolerance) = {tolerance:g}. Stale or skipped weights on the engine "
            f"side are the usual cause.")


def verify(model, rollouts, tolerance: float) -> tuple[float, float]:
    """Recompute the rollouts' log-probs with `model` and check the gap (`check_gap`)."""
    diff = check_logprobs(model, rollouts)
    check_gap(diff["mean"], diff["max"], diff["tokens"], tolerance)
    return diff["mean"], diff["max"]


def sync_weights(engine, model, probe_prompts, tolerance: float, max_tokens: int = 16, seed: int = 0) -> SyncReport:
    """Load `model`'s weights into `engine`, sample the probe prompts and check the log-probs.

    `engine` is anything with the engine contract (a local engine or an `EngineClient`).
    """
    seconds = engine.load_weights(model.state_dict())
    rollouts = engine.generate(probe_prompts, Sampling(n=1, temperature=1.0, max_tokens=max_tokens, seed=seed))
    return SyncReport(seconds, *verify(model, rollouts, tolerance))
