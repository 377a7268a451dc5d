"""What a security probe and a first run found (issue 13), one test per finding."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from helpers import SmtpSink, WebhookReceiver, runtime_client

from services.app import create_app
from services.ingest.parser import parse_document
from services.runtime import ALL_ROLES, Runtime
from shared.models import web_link
from shared.settings import load_settings

NOW = datetime(2026, 12, 1, tzinfo=UTC)


RSS_WITH_SCRIPT_LINKS = b"""<?xml version="1.0"?>
<rss version="2.0"><channel><title>t</title><link>https://news.example/</link>
<item><title>Rail link to Gwadar agreed</title><link>javascript:alert(document.cookie)</link>
<guid isPermaLink="false">a1</guid><description>Pakistan and Kazakhstan railway text one</description></item>
<item><title>Wheat shipment leaves Aktau</title><link>data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==</link>
<guid isPermaLink="false">a2</guid><description>Kazakhstan wheat for Karachi text two</description></item>
<item><title>Customs protocol signed</title><link> JaVaScRiPt:alert(1)</link>
<guid isPermaLink="false">a3</guid><description>customs text three</description></item>
<item><title>A real link</title><link>https://news.example/real</link>
<guid isPermaLink="false">a4</guid><description>text four</description></item>
</channel></rss>"""


def test_feed_links_other_than_http_are_dropped() -> None:
    """Item 1: javascript:/data: links never become an item's url (dashboard href, feeds, emails)."""
    items = parse_document(RSS_WITH_SCRIPT_LINKS, kind="feed", source_id="s", source_url="https://n/", fetched_at=NOW)
    assert [i.url for i in items] == [None, None, None, "https://news.example/real"]
    assert all(i.canonical_url in (None, "https://news.example/real") for i in items)
    json_feed = json.dumps(
        {
            "version": "https://jsonfeed.org/version/1.1",
            "title": "t",
            "items": [
                {"id": "1", "url": "javascript:alert(1)", "title": "x", "content_text": "y"},
                {"id": "2", "url": "http://ok.example/2", "title": "x2", "content_text": "y2"},
            ],
        }
    ).encode()
    items = parse_document(json_feed, kind="feed", source_id="s", source_url="https://n/", fetched_at=NOW)
    assert [i.url for i in items] == [None, "http://ok.example/2"]
    for bad in ("javascript:x", "data:,x", "vbscript:x", "//evil.example/x", "http:evil", "https://a\x00b", "ftp://x"):
        assert web_link(bad) is None, bad


async def test_feed_out_never_echoes_the_read_key(tmp_path: Path) -> None:
    """Item 7: ``?key=`` is how feed readers authenticate; the RSS self link and Atom id omit it."""
    settings = load_settings(
        sqlite_path=tmp_path / "s.sqlite3", api_key="admin-key", read_api_keys="read-key-123", public_reads=False
    )
    runtime = Runtime(settings, ALL_ROLES)
    async with runtime_client(runtime) as client:
        for path in ("/api/v1/events.rss", "/api/v1/events.atom"):
            answer = await client.get(path, params={"key": "read-key-123", "sector": "energy"})
            assert answer.status_code == 200, answer.text
            assert "read-key-123" not in answer.text and "sector=energy" in answer.text


async def test_hosts_in_full_width_digits_are_normalised_or_refused(tmp_path: Path) -> None:
    """Item 5: `http://１２７.０.０.１:18091/x` is 127.0.0.1: refused as such, or stored in ASCII."""
    weird = "http://１２７.０.０.１:18091/x"
    admin = {"Authorization": "Bearer admin-key"}
    refusing = Runtime(load_settings(sqlite_path=tmp_path / "a.sqlite3", api_key="admin-key"), ALL_ROLES)
    async with runtime_client(refusing) as client:
        answer = await client.post("/api/v1/sources", headers=admin, json={"url": weird})
        assert answer.status_code == 422 and "127.0.0.1" in answer.text, answer.text
        assert "CORRIDOR_ALLOW_PRIVATE_NETWORKS" in answer.text
        answer = await client.post("/api/v1/subscriptions", headers=admin, json={"webhook_url": weird})
        assert answer.status_code == 422 and "127.0.0.1" in answer.text, answer.text
    allowing = Runtime(
        load_settings(sqlite_path=tmp_path / "b.sqlite3", api_key="admin-key", allow_private_networks="127.0.0.0/8"),
        ALL_ROLES,
    )
    async with runtime_client(allowing) as client:
        answer = await client.post("/api/v1/sources", headers=admin, json={"url": weird})
        assert answer.status_code == 201 and answer.json()["url"] == "http://127.0.0.1:18091/x", answer.text
        answer = await client.post("/api/v1/sources", headers=admin, json={"url": "http://exa mple.example/"})
        assert answer.status_code == 422


