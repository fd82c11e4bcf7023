"""The aiohttp application: GitHub deliveries in, records on ``github.events`` out.

Each handler reads as the steps of DESIGN.md §5: the pure functions of
:mod:`ingress.delivery` decide, the handler appends to the event log and answers 202
only once Kafka acknowledged. What every request shares lives in one middleware,
``cross_cutting``: any :class:`Rejection` (and an unavailable event log) becomes the JSON
error, and each delivery is timed, counted and logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import orjson
from aiohttp import web

from ingress.delivery import Rejection, accept_body, inspect_headers
from ingress.event_log import EventLog, EventLogUnavailable
from ingress.identities import authorize_admin, parse_link, parse_unlink
from ingress.metrics import UNVERIFIED_EVENT, IngressMetrics
from ingress.run_status import MAX_REPORT_BYTES, authorize_runner, parse_report
from schemas.envelope import utc_now
from schemas.errors import HookstreamError
from schemas.identity import Link, Unlink, record_key
from schemas.settings import Settings
from schemas.signature import SignatureVerifier

WEBHOOK_PATH = "/webhooks/github"
WEBHOOK_ROUTE = "webhook"

delivery_log = logging.getLogger("hookstream.ingress.delivery")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SETTINGS = web.AppKey("settings", Settings)
EVENT_LOG = web.AppKey("event_log", EventLog)
METRICS = web.AppKey("metrics", IngressMetrics)
VERIFIER = web.AppKey("verifier", SignatureVerifier)


class MissingSecret(HookstreamError):
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


@dataclass(slots=True)
class DeliverySeen:
    """What the webhook handler learned of a delivery, for its metrics and log line."""

    event: str = UNVERIFIED_EVENT  # until the signature is verified: see ingress.metrics
    action: str | None = None


SEEN = web.RequestKey("seen", DeliverySeen)


@web.middleware
async def cross_cutting(request: web.Request, handler: Handler) -> web.StreamResponse:
    """What every request shares, in one place.

    Any :class:`Rejection` (and an unavailable event log) becomes the JSON error; a
    webhook delivery is also timed, counted and logged (one JSON line per delivery).
    """
    if request.match_info.route.name != WEBHOOK_ROUTE:
        try:
            return await handler(request)
        except (Rejection, EventLogUnavailable) as exc:
            return _rejected(exc)[0]
    metrics = request.app[METRICS]
    started = time.perf_counter()
    seen = request[SEEN] = DeliverySeen()
    metrics.in_flight.inc()
    try:
        response = await handler(request)
        outcome = "accepted"
    except (Rejection, EventLogUnavailable) as exc:
        response, outcome = _rejected(exc)
    finally:
        metrics.in_flight.dec()
    elapsed = time.perf_counter() - started
    if outcome == "accepted":
        metrics.ack_seconds.observe(elapsed)
    metrics.deliveries.labels(seen.event, outcome).inc()
    if delivery_log.isEnabledFor(logging.INFO):
        fields = {
            "delivery": request.headers.get("X-GitHub-Delivery", ""),
            "event": seen.event,
            "action": seen.action,
            "outcome": outcome,
            "status": response.status,
            "latency_ms": round(elapsed * 1000, 3),
        }
        delivery_log.info("delivery %s", outcome, extra={"fields": fields})
    return response


def _rejected(exc: Rejection | EventLogUnavailable) -> tuple[web.Response, str]:
    """The JSON error of a refusal, and its reason code (the metrics outcome)."""
    rejection = exc if isinstance(exc, Rejection) else Rejection(503, "unavailable", str(exc))
    body = {"error": rejection.reason, "message": rejection.message}
    return _json(rejection.status, body, rejection.headers), rejection.reason


async def read_body(request: web.Request) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        cap = request.app[SETTINGS].ingress_max_body_bytes
        raise Rejection(413, "too_large", f"body exceeds the {cap}-byte cap") from None


async def receive_webhook(request: web.Request) -> web.Response:
    """DESIGN.md §5: check the headers, read the body under the cap, verify, append, 202."""
    app = request.app
    meta = inspect_headers(
        request.headers, request.content_length, app[SETTINGS].ingress_max_body_bytes
    )
    record = accept_body(meta, await read_body(request), app[VERIFIER], utc_now())
    request[SEEN].event, request[SEEN].action = record.event, record.action
    await app[EVENT_LOG].append(record)  # returns once Kafka acknowledged, acks=all
    return _json(202, {"delivery": record.delivery_id})


async def receive_run_status(request: web.Request) -> web.Response:
    """A runner's report: authorize, read, validate, record on hookstream.run-status."""
    app = request.app
    settings = app[SETTINGS]
    run_id = request.match_info["run_id"]
    authorize_runner(request.headers.get("Authorization"), settings.runner_token_list)
    body = await read_body(request)
    if len(body) > MAX_REPORT_BYTES:
        raise Rejection(413, "too_large", f"report exceeds {MAX_REPORT_BYTES} bytes")
    record = parse_report(run_id, request.headers.get("Content-Type", ""), body, utc_now())
    await app[EVENT_LOG].publish(settings.run_status_topic, run_id.encode(), record.to_json(), [])
    return _json(202, {"run": run_id, "status": record.status})


async def link_identity(request: web.Request) -> web.Response:
    """An explicit link: authorize, read, validate, record on hookstream.identity."""
    authorize_admin(request.headers.get("Authorization"), request.app[SETTINGS].admin_token_list)
    body = await read_body(request)
    link = parse_link(request.headers.get("Content-Type", ""), body, utc_now())
    return await _record_identity(request.app, link)


async def unlink_identity(request: web.Request) -> web.Response:
    """An explicit unlink: authorize, validate the path, record on hookstream.identity."""
    authorize_admin(request.headers.get("Authorization"), request.app[SETTINGS].admin_token_list)
    path = request.match_info
    unlink = parse_unlink(path["platform_user"], path["github_user_id"], utc_now())
    return await _record_identity(request.app, unlink)


async def _record_identity(app: web.Application, event: Link | Unlink) -> web.Response:
    value = event.model_dump_json().encode()
    await app[EVENT_LOG].publish(app[SETTINGS].identity_topic, record_key(event), value, [])
    return _json(202, {"event_id": event.event_id, "kind": event.kind})


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
    app = web.Application(
        client_max_size=settings.ingress_max_body_bytes,
        middlewares=[cross_cutting],
    )
    app[SETTINGS] = settings
    app[VERIFIER] = SignatureVerifier(settings.secrets)
    app[METRICS] = IngressMetrics()
    app[EVENT_LOG] = event_log or EventLog(settings)
    app.cleanup_ctx.append(_event_log_lifecycle)
    app.router.add_routes([
        web.post(WEBHOOK_PATH, receive_webhook, name=WEBHOOK_ROUTE),
        web.post("/v1/runs/{run_id}/status", receive_run_status),
        web.post("/v1/identities", link_identity),
        web.delete("/v1/identities/{platform_user}/{github_user_id}", unlink_identity),
        web.get("/healthz", healthz),
        web.get("/readyz", readyz),
        web.get("/metrics", metrics_endpoint),
    ])  # fmt: skip
    return app
