"""Does static reward-benchmark accuracy predict downstream gains? `python -m analysis.correlation`.

For each reward source in `study.sources` (default: every world proxy RM, the judge, CDR):
  static  accuracy on `study.bench` through the static harness (analysis/static.py), once: it does
          not depend on the run seed (a bench `limit` subsamples with the bench's own seed);
  bon     best-of-`study.bon.n` gold of the proxy-selected sample minus the base policy's mean
          gold, on the eval prompts (one seeded pool per seed, the same for every source);
  rl      final minus initial eval gold of a fixed-budget run (`algo`, GRPO by default) on the proxy;
          rl_peak: the best eval gold of that run minus initial (an oracle early stop: what the
          proxy could give before it was overoptimized), from the same run's `eval.every` points.
bon and rl run once per seed in `study.seeds` (`study.rl: false`: no rl, for a world where a run per
source is too slow, such as smol on a CPU); each gain is the mean over seeds (its per-seed sd in
the table and as error bars). Then Pearson, Spearman and Kendall tau between static accuracy and
each mean gain with Fisher-z 95% intervals over the sources (analysis/fits.py), a scatter PNG per
gain, correlation.json and report.md; the report says which intervals are too wide to conclude.

Each sub-job runs in one of `study.parallel` Ray actors (num_cpus=0: they only orchestrate the loop's own
actors; each runs its sub-jobs one after another, so a run takes back what the last one parked) and its
result is cached under `study.cache` (default `<cache_dir>/studies/`) by a hash of its resolved config
and of the world zoo's key (so a change to the world's code invalidates it too), and a re-run reuses
every finished sub-result. The key does not cover the loop's own code (rl/): after changing an
algorithm, delete `<cache_dir>/studies/`.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time

import hydra
import numpy as np
import ray
from omegaconf import DictConfig, OmegaConf

from analysis.study import cli, conf_file, seeds, write
from rl.cluster import shutdown_ray
from rl.logger import read_evals, write_atomic


GAINS = ("bon_gain", "rl_gain", "rl_peak_gain")
NAMES = {"pearson": "Pearson", "spearman": "Spearman", "kendall": "Kendall"}


def _sub_config(cfg: DictConfig, kind: str, source: str, seed: int | None = None) -> dict:
    """The resolved config of one sub-job: the run config with this source as the reward and, for
    bon and rl, `seed` as the run seed (part of the cache key: one cached result per seed)."""
    base = OmegaConf.to_container(cfg, resolve=True)
    if kind != "static":
        base["seed"] = seed
    base["reward"] = OmegaConf.to_container(OmegaConf.load(conf_file("reward", source)), resolve=True)
    study = base.pop("study")
    if kind == "static":
        harness = OmegaConf.load(conf_file("", "static"))  # the static CLI's own scoring settings
        return {"kind": kind, "world": base["world"], "reward": base["reward"],
                "bench": OmegaConf.to_container(OmegaConf.load(conf_file("bench", study["bench"])))
                | (study.get("bench_override") or {}) | ({"limit": study["static_rows"]} if study.get("static_rows") else {}),
                "seed": base["seed"], "batch_size": harness.batch_size, "batch_chars": harness.batch_chars,
                "max_chars": OmegaConf.to_container(harness.max_chars), "cache_dir": base["cache_dir"],
                "metric": study.get("static_metric", "overall")}
    if kind == "bon":
        base["algo"] = OmegaConf.to_container(OmegaConf.load(conf_file("algo", "bon"))) | {"n_max": study["bon"]["n"]}
    base["checkpoint"] = {"every": 0, "keep": 1}
    # one sub-job at a time: a runner's actors stay warm for its next sub-job (rl/warm.py); side by side,
    # actors parked by a runner between two sub-jobs would hold CPUs the other runners' runs need
    base["cluster"]["keep_warm"] = bool(base["cluster"].get("keep_warm", True)) and study["parallel"] == 1
    return base | {"kind": kind}


def _key(sub: dict) -> str:
    """The cache key: the sub-job's config, less what does not change its result."""
    if "cluster" in sub:
        sub = sub | {"cluster": {k: v for k, v in sub["cluster"].items() if k != "keep_warm"}}
    return hashlib.sha256(json.dumps(sub, sort_keys=True).encode()).hexdigest()[:16]


