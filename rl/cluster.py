"""Start or join Ray as `cluster.*` says."""
from __future__ import annotations

import os

import ray


def init_ray(cfg) -> None:
    """`cluster.address: null` starts a local Ray with `cluster.num_cpus`; otherwise join that address."""
    if ray.is_initialized():
        return
    # Workers must import the project's packages however the driver was started.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    if cfg.address:
        ray.init(address=cfg.address, runtime_env={"env_vars": env}, log_to_driver=cfg.log_to_driver)
    else:
        ray.init(num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus, include_dashboard=False,
                 object_store_memory=int(cfg.object_store_gib * 2**30), runtime_env={"env_vars": env},
                 log_to_driver=cfg.log_to_driver)
