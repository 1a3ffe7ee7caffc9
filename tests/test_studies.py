"""The studies: end to end on a tiny budget with two seeds (heavy: run under `flock /tmp/heavy.lock`),
and their reports on hand-made results (light)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


def lstsq_by_hand(form, d, r):
    """alpha, beta of r = alpha x1 - beta x2 (x1 = d, x2 = d^2 or d log d) from the 2x2 normal
    equations solved by Cramer's rule: alpha S11 - beta S12 = T1, alpha S12 - beta S22 = T2."""
    pts = [(x, y) for x, y in zip(d, r) if x > 0]
    x2 = [x * x if form == "bon" else x * math.log(x) for x, _ in pts]
    s11 = sum(x * x for x, _ in pts)
    s12 = sum(x * b for (x, _), b in zip(pts, x2))
    s22 = sum(b * b for b in x2)
    t1 = sum(x * y for x, y in pts)
    t2 = sum(b * y for (_, y), b in zip(pts, x2))
    det = -s11 * s22 + s12 * s12
    return (-t1 * s22 + s12 * t2) / det, (s11 * t2 - s12 * t1) / det


def eval_records(run_dir: Path) -> list[dict]:
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "eval/reward_gold" in r]


def test_overopt_smoke_two_seeds(tmp_path):
    out = subprocess.run([sys.executable, "-m", "analysis.overopt", "world=arith_small", "algo.steps=3", "eval.every=1",
                          "eval.prompts=8", "algo.prompts_per_step=4", "algo.samples_per_prompt=4",
                          "study.bon.n_max=8", "study.seeds=[0,1]", f"hydra.run.dir={tmp_path}"],
                         capture_output=True, text=True, timeout=1200, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    text = (tmp_path / "overopt.json").read_text()
    res = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert res["seeds"] == [0, 1] and [s["seed"] for s in res["per_seed"]] == [0, 1]
    curves = [json.loads((tmp_path / f"seed_{s}" / "bon" / "bon_curve.json").read_text()) for s in (0, 1)]
    evals = [eval_records(tmp_path / f"seed_{s}" / "rl") for s in (0, 1)]
    for s, seed in enumerate(res["per_seed"]):  # per-seed points, each from its own run
        assert [p["n"] for p in seed["points"]["bon"]] == [r["n"] for r in curves[s]] == [1, 2, 4, 8]
        assert [p["step"] for p in seed["points"]["rl"]] == [r["step"] for r in evals[s]] == [0, 1, 2, 3]
    # the seeds are different runs (different eval prompts and samples), not one run twice
    assert [r["reward/gold"] for r in curves[0]] != [r["reward/gold"] for r in curves[1]]
    # the mean rows are the means over the seeds' run files, read back here on their own
    for i, p in enumerate(res["points"]["bon"]):
        gold = [c[i]["reward/gold"] - c[0]["reward/gold"] for c in curves]
        assert p["gold"] == pytest.approx((gold[0] + gold[1]) / 2, abs=1e-12)
        assert p["gold_min"] == pytest.approx(min(gold), abs=1e-12) and p["gold_max"] == pytest.approx(max(gold), abs=1e-12)
        assert p["kl_bound"] == pytest.approx(math.log(p["n"]) - (p["n"] - 1) / p["n"])
        if res["bon_kl"] == "exact":  # the tie-aware KL never exceeds the tie-free bound
            assert p["kl"] <= p["kl_bound"] + 1e-9
            assert p["kl"] == pytest.approx(sum(c[i]["kl/bon_exact"] for c in curves) / 2, abs=1e-12)
        else:
            assert p["kl"] == p["kl_bound"]
    assert res["points"]["bon"][-1]["kl_bound"] == pytest.approx(2.0794415416798357 - 7 / 8)  # log 8 - 7/8
    for i, p in enumerate(res["points"]["rl"]):
        gold = [e[i]["eval/reward_gold"] - e[0]["eval/reward_gold"] for e in evals]
        assert p["gold"] == pytest.approx((gold[0] + gold[1]) / 2, abs=1e-12)
        kl = [e[i]["eval/kl"] for e in evals]
        assert p["kl"] == pytest.approx((kl[0] + kl[1]) / 2, abs=1e-12)
    for kind in ("bon", "rl"):
        first = res["points"][kind][0]
        assert first["gold"] == 0.0 and first["proxy"] == 0.0 and first["d"] == 0.0  # relative to the initial policy
        for fitted, pts in [(res["fits"][kind], res["points"][kind])] + [(s["fits"][kind], s["points"][kind])
                                                                           for s in res["per_seed"]]:
            d, g = [p["d"] for p in pts], [p["gold"] for p in pts]
            if sum(x > 0 for x in d) < 2:  # k1 KL can sit at <= 0 on a 3-step run: then no fit, and it says why
                assert "at least 2 points" in fitted["error"]
                continue
            alpha, beta = lstsq_by_hand(kind, d, g)
            assert fitted["alpha"] == pytest.approx(alpha, rel=1e-6, abs=1e-9)
            assert fitted["beta"] == pytest.approx(beta, rel=1e-6, abs=1e-9)
        alphas = [s["fits"][kind]["alpha"] for s in res["per_seed"] if "alpha" in s["fits"][kind]]
        if alphas:
            assert res["fit_spread"][kind]["alpha"]["mean"] == pytest.approx(sum(alphas) / len(alphas))
    assert (tmp_path / "overopt.png").stat().st_size > 10_000
    md = (tmp_path / "report.md").read_text()
    assert "| curve | alpha | beta |" in md and "## Fits over 2 seeds" in md and "| seed 1 rl |" in md
    page = (tmp_path / "report.html").read_text()
    assert "<table>" in page and ">alpha</th>" in page and "data:image/png;base64," in page


def test_urpo_study_smoke_two_seeds(tmp_path):
    """analysis.urpo end to end on a tiny budget: each curve point is the mean of the two seeds' run
    files, read back here; the comparison arms ran GRPO on their rewards; the static rows come from
    each seed's last URPO checkpoint."""
    out = subprocess.run([sys.executable, "-m", "analysis.urpo", "world=arith_small", "algo.steps=2", "eval.every=1",
                          "eval.prompts=8", "algo.prompts_per_step=6", "algo.urpo.eval_rankings=12",
                          "study.seeds=[0,1]", "study.bench_limit=12", f"hydra.run.dir={tmp_path}"],
                         capture_output=True, text=True, timeout=1200, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads((tmp_path / "urpo.json").read_text())
    assert res["seeds"] == [0, 1] and res["kinds"] == ["add", "open"]
    assert list(res["curves"]) == ["urpo", "judge", "rule_plus_judge"]
    for arm in res["curves"]:
        evals = [eval_records(tmp_path / f"seed_{s}" / arm) for s in (0, 1)]
        assert [p["step"] for p in res["curves"][arm]] == [r["step"] for r in evals[0]] == [0, 1, 2]
        keys = ["gold_add", "gold_open"] + (["referee_accuracy", "referee_parse_rate"] if arm == "urpo" else [])
        for i, p in enumerate(res["curves"][arm]):
            for key in keys:
                vals = [e[i][f"eval/{key}"] for e in evals]
                assert p[key] == pytest.approx(np.mean(vals), abs=1e-12), (arm, key)
                assert (p[f"{key}_min"], p[f"{key}_max"]) == (min(vals), max(vals))
    assert "referee_accuracy" not in res["curves"]["judge"][0]
    for s in (0, 1):
        for arm in ("judge", "rule_plus_judge"):
            summary = json.loads((tmp_path / f"seed_{s}" / arm / "summary.json").read_text())
            assert (summary["algo"], summary["reward"], summary["steps"]) == ("grpo", arm, 2)
        assert (tmp_path / f"seed_{s}" / "urpo" / "checkpoints" / "step_000002" / "policy" / "tokenizer.json").exists()
        # the joint mix (verifiable : ranking : open = 1 : 1 : 1 of 6 prompts): every kind scored at every step
        steps = [json.loads(x) for x in (tmp_path / f"seed_{s}" / "urpo" / "metrics.jsonl").read_text().splitlines()]
        steps = [m for m in steps if "reward/ranking" in m]
        assert [m["step"] for m in steps] == [1, 2]
        for key in ("reward/verifiable", "reward/ranking", "gold/verifiable", "gold/open", "referee/ranking_parse_rate",
                    "referee/open_parse_rate"):
            assert all(np.isfinite(m[key]) for m in steps), key
        assert not (tmp_path / f"seed_{s}" / "judge" / "checkpoints").exists()
    st = res["static"]
    assert [v["protocol"] for v in st["urpo_final"]] == ["both_orders"] * 2 and st["judge"]["protocol"] == "ratings"
    for v in st["urpo_final"] + [st["referee_start"], st["judge"]]:
        assert 0.0 <= v["accuracy"] <= 1.0 and sum(v["per_subset"].values()) > 0
    assert 0.0 <= st["judge"]["pointwise"] <= 1.0 and "pointwise" not in st["referee_start"]
    assert len(res["judge_rankings"]["per_seed"]) == 2
    assert res["judge_rankings"]["accuracy"] == pytest.approx(np.mean(res["judge_rankings"]["per_seed"]))
    assert (tmp_path / "urpo.png").stat().st_size > 10_000
    report = (tmp_path / "report.md").read_text()
    assert "# URPO vs a separate judge (arith_small world)" in report and "| URPO checkpoint, seed 1 |" in report


def test_correlation_smoke_two_seeds_and_cache(tmp_path):
    """Three sources, two seeds on the reduced world with a tiny budget: static once per source,
    BoN and RL once per (source, seed), gains averaged over the seeds, every sub-job in a Ray actor,
    and a second run computes nothing."""
    studies = tmp_path / "studies"  # its own sub-result cache; the reduced zoo is the suite's (built once)
    args = [sys.executable, "-m", "analysis.correlation", "world=arith_small", "study.sources=[rm_l,cdr,rule]",
            "study.seeds=[0,1]", "algo.steps=2", "algo.prompts_per_step=4", "algo.samples_per_prompt=4",
            "eval.prompts=8", "eval.every=2", "study.bon.n=4", f"study.cache={studies}"]
    # the runs' temp dir of their own, to see what the engines leave there (Ray's stays where it was)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = os.environ | {"TMPDIR": str(tmp), "RAY_TMPDIR": os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"}
    for run_dir in ("a", "b"):
        out = subprocess.run([*args, f"hydra.run.dir={tmp_path / run_dir}"], capture_output=True, text=True,
                             timeout=1800, cwd=REPO, env=env)
        assert out.returncode == 0, out.stderr[-3000:]
    # the sub-jobs' vLLM engines were closed, not killed with Ray (which leaves vllm_dist_<id> files)
    assert not list(tmp.glob("vllm_dist_*"))
    res = json.loads((tmp_path / "b" / "correlation.json").read_text())
    first = json.loads((tmp_path / "a" / "correlation.json").read_text())
    assert res["seeds"] == [0, 1] and [r["source"] for r in res["rows"]] == ["rm_l", "cdr", "rule"]
    assert first["cached"] == [] and len(res["cached"]) == 3 + 3 * 2 * 2  # the second run computed nothing
    assert first["rows"] == res["rows"]
    for r in res["rows"]:
        assert len(list(studies.glob(f"static-{r['source']}-*.json"))) == 1  # static does not depend on the seed
        for kind, gain in (("bon", "bon_gain"), ("rl", "rl_gain")):
            files = sorted(studies.glob(f"{kind}-{r['source']}-*.json"))
            assert len(files) == 2  # one per seed
            vals = [json.loads(f.read_text())["value"] for f in files]
            assert r[gain] == pytest.approx((vals[0] + vals[1]) / 2, abs=1e-12)
            assert r[f"{gain}_sd"] == pytest.approx(abs(vals[0] - vals[1]) / math.sqrt(2), abs=1e-12)  # sd of two, ddof 1
            assert sorted(r["per_seed"][gain]) == sorted(vals)
        for peak, final in zip(r["per_seed"]["rl_peak_gain"], r["per_seed"]["rl_gain"]):
            assert peak >= max(final, 0.0)  # the peak is over the run's evals, the initial one included
    assert any(len(set(r["per_seed"]["bon_gain"])) == 2 for r in res["rows"])  # the seeds are different runs
    for gain in ("bon_gain", "rl_gain", "rl_peak_gain"):
        c = res["correlations"][gain]
        assert c["n"] == 3
        x, y = np.array([r["static"] for r in res["rows"]]), np.array([r[gain] for r in res["rows"]])
        if np.ptp(x) > 0 and np.ptp(y) > 0:  # correlations of the mean gains, by the textbook formula
            dx, dy = x - x.mean(), y - y.mean()
            assert c["pearson"]["value"] == pytest.approx((dx @ dy) / math.sqrt((dx @ dx) * (dy @ dy)))
        for k in ("pearson", "spearman", "kendall"):  # n = 3 leaves 1/sqrt(n - 3) undefined: no interval
            assert (c[k]["ci_low"], c[k]["ci_high"], c[k]["width"]) == (-1.0, 1.0, 2.0)
    md = (tmp_path / "b" / "report.md").read_text()
    assert "| source | static | BoN gain | RL gain | RL peak gain |" in md
    assert "**bon_gain: n = 3 sources are too few to conclude**" in md and " ± " in md
    assert (tmp_path / "b" / "correlation.png").stat().st_size > 10_000
    page = (tmp_path / "b" / "report.html").read_text()
    assert ">RL peak gain</th>" in page and "data:image/png;base64," in page


def _overopt_result(seeds):
    """A hand-made overopt result: BoN on R = d (0.1 - 0.03 d), RL on the issue's R = d (1 - 1e-3 log d)."""
    from analysis import overopt

    per_seed = []
    for s in seeds:
        bon, rl = [], []
        for n in (1, 2, 4, 8):
            kl = math.log(n) - (n - 1) / n
            d = math.sqrt(kl)
            gold = d * (0.1 - 0.03 * d) + (0.001 * s if n > 1 else 0.0)  # the seeds differ a little
            bon.append({"n": n, "kl": kl, "kl_bound": kl, "d": d, "gold": gold})
        for t in range(4):
            d = math.sqrt(0.1 * t)
            rl.append({"step": t, "kl": 0.1 * t, "d": d, "gold": d * (1 - 1e-3 * math.log(d)) if d else 0.0})
        for p in bon + rl:
            p |= {"proxy": p["d"], "gold_abs": 0.5 + p["gold"], "proxy_abs": 1 + p["d"]}
        pts = {"bon": bon, "rl": rl}
        per_seed.append({"seed": s, "points": pts, "fits": overopt.fits(pts)})
    points = {k: overopt.mean_points([s["points"][k] for s in per_seed], k) for k in ("bon", "rl")}
    return {"proxy": "rm_l", "world": "w", "algo": "grpo", "rl_steps": 3, "kl_coef": 0.0, "kl_placement": "loss",
            "bon_n_max": 8, "eval_prompts": 8, "seeds": list(seeds), "bon_kl": "exact", "points": points,
            "fits": overopt.fits(points), "fit_spread": overopt.fit_spread(per_seed), "per_seed": per_seed, "wall_s": 0.0}


def test_overopt_report_puts_an_unbent_peak_beyond_the_data(tmp_path):
    from analysis import overopt
    from analysis.study import write

    res = _overopt_result([0])
    # RL: d* = exp(1 / 1e-3 - 1) overflows -> inf; BoN: d* = 0.1 / 0.06 = 1.667 > max d sqrt(log 8 - 7/8) = 1.097
    assert res["fits"]["rl"]["d_peak"] == math.inf
    assert res["fits"]["bon"]["d_peak"] == pytest.approx(0.1 / 0.06) and res["fits"]["bon"]["peak_in_data"] is False
    md = overopt.report(res)
    assert "| rl | 1.0000 | 0.0010 | inf (beyond the data) |" in md
    assert "The rl fit's peak d* = inf lies beyond the data" in md and "The bon fit's peak d* = 1.667 lies beyond" in md
    assert "Fits over" not in md and "gold min–max" not in md  # one seed: the report as before seeds existed
    write(str(tmp_path), "overopt", res, md)
    back = json.loads((tmp_path / "overopt.json").read_text(),
                      parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert back["fits"]["rl"]["d_peak"] == "inf" and back["fits"]["rl"]["r_peak"] is None


def test_overopt_mean_points_and_spread_by_hand():
    res = _overopt_result([0, 1, 2])
    # BoN gold at n = 2 per seed: g + 0.000, g + 0.001, g + 0.002 -> mean g + 0.001, min g, max g + 0.002, sd 0.001
    d2 = math.sqrt(math.log(2) - 0.5)
    g = d2 * (0.1 - 0.03 * d2)
    p = res["points"]["bon"][1]
    assert (p["gold"], p["gold_min"], p["gold_max"], p["gold_sd"]) == pytest.approx((g + 0.001, g, g + 0.002, 0.001))
    sp = res["fit_spread"]["rl"]["d_peak"]
    assert sp["n"] == 0 and sp["excluded"] == 3  # every seed's RL peak is at infinity
    from analysis.overopt import report

    md = report(res)
    assert "## Fits over 3 seeds" in md and "| rl | 1.0000 ± 0.0000" in md


def test_mean_points_refuse_misaligned_seeds():
    from analysis.overopt import mean_points

    with pytest.raises(ValueError, match="different step"):
        mean_points([[{"step": 0, "gold": 0.0, "proxy": 0.0}], [{"step": 1, "gold": 0.0, "proxy": 0.0}]], "rl")


def test_seeds():
    from omegaconf import OmegaConf

    from analysis.study import seeds

    assert seeds(OmegaConf.create({"seed": 5, "study": {"seeds": None}})) == [5]  # no list: the run's own seed
    assert seeds(OmegaConf.create({"seed": 5, "study": {"seeds": [0, 2]}})) == [0, 2]
    with pytest.raises(ValueError, match="repeated"):
        seeds(OmegaConf.create({"seed": 0, "study": {"seeds": [1, 1]}}))


def test_static_metric_walks_nested_scores_and_names_what_exists():
    from analysis.correlation import static_metric

    res = {"bench": "rm_bench", "scores": {"chat": {"hard": 0.25, "matrix": [[1]]},
                                           "over_domains_present": {"hard": 0.5, "domains": "chat"}}}
    assert static_metric(res, "over_domains_present/hard") == 0.5
    with pytest.raises(ValueError, match=r"study.static_metric='overall' .* it has: chat/hard, over_domains_present/hard$"):
        static_metric(res, "overall")


def test_correlation_without_rl_uses_static_and_best_of_n_only(tmp_path):
    """study.rl=false (the smol world's study): rows, correlations, report and plot for the BoN
    gain alone, from sub-results given here (gains per seed: means and sd by hand)."""
    from omegaconf import OmegaConf

    from analysis.correlation import analyse, report, scatter

    cfg = OmegaConf.create({"study": {"sources": ["a", "b", "c", "d"], "bench": "llmbar", "rl": False, "static_rows": 48,
                                      "seeds": [0, 1], "bon": {"n": 16}},
                            "seed": 0, "world": {"name": "smol"}, "algo": {"name": "grpo", "steps": 1,
                                                                          "kl": {"coef": 0, "placement": "loss", "estimator": "k3"}}})
    static = {"a": 0.4, "b": 0.5, "c": 0.6, "d": 0.7}
    bon = {"a": (0.0, 0.02), "b": (0.05, 0.03), "c": (0.1, 0.12), "d": (0.2, 0.1)}
    results = {("static", s, None): {"value": v, "wall_s": 1} for s, v in static.items()}
    results |= {("bon", s, k): {"value": bon[s][k], "wall_s": 1} for s in static for k in (0, 1)}
    res = analyse(cfg, results)
    assert list(res["correlations"]) == ["bon_gain"] and res["rl"] is False
    means = [0.01, 0.04, 0.11, 0.15]
    assert [r["bon_gain"] for r in res["rows"]] == pytest.approx(means)
    assert res["rows"][0]["bon_gain_sd"] == pytest.approx(0.02 / math.sqrt(2))
    assert "rl_gain" not in res["rows"][0] and res["rows"][0]["rl_kl"] is None
    x, y = np.array(list(static.values())), np.array(means)
    dx, dy = x - x.mean(), y - y.mean()
    assert res["correlations"]["bon_gain"]["pearson"]["value"] == pytest.approx((dx @ dy) / math.sqrt((dx @ dx) * (dy @ dy)))
    md = report(res | {"wall_s": 1})
    assert "| source | static | BoN gain |\n" in md and "No RL runs" in md and "(48 rows, a seeded sample)" in md
    scatter(res, str(tmp_path / "c.png"))
    assert (tmp_path / "c.png").stat().st_size > 5_000


def test_the_smol_correlation_config_is_the_smol_world_without_rl():
    from omegaconf import OmegaConf

    from worlds.zoo import compose

    cfg = compose("correlation_smol", [])
    assert (cfg.world.name, cfg.task.name, cfg.policy.world) == ("smol", "smol_arith", "smol")
    assert cfg.study.rl is False and cfg.study.static_rows == 48 and cfg.study.bon.n == 16
    assert all(OmegaConf.load(REPO / "conf" / "reward" / f"{s}.yaml").world == "smol" for s in cfg.study.sources)
