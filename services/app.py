"""The FastAPI application of one Corridor process: the routes of its roles plus the ops routes.

The same paths in every mode: embedded (`corridor run all`) serves them all from one app; in
compose each service serves its own and the reverse proxy joins them under one base URL.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel

from services.alerts.routes import build_router as alerts_router
from services.classifier.agreement_routes import build_router as agreements_router
from services.classifier.routes import build_router as events_router
from services.ingest.routes import build_router as sources_router
from services.runtime import Runtime
from services.web.routes import mount_dashboard
from shared.api import (
    AccessLog,
    HeadAsGet,
    RequestGuard,
    WhileStarting,
    api_key_dependency,
    ops_router,
    read_dependency,
    refuse_unknown_query,
    validation_errors,
)
from shared.errors import Unavailable

log = logging.getLogger(__name__)


TITLE = "Corridor"
__version__ = "0.1.0"
DESCRIPTION = "Follow-through of the Pakistan–Kazakhstan agreements: events, sources, subscriptions."


def api_routers(runtime: Runtime) -> dict[str, APIRouter]:
    """The API routes of each role, built on ``runtime``'s clients."""
    settings = runtime.settings
    require_key = api_key_dependency(settings.api_key)
    require_read = read_dependency(
        admin_key=settings.api_key, read_keys=settings.read_api_keys, public=settings.reads_are_public
    )
    return {
        "ingest": sources_router(
            store=runtime.store,
            policy=runtime.policy,
            default_interval_s=settings.poll_interval_s,
            on_added=runtime.wake_poller,
            require_key=require_key,
            require_read=require_read,
        ),
        "classifier": events_router(
            store=runtime.store,
            sector_ids=runtime.sector_ids,
            agreement_ids=[a.id for a in runtime.registry.agreements],
            require_read=require_read,
            base_url=settings.public_base_url,
            query_timeout_s=settings.query_timeout_s,
            agreement_titles={a.id: a.title for a in runtime.registry.agreements},
        ),
        "agreements": agreements_router(
            store=runtime.store,
            registry=runtime.registry,
            watch=runtime.watch,
            require_read=require_read,
            base_url=settings.public_base_url,
        ),
        "alerts": alerts_router(
            store=runtime.store,
            policy=runtime.policy,
            sector_ids=runtime.sector_ids,
            agreement_ids=[a.id for a in runtime.registry.agreements],
            require_key=require_key,
            settings=settings,
            on_change=runtime.subscriptions_changed,
        ),
    }


class ErrorOut(BaseModel):
    """An error answer: what went wrong (422s give a list of ``loc``/``msg``/``type`` instead)."""

    detail: str


API_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {
        "description": "missing or invalid API key (admin routes; reads when they are not public)",
        "model": ErrorOut,
    },
    503: {"description": "store unavailable or the query over its time budget; see Retry-After", "model": ErrorOut},
}


def create_app(runtime: Runtime) -> FastAPI:
    """An app whose lifespan starts and stops ``runtime``: the routes of its roles, the ops routes
    and, at /openapi.json and /docs, the document of the whole API (every role's routes): behind
    the compose proxy, which sends /docs to one service, it still shows everything."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The start runs beside the server, not before it: uvicorn serves once the lifespan has
        # yielded, so /healthz answers while the start waits for the store and the bus (up to a
        # minute), and every other route answers 503 until it is done (WhileStarting). A start
        # that fails fails the process (exit 1); a stop requested meanwhile ends the start.
        starting = asyncio.create_task(runtime.start(), name="corridor.start")
        starting.add_done_callback(runtime.start_ended)
        try:
            yield
        finally:
            if not starting.done():
                runtime.request_stop()
                await asyncio.gather(starting, return_exceptions=True)
            await runtime.stop()

    app = FastAPI(title=TITLE, version=__version__, description=DESCRIPTION, lifespan=lifespan)
    settings = runtime.settings
    routers = api_routers(runtime)
    for name, router in routers.items():
        # The tracker's routes belong to the classifier, which links items to agreements.
        if (name if name != "agreements" else "classifier") in runtime.roles:
            app.include_router(router, dependencies=[Depends(refuse_unknown_query)])
    if "classifier" in runtime.roles:
        mount_dashboard(app)  # the page reads /api/v1; in compose the proxy sends / here
    ops = ops_router(
        metrics=runtime.metrics,
        checks={"started": runtime.has_started, "store": runtime.store.ping, "bus": runtime.bus.ping},
        starting=lambda: not runtime.started and not runtime.failed,
    )
    app.include_router(ops)

    def whole_api() -> dict[str, Any]:
        if app.openapi_schema is None:
            everything = FastAPI(title=TITLE, version=__version__, description=DESCRIPTION)
            for router in routers.values():
                # The answers every /api/ route may give besides its own (the review of
                # 2026-12-05 found the document listing only 200 and 422).
                for route in router.routes:
                    if isinstance(route, APIRoute) and "{" in route.path:
                        route.responses.setdefault(404, {"description": "no such record", "model": ErrorOut})
                everything.include_router(router, responses=API_ERRORS)
            everything.include_router(ops)
            app.openapi_schema = everything.openapi()
        return app.openapi_schema

    app.openapi = whole_api  # type: ignore[method-assign]

    app.add_middleware(WhileStarting, started=lambda: runtime.started)
    app.add_middleware(HeadAsGet)
    app.add_middleware(RequestGuard, max_bytes=settings.max_body_bytes, admin_key=settings.api_key)
    app.add_middleware(AccessLog)  # added last: outermost, so refused requests are logged too

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_errors(exc)

    @app.exception_handler(Unavailable)
    async def store_unavailable(request: Request, exc: Exception) -> JSONResponse:
        # The store is down or timed out: a condition of the server, not of the request. Log it
        # once with the cause; answer 503 so clients and proxies retry later.
        log.error("store unavailable on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(
            {"detail": "store unavailable, try again later"}, status_code=503, headers={"Retry-After": "5"}
        )

    return app
