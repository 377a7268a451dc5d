"""A small driver for headless Chromium over the DevTools protocol (CDP), for dashboard tests
that act on the page (type, press keys, change the address, resize) instead of reading one DOM
dump. Only 127.0.0.1: Chromium's debugging port is bound to loopback and the page is Corridor's.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

KEYS = {"Tab": 9, "Enter": 13, " ": 32}
# Headless Chromium that talks to nothing but the page it is given (tests reach 127.0.0.1 only).
HEADLESS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class CdpError(AssertionError):
    """A CDP method answered an error."""


class Page:
    """One Chromium tab, used as a context manager (Chromium stops when it ends): navigate,
    evaluate JavaScript, press keys, emulate a viewport. Console errors and CSP violations are
    collected in ``problems``."""

    def __init__(self, binary: str, profile: Path, width: int = 1280, height: int = 1000) -> None:
        profile.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                binary,
                *HEADLESS,
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.problems: list[str] = []
        self.paused: list[str] = []  # requests held by hold() (Fetch.requestPaused), oldest first
        self._ids = itertools.count(1)
        self._stack = contextlib.ExitStack()
        self._stack.callback(self._stop)  # from here on, whatever fails stops Chromium
        try:
            self._port = self._debugging_port(profile / "DevToolsActivePort")
        except BaseException:
            self._stack.close()
            raise

    def _debugging_port(self, active: Path) -> int:
        """The port Chromium wrote into ``active`` once it listens (its first line, whole)."""
        deadline = time.monotonic() + 30
        while True:
            lines = active.read_text().splitlines() if active.exists() else []
            if len(lines) >= 2 and lines[0].isdigit():  # the port, then the browser's path
                return int(lines[0])
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError("Chromium did not open its debugging port")
            time.sleep(0.1)

    def __enter__(self) -> Page:
        try:
            targets = httpx.get(f"http://127.0.0.1:{self._port}/json/list", timeout=10).json()
            page = next(t for t in targets if t["type"] == "page")
            self.ws: ClientConnection = self._stack.enter_context(
                connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10)
            )
            self.send("Runtime.enable")
            self.send("Log.enable")
            self.send("Page.enable")
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Call one CDP method and return its result (events that arrive meanwhile are read for
        console errors)."""
        call = next(self._ids)
        self.ws.send(json.dumps({"id": call, "method": method, "params": params}))
        while True:
            message: dict[str, Any] = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == call:
                if "error" in message:
                    raise CdpError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._note(message)

    def _note(self, message: dict[str, Any]) -> None:
        if message.get("method") == "Fetch.requestPaused":
            self.paused.append(message["params"]["requestId"])
        elif message.get("method") == "Log.entryAdded":
            entry = message["params"]["entry"]
            if entry.get("level") == "error" and "favicon" not in entry.get("url", ""):
                self.problems.append(entry.get("text", ""))
        elif message.get("method") == "Runtime.exceptionThrown":
            self.problems.append(json.dumps(message["params"]["exceptionDetails"])[:500])

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (awaited when it is a promise)."""
        result = self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float = 20) -> Any:
        """Poll until the expression is truthy; its value. Values come back as JSON: a DOM node
        comes back as an empty object (falsy here), so test for one with ``!!``."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {expression!r}")
            time.sleep(0.1)

    def goto(self, url: str, *, drawn: bool = True) -> None:
        """Open ``url`` and, with ``drawn``, wait until the dashboard has drawn its data
        (``data-ready``: every answer arrived)."""
        self.send("Page.navigate", url=url)
        if drawn:
            self.wait_for("document.readyState === 'complete' && !!document.body.dataset.ready")

    def hold(self, url_pattern: str) -> None:
        """Hold every request matching ``url_pattern`` (a slow route) until release()."""
        self.send("Fetch.enable", patterns=[{"urlPattern": url_pattern}])

    def wait_held(self, count: int, timeout_s: float = 20) -> None:
        """Wait until ``count`` requests are held."""
        deadline = time.monotonic() + timeout_s
        while len(self.paused) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.paused)} requests held, {count} expected")
            self.evaluate("0")  # reads the events that arrived meanwhile
            time.sleep(0.05)

    def release_one(self, index: int) -> None:
        """Let one held request go on (``index`` in the order they were held; -1: the newest),
        holding the others: answers can be made to arrive in any order."""
        # The page may have aborted it meanwhile (a newer refresh cancels an older one's).
        with contextlib.suppress(CdpError):
            self.send("Fetch.continueRequest", requestId=self.paused.pop(index))

    def release(self) -> None:
        """Let the held requests go on, in the order they came, and hold no more."""
        while self.paused:
            self.release_one(0)
        self.send("Fetch.disable")

    def press(self, key: str) -> None:
        """Press and release one key, as a user would (focus moves, buttons activate)."""
        code = KEYS[key]
        text = {"Enter": "\r", " ": " "}.get(key)
        down: dict[str, Any] = {"type": "keyDown" if text else "rawKeyDown", "key": key, "windowsVirtualKeyCode": code}
        down["code"] = "Space" if key == " " else key
        if text:
            down |= {"text": text, "unmodifiedText": text}
        self.send("Input.dispatchKeyEvent", **down)
        self.send("Input.dispatchKeyEvent", **(down | {"type": "keyUp", "text": "", "unmodifiedText": ""}))

    def viewport(self, width: int, height: int, *, mobile: bool = False) -> None:
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=mobile)

    def _stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
