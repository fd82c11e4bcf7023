"""GitHub's published OpenAPI description (npm ``@octokit/openapi``), cut to what is used.

Fetched by ``make test-data`` into the cache dir. The whole description is 13 MB and
takes openapi-core seconds and hundreds of MB to load, so :func:`description` keeps only
the paths asked for and the components they reference.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson

from deploy.npm import npm_pack

PACKAGE = "@octokit/openapi"
VERSION = "23.0.2"
MEMBER = "package/generated/api.github.com.json"


def spec_path(cache_dir: Path) -> Path:
    return cache_dir / f"octokit-openapi-{VERSION}" / MEMBER


def fetch(cache_dir: Path) -> Path:
    path = spec_path(cache_dir)
    if not path.exists():
        npm_pack(PACKAGE, VERSION, path.parents[2], keep=lambda name: name == MEMBER)
    return path


def description(cache_dir: Path, paths: dict[str, set[str]]) -> dict[str, Any]:
    """The description with only ``paths`` ({path: {methods}}) and what they reference."""
    full = orjson.loads(fetch(cache_dir).read_bytes())
    kept_paths = {
        path: {m: op for m, op in full["paths"][path].items() if m in methods or m == "parameters"}
        for path, methods in paths.items()
    }
    components: dict[str, dict[str, Any]] = {}
    pending = _refs(kept_paths)
    seen: set[str] = set()
    while pending:
        ref = pending.pop()
        if ref in seen:
            continue
        seen.add(ref)
        _, _, kind, name = ref.split("/", 3)  # "#/components/<kind>/<name>"
        node = full["components"][kind][name]
        components.setdefault(kind, {})[name] = node
        pending |= _refs(node)
    return {
        "openapi": full["openapi"],
        "info": full["info"],
        "servers": full["servers"],
        "paths": kept_paths,
        "components": components,
    }


def _refs(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                found.add(value)
            else:
                found |= _refs(value)
    elif isinstance(node, list):
        for item in node:
            found |= _refs(item)
    return found


if __name__ == "__main__":
    from schemas.settings import Settings

    print(fetch(Path(sys.argv[1]) if len(sys.argv) > 1 else Settings().cache_dir))
