"""The aiohttp application: GitHub deliveries in, records on ``github.events`` out.

The handler is a thin shell around :mod:`ingress.delivery`: it reads the body under
the size cap, lets the pure functions decide, appends to the event log, and answers
202 only once Kafka acknowledged (DESIGN.md §5).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import orjson
from aiohttp import web

from ingress.delivery import Rejection, accept_body, inspect_headers
from ingress.event_log import EventLog, EventLogUnavailable
from ingress.metrics import UNVERIFIED_EVENT, IngressMetrics
from ingress.run_status import MAX_REPORT_BYTES, authorize_runner, parse_report
from ingress.signature import SignatureVerifier
from schemas.envelope import utc_now
from schemas.settings import Settings

WEBHOOK_PATH = "/webhooks/github"

delivery_log = logging.getLogger("hookstream.ingress.delivery")

SETTINGS = web.AppKey("settings", Settings)
EVENT_LOG = web.AppKey("event_log", EventLog)
METRICS = web.AppKey("metrics", IngressMetrics)
VERIFIER = web.AppKey("verifier", SignatureVerifier)


class MissingSecret(RuntimeError):
    def __init__(self) -> None:
        super().__init__(
            "refusing to start: no webhook secret configured. Set HOOKSTREAM_WEBHOOK_SECRETS "
            "to the secret of your GitHub App's webhook (comma-separate several to rotate), "
            "or run `make run` / `hookstream dev`, which generate one for local use."
        )


def _json(status: int, body: dict[str, str], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


async def receive_webhook(request: web.Request) -> web.Response:
    app = request.app
    metrics = app[METRICS]
    started = time.perf_counter()
    event = UNVERIFIED_EVENT
    action: str | None = None
    delivery_id = request.headers.get("X-GitHub-Delivery", "")
    metrics.in_flight.inc()
    try:
        settings = app[SETTINGS]
        meta = inspect_headers(
            request.headers, request.content_length, settings.ingress_max_body_bytes
        )
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise Rejection(
                413,
                "too_large",
                f"body exceeds the {settings.ingress_max_body_bytes}-byte cap",
            ) from None
        record = accept_body(meta, body, app[VERIFIER], utc_now())
        event, action = record.event, record.action
        try:
            await app[EVENT_LOG].append(record)
        except EventLogUnavailable as exc:
            raise Rejection(503, "unavailable", str(exc)) from None
        elapsed = time.perf_counter() - started
        metrics.ack_seconds.observe(elapsed)
        status, outcome = 202, "accepted"
        response = _json(202, {"delivery": record.delivery_id})
    except Rejection as rejection:
        elapsed = time.perf_counter() - started
        status, outcome = rejection.status, rejection.reason
        response = _json(status, {"error": rejection.reason, "message": rejection.message})
    finally:
        metrics.in_flight.dec()
    metrics.deliveries.labels(event, outcome).inc()
    if delivery_log.isEnabledFor(logging.INFO):
        fields = {
            "delivery": delivery_id,
            "event": event,
            "action": action,
            "outcome": outcome,
            "status": status,
            "latency_ms": round(elapsed * 1000, 3),
        }
        delivery_log.info("delivery %s", outcome, extra={"fields": fields})
    return response


async def receive_run_status(request: web.Request) -> web.Response:
    app = request.app
    settings = app[SETTINGS]
    run_id = request.match_info["run_id"]
    try:
        authorize_runner(request.headers.get("Authorization"), settings.runner_token_list)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise Rejection(413, "too_large", "report too large") from None
        if len(body) > MAX_REPORT_BYTES:
            raise Rejection(413, "too_large", f"report exceeds {MAX_REPORT_BYTES} bytes")
        record = parse_report(run_id, request.headers.get("Content-Type", ""), body, utc_now())
        try:
            await app[EVENT_LOG].publish(
                settings.run_status_topic, run_id.encode(), record.to_json(), []
            )
        except EventLogUnavailable as exc:
            raise Rejection(503, "unavailable", str(exc)) from None
    except Rejection as rejection:
        headers = {"WWW-Authenticate": "Bearer"} if rejection.status == 401 else None
        return _json(
            rejection.status,
            {"error": rejection.reason, "message": rejection.message},
            headers,
        )
    return _json(202, {"run": run_id, "status": record.status})


async def healthz(request: web.Request) -> web.Response:
    return _json(200, {"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    if await request.app[EVENT_LOG].ready():
        return _json(200, {"status": "ready"})
    return _json(503, {"status": "unavailable", "message": "Kafka is not reachable"})


async def metrics_endpoint(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[METRICS].render(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


async def _event_log_lifecycle(app: web.Application) -> AsyncIterator[None]:
    await app[EVENT_LOG].start()
    yield
    await app[EVENT_LOG].stop()


def create_app(settings: Settings, event_log: EventLog | None = None) -> web.Application:
    """Build the ingress application; raises :class:`MissingSecret` without a secret."""
    if not settings.secrets:
        raise MissingSecret()
    app = web.Application(client_max_size=settings.ingress_max_body_bytes)
    app[SETTINGS] = settings
    app[VERIFIER] = SignatureVerifier(settings.secrets)
    app[METRICS] = IngressMetrics()
    app[EVENT_LOG] = event_log or EventLog(settings)
    app.cleanup_ctx.append(_event_log_lifecycle)
    app.router.add_post(WEBHOOK_PATH, receive_webhook)
    app.router.add_post("/v1/runs/{run_id}/status", receive_run_status)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    return app
