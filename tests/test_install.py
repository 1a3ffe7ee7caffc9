"""`make venv`'s uv install is told pip's configuration (.ci/uv_args.py): which flags a pip setting becomes."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("uv_args", ROOT / ".ci" / "uv_args.py")
uv_args = importlib.util.module_from_spec(spec)
spec.loader.exec_module(uv_args)


def test_pip_settings_become_uv_flags_and_missing_local_indexes_are_left_out(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    config = {"index-url": "https://pypi.example/simple", "constraint": "/etc/c.txt", "no-index": "true",
              "extra-index-url": f"file://{tmp_path}/missing https://mirror.example/simple file://{tmp_path}",
              "find-links": f"{wheels} {tmp_path}/nowhere", "default-timeout": "180"}
    assert uv_args.uv_args(config) == [
        "--index-strategy", "unsafe-best-match",
        "--extra-index-url", "https://mirror.example/simple", "--extra-index-url", f"file://{tmp_path}",
        "--find-links", str(wheels),
        "--index-url", "https://pypi.example/simple", "--constraint", "/etc/c.txt", "--no-index"]
    assert uv_args.uv_args({}) == ["--index-strategy", "unsafe-best-match"]


def test_pips_own_config_file_and_variables_are_read_the_variables_winning(tmp_path):
    conf = tmp_path / "pip.conf"
    conf.write_text(f"[global]\nfind-links = {tmp_path}\nextra-index-url = https://a.example/simple https://b.example/simple\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env |= {"PIP_CONFIG_FILE": str(conf), "PIP_CONSTRAINT": "/etc/c.txt", "PIP_FIND_LINKS": str(ROOT),
            "XDG_CONFIG_HOME": str(tmp_path / "none"), "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, str(ROOT / ".ci" / "uv_args.py")], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    pairs = list(zip(out[::2], out[1::2]))
    # the machine's own pip.conf (/etc/pip.conf, read too) may add settings that this file does not override
    assert pairs[0] == ("--index-strategy", "unsafe-best-match")
    assert [p for p in pairs if p[0] in ("--extra-index-url", "--find-links", "--constraint")] == [
        ("--extra-index-url", "https://a.example/simple"), ("--extra-index-url", "https://b.example/simple"),
        ("--find-links", str(ROOT)), ("--constraint", "/etc/c.txt")]
