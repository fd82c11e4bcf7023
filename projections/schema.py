"""ClickHouse DDL of the insight tables, as versioned migrations.

Every table is a ``ReplacingMergeTree`` whose ORDER BY is the identity of what a row
describes, so a redelivery or a replay writes a row that collapses with the first one
(read with ``FINAL``; DESIGN.md §5). Versioned state (pull requests, issues, runs) uses a
payload timestamp as the version: the newest state wins whatever order events arrive in.
Tables are not partitioned by delivery time: a redelivery days later must land in the
same partition as the original to collapse with it.

``non_replicated_deduplication_window`` lets ClickHouse drop a retried insert that
carries the same ``insert_deduplication_token`` (see :mod:`projections.sink`).
"""

from __future__ import annotations

from dataclasses import dataclass

DEDUP = "SETTINGS non_replicated_deduplication_window = 10000"
TS = "DateTime64(3, 'UTC')"
NTS = f"Nullable({TS})"

# Columns every fact row carries (DESIGN.md §6): where it came from and whose it is.
COMMON = f"""
    delivery_id String,
    received_at {TS},
    repository LowCardinality(String),
    repository_id UInt64,
    organization LowCardinality(String),
    sender_id UInt64"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "insight tables",
        (
            f"""CREATE TABLE IF NOT EXISTS deliveries (
    delivery_id String,
    hook_id String,
    event LowCardinality(String),
    action LowCardinality(String),
    received_at {TS},
    repository LowCardinality(String),
    repository_id UInt64,
    organization LowCardinality(String),
    sender_id UInt64,
    sender_login String,
    installation_id UInt64,
    payload String CODEC(ZSTD(3))
) ENGINE = ReplacingMergeTree ORDER BY (hook_id, delivery_id) {DEDUP}""",
            f"""CREATE TABLE IF NOT EXISTS pull_requests ({COMMON},
    number UInt32,
    pr_id UInt64,
    author_id UInt64,
    author_login String,
    state LowCardinality(String),
    draft UInt8,
    title String,
    created_at {TS},
    updated_at {TS},
    closed_at {NTS},
    merged_at {NTS},
    merge_commit_sha String,
    base_ref String,
    base_sha String,
    head_ref String,
    head_sha String,
    additions UInt32,
    deletions UInt32,
    changed_files UInt32,
    labels Array(String)
) ENGINE = ReplacingMergeTree(updated_at) ORDER BY (repository_id, number) {DEDUP}""",
            f"""CREATE TABLE IF NOT EXISTS pull_request_reviews ({COMMON},
    review_id UInt64,
    pr_number UInt32,
    pr_author_id UInt64,
    reviewer_id UInt64,
    reviewer_login String,
    reviewer_is_bot UInt8,
    state LowCardinality(String),
    submitted_at {NTS},
    commit_id String
) ENGINE = ReplacingMergeTree ORDER BY (repository_id, pr_number, review_id) {DEDUP}""",
            f"""CREATE TABLE IF NOT EXISTS commits ({COMMON},
    ref String,
    sha String,
    timestamp {TS},
    pushed_at {TS},
    author_name String,
    author_email String,
    author_login String,
    committer_name String,
    distinct UInt8,
    message String
) ENGINE = ReplacingMergeTree ORDER BY (repository_id, ref, sha) {DEDUP}""",
            f"""CREATE TABLE IF NOT EXISTS deployments ({COMMON},
    deployment_id UInt64,
    sha String,
    ref String,
    task LowCardinality(String),
    environment LowCardinality(String),
    created_at {TS},
    creator_login String
) ENGINE = ReplacingMergeTree ORDER BY (repository_id, deployment_id) {DEDUP}""",
            f"""CREATE TABLE IF NOT EXISTS deployment_statuses ({COMMON},
    status_id UInt64,
    deployment_id UInt64,
    state LowCardinality(String),
    environment LowCardinality(String),
    created_at {TS}
) ENGINE = ReplacingMergeTree ORDER BY (repository_id, deployment_id, status_id) {DEDUP}""",
            f"""CREATE TABLE IF NOT EXISTS workflow_runs ({COMMON},
    run_id UInt64,
    run_attempt UInt32,
    workflow_id UInt64,
    name LowCardinality(String),
    event LowCardinality(String),
    status LowCardinality(String),
    conclusion LowCardinality(String),
    head_branch String,
    head_sha String,
    created_at {TS},
    updated_at {TS},
    run_started_at {NTS}
) ENGINE = ReplacingMergeTree(updated_at) ORDER BY (repository_id, run_id, run_attempt) {DEDUP}""",
            f"""CREATE TABLE IF NOT EXISTS workflow_jobs ({COMMON},
    job_id UInt64,
    run_id UInt64,
    run_attempt UInt32,
    name String,
    status LowCardinality(String),
    conclusion LowCardinality(String),
    head_sha String,
    started_at {NTS},
    completed_at {NTS},
    version {TS}
) ENGINE = ReplacingMergeTree(version) ORDER BY (repository_id, job_id) {DEDUP}""",
            f"""CREATE TABLE IF NOT EXISTS check_runs ({COMMON},
    check_run_id UInt64,
    name String,
    head_sha String,
    status LowCardinality(String),
    conclusion LowCardinality(String),
    started_at {NTS},
    completed_at {NTS},
    check_suite_id UInt64,
    version {TS}
) ENGINE = ReplacingMergeTree(version) ORDER BY (repository_id, check_run_id) {DEDUP}""",
            f"""CREATE TABLE IF NOT EXISTS issues ({COMMON},
    number UInt32,
    issue_id UInt64,
    title String,
    state LowCardinality(String),
    author_login String,
    labels Array(String),
    created_at {TS},
    updated_at {TS},
    closed_at {NTS}
) ENGINE = ReplacingMergeTree(updated_at) ORDER BY (repository_id, number) {DEDUP}""",
            f"""CREATE TABLE IF NOT EXISTS releases ({COMMON},
    release_id UInt64,
    tag_name String,
    name String,
    draft UInt8,
    prerelease UInt8,
    created_at {NTS},
    published_at {NTS},
    author_login String
) ENGINE = ReplacingMergeTree ORDER BY (repository_id, release_id) {DEDUP}""",
            f"""CREATE TABLE IF NOT EXISTS identities (
    github_user_id UInt64,
    github_login String,
    platform_user String,
    linked_at {TS},
    delivery_id String
) ENGINE = ReplacingMergeTree(linked_at) ORDER BY github_user_id {DEDUP}""",
        ),
    ),
    # Version 1's `identities` kept one row per account (a link replaced the last one),
    # and nothing had written to it: it becomes the history of hookstream.identity.
    Migration(
        2,
        "identities as the history of hookstream.identity",
        (
            "DROP TABLE IF EXISTS identities",
            f"""CREATE TABLE identities (
    kind LowCardinality(String),
    event_id String,
    at {TS},
    version UInt64,
    github_user_id UInt64,
    github_login String,
    platform_user String,
    email String,
    role String,
    roles Array(String),
    source LowCardinality(String),
    via LowCardinality(String),
    is_bot UInt8,
    scope String,
    active UInt8,
    claimants Array(String)
) ENGINE = ReplacingMergeTree ORDER BY (kind, github_user_id, event_id) {DEDUP}""",
        ),
    ),
)

MIGRATIONS_TABLE = f"""CREATE TABLE IF NOT EXISTS schema_migrations (
    version UInt32,
    name String,
    applied_at {TS}
) ENGINE = ReplacingMergeTree ORDER BY version"""
