"""The dashboard page and its assets carry a Content-Security-Policy, anti-framing and no-sniff
headers; the API's own pages (/docs) are left without that policy (Swagger UI loads from a CDN)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from helpers import runtime_client

from services.runtime import ALL_ROLES, Runtime
from services.web.routes import STATIC
from shared.settings import load_settings

CSP = "default-src 'self'; frame-ancestors 'none'; object-src 'none'; base-uri 'none'"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    runtime = Runtime(load_settings(sqlite_path=tmp_path / "w.sqlite3", api_key="admin-key"), ALL_ROLES)
    async with runtime_client(runtime) as c:
        yield c


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/static/style.css"])
async def test_dashboard_sends_security_headers(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-security-policy"] == CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


async def test_page_keeps_no_cache_and_docs_get_no_dashboard_policy(client: httpx.AsyncClient) -> None:
    assert (await client.get("/")).headers["cache-control"] == "no-cache"
    docs = await client.get("/docs")
    assert docs.status_code == 200 and "content-security-policy" not in docs.headers


def test_page_needs_nothing_the_policy_blocks() -> None:
    """No inline script or style, no inline handlers or style attributes, nothing from elsewhere."""
    html = (STATIC / "index.html").read_text()
    lowered = html.lower()
    assert "<style" not in lowered and " style=" not in lowered
    assert lowered.count("<script") == 1 and '<script src="/static/app.js"></script>' in html
    assert not any(f" on{event}=" in lowered for event in ("click", "load", "submit", "change", "input", "error"))
    assert "http://" not in html and "https://" not in html.replace('placeholder="https://', "")
    assert "data:" not in html
