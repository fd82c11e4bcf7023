"""The trigger matcher: one delivery and the trigger file in, dispatch requests out.

Pure: no I/O, no clock. The same envelope always yields the same requests with the
same ids, which is what makes redeliveries and replays harmless.

GitHub's event names are extended with the names people expect (DESIGN.md, issue 4):
``pull_request.merged`` (closed with ``merged: true``), ``create.tag`` /
``create.branch`` (and ``delete.*``), ``push.branch`` / ``push.tag``. A push that
deletes a ref matches no ``push`` trigger.
"""

from __future__ import annotations

import re
import shlex
from collections import defaultdict
from dataclasses import dataclass, field
from fnmatch import translate
from functools import cache
from typing import Any

from processors.triggers.authorization import Authorizer
from processors.triggers.rules import CommandSpec, TriggerFile, TriggerSpec
from schemas.dispatch import Actor, DeliveryRef, DispatchRequest, dispatch_id
from schemas.envelope import Envelope

COMMAND_LINE = re.compile(r"^/(?P<name>[a-z0-9][a-z0-9_-]*)(?:[ \t]+(?P<args>.*))?$")


_Indexed = tuple[int, str, TriggerSpec]  # (order in the file, workflow, trigger)


def _is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


@cache
def _glob(pattern: str, ignore_case: bool = False) -> re.Pattern[str]:
    return re.compile(translate(pattern), re.IGNORECASE if ignore_case else 0)


def _any_glob(
    patterns: tuple[str, ...], values: list[str] | None, ignore_case: bool = False
) -> bool:
    return bool(values) and any(
        _glob(p, ignore_case).match(v) for p in patterns for v in values or ()
    )


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class Refusal:
    """A command that was seen but not run, and why (for replies and audit)."""

    command: str  # as written in the comment, with its slash: "/deploy"
    reason: str
    workflow: str | None = None


@dataclass
class MatchResult:
    dispatches: list[DispatchRequest] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)

    def add(self, request: DispatchRequest) -> None:
        """One run per workflow per delivery, however many of its triggers matched."""
        if all(d.dispatch_id != request.dispatch_id for d in self.dispatches):
            self.dispatches.append(request)


