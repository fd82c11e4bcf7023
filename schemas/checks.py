"""Check-run transitions: the records of ``hookstream.checks`` (DESIGN.md §7).

Every transition the check-run machine applies is recorded, keyed by dispatch id, so
the log says what each pull request showed and why: ``cause`` is the delivery GUID or
runner run id that moved it.
"""

from __future__ import annotations

from datetime import datetime

import orjson
from pydantic import BaseModel, ConfigDict, Field


class CheckTransition(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)

    dispatch_id: str
    check_run_id: int | None = None
    repository: str | None = None
    head_sha: str | None = None
    name: str | None = None
    from_: str | None = Field(default=None, alias="from")  # None: the run did not exist
    to: str
    conclusion: str | None = None
    at: datetime | None = None
    cause: str
    sent: bool = Field(
        default=True, description="False when GitHub was not told (replay, no credentials)."
    )

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", by_alias=True))
