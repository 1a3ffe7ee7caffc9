"""What the two studies (overopt, correlation) share: reading a config group's file, the seeds to
run, writing the results JSON and the markdown report, and the Hydra entry's error handling."""
from __future__ import annotations

import json
import math
import os
import sys

import hydra

from rl.logger import write_atomic

CONF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")


def conf_file(group: str, name: str) -> str:
    """conf/<group>/<name>.yaml (the top-level conf/<name>.yaml when group is empty)."""
    path = os.path.join(CONF, group, f"{name}.yaml")
    if not os.path.exists(path):
        raise ValueError(f"no config {group + '=' if group else ''}{name} ({path})")
    return path


def seeds(cfg) -> list[int]:
    """`study.seeds`, or [`seed`] when it is null or empty (one run, as before seeds existed)."""
    out = [int(s) for s in cfg.study.get("seeds") or [cfg.seed]]
    if len(set(out)) != len(out):
        raise ValueError(f"study.seeds has a repeated seed: {out}")
    return out


def finite_json(obj):
    """`obj` with every inf / -inf / nan float written as the string "inf" / "-inf" / "nan":
    json.dumps would write Infinity and NaN, which strict JSON parsers reject."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def write(out_dir: str, name: str, res: dict, report: str) -> None:
    """<name>.json, report.md and report.html (the report with <name>.png inlined: one file to
    mail or open in a browser), each written aside and renamed (nothing half-written)."""
    files = ((f"{name}.json", json.dumps(finite_json(res), indent=2, allow_nan=False)), ("report.md", report),
             ("report.html", html(report, os.path.join(out_dir, f"{name}.png"))))
    for file, text in files:
        write_atomic(os.path.join(out_dir, file), text)


def html(report: str, png: str) -> str:
    import base64

    import markdown

    body = markdown.markdown(report, extensions=["tables"])
    if os.path.exists(png):
        with open(png, "rb") as f:
            body += f'\n<p><img alt="plot" style="max-width:100%" src="data:image/png;base64,{base64.b64encode(f.read()).decode()}"></p>'
    style = "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}" \
            "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
    return f"<!doctype html><html><head><meta charset='utf-8'><style>{style}</style></head><body>\n{body}\n</body></html>\n"


def cli(study, report, cfg, outputs: str, cleanup=None) -> None:
    """Run `study(cfg, out_dir)` in Hydra's run dir; a ValueError is one line on stderr, exit 2."""
    out_dir = hydra.core.hydra_config.HydraConfig.get().runtime.output_dir
    try:
        res = study(cfg, out_dir)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    finally:
        if cleanup:
            cleanup()
    print(report(res))
    print(f"outputs: {out_dir}/{outputs}")
