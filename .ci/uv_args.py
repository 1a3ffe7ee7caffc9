"""pip's configuration (files and PIP_* variables, as `pip config list` reports it) as `uv pip install`
arguments: `make venv` installs with uv (the same pins in ~120 s instead of ~210 s, measured) and uv reads
no pip configuration of its own. Usage: python .ci/uv_args.py  (prints the arguments on one line)."""
import shlex
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

LISTS = {"extra-index-url": "--extra-index-url", "find-links": "--find-links"}
SINGLE = {"index-url": "--index-url", "constraint": "--constraint", "cert": "--cert"}


def pip_config() -> dict[str, str]:
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                         check=True).stdout
    config = {}
    for line in out.splitlines():  # `global.find-links='/opt/wheels'`; later lines (PIP_* variables) win
        key, _, value = line.partition("=")
        config[key.split(".", 1)[-1]] = shlex.split(value)[0] if value else ""
    return config


def present(location: str) -> bool:
    """pip skips an index or find-links path that does not exist (with a warning); uv would fail."""
    if location.startswith("file:"):
        return Path(urlparse(location).path).exists()
    return "://" in location or Path(location).exists()


def uv_args(config: dict[str, str]) -> list[str]:
    args = ["--index-strategy", "unsafe-best-match"]  # pip's: the best version over every index
    for key, flag in LISTS.items():
        args += [a for v in config.get(key, "").split() if present(v) for a in (flag, v)]
    for key, flag in SINGLE.items():
        if config.get(key):
            args += [flag, config[key]]
    if config.get("no-index", "").lower() in ("1", "true", "yes", "on"):
        args.append("--no-index")
    return args


if __name__ == "__main__":
    print(shlex.join(uv_args(pip_config())))
