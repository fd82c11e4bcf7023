"""``make bench-identity``: the identity resolver's inputs/s, alone and in the identity
worker through Kafka, and ``person_activity``'s latency at N deliveries (issue 9).

1. Resolver alone, in this process. A seeded synthetic population: P people with 1 to 3
   GitHub accounts each (``AccountSeen``; ~5 % renamed later by a second one), an explicit
   ``Link`` per account (by id, ~10 % by login; ~10 % of people link an e-mail too), ~2 %
   of the links undone by an ``Unlink``, ~1 % of the accounts claimed later by a second
   person (a conflict), bots (one per 50 people, a tenth of them wrongly linked), and for
   half the people with an e-mail an unlinked account that a push ``EmailSeen`` ties to
   that e-mail. The inputs are built beforehand and shuffled; timed: ``apply`` over all
   of them, then ``resolve`` over every known account; then, on a fresh resolver, the
   worker's fold without Kafka (``apply``, then ``resolve`` for each touched account and
   a comparison with the last answer), and ``parse_identity_event`` over the inputs'
   JSON, the other per-record work of the worker.
2. The identity worker (``hookstream worker identity``, its own process) on a fresh local
   broker: the same inputs, in the same order, are written to a fresh identity topic (one
   partition) by an idempotent producer; the worker is started and the consumer group's
   committed offset on that partition is polled until it reaches the end of the inputs.
   The clock starts at the first committed progress (the worker's start-up is left out).
   Its ``resolved`` and ``conflict`` records are then counted on the topic and compared
   with the fold of step 1 (same inputs, same order: the same number of changed answers).
3. View latency. In one process (chdb: one engine per process) the fact rows of N
   corpus-derived deliveries are inserted into a fresh store as ``make bench-insights``
   does (:data:`tests.bench.insights.SINK_CEILING`; the ``deliveries`` table, which no
   view reads, is left out). In a second process on the same store, a ``resolved`` row
   is written for every pull-request author and reviewer in the data, about half of them
   linked to people (two accounts per person), and once the background merges are done
   ``person_activity``, ``pr_flow`` and ``identity_current`` are queried five times each.
   Then the P-person population's answers of step 1 are added to ``identities`` (a
   realistic size for ``identity_current``, which every person column joins) and the
   views are timed again; then once more after the pull requests' authors and the
   reviewers are rewritten to the population's accounts, since the corpus has only a
   handful of them. Goal: ``person_activity`` p50 ≤ 500 ms.

Usage: python -m tests.bench.identity [--people 100000] [--view-events 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from deploy import corpus
from deploy.commands import hookstream_argv
from processors.identity.app import _answer_record
from processors.identity.resolver import IdentityResolver
from processors.insights.identity_rows import TABLE, identity_row
from processors.offsets import OffsetReader
from projections.sink import ClickHouseSink
from schemas.identity import (
    AccountSeen,
    EmailSeen,
    EmailVia,
    InputEvent,
    Link,
    Resolved,
    Source,
    Unlink,
    parse_identity_event,
    record_key,
)
from schemas.settings import Settings
from schemas.topics import ensure_topics, topic_specs
from tests.bench.broker_io import Outgoing, bulk_consumer, send_all
from tests.bench.insights import SINK_CEILING
from tests.bench.merges import wait_for_merges
from tests.helpers import CACHE_DIR, local_broker, processor_env

SEED = 9
FIRST_ACCOUNT = 1_000_000_000  # far above the corpus's account ids: no collisions in step 3
START = datetime(2025, 1, 1, tzinfo=UTC)
YEAR_S = 365 * 86_400
VIEWS = ("person_activity", "pr_flow", "identity_current")
GOAL_P50_S = 0.500
RUNS = 5
FOLD = "the worker's fold without Kafka: `apply`, then `resolve` each touched account"
WORKER_TIMEOUT_S = 3 * 3600.0


# --- step 1: the population and the resolver ------------------------------------------------
@dataclass
class Population:
    """Shuffled inputs, and what they hold."""

    events: list[InputEvent] = field(default_factory=list)
    facts: Counter[str] = field(default_factory=Counter)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def event_id(self) -> str:
        return f"bench-{next(self._ids)}"

    def add(self, event: InputEvent, fact: str) -> None:
        self.events.append(event)
        self.facts[fact] += 1


def population(people: int, seed: int = SEED) -> Population:
    rng = random.Random(seed)
    pop = Population()
    accounts = itertools.count(FIRST_ACCOUNT)

    def moment(after: datetime = START) -> datetime:
        return after + timedelta(seconds=rng.randrange(YEAR_S))

    linked: list[tuple[str, int, datetime]] = []
    for p in range(people):
        person = f"person-{p:06d}"
        pop.facts["people"] += 1
        email = f"{person}@example.com" if rng.random() < 0.10 else None
        for k in range(rng.choices((1, 2, 3), weights=(50, 35, 15))[0]):
            account = next(accounts)
            login, seen = f"gh{account}", moment()
            pop.add(AccountSeen(event_id=pop.event_id(), at=seen, github_user_id=account,
                                github_login=login), "accounts")  # fmt: skip
            if rng.random() < 0.05:
                pop.add(AccountSeen(event_id=pop.event_id(), at=moment(seen),
                                    github_user_id=account, github_login=f"{login}-renamed"),
                        "renames (a second AccountSeen)")  # fmt: skip
            at = moment()
            by_login = rng.random() < 0.10
            pop.add(Link(
                event_id=pop.event_id(), at=at, platform_user=person,
                github_user_id=None if by_login else account,
                github_login=login if by_login else None,
                email=email if k == 0 else None,
                role="engineer" if rng.random() < 0.2 else None, source=Source.CSV,
            ), "links by login" if by_login else "links by id")  # fmt: skip
            linked.append((person, account, at))
        if email is not None and rng.random() < 0.5:
            account = next(accounts)
            login = f"gh{account}"
            pop.add(AccountSeen(event_id=pop.event_id(), at=moment(), github_user_id=account,
                                github_login=login), "accounts known by e-mail only")  # fmt: skip
            pop.add(EmailSeen(event_id=pop.event_id(), at=moment(), email=email,
                              github_login=login, via=EmailVia.PUSH_USERNAME),
                    "e-mails seen (push username)")  # fmt: skip
    pop.facts["links with an e-mail"] = sum(
        1 for e in pop.events if isinstance(e, Link) and e.email is not None
    )
    for person, account, at in linked:
        if rng.random() < 0.02:
            pop.add(Unlink(event_id=pop.event_id(), at=moment(at), platform_user=person,
                           github_user_id=account, source=Source.API), "unlinks")  # fmt: skip
        if rng.random() < 0.01:
            other = f"person-{rng.randrange(people):06d}"
            pop.add(Link(event_id=pop.event_id(), at=moment(at), platform_user=other,
                         github_user_id=account, source=Source.API),
                    "conflicting links (a second person)")  # fmt: skip
    for b in range(max(1, people // 50)):
        account = next(accounts)
        pop.add(AccountSeen(event_id=pop.event_id(), at=moment(), github_user_id=account,
                            github_login=f"ci-bot-{b}[bot]", is_bot=True), "bots")  # fmt: skip
        if b % 10 == 0:
            pop.add(Link(event_id=pop.event_id(), at=moment(), platform_user="person-000000",
                         github_user_id=account, source=Source.CSV),
                    "links to bots (ignored)")  # fmt: skip
    rng.shuffle(pop.events)
    return pop


@dataclass(frozen=True)
class Step:
    what: str
    items: int
    unit: str
    seconds: float

    def row(self) -> str:
        rate = self.items / self.seconds
        return f"| {self.what} | {self.items:,} {self.unit} | {self.seconds:.2f} | {rate:,.0f} |"


@dataclass
class ResolverRun:
    steps: list[Step]
    answers: list[Resolved]  # every account's answer after all inputs
    changed: int  # answers the worker's fold writes (a `resolved` record each)
    conflicts: int  # conflict records it writes


def run_resolver(events: list[InputEvent]) -> ResolverRun:
    resolver = IdentityResolver()
    started = time.perf_counter()
    for event in events:
        resolver.apply(event)
    applied = time.perf_counter() - started
    started = time.perf_counter()
    accounts = resolver.accounts()
    answers = [resolver.resolve(account).resolved for account in accounts]
    resolved = time.perf_counter() - started

    # The worker's fold (processors.identity.app), minus Kafka, tables and metrics.
    folder, last = IdentityResolver(), dict[int, dict[str, Any]]()
    changed = conflicts = 0
    started = time.perf_counter()
    for offset, event in enumerate(events):
        for account in sorted(folder.apply(event)):
            answer = folder.resolve(account, version=offset, at=event.at)
            record = _answer_record(answer)
            previous = last.get(account)
            if previous == record:
                continue
            last[account] = record
            changed += 1
            if answer.conflict and (previous or {}).get("conflict") != record["conflict"]:
                conflicts += 1
    folded = time.perf_counter() - started

    raw = [event.model_dump_json().encode() for event in events]
    started = time.perf_counter()
    for value in raw:
        parse_identity_event(value)
    parsed = time.perf_counter() - started
    steps = [
        Step("`apply`, every input", len(events), "inputs", applied),
        Step("`resolve`, every known account", len(accounts), "accounts", resolved),
        Step(FOLD, len(events), "inputs", folded),
        Step("`parse_identity_event` of each input's JSON", len(events), "inputs", parsed),
    ]
    return ResolverRun(steps, answers, changed, conflicts)


# --- step 2: the identity worker through Kafka ----------------------------------------------
async def produce_inputs(settings: Settings, events: list[InputEvent]) -> int:
    """Writes the inputs to the identity topic; returns its end offset."""
    await ensure_topics(settings.kafka_bootstrap, topic_specs(settings))
    records = (Outgoing(settings.identity_topic, e.model_dump_json().encode(), key=record_key(e))
               for e in events)  # fmt: skip
    await send_all(settings.kafka_bootstrap, records, enable_idempotence=True, linger_ms=20,
                   max_batch_size=1 << 20)  # fmt: skip
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        tp = TopicPartition(settings.identity_topic, 0)
        return int((await consumer.end_offsets([tp]))[tp])
    finally:
        await consumer.stop()


@dataclass(frozen=True)
class WorkerRun:
    rate: float  # inputs/s from the first committed progress
    seconds: float  # from the worker's start to the last input committed
    outputs: Counter[str]


async def watch_worker(settings: Settings, end: int, workdir: Path) -> tuple[float, float]:
    env = processor_env(settings)
    partition = TopicPartition(settings.identity_topic, 0)
    with (workdir / "identity-worker.log").open("wb") as log:
        worker = await asyncio.create_subprocess_exec(
            *hookstream_argv("worker", "identity"), env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            async with OffsetReader(settings.kafka_bootstrap) as reader:
                launched = time.perf_counter()
                started: float | None = None
                first = reported = 0
                while True:
                    if worker.returncode is not None:
                        raise SystemExit(f"the identity worker exited with {worker.returncode}; "
                                         f"see {workdir / 'identity-worker.log'}")  # fmt: skip
                    try:
                        [offsets] = await reader.read(settings.app_id("identity"), [partition])
                        done = min(offsets.committed or 0, end)
                    except KafkaError as exc:
                        if not exc.retriable:  # the group's coordinator may still be loading
                            raise
                        done = 0
                    now = time.perf_counter()
                    if started is None and done > 0:
                        started, first = now, done
                    if done >= end:
                        assert started is not None
                        steady = (end - first) / (now - started) if end > first else 0.0
                        return steady, now - launched
                    if now - launched > WORKER_TIMEOUT_S:
                        raise SystemExit(f"the identity worker folded {done:,} of {end:,} "
                                         f"inputs in {WORKER_TIMEOUT_S:g} s")  # fmt: skip
                    if now - launched >= reported + 60:
                        reported = int(now - launched)
                        print(f"  worker: {done:,} of {end:,} inputs after {reported} s",
                              flush=True)  # fmt: skip
                    await asyncio.sleep(0.5)
        finally:
            if worker.returncode is None:
                worker.terminate()
            await worker.wait()


async def count_outputs(settings: Settings, start: int) -> Counter[str]:
    """The kinds of the records after the inputs: the worker's answers."""
    consumer = bulk_consumer(settings.kafka_bootstrap)
    await consumer.start()
    try:
        tp = TopicPartition(settings.identity_topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, start)
        end = (await consumer.end_offsets([tp]))[tp]
        kinds: Counter[str] = Counter()
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000, max_records=10_000)
            for record in batch.get(tp, []):
                kinds[orjson.loads(record.value)["kind"]] += 1
        return kinds
    finally:
        await consumer.stop()


