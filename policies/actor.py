"""A rollout engine living in a Ray actor, behind the same contract as a local engine."""
from __future__ import annotations

import re
from dataclasses import replace
from typing import Sequence

import ray
from ray.exceptions import GetTimeoutError

from policies.engine import EngineError, Prompt, Rollout, Sampling, check_engine_name, check_model_dir, make_engine

CLOSE_TIMEOUT_S = 5.0  # how long `close_then_kill` waits for an engine actor's close before killing it


class _EngineActor:
    def __init__(self, name: str, model_path: str, kwargs: dict):
        self.engine = make_engine(name, model_path, **kwargs)

    def ready(self) -> bool:
        return True

    def node(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def generate(self, prompts, sampling):
        return self.engine.generate(prompts, sampling)

    def load_weights(self, state_dict):
        return self.engine.load_weights(state_dict)

    def close(self) -> None:
        self.engine.close()


def close_then_kill(actor, timeout: float = CLOSE_TIMEOUT_S) -> None:
    """The actor's own `close()` first (at most `timeout` seconds), then kill it: vLLM removes its rendezvous
    file (/tmp/vllm_dist_<id>) when its engine closes, and a killed process leaves it behind (one per engine
    start). A dead or busy actor is killed all the same."""
    try:
        ray.get(actor.close.remote(), timeout=timeout)
    except Exception:  # noqa: BLE001 - dead, hung, or its Ray gone: nothing to wait for
        pass
    ray.kill(actor)


class ActorDiedError(RuntimeError):
    """An actor's process died (killed, out of memory, a crash in native code)."""


def call(ref, what: str, timeout: float):
    """ray.get that cannot hang (`timeout` seconds) and re-raises an actor's error as itself (a dead
    actor as one `ActorDiedError` naming it); a value computed in-process (not an object ref) is
    returned as it is."""
    if not isinstance(ref, (ray.ObjectRef, list)):
        return ref
    try:
        return ray.get(ref, timeout=timeout)
    except GetTimeoutError:
        raise EngineError(f"{what} gave no answer within {timeout:g}s (engine.rpc_timeout_s)") from None
    except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as e:
        # a task fed by a dead actor's result fails as a task error whose cause is the death
        cause = e.as_instanceof_cause() if isinstance(e, ray.exceptions.RayTaskError) else e
        if isinstance(cause, ray.exceptions.RayActorError):
            cls = re.search(r"class_name: (\S+)", str(cause))
            raise ActorDiedError(
                f"{what}: a Ray actor of the run died ({cls.group(1) if cls else 'actor'}: {type(cause).__name__}, "
                f"{str(cause).splitlines()[0][:300]}). "
                "The run stops here; continue it from its newest checkpoint with resume=true and the same "
                "hydra.run.dir (checkpoint.every sets how often one is written).") from None
        raise cause from None


class EngineClient:
    """Engine contract over a Ray actor: every call waits at most `rpc_timeout_s` (start-up: `start_timeout_s`)."""

    def __init__(self, name: str, model_path: str, num_cpus: float = 1, num_gpus: float = 0,
                 rpc_timeout_s: float = 300, start_timeout_s: float = 600, wait: bool = True, options: dict | None = None,
                 **kwargs):
        check_engine_name(name)
        check_model_dir(model_path)  # fail here, not inside a dying actor
        self.name, self.rpc_timeout_s, self.start_timeout_s = name, rpc_timeout_s, start_timeout_s
        actor_cls = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(_EngineActor)
        # options: Ray actor options, e.g. a placement group's scheduling strategy (rl/placement.py)
        self.actor = actor_cls.options(**(options or {})).remote(name, model_path, dict(kwargs, rpc_timeout_s=rpc_timeout_s))
        if wait:
            self.wait()

    def wait(self) -> None:
        self._get(self.actor.ready.remote(), "start", self.start_timeout_s)

    def nodes(self) -> list[str]:
        """The Ray node(s) the engine runs on."""
        return [self._get(self.actor.node.remote(), "node")]

    def _get(self, ref, what: str, timeout: float | None = None):
        return call(ref, f"{self.name} engine actor: '{what}'", self.rpc_timeout_s if timeout is None else timeout)

    def generate(self, prompts: Sequence[Prompt], sampling: Sampling) -> list[Rollout]:
        return self.submit(prompts, sampling)()

    def submit(self, prompts: Sequence[Prompt], sampling: Sampling):
        """Start generating; returns a function that waits for the rollouts (asynchronous generation)."""
        ref = self.actor.generate.remote(list(prompts), sampling)
        return lambda: self._get(ref, "generate")

    def load_weights(self, state_dict) -> float:
        """`state_dict`: tensors, a safetensors file's path, or a Ray object ref to either (a learner's
        `state_dict.remote()` / `write_weights.remote(path)`: the weights then go from the learner to the
        engine without passing through this process)."""
        return self.submit_load(state_dict)()

    def submit_load(self, state_dict):
        """Start loading; returns a function that waits for it (the engine's load seconds). The actor runs
        its calls in the order they were made, so a generation submitted after this sees the new weights."""
        if isinstance(state_dict, dict):
            state_dict = {k: v.detach().cpu() for k, v in state_dict.items()}
        ref = self.actor.load_weights.remote(state_dict)
        return lambda: self._get(ref, "load_weights")

    def close(self) -> None:
        close_then_kill(self.actor)


class EngineGroup:
    """`engine.replicas` engine actors behind the one-engine contract: a call's prompts are cut into
    contiguous chunks, one per replica, generated in parallel and put back in order; each chunk keeps
    the per-prompt seeds it would have had in one engine (vLLM: seed + prompt index x n), so the
    rollouts do not depend on the number of replicas. A weight sync loads every replica."""

    def __init__(self, clients: list[EngineClient]):
        self.clients, self.name = clients, clients[0].name

    def generate(self, prompts: Sequence[Prompt], sampling: Sampling) -> list[Rollout]:
        return self.submit(prompts, sampling)()

    def submit(self, prompts: Sequence[Prompt], sampling: Sampling):
        prompts = list(prompts)
        size = -(-len(prompts) // len(self.clients))
        starts = list(range(0, len(prompts), size))
        waits = [c.submit(prompts[j : j + size], replace(sampling, seed=None if sampling.seed is None else sampling.seed + j * sampling.n))
                 for c, j in zip(self.clients, starts)]
        return lambda: [replace(r, prompt_index=r.prompt_index + j) for j, wait in zip(starts, waits) for r in wait()]

    def wait(self) -> None:
        for c in self.clients:
            c.wait()

    def load_weights(self, state_dict) -> float:
        return self.submit_load(state_dict)()

    def submit_load(self, state_dict):
        if isinstance(state_dict, dict):
            state_dict = ray.put({k: v.detach().cpu() for k, v in state_dict.items()})
        waits = [c.submit_load(state_dict) for c in self.clients]
        return lambda: max(wait() for wait in waits)

    def nodes(self) -> list[str]:
        return [n for c in self.clients for n in c.nodes()]

    def close(self) -> None:
        for c in self.clients:
            c.close()


def start_engine(cfg, model_path: str, options: list[dict] | None = None, wait: bool = True) -> EngineClient | EngineGroup:
    """The engine actor(s) of the `engine` config group (`engine.replicas` of them: started together;
    `options`: each one's Ray actor options). `wait=False`: return at once (call `.wait()`), so the
    caller can start its other actors meanwhile."""
    kwargs = {k: v for k, v in cfg.items() if k not in ("name", "sync_tolerance", "replicas", "sync_via")}
    replicas = int(cfg.get("replicas", 1))
    if replicas < 1:
        raise EngineError(f"engine.replicas={replicas}; expected 1 or more")
    options = options or [{}] * replicas
    if replicas == 1:
        return EngineClient(cfg.name, model_path, options=options[0], wait=wait, **kwargs)
    group = EngineGroup([EngineClient(cfg.name, model_path, wait=False, options=o, **kwargs) for o in options])
    if wait:
        group.wait()
    return group

