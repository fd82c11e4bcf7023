"""The identity worker: a Faust app of its own (``hookstream worker identity``).

Two agents, each a short loop:

- ``learn-facts`` reads ``github.events`` and writes what each delivery teaches
  (:func:`processors.identity.facts.learned_facts`: logins, bots, e-mails, memberships) to
  ``hookstream.identity``, skipping facts it has just written (a bounded memory: a repeat
  is harmless, only wasteful);
- ``resolve`` reads the inputs on ``hookstream.identity`` (links, unlinks and those facts),
  folds each into the :class:`~processors.identity.resolver.IdentityResolver`, whose state
  lives in changelog-backed tables, and writes a ``resolved`` record for each account
  whose answer changed, and a ``conflict`` record when several people claim one account.

The topic has one partition: the tables are that partition's, and an answer's
``version`` is the offset of the input that produced it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import fields
from typing import Any

import faust
from faust.types import StreamT
from prometheus_client import CollectorRegistry, Counter

from processors.dead_letter import park
from processors.identity.facts import learned_facts
from processors.identity.resolver import Answer, IdentityResolver, ResolverState
from processors.records import delivery_envelope, processor_app, raw_topic, record_headers
from schemas.identity import (
    AccountSeen,
    AnyIdentityEvent,
    Conflict,
    EmailSeen,
    InputEvent,
    MembershipSeen,
    Resolved,
    parse_identity_event,
    record_key,
)
from schemas.settings import Settings
from schemas.topics import retry_topic

log = logging.getLogger("hookstream.identity")

PROCESSOR = "identity"
RECENT_FACTS = 100_000


class IdentityMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.facts = Counter(
            "hookstream_identity_facts", "Facts learned from deliveries and written, by kind.",
            ["kind"], registry=registry,
        )  # fmt: skip
        self.inputs = Counter(
            "hookstream_identity_inputs", "Identity inputs folded into the mapping, by kind.",
            ["kind"], registry=registry,
        )  # fmt: skip
        self.resolutions = Counter(
            "hookstream_identity_resolutions",
            "Changed answers written, by how the person was found (none: nobody).",
            ["source"], registry=registry,
        )  # fmt: skip
        self.conflicts = Counter(
            "hookstream_identity_conflicts",
            "Accounts claimed by several people (the later explicit link won).",
            registry=registry,
        )


class RecentFacts:
    """The facts written lately, so that every delivery from alice does not say so again."""

    def __init__(self, size: int = RECENT_FACTS) -> None:
        self.size = size
        self._seen: OrderedDict[tuple[Any, ...], None] = OrderedDict()

    @staticmethod
    def _key(fact: AccountSeen | EmailSeen | MembershipSeen) -> tuple[Any, ...]:
        if isinstance(fact, AccountSeen):
            return ("account", fact.github_user_id, fact.github_login, fact.is_bot)
        if isinstance(fact, EmailSeen):
            return ("email", fact.email, fact.via, fact.github_user_id, fact.github_login)
        return ("membership", fact.github_user_id, fact.scope, fact.active)

    def is_new(self, fact: AccountSeen | EmailSeen | MembershipSeen) -> bool:
        key = self._key(fact)
        if key in self._seen:
            self._seen.move_to_end(key)
            return False
        self._seen[key] = None
        if len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return True


def _answer_record(answer: Answer) -> dict[str, Any]:
    """What a table keeps of an answer: its content, not when it was given."""
    content = answer.resolved.model_dump(mode="json", exclude={"version", "at"})
    claimants = list(answer.conflict.claimants) if answer.conflict else None
    return {"resolved": content, "conflict": claimants}


def create_app(settings: Settings) -> faust.App:
    registry = CollectorRegistry(auto_describe=True)
    app = processor_app(settings, PROCESSOR, registry)
    metrics = IdentityMetrics(registry)
    # The event log and its retry topic (`hookstream dlq retry`), read alike.
    events = raw_topic(app, settings.events_topic, retry_topic(settings.events_topic, PROCESSOR))
    identity = raw_topic(app, settings.identity_topic)
    events_dlq = raw_topic(app, settings.dlq_topic)
    identity_dlq = raw_topic(app, settings.identity_dlq_topic)

    def table(name: str, help_: str) -> Any:
        # str keys and JSON values (Faust picks the json codec for both from key_type=str).
        return app.Table(f"identity-{name}", partitions=1, key_type=str, help=help_)  # fmt: skip

    state = ResolverState(
        **{f.name: table(f.name.replace("_", "-"), f"resolver state: {f.name}")
           for f in fields(ResolverState)}
    )  # fmt: skip
    answers = table("answers", "The last answer written for each account (JSON).")
    resolver = IdentityResolver(state)
    recent = RecentFacts()

    async def write(event: AnyIdentityEvent) -> None:
        # Attached to the record being processed (no force): Faust sends it in batches and
        # commits that record's offset only once Kafka has it, so nothing is awaited here.
        await identity.send(key=record_key(event), value=event.model_dump_json().encode())

    @app.agent(events, name="learn-facts")
    async def learn(stream: StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            try:
                facts = learned_facts(delivery_envelope(message))
            except Exception as exc:  # a delivery we cannot read: park it, go on
                headers = record_headers(message.headers)
                await park(events_dlq, message, headers, processor=PROCESSOR, error=exc)
                continue
            for fact in facts:
                if recent.is_new(fact):
                    metrics.facts.labels(fact.kind).inc()
                    await write(fact)

    @app.agent(identity, name="resolve")
    async def resolve(stream: StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            try:
                parsed = parse_identity_event(message.value or b"")
            except ValueError as exc:
                await park(identity_dlq, message, record_headers(message.headers),
                           processor=PROCESSOR, error=exc)  # fmt: skip
                continue
            if isinstance(parsed, Resolved | Conflict):
                continue  # our own answers, read back
            await fold(parsed, message.offset)

    async def fold(event: InputEvent, offset: int) -> None:
        metrics.inputs.labels(event.kind).inc()
        for account in sorted(resolver.apply(event)):
            answer = resolver.resolve(account, version=offset, at=event.at)
            record = _answer_record(answer)
            previous = answers.get(str(account))
            if previous == record:
                continue
            answers[str(account)] = record
            metrics.resolutions.labels(answer.resolved.source or "none").inc()
            await write(answer.resolved)
            if answer.conflict and (previous or {}).get("conflict") != record["conflict"]:
                metrics.conflicts.inc()
                conflict = answer.conflict
                log.warning(
                    "account %d is claimed by %s; %s (the later link) wins",
                    account, ", ".join(conflict.claimants), conflict.winner,
                    extra={"fields": {"github_user_id": account,
                                      "claimants": list(conflict.claimants),
                                      "winner": conflict.winner}},
                )  # fmt: skip
                await write(conflict)

    return app