@dataclass
class EventFacts:
    """What triggers and filters look at, read once per delivery from the raw payload."""

    names: set[str]
    owner: str
    repo: str
    ref: str | None = None
    sha: str | None = None
    pr_number: int | None = None
    branch: str | None = None
    head_branch: str | None = None
    tag: str | None = None
    paths: list[str] | None = None
    labels: list[str] | None = None
    sender: str | None = None

    @classmethod
    def of(cls, envelope: Envelope) -> EventFacts:
        p = envelope.payload
        event, action = envelope.event, envelope.action
        owner, _, repo = (envelope.repository or "/").partition("/")
        names = {event, f"{event}.{action}"} if action else {event}
        facts = cls(names=names, owner=owner, repo=repo, sender=envelope.sender.login)
        pr = _dict(p.get("pull_request"))
        if event == "push":
            facts._push(p)
        elif event in ("create", "delete"):
            ref_type, ref = p.get("ref_type"), p.get("ref")
            names.add(f"{event}.{ref_type}")
            if ref_type == "tag":
                facts.tag, facts.ref = ref, f"refs/tags/{ref}"
            elif ref_type == "branch":
                facts.branch, facts.ref = ref, f"refs/heads/{ref}"
        elif pr:
            facts._pull_request(pr, merged=event == "pull_request" and action == "closed")
        elif event == "release":
            facts.tag = _dict(p.get("release")).get("tag_name")
            facts.ref = f"refs/tags/{facts.tag}" if facts.tag else None
        elif event in ("workflow_run", "check_suite", "check_run", "workflow_job"):
            run = _dict(p.get(event))
            facts.branch = run.get("head_branch") or _dict(run.get("check_suite")).get(
                "head_branch"
            )
            facts.sha = run.get("head_sha")
            facts.ref = f"refs/heads/{facts.branch}" if facts.branch else None
        elif event in ("deployment", "deployment_status"):
            deployment = _dict(p.get("deployment"))
            facts.ref, facts.sha = deployment.get("ref"), deployment.get("sha")
        issue = _dict(p.get("issue"))
        if issue:
            facts.labels = [str(label.get("name")) for label in issue.get("labels") or []]
            if issue.get("pull_request"):
                facts.pr_number = issue.get("number")
                facts.ref = f"refs/pull/{facts.pr_number}/head"
        return facts

    def _push(self, p: dict[str, Any]) -> None:
        ref = str(p.get("ref", ""))
        if p.get("deleted"):
            self.names.clear()  # a deleted ref is not something to build
            return
        self.ref, self.sha = ref, p.get("after")
        if ref.startswith("refs/tags/"):
            self.tag = ref.removeprefix("refs/tags/")
            self.names.add("push.tag")
        elif ref.startswith("refs/heads/"):
            self.branch = ref.removeprefix("refs/heads/")
            self.names.add("push.branch")
        self.paths = sorted(
            {
                path
                for commit in p.get("commits") or []
                for kind in ("added", "modified", "removed")
                for path in _dict(commit).get(kind) or []
            }
        )

    def _pull_request(self, pr: dict[str, Any], merged: bool) -> None:
        base, head = _dict(pr.get("base")), _dict(pr.get("head"))
        self.pr_number = pr.get("number")
        self.branch, self.head_branch = base.get("ref"), head.get("ref")
        self.labels = [str(label.get("name")) for label in pr.get("labels") or []]
        if merged and pr.get("merged"):
            self.names.add("pull_request.merged")
            self.ref, self.sha = f"refs/heads/{self.branch}", pr.get("merge_commit_sha")
        else:
            self.ref, self.sha = f"refs/pull/{self.pr_number}/head", head.get("sha")


def trigger_matches(trigger: TriggerSpec, facts: EventFacts) -> bool:
    owner, repo, event, action = trigger.parts
    name = f"{event}.{action}" if action else event
    if name not in facts.names:
        return False
    # GitHub treats owner and repository names case-insensitively; so do we.
    if not (_glob(owner, True).match(facts.owner) and _glob(repo, True).match(facts.repo)):
        return False
    checks: tuple[tuple[tuple[str, ...] | None, list[str] | None], ...] = (
        (trigger.branches, [facts.branch] if facts.branch else None),
        (trigger.head_branches, [facts.head_branch] if facts.head_branch else None),
        (trigger.tags, [facts.tag] if facts.tag else None),
        (trigger.paths, facts.paths),
        (trigger.labels, facts.labels),
        (trigger.senders, [facts.sender] if facts.sender else None),
    )
    return all(patterns is None or _any_glob(patterns, values) for patterns, values in checks)


