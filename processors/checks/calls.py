"""The Checks API requests each effect needs, as data (no I/O).

GitHub's limits are kept here: ``output.summary`` and ``output.text`` are cut to 65,535
UTF-8 *bytes* on a character boundary, with a note saying so; at most 50 annotations go
in one request, so a report with more becomes several PATCHes, the status change last;
only the statuses and conclusions an App may set are ever sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from schemas.dispatch import DispatchRequest
from schemas.run_status import Annotation, Output, RunStatusRecord

MAX_OUTPUT_BYTES = 65_535
MAX_ANNOTATIONS_PER_REQUEST = 50
CUT_NOTE = "\n\n… (cut by hookstream: GitHub keeps at most 65,535 bytes)"

# What a GitHub App may set; ``waiting``, ``requested``, ``pending`` and the ``stale``
# conclusion belong to GitHub Actions and GitHub itself.
APP_STATUSES = ("queued", "in_progress", "completed")
APP_CONCLUSIONS = (
    "action_required", "cancelled", "failure", "neutral", "success", "skipped", "timed_out",
)  # fmt: skip


@dataclass(frozen=True)
class Call:
    """One REST request: ``method``, a URL template with its variables, a JSON body."""

    method: str
    url: str
    url_vars: dict[str, str]
    body: dict[str, Any] | None = None
    # The request hookstream would send, named for the metrics: "create", "update", …
    endpoint: str = ""


def cut_utf8(text: str, limit: int = MAX_OUTPUT_BYTES) -> str:
    """``text`` if it fits in ``limit`` UTF-8 bytes, else cut on a character boundary."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    room = limit - len(CUT_NOTE.encode())
    # errors="ignore" drops the partial character the byte cut may leave at the end.
    return raw[:room].decode(errors="ignore") + CUT_NOTE


def _repo(request: DispatchRequest) -> dict[str, str]:
    owner, _, repo = (request.repository or "/").partition("/")
    return {"owner": owner, "repo": repo}


def create(request: DispatchRequest, details_url: str | None) -> Call:
    body: dict[str, Any] = {
        "name": request.check_name,
        "head_sha": request.sha,
        "external_id": request.dispatch_id,
        "status": "queued",
    }
    if details_url:
        body["details_url"] = details_url
    if request.check_actions:
        body["actions"] = [a.model_dump() for a in request.check_actions]
    return Call("POST", "/repos/{owner}/{repo}/check-runs", _repo(request), body, "create")


def lookup(request: DispatchRequest) -> Call:
    """Every check run of this name on the commit, this App's included, newest first."""
    return Call(
        "GET",
        "/repos/{owner}/{repo}/commits/{ref}/check-runs{?check_name,filter,per_page}",
        {**_repo(request), "ref": str(request.sha), "check_name": str(request.check_name),
         "filter": "all", "per_page": "100"},
        None,
        "lookup",
    )  # fmt: skip


def updates(
    request: DispatchRequest, check_run_id: int, report: RunStatusRecord, details_url: str | None
) -> list[Call]:
    """The PATCHes that bring the check run to ``report``: annotations first, status last."""
    url_vars = {**_repo(request), "check_run_id": str(check_run_id)}
    url = "/repos/{owner}/{repo}/check-runs/{check_run_id}"
    final: dict[str, Any] = {"status": report.status}
    if report.status == "in_progress":
        final["started_at"] = _iso(report.started_at or report.received_at)
    if report.status == "completed":
        final["conclusion"] = report.conclusion
        final["completed_at"] = _iso(report.completed_at or report.received_at)
    if report.details_url or details_url:
        final["details_url"] = report.details_url or details_url
    if report.status not in APP_STATUSES or report.conclusion not in (None, *APP_CONCLUSIONS):
        raise ValueError(f"an App may not set {report.status}/{report.conclusion}")
    annotations = report.output.annotations if report.output is not None else []
    step = MAX_ANNOTATIONS_PER_REQUEST
    batches = [tuple(annotations[i : i + step]) for i in range(0, len(annotations), step)] or [()]
    calls = []
    for index, batch in enumerate(batches):
        body = dict(final) if index == len(batches) - 1 else {}
        if report.output is not None:
            body["output"] = _output(report.output, batch)
        calls.append(Call("PATCH", url, url_vars, body, "update"))
    return calls


def _output(output: Output, annotations: tuple[Annotation, ...]) -> dict[str, Any]:
    shaped: dict[str, Any] = {"title": output.title, "summary": cut_utf8(output.summary)}
    if output.text is not None:
        shaped["text"] = cut_utf8(output.text)
    if annotations:
        shaped["annotations"] = [a.model_dump(exclude_none=True) for a in annotations]
    return shaped


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def details_url(template: str | None, dispatch_id: str, run_id: str | None = None) -> str | None:
    """``HOOKSTREAM_CHECKS_DETAILS_URL`` with ``{dispatch_id}`` and ``{run_id}`` filled in."""
    if not template:
        return None
    return template.replace("{dispatch_id}", dispatch_id).replace("{run_id}", run_id or "")
