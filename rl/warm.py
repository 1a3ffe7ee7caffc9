"""Actors a finished run leaves running for the next run in this process (`cluster.keep_warm`): a
Hydra multirun's jobs, a study's sub-runs, the test suite. Each actor is a process that imports torch
(vLLM's engine ~10 s on 2 cores, the learner and a reward actor ~4 s each), most of a short run; the
next run takes them back instead: the engine if its config and policy match (it reloads the policy's
weights, as a weight sync does), the learner and reward actors whatever their config (they run their
constructor again in the warm process). Whatever the next run does not take is stopped before it
starts its own actors, so parked actors never hold CPUs a run needs."""
from __future__ import annotations

import atexit
import json
from pathlib import Path

import ray

_parked: list[tuple[tuple, object]] = []  # (key, actor or engine client); a key names its role first


class Reusable:
    """An actor class whose warm process can serve another run: its constructor runs again."""

    def reinit(self, *args) -> bool:
        import gc

        self.__dict__.clear()  # the last run's models are freed before the next run's load, not after
        gc.collect()
        self.__init__(*args)
        return True


def session() -> tuple:
    """The Ray session parked actors belong to (a new one has killed them)."""
    ctx = ray.get_runtime_context()
    return ctx.get_node_id(), ctx.get_job_id()


def weights_file(model_path: str) -> str | None:
    """The policy directory's one weights file (what a warm engine reloads); None when it is sharded."""
    files = sorted(Path(model_path).glob("*.safetensors"))
    return str(files[0].resolve()) if len(files) == 1 else None


def engine_key(engine_cfg, model_path: str):
    """What must match for a parked engine to serve a run: the engine config and the policy's weights."""
    from omegaconf import OmegaConf

    conf = OmegaConf.to_container(engine_cfg, resolve=True) if OmegaConf.is_config(engine_cfg) else dict(engine_cfg)
    conf.pop("sync_tolerance", None)
    weights = weights_file(model_path)
    return None if weights is None else ("engine", json.dumps(conf, sort_keys=True), weights, session())


def take(key) -> object | None:
    """A parked actor whose key matches, removed from the parking; None if there is none."""
    for i, (k, actor) in enumerate(_parked):
        if key is not None and k == key:
            del _parked[i]
            return actor
    return None


def stop(actor) -> None:
    """Stop an actor handle, or an engine client (its own close)."""
    if isinstance(actor, ray.actor.ActorHandle):
        ray.kill(actor)
    else:
        actor.close()


def release() -> None:
    """Stop every parked actor (a run calls this after taking what it reuses)."""
    while _parked:
        _, actor = _parked.pop()
        try:
            stop(actor)
        except Exception:  # noqa: BLE001 - an actor of a Ray session that is gone
            pass


def park(key, actor) -> None:
    _parked.append((key, actor))
    # stopped the way a run stops them when this process exits, not killed by Ray's own exit handler
    # (a killed vLLM engine leaves its /tmp/vllm_dist_<id> file); re-registered to run before a Ray
    # started since, as atexit runs the newest handler first
    atexit.unregister(release)
    atexit.register(release)