class Matcher:
    def __init__(self, triggers: TriggerFile, authorizer: Authorizer | None = None) -> None:
        self.triggers = triggers
        self.authorizer = authorizer or Authorizer()
        # Index by event name and, where the pattern names them literally, by owner and
        # repository: a delivery is only compared with triggers that can match it.
        self._index: dict[tuple[str, str | None, str | None], list[_Indexed]] = defaultdict(list)
        self._commands: dict[str, list[tuple[str, CommandSpec]]] = defaultdict(list)
        order = 0
        for name, workflow in triggers.workflows.items():
            for trigger in workflow.on:
                owner, repo, event, _ = trigger.parts
                owner_key = owner.lower() if not _is_glob(owner) else None
                repo_key = repo.lower() if owner_key and not _is_glob(repo) else None
                self._index[(event, owner_key, repo_key)].append((order, name, trigger))
                order += 1
            for command in workflow.commands:
                self._commands[command.command].append((name, command))
        self._events = {event for event, _, _ in self._index}

    def match(self, envelope: Envelope) -> MatchResult:
        result = MatchResult()
        is_command = envelope.event == "issue_comment" and envelope.action == "created"
        if envelope.event not in self._events and not is_command:
            return result
        facts = EventFacts.of(envelope)
        owner, repo = facts.owner.lower(), facts.repo.lower()
        candidates = sorted(
            self._index.get((envelope.event, owner, repo), [])
            + self._index.get((envelope.event, owner, None), [])
            + self._index.get((envelope.event, None, None), [])
        )
        for _, workflow, trigger in candidates:
            if trigger_matches(trigger, facts):
                result.add(self._request(envelope, facts, workflow, trigger.event))
        if is_command:
            self._match_command(envelope, facts, result)
        return result

    def _match_command(self, envelope: Envelope, facts: EventFacts, result: MatchResult) -> None:
        comment = _dict(envelope.payload.get("comment"))
        body = str(comment.get("body") or "").strip()
        if not body.startswith("/"):
            return
        line = body.splitlines()[0].strip()
        parsed = COMMAND_LINE.match(line)
        try:
            args = shlex.split(parsed["args"] or "") if parsed else []
        except ValueError:
            parsed = None
        if parsed is None:
            result.refusals.append(Refusal(line[:64], "malformed command"))
            return
        name = parsed["name"]
        where = "pull_request" if facts.pr_number is not None else "issue"
        specs = [
            (workflow, spec)
            for workflow, spec in self._commands.get(name, ())
            if where in spec.on
            and _any_glob(spec.repositories, [f"{facts.owner}/{facts.repo}"], ignore_case=True)
        ]
        if not specs:
            result.refusals.append(Refusal(f"/{name}", f"unknown command /{name}"))
            return
        user = _dict(comment.get("user"))
        for workflow, spec in specs:
            decision = self.authorizer.may_run(
                spec, user.get("id"), comment.get("author_association")
            )
            if not decision.allowed:
                result.refusals.append(Refusal(f"/{name}", decision.reason, workflow))
                continue
            variables = {"ARGS": " ".join(args)} | {
                f"ARG{i}": arg for i, arg in enumerate(args, start=1)
            }
            result.add(
                self._request(
                    envelope, facts, workflow, f"/{name}", variables, decision.platform_user
                )
            )

    def _request(
        self,
        envelope: Envelope,
        facts: EventFacts,
        workflow: str,
        trigger: str,
        extra: dict[str, str] | None = None,
        platform_user: str | None = None,
    ) -> DispatchRequest:
        sender = envelope.sender
        spec = self.triggers.workflows[workflow]
        if platform_user is None and sender.id is not None:
            linked = self.authorizer.platform_user(sender.id)
            platform_user = linked.name if linked else None
        variables = {
            "REPO": envelope.repository,
            "ORG": facts.owner or None,
            "REF": facts.ref,
            "SHA": facts.sha,
            "PR": str(facts.pr_number) if facts.pr_number is not None else None,
            "EVENT": envelope.event,
        }
        return DispatchRequest(
            dispatch_id=dispatch_id(envelope.hook_id, envelope.delivery_id, workflow),
            workflow=workflow,
            trigger=trigger,
            repository=envelope.repository,
            repository_id=envelope.repository_id,
            organization=envelope.organization,
            ref=facts.ref,
            sha=facts.sha,
            pr_number=facts.pr_number,
            actor=Actor(
                github_id=sender.id, github_login=sender.login, platform_user=platform_user
            ),
            delivery=DeliveryRef(
                hook_id=envelope.hook_id,
                delivery_id=envelope.delivery_id,
                event=envelope.event,
                action=envelope.action,
            ),
            variables={k: v for k, v in variables.items() if v is not None} | (extra or {}),
            targets=spec.targets,
            requested_at=envelope.received_at,
            installation_id=envelope.installation_id,
            check_name=spec.check_name(workflow),
            check_actions=spec.check_actions,
        )
