"""A real Apache Kafka broker on this machine, without Docker.

The broker's jars come from Maven Central (``deploy/kafka/pom.xml``, resolved once with
Maven into the cache dir). One JVM runs a combined KRaft broker+controller on loopback;
its storage is formatted once under ``$HOOKSTREAM_DATA_DIR/kafka``. ``up`` is idempotent,
``down`` stops it cleanly (SIGTERM lets Kafka write its clean-shutdown marker) and
``status`` checks the process *and* the port, so a stale pid file never lies.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from schemas.errors import HookstreamError
from schemas.settings import Settings

RUNTIME_DIR = Path(__file__).parent / "kafka"
POM = RUNTIME_DIR / "pom.xml"
LOG4J_CONFIG = RUNTIME_DIR / "log4j2.properties"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class BrokerError(HookstreamError):
    """The broker could not be set up, started or stopped; the message says why."""


class BrokerState(Enum):
    RUNNING = "running"
    STOPPED = "stopped"
    EXTERNAL = "external"


def kafka_version() -> str:
    """The pinned Kafka version, read from the POM so it is written down in one place."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(POM).getroot().find("m:properties/m:kafka.version", ns)
    if node is None or not node.text:
        raise BrokerError(f"{POM} does not pin kafka.version")
    return node.text.strip()


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding.

    Like Kafka's own ``Uuid.randomUuid()``, ids that start with '-' are drawn again:
    command-line tools read such an id as an option (1 id in 64 starts with '-').
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def split_bootstrap(bootstrap: str) -> tuple[str, int]:
    first = bootstrap.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class BrokerStatus:
    state: BrokerState
    bootstrap: str
    pid: int | None = None
    detail: str = ""

    def __str__(self) -> str:
        text = f"kafka {self.state.value} at {self.bootstrap}"
        if self.pid:
            text += f" (pid {self.pid})"
        return f"{text}{': ' + self.detail if self.detail else ''}"


