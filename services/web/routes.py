"""Serving the dashboard: / is the page, /static/* its assets (shipped with Corridor, no CDN)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(str(resources.files("services.web").joinpath("static")))


def mount_dashboard(app: FastAPI) -> None:
    """Add the page at / and its assets at /static."""
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    async def index() -> FileResponse:
        return FileResponse(
            STATIC / "index.html", media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"}
        )

    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
