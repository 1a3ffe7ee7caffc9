"""Start or join Ray as `cluster.*` says."""
from __future__ import annotations

import os

import ray

from rl import warm


def init_ray(cfg) -> None:
    """`cluster.address: null` starts a local Ray with `cluster.num_cpus`; otherwise join that address."""
    if ray.is_initialized():
        return
    # Workers must import the project's packages however the driver was started.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))} | omp_env(cfg) | malloc_env(cfg)
    if cfg.address:
        ray.init(address=cfg.address, runtime_env={"env_vars": env}, log_to_driver=cfg.log_to_driver)
    else:
        _this_machine_only()
        # "local": a new Ray even when one runs on this machine; left unset, ray.init joins the last Ray
        # started here (ray start, a test's multi-node cluster) and refuses num_cpus
        ray.init(address="local", num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus, include_dashboard=False,
                 object_store_memory=int(cfg.object_store_gib * 2**30), runtime_env={"env_vars": env},
                 log_to_driver=cfg.log_to_driver)


def shutdown_ray() -> None:
    """Stop the actors parked for a next run (rl/warm.py) as a run stops them, then Ray: `ray.shutdown()`
    alone kills them, and a killed vLLM engine leaves its rendezvous file (/tmp/vllm_dist_<id>) behind."""
    warm.release()
    ray.shutdown()


def _this_machine_only() -> None:
    """A Ray started by this process serves this machine only. Left alone, its GCS, raylet, workers and
    autoscaler listen on every interface (measured: `::` and 0.0.0.0) and usage statistics are reported
    home; Ray's single-node mode gives every process the loopback address instead (a setting read when
    Ray picks the node IP, so set both the variable and the value already read). The dashboard's web
    server is off (include_dashboard=False: its process loads the usage-stats module only)."""
    from ray._private import ray_constants

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray_constants.ENABLE_RAY_CLUSTER = False


def omp_env(cfg) -> dict:
    """How long an idle OpenMP thread spins before it sleeps (`cluster.omp_spincount`, GNU libgomp's
    GOMP_SPINCOUNT, which torch's CPU build uses). libgomp's default spins ~300,000 iterations after each
    parallel region: free when every core is the process's, but with one core taken by another process
    the spinning thread holds its core while its partner waits for a time slice on the busy one, and
    every op waits for both (measured: a learner step 11x slower beside one busy loop). A short spin
    keeps most of the speed alone and yields the core soon when it is shared (BENCHMARKS.md).
    null: the library's default."""
    n = cfg.get("omp_spincount")
    return {} if n is None else {"GOMP_SPINCOUNT": str(int(n))}


def actor_threads(cluster, beside_engine: bool = False) -> int | None:
    """Torch threads in the learner and reward actors (`cluster.threads_per_actor`). `auto`: every core of
    the Ray this run starts (`cluster.num_cpus`; this machine's on a joined cluster) while the loop's
    phases run one after another; half of them `beside_engine` (`algo.async_generation`: the engine
    generates while the learner updates), so the two do not take turns on the same cores (measured on
    2 cores, BENCHMARKS.md: the asynchronous arith step 0.24 -> 0.19 s)."""
    n = cluster.threads_per_actor
    if n != "auto":
        return n
    cores = cluster.get("num_cpus") or os.cpu_count() or 1
    return max(1, cores // 2) if beside_engine else cores


def engine_config(cfg):
    """The `engine` config group with `engine.threads` (torch threads in each engine actor) resolved.
    null: the cores of the Ray this run starts (`cluster.num_cpus`) split among `engine.replicas`, halved
    with `algo.async_generation` as the learner's are (`actor_threads`); on a joined cluster Ray's own
    choice, the actor's `engine.num_cpus`. Ray sets an actor's OMP_NUM_THREADS to its `num_cpus` (the
    engine's: 1, a scheduling share), so left to that the engine generated and re-packed its weights
    on one of two cores while the learner waited (SmolLM2-135M, 4 x 4 x 24: the step 0.72x the time with
    both, generation 5.0-5.3 -> 3.1-3.2 s, the sync's load 0.35-0.36 -> 0.22 s; BENCHMARKS.md)."""
    from omegaconf import OmegaConf

    cores = cfg.cluster.get("num_cpus")
    if cfg.engine.get("threads") is not None or not cores:
        return cfg.engine
    share = cores // 2 if cfg.get("algo", {}).get("async_generation") else cores
    return OmegaConf.merge(cfg.engine, {"threads": max(1, share // int(cfg.engine.get("replicas", 1)))})


def malloc_env(cfg) -> dict:
    """glibc's malloc keeping freed memory for the next allocation (`cluster.malloc_reuse`). By default a
    block over its mapping threshold (128 KB, rising to at most 32 MB) is a mapping of its own, unmapped
    when freed, so the large tensors of every step (an update's activations and logits) fault all their
    pages in again, and a fault on a fresh page is dear on these virtual machines (a 64 MB tensor made
    and filled: 24 ms with fresh 4-KB pages, 10 ms with huge pages; re-packing SmolLM2-135M's head for
    the engine 0.17 s on fresh pages, 0.014 s on reused ones). Set, every block comes from the heap and
    a free top goes back only past 2 GB (glibc ignored larger thresholds here), so a worker holds about
    its peak memory until it exits; measured, the 135M learner's update 0.77-0.93x the time, the arith
    world's 0.96x (BENCHMARKS.md). Off by default: with it on, a resumed run's sync gap differed from an
    uninterrupted run's past 1e-6 once in three CIs (2.2e-6 vs 1.9e-7, tests/test_kill.py); not
    reproduced since (ten runs of that work bit for bit the same on and off, the test 3 of 3), cause
    unknown. Read when a worker's C library starts, so set for the workers Ray starts."""
    return {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1)} if cfg.get("malloc_reuse") else {}
