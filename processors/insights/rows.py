"""From one delivery to the insight rows it produces: a pure function.

Every delivery yields a ``deliveries`` row (unknown events included); the events the
metrics read also yield rows for their tables. Every row keeps its ``delivery_id`` and
carries the repository, organization and GitHub user id (DESIGN.md §6). A payload that
does not fit the models raises, and the worker sends the record to the dead-letter topic.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from schemas import github as gh
from schemas.envelope import Envelope

Row = dict[str, Any]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class InsightRows:
    """Rows by table name."""

    tables: dict[str, list[Row]] = field(default_factory=lambda: defaultdict(list))

    def add(self, table: str, row: Row) -> None:
        self.tables[table].append(row)

    def extend(self, other: InsightRows) -> None:
        for table, rows in other.tables.items():
            self.tables[table].extend(rows)


def _common(envelope: Envelope, received_at: datetime) -> Row:
    return {
        "delivery_id": envelope.delivery_id,
        "received_at": received_at,
        "repository": envelope.repository or "",
        "repository_id": envelope.repository_id or 0,
        "organization": envelope.organization or "",
        "sender_id": envelope.sender.id or 0,
    }


def _login(user: gh.User | None) -> str:
    return user.login if user else ""


def _pull_request(common: Row, pr: gh.PullRequest) -> Row:
    return common | {
        "number": pr.number,
        "pr_id": pr.id,
        "author_id": pr.user.id if pr.user else 0,
        "author_login": _login(pr.user),
        "state": pr.state,
        "draft": int(bool(pr.draft)),
        "title": pr.title or "",
        "created_at": pr.created_at,
        "updated_at": pr.updated_at or pr.created_at,
        "closed_at": pr.closed_at,
        "merged_at": pr.merged_at,
        "merge_commit_sha": pr.merge_commit_sha or "",
        "base_ref": pr.base.ref,
        "base_sha": pr.base.sha,
        "head_ref": pr.head.ref,
        "head_sha": pr.head.sha,
        "additions": pr.additions or 0,
        "deletions": pr.deletions or 0,
        "changed_files": pr.changed_files or 0,
        "labels": [label.name for label in pr.labels],
    }


def _pull_request_event(rows: InsightRows, common: Row, envelope: Envelope) -> None:
    event = envelope.parse(gh.PullRequestEvent)
    rows.add("pull_requests", _pull_request(common, event.pull_request))


def _review_event(rows: InsightRows, common: Row, envelope: Envelope) -> None:
    event = envelope.parse(gh.PullRequestReviewEvent)
    review, pr = event.review, event.pull_request
    rows.add("pull_requests", _pull_request(common, pr))
    rows.add(
        "pull_request_reviews",
        common
        | {
            "review_id": review.id,
            "pr_number": pr.number,
            "pr_author_id": pr.user.id if pr.user else 0,
            "reviewer_id": review.user.id if review.user else 0,
            "reviewer_login": _login(review.user),
            "reviewer_is_bot": int(bool(review.user and review.user.is_bot)),
            "state": review.state,
            "submitted_at": review.submitted_at,
            "commit_id": review.commit_id or "",
        },
    )


def _pushed_at(envelope: Envelope, event: gh.PushEvent, fallback: datetime) -> datetime:
    """When GitHub received the push: ``repository.pushed_at`` (epoch seconds in push
    payloads), which replays keep; else the newest commit time, else our receipt."""
    pushed = envelope.payload.get("repository", {}).get("pushed_at")
    if isinstance(pushed, int) and not isinstance(pushed, bool):
        return datetime.fromtimestamp(pushed, UTC)
    if event.commits:
        return max(commit.timestamp for commit in event.commits)
    return fallback


def _push(rows: InsightRows, common: Row, envelope: Envelope) -> None:
    event = envelope.parse(gh.PushEvent)
    pushed_at = _pushed_at(envelope, event, common["received_at"])
    for commit in event.commits:
        author = commit.author or gh.GitActor()
        rows.add(
            "commits",
            common
            | {
                "ref": event.ref,
                "sha": commit.id,
                "timestamp": commit.timestamp,
                "pushed_at": pushed_at,
                "author_name": author.name or "",
                "author_email": author.email or "",
                "author_login": author.username or "",
                "committer_name": (commit.committer.name if commit.committer else None) or "",
                "distinct": int(commit.distinct is not False),
                "message": (commit.message or "")[:1000],
            },
        )


def _deployment(common: Row, deployment: gh.Deployment) -> Row:
    return common | {
        "deployment_id": deployment.id,
        "sha": deployment.sha,
        "ref": deployment.ref,
        "task": deployment.task or "",
        "environment": deployment.environment,
        "created_at": deployment.created_at,
        "creator_login": _login(deployment.creator),
    }


def _deployment_event(rows: InsightRows, common: Row, envelope: Envelope) -> None:
    rows.add("deployments", _deployment(common, envelope.parse(gh.DeploymentEvent).deployment))


def _deployment_status_event(rows: InsightRows, common: Row, envelope: Envelope) -> None:
    event = envelope.parse(gh.DeploymentStatusEvent)
    status = event.deployment_status
    rows.add("deployments", _deployment(common, event.deployment))
    rows.add(
        "deployment_statuses",
        common
        | {
            "status_id": status.id,
            "deployment_id": event.deployment.id,
            "state": status.state,
            "environment": status.environment or event.deployment.environment,
            "created_at": status.created_at,
        },
    )


def _workflow_run(rows: InsightRows, common: Row, envelope: Envelope) -> None:
    run = envelope.parse(gh.WorkflowRunEvent).workflow_run
    rows.add(
        "workflow_runs",
        common
        | {
            "run_id": run.id,
            "run_attempt": run.run_attempt,
            "workflow_id": run.workflow_id or 0,
            "name": run.name or "",
            "event": run.event or "",
            "status": run.status or "",
            "conclusion": run.conclusion or "",
            "head_branch": run.head_branch or "",
            "head_sha": run.head_sha,
            "created_at": run.created_at,
            "updated_at": run.updated_at or run.created_at,
            "run_started_at": run.run_started_at,
        },
    )


def _workflow_job(rows: InsightRows, common: Row, envelope: Envelope) -> None:
    job = envelope.parse(gh.WorkflowJobEvent).workflow_job
    rows.add(
        "workflow_jobs",
        common
        | {
            "job_id": job.id,
            "run_id": job.run_id,
            "run_attempt": job.run_attempt,
            "name": job.name,
            "status": job.status,
            "conclusion": job.conclusion or "",
            "head_sha": job.head_sha,
            "started_at": job.started_at,
            "completed_at": job.completed_at,
            "version": job.completed_at or job.started_at or EPOCH,
        },
    )


def _check_run(rows: InsightRows, common: Row, envelope: Envelope) -> None:
    run = envelope.parse(gh.CheckRunEvent).check_run
    rows.add(
        "check_runs",
        common
        | {
            "check_run_id": run.id,
            "name": run.name,
            "head_sha": run.head_sha,
            "status": run.status,
            "conclusion": run.conclusion or "",
            "started_at": run.started_at,
            "completed_at": run.completed_at,
            "check_suite_id": run.check_suite.id if run.check_suite else 0,
            "version": run.completed_at or run.started_at or EPOCH,
        },
    )


def _issue(rows: InsightRows, common: Row, issue: gh.Issue) -> None:
    if issue.pull_request is not None:
        return  # a pull request seen through the issues API: pull_requests has it
    rows.add(
        "issues",
        common
        | {
            "number": issue.number,
            "issue_id": issue.id,
            "title": issue.title or "",
            "state": issue.state or "",
            "author_login": _login(issue.user),
            "labels": [label.name for label in issue.labels],
            "created_at": issue.created_at,
            "updated_at": issue.updated_at or issue.created_at,
            "closed_at": issue.closed_at,
        },
    )


def _issues_event(rows: InsightRows, common: Row, envelope: Envelope) -> None:
    _issue(rows, common, envelope.parse(gh.IssuesEvent).issue)


def _issue_comment_event(rows: InsightRows, common: Row, envelope: Envelope) -> None:
    _issue(rows, common, envelope.parse(gh.IssueCommentEvent).issue)


def _release(rows: InsightRows, common: Row, envelope: Envelope) -> None:
    release = envelope.parse(gh.ReleaseEvent).release
    rows.add(
        "releases",
        common
        | {
            "release_id": release.id,
            "tag_name": release.tag_name,
            "name": release.name or "",
            "draft": int(release.draft),
            "prerelease": int(release.prerelease),
            "created_at": release.created_at,
            "published_at": release.published_at,
            "author_login": _login(release.author),
        },
    )


EXTRACTORS: dict[str, Callable[[InsightRows, Row, Envelope], None]] = {
    "pull_request": _pull_request_event,
    "pull_request_review": _review_event,
    "push": _push,
    "deployment": _deployment_event,
    "deployment_status": _deployment_status_event,
    "workflow_run": _workflow_run,
    "workflow_job": _workflow_job,
    "check_run": _check_run,
    "issues": _issues_event,
    "issue_comment": _issue_comment_event,
    "release": _release,
}


def insight_rows(envelope: Envelope) -> InsightRows:
    """All rows one delivery produces. Raises on a payload the models reject."""
    received_at = envelope.received_at or EPOCH
    rows = InsightRows()
    sender = envelope.sender
    rows.add(
        "deliveries",
        {
            "delivery_id": envelope.delivery_id,
            "hook_id": envelope.hook_id or "",
            "event": envelope.event,
            "action": envelope.action or "",
            "received_at": received_at,
            "repository": envelope.repository or "",
            "repository_id": envelope.repository_id or 0,
            "organization": envelope.organization or "",
            "sender_id": sender.id or 0,
            "sender_login": sender.login or "",
            "installation_id": envelope.installation_id or 0,
            # Bytes go into the String column as they are: no decode and re-encode.
            "payload": envelope.payload_json,
        },
    )
    extractor = EXTRACTORS.get(envelope.event)
    if extractor is not None:
        extractor(rows, _common(envelope, received_at), envelope)
    return rows
