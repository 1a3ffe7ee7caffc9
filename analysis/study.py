"""What the two studies (overopt, correlation) share: reading a config group's file, writing the
results JSON and the markdown report, and the Hydra entry's error handling."""
from __future__ import annotations

import json
import os
import sys

import hydra

CONF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")


def conf_file(group: str, name: str) -> str:
    """conf/<group>/<name>.yaml (the top-level conf/<name>.yaml when group is empty)."""
    path = os.path.join(CONF, group, f"{name}.yaml")
    if not os.path.exists(path):
        raise ValueError(f"no config {group + '=' if group else ''}{name} ({path})")
    return path


def write(out_dir: str, name: str, res: dict, report: str) -> None:
    """<name>.json and report.md, each written aside and renamed (nothing half-written)."""
    for file, text in ((f"{name}.json", json.dumps(res, indent=2)), ("report.md", report)):
        path = os.path.join(out_dir, file)
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)


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
