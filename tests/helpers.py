"""Real local servers and process helpers for the tests: a feed server, a webhook receiver, an
SMTP server (aiosmtpd) and Corridor processes. Everything listens on 127.0.0.1 only."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

IN_CI = os.environ.get("CI", "").lower() == "true"
REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
CORRIDOR = str(Path(sys.executable).parent / "corridor")


if TYPE_CHECKING:
    from services.runtime import Runtime


@asynccontextmanager
async def runtime_client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """The app of ``runtime`` in process (started and stopped around the block)."""
    from services.app import create_app  # here: the helpers also serve processes that never build the app

    await runtime.start()
    try:
        transport = httpx.ASGITransport(app=create_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://corridor") as client:
            yield client
    finally:
        await runtime.stop()


class ManualClock:
    """A clock for ``clock=`` parameters that moves only when a test sets ``now``."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


@dataclass
class Route:
    """What the feed server answers on one path."""

    body: bytes = b""
    status: int = 200
    content_type: str = "application/xml"
    delay_s: float = 0.0
    stream_bytes: int = 0  # when set, stream this many bytes of filler instead of ``body``
    trickle_s: float = 0.0  # when set, send ``body`` one byte at a time, this long apart
    etag: str | None = None  # when set, answer 304 to a matching If-None-Match
    headers: dict[str, str] = field(default_factory=dict)
    hits: int = 0
    requests: list[dict[str, str]] = field(default_factory=list)
    active: int = 0
    max_active: int = 0


class FeedServer:
    """Serves configured routes; unknown paths are 404."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                route = outer.routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                route.hits += 1
                route.requests.append({k.lower(): v for k, v in self.headers.items()} | {"at": str(time.time())})
                route.active += 1
                route.max_active = max(route.max_active, route.active)
                try:
                    self._answer(route)
                finally:
                    route.active -= 1

            def _answer(self, route: Route) -> None:
                if route.delay_s:
                    time.sleep(route.delay_s)
                try:
                    if route.etag and self.headers.get("If-None-Match") == route.etag:
                        self.send_response(304)
                        self.send_header("ETag", route.etag)
                        self.end_headers()
                        return
                    self.send_response(route.status)
                    self.send_header("Content-Type", route.content_type)
                    if route.etag:
                        self.send_header("ETag", route.etag)
                    for name, value in route.headers.items():
                        self.send_header(name, value)
                    if route.stream_bytes:
                        self.end_headers()  # no Content-Length: the cap must work on a stream
                        chunk = b"<!-- " + b"x" * 65_000 + b" -->"
                        sent = 0
                        while sent < route.stream_bytes:
                            self.wfile.write(chunk)
                            sent += len(chunk)
                        return
                    self.send_header("Content-Length", str(len(route.body)))
                    self.end_headers()
                    if route.trickle_s:
                        for n in range(len(route.body)):
                            self.wfile.write(route.body[n : n + 1])
                            self.wfile.flush()
                            time.sleep(route.trickle_s)
                        return
                    self.wfile.write(route.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> FeedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    path: str

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """Records every POST. ``statuses`` is consumed one per request (then 200); ``delay_s`` per request."""

    statuses: list[int] = field(default_factory=list)
    delay_s: float = 0.0
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        outer = self
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                if len(body) < length:
                    # The sender died mid-request (SIGKILL tests): a real receiver rejects a truncated
                    # body, so it is not a delivery and is not recorded.
                    return
                if outer.delay_s:
                    time.sleep(outer.delay_s)
                with outer._lock:
                    status = outer.statuses.pop(0) if outer.statuses else 200
                    outer.received.append(Received({k.lower(): v for k, v in self.headers.items()}, body, self.path))
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the sender gave up (timeout) or was killed: nothing to answer

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class SmtpSink:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps every message."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[EmailMessage] = []
        self.raw: list[bytes] = []  # the bytes as they came over the wire, for header checks
        outer = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                outer.raw.append(envelope.original_content or envelope.content)
                outer.messages.append(message_from_bytes(envelope.content, policy=policy.default))  # type: ignore[arg-type]
                return "250 Message accepted for delivery"

        self.port = free_port()
        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> SmtpSink:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()


class CorridorProcess:
    """`corridor run ROLE` as a real child process with its own port and environment."""

    def __init__(self, role: str, env: dict[str, str], log_path: Path) -> None:
        self.role = role
        self.port = free_port()
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("CORRIDOR_", "KAFKA_", "MONGODB_"))}
        self.env = {**inherited, **env, "CORRIDOR_HTTP_PORT": str(self.port), "CORRIDOR_HTTP_HOST": "127.0.0.1"}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60) -> CorridorProcess:
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen([CORRIDOR, "run", self.role], env=self.env, stdout=log, stderr=log)

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"corridor {self.role} exited: {self.log_path.read_text()[-3000:]}")
            try:
                return httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout_s, f"corridor {self.role} to be ready")
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode if self.proc else None
