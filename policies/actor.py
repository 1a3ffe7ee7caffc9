"""A rollout engine living in a Ray actor, behind the same contract as a local engine."""
from __future__ import annotations

from typing import Sequence

import ray
from ray.exceptions import GetTimeoutError

from policies.engine import EngineError, Prompt, Rollout, Sampling, check_engine_name, check_model_dir, make_engine


class _EngineActor:
    def __init__(self, name: str, model_path: str, kwargs: dict):
        self.engine = make_engine(name, model_path, **kwargs)

    def ready(self) -> bool:
        return True

    def generate(self, prompts, sampling):
        return self.engine.generate(prompts, sampling)

    def load_weights(self, state_dict):
        return self.engine.load_weights(state_dict)


def call(ref, what: str, timeout: float):
    """ray.get that cannot hang (`timeout` seconds) and re-raises an actor's error as itself; a
    value computed in-process (not an object ref) is returned as it is."""
    if not isinstance(ref, (ray.ObjectRef, list)):
        return ref
    try:
        return ray.get(ref, timeout=timeout)
    except GetTimeoutError:
        raise EngineError(f"{what} gave no answer within {timeout:g}s (engine.rpc_timeout_s)") from None
    except ray.exceptions.RayTaskError as e:
        raise e.as_instanceof_cause() from None


class EngineClient:
    """Engine contract over a Ray actor: every call waits at most `rpc_timeout_s` (start-up: `start_timeout_s`)."""

    def __init__(self, name: str, model_path: str, num_cpus: float = 1, num_gpus: float = 0,
                 rpc_timeout_s: float = 300, start_timeout_s: float = 600, **kwargs):
        check_engine_name(name)
        check_model_dir(model_path)  # fail here, not inside a dying actor
        self.name, self.rpc_timeout_s = name, rpc_timeout_s
        actor_cls = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(_EngineActor)
        self.actor = actor_cls.remote(name, model_path, dict(kwargs, rpc_timeout_s=rpc_timeout_s))
        self._get(self.actor.ready.remote(), "start", start_timeout_s)

    def _get(self, ref, what: str, timeout: float | None = None):
        return call(ref, f"{self.name} engine actor: '{what}'", self.rpc_timeout_s if timeout is None else timeout)

    def generate(self, prompts: Sequence[Prompt], sampling: Sampling) -> list[Rollout]:
        return self._get(self.actor.generate.remote(list(prompts), sampling), "generate")

    def load_weights(self, state_dict) -> float:
        """`state_dict`: tensors, or a Ray object ref to them (a learner's `state_dict.remote()`: the
        weights then go from the learner to the engine through the object store, not through this process)."""
        if not isinstance(state_dict, ray.ObjectRef):
            state_dict = {k: v.detach().cpu() for k, v in state_dict.items()}
        return self._get(self.actor.load_weights.remote(state_dict), "load_weights")

    def close(self) -> None:
        ray.kill(self.actor)


def start_engine(cfg, model_path: str) -> EngineClient:
    """An engine actor from the `engine` config group."""
    kwargs = {k: v for k, v in cfg.items() if k not in ("name", "sync_tolerance")}
    return EngineClient(cfg.name, model_path, **kwargs)
