"""A scripted DevOps history built from corpus payloads, and its metrics computed by hand.

Two repositories. acme/api: two pull requests (one squash-merged) from pushed feature
branches, reviewed by people, by a bot and by their author; both merged before one
production deployment; a staging deployment; a production deployment whose status is a
failure (no deployment); a later production deployment followed by an incident issue
that is closed hours later. acme/web: a pull request with no pushes seen and no review,
rebase-merged, then deployed; workflow runs that succeed, fail, and are re-run.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson

from deploy.corpus import Example

DAY1 = datetime(2026, 3, 2, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)
API = {"id": 1001, "name": "api", "full_name": "acme/api"}
WEB = {"id": 1002, "name": "web", "full_name": "acme/web"}
ORG = {"id": 500, "login": "acme"}


def at(day: datetime, hhmm: str) -> datetime:
    h, m = hhmm.split(":")
    return day + timedelta(hours=int(h), minutes=int(m))


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def user(uid: int, login: str, kind: str = "User") -> dict[str, Any]:
    return {"id": uid, "login": login, "type": kind, "node_id": f"U{uid}"}


ALICE, BOB, CAROL, DAVE = user(11, "alice"), user(12, "bob"), user(13, "carol"), user(14, "dave")
BOT = user(99, "dependabot[bot]", "Bot")


class Scenario:
    """The deliveries, in the order they are sent: (event, payload)."""

    def __init__(self, examples: tuple[Example, ...]) -> None:
        self.base = {e.name: e.payload for e in examples}
        self.deliveries: list[tuple[str, bytes]] = []
        self._build()

    def _payload(self, name: str, repo: dict[str, Any], sender: dict[str, Any]) -> dict[str, Any]:
        payload = copy.deepcopy(self.base[name])
        payload["repository"].update(repo)
        payload["repository"]["owner"] = {**ORG, "type": "Organization"}
        payload["organization"] = dict(ORG)
        payload["sender"] = sender
        return payload

    def _send(self, event: str, payload: dict[str, Any]) -> None:
        self.deliveries.append((event, orjson.dumps(payload)))

    def push(
        self,
        repo: dict[str, Any],
        ref: str,
        commits: list[tuple[str, datetime]],
        pushed: datetime,
        sender: dict[str, Any],
    ) -> None:
        payload = self._payload("push#5", repo, sender)
        template = payload["commits"][0]
        payload["commits"] = [
            template | {"id": sha, "timestamp": iso(ts), "distinct": True} for sha, ts in commits
        ]
        payload["head_commit"] = payload["commits"][-1]
        payload.update(ref=ref, after=commits[-1][0], deleted=False, created=False)
        payload["repository"]["pushed_at"] = int(pushed.timestamp())
        self._send("push", payload)

    def pull_request(
        self,
        repo: dict[str, Any],
        action: str,
        number: int,
        author: dict[str, Any],
        head: str,
        opened: datetime,
        updated: datetime,
        merged: datetime | None = None,
        sha: str = "",
    ) -> None:
        name = "pull_request.opened" if action == "opened" else "pull_request.closed"
        payload = self._payload(name, repo, author)
        pr = payload["pull_request"]
        pr.update(
            number=number, id=number * 1000 + repo["id"], user=author, labels=[],
            created_at=iso(opened), updated_at=iso(updated),
            state="open" if action == "opened" else "closed",
            closed_at=iso(merged) if merged else None, merged_at=iso(merged) if merged else None,
            merged=merged is not None, merge_commit_sha=sha or None,
        )  # fmt: skip
        pr["head"]["ref"], pr["base"]["ref"] = head, "main"
        payload.update(action=action, number=number)
        self._send("pull_request", payload)

    def review(
        self,
        repo: dict[str, Any],
        number: int,
        author: dict[str, Any],
        review_id: int,
        reviewer: dict[str, Any],
        submitted: datetime,
        opened: datetime,
    ) -> None:
        payload = self._payload("pull_request_review.submitted", repo, reviewer)
        payload["review"].update(id=review_id, user=reviewer, submitted_at=iso(submitted),
                                 state="approved")  # fmt: skip
        payload["pull_request"].update(
            number=number, user=author, created_at=iso(opened), updated_at=iso(submitted),
            merged_at=None, closed_at=None, state="open",
        )  # fmt: skip
        self._send("pull_request_review", payload)

    def deployment(
        self,
        repo: dict[str, Any],
        deployment_id: int,
        env: str,
        sha: str,
        created: datetime,
        statuses: list[tuple[int, str, datetime]],
    ) -> None:
        payload = self._payload("deployment.created", repo, ALICE)
        payload["deployment"].update(id=deployment_id, environment=env, sha=sha, ref="main",
                                     created_at=iso(created), updated_at=iso(created))  # fmt: skip
        self._send("deployment", payload)
        for status_id, state, when in statuses:
            status = self._payload("deployment_status.created", repo, ALICE)
            status["deployment"] = payload["deployment"]
            status["deployment_status"].update(
                id=status_id, state=state, environment=env,
                created_at=iso(when), updated_at=iso(when),
            )  # fmt: skip
            self._send("deployment_status", status)

    def issue(
        self,
        repo: dict[str, Any],
        action: str,
        number: int,
        label: str,
        opened: datetime,
        closed: datetime | None,
    ) -> None:
        payload = self._payload("issues.opened", repo, CAROL)
        payload["action"] = action
        payload["issue"].update(
            number=number, id=number * 7 + repo["id"], labels=[{"name": label, "id": 1}],
            created_at=iso(opened), updated_at=iso(closed or opened),
            closed_at=iso(closed) if closed else None, state="closed" if closed else "open",
        )  # fmt: skip
        payload["issue"].pop("pull_request", None)
        self._send("issues", payload)

    def workflow_run(
        self,
        repo: dict[str, Any],
        run_id: int,
        attempt: int,
        name: str,
        status: str,
        conclusion: str | None,
        started: datetime,
        updated: datetime,
    ) -> None:
        payload = self._payload("workflow_run.completed", repo, DAVE)
        payload["workflow_run"].update(
            id=run_id, run_attempt=attempt, name=name, status=status, conclusion=conclusion,
            run_started_at=iso(started), created_at=iso(started), updated_at=iso(updated),
        )  # fmt: skip
        payload["action"] = "completed" if status == "completed" else "in_progress"
        self._send("workflow_run", payload)

    def _build(self) -> None:
        d1, d2 = DAY1, DAY2
        # acme/api: PR 1 from feat-1, PR 2 (squash) from feat-2.
        self.push(API, "refs/heads/feat-1", [("c1", at(d1, "09:00")), ("c2", at(d1, "10:00"))],
                  at(d1, "10:05"), ALICE)  # fmt: skip
        self.push(API, "refs/heads/feat-2", [("c3", at(d1, "10:30"))], at(d1, "10:40"), CAROL)
        self.pull_request(API, "opened", 1, ALICE, "feat-1", at(d1, "11:00"), at(d1, "11:00"))
        self.pull_request(API, "opened", 2, CAROL, "feat-2", at(d1, "11:30"), at(d1, "11:30"))
        self.review(API, 1, ALICE, 701, BOT, at(d1, "11:10"), at(d1, "11:00"))
        self.review(API, 1, ALICE, 702, ALICE, at(d1, "11:30"), at(d1, "11:00"))
        self.review(API, 1, ALICE, 703, BOB, at(d1, "12:00"), at(d1, "11:00"))
        self.review(API, 2, CAROL, 704, BOB, at(d1, "12:30"), at(d1, "11:30"))
        self.pull_request(API, "closed", 1, ALICE, "feat-1", at(d1, "11:00"), at(d1, "13:00"),
                          merged=at(d1, "13:00"), sha="m1")  # fmt: skip
        self.pull_request(API, "closed", 2, CAROL, "feat-2", at(d1, "11:30"), at(d1, "14:00"),
                          merged=at(d1, "14:00"), sha="m2")  # fmt: skip
        self.push(API, "refs/heads/main", [("m1", at(d1, "13:00")), ("m2", at(d1, "14:00"))],
                  at(d1, "14:05"), BOB)  # fmt: skip
        self.deployment(API, 501, "staging", "m2", at(d1, "14:10"),
                        [(5011, "success", at(d1, "14:15"))])  # fmt: skip
        self.deployment(API, 502, "production", "m2", at(d1, "14:20"),
                        [(5021, "in_progress", at(d1, "14:21")),
                         (5022, "success", at(d1, "14:30")),
                         (5023, "success", at(d1, "14:45"))])  # fmt: skip
        self.deployment(API, 503, "production", "m3", at(d2, "10:00"),
                        [(5031, "failure", at(d2, "10:05"))])  # fmt: skip
        self.deployment(API, 504, "prod", "m3", at(d2, "11:00"),
                        [(5041, "success", at(d2, "11:10"))])  # fmt: skip
        self.issue(API, "opened", 50, "incident", at(d2, "12:00"), None)
        self.issue(API, "closed", 50, "incident", at(d2, "12:00"), at(d2, "15:30"))
        self.issue(API, "opened", 51, "bug", at(d2, "12:30"), None)
        # acme/web: PR 7 without pushes or reviews, rebase-merged, deployed; CI runs.
        self.pull_request(WEB, "opened", 7, DAVE, "feat-x", at(d1, "09:30"), at(d1, "09:30"))
        self.pull_request(WEB, "closed", 7, DAVE, "feat-x", at(d1, "09:30"), at(d1, "10:00"),
                          merged=at(d1, "10:00"), sha="w1")  # fmt: skip
        self.deployment(WEB, 601, "production", "w9", at(d1, "10:20"),
                        [(6011, "success", at(d1, "10:30"))])  # fmt: skip
        for run_id, attempt, name, status, conclusion, start, end in [
            (9001, 1, "CI", "completed", "failure", "09:00", "09:05"),
            (9001, 2, "CI", "completed", "success", "09:10", "09:16"),
            (9002, 1, "CI", "completed", "success", "09:20", "09:24"),
            (9005, 1, "CI", "completed", "failure", "09:30", "09:32"),
            (9004, 1, "CI", "in_progress", None, "09:40", "09:41"),
            (9003, 1, "Deploy", "completed", "success", "10:00", "10:10"),
        ]:
            self.workflow_run(WEB, run_id, attempt, name, status, conclusion,
                              at(d1, start), at(d1, end))  # fmt: skip


# --- what the views must answer, worked out by hand from the history above ------------
H = 3600
EXPECTED: dict[str, list[tuple[Any, ...]]] = {
    # Production successes only (staging 501 and failed 503 do not count).
    "SELECT repository, day, deployments FROM dora_deployment_frequency ORDER BY repository, day": [
        ("acme/api", "2026-03-02", 1),
        ("acme/api", "2026-03-03", 1),
        ("acme/web", "2026-03-02", 1),
    ],
    # PR 1: c1 09:00 -> D2's first success 14:30 = 5.5 h; PR 2: c3 10:30 -> 14:30 = 4 h;
    # PR 7: no pushes seen, opened 09:30 -> 10:30 = 1 h (first deployment after the merge).
    "SELECT repository, pr_number, merge_commit_sha, deployment_id, lead_time_seconds "
    "FROM dora_lead_time ORDER BY repository, pr_number": [
        ("acme/api", 1, "m1", 502, 5 * H + 1800),
        ("acme/api", 2, "m2", 502, 4 * H),
        ("acme/web", 7, "w1", 601, 1 * H),
    ],
    # acme/api: D2 and D4; the incident opened 12:00 day 2 follows D4 (11:10) -> 1 of 2.
    "SELECT repository, deployments, failed_deployments, change_failure_rate "
    "FROM dora_change_failure_rate ORDER BY repository": [
        ("acme/api", 2, 1, 0.5),
        ("acme/web", 1, 0, 0.0),
    ],
    # Incident 50: 12:00 -> 15:30 = 3.5 h, attributed to D4.
    "SELECT repository, issue_number, restore_seconds, deployment_id "
    "FROM dora_time_to_restore ORDER BY repository, issue_number": [
        ("acme/api", 50, 3 * H + 1800, 504),
    ],
    # coding, pickup (first non-author non-bot review), review, deploy, cycle.
    "SELECT repository, pr_number, author_login, coding_seconds, pickup_seconds, "
    "review_seconds, deploy_seconds, cycle_seconds FROM pr_flow ORDER BY repository, pr_number": [
        ("acme/api", 1, "alice", 2 * H, 1 * H, 1 * H, 1 * H + 1800, 5 * H + 1800),
        ("acme/api", 2, "carol", 1 * H, 1 * H, 1 * H + 1800, 1800, 4 * H),
        ("acme/web", 7, "dave", None, None, None, 1800, 1 * H),
    ],
    # Latest attempt per run: CI = 9001 (attempt 2: success, 360 s), 9002 (success, 240 s),
    # 9005 (failure, 120 s); 9004 is not completed. quantileExact(q) takes the value at
    # index floor(q * n) of the sorted durations [120, 240, 360].
    "SELECT repository, workflow, runs, successes, round(success_rate, 4), p50_seconds, "
    "p90_seconds FROM ci_health ORDER BY repository, workflow": [
        ("acme/web", "CI", 3, 2, 0.6667, 240, 360),
        ("acme/web", "Deploy", 1, 1, 1.0, 600, 600),
    ],
}


# --- comparing read models ------------------------------------------------------------------
TABLES = ("deliveries", "pull_requests", "pull_request_reviews", "commits", "deployments",
          "deployment_statuses", "workflow_runs", "workflow_jobs", "check_runs", "issues",
          "releases")  # fmt: skip
Sql = Callable[[str], Awaitable[list[list[Any]]]]


def normalise(rows: list[list[Any]]) -> list[tuple[Any, ...]]:
    return [tuple(v.isoformat() if isinstance(v, date) else v for v in row) for row in rows]


async def snapshot(sql: Sql) -> dict[str, Any]:
    """Every table (FINAL, without the receipt time) and every view, in a stable order."""
    out: dict[str, Any] = {}
    for table in TABLES:
        columns = [r[0] for r in await sql(f"DESCRIBE TABLE {table}") if r[0] != "received_at"]
        out[table] = await sql(
            f"SELECT {', '.join(columns)} FROM {table} FINAL ORDER BY {', '.join(columns)}"
        )
    for query in EXPECTED:
        out[query] = await sql(query)
    return out
