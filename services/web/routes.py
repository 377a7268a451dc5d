"""Serving the dashboard: / is the page, /static/* its assets (shipped with Corridor, no CDN)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

STATIC = Path(str(resources.files("services.web").joinpath("static")))

# The page loads only its own script and stylesheet, has no inline <script>/<style>, no style
# attributes in its markup (colours are set from JavaScript through element.style, which CSP
# allows), no images or web fonts, and fetches only /api/v1 on its own origin. Only the page
# and its assets get this policy: /docs (Swagger UI from a CDN) is FastAPI's and left alone.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; object-src 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class DashboardStatic(StaticFiles):
    """The page's assets, with the page's security headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


def mount_dashboard(app: FastAPI) -> None:
    """Add the page at / and its assets at /static."""
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    async def index() -> FileResponse:
        return FileResponse(
            STATIC / "index.html",
            media_type="text/html; charset=utf-8",
            headers={"Cache-Control": "no-cache", **SECURITY_HEADERS},
        )

    app.include_router(router)
    app.mount("/static", DashboardStatic(directory=STATIC), name="static")