def run_worker(events: list[InputEvent], workdir: Path) -> WorkerRun:
    broker = local_broker(workdir / "broker", heap="512m")
    broker.up()
    try:
        suffix = uuid.uuid4().hex[:8]
        settings = Settings(
            kafka_bootstrap=broker.bootstrap, data_dir=workdir / "worker", cache_dir=CACHE_DIR,
            events_topic=f"bench.events.{suffix}", identity_topic=f"bench.identity.{suffix}",
            group_prefix=f"bench-{suffix}",
        )  # fmt: skip
        started = time.perf_counter()
        end = asyncio.run(produce_inputs(settings, events))
        print(f"produced {end:,} identity inputs in {time.perf_counter() - started:.0f} s",
              flush=True)  # fmt: skip
        rate, seconds = asyncio.run(watch_worker(settings, end, workdir))
        return WorkerRun(rate, seconds, asyncio.run(count_outputs(settings, end)))
    finally:
        broker.down()


# --- step 3: view latency (in a process of its own: one chdb engine per process) ------------
def build_store(n: int, path: Path) -> float:
    """The fact rows of n deliveries into a fresh store; returns the inserts' deliveries/s."""
    args = [sys.executable, "-c", SINK_CEILING, str(n), "10000", str(path), "1"]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=3600)
    return float(out.stdout.split()[0])


