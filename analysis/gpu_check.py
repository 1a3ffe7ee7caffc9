"""The smol world on one CUDA GPU: `make gpu-check` (= `python -m analysis.gpu_check`).

Prepared for a GPU machine with the `gpu` extra installed (`make venv EXTRAS=gpu,dev`); not yet run
on one (README). Three steps, each a fresh `python -m rl.run` process with a time limit, meant to
finish in under 8 minutes together on one GPU:

1. the environment: CUDA visible to torch, the vLLM build, the GPU's name;
2. a 20-step GRPO run of SmolLM2-135M-Instruct on `task=smol_arith` with the verifier, the learner on
   cuda in bf16 and vLLM on the same GPU (Ray GPU resources split between the two actors). Every
   step checks the engine's log-probs against the learner's after the weight sync (`engine.sync_tolerance`,
   the bf16 value) and the run stops if they differ: the sync check;
3. best-of-16 with the verifier on the eval prompts.

Writes `<out>/gpu_check.json` (tokens/s, s/step and its gen / reward / learn / sync split as medians,
gold before/after, the best-of-n curve, each step's wall time) and prints a table for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

GPU = ["cluster.num_gpus=1", "cluster.learner_gpus=0.5", "engine.num_gpus=0.5", "engine.gpu_memory_utilization=0.3",
       "engine.dtype=bfloat16", "engine.sync_tolerance=0.05"]
LEARNER = ["algo.device=cuda", "algo.precision=bf16"]
SMOL = ["task=smol_arith", "policy=smollm2_135m", "reward=rule", "checkpoint.every=0", "eval.prompts=200"]
GRPO = ["algo=grpo", "algo.steps=20", "algo.prompts_per_step=16", "algo.samples_per_prompt=8", "algo.max_tokens=64",
        "algo.lr=5e-6", "eval.every=10", *LEARNER]
BON = ["algo=bon", "algo.n_max=16", "algo.max_tokens=64"]
PHASES = ("perf/step_s", "perf/gen_s", "perf/reward_s", "perf/learn_s", "perf/sync_s", "perf/tokens_per_s")


def environment() -> dict:
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("gpu-check: torch sees no CUDA device (torch %s); on a GPU machine install the gpu extra: "
                         "make venv EXTRAS=gpu,dev" % torch.__version__)
    import vllm

    return {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
            "vllm": vllm.__version__}


def run(name: str, overrides: list[str], out: str, timeout: int) -> dict:
    """One rl.run process; its summary, and the medians of the per-step perf metrics."""
    run_dir = os.path.join(out, name)
    cmd = [sys.executable, "-m", "rl.run", *overrides, f"hydra.run.dir={run_dir}"]
    print(f"[gpu-check] {name}: {' '.join(cmd[2:])}", flush=True)
    t0 = time.time()
    proc = subprocess.run(cmd, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"gpu-check: the {name} run failed (exit {proc.returncode}); its log: {run_dir}")
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    steps = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl")) if line.strip()]
    perf = {k: statistics.median(r[k] for r in steps if k in r) for k in PHASES if any(k in r for r in steps)}
    diffs = [r["sync/logprob_diff"] for r in steps if "sync/logprob_diff" in r]
    out_ = {"process_wall_s": round(time.time() - t0, 1), "summary": summary, "median": perf,
            "step_s": [r["perf/step_s"] for r in steps if "perf/step_s" in r],
            "sync_logprob_diff_max": max(diffs) if diffs else None}
    curve = os.path.join(run_dir, "bon_curve.json")
    if os.path.exists(curve):
        with open(curve) as f:
            out_["bon_curve"] = json.load(f)
    return out_


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m analysis.gpu_check")
    ap.add_argument("--out", default="outputs/gpu_check")
    ap.add_argument("--timeout", type=int, default=240, help="seconds per run")
    ap.add_argument("overrides", nargs="*", help="extra rl.run overrides for both runs")
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    t0 = time.time()
    res = {"environment": environment()}
    res["grpo"] = run("grpo", SMOL + GRPO + GPU + a.overrides, a.out, a.timeout)
    res["bon"] = run("bon", SMOL + BON + GPU + a.overrides, a.out, a.timeout)
    res["wall_s"] = round(time.time() - t0, 1)
    with open(os.path.join(a.out, "gpu_check.json"), "w") as f:
        json.dump(res, f, indent=1)
    g, m = res["grpo"]["summary"], res["grpo"]["median"]
    print(f"{res['environment']} | whole check {res['wall_s']} s")
    print(f"GRPO 20 steps x 128 sequences: gold {g['gold_initial']:.3f} -> {g['gold_final']:.3f}, wall {g['wall_s']:.0f} s; "
          "median s/step " + ", ".join(f"{k.split('/')[1]} {v:.3f}" for k, v in m.items())
          + f"; max sync gap {res['grpo']['sync_logprob_diff_max']}")
    b = res["bon"]["summary"]
    print(f"best-of-16: gold {b['gold_initial']:.3f} (n = 1) -> {b['gold_final']:.3f}, wall {b['wall_s']:.0f} s")
    print(f"results: {os.path.join(a.out, 'gpu_check.json')}")


if __name__ == "__main__":
    main()
