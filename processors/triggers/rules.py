"""The trigger file: which GitHub events and ChatOps commands start which workflows.

A YAML file (``HOOKSTREAM_TRIGGERS_FILE``) validated with pydantic; the README has the
full reference and an example. Every mistake is reported with its line, so
``hookstream triggers check`` can point at it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from schemas.dispatch import CheckAction
from schemas.errors import HookstreamError

PATTERN = re.compile(
    r"^github:(?P<owner>[A-Za-z0-9_.*?\[\]-]+)/(?P<repo>[A-Za-z0-9_.*?\[\]-]+)"
    r":(?P<event>[a-z_]+)(?:\.(?P<action>[a-z_]+))?$"
)
DEFAULT_ASSOCIATIONS = ("OWNER", "MEMBER", "COLLABORATOR")


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TargetSpec(Spec):
    """An HTTP endpoint that receives the dispatches of the workflows naming it."""

    url: str = Field(pattern=r"^https?://")
    secret_env: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the HMAC-SHA256 signing secret.",
    )
    timeout_s: float = Field(default=10.0, gt=0, le=60)
    max_attempts: int = Field(default=5, ge=1, le=20)
    backoff_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)


class TriggerSpec(Spec):
    """``github:<owner>/<repo>:<event>[.<action>]`` plus optional filters (all must hold)."""

    event: str
    branches: tuple[str, ...] | None = None
    head_branches: tuple[str, ...] | None = None
    tags: tuple[str, ...] | None = None
    paths: tuple[str, ...] | None = None
    labels: tuple[str, ...] | None = None
    senders: tuple[str, ...] | None = None

    @field_validator("event")
    @classmethod
    def _is_pattern(cls, value: str) -> str:
        if not PATTERN.match(value):
            raise ValueError(
                f"{value!r} is not a trigger: write github:<owner>/<repo>:<event>[.<action>], "
                "e.g. github:acme/*:pull_request.merged"
            )
        return value

    @property
    def parts(self) -> tuple[str, str, str, str | None]:
        m = PATTERN.match(self.event)
        assert m is not None  # validated above
        return m["owner"], m["repo"], m["event"], m["action"]


class CommandSpec(Spec):
    """A ChatOps command: a comment ``/<command> [args]`` on a pull request or issue."""

    command: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    repositories: tuple[str, ...] = ("*/*",)
    on: tuple[Literal["pull_request", "issue"], ...] = ("pull_request", "issue")
    associations: tuple[str, ...] = DEFAULT_ASSOCIATIONS
    roles: tuple[str, ...] = Field(
        default=(), description="Platform roles that may also run it (linked users)."
    )


class CheckSpec(Spec):
    """The GitHub check run a workflow's dispatches show (DESIGN.md §7)."""

    name: str | None = Field(default=None, min_length=1, max_length=255)
    actions: tuple[CheckAction, ...] = Field(default=(), max_length=3)


class WorkflowSpec(Spec):
    on: tuple[TriggerSpec, ...] = ()
    commands: tuple[CommandSpec, ...] = ()
    targets: tuple[str, ...] = ()
    check: bool | CheckSpec = Field(
        default=True, description="false: no check run; {name, actions}: how it shows."
    )

    def check_name(self, workflow: str) -> str | None:
        if self.check is False:
            return None
        if isinstance(self.check, CheckSpec) and self.check.name:
            return self.check.name
        return workflow

    @property
    def check_actions(self) -> tuple[CheckAction, ...]:
        return self.check.actions if isinstance(self.check, CheckSpec) else ()

    @field_validator("on", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"event": item} if isinstance(item, str) else item for item in value]
        return value

    @field_validator("targets")
    @classmethod
    def _targets_exist(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        known = (info.context or {}).get("targets")
        unknown = [t for t in value if known is not None and t not in known]
        if unknown:
            raise ValueError(f"unknown target {unknown[0]!r} (not under 'targets')")
        return value

    @model_validator(mode="after")
    def _starts_somehow(self) -> WorkflowSpec:
        if not self.on and not self.commands:
            raise ValueError("a workflow needs 'on' triggers or 'commands'")
        return self


class TriggerFile(Spec):
    version: Literal[1] = 1
    targets: dict[str, TargetSpec] = Field(default_factory=dict)
    workflows: dict[str, WorkflowSpec]

    @classmethod
    def validate_data(cls, data: dict[str, Any]) -> TriggerFile:
        """Validate, letting each workflow check its targets against the file's."""
        targets = data.get("targets")
        known = set(targets) if isinstance(targets, dict) else set()
        return cls.model_validate(data, context={"targets": known})


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. In YAML 1.1 the key ``on:`` would be True."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


class TriggerFileError(HookstreamError, ValueError):
    def __init__(self, source: str, line: int | None, reason: str) -> None:
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {reason}")
        self.source, self.line, self.reason = source, line, reason


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """1-based line of the deepest node of the YAML tree that ``loc`` reaches."""
    line = node.start_mark.line + 1 if node is not None else None
    for step in loc:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == step), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int):
            node = node.value[step] if step < len(node.value) else None
        else:
            node = None
        if node is None:
            break
        line = node.start_mark.line + 1
    return line


def parse_trigger_file(text: str, source: str = "<triggers>") -> TriggerFile:
    """Validate a trigger file; raises :class:`TriggerFileError` naming the line."""
    try:
        tree = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        reason = f"not valid YAML: {getattr(exc, 'problem', None) or exc}"
        context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and context_mark:
            reason += f" ({context} on line {context_mark.line + 1})"
        raise TriggerFileError(source, mark.line + 1 if mark else None, reason) from None
    if not isinstance(data, dict):
        raise TriggerFileError(source, 1, "the file must be a mapping with 'workflows'")
    try:
        return TriggerFile.validate_data(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = tuple(step for step in error["loc"] if not (isinstance(step, str) and "[" in step))
        path = ".".join(str(step) for step in loc) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        raise TriggerFileError(source, _line_of(tree, loc), f"{path}: {message}") from None


def load_trigger_file(path: Path) -> TriggerFile:
    try:
        text = path.read_text()
    except OSError as exc:
        raise TriggerFileError(str(path), None, f"cannot read: {exc.strerror}") from None
    return parse_trigger_file(text, str(path))
