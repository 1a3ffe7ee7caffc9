"""Where the engine and learner actors go: `cluster.placement`.

none: Ray places each actor by its resources (engine.num_cpus / num_gpus, cluster.learner_cpus /
learner_gpus). colocate: one placement-group bundle holds every engine replica and the learner,
their resources summed, so they share a node and its GPUs (engine.num_gpus 0.5 + learner_gpus 0.5
share one GPU, the way OpenRLHF and verl colocate). split: a bundle per engine replica and one for
the learner, placed by `cluster.placement_strategy` (PACK, SPREAD, STRICT_PACK, STRICT_SPREAD: Ray's
placement-group strategies; STRICT_SPREAD puts each bundle on its own node). Reward actors are not
placed."""
from __future__ import annotations

LAYOUTS = ("none", "colocate", "split")
STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


def _resources(cpus: float, gpus: float) -> dict:
    return {k: float(v) for k, v in (("CPU", cpus), ("GPU", gpus)) if v}


def bundles(layout: str, replicas: int, engine: tuple[float, float], learner: tuple[float, float] | None):
    """(bundles, each engine replica's bundle index, the learner's bundle index) of a layout;
    `engine` and `learner` are (cpus, gpus) per actor, `learner` None for a run without one (best-of-n)."""
    if layout not in LAYOUTS:
        raise ValueError(f"cluster.placement={layout!r}; expected one of: {', '.join(LAYOUTS)}")
    if layout == "colocate":
        cpus = replicas * engine[0] + (learner[0] if learner else 0)
        gpus = replicas * engine[1] + (learner[1] if learner else 0)
        return [_resources(cpus, gpus)], [0] * replicas, 0 if learner else None
    if layout == "split":
        out = [_resources(*engine) for _ in range(replicas)] + ([_resources(*learner)] if learner else [])
        return out, list(range(replicas)), replicas if learner else None
    return [], [None] * replicas, None


class Placement:
    """The placement group of a run (none for `cluster.placement: none`) and each actor's Ray options."""

    def __init__(self, cfg, has_learner: bool, timeout: float):
        import ray
        from ray.util.placement_group import placement_group

        c, e = cfg.cluster, cfg.engine
        self.layout, strategy = c.get("placement", "none"), c.get("placement_strategy", "PACK")  # checked by rl.validate
        learner = (c.learner_cpus, c.get("learner_gpus", 0)) if has_learner else None
        self.bundles, self.engine_index, self.learner_index = bundles(
            self.layout, e.get("replicas", 1), (e.num_cpus, e.num_gpus), learner)
        self.group = None
        if self.bundles:
            self.group = placement_group(self.bundles, strategy=strategy)
            ready, _ = ray.wait([self.group.ready()], timeout=timeout)
            if not ready:
                ray.util.remove_placement_group(self.group)
                raise RuntimeError(
                    f"cluster.placement={self.layout} ({strategy}) asks Ray for the bundles {self.bundles}, and the "
                    f"cluster could not provide them within {timeout:g}s (engine.start_timeout_s): too few CPUs/GPUs, "
                    "or too few nodes for STRICT_SPREAD")

    def _options(self, index) -> dict:
        if self.group is None:
            return {}
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        return {"scheduling_strategy": PlacementGroupSchedulingStrategy(self.group, placement_group_bundle_index=index)}

    def engine(self) -> list[dict]:
        return [self._options(i) for i in self.engine_index]

    def learner(self) -> dict:
        return self._options(self.learner_index)

    def remove(self) -> None:
        if self.group is not None:
            import ray

            ray.util.remove_placement_group(self.group)
