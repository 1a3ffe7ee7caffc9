"""Reward overoptimization study (Gao et al. 2023): `python -m analysis.overopt [reward=rm_l] [...]`.

For one proxy and the gold reward, on the eval prompts, once per seed in `study.seeds` (`seed=s`
for the whole run: eval prompts, sampling, training; runs in <out>/seed_<s>/bon and /rl):
  BoN  one pool of `bon.n_max` samples per prompt; the unbiased estimator of the proxy-selected
       sample's gold and proxy for n = 1, 2, 4, ... (rl/algos/bon.py); d = sqrt(KL) with the exact
       KL of the selection (`kl/bon_exact`, tie-aware); the bound log n - (n-1)/n (`kl/bon`) is
       kept beside it, and used (with a note) for a bon_curve.json without `kl/bon_exact`.
  RL   a run of `algo` against the proxy (KL coefficient as configured, 0 allowed); every
       `eval.every` steps the loop samples the eval prompts afresh and scores gold and proxy on
       those samples, with KL to the initial policy = summed k1 per sequence, averaged; d = sqrt(KL).
Gold and proxy are taken relative to the initial policy (R(0) = 0) and fitted through the origin
with R_bon = d (alpha - beta d) and R_RL = d (alpha - beta log d) (analysis/fits.py): per seed, and
on the mean over seeds of each point (n for BoN, step for RL); the report gives the spread of the
per-seed fits. Writes overopt.json (every point and fit), overopt.png and report.md to the run
directory.
"""
from __future__ import annotations

import json
import math
import os
import time

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from analysis.fits import fit_gao, gao_curve, spread
from analysis.study import cli, conf_file, seeds, write
from rl.logger import read_evals

KL_BOUND_NOTE = ("bon_curve.json has no `kl/bon_exact`: d uses the bound log n - (n-1)/n, which overstates "
                 "the KL where the proxy ties")


def bon_points(cfg: DictConfig, out_dir: str) -> tuple[list[dict], bool]:
    """The BoN curve relative to n = 1, and whether its KL is the exact one (else the bound)."""
    from rl.loop import run

    sub = OmegaConf.to_container(cfg, resolve=True)
    sub["algo"] = OmegaConf.to_container(OmegaConf.merge(OmegaConf.load(conf_file("algo", "bon")), cfg.study.bon))
    run(OmegaConf.create(sub), _mkdir(out_dir, "bon"))
    with open(os.path.join(out_dir, "bon", "bon_curve.json")) as f:
        rows = json.load(f)
    exact = all("kl/bon_exact" in r for r in rows)
    g0, p0 = rows[0]["reward/gold"], rows[0]["reward/proxy"]
    pts = []
    for r in rows:
        kl = r["kl/bon_exact"] if exact else r["kl/bon"]
        # the exact KL is a mean of float sums: n = 1 can come out at -1e-17
        pts.append({"n": r["n"], "kl": kl, "kl_bound": r["kl/bon"], "d": math.sqrt(max(kl, 0.0)),
                    "gold": r["reward/gold"] - g0, "proxy": r["reward/proxy"] - p0,
                    "gold_abs": r["reward/gold"], "proxy_abs": r["reward/proxy"]})
    return pts, exact


def rl_points(cfg: DictConfig, out_dir: str) -> list[dict]:
    from rl.loop import run

    run(cfg, _mkdir(out_dir, "rl"))
    evals = read_evals(os.path.join(out_dir, "rl"))
    g0, p0 = evals[0]["eval/reward_gold"], evals[0]["eval/reward_proxy"]
    # k1 averaged over samples can dip below 0 by sampling noise near the start: d = sqrt(max(KL, 0))
    return [{"step": r["step"], "kl": r["eval/kl"], "d": math.sqrt(max(r["eval/kl"], 0.0)),
             "gold": r["eval/reward_gold"] - g0, "proxy": r["eval/reward_proxy"] - p0,
             "gold_abs": r["eval/reward_gold"], "proxy_abs": r["eval/reward_proxy"]} for r in evals]


