"""Rebuilding the insight tables beside the live ones, then swapping them in.

A replay writes into ``<table>__replay`` (created ``AS <table>``: same columns, engine
and keys) while queries keep reading the live tables; when the replay has read up to its
horizon, each pair is exchanged (``EXCHANGE TABLES``, atomic per table) and the old data,
now under the ``__replay`` name, is dropped. In embedded mode every query and the whole
swap run one call at a time where the engine lives (the sink's thread, or the insights
worker's engine process), so no query runs between two exchanges.
"""

from __future__ import annotations

import re

from projections.schema import MIGRATIONS

SUFFIX = "__replay"
_CREATED = re.compile(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)")


def fact_tables() -> list[str]:
    """The tables the insights worker writes, as the migrations leave them."""
    names: list[str] = []
    for migration in MIGRATIONS:
        for statement in migration.statements:
            match = _CREATED.match(statement.strip())
            if match and match.group(1) not in names:
                names.append(match.group(1))
    return names


def prepare_statements(fresh: bool) -> list[str]:
    """Create the replay tables; a fresh replay first drops what an earlier one left."""
    tables = fact_tables()
    drops = [f"DROP TABLE IF EXISTS {t}{SUFFIX}" for t in tables] if fresh else []
    return drops + [f"CREATE TABLE IF NOT EXISTS {t}{SUFFIX} AS {t}" for t in tables]


def swap_statements() -> list[str]:
    tables = fact_tables()
    return [f"EXCHANGE TABLES {t} AND {t}{SUFFIX}" for t in tables] + [
        f"DROP TABLE {t}{SUFFIX}" for t in tables
    ]
