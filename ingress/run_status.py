"""Runner status reports over HTTP (``POST /v1/runs/{run_id}/status``), without I/O.

Runners authenticate with a bearer token (``HOOKSTREAM_RUNNER_TOKENS``); a report is
validated against :class:`schemas.run_status.RunStatus` and recorded as is on
``hookstream.run-status``. Failures raise :class:`ingress.delivery.Rejection`.
"""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import ValidationError

from ingress.bearer import authorize_bearer
from ingress.delivery import Rejection
from schemas.envelope import JSON_CONTENT_TYPE
from schemas.run_status import RUN_ID_PATTERN, RunStatus, RunStatusRecord

MAX_REPORT_BYTES = 1024 * 1024
_RUN_ID = re.compile(RUN_ID_PATTERN)


def authorize_runner(authorization: str | None, tokens: tuple[bytes, ...]) -> None:
    authorize_bearer(
        authorization,
        tokens,
        holder="runner",
        endpoints="runner status reports",
        variable="HOOKSTREAM_RUNNER_TOKENS",
    )


def parse_report(
    run_id: str, content_type: str, body: bytes, received_at: datetime
) -> RunStatusRecord:
    if not _RUN_ID.match(run_id):
        raise Rejection(400, "bad_run_id", "run id must be 1-128 of [A-Za-z0-9._:-]")
    if content_type.split(";", 1)[0].strip().lower() != JSON_CONTENT_TYPE:
        raise Rejection(415, "unsupported_media_type", "content type must be application/json")
    try:
        report = RunStatus.model_validate_json(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise Rejection(400, "bad_report", problems) from None
    return RunStatusRecord(**report.model_dump(), run_id=run_id, received_at=received_at)