def _mkdir(root: str, name: str) -> str:
    path = os.path.join(root, name)
    os.makedirs(path, exist_ok=True)
    return path


AXIS = {"bon": "n", "rl": "step"}


def mean_points(runs: list[list[dict]], kind: str) -> list[dict]:
    """Per n (BoN) or step (RL): the mean over seeds of every number, and gold's and proxy's
    min, max and sd (ddof 1; None for one seed) over the seeds."""
    axis = AXIS[kind]
    if any([p[axis] for p in pts] != [p[axis] for p in runs[0]] for pts in runs):
        raise ValueError(f"the seeds' {kind} points are at different {axis} values: cannot average them")
    out = []
    for i, first in enumerate(runs[0]):
        row = {axis: first[axis]}
        for key in first:
            if key != axis:
                row[key] = float(np.mean([pts[i][key] for pts in runs]))
        for key in ("gold", "proxy"):
            vals = [pts[i][key] for pts in runs]
            row |= {f"{key}_min": min(vals), f"{key}_max": max(vals),
                    f"{key}_sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else None}
        out.append(row)
    return out


def fits(points: dict[str, list[dict]]) -> dict:
    out = {}
    for kind, pts in points.items():
        d, g = [p["d"] for p in pts], [p["gold"] for p in pts]
        try:
            out[kind] = fit_gao(kind, d, g) | {"d_max": max(d)}
        except ValueError as e:  # too few points with d > 0: say so in the outputs, not a crash
            out[kind] = {"form": kind, "error": str(e)}
    return out


def fit_spread(per_seed: list[dict]) -> dict:
    """Mean, sd, min and max over the seeds of each curve's alpha, beta and d* (a d* of None or
    inf is left out of its statistics and counted in `excluded`)."""
    out = {}
    for kind in AXIS:
        fs = [s["fits"][kind] for s in per_seed if "alpha" in s["fits"][kind]]
        out[kind] = {k: spread([f[k] for f in fs]) for k in ("alpha", "beta", "d_peak")} | {
            "failed": len(per_seed) - len(fs)}
    return out


def plot(res: dict, title: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    many = len(res["seeds"]) > 1
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    for ax, kind, label in zip(axes, ("bon", "rl"), ("best-of-n", "RL")):
        pts = res["points"][kind]
        d = [p["d"] for p in pts]
        gold_ax = ax.twinx()  # gold moves by hundredths while the proxy moves by units: own scales
        mean = " (mean)" if many else ""
        ax.plot(d, [p["proxy"] for p in pts], "o-", color="tab:orange", label=f"proxy{mean}")
        gold_ax.plot(d, [p["gold"] for p in pts], "s-", color="tab:blue", label=f"gold{mean}")
        if many:  # the band is over seeds at each n / step, drawn at the mean d
            ax.fill_between(d, [p["proxy_min"] for p in pts], [p["proxy_max"] for p in pts], color="tab:orange",
                            alpha=0.15, lw=0)
            gold_ax.fill_between(d, [p["gold_min"] for p in pts], [p["gold_max"] for p in pts], color="tab:blue",
                                 alpha=0.15, lw=0, label=f"gold min–max over {len(res['seeds'])} seeds")
            for s in res["per_seed"]:
                sp = s["points"][kind]
                gold_ax.plot([p["d"] for p in sp], [p["gold"] for p in sp], ".", color="tab:blue", alpha=0.35)
        f = res["fits"][kind]
        if "alpha" in f:
            xs = np.linspace(0, max(d) * 1.05 if d else 1, 200)
            gold_ax.plot(xs, gao_curve(kind, xs, f["alpha"], f["beta"]), "--", color="tab:blue",
                         label=f"gold fit{mean} α={f['alpha']:.3f} β={f['beta']:.3f}")
        gold_ax.axhline(0, color="tab:blue", lw=0.5, ls=":")
        ax.set_xlabel("d = sqrt(KL) [sqrt(nats)]")
        ax.set_ylabel("proxy − initial", color="tab:orange")
        gold_ax.set_ylabel("gold − initial", color="tab:blue")
        ax.set_title(label)
        handles = ax.get_legend_handles_labels()[0] + gold_ax.get_legend_handles_labels()[0]
        # below the axes: inside, it covered the curves wherever it went
        ax.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="upper center",
                  bbox_to_anchor=(0.5, -0.16), ncol=2 if many else 3, frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _peak(f: dict) -> str:
    if f["d_peak"] is None:
        return "none (beta <= 0)"
    if not math.isfinite(f["d_peak"]):
        return "inf (beyond the data)"
    return f"{f['d_peak']:.3f}" + ("" if f["peak_in_data"] else " (beyond the data)")


def _fit_rows(fitted: dict, prefix: str = "") -> list[str]:
    lines = []
    for kind in AXIS:
        f = fitted[kind]
        if "alpha" in f:
            rp = f"{f['r_peak']:.3f}" if f["r_peak"] is not None else "–"
            lines.append(f"| {prefix}{kind} | {f['alpha']:.4f} | {f['beta']:.4f} | {_peak(f)} | {rp} | {f['r2']:.3f} | "
                         f"{f['points']} |")
        else:
            lines.append(f"| {prefix}{kind} | – | – | – | – | – | {f['error']} |")
    return lines


def _stat(s: dict, fmt: str = ".4f") -> str:
    if not s["n"]:
        return "–"
    sd = f" ± {s['sd']:{fmt}}" if s["sd"] is not None else ""
    return f"{s['mean']:{fmt}}{sd} [{s['min']:{fmt}}, {s['max']:{fmt}}]"


def report(res: dict) -> str:
    n_seeds = len(res["seeds"])
    many = n_seeds > 1
    fit_head = ["| curve | alpha | beta | d* (peak) | gold at d* | R^2 | points |", "|---|---:|---:|---:|---:|---:|---:|"]
    lines = [f"# Overoptimization: proxy `{res['proxy']}` vs gold", "",
             f"World `{res['world']}`, RL `{res['algo']}` ({res['rl_steps']} steps, KL coef {res['kl_coef']}, "
             f"placement {res['kl_placement']}), BoN pool {res['bon_n_max']} per prompt, {res['eval_prompts']} eval prompts, "
             f"seed{'s' if many else ''} {', '.join(map(str, res['seeds']))}. Wall time {res['wall_s']} s.", "",
             "BoN KL: " + ("the exact KL of the selection (`kl/bon_exact`); the bound log n − (n−1)/n beside it."
                           if res["bon_kl"] == "exact" else res["bon_kl"]), ""]
    if many:
        lines += [f"Fits of the mean over {n_seeds} seeds of each point:", ""]
    lines += fit_head + _fit_rows(res["fits"])
    for kind in AXIS:
        f = res["fits"][kind]
        if "alpha" in f and f["d_peak"] is not None and not f["peak_in_data"]:
            d_peak = f"{f['d_peak']:.3f}" if math.isfinite(f["d_peak"]) else "inf"
            lines += ["", f"The {kind} fit's peak d* = {d_peak} lies beyond the data (max d "
                      f"{f['d_max']:.3f}): the fitted curve has not turned over within the measured KL, and d* is an "
                      f"extrapolation."]
    if many:
        lines += ["", f"## Fits over {n_seeds} seeds", "",
                  "Mean ± sd [min, max] of the per-seed fits; d* without a finite peak is left out and counted.", "",
                  "| curve | alpha | beta | d* | fits without a finite d* | failed fits |", "|---|---|---|---|---:|---:|"]
        for kind, sp in res["fit_spread"].items():
            lines.append(f"| {kind} | {_stat(sp['alpha'])} | {_stat(sp['beta'])} | {_stat(sp['d_peak'], '.3f')} | "
                         f"{sp['d_peak']['excluded']} | {sp['failed']} |")
        lines += ["", "| seed / curve | alpha | beta | d* (peak) | gold at d* | R^2 | points |", fit_head[1]]
        for s in res["per_seed"]:
            lines += _fit_rows(s["fits"], prefix=f"seed {s['seed']} ")
    for kind, key in AXIS.items():
        bound = " KL bound |" if kind == "bon" else ""
        spread_col = " gold min–max |" if many else ""
        lines += ["", f"## {kind} points{' (mean over seeds)' if many else ''}", "",
                  f"| {key} | KL |{bound} d | gold |{spread_col} proxy | gold (abs) | proxy (abs) |",
                  "|---:|" + "---:|" * (6 + (kind == "bon") + many)]
        for p in res["points"][kind]:
            b = f" {p['kl_bound']:.3f} |" if kind == "bon" else ""
            sc = f" {p['gold_min']:+.3f} … {p['gold_max']:+.3f} |" if many else ""
            lines.append(f"| {p[key]} | {p['kl']:.3f} |{b} {p['d']:.3f} | {p['gold']:+.3f} |{sc} {p['proxy']:+.3f} | "
                         f"{p['gold_abs']:.3f} | {p['proxy_abs']:.3f} |")
    rl = res["points"]["rl"]
    i = max(range(len(rl)), key=lambda j: rl[j]["gold"])
    best, last = rl[i], rl[-1]
    lines += ["", f"RL: {'mean ' if many else ''}gold peaks at {best['gold']:+.3f} (step {best['step']}, d {best['d']:.2f}) "
              f"and ends at {last['gold']:+.3f} while the proxy ends at {last['proxy']:+.3f}."]
    if many:
        at = [s["points"]["rl"][i]["gold"] for s in res["per_seed"]]
        peaks = [max(s["points"]["rl"], key=lambda p: p["gold"]) for s in res["per_seed"]]
        lines[-1] += (f" At step {best['step']} the seeds' gold ranges {min(at):+.3f} … {max(at):+.3f} "
                      f"(sd {np.std(at, ddof=1):.3f}); each seed's own peak: "
                      + ", ".join(f"{p['gold']:+.3f} at step {p['step']}" for p in peaks) + ".")
    return "\n".join(lines) + "\n"


def study(cfg: DictConfig, out_dir: str) -> dict:
    t0 = time.time()
    per_seed, exact = [], True
    runs = [(s, OmegaConf.merge(cfg, {"seed": s}), _mkdir(out_dir, f"seed_{s}")) for s in seeds(cfg)]
    bons = [bon_points(cfg_s, seed_dir) for _, cfg_s, seed_dir in runs]
    # every BoN run first: one between two RL runs would stop the learner they share (rl/warm.py)
    for (s, cfg_s, seed_dir), (bon, bon_exact) in zip(runs, bons):
        exact &= bon_exact
        points = {"bon": bon, "rl": rl_points(cfg_s, seed_dir)}
        per_seed.append({"seed": s, "points": points, "fits": fits(points)})
    points = {kind: mean_points([s["points"][kind] for s in per_seed], kind) for kind in AXIS}
    res = {"proxy": cfg.reward.name, "world": cfg.world.name, "algo": cfg.algo.name, "rl_steps": cfg.algo.steps,
           "kl_coef": cfg.algo.kl.coef, "kl_placement": cfg.algo.kl.placement, "bon_n_max": cfg.study.bon.n_max,
           "eval_prompts": cfg.eval.prompts, "seeds": [s["seed"] for s in per_seed],
           "bon_kl": "exact" if exact else KL_BOUND_NOTE, "points": points, "fits": fits(points),
           "fit_spread": fit_spread(per_seed), "per_seed": per_seed, "wall_s": round(time.time() - t0, 1)}
    plot(res, f"proxy {cfg.reward.name} vs gold ({cfg.world.name})", os.path.join(out_dir, "overopt.png"))
    write(out_dir, "overopt", res, report(res))
    return res


@hydra.main(config_path="../conf", config_name="overopt", version_base="1.3")
def main(cfg: DictConfig) -> None:
    cli(study, report, cfg, "overopt.json, overopt.png, report.md")


if __name__ == "__main__":
    main()
