"""`corridor`: run services and operate Corridor from the command line.

    corridor run ingest|classifier|alerts|all   serve one role (or all) with its HTTP routes
    corridor demo [--port P]                    the whole loop offline: a local sample feed, Corridor,
                                                a local receiver that prints verified alerts
    corridor init                               create Kafka topics and store indexes
    corridor store migrate                      move data of an earlier store layout (also done at start)
    corridor sources add URL [--kind K] [--selectors JSON] [--name N] [--language L]
                        [--interval S] [--country C] [--official] [--aggregator]
                                                add a source (validated as POST /api/v1/sources)
    corridor sources update ID [--name N] [--language L] [--selectors JSON] [--interval S]
                        [--country C] [--official|--not-official] [--aggregator|--not-aggregator]
                                                change a source (as PATCH /api/v1/sources/ID)
    corridor sources list                       sources and their health, as JSON lines
    corridor sources pause|resume|remove ID     operate one source
    corridor sources import-catalogue [FILE]    add the catalogue's sources
    corridor ingest parse FILE_OR_URL [--kind K] [--selectors JSON]
                                                items as JSON lines, or the classified error (exit 1)
    corridor subscriptions add|list|pause|resume|remove
                                                manage subscriptions (every API filter, the tracker's
                                                alert kinds) through the running API
    corridor config                             the effective settings (secrets masked)
    corridor eval PATH... [--taxonomy FILE]     score the classifier on labelled JSONL
    corridor reclassify [--taxonomy F] [--write] replay stored items through a taxonomy and registry

Settings come from the environment (README.md → Configuration), read once here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import faulthandler
import importlib.util
import json
import logging
import math
import os
import signal
import socket
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import cast
from urllib.parse import quote

import httpx
import uvicorn
from pydantic import ValidationError

from services.app import create_app
from services.classifier.agreements import load_registry
from services.classifier.bootstrap import intervals
from services.classifier.classify import Classifier
from services.classifier.evaluate import evaluate, format_report, label_warnings, load_records
from services.classifier.judge import load_judge
from services.classifier.reclassify import Change, reclassify
from services.classifier.taxonomy import load_taxonomy
from services.ingest.catalogue import import_catalogue, load_catalogue
from services.ingest.fetcher import fetch_source
from services.ingest.htmllist import check_selectors
from services.ingest.normalize import LanguageDetector
from services.ingest.parser import parse_document
from services.ingest.routes import SourceIn, SourcePatch
from services.ingest.sources import InvalidSource, update_source
from services.runtime import ALL_ROLES, Role, Runtime, build_store
from shared.errors import BusUnavailable, ConfigError, Conflict, FetchError, Unavailable, problems
from shared.http import build_client
from shared.logs import configure_logging, shown_url
from shared.models import HtmlSelectors, Source, stable_id
from shared.netguard import AddressPolicy
from shared.settings import Settings, load_settings
from shared.store.base import Store
from shared.timeutil import utcnow

log = logging.getLogger(__name__)


class GracefulServer(uvicorn.Server):
    """uvicorn's server, except that SIGTERM and SIGINT are requests to stop: it drains and the
    process exits 0. uvicorn itself raises the signal again after its shutdown, so the process
    ends with 143 (or 130), which a supervisor and `make run` report as a failure.

    ``on_signal`` is called as the signal arrives (it must only set an event): uvicorn tells the
    app to stop only after its HTTP drain (up to ``timeout_graceful_shutdown``), and the
    runtime's consumers and pollers would go on taking work all that time."""

    def __init__(self, config: uvicorn.Config, *, on_signal: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        self._on_signal = on_signal

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self._on_signal is not None:
            self._on_signal()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _run(settings: Settings, role: str) -> int:
    roles: frozenset[Role] = ALL_ROLES if role == "all" else frozenset({cast(Role, role)})
    server: uvicorn.Server | None = None

    def on_failure() -> None:
        if server is not None:
            server.should_exit = True

    runtime = Runtime(settings, roles, on_failure=on_failure)
    app = create_app(runtime)
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        limit_concurrency=1000,
    )
    server = GracefulServer(config, on_signal=runtime.request_stop)
    # `kill -USR1 PID` writes every thread's Python stack to stderr: what a process that is busy
    # (a core used while idle) or stuck is doing, without stopping it or a debugger.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    # Bind before the runtime starts: a taken port fails in a moment, before any loop has run
    # (uvicorn binds only after the lifespan's start, which waits for the store and the bus and
    # starts every loop, and then ends with sys.exit(3)).
    try:
        sockets = _listening_sockets(settings.http_host, settings.http_port)
    except OSError as exc:
        where = f"{settings.http_host}:{settings.http_port}"
        print(f"error: cannot listen on {where}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    for sock in sockets:
        host, port = sock.getsockname()[:2]
        log.info("bound %s port %d; /healthz answers now, the API once the start is complete", host, port)
    try:
        server.run(sockets=sockets)
    except SystemExit as exc:
        # uvicorn ends a failed start (the lifespan's start raised) with sys.exit(3); Corridor's
        # contract is 1 for any failure (exit 2 is a bad configuration, which never gets this
        # far), so a supervisor needs one rule.
        return 0 if exc.code in (0, None) and not runtime.failed else 1
    finally:
        for sock in sockets:
            sock.close()
    if runtime.failed or not server.started:
        return 1
    return 0


def _listening_sockets(host: str, port: int) -> list[socket.socket]:
    """Bound sockets for ``host`` as asyncio's create_server (what uvicorn does without sockets
    given) binds them: one per address the host resolves to (an empty host: every interface, IPv4
    and IPv6), IPv6 ones IPv6-only, so "::" does not also take IPv4 and "0.0.0.0" keeps to it.
    Raises OSError (all closed again) when any cannot be bound."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    chosen = port
    unusable: OSError | None = None
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            try:
                sock = socket.socket(family, kind, proto)
            except OSError as exc:  # e.g. IPv6 disabled: "localhost" may still name ::1
                unusable = exc
                continue
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind((address[0], chosen, *address[2:]))
            except OSError as exc:
                if exc.errno != errno.EADDRNOTAVAIL:
                    raise  # the port is taken, or not ours to use: the start fails
                sockets.remove(sock)  # an address this machine does not have (::1 without IPv6)
                sock.close()
                unusable = exc
                continue
            chosen = sock.getsockname()[1]  # port 0: every address on the port the first got
        if not sockets:
            raise unusable or OSError(errno.EADDRNOTAVAIL, f"{host!r} names no address to listen on")
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


async def _init(settings: Settings) -> int:
    runtime = Runtime(settings, ())
    await runtime.start()  # creates topics (Kafka) and indexes (store); starts no loops without roles
    await runtime.stop()
    print("topics and indexes ready")
    return 0


@contextlib.asynccontextmanager
async def _open_store(settings: Settings) -> AsyncIterator[Store]:
    """The store, started, and closed again however the block (or the start) ends."""
    store = build_store(settings)
    try:
        await store.start()
        yield store
    finally:
        await store.close()


async def _sources(settings: Settings, args: argparse.Namespace) -> int:
    policy = AddressPolicy(settings.allow_private_networks)
    # The catalogue is read before the store is opened: a file that cannot be read is a usage
    # error (ConfigError, exit 2), whatever state the store is in.
    catalogue = load_catalogue(args.path) if args.sources_command == "import-catalogue" else None
    async with _open_store(settings) as store:
        if args.sources_command in ("pause", "resume", "remove"):
            if args.sources_command == "remove":
                ok = await store.delete_source(args.source_id)
            else:
                active = args.sources_command == "resume"
                ok = await update_source(store, args.source_id, {"active": active}) is not None
            if not ok:
                print(f"error: no such source {args.source_id}", file=sys.stderr)
                return 2
            print(f"{args.sources_command}: {args.source_id}")
        elif catalogue is not None:
            added = await import_catalogue(store, catalogue, settings.poll_interval_s)
            print(f"{added} sources added")
        elif args.sources_command == "add":
            try:
                body = SourceIn.model_validate({"url": args.url, **_source_fields(args)})
                check_selectors(body.selectors)
                source = await body.add(store, policy, settings.poll_interval_s)
            # ValueError: a field the API would refuse, or --selectors that is not JSON
            # (pydantic's ValidationError is a ValueError too)
            except (ValueError, InvalidSource, Conflict) as exc:
                print(f"error: {_one_line(exc)}", file=sys.stderr)
                return 2
            print(source.model_dump_json())
        elif args.sources_command == "update":
            try:
                patch = SourcePatch.model_validate(_source_fields(args))
                check_selectors(patch.selectors)
            except ValueError as exc:
                print(f"error: {_one_line(exc)}", file=sys.stderr)
                return 2
            changes = patch.changes()
            if not changes:
                print("error: nothing to change (give --name, --language, --selectors, ...)", file=sys.stderr)
                return 2
            updated = await update_source(store, args.source_id, changes)
            if updated is None:
                print(f"error: no such source {args.source_id}", file=sys.stderr)
                return 2
            print(updated.model_dump_json())
        else:
            for source in await store.list_sources():
                print(source.model_dump_json())
        return 0


def _source_fields(args: argparse.Namespace) -> dict[str, object]:
    """The source fields given on the command line (absent flags are left out, so an update
    changes only those), in the API's names; --selectors is JSON."""
    given = {
        "name": args.name,
        "language": args.language,
        "interval_s": args.interval,
        "country": args.country,
        "official": args.official,
        "aggregator": args.aggregator,
        "kind": getattr(args, "kind", None),
        "selectors": _json_selectors(args.selectors) if args.selectors else None,
    }
    return {k: v for k, v in given.items() if v is not None}


def _json_selectors(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"selectors: not JSON ({exc})") from exc


def _one_line(exc: BaseException) -> str:
    """An error in one line: a validation error as `field: message` per problem, any other
    message with its line breaks folded."""
    text = problems(exc, "input") if isinstance(exc, ValidationError) else str(exc)
    return " ".join(text.split()) or type(exc).__name__


def _fail(exc: BaseException, prefix: str = "") -> None:
    print(f"error: {prefix}{_one_line(exc)}", file=sys.stderr)


async def _subscriptions(settings: Settings, args: argparse.Namespace) -> int:
    """The same operations as /api/v1/subscriptions, through the API of a running Corridor
    (CORRIDOR_PUBLIC_BASE_URL) with CORRIDOR_API_KEY, so validation and opt-in are the API's."""
    base = (args.api or settings.public_base_url).rstrip("/") + "/api/v1/subscriptions"
    headers = {"Authorization": f"Bearer {settings.api_key.get_secret_value()}"}
    command = args.subscriptions_command
    async with httpx.AsyncClient(timeout=15, headers=headers) as client:
        try:
            if command == "add":
                body: dict[str, object] = {
                    "sectors": args.sectors,
                    "countries": args.countries,
                    "cadence": args.cadence,
                }
                # Only what was given: the API's defaults stand for the rest (an empty `kinds` is refused).
                for field in ("keywords", "sources", "languages", "kinds", "agreements", "areas"):
                    if getattr(args, field):
                        body[field] = getattr(args, field)
                for field in ("min_score", "digest_time", "timezone", "owner_email"):
                    if getattr(args, field) is not None:
                        body[field] = getattr(args, field)
                if args.bilateral_only:
                    body["bilateral_only"] = True
                if args.kafka:
                    body["channel"] = "kafka"
                else:
                    body |= {"webhook_url": args.webhook} if args.webhook else {"email": args.email}
                response = await client.post(base, json=body)
            elif command == "list":
                one = quote(args.subscription_id, safe="") if args.subscription_id else None
                response = await client.get(f"{base}/{one}" if one else base)
            elif command == "remove":
                response = await client.delete(f"{base}/{quote(args.subscription_id, safe='')}")
            else:
                response = await client.post(f"{base}/{quote(args.subscription_id, safe='')}/{command}")
        # An --api such as "http://[::1" (InvalidURL) or "localhost:8000" (no scheme): usage, exit 2
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            _fail(exc, f"invalid API URL {base}: ")
            return 2
        except httpx.HTTPError as exc:  # nothing answered: a dependency unavailable, exit 1
            _fail(exc, f"cannot reach Corridor at {base}: ")
            return 1
    if response.status_code >= 400:
        # 4xx: the request (an unknown id, an invalid filter) is wrong, exit 2; 5xx: Corridor or
        # a proxy failed, exit 1.
        print(f"error: HTTP {response.status_code}: {' '.join(response.text.split())}", file=sys.stderr)
        return 2 if response.status_code < 500 else 1
    try:
        body_json = response.json() if response.content else None
    except ValueError as exc:  # a 2xx that is not JSON: not Corridor's API at that address
        _fail(exc, f"HTTP {response.status_code} from {base} is not JSON: ")
        return 2
    if command == "list" and args.subscription_id:
        body_json = [body_json]  # one subscription: the same JSON line as in the whole list
    if command == "list":
        if not isinstance(body_json, list):
            print(f"error: HTTP {response.status_code} from {base} is not a JSON list", file=sys.stderr)
            return 2
        for entry in body_json:
            print(json.dumps(entry))
    elif body_json is not None:
        print(json.dumps(body_json))
    return 0


async def _ingest_parse(settings: Settings, args: argparse.Namespace) -> int:
    """Parse like the poller does; items to stdout, the classified error to stderr (exit 1)."""
    try:
        selectors = HtmlSelectors.model_validate_json(args.selectors) if args.selectors else None
    except ValueError as exc:
        _fail(exc, "invalid --selectors: ")
        return 2
    if args.kind == "html" and selectors is None:
        print('error: --kind html needs --selectors (e.g. {"item": "article"})', file=sys.stderr)
        return 2
    target: str = args.target
    now = utcnow()
    try:
        if target.startswith(("http://", "https://")):
            policy = AddressPolicy(settings.allow_private_networks)
            source = Source(id=stable_id("src", target), url=target, kind=args.kind, interval_s=60)
            async with build_client(
                policy=policy,
                timeout_s=settings.fetch_timeout_s,
                max_redirects=settings.fetch_max_redirects,
                user_agent=settings.user_agent,
            ) as c:
                result = await fetch_source(c, source, max_bytes=settings.fetch_max_bytes, now=now)
            data = result.body or b""
        else:
            data = await asyncio.to_thread(Path(target).read_bytes)
        items = parse_document(
            data,
            kind=args.kind,
            source_id=stable_id("src", target),
            source_url=target,
            fetched_at=now,
            selectors=selectors,
        )
    except FetchError as exc:
        print(f"error: {exc.kind}: {_one_line(exc)}", file=sys.stderr)  # a GDELT error quotes the body
        return 1
    except OSError as exc:
        print(f"error: cannot read {target}: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # what the poller records as the source's parse_error: one line here too
        print(f"error: parse_error: cannot parse the document: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return 1
    if not items:
        print("error: empty: the document parsed but has no items", file=sys.stderr)
        return 1
    detector = LanguageDetector()
    for item in items:
        language = detector.detect(f"{item.title}. {item.summary}")
        print(item.model_copy(update={"language": language}).model_dump_json())
    return 0


MAX_RESAMPLES = 100_000  # each costs a pass over the file's labels; more adds nothing a report needs


def _resamples(value: str) -> int:
    """``--bootstrap N``: a whole number from 0 to MAX_RESAMPLES."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if not 0 <= n <= MAX_RESAMPLES:
        raise argparse.ArgumentTypeError(f"must be between 0 and {MAX_RESAMPLES}, got {n}")
    return n


def _eval(args: argparse.Namespace) -> int:
    judge = None if args.no_judge else load_judge(args.judge)
    classifier = Classifier(load_taxonomy(args.taxonomy), load_registry(args.agreements), judge)
    paths: list[Path] = args.paths
    loaded = {path: load_records(path) for path in paths}  # every file's errors before any scoring
    for path, records in loaded.items():
        if not records:
            raise ValueError(f"{path}: no records (an empty file would score 0.0, which reads as a result)")
        for warning in label_warnings(records, classifier, str(path)):
            print(f"warning: {warning}", file=sys.stderr)
    summaries = []
    for path, records in loaded.items():
        report = evaluate(classifier, records, path=str(path))
        summary = report.summary()
        if args.bootstrap:
            summary["intervals"] = intervals(report, args.bootstrap)
        summaries.append(summary)
        print(format_report(summary))
    print(json.dumps({"classifier_version": classifier.version, "results": summaries}, separators=(",", ":")))
    return 0


def _judge_train(paths: list[Path], taxonomy_path: Path | None, out: Path) -> int:
    from services.classifier.train_judge import train, write_judge

    if importlib.util.find_spec("sklearn") is None:  # scikit-learn comes with the dev dependencies only
        raise ValueError("judge train needs scikit-learn, one of the dev dependencies (make install-dev)")
    for path in paths:  # each line an object with labels, or a ValueError naming path:line
        load_records(path)
    if not out.parent.is_dir():  # before minutes of training, not after
        raise ValueError(f"--out: no such directory: {out.parent}")
    model = train(paths, load_taxonomy(taxonomy_path))
    write_judge(model, out)
    print(f"wrote {out} ({len(model.sectors)} sector models)")
    return 0


async def _reclassify(settings: Settings, taxonomy_path: Path | None, write: bool) -> int:
    classifier = Classifier(
        load_taxonomy(taxonomy_path or settings.taxonomy_path),
        load_registry(settings.agreements_path),
        load_judge(settings.judge_path) if settings.judge_enabled else None,
    )

    def show(change: Change) -> None:
        # One line per change as it is found (with --write: once it is stored), flushed at once:
        # a run stopped half-way leaves the account of what it wrote.
        line = {
            "item_id": change.item_id,
            "title": change.title[:120],
            "gained": change.gained,
            "lost": change.lost,
            "countries_before": change.countries_before,
            "countries_after": change.countries_after,
            "agreements_gained": change.agreements_gained,
            "agreements_lost": change.agreements_lost,
            "stage_before": change.stage_before,
            "stage_after": change.stage_after,
            "top_score_before": change.top_score_before,
            "top_score_after": change.top_score_after,
            "classifier_version_before": change.version_before,
            "rescored": change.rescored,
            "written": change.written,
        }
        print(json.dumps(line, ensure_ascii=False), flush=True)

    async with _open_store(settings) as store:
        report = await reclassify(store, classifier, write=write, on_change=show)
    print(
        json.dumps(
            {
                "classifier_version": report.classifier_version,
                "items": report.items,
                "changed": len(report.changes),
                "rescored": report.rescored,
                "written": report.written,
                "superseded": report.superseded,
                "gained": dict(report.gained),
                "lost": dict(report.lost),
                "agreements_gained": dict(report.agreements_gained),
                "agreements_lost": dict(report.agreements_lost),
                "stages": dict(report.stages),
            }
        )
    )
    if report.changes and not write:
        print("nothing written; run again with --write to store these changes", file=sys.stderr)
    return 0


async def _store_migrate(settings: Settings) -> int:
    async with _open_store(settings) as store:
        moved = await store.migrate()
    print(json.dumps({"moved": moved}))
    return 0


def _config(settings: Settings) -> int:
    """The settings in force, secrets masked: SecretStr fields by pydantic, and the feeds' URLs
    as logs show them (a feed's query or user info may hold its token)."""
    shown = settings.model_dump(mode="json")
    shown["feeds"] = [shown_url(url) for url in settings.feeds]
    print(json.dumps(shown, indent=2, sort_keys=True, default=str))
    return 0


def _port(text: str) -> int:
    """A TCP port for --port (0: one the system picks): refused by argparse naming the flag (the
    setting's error named CORRIDOR_HTTP_PORT, which the user had not set)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, got {port}")
    return port


def _score(text: str) -> float:
    """A finite score for --min-score ("nan" passed float() and then broke the JSON request)."""
    try:
        score = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(score) or not 0 <= score <= 1000:
        raise argparse.ArgumentTypeError(f"a score is a number from 0 to 1000 (scores are 0 to 1), got {text}")
    return score


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="corridor", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a service (or all of them in one process)")
    run.add_argument("role", choices=["ingest", "classifier", "alerts", "all"])
    run.add_argument("--host", help="override CORRIDOR_HTTP_HOST")
    run.add_argument("--port", type=_port, help="override CORRIDOR_HTTP_PORT")
    demo = sub.add_parser("demo", help="run Corridor offline with a local sample feed and a printing receiver")
    demo.add_argument("--port", type=_port, help="Corridor's port (default 8000)")
    sub.add_parser("init", help="create Kafka topics and store indexes")
    store = sub.add_parser("store", help="store maintenance")
    store.add_subparsers(dest="store_command", required=True).add_parser(
        "migrate", help="move data written by an earlier store layout into the current one (idempotent)"
    )
    sources = sub.add_parser("sources", help="manage feed sources")
    ssub = sources.add_subparsers(dest="sources_command", required=True)
    add = ssub.add_parser("add", help="add a source (validated as POST /api/v1/sources is)")
    add.add_argument("url")
    add.add_argument("--kind", choices=["feed", "html", "gdelt"], default="feed")
    upd = ssub.add_parser("update", help="change a source's fields (as PATCH /api/v1/sources/ID)")
    upd.add_argument("source_id")
    for p in (add, upd):
        p.add_argument("--name")
        p.add_argument("--language", help="ISO 639-1 code of the source's language, e.g. ur")
        p.add_argument("--selectors", help='JSON CSS selectors for an html source, e.g. {"item": "article"}')
        p.add_argument("--interval", type=float, help="poll interval in seconds (60 to 86400)")
        p.add_argument("--country", choices=["PK", "KZ"], help="where the publisher is")
    add.add_argument("--official", action="store_true", default=None, help="a government or state body's channel")
    official = upd.add_mutually_exclusive_group()
    official.add_argument("--official", action="store_true", default=None, dest="official")
    official.add_argument("--not-official", action="store_false", default=None, dest="official")
    add.add_argument(
        "--aggregator", action="store_true", default=None, help="lists other publishers' stories (Google News)"
    )
    aggregator = upd.add_mutually_exclusive_group()
    aggregator.add_argument("--aggregator", action="store_true", default=None, dest="aggregator")
    aggregator.add_argument("--not-aggregator", action="store_false", default=None, dest="aggregator")
    ssub.add_parser("list", help="list sources with their health")
    for verb, text in (
        ("pause", "stop polling a source"),
        ("resume", "poll a paused source again"),
        ("remove", "delete a source (its items stay)"),
    ):
        ssub.add_parser(verb, help=text).add_argument("source_id")
    imp = ssub.add_parser("import-catalogue", help="add the catalogue's sources (the shipped one by default)")
    imp.add_argument("path", nargs="?", type=Path)
    subs = sub.add_parser("subscriptions", help="manage alert subscriptions through a running Corridor's API")
    subs.add_argument(
        "--api",
        metavar="URL",
        help="base URL of the process serving /api/v1/subscriptions (the alerts role, or the proxy); "
        "default: CORRIDOR_PUBLIC_BASE_URL",
    )
    subsub = subs.add_subparsers(dest="subscriptions_command", required=True)
    sadd = subsub.add_parser("add", help="subscribe a webhook URL or an email address")
    target = sadd.add_mutually_exclusive_group(required=True)
    target.add_argument("--webhook", metavar="URL")
    target.add_argument("--email", metavar="ADDR")
    target.add_argument("--kafka", action="store_true", help="no push: alerts on corridor.alerts.v1 only")
    # Every filter of POST /api/v1/subscriptions (the API validates them; a repeated flag is "any of").
    sadd.add_argument("--sector", action="append", default=[], dest="sectors")
    sadd.add_argument("--country", action="append", default=[], choices=["PK", "KZ"], dest="countries")
    sadd.add_argument("--bilateral-only", action="store_true", help="only items about both countries")
    sadd.add_argument("--min-score", type=_score, help="best score among the wanted sectors, 0 to 1")
    sadd.add_argument(
        "--keyword", action="append", default=[], dest="keywords", help="word or phrase; a final * is a prefix"
    )
    sadd.add_argument("--source", action="append", default=[], dest="sources", help="source id")
    sadd.add_argument("--language", action="append", default=[], dest="languages", help="language tag, e.g. en")
    sadd.add_argument(
        "--kind",
        action="append",
        default=[],
        dest="kinds",
        choices=["item", "agreement.stage_changed", "agreement.setback", "agreement.stalled"],
        help="what to be alerted of (default: item)",
    )
    sadd.add_argument("--agreement", action="append", default=[], dest="agreements", help="agreement id")
    sadd.add_argument("--area", action="append", default=[], dest="areas", help="agreement area id")
    sadd.add_argument("--cadence", choices=["immediate", "hourly", "daily"], default="immediate")
    sadd.add_argument("--digest-time", metavar="HH:MM", help="local time of the daily digest")
    sadd.add_argument("--timezone", metavar="ZONE", help="IANA time zone of the digest, e.g. Asia/Karachi")
    sadd.add_argument("--owner-email", metavar="ADDR", help="told if a failing webhook endpoint is disabled")
    subsub.add_parser("list", help="subscriptions as JSON lines (never with secrets)").add_argument(
        "subscription_id", nargs="?", help="one subscription only"
    )
    for verb, what in (("pause", "stop sending"), ("resume", "send again"), ("remove", "delete")):
        subsub.add_parser(verb, help=f"{what} (one subscription)").add_argument("subscription_id")
    ingest = sub.add_parser("ingest", help="ingest tools")
    isub = ingest.add_subparsers(dest="ingest_command", required=True)
    parse = isub.add_parser("parse", help="parse a file or URL as Corridor would; items as JSON lines")
    parse.add_argument("target", help="a file path or an http(s) URL")
    parse.add_argument("--kind", choices=["feed", "html", "gdelt"], default="feed")
    parse.add_argument("--selectors", help='JSON CSS selectors for --kind html, e.g. {"item": "article"}')
    sub.add_parser("config", help="print the effective settings, secrets masked")
    ev = sub.add_parser("eval", help="score the classifier on labelled JSONL files")
    ev.add_argument("paths", nargs="+", type=Path)
    ev.add_argument("--taxonomy", type=Path, help="taxonomy file (default: the built-in one)")
    ev.add_argument("--agreements", type=Path, help="agreements registry (default: the built-in one)")
    judged = ev.add_mutually_exclusive_group()  # both given, --judge was silently ignored
    judged.add_argument("--judge", type=Path, help="judge file (default: the built-in one)")
    judged.add_argument("--no-judge", action="store_true", help="score the keyword rule alone")
    ev.add_argument(
        "--bootstrap",
        type=_resamples,
        default=0,
        metavar="N",
        help="add 95%% bootstrap intervals of the figures from N resamples of the items (0: none)",
    )
    judge = sub.add_parser("judge", help="the judge: the classifier's learned second opinion")
    jt = judge.add_subparsers(dest="judge_command", required=True).add_parser(
        "train", help="train it on labelled JSONL files (needs the dev dependencies: scikit-learn)"
    )
    jt.add_argument("paths", nargs="+", type=Path)
    jt.add_argument("--taxonomy", type=Path, help="taxonomy file (default: the built-in one)")
    jt.add_argument("--out", type=Path, required=True, help="where to write the judge file")
    rc = sub.add_parser("reclassify", help="replay stored items through a taxonomy; report, then optionally write")
    rc.add_argument(
        "--taxonomy", type=Path, help="taxonomy file (default: CORRIDOR_TAXONOMY_PATH, else the built-in one)"
    )
    rc.add_argument("--write", action="store_true", help="store the new classifications (default: report only)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides: dict[str, object] = {}
    if getattr(args, "host", None):
        overrides["http_host"] = args.host
    if getattr(args, "port", None) is not None:
        overrides["http_port"] = args.port
    try:
        settings = load_settings(**overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, json_lines=settings.log_json, secrets=settings.secret_values())
    try:
        return _dispatch(settings, args)
    except BrokenPipeError:
        raise  # the reader went away: entrypoint() ends quietly
    # README, exit codes: 1 a start that failed (a store or broker that cannot be used), 2 an
    # invalid configuration or usage (a file named on the command line or in a setting that is
    # missing, unreadable, not UTF-8 or not in its format).
    except (Unavailable, OSError) as exc:
        if args.command in _FILE_COMMANDS and not isinstance(exc, Unavailable):
            _fail(exc)
            return 2
        if args.command not in _STORE_COMMANDS:
            raise
        _fail(exc, "broker unavailable: " if isinstance(exc, BusUnavailable) else "store unavailable: ")
        return 1
    except ConfigError as exc:  # the taxonomy, judge, agreements or catalogue file
        _fail(exc)
        return 2
    except ValueError as exc:  # JSONL that is not UTF-8, not JSON or not labelled records
        if args.command not in _FILE_COMMANDS:
            raise
        _fail(exc)
        return 2


# Commands that open the store: an OSError there (a CORRIDOR_SQLITE_PATH that cannot be created
# or opened) or an Unavailable is the store's. The files they read (catalogue, taxonomy) raise
# ConfigError, and are read before the store is opened.
_STORE_COMMANDS = frozenset({"init", "sources", "store", "reclassify"})
# Commands that read (or write) files named on the command line, and open no store.
_FILE_COMMANDS = frozenset({"eval", "judge"})


def _dispatch(settings: Settings, args: argparse.Namespace) -> int:
    if args.command == "eval":
        return _eval(args)
    if args.command == "judge":
        return _judge_train(args.paths, args.taxonomy, args.out)
    if args.command == "run":
        return _run(settings, args.role)
    if args.command == "demo":
        from services.demo import run_demo

        return run_demo(args.port)
    if args.command == "init":
        return asyncio.run(_init(settings))
    if args.command == "sources":
        return asyncio.run(_sources(settings, args))
    if args.command == "subscriptions":
        return asyncio.run(_subscriptions(settings, args))
    if args.command == "ingest":
        return asyncio.run(_ingest_parse(settings, args))
    if args.command == "store":
        return asyncio.run(_store_migrate(settings))
    if args.command == "reclassify":
        return asyncio.run(_reclassify(settings, args.taxonomy, args.write))
    return _config(settings)


def entrypoint() -> None:
    """The console script: ``main`` with a closed pipe treated as the reader being done
    (``corridor config | head``), not as an error with a traceback."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout again at exit; point it at /dev/null so that fails quietly too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    sys.exit(code)


if __name__ == "__main__":
    entrypoint()
