"""The checks worker: a Faust app of its own (``hookstream worker checks``).

Five agents, each a short loop:

- ``route-dispatches``, ``route-reports`` and ``route-deliveries`` read
  ``hookstream.dispatch``, ``hookstream.run-status`` and ``github.events`` and send each
  record's machine input to the worker's inputs topic, keyed by dispatch id, so the
  inputs of one dispatch meet on one partition (:mod:`processors.checks.inputs`);
- ``apply-inputs`` folds each input into the dispatch's machine (a changelog-backed
  table), tells GitHub what it must know (:func:`machine.sync_plan`, carried out by
  :class:`~processors.checks.github.CheckRunEffector`), emits re-run dispatches, and
  records every transition on ``hookstream.checks``;
- ``expand-suites`` remembers the latest dispatch of each workflow per commit and turns
  ``check_suite.rerequested`` into a re-run of each.

Effects are off during a replay and without App credentials: the transitions are still
recorded (``"sent": false``) and counted, nothing reaches GitHub or the dispatch topic.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable

import aiohttp
import faust
from faust.types import EventT, StreamT, TableT
from gidgethub.aiohttp import GitHubAPI
from mode import Service
from prometheus_client import CollectorRegistry

from processors.checks import machine
from processors.checks.calls import details_url
from processors.checks.github import (
    AppCredentials,
    CheckRunEffector,
    ChecksMetrics,
    GitHubEffectFailed,
    InstallationTokens,
)
from processors.checks.inputs import (
    INPUT_RECORDS,
    Routed,
    Suite,
    SuiteRecord,
    route_delivery,
    route_dispatch,
    route_report,
)
from processors.checks.machine import CheckRun, CreateCheckRun, Step
from processors.dead_letter import park
from processors.records import delivery_envelope, processor_app, raw_topic, record_headers
from schemas.checks import CheckTransition
from schemas.dispatch import DispatchRequest
from schemas.envelope import RecordHeader
from schemas.run_status import RunStatusRecord
from schemas.settings import Settings
from schemas.topics import retry_topic

log = logging.getLogger("hookstream.checks")

PROCESSOR = "checks"
CHECK_EVENTS = (b"check_run", b"check_suite")


def create_app(settings: Settings, credentials: AppCredentials | None) -> faust.App:
    registry = CollectorRegistry(auto_describe=True)
    app = processor_app(settings, PROCESSOR, registry)
    metrics = ChecksMetrics(registry)
    github = _GitHub(settings, credentials, metrics, flush=lambda: app.producer.flush())
    app.add_dependency(github)
    partitions = settings.events_partitions
    # The sources a dead letter can come from are read with their retry topics.
    events = raw_topic(app, settings.events_topic, retry_topic(settings.events_topic, PROCESSOR))
    dispatches = raw_topic(app, settings.dispatch_topic)
    dispatch_source = raw_topic(
        app, settings.dispatch_topic, retry_topic(settings.dispatch_topic, PROCESSOR)
    )
    reports = raw_topic(app, settings.run_status_topic)
    inputs = raw_topic(app, f"{app.conf.id}-inputs", internal=True, partitions=partitions)
    suites = raw_topic(app, f"{app.conf.id}-suites", internal=True, partitions=partitions)
    transitions = raw_topic(app, settings.checks_topic)
    events_dlq = raw_topic(app, settings.dlq_topic)
    checks_dlq = raw_topic(app, settings.checks_dlq_topic)
    machines = app.Table(
        "check-runs", key_type=bytes, value_type=bytes, partitions=partitions,
        help="The check-run machine of each dispatch (JSON), keyed by dispatch id.",
    )  # fmt: skip
    commits = app.Table(
        "suites", key_type=bytes, value_type=bytes, partitions=partitions,
        help="The latest dispatch of each workflow per repository and commit (JSON).",
    )  # fmt: skip

    async def send(routed: Routed) -> None:
        if routed.ignored:
            metrics.refused.labels("ignored").inc()
            log.debug("ignored: %s", routed.ignored)
        # Acknowledged before the source record's offset may be committed: a crash
        # between the two re-routes the record rather than losing it.
        for record in routed.inputs:
            key, value = record.dispatch_id.encode(), record.to_json()
            await (await inputs.send(key=key, value=value, force=True))
        for key, suite in routed.suites:
            await (await suites.send(key=key, value=suite.to_json(), force=True))

    async def route(
        stream: StreamT[bytes], decide: Callable[[EventT[bytes]], Routed], dlq: faust.TopicT
    ) -> None:
        async for event in stream.events():
            try:
                routed = decide(event)
            except Exception as exc:  # a record we cannot read: park it, go on
                message = event.message
                await park(dlq, message, record_headers(message.headers), processor=PROCESSOR,
                           error=exc)  # fmt: skip
                continue
            await send(routed)

    @app.agent(dispatch_source, name="route-dispatches")
    async def route_dispatches(stream: StreamT[bytes]) -> None:
        await route(stream, lambda e: route_dispatch(DispatchRequest.from_json(e.value)),
                    checks_dlq)  # fmt: skip

    @app.agent(reports, name="route-reports")
    async def route_reports(stream: StreamT[bytes]) -> None:
        await route(
            stream,
            lambda e: route_report(RunStatusRecord.model_validate_json(e.value)),
            checks_dlq,
        )

    def delivery(event: EventT[bytes]) -> Routed:
        message = event.message
        headers = record_headers(message.headers)
        if dict(headers).get(RecordHeader.EVENT) not in CHECK_EVENTS:
            return Routed()  # most deliveries: decided from the header, never parsed
        return route_delivery(delivery_envelope(message), settings.github_app_id)

    @app.agent(events, name="route-deliveries")
    async def route_deliveries(stream: StreamT[bytes]) -> None:
        await route(stream, delivery, events_dlq)

    @app.agent(inputs, name="apply-inputs")
    async def apply_inputs(stream: StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            try:
                record = INPUT_RECORDS.validate_json(message.value)
            except ValueError as exc:
                await park(checks_dlq, message, record_headers(message.headers),
                           processor=PROCESSOR, error=exc)  # fmt: skip
                continue
            key = record.dispatch_id.encode()
            held = machines.get(key)
            step = machine.apply(
                CheckRun.from_json(held) if held else None, record.as_input(), record.dispatch_id
            )
            for refusal in step.refusals:
                metrics.refused.labels(refusal.kind).inc()
                fields = {"dispatch": record.dispatch_id, "refused": refusal.kind}
                log.info("dispatch %s: %s", record.dispatch_id, refusal.reason,
                         extra={"fields": fields})  # fmt: skip

            remember = functools.partial(_store, machines, key)
            state, failure = await github.sync(step.state, remember)
            if failure is not None:  # the stream goes on; the gap is closed by a retry
                metrics.parked.inc()
                await park(checks_dlq, message, record_headers(message.headers),
                           processor=PROCESSOR, error=failure)  # fmt: skip
            await emit(step)
            remember(state)
            sent = github.sends and failure is None
            for transition in step.transitions:
                await record_transition(transition.model_copy(
                    update={"check_run_id": state.check_run_id, "sent": sent}
                ))  # fmt: skip

    async def emit(step: Step) -> None:
        for redispatch in step.effects:
            if settings.replay:
                metrics.unsent.labels("replay").inc()
                continue
            request = redispatch.request
            await (await dispatches.send(
                key=request.dispatch_id.encode(), value=request.to_json(), force=True
            ))  # fmt: skip

    async def record_transition(transition: CheckTransition) -> None:
        metrics.transitions.labels(transition.to).inc()
        await transitions.send(
            key=transition.dispatch_id.encode(), value=transition.to_json(), force=True
        )

    @app.agent(suites, name="expand-suites")
    async def expand_suites(stream: StreamT[bytes]) -> None:
        async for event in stream.events():
            record = SuiteRecord.from_json(event.message.value)
            key = event.message.key
            held = commits.get(key)
            suite = Suite.from_json(held) if held else Suite()
            if record.kind == "dispatched":
                commits[key] = suite.remember(record).to_json()
            else:
                await send(Routed(inputs=suite.reruns(record)))

    return app


def _store(machines: TableT[bytes, bytes], key: bytes, state: CheckRun) -> None:
    machines[key] = state.to_json()


class _GitHub(Service):
    """The Checks API client of the worker: opened at start, closed at stop."""

    def __init__(
        self,
        settings: Settings,
        credentials: AppCredentials | None,
        metrics: ChecksMetrics,
        flush: Callable[[], Awaitable[None]],
    ) -> None:
        super().__init__()
        self.flush = flush
        self.settings = settings
        self.credentials = credentials
        self.metrics = metrics
        self.effector: CheckRunEffector | None = None
        self._session: aiohttp.ClientSession | None = None
        self.unsent_reason = (
            "replay" if settings.replay else "no credentials" if credentials is None else None
        )

    @property
    def sends(self) -> bool:
        return self.unsent_reason is None

    async def on_start(self) -> None:
        if self.credentials is None or self.settings.replay:
            log.info("check runs are recorded, not sent to GitHub: %s", self.unsent_reason)
            return
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.settings.github_timeout_s)
        )
        gh = GitHubAPI(self._session, "hookstream", base_url=self.settings.github_api_url)
        self.effector = CheckRunEffector(gh, InstallationTokens(self.credentials), self.metrics)

    async def on_stop(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def sync(
        self, state: CheckRun, remember: Callable[[CheckRun], None]
    ) -> tuple[CheckRun, GitHubEffectFailed | None]:
        """Tell GitHub what the machine knows and it does not.

        Returns the state GitHub reached, and the failure that stopped it, if any.
        """
        plan = machine.sync_plan(state)
        if not plan:
            return state, None
        if self.effector is None:
            self.metrics.unsent.labels(str(self.unsent_reason)).inc(len(plan))
            return state, None
        request = state.request
        assert request is not None
        just_created = False
        try:
            for effect in plan:
                if isinstance(effect, CreateCheckRun):
                    if not state.create_sent:
                        # Durable before GitHub is asked: after a crash, look, don't re-create.
                        state = machine.create_sent(state)
                        remember(state)
                        await self.flush()
                    link = details_url(self.settings.checks_details_url, state.dispatch_id)
                    check_run_id = await self.effector.create(
                        request, link, may_exist=effect.may_exist
                    )
                    state, just_created = machine.created(state, check_run_id), True
                else:
                    assert state.check_run_id is not None
                    link = details_url(
                        self.settings.checks_details_url, state.dispatch_id, effect.report.run_id
                    )
                    await self.effector.update(
                        request, state.check_run_id, effect.report, link,
                        just_created=just_created,
                    )  # fmt: skip
                    state = machine.synced(state, effect.report.status)
        except GitHubEffectFailed as exc:
            return state, exc
        return state, None
