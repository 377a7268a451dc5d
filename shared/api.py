"""HTTP pieces every service shares: API-key auth, /healthz, /readyz and /metrics."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Response
from pydantic import SecretStr

from shared.metrics import Metrics

Check = Callable[[], Awaitable[bool]]


def api_key_dependency(api_key: SecretStr) -> Callable[[str | None], None]:
    """A FastAPI dependency that requires ``Authorization: Bearer <api_key>``."""
    expected = api_key.get_secret_value().encode()

    def require_api_key(authorization: Annotated[str | None, Header()] = None) -> None:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
            raise HTTPException(401, detail="missing or invalid API key", headers={"WWW-Authenticate": "Bearer"})

    return require_api_key


def ops_router(*, metrics: Metrics, checks: dict[str, Check]) -> APIRouter:
    """/healthz (the process is up), /readyz (every dependency answers), /metrics (Prometheus)."""
    router = APIRouter(tags=["operations"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz(response: Response) -> dict[str, object]:
        results = {name: await check() for name, check in checks.items()}
        ready = all(results.values())
        response.status_code = 200 if ready else 503
        return {"status": "ready" if ready else "not ready", "checks": results}

    @router.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return router
