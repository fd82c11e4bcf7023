"""The community corpus of real GitHub payloads: npm package ``@octokit/webhooks-examples``.

Fetched once with ``npm pack`` (pinned version) into the cache dir and never committed.
Each example gets a name users can type: ``<event>.<action>`` (``<event>`` for events
without actions), with ``#2``, ``#3``… for the further examples of the same name.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from deploy.npm import NpmError, npm_pack
from schemas.errors import HookstreamError

PACKAGE = "@octokit/webhooks-examples"
VERSION = "7.6.1"


class CorpusError(HookstreamError):
    pass


@dataclass(frozen=True)
class Example:
    name: str
    event: str
    action: str | None
    payload: dict[str, Any]

    @property
    def body(self) -> bytes:
        """The payload as GitHub sends it: compact JSON, UTF-8."""
        return orjson.dumps(self.payload)


def corpus_dir(cache_dir: Path) -> Path:
    return cache_dir / f"webhooks-examples-{VERSION}"


def fetch(cache_dir: Path) -> Path:
    """Download and unpack the pinned corpus unless it is there already."""
    target = corpus_dir(cache_dir)
    if (target / "package" / "api.github.com" / "index.json").exists():
        return target
    try:
        return npm_pack(PACKAGE, VERSION, target)
    except NpmError as exc:
        raise CorpusError(str(exc)) from None


@cache
def load(cache_dir: Path, flavour: str = "api.github.com") -> tuple[Example, ...]:
    """Every example of one flavour of GitHub (api.github.com, or ghes-3x)."""
    index = corpus_dir(cache_dir) / "package" / flavour / "index.json"
    if not index.exists():
        raise CorpusError(
            f"the example corpus is not at {index}; run `make test-data` "
            "(or `python -m deploy.corpus`) to fetch it"
        )
    examples: list[Example] = []
    seen: dict[str, int] = {}
    for webhook in orjson.loads(index.read_bytes()):
        for payload in webhook["examples"]:
            action = payload.get("action")
            base = f"{webhook['name']}.{action}" if isinstance(action, str) else webhook["name"]
            seen[base] = seen.get(base, 0) + 1
            name = base if seen[base] == 1 else f"{base}#{seen[base]}"
            examples.append(Example(name, webhook["name"], action, payload))
    return tuple(examples)


def find(cache_dir: Path, name: str) -> Example:
    examples = load(cache_dir)
    for example in examples:
        if example.name == name:
            return example
    close = sorted(e.name for e in examples if e.name.startswith(name.split(".")[0]))
    hint = f"; examples of that event: {', '.join(close)}" if close else ""
    raise CorpusError(f"no example named {name!r}{hint}")


if __name__ == "__main__":
    from schemas.settings import Settings

    try:
        print(fetch(Settings().cache_dir))
    except CorpusError as exc:
        sys.exit(str(exc))
