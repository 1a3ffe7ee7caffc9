"""URPO against a separate judge: `python -m analysis.urpo [study.seeds=[0,1,2]] [algo.steps=60]`.

Once per seed in `study.seeds` (`seed=s` for both runs; runs in <out>/seed_<s>/urpo and /judge):
  urpo   `algo=urpo` from the zoo's referee (policy=arith_referee, reward=rule): one model plays and
         referees (rl/algos/urpo.py)
  <b>   for each reward b in `study.baselines` (default judge, rule_plus_judge): `algo=grpo reward=<b>`
         from the same model with the same algo settings (steps, prompts per step, samples per
         prompt, lr, KL, seed): the player trained on the separate LoRA judge alone, and on the
         verifier where it applies plus the judge (URPO's verifiable prompts get the verifier too)
Curves, at every evaluation of the runs (`eval.every`): gold on each prompt kind (`eval/gold_<kind>`)
and the referee's accuracy on held-out rankings (`eval/referee_accuracy`: mean pairwise concordance of
a greedy verdict with the true order). The judge is frozen: its accuracy on the same rankings is
measured per seed (candidates cut as the referee sees them; its scores ordered, equal scores tied).
Static (analysis/static.py on `study.bench`): the starting referee and each seed's last URPO
checkpoint with `study.protocol` (pairwise, both orders), the separate judge (`study.judge`) with its
pointwise scores (RewardBench's accuracy) and with its own protocol (`study.judge_protocol`).
Writes urpo.json, urpo.png and report.md / report.html to the run directory.
"""
from __future__ import annotations

import os
import time

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from analysis.study import cli, conf_file, seeds, write
from rl.logger import read_evals

def arms(cfg) -> list[str]:
    """urpo and the baselines, with every config the study reads checked before anything runs."""
    out = ["urpo", *cfg.study.baselines]
    if len(set(out)) != len(out):
        raise ValueError(f"study.baselines={list(cfg.study.baselines)}: each reward once, and not named urpo")
    for group, name in [("reward", b) for b in (*cfg.study.baselines, cfg.study.judge)] + [("bench", cfg.study.bench)]:
        conf_file(group, name)
    return out


def baseline_cfg(cfg: DictConfig, reward: str) -> DictConfig:
    """A comparison run: the same config with `algo=grpo` (URPO's GRPO settings, its mix gone) and
    conf/reward/<reward>.yaml as the reward."""
    sub = OmegaConf.to_container(cfg, resolve=True)
    sub["algo"].pop("urpo")
    sub["algo"]["name"] = "grpo"
    sub["reward"] = OmegaConf.to_container(OmegaConf.load(conf_file("reward", reward)))
    return OmegaConf.create(sub)


def score_tiers(scores: list[float]) -> list[list[int]]:
    """Pointwise scores as a ranking: candidate indices by descending score, equal scores one tier."""
    levels = sorted(set(scores), reverse=True)
    return [[i for i, s in enumerate(scores) if s == level] for level in levels]


def judge_on_rankings(cfg: DictConfig, judge_cfg) -> dict:
    """The frozen judge's accuracy (mean concordance) on the held-out rankings URPO's referee is
    evaluated on with this seed (`task.ranking_items("eval", eval_rankings, seed, ranking_size)`), each candidate cut to
    `max_candidate_chars` as the referee sees it."""
    from analysis.rewardbench import regroup
    from rewards import make_source, zoo_artifacts
    from rewards.ranking import concordance
    from rl.tasks import make_task
    from worlds import zoo

    u = cfg.algo.urpo
    zoo_dir = zoo.ensure(cfg.world, cfg.cache_dir, zoo_artifacts(judge_cfg))
    judge = make_source(judge_cfg, zoo_dir)
    rankings = make_task(cfg.task).ranking_items("eval", u.eval_rankings, cfg.seed, u.ranking_size)
    cap = u.max_candidate_chars
    cands = [[c if cap is None else c[:cap] for c in r["candidates"]] for r in rankings]
    flat = judge.score([r["prompt"] for r, cs in zip(rankings, cands) for _ in cs], [c for cs in cands for c in cs])
    acc = [concordance(score_tiers(s), r["gold"]) for s, r in zip(regroup(flat, [len(cs) for cs in cands]), rankings)]
    return {"accuracy": float(np.mean(acc)), "rankings": len(rankings)}


