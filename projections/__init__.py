"""Projections: the ClickHouse read models (DDL migrations, batching sink, metric views)."""
