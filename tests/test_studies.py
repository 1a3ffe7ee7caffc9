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
