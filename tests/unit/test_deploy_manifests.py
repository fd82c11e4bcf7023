"""The deployment files agree with the code: deploy/Dockerfile, compose.yaml and k8s/.

Each check is a function from the parsed files to the problems it finds. A test runs it on
the real files and expects none; ``test_each_check_catches_what_it_checks`` breaks, in a
copy, the one thing a check is about and expects that check to complain. Offline: the
`docker compose config` and `kubectl kustomize` tests run only where those clients exist,
and neither needs a Docker engine or a cluster.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import SecretStr

from deploy.cli import PROCESSORS, build_parser
from ingress.app import create_app
from schemas.settings import WORKER_METRICS_PORTS, Settings
from schemas.topics import topic_specs

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
DOCS = (REPO / "docs" / "operations.md", K8S / "README.md")

# The image every manifest runs: `hookstream:` + the version in pyproject.toml.
IMAGE = "hookstream:0.1.0"

PREFIX = Settings.model_config.get("env_prefix", "")
SECRET_VARIABLES = frozenset(
    f"{PREFIX}{name.upper()}"
    for name, field in Settings.model_fields.items()
    if field.annotation is SecretStr
)
KEY_FILE = f"{PREFIX}GITHUB_PRIVATE_KEY_FILE"
DSN = f"{PREFIX}CLICKHOUSE_DSN"
# Not part of kustomization.yaml, on purpose: created by hand when needed.
ONE_OFF_MANIFESTS = frozenset({"replay-job.yaml"})
# Values for the compose file's ${…} (they live in deploy/.env, which is not committed).
COMPOSE_DOTENV = {"CLICKHOUSE_PASSWORD": "pw-from-dotenv", "GITHUB_APP_ID": "123456"}

Json = dict[str, Any]
Problems = list[str]


@dataclass
class Manifests:
    compose: Json
    k8s: list[tuple[str, Json]]  # (file name, document)
    kustomization: Json
    dockerfile: str
    texts: dict[str, str]  # every file above and the operator docs, as text


def load_manifests() -> Manifests:
    k8s_files = sorted(K8S.glob("*.yaml"))
    texts = {
        str(p.relative_to(REPO)): p.read_text()
        for p in [DEPLOY / "compose.yaml", DEPLOY / "Dockerfile", *k8s_files, *DOCS]
    }
    k8s = [
        (p.name, doc)
        for p in k8s_files
        if p.name != "kustomization.yaml"
        for doc in yaml.safe_load_all(p.read_text())
        if doc
    ]
    return Manifests(
        compose=yaml.safe_load((DEPLOY / "compose.yaml").read_text()),
        k8s=k8s,
        kustomization=yaml.safe_load((K8S / "kustomization.yaml").read_text()),
        dockerfile=(DEPLOY / "Dockerfile").read_text(),
        texts=texts,
    )


@pytest.fixture(scope="module")
def manifests() -> Manifests:
    return load_manifests()


# --- reading the files ----------------------------------------------------------------


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` and ``$$``."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        value = env.get(name)
        empty = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in (":-", "-") and empty:
            return str(arg)
        if op in (":?", "?") and empty:
            raise KeyError(f"{name}: {arg}")
        return value or ""

    pattern = r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    return re.sub(pattern, one, text.replace("$$", "\0")).replace("\0", "$")


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    lines = [line.strip() for line in joined.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def image_env(m: Manifests) -> dict[str, str]:
    """The ENV of the image's final stage."""
    env: dict[str, str] = {}
    for instruction, rest in dockerfile_instructions(m.dockerfile):
        if instruction == "FROM":
            env = {}
        elif instruction == "ENV":
            for token in shlex.split(rest):
                key, _, value = token.partition("=")
                env[key] = value
    return env


def compose_services(m: Manifests) -> dict[str, Json]:
    services: dict[str, Json] = m.compose["services"]
    return services


def compose_hookstream(m: Manifests) -> dict[str, Json]:
    return {name: s for name, s in compose_services(m).items() if "build" in s}


def compose_env(service: Json) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def k8s_objects(m: Manifests, kind: str) -> list[Json]:
    return [doc for _, doc in m.k8s if doc.get("kind") == kind]


def k8s_object(m: Manifests, kind: str, name: str) -> Json | None:
    found = [o for o in k8s_objects(m, kind) if o["metadata"]["name"] == name]
    return found[0] if found else None


def deployment(m: Manifests, name: str) -> Json:
    found = k8s_object(m, "Deployment", name)
    assert found is not None, name
    return found


def configmap_data(m: Manifests, name: str = "hookstream-config") -> dict[str, str]:
    found = k8s_object(m, "ConfigMap", name)
    return {} if found is None else {k: str(v) for k, v in (found.get("data") or {}).items()}


def secret_keys(secret: Json) -> set[str]:
    return set(secret.get("stringData") or {}) | set(secret.get("data") or {})


def pod_containers(m: Manifests) -> Iterator[tuple[Json, Json, Json]]:
    """(workload, pod spec, container) of every Deployment and Job."""
    for kind in ("Deployment", "Job"):
        for workload in k8s_objects(m, kind):
            pod = workload["spec"]["template"]["spec"]
            for container in pod.get("initContainers", []) + pod["containers"]:
                yield workload, pod, container


@dataclass(frozen=True)
class Source:
    kind: str  # "image" | "value" | "configmap" | "secret"
    value: str | None = None


