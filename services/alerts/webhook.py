"""Webhook sender: Standard Webhooks signing, one POST, the outcome classified.

Retried: timeouts, connection errors, 5xx, 408 and 429 (Retry-After honoured in both its forms,
seconds or an HTTP-date, clamped by the deliverer). Not retried: other 4xx, and destinations the
SSRF guard refuses; on 410 Gone the deliverer also disables the subscription. Redirects are not
followed: a receiver must answer at the URL it registered.
"""

from __future__ import annotations

import json
import secrets
from base64 import b64encode
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook

from services.alerts.outcome import Outcome
from shared.errors import BlockedAddress, FetchError
from shared.http import classify_http_error, read_capped
from shared.models import AgreementEvent, ClassifiedItem, Subscription

RESPONSE_SNIPPET_BYTES = 1024
SECRET_BYTES = 24


def new_secret() -> str:
    """A fresh signing secret in the Standard Webhooks format (``whsec_`` + base64)."""
    return "whsec_" + b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def alert_body(subscription: Subscription, item: ClassifiedItem, *, link: str) -> dict[str, Any]:
    """The JSON body of an alert webhook."""
    return {
        "type": "corridor.alert",
        "subscription_id": subscription.id,
        "link": link,
        "item": item.model_dump(mode="json"),
    }


def agreement_body(subscription: Subscription, event: AgreementEvent, *, link: str) -> dict[str, Any]:
    """The JSON body of an agreement alert (stage changed, setback, stalled)."""
    return {
        "type": "corridor.agreement",
        "kind": event.kind,
        "subscription_id": subscription.id,
        "link": link,
        "event": event.model_dump(mode="json", exclude={"published_at"}),
    }


def _retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP-date (RFC 9110
    10.2.3), a date in the past meaning 0; None when absent or unreadable. The deliverer
    clamps both forms the same way."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        at = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)  # "-0000": RFC 5322's "UTC, origin unknown"
    return max(0.0, (at - now).total_seconds())


async def send_webhook(
    client: httpx.AsyncClient, subscription: Subscription, message_id: str, body: dict[str, Any], now: datetime
) -> Outcome:
    """POST ``body`` signed with the subscription's secret; ``message_id`` is the webhook-id."""
    if not subscription.webhook_url or not subscription.secret:
        return Outcome.permanent("subscription has no webhook URL or secret")
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    signature = Webhook(subscription.secret).sign(message_id, now, data)
    expires = subscription.previous_secret_expires_at
    if subscription.previous_secret and expires and expires > now:
        # During a rotation's grace period sign with both secrets (space-separated, per the
        # Standard Webhooks spec), so receivers can switch to the new secret at their own pace.
        signature += " " + Webhook(subscription.previous_secret).sign(message_id, now, data)
    headers = {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
    try:
        async with client.stream("POST", subscription.webhook_url, content=data.encode(), headers=headers) as resp:
            try:
                snippet = (await read_capped(resp, RESPONSE_SNIPPET_BYTES)).decode("utf-8", "replace")
            except FetchError:
                snippet = "(response body larger than the snippet cap)"
            code = resp.status_code
            if 200 <= code < 300:
                return Outcome.success(code)
            # The reason phrase is the endpoint's own text: capped, like the body snippet.
            error = f"HTTP {code} {resp.reason_phrase[:60]}".rstrip()
            if snippet.strip():
                error += f": {snippet[:200]}"
            if code >= 500 or code in (408, 429):
                return Outcome.transient(
                    error, status_code=code, retry_after_s=_retry_after(resp.headers.get("retry-after"), now)
                )
            return Outcome.permanent(error, status_code=code)
    except BlockedAddress as exc:
        return Outcome.permanent(str(exc))
    except FetchError as exc:
        return Outcome.transient(str(exc))
    except httpx.HTTPError as exc:
        return Outcome.transient(str(classify_http_error(exc)))