def emit(*fields: object) -> None:
    print(orjson.dumps(fields).decode(), flush=True)


async def time_views(sink: ClickHouseSink, phase: str) -> None:
    await wait_for_merges(sink, limit_s=600.0)
    for view in VIEWS:
        times, rows = [], 0
        for _ in range(RUNS):
            started = time.perf_counter()
            rows = len(await sink.run(lambda c: c.query(f"SELECT * FROM {view}").result_rows))  # noqa: B023
            times.append(time.perf_counter() - started)
        emit("view", phase, view, sorted(times)[RUNS // 2], max(times), rows)


async def write_identities(sink: ClickHouseSink, answers: list[Resolved], first: int) -> None:
    for start in range(0, len(answers), 10_000):
        rows = [identity_row(answer, first + start + i)
                for i, answer in enumerate(answers[start : start + 10_000])]  # fmt: skip
        await sink.write({TABLE: rows}, f"identities-{first + start}")


DATA_ACCOUNTS = """
SELECT account, argMax(login, seen) FROM (
    SELECT author_id AS account, author_login AS login, received_at AS seen FROM pull_requests
    UNION ALL
    SELECT reviewer_id, reviewer_login, received_at FROM pull_request_reviews
) WHERE account != 0 GROUP BY account ORDER BY account
"""

# The corpus's pull requests and reviews have a handful of authors: to measure the views
# with as many people as a large organization has, the authors and reviewers of the
# store's rows are rewritten to the population's accounts (ids are not in the tables'
# sorting keys, so a mutation may change them).
SPREAD = (
    """ALTER TABLE pull_requests
UPDATE author_id = {first} + cityHash64(repository_id, number) % {n},
       author_login = concat('gh', toString({first} + cityHash64(repository_id, number) % {n}))
WHERE 1""",
    """ALTER TABLE pull_request_reviews
UPDATE pr_author_id = {first} + cityHash64(repository_id, pr_number) % {n},
       reviewer_id = {first} + cityHash64(review_id) % {n},
       reviewer_login = concat('gh', toString({first} + cityHash64(review_id) % {n}))
WHERE 1""",
)
SPREAD_ACCOUNTS = """
SELECT uniqExact(account) FROM (
    SELECT author_id AS account FROM pull_requests
    UNION ALL
    SELECT reviewer_id FROM pull_request_reviews
)"""


def views_process(path: Path, population_file: Path) -> None:
    population = [
        Resolved.model_validate_json(line) for line in population_file.read_bytes().split()
    ]
    asyncio.run(time_identity_views(path, population))


async def time_identity_views(path: Path, population: list[Resolved]) -> None:
    sink = ClickHouseSink(f"chdb://{path}", "^(prod|production)$", "(?i)^incident$")
    await sink.start()
    try:
        found = await sink.run(lambda c: c.query(DATA_ACCOUNTS).result_rows)
        at, answers, people = datetime.now(UTC), [], set()
        for i, (account, login) in enumerate(found):
            bot = str(login).endswith("[bot]")
            person = None if bot or i % 2 else f"eng-{i // 4}"
            people.add(person)
            answers.append(Resolved(
                github_user_id=account, github_login=login or None, platform_user=person,
                source="explicit" if person else None, is_bot=bot, version=i + 1, at=at,
            ))  # fmt: skip
        await write_identities(sink, answers, 1)
        emit("data", len(found), sum(a.platform_user is not None for a in answers),
             len(people - {None}))  # fmt: skip
        await time_views(sink, "data")

        await write_identities(sink, population, len(answers) + 1)
        emit("population", len(population))
        await time_views(sink, "population")

        spread = max(a.github_user_id for a in population) - FIRST_ACCOUNT + 1
        for statement in SPREAD:
            sql = statement.format(first=FIRST_ACCOUNT, n=spread)
            await sink.run(lambda c: c.command(sql, settings={"mutations_sync": 2}))  # noqa: B023
        authors = await sink.run(lambda c: c.query(SPREAD_ACCOUNTS).result_rows)
        emit("spread", spread, int(authors[0][0]))
        await time_views(sink, "spread")
    finally:
        sink.close()


def view_latency(n: int, path: Path, population_file: Path) -> tuple[float, list[list[Any]]]:
    """Insert rate of the store, and the lines the views process emitted."""
    rate = build_store(n, path)
    code = (
        "import sys, pathlib; from tests.bench.identity import views_process; "
        "views_process(pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path), str(population_file)],
                         capture_output=True, text=True, check=True, timeout=3600)  # fmt: skip
    return rate, [orjson.loads(line) for line in out.stdout.splitlines() if line.startswith("[")]


# --- the report ------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--view-events", type=int, default=1_000_000)
    args = parser.parse_args()
    corpus.fetch(CACHE_DIR)

    started = time.perf_counter()
    pop = population(args.people)
    print(f"population of {args.people:,} people: {len(pop.events):,} inputs built in "
          f"{time.perf_counter() - started:.0f} s")  # fmt: skip
    print("| in the population | count |")
    print("| --- | ---: |")
    for what, count in pop.facts.items():
        print(f"| {what} | {count:,} |")
    print(f"| inputs in all | {len(pop.events):,} |")

    resolver = run_resolver(pop.events)
    print(f"\nresolver alone, in-process ({args.people:,} people, seeded, shuffled):")
    print("| step | items | s | per s |")
    print("| --- | ---: | ---: | ---: |")
    for step in resolver.steps:
        print(step.row())
    linked = sum(a.platform_user is not None for a in resolver.answers)
    by_source = Counter(a.source or "nobody" for a in resolver.answers)
    print(f"answers: {len(resolver.answers):,} accounts, {linked:,} with a person "
          f"({', '.join(f'{s}: {c:,}' for s, c in sorted(by_source.items()))}); "
          f"the fold wrote {resolver.changed:,} changed answers and "
          f"{resolver.conflicts:,} conflicts", flush=True)  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="hookstream-bench-identity-") as tmp:
        workdir = Path(tmp)
        worker = run_worker(pop.events, workdir)
        fold = next(step for step in resolver.steps if step.what == FOLD)
        print(f"\nidentity worker through Kafka ({len(pop.events):,} inputs, 1 partition):")
        print("| path | inputs/s | ratio to the fold without Kafka |")
        print("| --- | ---: | ---: |")
        print(f"| the fold without Kafka (in-process, step 1) | {fold.items / fold.seconds:,.0f} "
              "| 1.00 |")  # fmt: skip
        print(f"| `hookstream worker identity`, from the first commit | {worker.rate:,.0f} "
              f"| {worker.rate * fold.seconds / fold.items:.2f} |")  # fmt: skip
        print(f"worker: {worker.seconds:.0f} s from its start to the last input committed; "
              f"wrote {worker.outputs['resolved']:,} `resolved` and "
              f"{worker.outputs['conflict']:,} `conflict` records "
              f"(the fold without Kafka: {resolver.changed:,} and {resolver.conflicts:,})",
              flush=True)  # fmt: skip

        population_file = workdir / "population.jsonl"
        population_file.write_bytes(b"\n".join(a.model_dump_json().encode()
                                               for a in resolver.answers))  # fmt: skip
        rate, lines = view_latency(args.view_events, workdir / "views", population_file)
    facts = {line[0]: line[1:] for line in lines if line[0] != "view"}
    accounts, linked_accounts, people = facts["data"]
    spread, authors = facts["spread"]
    print(f"\nviews over {args.view_events:,} deliveries (fact rows inserted at "
          f"{rate:,.0f} deliveries/s). Phases: (a) `identities` holds a `resolved` row for "
          f"each of the {accounts:,} pull-request author and reviewer accounts of the data "
          f"({linked_accounts:,} linked, to {people:,} people); (b) plus the "
          f"{facts['population'][0]:,} answers of step 1's population; (c) the pull "
          f"requests' authors and the reviewers rewritten to the population's {spread:,} "
          f"accounts ({authors:,} distinct ones in the rows)")  # fmt: skip
    print("| view | phase | p50 ms | max ms (5 runs) | rows |")
    print("| --- | --- | ---: | ---: | ---: |")
    labels = {"data": "(a) the data's accounts", "population": f"(b) + {args.people:,} people",
              "spread": "(c) authors spread over the people"}  # fmt: skip
    verdicts = []
    for _, phase, view, p50, worst, rows in (line for line in lines if line[0] == "view"):
        print(f"| {view} | {labels[phase]} | {p50 * 1000:,.0f} | {worst * 1000:,.0f} "
              f"| {rows:,} |")  # fmt: skip
        if view == "person_activity":
            verdicts.append(f"{labels[phase][:3]} {p50 * 1000:,.0f} ms, "
                            f"{'met' if p50 <= GOAL_P50_S else 'not met'}")  # fmt: skip
    print(f"goal `person_activity` p50 ≤ {GOAL_P50_S * 1000:.0f} ms: {'; '.join(verdicts)}")


if __name__ == "__main__":
    main()
