"""Settings: every knob hookstream reads, from ``HOOKSTREAM_*`` environment variables.

The names and defaults of DESIGN.md §4 are a contract; the rest are tuning knobs with
defaults that serve ``make run`` on one machine.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024

# Default metrics port of each processor's worker (HOOKSTREAM_WORKER_METRICS_PORT overrides).
WORKER_METRICS_PORTS = {"insights": 9181, "triggers": 9182, "checks": 9183, "identity": 9184}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HOOKSTREAM_", frozen=True, extra="ignore")

    data_dir: Path = Path("./.hookstream")
    log_level: str = Field(
        default="INFO", description="INFO logs one line per delivery; WARNING only problems."
    )
    cache_dir: Path = Field(
        default=Path("./.cache"),
        description="Where downloaded artifacts live: the Kafka jars and the example corpus.",
    )

    # --- Kafka ---------------------------------------------------------------------------
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_heap: str = "512m"
    events_topic: str = "github.events"
    events_partitions: int = Field(default=6, ge=1)
    events_retention_ms: int = Field(
        default=-1, description="-1 keeps the log forever: it is the source of truth."
    )
    kafka_replication_factor: int = Field(default=1, ge=1)
    kafka_linger_ms: int = Field(
        default=2,
        ge=0,
        description="How long the producer waits to fill a batch; trades latency for throughput.",
    )

    kafka_session_timeout_s: float = Field(
        default=45.0,
        ge=6.0,
        description="How long a crashed worker keeps its partitions before the group moves "
        "them (Kafka's session.timeout.ms; the broker allows 6 s to 30 min).",
    )

    # --- ingress -------------------------------------------------------------------------
    webhook_secrets: SecretStr = SecretStr("")
    ingress_host: str = "127.0.0.1"
    ingress_port: int = 8080
    ingress_workers: int = Field(
        default=1, ge=1, description="Ingress processes sharing the port with SO_REUSEPORT."
    )
    ingress_max_body_bytes: int = Field(
        default=25 * MIB, ge=1, description="GitHub caps payloads at 25 MB."
    )
    ingress_produce_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="Deadline for the broker's acknowledgement; keeps answers under GitHub's 10 s.",
    )

    # --- processors ----------------------------------------------------------------------
    group_prefix: str = Field(
        default="hookstream",
        description="Prefix of each processor's Faust app id, i.e. its consumer group.",
    )
    dispatch_topic: str = "hookstream.dispatch"
    run_status_topic: str = "hookstream.run-status"
    dispatch_partitions: int = Field(default=6, ge=1)
    triggers_file: Path | None = Field(
        default=None, description="The trigger file; ./triggers.yml when present."
    )
    runner_tokens: SecretStr = Field(
        default=SecretStr(""),
        description="Bearer tokens runners use to report status (comma-separated, rotation).",
    )
    faust_store: str = Field(
        default="rocksdb://",
        description="Where Faust keeps the processors' tables: rocksdb:// (RocksDB through "
        "rocksdict, under $HOOKSTREAM_DATA_DIR/faust/<processor>) or memory://.",
        pattern=r"^(rocksdb|memory)://$",
    )
    stop_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="A worker that has not stopped this long after SIGTERM dumps the stacks "
        "of its threads to the log and exits with 70.",
    )
    worker_metrics_host: str = Field(
        default="127.0.0.1", description="Where workers serve GET /metrics (0.0.0.0 in a pod)."
    )
    worker_metrics_port: int | None = Field(
        default=None,
        ge=0,
        description="The worker's metrics port; unset: each processor's own default "
        "(WORKER_METRICS_PORTS), so workers on one machine do not collide; 0: off.",
    )
    watchdog_interval_s: float = Field(
        default=5.0, gt=0, description="How often a worker reads its partitions' offsets."
    )
    stall_warning_s: float = Field(
        default=60.0,
        gt=0,
        description="Warn when a partition has lag and no progress for this long.",
    )
    replay: bool = Field(
        default=False, description="Set by `hookstream replay`: effectors (HTTP, GitHub) are off."
    )
    replay_horizon: dict[str, int] | None = Field(
        default=None,
        description='Set by `hookstream replay insights`: {"topic/partition": end offset}; '
        "once read that far, the rebuilt tables are swapped in.",
    )
    replay_fresh: bool = Field(
        default=False, description="Set by `hookstream replay`: drop what an earlier replay left."
    )
    replay_marker: Path | None = Field(
        default=None, description="Set by `hookstream replay`: written once the swap is done."
    )
    replay_stall_s: float = Field(
        default=120.0,
        gt=0,
        description="A replay whose partitions with lag make no progress this long fails, "
        "naming them.",
    )

    # --- checks (GitHub App) -------------------------------------------------------------
    github_app_id: str | None = Field(
        default=None, description="The GitHub App's id; unset: check runs are recorded, not sent."
    )
    github_private_key_file: Path | None = Field(
        default=None, description="The App's private key (PEM), as GitHub generated it."
    )
    github_api_url: str = "https://api.github.com"
    github_timeout_s: float = Field(
        default=10.0, gt=0, description="Deadline of one GitHub API request."
    )
    checks_details_url: str | None = Field(
        default=None,
        description="A check run's details link; {dispatch_id} and {run_id} are filled in.",
    )
    checks_topic: str = "hookstream.checks"

    # --- identity --------------------------------------------------------------------------
    identity_topic: str = "hookstream.identity"
    admin_tokens: SecretStr = Field(
        default=SecretStr(""),
        description="Bearer tokens of the identity endpoints (comma-separated, rotation); "
        "unset: POST/DELETE /v1/identities answer 404.",
    )

    # --- insights --------------------------------------------------------------------------
    clickhouse_dsn: str | None = Field(
        default=None, description="chdb:///path (embedded, the default) or http(s)://host:8123/db"
    )
    query_port: int = Field(
        default=8124, description="Read-only SQL and the insights page (127.0.0.1 only)."
    )
    production_pattern: str = Field(
        default="^(prod|production)$", description="Deployment environments that count (§6)."
    )
    incident_pattern: str = Field(
        default="(?i)^incident$", description="Issue labels that make an incident (§6)."
    )
    sink_batch_rows: int = Field(default=10_000, ge=1)
    sink_flush_s: float = Field(default=1.0, gt=0)

    @property
    def dsn(self) -> str:
        return self.clickhouse_dsn or f"chdb://{(self.data_dir / 'insights').resolve()}"

    @property
    def embedded(self) -> bool:
        return self.dsn.startswith("chdb:")

    @property
    def triggers_path(self) -> Path | None:
        if self.triggers_file is not None:
            return self.triggers_file
        default = Path("triggers.yml")
        return default if default.exists() else None

    @cached_property
    def runner_token_list(self) -> tuple[bytes, ...]:
        return _comma_separated(self.runner_tokens)

    @cached_property
    def admin_token_list(self) -> tuple[bytes, ...]:
        return _comma_separated(self.admin_tokens)

    @cached_property
    def secrets(self) -> tuple[bytes, ...]:
        """The accepted webhook secrets, in the order given (the first one signs)."""
        return _comma_separated(self.webhook_secrets)

    @property
    def kafka_dir(self) -> Path:
        return self.data_dir / "kafka"

    @property
    def generated_secret_file(self) -> Path:
        return self.data_dir / "webhook-secret"

    @property
    def max_record_bytes(self) -> int:
        """Largest Kafka record: the body cap plus room for headers and batch framing."""
        return self.ingress_max_body_bytes + MIB

    @property
    def dlq_topic(self) -> str:
        return f"{self.events_topic}.dlq"

    @property
    def checks_dlq_topic(self) -> str:
        return f"{self.checks_topic}.dlq"

    @property
    def identity_dlq_topic(self) -> str:
        return f"{self.identity_topic}.dlq"

    @property
    def dispatch_dlq_topic(self) -> str:
        return f"{self.dispatch_topic}.dlq"

    def worker_metrics_port_for(self, processor: str) -> int:
        if self.worker_metrics_port is not None:
            return self.worker_metrics_port
        return WORKER_METRICS_PORTS[processor]

    def app_id(self, processor: str) -> str:
        """Faust app id (= consumer group) of one processor."""
        return f"{self.group_prefix}-{processor}"


def _comma_separated(value: SecretStr) -> tuple[bytes, ...]:
    """Several secrets in one variable, so that one can be rotated while another works."""
    return tuple(
        part.strip().encode() for part in value.get_secret_value().split(",") if part.strip()
    )