async def test_a_url_that_cannot_be_fetched_shows_its_error_on_the_source(tmp_path: Path) -> None:
    """Item 5: a source stored before URLs were checked fails with an error on the source, not
    only in the log."""
    from shared.models import Source

    runtime = Runtime(load_settings(sqlite_path=tmp_path / "s.sqlite3", poll_tick_s=0.05), {"ingest"})
    await runtime.store.start()
    await runtime.store.insert_source(Source(id="src_w", url="http://１２７.０.０.１:18091/x", interval_s=60))
    await runtime.store.close()
    async with runtime_client(runtime):
        for _ in range(100):
            source = await runtime.store.get_source("src_w")
            if source is not None and source.last_error_kind:
                break
            await asyncio.sleep(0.05)
    assert source is not None and source.last_error_kind == "invalid_url" and source.consecutive_errors == 1


async def test_hostile_input_gets_4xx_not_500(tmp_path: Path) -> None:
    """Item 8: inputs that used to answer 500."""
    admin = {"Authorization": "Bearer admin-key"}
    runtime = Runtime(load_settings(sqlite_path=tmp_path / "s.sqlite3", api_key="admin-key"), ALL_ROLES)
    async with runtime_client(runtime) as client:
        created = await client.post("/api/v1/subscriptions", headers=admin, json={"channel": "kafka"})
        sub = created.json()["id"]
        for purpose in ("confirm", "unsubscribe"):
            answer = await client.post(f"/api/v1/subscriptions/{sub}/{purpose}", data={"token": "ünïcödé-tökén"})
            assert answer.status_code == 404, answer.text
        body = b'{"url": "https://feeds.example/rss", "interval_s": NaN}'
        answer = await client.post(
            "/api/v1/sources", headers={**admin, "content-type": "application/json"}, content=body
        )
        assert answer.status_code == 422 and answer.json()["detail"][0]["loc"][-1] == "interval_s", answer.text
        body = b'{"url": "https://feeds.example/rss", "name": "bad \\udc80 name"}'
        answer = await client.post(
            "/api/v1/sources", headers={**admin, "content-type": "application/json"}, content=body
        )
        assert answer.status_code == 422 and "unicode" in answer.text.lower(), answer.text
        body = b'{"channel": "kafka", "keywords": ["ok", "\\ud800"]}'
        answer = await client.post(
            "/api/v1/subscriptions", headers={**admin, "content-type": "application/json"}, content=body
        )
        assert answer.status_code == 422, answer.text
        for name in ("since", "until"):
            for value in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
                answer = await client.get("/api/v1/events", params={name: value})
                assert answer.status_code == 422 and name in answer.text, answer.text


async def test_request_bodies_are_capped_and_keys_checked_first(tmp_path: Path) -> None:
    """Item 9: the cap holds while reading, the key is checked before the body is read, and an
    error answer never echoes the input."""
    admin = {"Authorization": "Bearer admin-key", "content-type": "application/json"}
    settings = load_settings(sqlite_path=tmp_path / "s.sqlite3", api_key="admin-key", max_body_bytes=64 * 1024)
    runtime = Runtime(settings, ALL_ROLES)
    pulled = 0

    async def chunks(count: int) -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(count):
            pulled += 1
            yield b" " * 16384

    async with runtime_client(runtime) as client:
        declared = await client.post("/api/v1/sources", headers=admin, content=b"x" * (65 * 1024))
        assert declared.status_code == 413 and "CORRIDOR_MAX_BODY_BYTES" in declared.text
        streamed = await client.post("/api/v1/sources", headers=admin, content=chunks(1000))
        assert streamed.status_code == 413 and pulled <= 6, (streamed.status_code, pulled)
        pulled = 0
        keyless = await client.post(
            "/api/v1/sources", headers={"content-type": "application/json"}, content=chunks(1000)
        )
        assert keyless.status_code == 401 and pulled <= 1, (keyless.status_code, pulled)
        huge_name = "n" * 50_000
        answer = await client.post(
            "/api/v1/sources", headers=admin, json={"url": "https://f.example/", "name": huge_name}
        )
        assert answer.status_code == 422 and len(answer.content) < 2000 and huge_name not in answer.text
        ok = await client.post("/api/v1/subscriptions/sub_x/unsubscribe", data={"token": "t"})
        assert ok.status_code == 404, "the keyless email-link pages stay keyless"