class LocalBroker:
    """The single-node KRaft broker that ``hookstream kafka up|down|status`` manages."""

    def __init__(self, settings: Settings, *, start_timeout: float = 90.0) -> None:
        self.settings = settings
        self.bootstrap = settings.kafka_bootstrap
        self.host, self.port = split_bootstrap(self.bootstrap)
        self.controller_port = self.port + 1
        self.home = settings.kafka_dir.resolve()
        self.lib_dir = (settings.cache_dir / f"kafka-{kafka_version()}" / "lib").resolve()
        self.start_timeout = start_timeout

    # --- files --------------------------------------------------------------------------
    @property
    def pid_file(self) -> Path:
        return self.home / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "broker.log"

    @property
    def config_file(self) -> Path:
        return self.home / "server.properties"

    @property
    def log_dir(self) -> Path:
        return self.home / "data"

    @property
    def is_external(self) -> bool:
        return self.host not in LOOPBACK

    # --- setup --------------------------------------------------------------------------
    def resolve_jars(self) -> Path:
        """Copy Kafka and its runtime dependencies from Maven Central into the cache."""
        marker = self.lib_dir / ".complete"
        if marker.exists():
            return self.lib_dir
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError("Maven (mvn) is needed to fetch Kafka's jars; install it first")
        staging = self.lib_dir.with_name("lib.partial")
        shutil.rmtree(staging, ignore_errors=True)
        result = subprocess.run(
            [
                mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
                "-DincludeScope=runtime", f"-DoutputDirectory={staging.resolve()}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise BrokerError(f"resolving Kafka jars failed:\n{result.stdout}{result.stderr}")
        shutil.rmtree(self.lib_dir, ignore_errors=True)
        staging.rename(self.lib_dir)
        marker.touch()
        return self.lib_dir

    def _java(self) -> str:
        home = os.environ.get("JAVA_HOME")
        java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
        if not java:
            raise BrokerError("Java 17+ is needed to run Kafka; install a JDK first")
        return java

    def _java_command(self, main_class: str, *args: str, heap: str | None = None) -> list[str]:
        jvm = [self._java()]
        if heap:
            jvm += [f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20"]
        jvm += [
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            f"-Dkafka.logs.dir={self.home}",
            "-cp",
            f"{self.lib_dir}/*",
            main_class,
        ]
        return jvm + list(args)

    def _write_config(self) -> None:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"{self.host}:{self.controller_port}",
            "listeners": (
                f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.log_dir.resolve()),
            # One node: every internal topic has a single replica.
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Topics are created by hookstream with their own configs (schemas/topics.py).
            "auto.create.topics.enable": "false",
            "message.max.bytes": str(self.settings.max_record_bytes),
            "replica.fetch.max.bytes": str(self.settings.max_record_bytes),
            "num.partitions": "1",
        }
        self.config_file.write_text("".join(f"{k}={v}\n" for k, v in props.items()))

    def _format_storage(self, cluster_id: str | None = None) -> None:
        if (self.log_dir / "meta.properties").exists():
            return
        result = subprocess.run(
            self._java_command(
                "kafka.tools.StorageTool", "format",
                # Joined with '=': an id may start with '-', which a separate argument
                # would turn into an option.
                f"--cluster-id={cluster_id or new_cluster_id()}",
                "--config", str(self.config_file), "--standalone",
            ),
            capture_output=True,
            text=True,
            check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise BrokerError(f"formatting Kafka storage failed:\n{result.stderr[-2000:]}")

    # --- process ------------------------------------------------------------------------
    def _read_pid(self) -> int | None:
        """The pid of *our* broker, or None; a stale pid file is removed."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if not _alive(pid):
            self.pid_file.unlink(missing_ok=True)
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            cmdline = []
        # A recycled pid belongs to some other program: only our config marks our broker.
        # (The cmdline is briefly empty while the java launcher re-executes itself.)
        if cmdline != [b""] and str(self.config_file).encode() not in cmdline:
            self.pid_file.unlink(missing_ok=True)
            return None
        return pid

    def status(self) -> BrokerStatus:
        if self.is_external:
            state = BrokerState.RUNNING if port_open(self.host, self.port) else BrokerState.STOPPED
            return BrokerStatus(BrokerState.EXTERNAL, self.bootstrap, detail=state.value)
        pid = self._read_pid()
        listening = port_open(self.host, self.port)
        if pid and listening:
            return BrokerStatus(BrokerState.RUNNING, self.bootstrap, pid)
        if pid:
            return BrokerStatus(BrokerState.STOPPED, self.bootstrap, pid, "process up, port closed")
        if listening:
            return BrokerStatus(
                BrokerState.STOPPED, self.bootstrap, detail="port is held by another process"
            )
        return BrokerStatus(BrokerState.STOPPED, self.bootstrap)

    def up(self) -> BrokerStatus:
        """Start the broker unless it runs already; return once it accepts connections."""
        if self.is_external:
            return self.status()
        current = self.status()
        if current.state is BrokerState.RUNNING:
            return current
        if current.pid is None and port_open(self.host, self.port):
            raise BrokerError(
                f"{self.bootstrap} is already in use by a process hookstream did not start; "
                "stop it, or point HOOKSTREAM_KAFKA_BOOTSTRAP at it to use it as is"
            )
        if current.pid is None:
            self.resolve_jars()
            self.home.mkdir(parents=True, exist_ok=True)
            self._write_config()
            self._format_storage()
            # A fresh log per start: readiness is read from it (see _log_says_started).
            if self.log_file.exists():
                self.log_file.replace(self.log_file.with_suffix(".log.1"))
            with self.log_file.open("wb") as out:
                process = subprocess.Popen(
                    self._java_command(
                        "kafka.Kafka", str(self.config_file), heap=self.settings.kafka_heap
                    ),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # Ctrl-C in the terminal reaches us, not the JVM
                )
            self.pid_file.write_text(str(process.pid))
        return self._wait_until_serving()

    def _wait_until_serving(self) -> BrokerStatus:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            pid = self._read_pid()
            if pid is None:
                raise BrokerError(f"Kafka exited while starting; see {self.log_file}")
            if port_open(self.host, self.port) and self._log_says_started():
                return BrokerStatus(BrokerState.RUNNING, self.bootstrap, pid)
            time.sleep(0.2)
        raise BrokerError(
            f"Kafka did not start within {self.start_timeout:g} s; see {self.log_file}"
        )

    def _log_says_started(self) -> bool:
        # The port opens before the broker finishes recovery; this line comes after.
        with contextlib.suppress(OSError), self.log_file.open("rb") as f:
            f.seek(max(0, self.log_file.stat().st_size - 64 * 1024))
            return b"Kafka Server started" in f.read()
        return False

    def down(self, timeout: float = 60.0) -> BrokerStatus:
        """Stop the broker cleanly; a broker that does not stop in time is killed."""
        if self.is_external:
            return self.status()
        pid = self._read_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.pid_file.unlink(missing_ok=True)
        return self.status()


def _alive(pid: int) -> bool:
    try:
        # Reap it if it is our child, so it does not linger as a zombie.
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return False
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError):
        if stat.read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True