def k8s_env(m: Manifests, container: Json) -> dict[str, Source]:
    """Where each variable of a container comes from, and its value when it is known."""
    env = {k: Source("image", v) for k, v in image_env(m).items()}
    for ref in container.get("envFrom", []):
        if "configMapRef" in ref:
            for key, value in configmap_data(m, ref["configMapRef"]["name"]).items():
                env[key] = Source("configmap", value)
        if "secretRef" in ref:
            secret = k8s_object(m, "Secret", ref["secretRef"]["name"])
            for key in secret_keys(secret or {}):
                env[key] = Source("secret")
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = Source("value", str(item["value"]))
        elif "secretKeyRef" in item.get("valueFrom", {}):
            env[item["name"]] = Source("secret")
        elif "configMapKeyRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["configMapKeyRef"]
            env[item["name"]] = Source("configmap", configmap_data(m, ref["name"]).get(ref["key"]))
    return env


def value_of(env: Mapping[str, Source], variable: str) -> str | None:
    source = env.get(variable)
    return None if source is None else source.value


def setting_default(variable: str) -> Any:
    return Settings.model_fields[variable.removeprefix(PREFIX).lower()].default


def settings_of(env: Mapping[str, str]) -> Settings:
    """The Settings these variables give (and nothing from this process's environment)."""
    return Settings.model_validate(
        {k.removeprefix(PREFIX).lower(): v for k, v in env.items() if k.startswith(PREFIX)}
    )


def container_port(container: Json, port: int | str) -> int | None:
    """A probe's or Service's port, by number or by name, as the container's port number."""
    for entry in container.get("ports", []):
        if port in (entry["containerPort"], entry.get("name")):
            return int(entry["containerPort"])
    return None


def cli_problem(args: list[str]) -> str | None:
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(args)
    except SystemExit:
        reason = stderr.getvalue().strip().splitlines()[-1:] or ["exits at parse time"]
        return f"`hookstream {shlex.join(args)}` is not a hookstream command: {reason[0]}"
    return None


def worker_of(args: list[str]) -> str | None:
    return args[1] if len(args) == 2 and args[0] == "worker" else None


def urls_in(test: Any) -> list[str]:
    text = " ".join(test) if isinstance(test, list) else str(test)
    return re.findall(r"https?://[^\s'\"]+", text)


def ingress_get_paths() -> set[str]:
    app = create_app(Settings.model_validate({"webhook_secrets": "x"}))
    return {r.resource.canonical for r in app.router.routes() if r.method == "GET" and r.resource}


# --- the checks -----------------------------------------------------------------------


def images(m: Manifests) -> list[tuple[str, str]]:
    found = [(f"compose {n}", str(s["image"])) for n, s in compose_services(m).items()]
    found += [
        (f"{w['metadata']['name']}/{c['name']}", str(c["image"])) for w, _, c in pod_containers(m)
    ]
    stages: set[str] = set()
    for instruction, rest in dockerfile_instructions(m.dockerfile):
        if instruction == "FROM":
            image, *alias = rest.split()
            if image not in stages:
                found.append(("Dockerfile FROM", image))
            stages.update(a for a in alias[1:])
    return found


def check_images(m: Manifests) -> Problems:
    problems = []
    for where, image in images(m):
        name, tag = image.rsplit(":", 1) if ":" in image.rsplit("/", 1)[-1] else (image, "")
        if "@sha256:" not in image and tag in ("", "latest"):
            problems.append(f"{where}: {image} is not pinned to a version")
        if name.rsplit("/", 1)[-1] == "hookstream" and image != IMAGE:
            problems.append(f"{where}: {image} is not {IMAGE}")
    for name, service in compose_hookstream(m).items():
        if service.get("image") != IMAGE:
            problems.append(f"compose {name}: builds an image not tagged {IMAGE}")
        build = service["build"]
        dockerfile = (DEPLOY / build["context"] / build["dockerfile"]).resolve()
        if dockerfile != DEPLOY / "Dockerfile":
            problems.append(f"compose {name}: builds {dockerfile}, not deploy/Dockerfile")
    for workload, _, container in pod_containers(m):
        if container["image"] != IMAGE:
            problems.append(f"{workload['metadata']['name']}: runs {container['image']}")
    return problems


def check_setting_names(m: Manifests) -> Problems:
    return [
        f"{file}: {name} is not a setting (schemas/settings.py)"
        for file, text in m.texts.items()
        for name in sorted(set(re.findall(rf"\b{PREFIX}[A-Z0-9_]*[A-Z0-9]\b", text)))
        if name.removeprefix(PREFIX).lower() not in Settings.model_fields
    ]