def static_metric(res: dict, path: str) -> float:
    """The number `study.static_metric` names in a static result's scores ('/' walks nested keys:
    `accuracy` for one_vs_many and bon benches, `over_domains_present/hard` for rm_bench)."""
    value = res["scores"]
    for key in path.split("/"):
        value = value.get(key) if isinstance(value, dict) else None
    if isinstance(value, (int, float)):
        return float(value)
    raise ValueError(f"study.static_metric={path!r} is not a number in the scores of bench {res['bench']!r}; "
                     f"it has: {', '.join(_numbers(res['scores']))}")


def _numbers(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += _numbers(v, f"{prefix}{k}/")
        elif isinstance(v, (int, float)):
            out.append(f"{prefix}{k}")
    return out


def run_sub(sub: dict) -> dict:
    """One sub-job (inside a `_SubRunner` actor): static accuracy, or a BoN / RL run's gold gain."""
    cfg = OmegaConf.create({k: v for k, v in sub.items() if k != "kind"})
    t0 = time.time()
    if sub["kind"] == "static":
        from analysis.static import evaluate

        res = evaluate(cfg)
        return {"value": static_metric(res, sub["metric"]), "wall_s": round(time.time() - t0, 1)}
    from rl.loop import run

    with tempfile.TemporaryDirectory(prefix=f"corr-{sub['kind']}-") as d:
        summary = run(cfg, d)
        peak = max(r["eval/reward_gold"] for r in read_evals(d)) if sub["kind"] == "rl" else None
    return {"value": summary["gold_final"] - summary["gold_initial"], "gold_initial": summary["gold_initial"],
            "peak_value": None if peak is None else peak - summary["gold_initial"],
            "gold_final": summary["gold_final"], "proxy_initial": summary["proxy_initial"],
            "proxy_final": summary["proxy_final"], "kl_final": summary["kl_final"], "wall_s": round(time.time() - t0, 1)}


class _SubRunner:
    """Runs sub-jobs one after another in a process of its own: what one run parks (rl/warm.py) serves its
    next, and `close` stops those actors as a run would before the study stops Ray."""

    def run(self, sub: dict) -> dict:
        return run_sub(sub)

    def close(self) -> None:
        from rl import warm

        warm.release()


def collect(cfg: DictConfig) -> dict:
    """Every (kind, source, seed) sub-result (seed None for static), from the cache or computed by
    Ray actors."""
    from worlds.zoo import ensure, zoo_key
    from rl.cluster import init_ray

    cache = cfg.study.get("cache") or os.path.join(cfg.cache_dir, "studies")
    os.makedirs(cache, exist_ok=True)
    jobs, results = [], {}
    world = zoo_key(cfg.world)
    # kind by kind: a BoN run needs no learner, so between two RL runs it would stop the parked one
    # (rl/warm.py) and the next RL run would start its own (~10 s); in a row, each RL run takes it back
    subs = [("static", source, None) for source in cfg.study.sources] + \
        [(kind, source, seed) for kind in kinds(cfg) for source in cfg.study.sources for seed in seeds(cfg)]
    for kind, source, seed in subs:
        sub = _sub_config(cfg, kind, source, seed)
        path = os.path.join(cache, f"{kind}-{source}-{_key(sub | {'zoo_key': world})}.json")
        if os.path.exists(path):
            with open(path) as f:
                results[(kind, source, seed)] = json.load(f) | {"cached": True}
        else:
            jobs.append(((kind, source, seed), sub, path))
    print(f"correlation: {len(results)} sub-results cached, {len(jobs)} to run ({cfg.study.parallel} at a time)")
    if jobs:
        ensure(cfg.world, cfg.cache_dir)  # once, here: parallel sub-jobs would each build what they miss
        init_ray(cfg.cluster)
        from tqdm import tqdm

        from policies.actor import CLOSE_TIMEOUT_S, close_then_kill

        runners = [ray.remote(num_cpus=0)(_SubRunner).remote() for _ in range(min(cfg.study.parallel, len(jobs)))]
        bar = tqdm(total=len(jobs), desc="sub-jobs", unit="job")
        try:
            for i in range(0, len(jobs), len(runners)):
                wave = jobs[i : i + len(runners)]
                for (job, _, path), res in zip(wave, ray.get([r.run.remote(s) for r, (_, s, _) in zip(runners, wave)])):
                    write_atomic(path, json.dumps(res))
                    results[job] = res | {"cached": False}
                    bar.update(1)
        finally:
            bar.close()
            for r in runners:  # a runner's close closes an engine and stops other actors: more time
                close_then_kill(r, timeout=6 * CLOSE_TIMEOUT_S)
    return results


def kinds(cfg) -> tuple[str, ...]:
    return ("bon", "rl") if cfg.study.get("rl", True) else ("bon",)


def gains(rl: bool) -> tuple[str, ...]:
    return GAINS if rl else GAINS[:1]


def _name(kind: str, source: str, seed: int | None) -> str:
    return f"{kind}/{source}" if seed is None else f"{kind}/{source}/seed_{seed}"


def row(source: str, static: float, runs: list[tuple[dict, dict | None]]) -> dict:
    """One source's table row from its (bon, rl) sub-results per seed (rl None: not run): each gain's
    mean over the seeds (what the correlations use), its sd (ddof 1; None for one seed) and the per-seed values."""
    per_seed = {"bon_gain": [b["value"] for b, _ in runs]}
    if all(r is not None for _, r in runs):
        per_seed |= {"rl_gain": [r["value"] for _, r in runs], "rl_peak_gain": [r["peak_value"] for _, r in runs]}
    out = {"source": source, "static": static}
    for gain, vals in per_seed.items():
        out |= {gain: float(np.mean(vals)), f"{gain}_sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else None}
    kls = [r.get("kl_final") if r else None for _, r in runs]
    return out | {"rl_kl": float(np.mean(kls)) if None not in kls else None, "per_seed": per_seed}


def analyse(cfg: DictConfig, results: dict) -> dict:
    from analysis.fits import correlations

    ss = seeds(cfg)
    rows = [row(s, results[("static", s, None)]["value"], [(results[("bon", s, k)], results.get(("rl", s, k))) for k in ss])
            for s in cfg.study.sources]
    stats = {g: correlations([r["static"] for r in rows], [r[g] for r in rows]) for g in gains("rl" in kinds(cfg))}
    return {"bench": cfg.study.bench, "rl": "rl" in kinds(cfg), "static_rows": cfg.study.get("static_rows"), "bon_n": cfg.study.bon.n, "rl_algo": cfg.algo.name, "rl_steps": cfg.algo.steps,
            "rl_kl": {"coef": cfg.algo.kl.coef, "placement": cfg.algo.kl.placement, "estimator": cfg.algo.kl.estimator},
            "world": cfg.world.name, "seeds": ss, "rows": rows, "correlations": stats,
            "sub_wall_s": {_name(*k): v["wall_s"] for k, v in results.items()},
            "cached": sorted(_name(*k) for k, v in results.items() if v.get("cached"))}


def scatter(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = gains(res.get("rl", True))
    fig, axes = plt.subplots(1, len(shown), figsize=(5.4 * len(shown), 4.6), squeeze=False)
    titles = (f"best-of-{res['bon_n']}", f"RL {res['rl_algo']}, final", f"RL {res['rl_algo']}, peak")
    for ax, gain, title in zip(axes[0], shown, titles):
        x, y = [r["static"] for r in res["rows"]], [r[gain] for r in res["rows"]]
        if len(res["seeds"]) > 1:
            ax.errorbar(x, y, yerr=[r[f"{gain}_sd"] for r in res["rows"]], fmt="o", capsize=3,
                        label=f"mean ± sd over {len(res['seeds'])} seeds")
            ax.legend(fontsize=8)
        else:
            ax.scatter(x, y)
        for r in res["rows"]:
            ax.annotate(r["source"], (r["static"], r[gain]), fontsize=8, xytext=(3, 3), textcoords="offset points")
        c = res["correlations"][gain]
        ax.set_title(f"{title}: r={c['pearson']['value']:.2f} [{c['pearson']['ci_low']:.2f}, "
                     f"{c['pearson']['ci_high']:.2f}], ρ={c['spearman']['value']:.2f}, τ={c['kendall']['value']:.2f} "
                     f"(n={c['n']})", fontsize=9)
        ax.set_xlabel(f"static accuracy ({res['bench']})")
        ax.set_ylabel("gold gain")
        ax.axhline(0, color="grey", lw=0.5)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(res: dict) -> str:
    n_seeds, rl = len(res["seeds"]), res.get("rl", True)
    rows = f" ({res['static_rows']} rows, a seeded sample)" if res.get("static_rows") else ""
    lines = [f"# Static accuracy vs downstream gold gain ({res['world']})", "",
             f"Static: `{res['bench']}`{rows}. BoN: N={res['bon_n']}, gold of the proxy pick minus the base mean. "
             + (f"RL: {res['rl_algo']} for {res['rl_steps']} steps (KL coef {res['rl_kl']['coef']}, "
                f"{res['rl_kl']['estimator']} in the {res['rl_kl']['placement']}), final minus initial eval gold (RL gain) and the "
                f"best eval gold of the run minus initial (RL peak gain, an oracle early stop). " if rl else
                "No RL runs (study.rl: false). ")
             + (f"Gains are means over {n_seeds} seeds ({', '.join(map(str, res['seeds']))}) ± their per-seed sd."
                if n_seeds > 1 else f"One seed ({res['seeds'][0]})."), "",
             "| source | static | BoN gain | RL gain | RL peak gain | RL KL |" if rl else "| source | static | BoN gain |",
             "|---|---:|---:|---:|---:|---:|" if rl else "|---|---:|---:|"]
    for r in res["rows"]:
        kl = f"{r['rl_kl']:.2f}" if r["rl_kl"] is not None else "–"
        gain = lambda g: f"{r[g]:+.3f}" + (f" ± {r[g + '_sd']:.3f}" if r[g + "_sd"] is not None else "")  # noqa: E731
        lines.append(f"| {r['source']} | {r['static']:.3f} | {gain('bon_gain')} | {gain('rl_gain')} | "
                     f"{gain('rl_peak_gain')} | {kl} |" if rl else f"| {r['source']} | {r['static']:.3f} | {gain('bon_gain')} |")
    lines += ["", "| gain | n | Pearson r [95% CI] (width) | Spearman ρ [95% CI] (width) | Kendall τ [95% CI] (width) |",
              "|---|---:|---|---|---|"]
    for gain, c in res["correlations"].items():
        cell = lambda k: f"{c[k]['value']:.2f} [{c[k]['ci_low']:.2f}, {c[k]['ci_high']:.2f}] ({c[k]['width']:.2f})"  # noqa: E731
        lines.append(f"| {gain} | {c['n']} | {cell('pearson')} | {cell('spearman')} | {cell('kendall')} |")
    lines += ["", "Intervals: Fisher z, with se 1/√(n−3) for Pearson, √((1+ρ²/2)/(n−3)) for Spearman (Bonett & Wright "
              "2000) and √(0.437/(n−4)) with the t(n−2) quantile for Kendall (Fieller, Hartley & Pearson 1957); "
              "no interval below n = 4 (Kendall: 5)."]
    for gain, c in res["correlations"].items():
        why = [f"{NAMES[k]}: {c[k]['inconclusive']}" for k in NAMES if c[k]["inconclusive"]]
        if why:
            lines += ["", f"**{gain}: n = {c['n']} sources are too few to conclude**: {'; '.join(why)}."]
    lines += ["", f"Cached sub-results reused: {len(res['cached'])}."]
    return "\n".join(lines) + "\n"


def study(cfg: DictConfig, out_dir: str) -> dict:
    t0 = time.time()
    if len(cfg.study.sources) < 3:
        raise ValueError(f"study.sources needs at least 3 reward sources for a correlation, got {list(cfg.study.sources)}")
    res = analyse(cfg, collect(cfg)) | {"wall_s": round(time.time() - t0, 1)}
    scatter(res, os.path.join(out_dir, "correlation.png"))
    write(out_dir, "correlation", res, report(res))
    return res


@hydra.main(config_path="../conf", config_name="correlation", version_base="1.3")
def main(cfg: DictConfig) -> None:
    cli(study, report, cfg, "correlation.json, correlation.png, report.md", cleanup=shutdown_ray)


if __name__ == "__main__":
    main()