def static_cfg(cfg: DictConfig, reward: dict, protocol: str | None) -> DictConfig:
    """analysis.static's config (conf/static.yaml's settings) for `reward` on `study.bench`."""
    base = OmegaConf.to_container(OmegaConf.load(conf_file("", "static")))
    for key in ("defaults", "hydra", "cache_dir"):
        base.pop(key)
    bench = OmegaConf.to_container(OmegaConf.load(conf_file("bench", cfg.study.bench)))
    if cfg.study.get("bench_limit"):
        bench["limit"] = cfg.study.bench_limit
    return OmegaConf.create(base | {"world": OmegaConf.to_container(cfg.world, resolve=True), "reward": reward,
                                    "bench": bench, "judge_protocol": protocol, "seed": cfg.seed,
                                    "cache_dir": cfg.cache_dir})


def referee_reward(cfg: DictConfig, path: str | None) -> dict:
    """reward=referee with the run's referee format; `path` a model directory (None: the zoo's referee)."""
    u = cfg.algo.urpo
    out = OmegaConf.to_container(OmegaConf.load(conf_file("reward", "referee")))
    return out | {"path": path, "artifact": cfg.policy.artifact, "template": u.template, "item": u.item,
                  "max_tokens": u.referee_max_tokens, "max_candidate_chars": u.max_candidate_chars}


def static_numbers(cfg: DictConfig, reward: dict, protocol: str | None) -> dict:
    from analysis.static import evaluate

    res = evaluate(static_cfg(cfg, reward, protocol))
    out = {"wall_s": res["wall_s"]}
    if res["scores"] is not None:
        out["pointwise"] = res["scores"]["overall"]
    if res["judge_protocol"]:
        p = res["judge_protocol"]
        out |= {"protocol": p["protocol"], "accuracy": p["overall"], "per_subset": p["per_subset"],
                "parse_errors": p["verdict_parse_errors"]}
    return out


def curves(run_dir: str) -> list[dict]:
    """Per evaluation: the step, gold (all, per kind) and the referee's numbers when the run has them."""
    keep = lambda k: k == "eval/reward_gold" or k.startswith(("eval/gold_", "eval/referee_"))  # noqa: E731
    return [{"step": r["step"]} | {k[5:]: v for k, v in r.items() if keep(k)} for r in read_evals(run_dir)]


def mean_curve(runs: list[list[dict]]) -> list[dict]:
    """Per evaluation step: each number's mean, min and max over the seeds."""
    if any([p["step"] for p in c] != [p["step"] for p in runs[0]] for c in runs):
        raise ValueError("the seeds' evaluations are at different steps: cannot average them")
    out = []
    for i, first in enumerate(runs[0]):
        row = {"step": first["step"]}
        for key in first:
            if key != "step":
                vals = [c[i][key] for c in runs]
                row |= {key: float(np.mean(vals)), f"{key}_min": min(vals), f"{key}_max": max(vals)}
        out.append(row)
    return out


