"""Fetching a pinned npm package's files with ``npm pack`` (no ``node_modules``)."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

from schemas.errors import HookstreamError


class NpmError(HookstreamError):
    pass


def npm_pack(
    package: str,
    version: str,
    target: Path,
    keep: Callable[[str], bool] = lambda name: True,
) -> Path:
    """Unpack ``package@version`` into ``target`` (its files under ``package/``).

    ``keep`` chooses the members to extract, so a large package costs only what is used.
    """
    npm = shutil.which("npm")
    if npm is None:
        raise NpmError(f"npm is needed to fetch {package} (npm pack)")
    target.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [npm, "pack", f"{package}@{version}", "--pack-destination", str(target), "--silent"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise NpmError(f"npm pack {package}@{version} failed: {result.stderr.strip()}")
    tarball = target / result.stdout.strip().splitlines()[-1]
    with tarfile.open(tarball) as tar:
        members = [m for m in tar.getmembers() if keep(m.name)]
        tar.extractall(target, members=members, filter="data")
    tarball.unlink()
    return target