def documented_commands(text: str) -> list[list[str]]:
    """The hookstream command lines of a document's code blocks."""
    commands = []
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, re.S | re.M):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            call = re.search(
                r"(?:^\s*|\s--\s+|bin/|\bexec\s+(?:-\S+\s+)*[\w.-]+\s+)hookstream\s+(.*)$", line
            )
            run = re.search(r"\bcompose\b.*\brun\s+--rm\s+[\w-]+\s+(.*)$", line)
            rest = call[1] if call else run[1] if run else None
            if rest is None:
                continue
            lexer = shlex.shlex(rest, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            args = []
            for token in lexer:
                if set(token) <= set("();<>|&"):
                    break
                args.append(token)
            commands.append(args)
    return commands


def check_commands(m: Manifests) -> Problems:
    problems = []
    for name, service in compose_hookstream(m).items():
        command = service.get("command")
        if not isinstance(command, list):
            problems.append(f"compose {name}: command must be a list of hookstream arguments")
        elif problem := cli_problem([str(a) for a in command]):
            problems.append(f"compose {name}: {problem}")
    for workload, _, container in pod_containers(m):
        where = workload["metadata"]["name"]
        if container.get("command") not in (None, ["hookstream"]):
            problems.append(f"{where}: overrides the image's entrypoint")
        if problem := cli_problem([str(a) for a in container.get("args", [])]):
            problems.append(f"{where}: {problem}")
    entrypoints = [rest for i, rest in dockerfile_instructions(m.dockerfile) if i == "ENTRYPOINT"]
    if not entrypoints or json.loads(entrypoints[-1]) != ["hookstream"]:
        problems.append('Dockerfile: ENTRYPOINT is not ["hookstream"]')
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    if "hookstream" not in scripts:
        problems.append("pyproject.toml: no `hookstream` script for the ENTRYPOINT")
    for file in DOCS:
        text = m.texts[str(file.relative_to(REPO))]
        for args in documented_commands(text):
            if problem := cli_problem(args):
                problems.append(f"{file.name}: {problem}")
    return problems


def _probe(where: str, container: Json, probe_name: str, path: str, port: int) -> Iterator[str]:
    probe = container.get(probe_name, {}).get("httpGet")
    if probe is None:
        yield f"{where}: no {probe_name} (GET {path})"
        return
    if probe["path"] != path:
        yield f"{where}: {probe_name} GETs {probe['path']}, not {path}"
    if container_port(container, probe["port"]) != port:
        yield f"{where}: {probe_name} port {probe['port']} is not the port it listens on ({port})"


def check_ingress_ports(m: Manifests) -> Problems:
    problems = []
    paths = ingress_get_paths()
    problems += [f"ingress/app.py serves no GET {p}" for p in ("/readyz", "/healthz", "/metrics")
                 if p not in paths]  # fmt: skip
    ingresses = [(w, c) for w, _, c in pod_containers(m) if c.get("args") == ["ingress"]]
    if len(ingresses) != 1:
        problems.append(f"k8s: {len(ingresses)} ingress containers, expected 1")
    for workload, container in ingresses:
        where = workload["metadata"]["name"]
        env = k8s_env(m, container)
        port = int(
            value_of(env, f"{PREFIX}INGRESS_PORT") or setting_default(f"{PREFIX}INGRESS_PORT")
        )
        if value_of(env, f"{PREFIX}INGRESS_HOST") != "0.0.0.0":
            problems.append(f"{where}: {PREFIX}INGRESS_HOST is not 0.0.0.0")
        if container_port(container, port) is None:
            problems.append(f"{where}: listens on {port}, which is not a containerPort")
        problems += _probe(where, container, "readinessProbe", "/readyz", port)
        problems += _probe(where, container, "livenessProbe", "/healthz", port)
        annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
        if annotations.get("prometheus.io/port") != str(port):
            problems.append(f"{where}: prometheus.io/port is not {port}")
        labels = workload["spec"]["template"]["metadata"]["labels"]
        for kind in ("Service", "PodDisruptionBudget"):
            selecting = [
                o for o in k8s_objects(m, kind)
                if (o["spec"]["selector"].get("matchLabels") or o["spec"]["selector"]).items()
                <= labels.items()
            ]  # fmt: skip
            if not selecting:
                problems.append(f"{where}: no {kind} selects its pods")
            for service in selecting if kind == "Service" else []:
                for entry in service["spec"]["ports"]:
                    if container_port(container, entry["targetPort"]) != port:
                        problems.append(f"Service {service['metadata']['name']}: targetPort "
                                        f"{entry['targetPort']} is not {port}")  # fmt: skip
    for name, service in compose_hookstream(m).items():
        if service.get("command") != ["ingress"]:
            continue
        variables = image_env(m) | compose_env(service)
        default = setting_default(f"{PREFIX}INGRESS_PORT")
        port = int(variables.get(f"{PREFIX}INGRESS_PORT", default))
        if variables.get(f"{PREFIX}INGRESS_HOST") != "0.0.0.0":
            problems.append(f"compose {name}: {PREFIX}INGRESS_HOST is not 0.0.0.0")
        published = [str(p).rsplit(":", 1)[-1] for p in service.get("ports", [])]
        if str(port) not in published:
            problems.append(f"compose {name}: port {port} is not published ({published})")
        health = [urlsplit(u) for u in urls_in(service.get("healthcheck", {}).get("test", ""))]
        if [(u.port, u.path) for u in health] != [(port, "/readyz")]:
            problems.append(f"compose {name}: healthcheck is not GET /readyz on port {port}")
    return problems


def workers(m: Manifests) -> tuple[dict[str, list[tuple[Json, Json]]], dict[str, list[Json]]]:
    """Each processor's Deployments (with their container) and compose services."""
    k8s: dict[str, list[tuple[Json, Json]]] = {p: [] for p in PROCESSORS}
    for workload, _, container in pod_containers(m):
        name = worker_of([str(a) for a in container.get("args", [])])
        if name is not None and workload["kind"] == "Deployment":
            k8s[name].append((workload, container))
    compose: dict[str, list[Json]] = {p: [] for p in PROCESSORS}
    for service in compose_hookstream(m).values():
        name = worker_of([str(a) for a in service.get("command") or []])
        if name is not None:
            compose[name].append(service)
    return k8s, compose


def check_worker_metrics(m: Manifests) -> Problems:
    problems = []
    k8s, compose = workers(m)
    for processor in PROCESSORS:
        if len(k8s[processor]) != 1 or len(compose[processor]) != 1:
            problems.append(f"{processor}: not exactly one Deployment and one compose service")
        for workload, container in k8s[processor]:
            where = workload["metadata"]["name"]
            env = k8s_env(m, container)
            configured = value_of(env, f"{PREFIX}WORKER_METRICS_PORT")
            port = int(configured) if configured else WORKER_METRICS_PORTS[processor]
            if value_of(env, f"{PREFIX}WORKER_METRICS_HOST") != "0.0.0.0":
                problems.append(f"{where}: {PREFIX}WORKER_METRICS_HOST is not 0.0.0.0")
            if container_port(container, port) is None:
                problems.append(f"{where}: metrics port {port} is not a containerPort")
            annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
            scrape = (
                annotations.get("prometheus.io/scrape"),
                annotations.get("prometheus.io/port"),
            )
            if scrape != ("true", str(port)):
                problems.append(f"{where}: prometheus.io annotations {scrape} are not port {port}")
            problems += _probe(where, container, "livenessProbe", "/metrics", port)
        for service in compose[processor]:
            variables = image_env(m) | compose_env(service)
            configured = variables.get(f"{PREFIX}WORKER_METRICS_PORT")
            port = int(configured) if configured else WORKER_METRICS_PORTS[processor]
            if variables.get(f"{PREFIX}WORKER_METRICS_HOST") != "0.0.0.0":
                problems.append(f"compose {processor}: {PREFIX}WORKER_METRICS_HOST is not 0.0.0.0")
            if str(port) not in [str(p) for p in service.get("expose", [])]:
                problems.append(f"compose {processor}: metrics port {port} is not exposed")
            health = [urlsplit(u) for u in urls_in(service.get("healthcheck", {}).get("test", ""))]
            if [(u.port, u.path) for u in health] != [(port, "/metrics")]:
                problems.append(f"compose {processor}: healthcheck is not GET /metrics on {port}")
    return problems


# The topic whose partitions bound a processor's replicas (schemas/topics.py gives the count).
BOUNDING_TOPIC = {
    "insights": "events_topic",
    "triggers": "events_topic",
    "checks": "events_topic",
    "identity": "identity_topic",
}


def check_replicas(m: Manifests) -> Problems:
    problems = []
    k8s, compose = workers(m)
    compose_settings = {
        k: v for service in compose_hookstream(m).values() for k, v in compose_env(service).items()
    }
    for label, env in (("k8s", configmap_data(m)), ("compose", compose_settings)):
        settings = settings_of(env)
        partitions = {spec.name: spec.partitions for spec in topic_specs(settings)}
        for processor in PROCESSORS:
            topic = getattr(settings, BOUNDING_TOPIC[processor])
            bound = partitions[topic]
            if label == "k8s":
                replicas = [int(w["spec"].get("replicas", 1)) for w, _ in k8s[processor]]
            else:
                replicas = [
                    int(s.get("scale", s.get("deploy", {}).get("replicas", 1)))
                    for s in compose[processor]
                ]
            problems += [
                f"{label} {processor}: {n} replicas, but {topic} has {bound} partition(s)"
                for n in replicas
                if n > bound
            ]
    return problems


def check_clickhouse_dsn(m: Manifests) -> Problems:
    problems = []
    services = compose_services(m)
    _, compose = workers(m)
    clickhouse = [
        n
        for n, s in services.items()
        if str(s["image"]).startswith("clickhouse/clickhouse-server:")
    ]
    for service in compose["insights"]:
        raw = compose_env(service).get(DSN, "")
        dsn = urlsplit(interpolate(raw, COMPOSE_DOTENV))
        if dsn.scheme != "http" or dsn.hostname not in clickhouse:
            problems.append(f"compose insights: {DSN} is not http://…@<the clickhouse service>")
            continue
        server = compose_env(services[str(dsn.hostname)])
        expected = (
            8123,
            "/" + server.get("CLICKHOUSE_DB", "default"),
            server.get("CLICKHOUSE_USER", "default"),
            interpolate(server.get("CLICKHOUSE_PASSWORD", ""), COMPOSE_DOTENV),
        )
        if (dsn.port, dsn.path, dsn.username, dsn.password) != expected:
            problems.append(
                f"compose insights: {DSN} (port, db, user, password) "
                f"{(dsn.port, dsn.path, dsn.username, dsn.password)} is not {expected}"
            )
        depends = service.get("depends_on", {})
        if depends.get(dsn.hostname, {}).get("condition") != "service_healthy":
            problems.append(f"compose insights: does not wait for {dsn.hostname} to be healthy")
    k8s, _ = workers(m)
    for workload, container in k8s["insights"]:
        source = k8s_env(m, container).get(DSN)
        refs = [e["valueFrom"]["secretKeyRef"] for e in container.get("env", [])
                if e["name"] == DSN and "secretKeyRef" in e.get("valueFrom", {})]  # fmt: skip
        secret = k8s_object(m, "Secret", refs[0]["name"]) if refs else None
        value = (secret or {}).get("stringData", {}).get(DSN, "") if refs else ""
        dsn = urlsplit(value)
        if source is None or source.kind != "secret" or secret is None:
            problems.append(f"{workload['metadata']['name']}: {DSN} is not from a Secret")
        elif (
            dsn.scheme not in ("http", "https") or dsn.port not in (8123, 8443) or not dsn.path[1:]
        ):
            problems.append(f"Secret {refs[0]['name']}: {DSN} is not http(s)://host:8123/db")
    return problems


def check_secrets(m: Manifests) -> Problems:
    problems = []
    for name, service in compose_services(m).items():
        variables = compose_env(service)
        problems += [
            f"compose {name}: {v} is a plain value (use hookstream.env)"
            for v in sorted(SECRET_VARIABLES & variables.keys())
        ]
        for variable, value in variables.items():
            password = urlsplit(value).password if "://" in value else None
            if password is not None and not password.startswith("${"):
                problems.append(f"compose {name}: {variable} holds a password in the file")
        if KEY_FILE in variables:
            targets = [
                f"/run/secrets/{s['target']}" if isinstance(s, dict) else f"/run/secrets/{s}"
                for s in service.get("secrets", [])
            ]
            if variables[KEY_FILE] not in targets:
                problems.append(f"compose {name}: {KEY_FILE} is not one of its secrets")
    for name, service in compose_hookstream(m).items():
        if service.get("command") == ["ingress"] and not service.get("env_file"):
            problems.append(f"compose {name}: no env_file for the ingress's secrets")
    for variable, value in configmap_data(m).items():
        if variable in SECRET_VARIABLES or ("://" in value and urlsplit(value).password):
            problems.append(f"ConfigMap: {variable} is a secret")
    if image_env(m).keys() & SECRET_VARIABLES:
        problems.append("Dockerfile: a secret in ENV")
    for workload, pod, container in pod_containers(m):
        where = workload["metadata"]["name"]
        env = k8s_env(m, container)
        for variable in sorted(SECRET_VARIABLES & env.keys()):
            if env[variable].kind != "secret":
                problems.append(f"{where}: {variable} is not from a Secret")
        if container.get("args") == ["ingress"]:
            missing = sorted(v for v in SECRET_VARIABLES if v not in env)
            problems += [f"{where}: gets no {v}" for v in missing]
        if KEY_FILE in env:
            path = Path(str(value_of(env, KEY_FILE)))
            mounts = [mt for mt in container.get("volumeMounts", [])
                      if path.parent == Path(mt["mountPath"])]  # fmt: skip
            volumes = [
                v for v in pod.get("volumes", []) for mt in mounts if v["name"] == mt["name"]
            ]
            secret_names = [v["secret"]["secretName"] for v in volumes if "secret" in v]
            secrets = [k8s_object(m, "Secret", n) for n in secret_names]
            if not any(s is not None and path.name in secret_keys(s) for s in secrets):
                problems.append(f"{where}: {KEY_FILE}={path} is not a file of a mounted Secret")
    return problems


def check_security(m: Manifests) -> Problems:
    problems = []
    instructions = dockerfile_instructions(m.dockerfile)
    users = [rest for i, rest in instructions if i == "USER"]
    if not users or users[-1].split(":")[0] in ("0", "root"):
        problems.append("Dockerfile: the image runs as root")
    if re.search(r"openjdk|temurin|default-jre|kafka_2\.|/opt/kafka", m.dockerfile, re.I):
        problems.append("Dockerfile: Kafka or a JDK in the image")
    data_dir = image_env(m).get(f"{PREFIX}DATA_DIR")
    for workload, pod, container in pod_containers(m):
        where = workload["metadata"]["name"]
        security = container.get("securityContext", {})
        if not pod.get("securityContext", {}).get("runAsNonRoot"):
            problems.append(f"{where}: runAsNonRoot is not set")
        if not security.get("readOnlyRootFilesystem"):
            problems.append(f"{where}: the root filesystem is writable")
        if security.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation is not false")
        if security.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{where}: capabilities are not dropped")
        if "memory" not in container.get("resources", {}).get("limits", {}):
            problems.append(f"{where}: no memory limit")
        mounts = {mt["mountPath"]: mt for mt in container.get("volumeMounts", [])}
        data = value_of(k8s_env(m, container), f"{PREFIX}DATA_DIR") or data_dir
        if container.get("args", [""])[0] != "ingress" and (
            data not in mounts or mounts[data].get("readOnly")
        ):
            problems.append(f"{where}: the data dir {data} is not a writable volume")
    for name, service in compose_hookstream(m).items():
        if not service.get("read_only"):
            problems.append(f"compose {name}: the root filesystem is writable")
        volumes = [str(v).split(":")[1] for v in service.get("volumes", [])]
        if service.get("command", [""])[0] == "worker" and data_dir not in volumes:
            problems.append(f"compose {name}: the data dir {data_dir} is not a volume")
    return problems


def check_kustomization(m: Manifests) -> Problems:
    resources = m.kustomization.get("resources", [])
    problems = [
        f"kustomization.yaml: {r} does not exist" for r in resources if not (K8S / r).exists()
    ]
    files = {name for name, _ in m.k8s}
    problems += [
        f"{f}: not in kustomization.yaml"
        for f in sorted(files - set(resources) - ONE_OFF_MANIFESTS)
    ]
    namespace = m.kustomization.get("namespace")
    if [o["metadata"]["name"] for o in k8s_objects(m, "Namespace")] != [namespace]:
        problems.append(f"the Namespace object is not the kustomization's namespace {namespace}")
    for file, doc in m.k8s:
        declared = doc["metadata"].get("namespace")
        if doc["kind"] != "Namespace" and declared not in (None, namespace):
            problems.append(f"{file}: {doc['kind']} in namespace {declared}")
        if file in ONE_OFF_MANIFESTS and declared != namespace:
            problems.append(f"{file}: applied without kustomize, so it must name {namespace}")
    return problems


CHECKS: dict[str, Callable[[Manifests], Problems]] = {
    "images": check_images,
    "setting names": check_setting_names,
    "commands": check_commands,
    "ingress ports": check_ingress_ports,
    "worker metrics": check_worker_metrics,
    "replicas": check_replicas,
    "clickhouse dsn": check_clickhouse_dsn,
    "secrets": check_secrets,
    "security": check_security,
    "kustomization": check_kustomization,
}


# --- the real files -------------------------------------------------------------------


def test_the_image_constant_is_hookstream_at_the_project_version() -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert f"hookstream:{version}" == IMAGE


def test_every_image_is_pinned_and_hookstream_is_the_project_image(manifests: Manifests) -> None:
    assert check_images(manifests) == []


def test_every_hookstream_variable_is_a_setting(manifests: Manifests) -> None:
    assert check_setting_names(manifests) == []


def test_every_command_is_a_hookstream_command(manifests: Manifests) -> None:
    assert check_commands(manifests) == []


def test_the_ingress_probes_hit_readyz_and_healthz_on_its_port(manifests: Manifests) -> None:
    assert check_ingress_ports(manifests) == []


def test_the_worker_metrics_ports_are_the_processors_ports(manifests: Manifests) -> None:
    assert check_worker_metrics(manifests) == []


def test_no_worker_has_more_replicas_than_partitions(manifests: Manifests) -> None:
    assert check_replicas(manifests) == []


def test_insights_reaches_the_clickhouse_server(manifests: Manifests) -> None:
    assert check_clickhouse_dsn(manifests) == []


def test_secrets_come_from_secrets_never_from_plain_values(manifests: Manifests) -> None:
    assert check_secrets(manifests) == []


def test_pods_run_unprivileged_with_a_read_only_root(manifests: Manifests) -> None:
    assert check_security(manifests) == []


def test_kustomize_applies_every_manifest_in_one_namespace(manifests: Manifests) -> None:
    assert check_kustomization(manifests) == []


# --- each check fails when the thing it checks is broken ------------------------------


def _service(m: Manifests, name: str) -> Json:
    return compose_services(m)[name]


def _container(m: Manifests, name: str) -> Json:
    container: Json = deployment(m, name)["spec"]["template"]["spec"]["containers"][0]
    return container


def _annotations(m: Manifests, name: str) -> Json:
    annotations: Json = deployment(m, name)["spec"]["template"]["metadata"]["annotations"]
    return annotations


def _secret(m: Manifests, name: str) -> Json:
    found = k8s_object(m, "Secret", name)
    assert found is not None
    stringdata: Json = found["stringData"]
    return stringdata


def _text(m: Manifests, file: str, old: str, new: str) -> None:
    assert old in m.texts[file], (file, old)
    m.texts[file] = m.texts[file].replace(old, new, 1)


def _dockerfile(m: Manifests, old: str, new: str) -> None:
    assert old in m.dockerfile, old
    m.dockerfile = m.dockerfile.replace(old, new, 1)


def _data(m: Manifests) -> Json:
    found = k8s_object(m, "ConfigMap", "hookstream-config")
    assert found is not None
    data: Json = found["data"]
    return data


BREAKAGES: list[tuple[str, str, Callable[[Manifests], None]]] = [
    ("images", "kafka:latest", lambda m: _service(m, "kafka").update(image="apache/kafka:latest")),
    (
        "images",
        "untagged",
        lambda m: _service(m, "clickhouse").update(image="clickhouse/clickhouse-server"),
    ),
    (
        "images",
        "old hookstream",
        lambda m: _container(m, "hookstream-checks").update(image="hookstream:0.0.9"),
    ),
    ("images", "compose tag", lambda m: _service(m, "identity").update(image="hookstream:dev")),
    (
        "images",
        "base latest",
        lambda m: _dockerfile(m, "FROM python:3.11-slim\n", "FROM python:latest\n"),
    ),
    (
        "setting names",
        "typo",
        lambda m: _text(
            m,
            "deploy/k8s/config.yaml",
            "HOOKSTREAM_EVENTS_PARTITIONS",
            "HOOKSTREAM_EVENT_PARTITIONS",
        ),
    ),
    (
        "setting names",
        "in docs",
        lambda m: _text(
            m, "docs/operations.md", "HOOKSTREAM_WEBHOOK_SECRETS", "HOOKSTREAM_WEBHOOK_SECRET"
        ),
    ),
    (
        "setting names",
        "compose",
        lambda m: _text(
            m, "deploy/compose.yaml", "HOOKSTREAM_KAFKA_BOOTSTRAP", "HOOKSTREAM_BOOTSTRAP"
        ),
    ),
    (
        "commands",
        "k8s worker",
        lambda m: _container(m, "hookstream-triggers").update(args=["worker", "trigger"]),
    ),
    ("commands", "compose", lambda m: _service(m, "ingress").update(command=["serve"])),
    (
        "commands",
        "entrypoint",
        lambda m: _dockerfile(m, 'ENTRYPOINT ["hookstream"]', 'ENTRYPOINT ["python"]'),
    ),
    (
        "commands",
        "docs",
        lambda m: _text(m, "docs/operations.md", "hookstream dlq list", "hookstream dlq lst"),
    ),
    (
        "commands",
        "k8s docs",
        lambda m: _text(m, "deploy/k8s/README.md", "hookstream sql", "hookstream query"),
    ),
    ("ingress ports", "configmap port", lambda m: _data(m).update(HOOKSTREAM_INGRESS_PORT="8081")),
    (
        "ingress ports",
        "readiness path",
        lambda m: _container(m, "hookstream-ingress")["readinessProbe"]["httpGet"].update(
            path="/healthz"
        ),
    ),
    (
        "ingress ports",
        "liveness port",
        lambda m: _container(m, "hookstream-ingress")["livenessProbe"]["httpGet"].update(port=8081),
    ),
    ("ingress ports", "loopback", lambda m: _data(m).update(HOOKSTREAM_INGRESS_HOST="127.0.0.1")),
    (
        "ingress ports",
        "service",
        lambda m: k8s_objects(m, "Service")[0]["spec"]["ports"][0].update(targetPort=9999),
    ),
    (
        "ingress ports",
        "pdb",
        lambda m: k8s_objects(m, "PodDisruptionBudget")[0]["spec"]["selector"][
            "matchLabels"
        ].update(tier="web"),
    ),
    (
        "ingress ports",
        "compose publish",
        lambda m: _service(m, "ingress").update(ports=["8080:8081"]),
    ),
    (
        "ingress ports",
        "compose health",
        lambda m: _service(m, "ingress")["healthcheck"].update(
            test=["CMD", "python", "-c", "urlopen('http://127.0.0.1:8080/healthz')"]
        ),
    ),
    (
        "worker metrics",
        "annotation",
        lambda m: _annotations(m, "hookstream-checks").update({"prometheus.io/port": "9182"}),
    ),
    (
        "worker metrics",
        "configured port",
        lambda m: (
            _container(m, "hookstream-identity")
            .setdefault("env", [])
            .append({"name": "HOOKSTREAM_WORKER_METRICS_PORT", "value": "9999"})
        ),
    ),
    (
        "worker metrics",
        "loopback",
        lambda m: _data(m).update(HOOKSTREAM_WORKER_METRICS_HOST="127.0.0.1"),
    ),
    (
        "worker metrics",
        "compose health",
        lambda m: _service(m, "triggers")["healthcheck"].update(
            test=["CMD", "python", "-c", "urlopen('http://127.0.0.1:9181/metrics')"]
        ),
    ),
    (
        "worker metrics",
        "missing worker",
        lambda m: m.k8s.remove(
            next(d for d in m.k8s if d[1]["metadata"]["name"] == "hookstream-identity")
        ),
    ),
    (
        "replicas",
        "identity",
        lambda m: deployment(m, "hookstream-identity")["spec"].update(replicas=2),
    ),
    (
        "replicas",
        "triggers",
        lambda m: deployment(m, "hookstream-triggers")["spec"].update(replicas=7),
    ),
    ("replicas", "fewer partitions", lambda m: _data(m).update(HOOKSTREAM_EVENTS_PARTITIONS="1")),
    ("replicas", "compose", lambda m: _service(m, "identity").update(scale=2)),
    (
        "clickhouse dsn",
        "port",
        lambda m: _service(m, "insights")["environment"].update(
            {DSN: "http://hookstream:${CLICKHOUSE_PASSWORD}@clickhouse:9000/hookstream"}
        ),
    ),
    (
        "clickhouse dsn",
        "database",
        lambda m: _service(m, "clickhouse")["environment"].update(CLICKHOUSE_DB="insights"),
    ),
    (
        "clickhouse dsn",
        "host",
        lambda m: _service(m, "insights")["environment"].update(
            {DSN: "http://hookstream:${CLICKHOUSE_PASSWORD}@localhost:8123/hookstream"}
        ),
    ),
    (
        "clickhouse dsn",
        "k8s plain",
        lambda m: _container(m, "hookstream-insights").update(
            env=[{"name": DSN, "value": "http://ch:8123/hookstream"}]
        ),
    ),
    (
        "clickhouse dsn",
        "k8s port",
        lambda m: _secret(m, "hookstream-clickhouse").update(
            {DSN: "http://u:p@ch:9000/hookstream"}
        ),
    ),
    ("secrets", "in configmap", lambda m: _data(m).update(HOOKSTREAM_WEBHOOK_SECRETS="s3cret")),
    (
        "secrets",
        "compose env",
        lambda m: _service(m, "ingress")["environment"].update(HOOKSTREAM_ADMIN_TOKENS="t0ken"),
    ),
    (
        "secrets",
        "compose password",
        lambda m: _service(m, "insights")["environment"].update(
            {DSN: "http://hookstream:hunter2@clickhouse:8123/hookstream"}
        ),
    ),
    (
        "secrets",
        "k8s literal",
        lambda m: (
            _container(m, "hookstream-ingress")
            .setdefault("env", [])
            .append({"name": "HOOKSTREAM_RUNNER_TOKENS", "value": "t0ken"})
        ),
    ),
    (
        "secrets",
        "not wired",
        lambda m: _container(m, "hookstream-ingress").update(
            envFrom=[{"configMapRef": {"name": "hookstream-config"}}]
        ),
    ),
    (
        "secrets",
        "key file",
        lambda m: _container(m, "hookstream-checks")["env"][0].update(
            value="/etc/hookstream/key.pem"
        ),
    ),
    ("secrets", "compose key", lambda m: _service(m, "checks").update(secrets=[])),
    ("secrets", "no env_file", lambda m: _service(m, "ingress").pop("env_file")),
    ("security", "root", lambda m: _dockerfile(m, "USER 10001:10001", "USER root")),
    (
        "security",
        "jdk",
        lambda m: _dockerfile(
            m,
            "pip install --no-cache-dir",
            "apt-get install -y openjdk-17-jre && pip install --no-cache-dir",
        ),
    ),
    (
        "security",
        "writable root",
        lambda m: _container(m, "hookstream-ingress")["securityContext"].update(
            readOnlyRootFilesystem=False
        ),
    ),
    (
        "security",
        "escalation",
        lambda m: _container(m, "hookstream-checks")["securityContext"].pop(
            "allowPrivilegeEscalation"
        ),
    ),
    (
        "security",
        "data dir",
        lambda m: _container(m, "hookstream-triggers").update(volumeMounts=[]),
    ),
    ("security", "compose data", lambda m: _service(m, "identity").update(volumes=[])),
    ("kustomization", "unlisted", lambda m: m.kustomization["resources"].remove("checks.yaml")),
    ("kustomization", "missing", lambda m: m.kustomization["resources"].append("grafana.yaml")),
    (
        "kustomization",
        "namespace",
        lambda m: deployment(m, "hookstream-checks")["metadata"].update(namespace="default"),
    ),
]


@pytest.mark.parametrize(
    ("check", "change"),
    [pytest.param(check, change, id=f"{check}: {what}") for check, what, change in BREAKAGES],
)
def test_each_check_catches_what_it_checks(
    manifests: Manifests, check: str, change: Callable[[Manifests], None]
) -> None:
    broken = copy.deepcopy(manifests)
    change(broken)
    assert CHECKS[check](broken) != []


def test_every_check_has_a_breakage() -> None:
    assert {check for check, _, _ in BREAKAGES} == set(CHECKS)


def test_compose_interpolation_reads_like_compose() -> None:
    env = {"A": "1", "E": ""}
    assert interpolate("${A}-${B:-x}-${E:-y}-${E-z}-$${A}", env) == "1-x-y--${A}"
    with pytest.raises(KeyError, match="B: set it"):
        interpolate("${B:?set it}", env)


def test_documented_commands_are_found_wherever_hookstream_runs() -> None:
    doc = """```sh
hookstream sql "SELECT 1" | head
kubectl -n hookstream exec deploy/hookstream-insights -- hookstream dlq list github.events.dlq
docker compose -f deploy/compose.yaml exec insights hookstream sql "SELECT 2"  # note
docker compose -f deploy/compose.yaml run --rm triggers replay triggers --dry-run
.venv/bin/hookstream reconcile \\
  --since 24h
kubectl -n hookstream get pods
```"""
    assert documented_commands(doc) == [
        ["sql", "SELECT 1"],
        ["dlq", "list", "github.events.dlq"],
        ["sql", "SELECT 2"],
        ["replay", "triggers", "--dry-run"],
        ["reconcile", "--since", "24h"],
    ]


# --- the real tools, where they exist -------------------------------------------------


def _docker_compose() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    version = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, check=False, timeout=60
    )
    return docker if version.returncode == 0 else None


