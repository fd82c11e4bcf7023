"""Pydantic models of the parts of GitHub webhook payloads that hookstream reads.

Only what the processors use is modelled; every model ignores fields it does not name,
so a field GitHub adds tomorrow never breaks parsing. Fields GitHub documents as
nullable, or omits in some variants (GHES, older hooks), are optional.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


# --- shared parts -----------------------------------------------------------------------
class User(Model):
    id: int
    login: str
    type: str | None = None

    @property
    def is_bot(self) -> bool:
        """DESIGN.md §6: type ``Bot`` or a login ending in ``[bot]``."""
        return self.type == "Bot" or self.login.endswith("[bot]")


class Organization(Model):
    id: int
    login: str


class Repository(Model):
    id: int
    name: str
    full_name: str
    owner: User | None = None
    private: bool | None = None
    default_branch: str | None = None


class Installation(Model):
    id: int
    account: User | None = None
    app_id: int | None = None
    target_type: str | None = None


class Label(Model):
    name: str
    id: int | None = None


class Team(Model):
    id: int
    slug: str | None = None
    name: str | None = None


class Event(Model):
    """Fields every event may carry."""

    action: str | None = None
    repository: Repository | None = None
    organization: Organization | None = None
    installation: Installation | None = None
    sender: User | None = None


# --- pull requests and reviews ----------------------------------------------------------
class Ref(Model):
    ref: str
    sha: str
    label: str | None = None
    repo: Repository | None = None


class PullRequest(Model):
    id: int
    number: int
    user: User | None = None
    state: str
    draft: bool | None = None
    title: str | None = None
    created_at: datetime
    updated_at: datetime | None = None
    closed_at: datetime | None = None
    merged_at: datetime | None = None
    merged: bool | None = None
    merge_commit_sha: str | None = None
    base: Ref
    head: Ref
    additions: int | None = None
    deletions: int | None = None
    changed_files: int | None = None
    labels: list[Label] = Field(default_factory=list)
    author_association: str | None = None


class PullRequestEvent(Event):
    number: int
    pull_request: PullRequest


class Review(Model):
    id: int
    user: User | None = None
    state: str
    submitted_at: datetime | None = None
    commit_id: str | None = None
    author_association: str | None = None


class PullRequestReviewEvent(Event):
    review: Review
    pull_request: PullRequest


# --- pushes and commits -----------------------------------------------------------------
class GitActor(Model):
    name: str | None = None
    email: str | None = None
    username: str | None = None


class Commit(Model):
    id: str
    timestamp: datetime
    message: str | None = None
    author: GitActor | None = None
    committer: GitActor | None = None
    distinct: bool | None = None
    added: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)
    modified: list[str] = Field(default_factory=list)


class PushEvent(Event):
    ref: str
    before: str
    after: str
    created: bool | None = None
    deleted: bool | None = None
    forced: bool | None = None
    base_ref: str | None = None
    commits: list[Commit] = Field(default_factory=list)
    head_commit: Commit | None = None
    pusher: GitActor | None = None


class CreateEvent(Event):
    """``create`` and ``delete``: a branch or tag appeared or went away."""

    ref: str
    ref_type: str


# --- deployments ------------------------------------------------------------------------
class Deployment(Model):
    id: int
    sha: str
    ref: str
    task: str | None = None
    environment: str
    original_environment: str | None = None
    created_at: datetime
    updated_at: datetime | None = None
    creator: User | None = None
    payload: Any = None


class DeploymentStatus(Model):
    id: int
    state: str
    environment: str | None = None
    created_at: datetime
    updated_at: datetime | None = None
    creator: User | None = None
    description: str | None = None


class DeploymentEvent(Event):
    deployment: Deployment


class DeploymentStatusEvent(Event):
    deployment: Deployment
    deployment_status: DeploymentStatus


# --- Actions and checks -----------------------------------------------------------------
class PullRequestRef(Model):
    id: int
    number: int


class WorkflowRun(Model):
    id: int
    name: str | None = None
    workflow_id: int | None = None
    run_number: int | None = None
    run_attempt: int = 1
    event: str | None = None
    status: str | None = None
    conclusion: str | None = None
    head_branch: str | None = None
    head_sha: str
    created_at: datetime
    updated_at: datetime | None = None
    run_started_at: datetime | None = None
    actor: User | None = None
    pull_requests: list[PullRequestRef] = Field(default_factory=list)


class WorkflowRunEvent(Event):
    workflow_run: WorkflowRun


class WorkflowJob(Model):
    id: int
    run_id: int
    run_attempt: int = 1
    name: str
    status: str
    conclusion: str | None = None
    head_sha: str
    started_at: datetime | None = None
    completed_at: datetime | None = None
    labels: list[str] = Field(default_factory=list)
    runner_name: str | None = None


class WorkflowJobEvent(Event):
    workflow_job: WorkflowJob


class CheckSuite(Model):
    id: int
    head_branch: str | None = None
    head_sha: str
    status: str | None = None
    conclusion: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    pull_requests: list[PullRequestRef] = Field(default_factory=list)


class CheckRunOutput(Model):
    title: str | None = None
    summary: str | None = None


class CheckRun(Model):
    id: int
    name: str
    head_sha: str
    external_id: str | None = None
    status: str
    conclusion: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    check_suite: CheckSuite | None = None
    output: CheckRunOutput | None = None
    pull_requests: list[PullRequestRef] = Field(default_factory=list)


class CheckRunEvent(Event):
    check_run: CheckRun


class CheckSuiteEvent(Event):
    check_suite: CheckSuite


# --- issues and comments ----------------------------------------------------------------
class Issue(Model):
    id: int
    number: int
    title: str | None = None
    state: str | None = None
    user: User | None = None
    labels: list[Label] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime | None = None
    closed_at: datetime | None = None
    author_association: str | None = None
    pull_request: dict[str, Any] | None = None  # present when the issue is a pull request


class IssuesEvent(Event):
    issue: Issue


class Comment(Model):
    id: int
    body: str
    user: User | None = None
    author_association: str | None = None
    created_at: datetime
    updated_at: datetime | None = None


class IssueCommentEvent(Event):
    issue: Issue
    comment: Comment


# --- installations, members, releases ---------------------------------------------------
class InstallationEvent(Event):
    installation: Installation


class MemberEvent(Event):
    member: User


class Membership(Model):
    role: str | None = None
    state: str | None = None
    user: User | None = None


class MembershipEvent(Event):
    """``membership``: a user added to or removed from a team."""

    member: User
    team: Team
    scope: str | None = None


class OrganizationEvent(Event):
    membership: Membership | None = None


class Release(Model):
    id: int
    tag_name: str
    name: str | None = None
    draft: bool = False
    prerelease: bool = False
    target_commitish: str | None = None
    created_at: datetime | None = None
    published_at: datetime | None = None
    author: User | None = None


class ReleaseEvent(Event):
    release: Release


EVENT_MODELS: dict[str, type[Event]] = {
    "pull_request": PullRequestEvent,
    "pull_request_review": PullRequestReviewEvent,
    "push": PushEvent,
    "create": CreateEvent,
    "delete": CreateEvent,
    "deployment": DeploymentEvent,
    "deployment_status": DeploymentStatusEvent,
    "workflow_run": WorkflowRunEvent,
    "workflow_job": WorkflowJobEvent,
    "check_run": CheckRunEvent,
    "check_suite": CheckSuiteEvent,
    "issues": IssuesEvent,
    "issue_comment": IssueCommentEvent,
    "installation": InstallationEvent,
    "member": MemberEvent,
    "membership": MembershipEvent,
    "organization": OrganizationEvent,
    "release": ReleaseEvent,
}
"""The model of each event whose payload processors read; other events use :class:`Event`."""


def parse_event(event: str, payload: dict[str, Any]) -> Event:
    return EVENT_MODELS.get(event, Event).model_validate(payload)