async def test_no_secret_reaches_the_log_at_debug(tmp_path: Path, receiver: WebhookReceiver, smtp: SmtpSink) -> None:
    """Item 6: at DEBUG, webhook secrets (stored through the SQLite driver, which logs statement
    parameters at DEBUG) and the configured keys never appear in the log."""
    import io
    import logging

    from shared.bus.memory import MemoryBus
    from shared.envelope import TOPIC_CLASSIFIED, Envelope
    from shared.logs import configure_logging
    from shared.models import ClassifiedItem

    settings = load_settings(
        sqlite_path=tmp_path / "s.sqlite3",
        api_key="admin-key-9f8e7d6c",
        read_api_keys="read-key-1a2b3c4d",
        link_secret="link-secret-5e6f7a8b",
        smtp_port=smtp.port,
        smtp_password="smtp-pass-0c1d2e3f",
        allow_private_networks="127.0.0.0/8",
        log_level="DEBUG",
        env="development",
    )
    out = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level, {n: logging.getLogger(n).level for n in ("aiosqlite", "pymongo")}
    configure_logging("DEBUG", secrets=settings.secret_values(), stream=out)
    admin = {"Authorization": "Bearer admin-key-9f8e7d6c"}
    try:
        runtime = Runtime(settings, ALL_ROLES)
        async with runtime_client(runtime) as client:
            created = (
                await client.post("/api/v1/subscriptions", headers=admin, json={"webhook_url": receiver.url})
            ).json()
            rotated = (await client.post(f"/api/v1/subscriptions/{created['id']}/rotate-secret", headers=admin)).json()
            await client.post("/api/v1/subscriptions", headers=admin, json={"email": "reader@example.org"})
            item = ClassifiedItem(
                id="itm_1",
                source_id="s",
                source_url="http://s",
                title="Rail freight to Gwadar",
                fetched_at=NOW,
                classifier_version="t",
            )
            assert isinstance(runtime.bus, MemoryBus)
            await runtime.bus.publish(settings.topic(TOPIC_CLASSIFIED), item.id, Envelope.wrap("item.classified", item))
            for _ in range(100):
                if receiver.snapshot() and smtp.messages:
                    break
                await asyncio.sleep(0.05)
            logging.getLogger("corridor.test").debug("a stray %s", created["secret"])  # the filter's last line
    finally:
        root.handlers[:], level, floors = saved[0], saved[1], saved[2]
        root.setLevel(level)
        for name, floor in floors.items():
            logging.getLogger(name).setLevel(floor)
    log = out.getvalue()
    assert receiver.snapshot(), "a webhook went out while logging at DEBUG"
    assert "DEBUG" in log and len(log) > 1000, "the log really was at DEBUG"
    for secret in (
        created["secret"],
        rotated["secret"],
        "admin-key-9f8e7d6c",
        "read-key-1a2b3c4d",
        "link-secret-5e6f7a8b",
        "smtp-pass-0c1d2e3f",
    ):
        assert secret not in log, secret
    assert "whsec_" not in log


async def test_a_gzip_bomb_is_stopped_without_expanding_in_memory() -> None:
    """Item 10: a compressed body is decoded in steps bounded by the cap: memory stays near it."""
    import gzip
    import tracemalloc
    import zlib

    from helpers import FeedServer, Route

    from services.ingest.fetcher import fetch_source
    from shared.errors import TooLarge
    from shared.http import build_client
    from shared.models import Source
    from shared.netguard import AddressPolicy

    bomb = gzip.compress(b"\0" * (200 * 1024 * 1024), compresslevel=9)  # 200 MiB of zeros in ~200 KB
    feed = RSS_WITH_SCRIPT_LINKS
    raw_deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    with FeedServer() as server:
        server.routes["/bomb"] = Route(body=bomb, headers={"Content-Encoding": "gzip"})
        server.routes["/gz"] = Route(body=gzip.compress(feed), headers={"Content-Encoding": "gzip"})
        server.routes["/deflate"] = Route(
            body=raw_deflate.compress(feed) + raw_deflate.flush(), headers={"Content-Encoding": "deflate"}
        )
        client = build_client(policy=AddressPolicy(["127.0.0.0/8"]), timeout_s=10, max_redirects=0, user_agent="t")
        async with client:

            def source(path: str) -> Source:
                return Source(id="s", url=server.url(path), interval_s=60)

            for path in ("/gz", "/deflate"):
                result = await fetch_source(client, source(path), max_bytes=10 * 1024 * 1024, now=NOW)
                assert result.body == feed, path
            tracemalloc.start()
            try:
                with pytest.raises(TooLarge):
                    await fetch_source(client, source("/bomb"), max_bytes=10 * 1024 * 1024, now=NOW)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
    assert peak < 25 * 1024 * 1024, f"peak {peak / 2**20:.0f} MiB while refusing a 200 MiB bomb at a 10 MiB cap"


