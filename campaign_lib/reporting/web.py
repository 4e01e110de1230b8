"""The "Campaign reports" pages: a FastAPI app that lists and serves the rendered reports.

    GET /                          the index page (every run at a glance)
    GET /{campaign}/run_{id}.html  a report; .pdf for its PDF

Airflow mounts it in its API server (plugins/kms_reports.py) and passes Airflow's login
check as `dependencies`, so only logged-in users (the UI's cookie or a Bearer token) get
anything. Only names of the exact shape above are served, resolved inside the reports
folder: no path (`..`, `/`, `%2f`, symlinks out of the folder) reaches another file.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

from fastapi import APIRouter, FastAPI, HTTPException, params
from fastapi.responses import FileResponse, HTMLResponse, Response

_CAMPAIGN = re.compile(r"^[a-z][a-z0-9_]{1,62}$")
_REPORT_FILE = re.compile(r"^run_[0-9]{1,18}\.(html|pdf)$")
_MEDIA_TYPES = {"html": "text/html; charset=utf-8", "pdf": "application/pdf"}
_NOTHING_YET = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Campaign reports</title>
</head><body><h1>Campaign reports</h1><p>No report has been rendered yet. Reports appear after a campaign
run's delivery, or with <code>kms report render RUN_ID</code>.</p></body></html>"""


def served_file(folder: Path, campaign: str, name: str) -> Path | None:
    """The report file `campaign/name` inside `folder`, or None when the name has another
    shape, the file does not exist, or it resolves outside the folder."""
    if not _CAMPAIGN.fullmatch(campaign) or not _REPORT_FILE.fullmatch(name):
        return None
    root = folder.resolve()
    path = (root / campaign / name).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path


def create_reports_app(folder: Callable[[], Path], dependencies: Sequence[params.Depends] = ()) -> FastAPI:
    """The app serving the reports of `folder()` (read at each request, so a changed setting
    needs no restart); every path runs `dependencies` first (Airflow's login check)."""
    app = FastAPI(title="kms campaign reports", docs_url=None, redoc_url=None, openapi_url=None)
    router = APIRouter(dependencies=list(dependencies))

    @router.get("/", response_class=HTMLResponse)
    def index() -> Response:
        from campaign_lib.reporting.report import INDEX

        path = folder().resolve() / INDEX
        if not path.is_file():
            return HTMLResponse(_NOTHING_YET)
        return FileResponse(path, media_type=_MEDIA_TYPES["html"])

    @router.get("/{campaign}/{name}")
    def report(campaign: str, name: str) -> FileResponse:
        path = served_file(folder(), campaign, name)
        if path is None:
            raise HTTPException(status_code=404, detail="no such report")
        return FileResponse(
            path,
            media_type=_MEDIA_TYPES[path.suffix.lstrip(".")],
            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"},
        )

    app.include_router(router)
    return app
