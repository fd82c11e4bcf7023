"""The project's Kafka topics, their partition counts and configs, and creating them.

Topics are created by hookstream rather than by broker auto-creation so that
``github.events`` gets its retention (forever by default: it is the source of truth) and
its record size limit (GitHub sends up to 25 MB).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from schemas.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication: int
    configs: dict[str, str] = field(default_factory=dict)


def topic_specs(settings: Settings) -> list[TopicSpec]:
    log_configs = {
        "retention.ms": str(settings.events_retention_ms),
        "max.message.bytes": str(settings.max_record_bytes),
        "min.insync.replicas": str(min(2, settings.kafka_replication_factor)),
    }
    return [
        TopicSpec(
            settings.events_topic,
            settings.events_partitions,
            settings.kafka_replication_factor,
            log_configs,
        ),
        # Dead letters keep the failed record whole, so they need the same size limit.
        TopicSpec(settings.dlq_topic, 1, settings.kafka_replication_factor, log_configs),
        # Dispatches and run reports are small and kept as long as the event log: they
        # are the record of what ran, and the check-run processor replays them.
        TopicSpec(
            settings.dispatch_topic,
            settings.dispatch_partitions,
            settings.kafka_replication_factor,
            log_configs,
        ),
        TopicSpec(settings.dispatch_dlq_topic, 1, settings.kafka_replication_factor, log_configs),
        TopicSpec(
            settings.run_status_topic,
            settings.dispatch_partitions,
            settings.kafka_replication_factor,
            log_configs,
        ),
        # Check-run transitions: the record of what each pull request showed, and why.
        TopicSpec(
            settings.checks_topic,
            settings.dispatch_partitions,
            settings.kafka_replication_factor,
            log_configs,
        ),
        TopicSpec(settings.checks_dlq_topic, 1, settings.kafka_replication_factor, log_configs),
        # Who is who: one partition, so its offsets order every link, fact and answer.
        TopicSpec(settings.identity_topic, 1, settings.kafka_replication_factor, log_configs),
        TopicSpec(settings.identity_dlq_topic, 1, settings.kafka_replication_factor, log_configs),
        # Where `hookstream dlq retry` puts dead letters back: read by the processor with its
        # source, so partitioned as the source (Faust co-partitions an agent's topics with
        # its tables), and kept like a dead letter.
        *(
            TopicSpec(
                retry_topic(source, processor),
                partitions,
                settings.kafka_replication_factor,
                log_configs,
            )
            for source, partitions, processor in retry_sources(settings)
        ),
    ]


# The processors that read a retry topic beside a source topic (DESIGN.md §9).
EVENT_PROCESSORS = ("insights", "triggers", "checks", "identity")
DISPATCH_PROCESSORS = ("triggers", "checks")


def retry_sources(settings: Settings) -> list[tuple[str, int, str]]:
    """(source topic, its partitions, processor) for every retry topic a processor reads."""
    return [
        *((settings.events_topic, settings.events_partitions, p) for p in EVENT_PROCESSORS),
        *((settings.dispatch_topic, settings.dispatch_partitions, p) for p in DISPATCH_PROCESSORS),
    ]


def retry_topic(source: str, processor: str) -> str:
    """``<source>.retry.<processor>``; a retry topic is its own (a record failing again)."""
    suffix = f".retry.{processor}"
    return source if source.endswith(suffix) else f"{source}{suffix}"


async def ensure_topics(bootstrap: str, specs: list[TopicSpec]) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if not missing:
            return []
        response = await admin.create_topics(
            [
                NewTopic(s.name, s.partitions, s.replication, topic_configs=s.configs)
                for s in missing
            ]
        )
        names = []
        for name, code, message, *_ in response.topic_errors:
            error = for_code(code)
            if code == 0:
                names.append(name)
            elif error is not TopicAlreadyExistsError:
                # Another process may create a topic between our listing and our request;
                # anything else is a real failure (no permission, bad config).
                raise error(f"creating topic {name}: {message}")
        log.info("created topics %s", names)
        return names
    finally:
        await admin.close()
