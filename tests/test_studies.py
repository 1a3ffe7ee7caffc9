"""The studies end to end on a tiny budget: every output file with the expected keys."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_overopt_smoke(tmp_path):
    out = subprocess.run([sys.executable, "-m", "analysis.overopt", "world=arith_small", "algo.steps=3", "eval.every=1",
                          "eval.prompts=8", "algo.prompts_per_step=4", "algo.samples_per_prompt=4",
                          "study.bon.n_max=8", f"hydra.run.dir={tmp_path}"],
                         capture_output=True, text=True, timeout=900, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads((tmp_path / "overopt.json").read_text())
    assert [p["n"] for p in res["points"]["bon"]] == [1, 2, 4, 8]
    assert [p["step"] for p in res["points"]["rl"]] == [0, 1, 2, 3]
    for kind in ("bon", "rl"):
        first = res["points"][kind][0]
        assert first["gold"] == 0.0 and first["proxy"] == 0.0 and first["d"] == 0.0  # relative to the initial policy
        assert {"alpha", "beta", "d_peak", "r2"} <= set(res["fits"][kind]) or "error" in res["fits"][kind]
    assert res["points"]["bon"][-1]["kl"] == 2.0794415416798357 - 7 / 8
    assert (tmp_path / "overopt.png").stat().st_size > 10_000
    assert "| curve | alpha | beta |" in (tmp_path / "report.md").read_text()
    page = (tmp_path / "report.html").read_text()
    assert "<table>" in page and ">alpha</th>" in page and "data:image/png;base64," in page


def test_correlation_smoke_and_cache(tmp_path):
    """Three sources on the reduced world with a tiny budget: every output with the expected keys,
    sub-jobs run as Ray tasks, and a second run reuses all nine cached sub-results."""
    args = [sys.executable, "-m", "analysis.correlation", "world=arith_small", "study.sources=[rm_l,cdr,rule]",
            "algo.steps=2", "algo.prompts_per_step=4", "algo.samples_per_prompt=4", "eval.prompts=8", "eval.every=2",
            "study.bon.n=4", "study.n_boot=50", f"cache_dir={tmp_path / 'cache'}"]
    for run_dir in ("a", "b"):
        out = subprocess.run([*args, f"hydra.run.dir={tmp_path / run_dir}"], capture_output=True, text=True,
                             timeout=1200, cwd=REPO)
        assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads((tmp_path / "b" / "correlation.json").read_text())
    assert [r["source"] for r in res["rows"]] == ["rm_l", "cdr", "rule"]
    assert len(res["cached"]) == 9  # the second run computed nothing
    first = json.loads((tmp_path / "a" / "correlation.json").read_text())
    assert first["cached"] == [] and first["rows"] == res["rows"]
    for r in res["rows"]:  # the peak is over the run's evals, the initial one included
        assert r["rl_peak_gain"] >= max(r["rl_gain"], 0.0)
    for gain in ("bon_gain", "rl_gain", "rl_peak_gain"):
        c = res["correlations"][gain]
        assert c["n"] == 3 and {"pearson", "spearman", "kendall"} <= set(c)
    rule = res["rows"][2]
    assert 0.0 <= rule["static"] <= 1.0
    assert (tmp_path / "b" / "correlation.png").stat().st_size > 10_000
    assert "| source | static | BoN gain | RL gain | RL peak gain |" in (tmp_path / "b" / "report.md").read_text()
    page = (tmp_path / "b" / "report.html").read_text()
    assert ">RL peak gain</th>" in page and "data:image/png;base64," in page
