"""The triggers worker: a Faust app of its own (``hookstream worker triggers``).

Two agents, each a short loop:

- ``match_deliveries`` reads ``github.events``, asks the matcher, and emits each new
  dispatch request to ``hookstream.dispatch`` keyed by its id. The ids it emitted live
  in a changelog-backed table, so a redelivery, a restart or a replay emits nothing twice.
- ``deliver_http`` reads ``hookstream.dispatch`` and hands requests with HTTP targets
  to the :class:`HttpDispatcher`; a record is acknowledged (its offset may be committed)
  only once every target has it or its dead letter is written. Off during a replay.

Who a GitHub account belongs to (for ``actor.platform_user`` and ChatOps ``roles:``)
comes from an :class:`IdentityDirectory` that follows ``hookstream.identity``.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import faust
from faust.streams import Stream
from faust.types import EventT, StreamT
from mode import Service
from prometheus_client import CollectorRegistry

from processors.dead_letter import dead_letter_headers, park
from processors.identity.directory import IdentityDirectory
from processors.records import delivery_envelope, processor_app, raw_topic, record_headers
from processors.triggers.authorization import Authorizer
from processors.triggers.http_dispatch import DeadLetter, HttpDispatcher
from processors.triggers.matcher import Matcher
from processors.triggers.rules import TriggerFile
from schemas.dispatch import DispatchRequest
from schemas.settings import Settings
from schemas.topics import retry_topic

log = logging.getLogger("hookstream.triggers")

PROCESSOR = "triggers"
EMITTED = b"1"
TARGET_HEADER = "x-hookstream-target"  # on a dispatch dead letter: the target that failed


def create_app(settings: Settings, triggers: TriggerFile) -> faust.App:
    # The table shares the event log's partitioning: a delivery and its dispatch ids are
    # always on the same partition, so each worker owns the ids it checks.
    registry = CollectorRegistry(auto_describe=True)
    app = processor_app(settings, PROCESSOR, registry)
    # ChatOps roles and dispatch actors come from the identity links, learned as they come.
    directory = IdentityDirectory(settings.kafka_bootstrap, settings.identity_topic, registry)
    app.add_dependency(directory)
    matcher = Matcher(triggers, Authorizer(directory))
    # Each source is read with its retry topic (`hookstream dlq retry`).
    events = raw_topic(app, settings.events_topic, retry_topic(settings.events_topic, PROCESSOR))
    dispatches = raw_topic(app, settings.dispatch_topic)
    dispatch_source = raw_topic(
        app, settings.dispatch_topic, retry_topic(settings.dispatch_topic, PROCESSOR)
    )
    events_dlq = raw_topic(app, settings.dlq_topic)
    dispatch_dlq = raw_topic(app, settings.dispatch_dlq_topic)
    emitted = app.Table(
        "emitted-dispatches",
        key_type=bytes,
        value_type=bytes,
        partitions=settings.events_partitions,
        help="Dispatch ids already emitted (never expires: replays must stay harmless).",
    )

    async def write_dead_letter(letter: DeadLetter) -> None:
        await dispatch_dlq.send(
            force=True,
            key=letter.request.dispatch_id.encode(),
            value=letter.body,
            headers=dead_letter_headers(
                [(TARGET_HEADER, letter.target.encode()),
                 ("x-hookstream-attempts", str(letter.attempts).encode())],
                processor=PROCESSOR,
                error=letter.error,
                source=settings.dispatch_topic,
            ),
        )  # fmt: skip

    dispatcher = HttpDispatcher(triggers.targets, write_dead_letter)

    @app.agent(events, name="match-deliveries")
    async def match_deliveries(stream: StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            headers = record_headers(message.headers)
            try:
                envelope = delivery_envelope(message)
                result = matcher.match(envelope)
            except Exception as exc:  # any record the matcher cannot read: park it, go on
                await park(events_dlq, message, headers, processor=PROCESSOR, error=exc)
                continue
            for refusal in result.refusals:
                log.info("command %s refused: %s", refusal.command, refusal.reason)
            for request in result.dispatches:
                key = request.dispatch_id.encode()
                if emitted.get(key) is not None:
                    continue
                # Sent now (force: not attached to the offset commit) and acknowledged
                # before the id is remembered: a crash in between re-emits the same id,
                # which consumers drop, rather than losing the dispatch. A replay only
                # rebuilds the table: its dispatches are on the topic already.
                if not settings.replay:
                    await (await dispatches.send(key=key, value=request.to_json(), force=True))
                emitted[key] = EMITTED

    @app.agent(dispatch_source, name="deliver-http")
    async def deliver_http(stream: StreamT[bytes]) -> None:
        manual = cast("Stream[bytes]", stream).noack()
        async for event in manual.events():
            if settings.replay:
                await manual.ack(event)
                continue
            request = _still_owed(DispatchRequest.from_json(event.message.value), event)
            await dispatcher.submit(request, event.message.value, _acker(manual, event))

    app.add_dependency(_Stopping(dispatcher))
    return app


class _Stopping(Service):
    """Stops the dispatcher (draining its queues) when the worker stops."""

    def __init__(self, dispatcher: HttpDispatcher) -> None:
        super().__init__()
        self.dispatcher = dispatcher

    async def on_stop(self) -> None:
        await self.dispatcher.stop()


def _still_owed(request: DispatchRequest, event: EventT[bytes]) -> DispatchRequest:
    """The request, for only the target that failed when it is a dead letter sent back."""
    failed = dict(record_headers(event.message.headers)).get(TARGET_HEADER)
    return request if failed is None else request.model_copy(update={"targets": (failed.decode(),)})


def _acker(stream: StreamT[bytes], event: EventT[bytes]) -> Any:
    async def ack() -> None:
        await stream.ack(event)

    return ack
