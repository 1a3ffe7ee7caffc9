"""Reward overoptimization study (Gao et al. 2023): `python -m analysis.overopt [reward=rm_l] [...]`.

For one proxy and the gold reward, on the eval prompts:
  BoN  one pool of `bon.n_max` samples per prompt; the unbiased estimator of the proxy-selected
       sample's gold and proxy for n = 1, 2, 4, ... (rl/algos/bon.py); d = sqrt(log n - (n-1)/n).
  RL   a run of `algo` against the proxy (KL coefficient as configured, 0 allowed); every
       `eval.every` steps the loop samples the eval prompts afresh and scores gold and proxy on
       those samples, with KL to the initial policy = summed k1 per sequence, averaged; d = sqrt(KL).
Gold and proxy are taken relative to the initial policy (R(0) = 0) and fitted through the origin
with R_bon = d (alpha - beta d) and R_RL = d (alpha - beta log d) (analysis/fits.py). Writes
overopt.json (every point and fit), overopt.png and report.md to the run directory.
"""
from __future__ import annotations

import json
import math
import os
import time

import hydra
from omegaconf import DictConfig, OmegaConf

from analysis.fits import fit_gao, gao_curve
from analysis.study import cli, conf_file, write
from rl.logger import read_evals


def bon_points(cfg: DictConfig, out_dir: str) -> list[dict]:
    from rl.loop import run

    sub = OmegaConf.to_container(cfg, resolve=True)
    sub["algo"] = OmegaConf.to_container(OmegaConf.merge(OmegaConf.load(conf_file("algo", "bon")), cfg.study.bon))
    run(OmegaConf.create(sub), _mkdir(out_dir, "bon"))
    with open(os.path.join(out_dir, "bon", "bon_curve.json")) as f:
        rows = json.load(f)
    g0, p0 = rows[0]["reward/gold"], rows[0]["reward/proxy"]
    return [{"n": r["n"], "kl": r["kl/bon"], "d": math.sqrt(r["kl/bon"]), "gold": r["reward/gold"] - g0,
             "proxy": r["reward/proxy"] - p0, "gold_abs": r["reward/gold"], "proxy_abs": r["reward/proxy"]} for r in rows]


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


def fits(points: dict[str, list[dict]]) -> dict:
    out = {}
    for kind, pts in points.items():
        d, g = [p["d"] for p in pts], [p["gold"] for p in pts]
        try:
            out[kind] = fit_gao(kind, d, g)
        except ValueError as e:  # too few points with d > 0: say so in the outputs, not a crash
            out[kind] = {"form": kind, "error": str(e)}
    return out


def plot(points: dict[str, list[dict]], fitted: dict, title: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    for ax, kind, label in zip(axes, ("bon", "rl"), ("best-of-n", "RL")):
        pts = points[kind]
        d = [p["d"] for p in pts]
        gold_ax = ax.twinx()  # gold moves by hundredths while the proxy moves by units: own scales
        ax.plot(d, [p["proxy"] for p in pts], "o-", color="tab:orange", label="proxy")
        gold_ax.plot(d, [p["gold"] for p in pts], "s-", color="tab:blue", label="gold")
        f = fitted[kind]
        if "alpha" in f:
            xs = np.linspace(0, max(d) * 1.05 if d else 1, 200)
            gold_ax.plot(xs, gao_curve(kind, xs, f["alpha"], f["beta"]), "--", color="tab:blue",
                         label=f"gold fit α={f['alpha']:.3f} β={f['beta']:.3f}")
        gold_ax.axhline(0, color="tab:blue", lw=0.5, ls=":")
        ax.set_xlabel("d = sqrt(KL) [sqrt(nats)]")
        ax.set_ylabel("proxy − initial", color="tab:orange")
        gold_ax.set_ylabel("gold − initial", color="tab:blue")
        ax.set_title(label)
        handles = ax.get_legend_handles_labels()[0] + gold_ax.get_legend_handles_labels()[0]
        # below the axes: inside, it covered the curves wherever it went
        ax.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="upper center",
                  bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(res: dict) -> str:
    lines = [f"# Overoptimization: proxy `{res['proxy']}` vs gold", "",
             f"World `{res['world']}`, RL `{res['algo']}` ({res['rl_steps']} steps, KL coef {res['kl_coef']}, "
             f"placement {res['kl_placement']}), BoN pool {res['bon_n_max']} per prompt, {res['eval_prompts']} eval prompts. "
             f"Wall time {res['wall_s']} s.", "",
             "| curve | alpha | beta | d* (peak) | gold at d* | R^2 | points |", "|---|---:|---:|---:|---:|---:|---:|"]
    for kind in ("bon", "rl"):
        f = res["fits"][kind]
        if "alpha" in f:
            peak = f"{f['d_peak']:.3f}" if f["d_peak"] is not None else "none (beta <= 0)"
            rp = f"{f['r_peak']:.3f}" if f["r_peak"] is not None else "–"
            lines.append(f"| {kind} | {f['alpha']:.4f} | {f['beta']:.4f} | {peak} | {rp} | {f['r2']:.3f} | {f['points']} |")
        else:
            lines.append(f"| {kind} | – | – | – | – | – | {f['error']} |")
    for kind, key in (("bon", "n"), ("rl", "step")):
        lines += ["", f"## {kind} points", "", f"| {key} | KL | d | gold | proxy | gold (abs) | proxy (abs) |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for p in res["points"][kind]:
            lines.append(f"| {p[key]} | {p['kl']:.3f} | {p['d']:.3f} | {p['gold']:+.3f} | {p['proxy']:+.3f} | "
                         f"{p['gold_abs']:.3f} | {p['proxy_abs']:.3f} |")
    best = max(res["points"]["rl"], key=lambda p: p["gold"])
    last = res["points"]["rl"][-1]
    lines += ["", f"RL: gold peaks at {best['gold']:+.3f} (step {best['step']}, d {best['d']:.2f}) and ends at "
              f"{last['gold']:+.3f} while the proxy ends at {last['proxy']:+.3f}."]
    return "\n".join(lines) + "\n"


def study(cfg: DictConfig, out_dir: str) -> dict:
    t0 = time.time()
    points = {"bon": bon_points(cfg, out_dir), "rl": rl_points(cfg, out_dir)}
    fitted = fits(points)
    res = {"proxy": cfg.reward.name, "world": cfg.world.name, "algo": cfg.algo.name, "rl_steps": cfg.algo.steps,
           "kl_coef": cfg.algo.kl.coef, "kl_placement": cfg.algo.kl.placement, "bon_n_max": cfg.study.bon.n_max,
           "eval_prompts": cfg.eval.prompts, "points": points, "fits": fitted, "wall_s": round(time.time() - t0, 1)}
    plot(points, fitted, f"proxy {cfg.reward.name} vs gold ({cfg.world.name})", os.path.join(out_dir, "overopt.png"))
    write(out_dir, "overopt", res, report(res))
    return res


@hydra.main(config_path="../conf", config_name="overopt", version_base="1.3")
def main(cfg: DictConfig) -> None:
    cli(study, report, cfg, "overopt.json, overopt.png, report.md")


if __name__ == "__main__":
    main()
