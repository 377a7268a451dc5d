"""HTTP pieces every service shares: API keys with two scopes (admin: everything; read: events,
sectors, sources, feeds — or reads made public by a setting), /healthz, /readyz and /metrics,
the request guard (key before body, body size cap, JSON bodies only), the access log,
request-body validation and its 422s."""

from __future__ import annotations

import asyncio
import difflib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Annotated
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, SecretStr, model_validator
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.metrics import Metrics

Check = Callable[[], Awaitable[bool]]
log = logging.getLogger(__name__)

READY_CHECK_S = 2.0  # each dependency check of /readyz answers within this, or counts as down


def api_key_dependency(api_key: SecretStr) -> Callable[[str | None], Awaitable[None]]:
    """A FastAPI dependency that requires ``Authorization: Bearer <api_key>``."""
    expected = api_key.get_secret_value().encode()

    # async (though it awaits nothing): FastAPI runs a plain function in a worker thread, a
    # hand-off that cost more than the rest of a small request (measured).
    async def require_api_key(authorization: Annotated[str | None, Header()] = None) -> None:
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or not hmac.compare_digest(token.encode(), expected):
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


def ops_router(*, metrics: Metrics, checks: dict[str, Check], starting: Callable[[], bool] | None = None) -> APIRouter:
    """/healthz (the process is up), /readyz (every dependency answers), /metrics (Prometheus).
    While ``starting()`` is true, /readyz answers as usual but logs no change of readiness."""
    router = APIRouter(tags=["operations"])

    # HEAD too: load balancers and uptime checkers often probe with it (405 before). Kept out of
    # the schema: one function under two methods would give two operations the same id.
    @router.get("/healthz")
    @router.head("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    last: dict[str, bool] = {}

    async def bounded(name: str, check: Check) -> bool:
        reason = "it says not yet"
        try:
            async with asyncio.timeout(READY_CHECK_S):
                ok = await check()
        except TimeoutError:
            ok, reason = False, f"no answer within {READY_CHECK_S:g} s"
        except Exception as exc:  # a failing check means "not ready", never a 500
            ok, reason = False, f"{type(exc).__name__}: {exc}"
        # One line per change of state, not one per probe; none while the process is starting
        # (every start would warn of a store it has not opened yet).
        if starting is None or not starting():
            if last.get(name, True) != ok:
                log.warning("readiness: %s %s", name, "ready again" if ok else f"not ready ({reason})")
            last[name] = ok
        return ok

    @router.get("/readyz")
    @router.head("/readyz", include_in_schema=False)
    async def readyz(response: Response) -> dict[str, object]:
        """200 when every dependency answers, else 503 — within READY_CHECK_S, never hanging."""
        names = list(checks)
        answers = await asyncio.gather(*(bounded(name, checks[name]) for name in names))
        results = dict(zip(names, answers, strict=True))
        ready = all(results.values())
        response.status_code = 200 if ready else 503
        return {"status": "ready" if ready else "not ready", "checks": results}

    @router.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return router


class Body(BaseModel):
    """Base of request bodies: refuses text that is not valid Unicode (a lone surrogate, which
    JSON's ``\\udXXX`` escapes can carry) in any field, before it reaches a store or a log."""

    @model_validator(mode="after")
    def _valid_unicode(self) -> Body:
        def check(value: object) -> None:
            if isinstance(value, str):
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise ValueError("text must be valid Unicode (no lone surrogates)") from exc
            elif isinstance(value, list | tuple | set):
                for element in value:
                    check(element)
            elif isinstance(value, dict):
                for key, element in value.items():
                    check(key)
                    check(element)
            elif isinstance(value, BaseModel):
                for field in type(value).model_fields:
                    check(getattr(value, field))

        for name in type(self).model_fields:
            check(getattr(self, name))
        return self


MAX_ERRORS = 20


def validation_errors(exc: RequestValidationError) -> JSONResponse:
    """422 with where and what was wrong, never the input itself: an answer must not echo a
    large body back, and an input value (NaN, a surrogate) may not even be JSON."""
    errors = [
        {
            "loc": [str(part) for part in error.get("loc", ())],
            "msg": str(error.get("msg", "")),
            "type": error.get("type"),
        }
        for error in exc.errors()[:MAX_ERRORS]
    ]
    return JSONResponse({"detail": errors}, status_code=422)


# The query names each route reads, by the route's id (routes are unhashable); the route is kept
# beside them, so its id cannot be reused by another while cached.
_KNOWN_QUERY: dict[int, tuple[APIRoute, frozenset[str]]] = {}


def _declared_query(dependant: Dependant) -> frozenset[str]:
    """The query parameter names a route reads, its dependencies' included."""
    names = {field.alias for field in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _declared_query(sub)
    return frozenset(names)


# Parameters that links pick up on their way (newsletters, feed readers, cache busters): never
# a filter, so never refused.
TRACKING_PARAMS = frozenset({"_", "fbclid", "gclid", "mc_cid", "mc_eid"})


def _tracking(name: str) -> bool:
    return name in TRACKING_PARAMS or name.startswith("utm_")


async def refuse_unknown_query(request: Request) -> None:
    """A dependency for the ``/api/`` routes: on a list route (a path without an id), a query
    parameter the route does not read is a 422 naming it, with the close names it may have
    meant. A mistyped filter (``sectors=`` for ``sector=``, ``min-score=``) was ignored, and the
    unfiltered list read as the filtered one. Not refused: ``key`` (the read key of feed
    readers) and tracking parameters (``utm_*``, ``_``, …) that links pick up; not checked:
    routes with an id in their path (one record, nothing to filter; alert emails and feeds link
    to them) and the email-link pages."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or "{" in route.path or RequestGuard.keyless(request.url.path):
        return
    cached = _KNOWN_QUERY.get(id(route))
    if cached is None or cached[0] is not route:  # walked once per route, not on every request
        cached = _KNOWN_QUERY[id(route)] = (route, _declared_query(route.dependant))
    known = cached[1]
    unknown = sorted(name for name in set(request.query_params) - known - {"key"} if not _tracking(name))
    if not unknown:
        return
    errors = []
    for name in unknown[:MAX_ERRORS]:
        close = difflib.get_close_matches(name, sorted(known), n=2, cutoff=0.6)
        hint = f"; did you mean {' or '.join(close)}?" if close else f"; known: {', '.join(sorted(known)) or 'none'}"
        errors.append({"type": "extra_forbidden", "loc": ("query", name[:64]), "msg": "unknown parameter" + hint})
    raise RequestValidationError(errors)


class RequestGuard:
    """ASGI middleware in front of every route: a mutating ``/api/`` request without the admin
    key is refused (401) before its body is read, except the keyless email-link pages; a body over
    ``max_bytes`` is refused (413) — by its Content-Length before it is read, else as soon as the
    bytes read pass it. The routes check the key again; this makes sure nothing is read first."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, admin_key: SecretStr) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.expected = admin_key.get_secret_value().encode()

    @staticmethod
    def keyless(path: str) -> bool:
        """The email-link pages (confirm, unsubscribe): their token is their key."""
        return path.startswith("/api/v1/subscriptions/") and path.endswith(("/confirm", "/unsubscribe"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        path = str(scope["path"])
        if (
            scope["method"] in ("POST", "PUT", "PATCH", "DELETE")
            and path.startswith("/api/")
            and not self.keyless(path)
        ):
            scheme, _, token = headers.get("authorization", "").partition(" ")
            token = token.strip()  # an empty token never matches, whatever the key (settings refuse an empty one)
            if scheme.lower() != "bearer" or not token or not hmac.compare_digest(token.encode(), self.expected):
                response = JSONResponse(
                    {"detail": "missing or invalid API key"}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
                )
                await response(scope, receive, send)
                return
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._too_large(scope, receive, send)
            return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        # Read the body here, at most max_bytes of it (a chunked body has no Content-Length to
        # check first), then hand it to the app as if it came from the client.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            more = bool(message.get("more_body"))
        body = b"".join(chunks)
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        if body and path.startswith("/api/") and not self.keyless(path) and media != "application/json":
            detail = "send the body as JSON with the header Content-Type: application/json"
            await JSONResponse({"detail": detail}, status_code=415)(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: wait for a disconnect, as Starlette does
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"request body larger than {self.max_bytes} bytes (CORRIDOR_MAX_BODY_BYTES)"
        await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)


SECRET_PARAMS = frozenset({"key", "token"})
access_log = logging.getLogger("corridor.access")


def _masked_query(raw: bytes) -> str:
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    return urlencode([(k, "[secret]" if k.lower() in SECRET_PARAMS else v) for k, v in pairs])


class HeadAsGet:
    """ASGI middleware: ``HEAD`` on an ``/api/`` route is answered as its ``GET``, headers only
    (RFC 9110 9.3.2: feed and calendar clients check for changes with it; FastAPI's routes
    answered 405). The status and headers, Content-Length included, are the GET's; the body is
    read and dropped, so a HEAD costs what the GET costs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD" or not str(scope["path"]).startswith("/api/"):
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if not message.get("more_body", False):
                    await send({"type": "http.response.body", "body": b""})
                return
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


class WhileStarting:
    """ASGI middleware: until ``started()`` is true, every route but the operations ones (and the
    API's document) answers 503 ``starting`` with Retry-After. The process serves HTTP while its
    start still waits for the store and the bus (up to a minute), so a liveness probe gets its
    200 from /healthz and /readyz says "not ready", where before no route answered at all."""

    OPEN = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})

    def __init__(self, app: ASGIApp, *, started: Callable[[], bool]) -> None:
        self.app = app
        self.started = started

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.started() and scope["path"] not in self.OPEN:
            starting = JSONResponse(
                {"detail": "starting: waiting for the store and the bus, try again later"},
                status_code=503,
                headers={"Retry-After": "5"},
            )
            await starting(scope, receive, send)
            return
        await self.app(scope, receive, send)


class AccessLog:
    """ASGI middleware: one log line per request (``corridor.access``, INFO): method, path, query
    with the ``key`` and ``token`` values masked, status, duration, client address. Fields also
    ride on the record as ``http`` for the JSON log format. Headers are never logged."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not access_log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app fails before answering

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            client = scope.get("client")
            fields = {
                "method": scope["method"],
                "path": scope["path"],
                "query": _masked_query(scope.get("query_string", b"")),
                "status": status,
                "ms": round((time.perf_counter() - started) * 1000, 1),
                "client": client[0] if client else None,
            }
            # Path and query are quoted (JSON): a %0A in either must not start a forged log line.
            quoted = ("path", "query")
            line = " ".join(f"{k}={json.dumps(v) if k in quoted else v}" for k, v in fields.items() if v != "")
            access_log.info(line, extra={"http": fields})
