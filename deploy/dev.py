"""``hookstream dev`` / ``make run``: Kafka, the ingress and the workers, one command.

Each part runs as its own child process (as it would in production) under a small
supervisor; Ctrl-C or SIGTERM stops the children, then the broker if dev started it.
A webhook secret is generated into the data dir on first run so that nothing has to
be configured to try the system.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from pathlib import Path
from types import FrameType

from deploy.broker import BrokerState, LocalBroker
from deploy.commands import hookstream_argv
from schemas.settings import Settings

# Commands started under `dev`: the ingress and every processor's worker.
WORKERS = ("triggers", "insights", "checks", "identity")
CHILDREN: tuple[tuple[str, ...], ...] = (("ingress",), *(("worker", w) for w in WORKERS))


def _generated(path: Path, create: bool) -> bytes | None:
    if path.exists():
        return path.read_text().strip().encode()
    if not create:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32)
    path.touch(mode=0o600)
    path.write_text(value + "\n")
    return value.encode()


def local_secret(settings: Settings, *, create: bool) -> bytes | None:
    """The configured secret, else the one generated into the data dir (made if asked)."""
    if settings.secrets:
        return settings.secrets[0]
    return _generated(settings.generated_secret_file, create)


def local_runner_token(settings: Settings, *, create: bool) -> bytes | None:
    """The configured runner token, else one generated into the data dir."""
    if settings.runner_token_list:
        return settings.runner_token_list[0]
    return _generated(settings.data_dir / "runner-token", create)


def banner(settings: Settings, secret: bytes, token: bytes) -> str:
    """What ``make run`` prints once everything is started: where each part answers."""
    url = f"http://{settings.ingress_host}:{settings.ingress_port}/webhooks/github"
    checks = (
        f"sent to GitHub as App {settings.github_app_id}"
        if settings.github_app_id
        else "recorded, not sent (set HOOKSTREAM_GITHUB_APP_ID and _PRIVATE_KEY_FILE)"
    )
    return (
        f"\nhookstream is running.\n"
        f"  webhook URL:    {url}\n"
        f"  webhook secret: {secret.decode()}  (stored in {settings.generated_secret_file})\n"
        f"  runner token:   {token.decode()}  (POST /v1/runs/<id>/status, Bearer)\n"
        f"  triggers:       {settings.triggers_path or 'none (create ./triggers.yml)'}\n"
        f"  try it:         hookstream send --example pull_request.opened\n"
        f"  metrics:        http://{settings.ingress_host}:{settings.ingress_port}/metrics, "
        f"workers on :{'/:'.join(str(settings.worker_metrics_port_for(w)) for w in WORKERS)}\n"
        f"  check runs:     {checks}\n"
        f"  insights page:  http://127.0.0.1:{settings.query_port}/insights\n"
        f'  insights SQL:   hookstream sql "SELECT * FROM dora_deployment_frequency"\n'
        f"Ctrl-C stops everything.\n"
    )


def run_dev(settings: Settings) -> int:
    broker = LocalBroker(settings)
    started_broker = False
    if broker.is_external:
        print(f"using the Kafka cluster at {settings.kafka_bootstrap}", flush=True)
    else:
        if broker.status().state is not BrokerState.RUNNING:
            print("starting Kafka …", flush=True)
            started_broker = True
        print(broker.up(), flush=True)
    secret = local_secret(settings, create=True)
    token = local_runner_token(settings, create=True)
    assert secret is not None
    assert token is not None
    env = dict(
        os.environ,
        HOOKSTREAM_WEBHOOK_SECRETS=secret.decode(),
        HOOKSTREAM_RUNNER_TOKENS=token.decode(),
    )
    children = [
        subprocess.Popen(hookstream_argv(*args), env=env, start_new_session=True)
        for args in CHILDREN
    ]
    print(banner(settings, secret, token), flush=True)
    stopping = False

    def _stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    code = 0
    while not stopping:
        exited = [c for c in children if c.poll() is not None]
        if exited:
            code = exited[0].returncode or 1
            print(f"a child process exited with {exited[0].returncode}; stopping", flush=True)
            break
        time.sleep(0.2)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.kill()
    if started_broker:
        print("stopping Kafka …", flush=True)
        print(broker.down(), flush=True)
    return code
