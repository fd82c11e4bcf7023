"""``hookstream kafka up|down|status`` as a user runs it: idempotent, truthful, clean."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from deploy.broker import new_cluster_id
from deploy.commands import hookstream_argv
from tests.helpers import CACHE_DIR, free_port_pair, local_broker, running

pytestmark = pytest.mark.integration


def hookstream(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*hookstream_argv(), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.fixture
def broker_env(tmp_path: Path) -> dict[str, str]:
    return dict(
        os.environ,
        HOOKSTREAM_DATA_DIR=str(tmp_path / "data"),
        HOOKSTREAM_CACHE_DIR=str(CACHE_DIR),
        HOOKSTREAM_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port_pair()}",
        HOOKSTREAM_KAFKA_HEAP="256m",
    )


def pid_of(env: dict[str, str]) -> int:
    return int((Path(env["HOOKSTREAM_DATA_DIR"]) / "kafka" / "broker.pid").read_text())


def test_up_twice_down_twice_and_status_in_each_state(broker_env: dict[str, str]) -> None:
    address = broker_env["HOOKSTREAM_KAFKA_BOOTSTRAP"]
    stopped = hookstream(broker_env, "kafka", "status")
    assert (stopped.returncode, stopped.stdout.strip()) == (3, f"kafka stopped at {address}")

    first = hookstream(broker_env, "kafka", "up")
    assert first.returncode == 0, first.stderr
    pid = pid_of(broker_env)
    assert f"kafka running at {address} (pid {pid})" in first.stdout
    try:
        second = hookstream(broker_env, "kafka", "up")
        assert second.returncode == 0
        assert pid_of(broker_env) == pid  # a no-op: the same broker still runs
        status = hookstream(broker_env, "kafka", "status")
        assert (status.returncode, status.stdout.strip()) == (
            0,
            f"kafka running at {address} (pid {pid})",
        )
        # The topics exist with the configs the project asks for.
        log_dir = Path(broker_env["HOOKSTREAM_DATA_DIR"]) / "kafka" / "data"
        assert sorted(p.name for p in log_dir.glob("github.events-*"))[:1] == ["github.events-0"]
    finally:
        down = hookstream(broker_env, "kafka", "down")
    assert down.returncode == 0
    assert down.stdout.strip() == f"kafka stopped at {address}"
    assert not running(pid)
    # A clean shutdown leaves Kafka's marker, so the next start skips log recovery.
    assert (log_dir / ".kafka_cleanshutdown").exists()
    again = hookstream(broker_env, "kafka", "down")
    assert (again.returncode, again.stdout.strip()) == (0, f"kafka stopped at {address}")
    assert hookstream(broker_env, "kafka", "status").returncode == 3


def test_a_stale_pid_file_is_handled(broker_env: dict[str, str]) -> None:
    kafka_dir = Path(broker_env["HOOKSTREAM_DATA_DIR"]) / "kafka"
    kafka_dir.mkdir(parents=True)
    # A pid that is alive but is not our broker (this test process), then a dead one.
    for stale in (os.getpid(), 2**22 + 1):
        (kafka_dir / "broker.pid").write_text(str(stale))
        status = hookstream(broker_env, "kafka", "status")
        assert status.returncode == 3
        assert "stopped" in status.stdout
        assert not (kafka_dir / "broker.pid").exists()
        assert hookstream(broker_env, "kafka", "down").returncode == 0


@pytest.mark.parametrize("cluster_id", ["-J8BfLEtQ3u3Sgx3QjCHpA", "--nM8Vyh7T6yJCg2VPb8vcg"])
def test_storage_formats_with_a_cluster_id_that_starts_with_a_dash(
    tmp_path: Path, cluster_id: str
) -> None:
    # 1 id in 64 starts with '-'; Kafka's storage tool once read such an id as an option.
    broker = local_broker(tmp_path, heap="256m")
    broker.resolve_jars()
    broker.home.mkdir(parents=True)
    broker._write_config()
    broker._format_storage(cluster_id)
    meta = (broker.log_dir / "meta.properties").read_text()
    assert f"cluster.id={cluster_id}\n" in meta


def test_new_cluster_ids_never_start_with_a_dash() -> None:
    ids = [new_cluster_id() for _ in range(5000)]
    assert not [i for i in ids if i.startswith("-")]
    assert {len(i) for i in ids} == {22}
    assert len(set(ids)) == len(ids)