def test_docker_compose_accepts_the_compose_file(tmp_path: Path) -> None:
    docker = _docker_compose()
    if docker is None:
        pytest.skip("no `docker compose` client on this machine")
    # The files the compose file names live next to it and are not committed: lay them out.
    deploy = tmp_path / "deploy"
    (deploy / "secrets").mkdir(parents=True)
    shutil.copy(DEPLOY / "compose.yaml", deploy / "compose.yaml")
    (deploy / "hookstream.env").write_text("HOOKSTREAM_WEBHOOK_SECRETS=s\n")
    (deploy / "triggers.yml").write_text("workflows: {}\n")
    (deploy / "secrets" / "github-app.private-key.pem").write_text("")
    config = [docker, "compose", "-f", str(deploy / "compose.yaml"), "config", "--format", "json"]

    without_dotenv = subprocess.run(config, capture_output=True, text=True, check=False, timeout=60)
    assert without_dotenv.returncode != 0
    assert "CLICKHOUSE_PASSWORD" in without_dotenv.stderr

    (deploy / ".env").write_text("".join(f"{k}={v}\n" for k, v in COMPOSE_DOTENV.items()))
    result = subprocess.run(config, capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert set(services) == set(load_manifests().compose["services"])
    dsn = urlsplit(services["insights"]["environment"][DSN])
    assert (dsn.hostname, dsn.password) == ("clickhouse", COMPOSE_DOTENV["CLICKHOUSE_PASSWORD"])


def test_kubectl_kustomize_renders_the_manifests() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("no kubectl on this machine")
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stderr
    rendered = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    manifests = load_manifests()
    expected = {
        (doc["kind"], doc["metadata"]["name"])
        for file, doc in manifests.k8s
        if file not in ONE_OFF_MANIFESTS
    }
    assert {(d["kind"], d["metadata"]["name"]) for d in rendered} == expected
    namespaced = [d for d in rendered if d["kind"] != "Namespace"]
    assert {d["metadata"].get("namespace") for d in namespaced} == {"hookstream"}
    # The checks hold for what kubectl will apply, too.
    manifests.k8s = [("rendered", d) for d in rendered]
    for check in (check_ingress_ports, check_worker_metrics, check_replicas, check_secrets):
        assert check(manifests) == []