async def test_a_trickling_host_neither_holds_a_fetch_past_its_deadline_nor_starves_other_hosts(
    tmp_path: Path,
) -> None:
    """Item 2: a server sending one byte a second never times out a read; the fetch still ends at
    its total deadline, within the lease, and sources on other hosts are polled meanwhile."""
    from helpers import FeedServer, Route

    from shared.models import Source

    settings = load_settings(
        sqlite_path=tmp_path / "s.sqlite3",
        allow_private_networks="127.0.0.0/8",
        fetch_timeout_s=1.5,
        fetch_deadline_s=3,
        poll_lease_s=6,
        poll_concurrency=4,
        poll_per_host=2,
        poll_tick_s=0.05,
        poll_interval_s=3600,
    )
    runtime = Runtime(settings, {"ingest"})
    with FeedServer() as slow, FeedServer() as fast:
        for n in range(4):
            slow.routes[f"/s{n}"] = Route(body=RSS_WITH_SCRIPT_LINKS, trickle_s=1.0)
            fast.routes[f"/f{n}"] = Route(body=RSS_WITH_SCRIPT_LINKS)
        await runtime.store.start()
        # The slow host's sources are the most overdue: claimed first.
        for n in range(4):
            await runtime.store.insert_source(
                Source(id=f"src_s{n}", url=slow.url(f"/s{n}"), interval_s=3600, next_check_at=NOW)
            )
        for n in range(4):
            url = fast.url(f"/f{n}").replace("127.0.0.1", "localhost")  # another host, same machine
            await runtime.store.insert_source(Source(id=f"src_f{n}", url=url, interval_s=3600))
        await runtime.store.close()
        started = asyncio.get_running_loop().time()
        fast_done: float | None = None
        async with runtime_client(runtime):
            while asyncio.get_running_loop().time() - started < 15:
                sources = {s.id: s for s in await runtime.store.list_sources()}
                if fast_done is None and all(sources[f"src_f{n}"].last_status == "ok" for n in range(4)):
                    fast_done = asyncio.get_running_loop().time() - started
                if all(sources[f"src_s{n}"].last_error_kind == "timeout" for n in range(4)):
                    break
                await asyncio.sleep(0.1)
    assert fast_done is not None and fast_done < 2.5, f"the fast host's sources waited {fast_done} s"
    for n in range(4):
        source = sources[f"src_s{n}"]
        assert source.last_error_kind == "timeout" and "within 3 s" in (source.last_error or ""), source
        assert slow.routes[f"/s{n}"].hits == 1, "never fetched a second time: the deadline ends it within the lease"


def test_cli_output_into_a_closed_pipe_and_settings_as_values(tmp_path: Path) -> None:
    """Item 14: `corridor config | head` ends quietly; list settings print as what they are."""
    import subprocess

    from helpers import CORRIDOR

    env = {
        "PATH": "/usr/bin:/bin",
        "CORRIDOR_SQLITE_PATH": str(tmp_path / "s.sqlite3"),
        # A feed's token, in its query or user info, is a secret like the others.
        "CORRIDOR_FEEDS": "https://reader:pw0rd@news.example/feed?apikey=FeedTok3n123456,https://dawn.example/feeds/home",
    }
    piped = subprocess.run(
        f"{CORRIDOR} config | head -1", shell=True, capture_output=True, env=env, timeout=60, check=False
    )
    assert piped.returncode == 0 and piped.stderr == b"", piped.stderr.decode()[-2000:]
    full = json.loads(subprocess.run([CORRIDOR, "config"], capture_output=True, env=env, timeout=60, check=True).stdout)
    assert full["delivery_retry_schedule_s"][:3] == [5.0, 30.0, 120.0]
    assert full["api_key"] == "**********", "secrets stay masked"
    assert full["feeds"] == ["https://news.example/feed?apikey=…", "https://dawn.example/feeds/home"]


def test_sigterm_drains_and_exits_0(tmp_path: Path) -> None:
    """Item 14 (and `make run` after Ctrl-C): a stop request is not a crash."""
    import signal

    from helpers import CorridorProcess

    for sig in (signal.SIGTERM, signal.SIGINT):
        corridor = CorridorProcess(
            "all", {"CORRIDOR_SQLITE_PATH": str(tmp_path / "s.sqlite3")}, tmp_path / "c.log"
        ).start()
        assert corridor.proc is not None
        corridor.proc.send_signal(sig)
        assert corridor.proc.wait(30) == 0, (sig, (tmp_path / "c.log").read_text()[-2000:])


