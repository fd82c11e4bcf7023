"""The insights page (DESIGN.md §10): ``GET /insights``, its assets, and its JSON API.

Served by the insights worker beside ``POST /query``, on 127.0.0.1 only. The page is
static (HTML, one script, one stylesheet, all shipped in this package: nothing is loaded
from elsewhere, and the Content-Security-Policy says so to the browser); the script draws
``GET /insights/api/dora``, whose numbers come from :mod:`projections.insights_report`
through the read-only query path.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources

import orjson
from aiohttp import web

from projections.insights_report import (
    FilterError,
    Patterns,
    ReportFilters,
    build_report,
    report_queries,
)
from projections.query import RUNNER, QueryError, Runner, query_app, run_readonly_many

PATTERNS: web.AppKey[Patterns] = web.AppKey("patterns")
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.body).hexdigest()[:20] + '"'


def _load_assets() -> dict[str, Asset]:
    folder = resources.files("projections") / "insights_static"
    types = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
    return {
        item.name: Asset(item.read_bytes(), types[item.name[item.name.rindex(".") :]])
        for item in folder.iterdir()
        if item.name.endswith(tuple(types))
    }


ASSETS = _load_assets()


def _serve(request: web.Request, asset: Asset) -> web.Response:
    headers = {"ETag": asset.etag, "Cache-Control": "no-cache", **SECURITY_HEADERS}
    if request.headers.get("If-None-Match") == asset.etag:
        return web.Response(status=304, headers=headers)
    return web.Response(
        body=asset.body, content_type=asset.content_type, charset="utf-8", headers=headers
    )


async def page(request: web.Request) -> web.Response:
    return _serve(request, ASSETS["insights.html"])


async def static(request: web.Request) -> web.Response:
    asset = ASSETS.get(request.match_info["name"])
    if asset is None or request.match_info["name"].endswith(".html"):
        raise web.HTTPNotFound(text="no such asset")
    return _serve(request, asset)


async def dora_api(request: web.Request) -> web.Response:
    try:
        filters = ReportFilters.parse(request.query, datetime.now(UTC).date())
    except FilterError as exc:
        return _json({"error": str(exc)}, status=400)
    queries = report_queries(filters)
    try:
        results = await request.app[RUNNER](run_readonly_many, queries)
    except QueryError as exc:
        return _json({"error": f"the insight views could not be read: {exc}"}, status=503)
    return _json(build_report(filters, results, request.app[PATTERNS]))


def _json(document: object, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(document),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store", **SECURITY_HEADERS},
    )


def insights_app(runner: Runner, patterns: Patterns) -> web.Application:
    """The worker's read-only web app: ``POST /query`` and the insights page."""
    app = query_app(runner)
    app[PATTERNS] = patterns
    app.router.add_get("/insights", page)
    app.router.add_get("/insights/api/dora", dora_api)
    app.router.add_get("/insights/static/{name}", static)
    return app
