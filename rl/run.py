"""Hydra entry point: `python -m rl.run [group=option ...] [key=value ...]`.

`job=train` (default) runs the online loop (`algo` x `reward` on the `world`); `job=engine_demo`
samples from the policy in an engine actor, then perturbs the policy, syncs its weights into the
engine and checks the log-probs.
"""
from __future__ import annotations

import json
import os
import sys

import hydra
from omegaconf import DictConfig

from policies.engine import EngineError


def engine_demo(cfg: DictConfig) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from policies.actor import start_engine
    from policies.engine import Sampling, check_engine_name
    from policies.models import resolve_policy
    from policies.sync import sync_weights
    from rl.cluster import engine_config, init_ray

    check_engine_name(cfg.engine.name)  # fail before Ray and model loading start
    path = resolve_policy(cfg.policy, cfg.cache_dir, cfg.world)
    init_ray(cfg.cluster)
    engine = start_engine(engine_config(cfg), path)
    prompts = list(cfg.demo.prompts)
    rollouts = engine.generate(prompts, Sampling(**cfg.demo.sampling))
    for r in rollouts[:: cfg.demo.sampling.n]:
        print(f"[{cfg.engine.name}] {prompts[r.prompt_index]!r} -> {r.text!r} ({r.finish_reason}, "
              f"{len(r.completion_ids)} tokens, mean log p {sum(r.logprobs) / max(1, len(r.logprobs)):.3f})")
    policy = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True)
    gen = torch.Generator().manual_seed(cfg.seed)
    syncs = []
    for step in range(cfg.demo.sync_rounds):
        with torch.no_grad():
            for p in policy.parameters():
                p.add_(cfg.demo.perturb_std * torch.randn(p.shape, generator=gen))
        rep = sync_weights(engine, policy, prompts, cfg.engine.sync_tolerance)
        print(f"sync {step}: {rep.seconds:.3f}s, mean |Δ log p| {rep.logprob_diff_mean:.2e}, "
              f"max {rep.logprob_diff_max:.2e}")
        syncs.append(vars(rep))
    engine.close()
    return {"model": path, "engine": cfg.engine.name, "samples": len(rollouts), "syncs": syncs}


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    out_dir = hydra.core.hydra_config.HydraConfig.get().runtime.output_dir
    try:
        if cfg.job == "engine_demo":
            summary = engine_demo(cfg)
            with open(os.path.join(out_dir, "summary.json"), "w") as f:
                json.dump(summary, f, indent=2)
        elif cfg.job == "train":
            from rl.loop import run

            summary = run(cfg, out_dir)
            print(json.dumps({k: summary[k] for k in ("proxy_initial", "proxy_final", "gold_initial", "gold_final",
                                                      "kl_final", "wall_s")}))
        else:
            raise EngineError(f"unknown job {cfg.job!r} (config key job); expected 'train' or 'engine_demo'")
    except (EngineError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"summary: {os.path.join(out_dir, 'summary.json')}")


if __name__ == "__main__":
    main()