def test_sigusr1_writes_every_threads_stack_and_the_process_goes_on(tmp_path: Path) -> None:
    """An operator's view into a busy or stuck process: `kill -USR1` prints the Python stacks to
    its log and changes nothing else."""
    import signal

    from helpers import CorridorProcess, wait_until

    log = tmp_path / "c.log"
    corridor = CorridorProcess("all", {"CORRIDOR_SQLITE_PATH": str(tmp_path / "s.sqlite3")}, log).start()
    assert corridor.proc is not None
    try:
        corridor.proc.send_signal(signal.SIGUSR1)
        # faulthandler writes thread by thread, straight to the file: wait for the section of the
        # thread that took the signal, not just the first header (CI read the log between the two).
        wait_until(lambda: "Current thread" in log.read_text(errors="replace"), 10, "every thread's stack in the log")
        assert "most recent call first" in log.read_text(errors="replace")
        assert corridor.proc.poll() is None and httpx.get(f"{corridor.base}/healthz", timeout=5).status_code == 200
    finally:
        assert corridor.stop() == 0


async def test_access_log_content_type_items_seen_and_whole_api_docs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Items 14 and 15: one structured access line per request with keys and tokens masked; a
    body without Content-Type gets a plain 415; a single role's app documents the whole API."""
    import logging

    admin = {"Authorization": "Bearer admin-key"}
    settings = load_settings(sqlite_path=tmp_path / "s.sqlite3", api_key="admin-key", read_api_keys="read-key-77")
    caplog.set_level(logging.INFO, logger="corridor.access")
    async with runtime_client(Runtime(settings, ALL_ROLES)) as client:
        await client.get("/api/v1/events.rss", params={"key": "read-key-77", "sector": "energy"})
        await client.post("/api/v1/subscriptions/sub_x/unsubscribe", params={"token": "tok-123456"})
        plain = await client.post("/api/v1/sources", headers=admin, content=b'{"url": "https://f.example/"}')
        assert plain.status_code == 415 and "Content-Type: application/json" in plain.text
    lines = [r for r in caplog.records if r.name == "corridor.access"]
    assert len(lines) == 3
    rss = lines[0].http  # type: ignore[attr-defined]
    assert rss["method"] == "GET" and rss["path"] == "/api/v1/events.rss" and rss["status"] == 200
    assert "sector=energy" in rss["query"] and "read-key-77" not in caplog.text and "tok-123456" not in caplog.text
    assert lines[2].http["status"] == 415  # type: ignore[attr-defined]
    classifier_only = create_app(Runtime(settings, {"classifier"}))
    paths = set(classifier_only.openapi()["paths"])
    assert {"/api/v1/events", "/api/v1/sources", "/api/v1/subscriptions", "/api/v1/deliveries"} <= paths


def test_the_offline_demo_shows_verified_alerts_and_stops_cleanly(tmp_path: Path) -> None:
    """Item 11: one command, no network: a local feed of real items, Corridor, a receiver that
    prints verified alerts."""
    import signal
    import subprocess
    import time

    from helpers import CORRIDOR, free_port

    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [CORRIDOR, "demo", "--port", str(free_port())], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline and sum("✔ verified alert" in line for line in lines) < 12:
            line = proc.stdout.readline().decode()
            if not line:
                break
            lines.append(line)
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    output = "".join(lines) + rest.decode()
    assert output.count("✔ verified alert msg_") == 12, output[-3000:]
    assert "Pakistan, Kazakhstan deepen educational ties with signing of eight MoUs" in output
    assert "sectors: " in output and "why: " in output
    assert proc.returncode == 0 and output.rstrip().endswith("stopped"), output[-1000:]


def test_the_demo_on_a_taken_port_is_one_line_and_exit_1_and_leaves_no_files(tmp_path: Path) -> None:
    # Three tracebacks and exit 3 before, and every run left its store in the temp dir (review
    # of 2026-12-05).
    import socket
    import subprocess

    from helpers import CORRIDOR

    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TMPDIR": str(temp)}
    try:
        done = subprocess.run([CORRIDOR, "demo", "--port", str(port)], env=env, capture_output=True, timeout=60)
    finally:
        taken.close()
    err = done.stderr.decode()
    assert done.returncode == 1 and "Traceback" not in err, err
    assert err.strip().splitlines() == [err.strip()] and err.startswith(f"error: cannot listen on 127.0.0.1:{port}")
    assert list(temp.iterdir()) == [], "the demo's data directory is removed"
