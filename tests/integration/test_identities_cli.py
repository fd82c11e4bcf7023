"""``hookstream identities import|list`` from the command line, against the real broker."""

from __future__ import annotations

import asyncio
import subprocess
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from deploy.commands import hookstream_argv
from schemas.identity import (
    AccountSeen,
    AnyIdentityEvent,
    Link,
    Resolved,
    Source,
    parse_identity_event,
    record_key,
)
from schemas.settings import Settings
from schemas.topics import ensure_topics, topic_specs
from tests.helpers import REPO_ROOT, make_settings, processor_env, read_topic

pytestmark = pytest.mark.integration

AT = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)

# The example of the README: the columns of DESIGN.md §8, empty cells for what is unknown.
PEOPLE_CSV = """\
platform_user,github_login,github_user_id,email,role
alice,octocat,583231,alice@example.com,deployer
alice,,583231,,admin
bob,hubot,9919,,
carol,,,carol@example.com,
"""


async def hookstream(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    process = await asyncio.create_subprocess_exec(
        *hookstream_argv(), *args,
        env=processor_env(settings), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return subprocess.CompletedProcess(args, process.returncode, out.decode(), err.decode())


async def publish(settings: Settings, events: list[AnyIdentityEvent]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for event in events:
            value = event.model_dump_json().encode()
            await producer.send_and_wait(settings.identity_topic, value, key=record_key(event))
    finally:
        await producer.stop()


async def identity_events(settings: Settings) -> list[Any]:
    records = await read_topic(settings, settings.identity_topic, partitions=1)
    return [parse_identity_event(record.value) for record in records]


async def test_a_good_csv_becomes_one_link_per_row(kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = make_settings(kafka_bootstrap, tmp_path)
    people = tmp_path / "people.csv"
    people.write_text(PEOPLE_CSV)

    result = await hookstream(settings, "identities", "import", str(people))
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"imported 4 links from {people}\n"

    events = await identity_events(settings)
    assert all(isinstance(e, Link) and e.source is Source.CSV for e in events)
    assert len({e.event_id for e in events}) == 4
    assert [
        (e.platform_user, e.github_login, e.github_user_id, e.email, e.role) for e in events
    ] == [
        ("alice", "octocat", 583231, "alice@example.com", "deployer"),
        ("alice", None, 583231, None, "admin"),
        ("bob", "hubot", 9919, None, None),
        ("carol", None, None, "carol@example.com", None),
    ]
    records = await read_topic(settings, settings.identity_topic, partitions=1)
    assert [r.key for r in records] == [b"583231", b"583231", b"9919", b"carol"]


async def test_a_csv_with_bad_rows_names_each_and_imports_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = make_settings(kafka_bootstrap, tmp_path)
    await ensure_topics(settings.kafka_bootstrap, topic_specs(settings))
    people = tmp_path / "people.csv"
    people.write_text(
        "github_user_id,platform_user,github_login,email,role\n"
        "583231,alice,octocat,,deployer\n"
        "twelve,bob,,,\n"
        "\n"
        "9919,carol,,,on call\n"
    )
    result = await hookstream(settings, "identities", "import", str(people))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{people}:3: github_user_id: must be a positive integer",
        f"{people}:5: role: must be 1-64 of [A-Za-z0-9_.:-], starting with a letter or a digit",
        f"hookstream: nothing imported from {people}",
    ]
    assert await identity_events(settings) == []

    people.write_text("")
    result = await hookstream(settings, "identities", "import", str(people))
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == (
        f"{people}: empty file: the first line must be the header "
        "platform_user,github_login,github_user_id,email,role"
    )
    result = await hookstream(settings, "identities", "import", str(tmp_path / "nobody.csv"))
    assert (result.returncode, "cannot read: No such file" in result.stderr) == (2, True)
    assert await identity_events(settings) == []


async def test_list_shows_who_is_who_after_an_import(kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = make_settings(kafka_bootstrap, tmp_path)
    people = tmp_path / "people.csv"
    people.write_text(PEOPLE_CSV)
    empty = await hookstream(settings, "identities", "list", "--format", "csv")
    assert (empty.returncode, empty.stdout, empty.stderr) == (
        0, "github_user_id,github_login,platform_user,roles,source,is_bot\n", ""
    )  # fmt: skip
    assert (await hookstream(settings, "identities", "import", str(people))).returncode == 0
    # What the identity worker learns from deliveries, and one of its own answers (skipped).
    await publish(settings, [
        AccountSeen(event_id="d-1", at=AT, github_user_id=583231, github_login="octocat"),
        AccountSeen(event_id="d-2", at=AT, github_user_id=49699333,
                    github_login="dependabot[bot]", is_bot=True),
        Resolved(github_user_id=583231, github_login="octocat", platform_user="mallory",
                 source="explicit", at=AT),
    ])  # fmt: skip

    table = await hookstream(settings, "identities", "list")
    assert (table.returncode, table.stderr) == (0, ""), table.stderr
    assert table.stdout.splitlines() == [
        "github_user_id | github_login    | platform_user | roles          | source   | is_bot",
        "---------------+-----------------+---------------+----------------+----------+-------",
        "9919           | NULL            | bob           |                | explicit | False",
        "583231         | octocat         | alice         | admin,deployer | explicit | False",
        "49699333       | dependabot[bot] | NULL          |                | NULL     | True",
        "(3 rows)",
    ]
    as_json = await hookstream(settings, "identities", "list", "--format", "json")
    assert [orjson.loads(line) for line in as_json.stdout.splitlines()] == [
        {"github_user_id": 9919, "github_login": None, "platform_user": "bob", "roles": "",
         "source": "explicit", "is_bot": False},
        {"github_user_id": 583231, "github_login": "octocat", "platform_user": "alice",
         "roles": "admin,deployer", "source": "explicit", "is_bot": False},
        {"github_user_id": 49699333, "github_login": "dependabot[bot]", "platform_user": None,
         "roles": "", "source": None, "is_bot": True},
    ]  # fmt: skip


def readme_csv() -> str:
    """The people.csv of the README, as a reader pastes it (the list indent removed)."""
    text = (REPO_ROOT / "README.md").read_text()
    block = text.split("cat > people.csv <<'CSV'\n", 1)[1].split("CSV\n", 1)[0]
    return textwrap.dedent(block)


async def test_the_readme_example_imports(kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = make_settings(kafka_bootstrap, tmp_path)
    people = tmp_path / "people.csv"
    people.write_text(readme_csv())
    result = await hookstream(settings, "identities", "import", str(people))
    assert (result.returncode, result.stdout) == (0, f"imported 3 links from {people}\n")
    events = await identity_events(settings)
    assert [(e.platform_user, e.github_user_id, e.github_login) for e in events] == [
        ("alice@acme.example", 21031067, "octocat"),
        ("alice@acme.example", 583231, None),
        ("bob@acme.example", None, "bob-gh"),
    ]


def test_identities_commands_have_help() -> None:
    for args in (["identities"], ["identities", "import"], ["identities", "list"]):
        result = subprocess.run(
            hookstream_argv(*args, "--help"), capture_output=True, text=True, timeout=60,
            check=False,
        )  # fmt: skip
        assert (result.returncode, result.stdout.startswith("usage: hookstream")) == (0, True)
