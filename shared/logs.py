"""Logging set-up: one call at the entrypoint; plain text or one JSON object per line.

No secret reaches a log at any level. Corridor's own code never logs one; the libraries that
would at DEBUG (aiosqlite logs every statement with its parameters — a new subscription's
``whsec_`` secret among them —, pymongo logs commands, aiosmtplib the SMTP dialogue, httpcore
headers) are held at INFO or above whatever the level; and a filter on the handler masks the
configured secrets and anything shaped like a webhook secret in every record, as a last line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TextIO
from urllib.parse import quote, unquote_plus, urlsplit, urlunsplit

# Libraries whose DEBUG output carries statement parameters, commands, headers or SMTP lines.
QUIET = {
    "aiosqlite": logging.INFO,
    "pymongo": logging.INFO,
    "aiosmtplib": logging.INFO,
    "httpcore": logging.INFO,
    "httpx": logging.WARNING,  # logs every request URL at INFO; URLs may carry tokens
    # Logs every failed reconnect at ERROR (hundreds of thousands of lines in a 30 s broker
    # outage); the consume loops' outage log reports the outage once per state change instead.
    "aiokafka": logging.CRITICAL,
    "hpack": logging.INFO,
}
WEBHOOK_SECRET = re.compile(r"whsec_[A-Za-z0-9+/=_-]+")
MASK = "[secret]"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, and the exception if any."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        http = getattr(record, "http", None)
        if isinstance(http, dict):  # the access log's fields (shared.api.AccessLog)
            data["http"] = http
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:  # already formatted (and masked) by SecretMask
            data["exc"] = record.exc_text
        return json.dumps(data, ensure_ascii=False)


# Every C0 control but tab, DEL and the C1 controls: a line break in a message would start what
# reads as a record of its own.
_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


class TextFormatter(logging.Formatter):
    """One line per record: control characters in the message are written as escapes (``\\n``),
    so text a remote party chose (a webhook's answer, a feed's error body) cannot forge a log
    line. An exception's trace, written by our code, keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = _CONTROLS.sub(lambda m: repr(m.group())[1:-1], record.message)
        return super().formatMessage(record)


class SecretMask(logging.Filter):
    """Replaces the given secrets, and anything shaped like a webhook secret, in a record's
    final message and exception text (the record is rewritten to its masked message)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        # Longest first, so a secret that contains another is masked whole; short values are
        # not secrets worth masking (and would mask ordinary words).
        self._secrets = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)

    def mask(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return WEBHOOK_SECRET.sub(MASK, text)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self.mask(record.getMessage()), None
        if record.exc_info:
            record.exc_text = self.mask(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def configure_logging(
    level: str, *, json_lines: bool = False, secrets: Iterable[str] = (), stream: TextIO | None = None
) -> None:
    """Configure the root logger once, at the entrypoint."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(SecretMask(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name, floor in QUIET.items():
        logging.getLogger(name).setLevel(max(floor, logging.getLevelName(level)))


def shown_url(url: str) -> str:
    """``url`` as logged: no user info, each query value replaced by ``…`` (the names stay, so
    an operator can still tell two URLs apart), no fragment."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rpartition("@")[2]
        # A part without a value after its "=" is a value of its own (``?8f3a9c2e``, a bare
        # token, or ``?dG9rZW4=`` and ``?c2VjcmV0==``, ones with base64 padding): masked whole.
        query = "&".join(
            f"{quote(unquote_plus(name))}=…" if value.strip("=") else "…"
            for part in parts.query.split("&")
            if part
            for name, _, value in [part.partition("=")]
        )
        # Path parameters carry sessions too (``/feed;jsessionid=8F3A…``): their values are
        # masked the same way.
        path = "/".join(_masked_parameters(segment) for segment in parts.path.split("/"))
    except ValueError:
        return "(unreadable URL)"
    return urlunsplit((parts.scheme, netloc, path, query, ""))


def _masked_parameters(segment: str) -> str:
    """A path segment with the value of each ``;name=value`` parameter after its first part
    replaced by ``…`` (a bare ``;value``, or one of base64 padding only, is masked whole)."""
    head, *params = segment.split(";")

    def masked(param: str) -> str:
        name, _, value = param.partition("=")
        return f"{name}=…" if value.strip("=") else "…" if param else ""

    return ";".join([head, *(masked(p) for p in params)])
