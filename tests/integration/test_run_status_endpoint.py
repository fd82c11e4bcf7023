"""``POST /v1/runs/{run_id}/status`` against the real broker."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.helpers import RunningIngress, read_topic

pytestmark = pytest.mark.integration

AUTH = {"Authorization": "Bearer runner-token", "Content-Type": "application/json"}


async def post(ingress: RunningIngress, run_id: str, body: bytes, headers: dict[str, str]) -> Any:
    async with ingress.session.post(
        f"{ingress.url}/v1/runs/{run_id}/status", data=body, headers=headers
    ) as response:
        return response.status, await response.json(), response.headers


async def test_reports_are_recorded_and_bad_ones_refused(ingress: RunningIngress) -> None:
    report = orjson.dumps(
        {"status": "completed", "conclusion": "success", "dispatch_id": "d-1",
         "output": {"title": "All green", "summary": "42 tests passed"}}
    )  # fmt: skip
    status, answer, _ = await post(ingress, "run-1", report, AUTH)
    assert (status, answer) == (202, {"run": "run-1", "status": "completed"})

    no_token = {"Content-Type": "application/json"}
    status, answer, headers = await post(ingress, "run-2", report, no_token)
    assert (status, answer["error"], headers["WWW-Authenticate"]) == (401, "unauthorized", "Bearer")
    wrong = AUTH | {"Authorization": "Bearer nope"}
    assert (await post(ingress, "run-2", report, wrong))[0] == 401
    status, answer, _ = await post(ingress, "run-2", b'{"status": "completed"}', AUTH)
    assert (status, "conclusion" in answer["message"]) == (400, True)
    assert (await post(ingress, "run-2", b"[", AUTH))[0] == 400
    assert (await post(ingress, "run-2", report, AUTH | {"Content-Type": "text/plain"}))[0] == 415
    huge = orjson.dumps({"status": "queued", "details_url": "x" * (1024 * 1024)})
    status, answer, _ = await post(ingress, "run-2", huge, AUTH)
    assert (status, answer["error"]) == (413, "too_large")
    status, answer, _ = await post(ingress, "bad id!", report, AUTH)
    assert (status, answer["error"]) == (400, "bad_run_id")

    settings = ingress.settings
    records = await read_topic(settings, settings.run_status_topic, settings.dispatch_partitions)
    [record] = records
    assert record.key == b"run-1"
    recorded = orjson.loads(record.value)
    assert recorded["run_id"] == "run-1"
    assert recorded["conclusion"] == "success"
    assert recorded["output"]["title"] == "All green"
