"""`corridor demo`: the whole loop on one machine, offline, in a minute.

Starts, all on 127.0.0.1: a feed server serving ``services/demo/sample_feed.xml`` (real
Pakistan–Kazakhstan headlines with short excerpts and their links), a webhook receiver that
verifies each alert's Standard Webhooks signature and prints it, and Corridor in embedded mode
(its own SQLite file, the loopback network allowed). It adds the feed as a source and the
receiver as a subscription through the API, as a user would, then prints every verified alert
until Ctrl-C. Nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.app import create_app
from services.runtime import ALL_ROLES, Runtime
from shared.logs import configure_logging
from shared.settings import Settings, load_settings

FEED = Path(__file__).parent / "demo" / "sample_feed.xml"


class _Quiet(uvicorn.Server):
    """A helper server: the demo, not uvicorn, decides when everything stops."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


def _server(app: Any, port: int) -> _Quiet:
    return _Quiet(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))


def _receiver(secret: list[str], seen: asyncio.Queue[dict[str, Any]]) -> Starlette:
    async def hook(request: Request) -> Response:
        body = await request.body()
        if not secret:
            return Response(status_code=503)  # the subscription is being created: retried soon
        try:
            payload = Webhook(secret[0]).verify(body, dict(request.headers))
        except Exception as exc:  # any verification failure is shown, not hidden
            print(f"  !! signature check failed: {exc}", flush=True)
            return Response(status_code=400)
        await seen.put({**payload, "webhook_id": request.headers.get("webhook-id")})
        return Response(status_code=204)

    return Starlette(routes=[Route("/hook", hook, methods=["POST"])])


def _feed_app() -> Starlette:
    async def feed(request: Request) -> Response:
        return Response(FEED.read_bytes(), media_type="application/rss+xml")

    return Starlette(routes=[Route("/feed.xml", feed)])


def _show(alert: dict[str, Any]) -> str:
    item = alert["item"]
    sectors = ", ".join(f"{s['id']} {s['score']}" for s in item["sector_scores"]) or "no sector"
    agreements = ", ".join(a["id"] for a in item.get("agreements", [])) or "-"
    order = {"sector": 0, "agreement": 1, "stage": 2, "country": 3}
    evidence = sorted(item["evidence"], key=lambda e: order.get(e["kind"], 9))
    why = "; ".join(f"{e['label']}: “{e['term']}”" for e in evidence[:4])
    return (
        f"\n✔ verified alert {alert['webhook_id']}\n  {item['title']}\n"
        f"  sectors: {sectors} · countries: {', '.join(item['countries']) or '-'}\n"
        f"  agreements: {agreements} · stage reported: {item.get('stage') or '-'}\n"
        f"  why: {why}\n  link: {item.get('url') or alert['link']}"
    )


async def demo(settings: Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    secret: list[str] = []
    seen: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    # Corridor's port first: uvicorn binds only after the lifespan's start, and a taken port
    # then ended the demo with three tracebacks and exit 3.
    try:
        sock = socket.create_server(("127.0.0.1", settings.http_port))
    except OSError as exc:
        print(f"error: cannot listen on 127.0.0.1:{settings.http_port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    runtime = Runtime(settings, ALL_ROLES, on_failure=stop.set)
    # The feed and the receiver on ports the system picks (free ones), Corridor on its own.
    servers = [
        _server(_feed_app(), 0),
        _server(_receiver(secret, seen), 0),
        _server(create_app(runtime), settings.http_port),
    ]
    tasks = [asyncio.create_task(s.serve(sockets=[sock] if s is servers[2] else None)) for s in servers]
    # Serving is not started: Corridor answers 503 until its runtime has started (services.app).
    while not (all(s.started for s in servers) and runtime.started) and not any(t.done() for t in tasks):
        if stop.is_set():  # the start failed (logged)
            break
        await asyncio.sleep(0.05)
    if any(t.done() for t in tasks):  # a port in use, say: uvicorn has logged why
        stop.set()
    feed_port, receiver_port = (s.servers[0].sockets[0].getsockname()[1] if s.servers else 0 for s in servers[:2])
    base = f"http://127.0.0.1:{settings.http_port}"
    admin = {"Authorization": f"Bearer {settings.api_key.get_secret_value()}"}
    try:
        if stop.is_set():
            return 1
        async with httpx.AsyncClient(base_url=base, headers=admin, timeout=10) as api:
            created = await api.post(
                "/api/v1/subscriptions", json={"webhook_url": f"http://127.0.0.1:{receiver_port}/hook"}
            )
            created.raise_for_status()
            secret.append(created.json()["secret"])
            source = await api.post(
                "/api/v1/sources", json={"url": f"http://127.0.0.1:{feed_port}/feed.xml", "name": "Demo feed"}
            )
            source.raise_for_status()
        print(
            f"Corridor demo running: dashboard {base}/ · API docs {base}/docs\n"
            f"  feed      http://127.0.0.1:{feed_port}/feed.xml (12 real items, served locally)\n"
            f"  receiver  http://127.0.0.1:{receiver_port}/hook (verifies each Standard Webhooks signature)\n"
            "Alerts appear below as they are delivered. Ctrl-C stops everything.",
            flush=True,
        )
        while not stop.is_set():
            waiter = asyncio.create_task(seen.get())
            done, _ = await asyncio.wait(
                {waiter, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED
            )
            if waiter in done:
                print(_show(waiter.result()), flush=True)
            else:
                waiter.cancel()
    finally:
        for server in servers:
            server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        sock.close()
    print("\nstopped", flush=True)
    return 0


def run_demo(port: int | None = None) -> int:
    """Run the demo with its own settings (a fresh SQLite file, loopback allowed, development keys)."""
    data = Path(tempfile.mkdtemp(prefix="corridor-demo-"))
    overrides: dict[str, object] = {
        "mongodb_uri": None,  # embedded, whatever the environment says
        "kafka_bootstrap_servers": None,
        "sqlite_path": data / "demo.sqlite3",
        "allow_private_networks": ["127.0.0.0/8"],
        "env": "development",
        "poll_interval_s": 300,
        "log_level": "WARNING",
    }
    if port is not None:
        overrides["http_port"] = port
    settings = load_settings(**overrides)
    configure_logging(settings.log_level, secrets=settings.secret_values())  # the alerts, not the chatter
    try:
        return asyncio.run(demo(settings))
    finally:
        shutil.rmtree(data, ignore_errors=True)  # the demo's store and bus journal: nothing to keep
