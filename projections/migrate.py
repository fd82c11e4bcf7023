"""Applying the schema: versioned migrations once each, then the metric views."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from clickhouse_connect.driver.client import Client

from projections.schema import MIGRATIONS, MIGRATIONS_TABLE
from projections.views import view_statements

log = logging.getLogger(__name__)


def applied_versions(client: Client) -> set[int]:
    client.command(MIGRATIONS_TABLE)
    return {
        row[0] for row in client.query("SELECT version FROM schema_migrations FINAL").result_rows
    }


def migrate(client: Client, production_pattern: str, incident_pattern: str) -> list[int]:
    """Apply pending migrations in order, then (re)create the views; returns new versions."""
    done = applied_versions(client)
    applied = []
    for migration in MIGRATIONS:
        if migration.version in done:
            continue
        for statement in migration.statements:
            client.command(statement)
        client.insert(
            "schema_migrations",
            [[migration.version, migration.name, datetime.now(UTC)]],
            column_names=["version", "name", "applied_at"],
        )
        log.info("applied migration %d (%s)", migration.version, migration.name)
        applied.append(migration.version)
    for statement in view_statements(production_pattern, incident_pattern):
        client.command(statement)
    return applied
