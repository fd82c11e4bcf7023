"""``hookstream send`` and ``hookstream ingress`` from the command line."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer

from deploy.commands import hookstream_argv
from deploy.corpus import Example
from deploy.send import signed_delivery
from schemas.envelope import Envelope, RecordHeader
from schemas.topics import ensure_topics, topic_specs
from tests.helpers import (
    CACHE_DIR,
    SECRET,
    RunningIngress,
    free_port_pair,
    make_settings,
    processor_env,
    read_topic,
)

pytestmark = pytest.mark.integration


def cli_env(**env: str) -> dict[str, str]:
    return dict(os.environ, HOOKSTREAM_CACHE_DIR=str(CACHE_DIR), **env)


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*hookstream_argv(), *args],
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def run_cli_async(*args: str) -> subprocess.CompletedProcess[str]:
    """Like run_cli, without blocking the event loop that serves the test's ingress."""
    process = await asyncio.create_subprocess_exec(
        *hookstream_argv(), *args,
        env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return subprocess.CompletedProcess(args, process.returncode, out.decode(), err.decode())


async def test_send_an_example_and_redeliver_it(ingress: RunningIngress) -> None:
    guid = str(uuid.uuid4())
    common = ("--url", ingress.webhook_url, "--secret", SECRET.decode(), "--delivery", guid)
    first = await run_cli_async("send", "--example", "pull_request.opened", *common)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f'202 {{"delivery":"{guid}"}}'
    form = await run_cli_async("send", "--example", "pull_request.opened", "--form", *common)
    assert form.returncode == 0, form.stderr
    records = await read_topic(ingress.settings)
    envelopes = [Envelope.from_record(r.headers, r.value) for r in records]
    assert [e.identity for e in envelopes] == [("1", guid), ("1", guid)]
    assert [e.content_type for e in envelopes] == [
        "application/json",
        "application/x-www-form-urlencoded",
    ]
    assert envelopes[0].payload == envelopes[1].payload
    assert envelopes[0].action == "opened"
    assert dict(records[0].headers)[RecordHeader.TARGET_TYPE] == b"repository"


async def test_send_with_a_wrong_secret_reports_the_refusal(ingress: RunningIngress) -> None:
    result = await run_cli_async(
        "send", "--example", "ping", "--url", ingress.webhook_url, "--secret", "no"
    )
    assert result.returncode == 1
    assert result.stdout.startswith("401 ")
    assert await read_topic(ingress.settings) == []


def test_send_an_unknown_example_names_the_close_ones() -> None:
    result = run_cli("send", "--example", "pull_request.nope", "--secret", "x")
    assert result.returncode == 1
    assert "no example named 'pull_request.nope'" in result.stderr
    assert "pull_request.opened" in result.stderr


def test_send_explains_what_is_missing(tmp_path: Path) -> None:
    payload = tmp_path / "payload.json"
    payload.write_text('{"zen": "hi"}')
    no_event = run_cli("send", str(payload), "--secret", "x")
    assert (no_event.returncode, "--event is required" in no_event.stderr) == (2, True)
    nothing = run_cli("send", "--secret", "x")
    assert (nothing.returncode, "give a payload FILE or --example" in nothing.stderr) == (2, True)
    no_secret = run_cli(
        "send", str(payload), "--event", "ping",
        HOOKSTREAM_WEBHOOK_SECRETS="", HOOKSTREAM_DATA_DIR=str(tmp_path / "empty"),
    )  # fmt: skip
    assert no_secret.returncode == 2
    assert "HOOKSTREAM_WEBHOOK_SECRETS" in no_secret.stderr
    unreachable = run_cli(
        "send", str(payload), "--event", "ping", "--secret", "x",
        "--url", "http://127.0.0.1:1/webhooks/github",
    )  # fmt: skip
    assert (unreachable.returncode, "no answer from" in unreachable.stderr) == (1, True)


def test_ingress_refuses_to_start_without_a_secret() -> None:
    result = run_cli("ingress", HOOKSTREAM_WEBHOOK_SECRETS="")
    assert result.returncode == 2
    assert "HOOKSTREAM_WEBHOOK_SECRETS" in result.stderr
    assert "refusing to start" in result.stderr


@pytest.mark.parametrize("command", [[], ["kafka"], ["ingress"], ["dev"], ["send"]])
def test_every_command_has_help(command: list[str]) -> None:
    result = run_cli(*command, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: hookstream")


async def test_ingress_with_two_processes_serves_and_stops_cleanly(
    kafka_bootstrap: str, tmp_path: Path, examples: tuple[Example, ...]
) -> None:
    settings = make_settings(kafka_bootstrap, tmp_path, ingress_port=free_port_pair())
    process = await asyncio.create_subprocess_exec(
        *hookstream_argv(), "ingress",
        env=cli_env(
            HOOKSTREAM_WEBHOOK_SECRETS=SECRET.decode(),
            HOOKSTREAM_KAFKA_BOOTSTRAP=kafka_bootstrap,
            HOOKSTREAM_EVENTS_TOPIC=settings.events_topic,
            HOOKSTREAM_EVENTS_PARTITIONS=str(settings.events_partitions),
            HOOKSTREAM_INGRESS_PORT=str(settings.ingress_port),
            HOOKSTREAM_INGRESS_WORKERS="2",
        ),
        stderr=subprocess.PIPE,
    )  # fmt: skip
    base = f"http://127.0.0.1:{settings.ingress_port}"
    deliveries = [signed_delivery(e.body, e.event, SECRET) for e in examples[:40]]
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(150):
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{base}/readyz") as response:
                        if response.status == 200:
                            break
                await asyncio.sleep(0.2)
            for delivery in deliveries:
                async with session.post(
                    f"{base}/webhooks/github", data=delivery.body, headers=delivery.headers
                ) as response:
                    assert response.status == 202
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()[-2000:]
    records = await read_topic(settings)
    assert sorted(dict(r.headers)[RecordHeader.DELIVERY].decode() for r in records) == sorted(
        d.delivery_id for d in deliveries
    )


DECOY = "raise SystemExit('a schemas.py of the working directory was imported')\n"


def test_children_import_hookstream_not_the_working_directorys_files(tmp_path: Path) -> None:
    # Any FastAPI project has a schemas.py; hookstream run from there must not import it.
    project = tmp_path / "project"
    project.mkdir()
    (project / "schemas.py").write_text(DECOY)
    (project / "triggers.yml").write_text("workflows:\n  w:\n    on: ['github:*/*:push']\n")

    def check(argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*argv, "triggers", "check", "triggers.yml"], cwd=project, env=cli_env(),
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    started = check(hookstream_argv())
    assert (started.returncode, started.stdout.strip()) == (
        0, "triggers.yml: ok: 1 workflows, 1 triggers, 0 commands, 0 targets"
    )  # fmt: skip
    # How children were started before: the working directory came first on the path.
    assert (
        "schemas.py of the working directory" in check([sys.executable, "-m", "deploy.cli"]).stderr
    )


async def test_replay_from_a_directory_with_a_decoy_schemas_py(
    kafka_bootstrap: str, tmp_path: Path, examples: tuple[Example, ...]
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "schemas.py").write_text(DECOY)
    settings = make_settings(kafka_bootstrap, tmp_path)
    await ensure_topics(settings.kafka_bootstrap, topic_specs(settings))
    push = next(e for e in examples if e.name == "push#5")
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.events_topic, push.body, key=b"1",
            headers=[(RecordHeader.EVENT, b"push"), (RecordHeader.DELIVERY, b"decoy-1")],
        )  # fmt: skip
    finally:
        await producer.stop()
    # The user's entry point, run from the project: the worker it starts must read the log.
    replay = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "hookstream"), "replay", "triggers",
        cwd=project, env=processor_env(settings), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(replay.communicate(), 120)
    assert replay.returncode == 0, out.decode()[-2000:]
    assert b"replay of triggers done" in out


@pytest.mark.parametrize(
    "args", [("send", "--list"), ("sql", "SELECT number FROM numbers(100000)")]
)
def test_a_closed_pipe_ends_a_command_quietly(args: tuple[str, ...], tmp_path: Path) -> None:
    # `hookstream send --list | head`: the reader goes away before the writer is done.
    env = cli_env(HOOKSTREAM_DATA_DIR=str(tmp_path), HOOKSTREAM_QUERY_PORT="1")
    process = subprocess.Popen(
        hookstream_argv(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None
    assert process.stderr is not None
    process.stdout.close()  # like `head` exiting at once
    err = process.stderr.read().decode()
    assert process.wait(120) == 128 + signal.SIGPIPE
    assert err == ""


def test_ctrl_c_ends_a_command_quietly() -> None:
    # A server that accepts the connection and never answers: `send` waits for it.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/webhooks/github"
        process = subprocess.Popen(
            hookstream_argv("send", "--example", "ping", "--secret", "s", "--url", url),
            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        connection, _ = silent.accept()  # the request has been sent
        with connection:
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGINT
    assert (out, err) == ("", "")
