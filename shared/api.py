"""HTTP pieces every service shares: API keys with two scopes (admin: everything; read: events,
sectors, sources, feeds — or reads made public by a setting), /healthz, /readyz and /metrics."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Response
from pydantic import SecretStr

from shared.metrics import Metrics

Check = Callable[[], Awaitable[bool]]


def api_key_dependency(api_key: SecretStr) -> Callable[[str | None], Awaitable[None]]:
    """A FastAPI dependency that requires ``Authorization: Bearer <api_key>``."""
    expected = api_key.get_secret_value().encode()

    # async (though it awaits nothing): FastAPI runs a plain function in a worker thread, a
    # hand-off that cost more than the rest of a small request (measured).
    async def require_api_key(authorization: Annotated[str | None, Header()] = None) -> None:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
            raise HTTPException(401, detail="missing or invalid API key", headers={"WWW-Authenticate": "Bearer"})

    return require_api_key


def read_dependency(
    *, admin_key: SecretStr, read_keys: list[SecretStr], public: bool
) -> Callable[[str | None, str | None], Awaitable[None]]:
    """A FastAPI dependency for read routes: open when ``public``; otherwise a read or admin key,
    as ``Authorization: Bearer <key>`` or, for feed readers that cannot send headers, ``?key=``."""
    accepted = [k.get_secret_value().encode() for k in (admin_key, *read_keys)]

    async def require_read(
        authorization: Annotated[str | None, Header()] = None,
        key: Annotated[str | None, Query(max_length=200, description="read key, for feed readers")] = None,
    ) -> None:
        if public:
            return
        scheme, _, token = (authorization or "").partition(" ")
        given = (token.strip() if scheme.lower() == "bearer" else "") or (key or "")
        # Compare against every key so the time taken does not tell which one nearly matched.
        if not given or not any([hmac.compare_digest(given.encode(), k) for k in accepted]):
            raise HTTPException(401, detail="missing or invalid API key", headers={"WWW-Authenticate": "Bearer"})

    return require_read


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
