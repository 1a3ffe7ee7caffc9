"""Rerunnable benchmarks. `python -m analysis.bench engines|algos [--repeats 3]`

engines: tokens/s of the vLLM and HF engines on one sampling workload (16 prompts x 4 samples x
128 tokens, temperature 1) for two model sizes, alternating the engines run by run and quoting
medians (this machine's speed drifts ~2x over minutes), plus the weight-sync time.

algos: gold gain per minute of each RL algorithm's default config on the default world with
reward=gold (`python -m rl.run algo=X reward=gold`, each run a fresh process), the algorithms
alternating order repeat by repeat; gain = final - initial eval gold (deterministic), minutes =
the median wall time of the whole run (Ray and engine start, evaluations included).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

# Before torch/vLLM import: in-process vLLM, as the engine uses it.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

SIZES = {"tiny": "tiny", "135m": "smollm2-135m"}


def bench_engines(repeats: int, prompts: int, samples: int, max_tokens: int, dtype: str, cache_dir: str) -> dict:
    import random

    import torch
    from omegaconf import OmegaConf
    from tqdm import tqdm

    from policies.engine import Sampling, make_engine
    from policies.models import resolve_policy

    results = {}
    for label, shape in SIZES.items():
        path = resolve_policy(OmegaConf.create({"source": "random", "shape": shape, "seed": 0}), cache_dir)
        engines = {name: make_engine(name, path, dtype=dtype, max_model_len=512) for name in ("vllm", "hf")}
        vocab = len(engines["hf"].tokenizer)
        rng = random.Random(0)
        batch = [[rng.randrange(5, vocab) for _ in range(16)] for _ in range(prompts)]
        sampling = Sampling(n=samples, temperature=1.0, max_tokens=max_tokens, seed=0)
        state = engines["hf"].model.state_dict()
        for e in engines.values():  # warm-up, not timed
            e.generate(batch[:2], Sampling(n=1, max_tokens=8, seed=0))
        tps = {name: [] for name in engines}
        sync = {name: [] for name in engines}
        order = list(engines)
        for rep in tqdm(range(repeats), desc=f"engines {label}"):
            for name in order if rep % 2 == 0 else order[::-1]:  # alternate who goes first
                t0 = time.perf_counter()
                rs = engines[name].generate(batch, sampling)
                dt = time.perf_counter() - t0
                tps[name].append(sum(len(r.completion_ids) for r in rs) / dt)
                sync[name].append(engines[name].load_weights(state))
        params = sum(p.numel() for p in engines["hf"].model.parameters())
        results[label] = {"params": params, "dtype": dtype, "tok_per_s": {k: statistics.median(v) for k, v in tps.items()},
                          "tok_per_s_runs": tps, "sync_s": {k: statistics.median(v) for k, v in sync.items()},
                          "ratio_vllm_over_hf": statistics.median(tps["vllm"]) / statistics.median(tps["hf"])}
        for e in engines.values():
            e.close()
        del engines
        torch.set_num_threads(os.cpu_count() or 1)
    return results


ALGOS = ("ppo", "grpo", "rloo", "reinforce_pp")


def bench_algos(repeats: int, algos: list[str], out_dir: str, overrides: list[str]) -> dict:
    import subprocess
    import sys

    runs = {a: [] for a in algos}
    for rep in range(repeats):
        for algo in algos if rep % 2 == 0 else algos[::-1]:
            run_dir = os.path.join(out_dir, f"{algo}_{rep}")
            cmd = [sys.executable, "-m", "rl.run", f"algo={algo}", "reward=gold", "checkpoint.every=0",
                   f"hydra.run.dir={run_dir}", *overrides]
            print(f"[{rep + 1}/{repeats}] {' '.join(cmd[2:])}", flush=True)
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            with open(os.path.join(run_dir, "summary.json")) as f:
                runs[algo].append(json.load(f))
    res = {}
    for algo, rs in runs.items():
        wall = statistics.median(r["wall_s"] for r in rs)
        gain = statistics.median(r["gold_final"] - r["gold_initial"] for r in rs)
        res[algo] = {"gold_initial": rs[0]["gold_initial"], "gold_final": rs[0]["gold_final"], "gold_gain": gain,
                     "kl_final": rs[0]["kl_final"], "wall_s": wall, "wall_s_runs": [r["wall_s"] for r in rs],
                     "gold_gain_per_min": gain / (wall / 60)}
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m analysis.bench")
    ap.add_argument("what", choices=["engines", "algos"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--cache-dir", default=os.environ.get("RLHF_TESTBED_CACHE", os.path.expanduser("~/.cache/rlhf-testbed")))
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--algos", default=",".join(ALGOS), help="algos: comma-separated algorithm names")
    ap.add_argument("--out-dir", default="outputs/bench_algos", help="algos: where the runs go")
    ap.add_argument("overrides", nargs="*", help="algos: extra rl.run overrides for every run")
    a = ap.parse_args(argv)
    if a.what == "algos":
        res = bench_algos(a.repeats, a.algos.split(","), a.out_dir, a.overrides)
        print(f"reward=gold, default world, each algorithm's default config; median of {a.repeats} alternating runs")
        print(f"{'algo':<14}{'gold 0':>8}{'gold T':>8}{'gain':>8}{'KL':>7}{'wall s':>8}{'gain/min':>10}")
        for algo, r in res.items():
            print(f"{algo:<14}{r['gold_initial']:>8.3f}{r['gold_final']:>8.3f}{r['gold_gain']:>8.3f}"
                  f"{r['kl_final']:>7.2f}{r['wall_s']:>8.1f}{r['gold_gain_per_min']:>10.3f}")
        if a.json:
            with open(a.json, "w") as f:
                json.dump(res, f, indent=2)
        return
    res = bench_engines(a.repeats, a.prompts, a.samples, a.max_tokens, a.dtype, a.cache_dir)
    print(f"workload: {a.prompts} prompts x {a.samples} samples x {a.max_tokens} tokens, T=1, {a.dtype}, "
          f"median of {a.repeats} alternating runs")
    for label, r in res.items():
        print(f"{label} ({r['params'] / 1e6:.2f}M params): vllm {r['tok_per_s']['vllm']:.0f} tok/s, "
              f"hf {r['tok_per_s']['hf']:.0f} tok/s, sync vllm {r['sync_s']['vllm']:.3f}s / hf {r['sync_s']['hf']:.3f}s")
        print(f"ratio_{label}={r['ratio_vllm_over_hf']:.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
