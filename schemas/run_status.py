"""Run status reports: what runners send back about a dispatched run.

Runners POST these to the ingress (``/v1/runs/{run_id}/status``) or write them to
``hookstream.run-status`` themselves; the check-run processor turns them into GitHub
check runs. The limits mirror GitHub's Checks API, so a valid report is one GitHub
will accept.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"

Conclusion = Literal[
    "success", "failure", "neutral", "cancelled", "skipped", "timed_out", "action_required"
]


class Annotation(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(min_length=1)
    start_line: int = Field(ge=1)
    end_line: int = Field(ge=1)
    annotation_level: Literal["notice", "warning", "failure"]
    message: str = Field(min_length=1, max_length=64 * 1024)
    title: str | None = Field(default=None, max_length=255)

    @model_validator(mode="after")
    def _lines_in_order(self) -> Annotation:
        if self.end_line < self.start_line:
            raise ValueError("end_line must not be before start_line")
        return self


class Output(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str = Field(min_length=1, max_length=255)
    summary: str = Field(min_length=1, max_length=65535)
    text: str | None = Field(default=None, max_length=65535)
    annotations: list[Annotation] = Field(default_factory=list, max_length=1000)


class RunStatus(BaseModel):
    """One report. ``conclusion`` is required exactly when ``status`` is ``completed``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: Literal["queued", "in_progress", "completed"]
    conclusion: Conclusion | None = None
    dispatch_id: str | None = None
    details_url: str | None = Field(default=None, max_length=2048)
    started_at: datetime | None = None
    completed_at: datetime | None = None
    output: Output | None = None

    @model_validator(mode="after")
    def _conclusion_iff_completed(self) -> RunStatus:
        if self.status == "completed" and self.conclusion is None:
            raise ValueError("a completed run needs a conclusion")
        if self.status != "completed" and self.conclusion is not None:
            raise ValueError(f"a {self.status} run has no conclusion yet")
        return self


class RunStatusRecord(RunStatus):
    """A report as recorded on ``hookstream.run-status``."""

    run_id: str = Field(pattern=RUN_ID_PATTERN)
    received_at: datetime

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", exclude_none=True))
