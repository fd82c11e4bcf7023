"""Prometheus metrics of the ingress, served on ``GET /metrics``.

Each application gets its own registry so several ingress apps can live in one
process (tests, benchmarks) without their counters mixing.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Unverified requests carry whatever X-GitHub-Event an anonymous client typed; labelling
# by it would let anyone create unbounded series.
UNVERIFIED_EVENT = "unverified"

ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class IngressMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.deliveries = Counter(
            "hookstream_ingress_deliveries",
            "Webhook deliveries by event and outcome (accepted or the rejection reason).",
            ("event", "outcome"),
            registry=self.registry,
        )
        self.ack_seconds = Histogram(
            "hookstream_ingress_ack_seconds",
            "Time from receiving a delivery to Kafka's acks=all acknowledgement.",
            buckets=ACK_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "hookstream_ingress_requests_in_flight",
            "Webhook requests being handled now.",
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
