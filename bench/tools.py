"""Find the external programs the benchmark needs, installing Debian's packages when missing."""

from __future__ import annotations

import os
import shutil
import subprocess

__all__ = ["TOOLS", "ensure_tools", "version_of"]

TOOLS = {
    "wrk": "wrk",
    "redis-server": "redis-server",
    "redis-cli": "redis-tools",
    "redis-benchmark": "redis-tools",
}
"""program -> Debian package that ships it."""

_updated = False


def _apt_install(packages: list[str]) -> None:
    global _updated
    if shutil.which("apt-get") is None:
        raise RuntimeError(f"missing {', '.join(packages)} and there is no apt-get to install them")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _updated:
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env, capture_output=True, timeout=600)
        _updated = True
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
        check=True, env=env, capture_output=True, timeout=900,
    )


def ensure_tools(log: object = print) -> dict[str, str]:
    """Absolute paths of every program in :data:`TOOLS`; apt-get installs missing ones."""
    missing = sorted({pkg for prog, pkg in TOOLS.items() if shutil.which(prog) is None})
    if missing:
        log(f"installing {' '.join(missing)} with apt-get")  # type: ignore[operator]
        _apt_install(missing)
    paths: dict[str, str] = {}
    for prog in TOOLS:
        found = shutil.which(prog)
        if found is None:
            raise RuntimeError(f"{prog} not found even after installing {TOOLS[prog]}")
        paths[prog] = found
    return paths


def version_of(program: str, *args: str) -> str:
    try:
        result = subprocess.run([program, *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (result.stdout or result.stderr).strip().splitlines()
    return text[0] if text else "unknown"
