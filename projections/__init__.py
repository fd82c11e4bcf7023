"""Projections: the ClickHouse read models (DDL migrations, batching sink, metric views).

``schema`` holds the tables as migrations, ``views`` the metric SQL, ``migrate`` applies
both, ``sink`` writes rows in idempotent batches, ``query`` serves read-only SQL.
"""