def plot(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = res["kinds"]
    fig, axes = plt.subplots(1, len(kinds) + 1, figsize=(4.6 * (len(kinds) + 1), 4.2))
    many = len(res["seeds"]) > 1
    names = list(res["curves"])
    colors = dict(zip(names, ["tab:red", "tab:blue", "tab:green", "tab:purple", "tab:brown", "tab:olive"]))
    labels = {arm: "URPO (own referee)" if arm == "urpo" else f"GRPO, reward={arm}" for arm in names}
    for ax, kind in zip(axes, kinds):
        for arm in names:
            pts = res["curves"][arm]
            steps = [p["step"] for p in pts]
            ax.plot(steps, [p[f"gold_{kind}"] for p in pts], "o-", color=colors[arm], label=labels[arm])
            if many:
                ax.fill_between(steps, [p[f"gold_{kind}_min"] for p in pts], [p[f"gold_{kind}_max"] for p in pts],
                                color=colors[arm], alpha=0.15, lw=0)
        ax.set_title(f"gold on {kind} prompts")
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    ax = axes[-1]
    pts = res["curves"]["urpo"]
    steps = [p["step"] for p in pts]
    ax.plot(steps, [p["referee_accuracy"] for p in pts], "o-", color=colors["urpo"], label="URPO referee (live)")
    if many:
        ax.fill_between(steps, [p["referee_accuracy_min"] for p in pts], [p["referee_accuracy_max"] for p in pts],
                        color=colors["urpo"], alpha=0.15, lw=0)
    ax.plot(steps, [p["referee_parse_rate"] for p in pts], ":", color=colors["urpo"], label="URPO referee parse rate")
    ax.axhline(res["judge_rankings"]["accuracy"], color="tab:blue", ls="--", label=f"{res['judge']} (separate, frozen)")
    ax.set_title("referee accuracy on held-out rankings")
    ax.set_xlabel("step")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    band = f" (mean; band: min–max over {len(res['seeds'])} seeds)" if many else ""
    fig.suptitle(f"URPO vs a separate judge, {res['world']} world{band}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _parsed(p: dict) -> str:
    return f"{p['referee_accuracy'] / p['referee_parse_rate']:.3f}" if p["referee_parse_rate"] else "–"


def report(res: dict) -> str:
    n = len(res["seeds"])
    mean = "mean over seeds " if n > 1 else ""
    lines = [f"# URPO vs a separate judge ({res['world']} world)", "",
             f"Both arms start from `{res['policy']}`, {res['steps']} steps of {res['prompts_per_step']} prompts x "
             f"{res['samples_per_prompt']} samples, seed{'s' if n > 1 else ''} {', '.join(map(str, res['seeds']))}. "
             f"URPO mix (verifiable : ranking : open) {res['mix']}; the comparison runs are `algo=grpo` on every "
             f"prompt with reward " + ", ".join(f"`{b}`" for b in res["baselines"]) + f". Wall time {res['wall_s']} s ("
             + ", ".join(f"{arm} runs {t} s" for arm, t in res["arm_wall_s"].items()) + " in all).", "",
             f"## Gold ({mean}at the first and last evaluation)", "",
             "| arm | " + " | ".join(f"gold {k} start | gold {k} end" for k in res["kinds"]) + " | gold all end |",
             "|---|" + "---:|" * (2 * len(res["kinds"]) + 1)]
    for arm in res["curves"]:
        first, last = res["curves"][arm][0], res["curves"][arm][-1]
        cells = " | ".join(f"{first[f'gold_{k}']:.3f} | {last[f'gold_{k}']:.3f}" for k in res["kinds"])
        lines.append(f"| {arm} | {cells} | {last['reward_gold']:.3f} |")
    u0, u1 = res["curves"]["urpo"][0], res["curves"]["urpo"][-1]
    best = max(res["curves"]["urpo"], key=lambda p: p["referee_accuracy"])
    jr = res["judge_rankings"]
    lines += ["", f"## Referee accuracy on {jr['rankings']} held-out rankings of {res['ranking_size']} (mean pairwise "
              "concordance with the true order)", "",
              f"URPO's live referee: {u0['referee_accuracy']:.3f} at the start (parse rate {u0['referee_parse_rate']:.2f}), "
              f"{u1['referee_accuracy']:.3f} at the end (parse rate {u1['referee_parse_rate']:.2f}), best {mean}"
              f"{best['referee_accuracy']:.3f} at step {best['step']}; an unparsable verdict scores 0, so among parsed "
              f"verdicts the accuracy is {_parsed(u0)} at the start and {_parsed(u1)} at the end. The separate judge "
              f"`{res['judge']}` (frozen, its scores ordered): {jr['accuracy']:.3f}.",
              "", f"## Static accuracy on `{res['bench']}`", "",
              "| source | protocol | accuracy | verdict parse errors |", "|---|---|---:|---:|"]
    st = res["static"]
    lines.append(f"| starting referee | {st['referee_start']['protocol']} | {st['referee_start']['accuracy']:.3f} | "
                 f"{st['referee_start']['parse_errors']} |")
    for s, v in zip(res["seeds"], st["urpo_final"]):
        lines.append(f"| URPO checkpoint, seed {s} | {v['protocol']} | {v['accuracy']:.3f} | {v['parse_errors']} |")
    if n > 1:
        acc = [v["accuracy"] for v in st["urpo_final"]]
        lines.append(f"| URPO checkpoint, mean ± sd | | {np.mean(acc):.3f} ± {np.std(acc, ddof=1):.3f} | |")
    lines += [f"| separate judge | pointwise scores (RewardBench) | {st['judge']['pointwise']:.3f} | – |",
              f"| separate judge | {st['judge']['protocol']} | {st['judge']['accuracy']:.3f} | {st['judge']['parse_errors']} |",
              "", "Protocols: both_orders asks for each pair in both orders (1 when both verdicts pick the chosen "
              "response, 0 when both pick the rejected one, 0.5 otherwise); ratings rates each response alone (0.5 for "
              "equal ratings); pointwise: chosen scores strictly higher."]
    return "\n".join(lines) + "\n"


def study(cfg: DictConfig, out_dir: str) -> dict:
    from rl.loop import run

    if cfg.algo.name != "urpo":
        raise ValueError(f"analysis.urpo compares algo=urpo with a separate judge; got algo={cfg.algo.name}")
    t0 = time.time()
    names = arms(cfg)
    runs = {arm: [] for arm in names}
    finals, judge_rankings, wall = [], [], {arm: 0.0 for arm in names}
    judge_cfg = OmegaConf.load(conf_file("reward", cfg.study.judge))
    for s in seeds(cfg):
        cfg_s = OmegaConf.merge(cfg, {"seed": s, "checkpoint": {"every": cfg.algo.steps, "keep": 1}})
        no_ckpt = OmegaConf.merge(cfg_s, {"checkpoint": {"every": 0}})
        for arm, arm_cfg in [("urpo", cfg_s)] + [(b, baseline_cfg(no_ckpt, b)) for b in cfg.study.baselines]:
            run_dir = os.path.join(out_dir, f"seed_{s}", arm)
            os.makedirs(run_dir, exist_ok=True)
            t = time.time()
            run(arm_cfg, run_dir)
            wall[arm] += time.time() - t
            runs[arm].append(curves(run_dir))
        ckpt = os.path.join(out_dir, f"seed_{s}", "urpo", "checkpoints", f"step_{cfg.algo.steps:06d}", "policy")
        finals.append(static_numbers(cfg_s, referee_reward(cfg_s, ckpt), cfg.study.protocol))
        judge_rankings.append(judge_on_rankings(cfg_s, judge_cfg))
    static = {"referee_start": static_numbers(cfg, referee_reward(cfg, None), cfg.study.protocol), "urpo_final": finals,
              "judge": static_numbers(cfg, OmegaConf.to_container(judge_cfg), cfg.study.judge_protocol)}
    mean = {arm: mean_curve(runs[arm]) for arm in names}
    per_seed = [j["accuracy"] for j in judge_rankings]
    judged = {"accuracy": float(np.mean(per_seed)), "rankings": judge_rankings[0]["rankings"], "per_seed": per_seed}
    res = {"world": cfg.world.name, "policy": cfg.policy.get("artifact") or cfg.policy.get("path"),
           "steps": cfg.algo.steps, "prompts_per_step": cfg.algo.prompts_per_step,
           "samples_per_prompt": cfg.algo.samples_per_prompt, "mix": list(cfg.algo.urpo.mix),
           "ranking_size": cfg.algo.urpo.ranking_size, "baselines": list(cfg.study.baselines), "judge": cfg.study.judge,
           "bench": cfg.study.bench,
           "seeds": seeds(cfg), "kinds": sorted(k[5:] for k in mean["urpo"][0] if k.startswith("gold_") and
                                                not k.endswith(("_min", "_max"))),
           "curves": mean, "per_seed": runs, "judge_rankings": judged, "static": static,
           "arm_wall_s": {k: round(v, 1) for k, v in wall.items()}, "wall_s": round(time.time() - t0, 1)}
    plot(res, os.path.join(out_dir, "urpo.png"))
    write(out_dir, "urpo", res, report(res))
    return res


@hydra.main(config_path="../conf", config_name="urpo", version_base="1.3")
def main(cfg: DictConfig) -> None:
    cli(study, report, cfg, "urpo.json, urpo.png, report.md")


if __name__ == "__main__":
    main()
