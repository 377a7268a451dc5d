"""Operator notifications: ``source.broken`` / ``source.recovered`` from corridor.ops.v1, emailed
to CORRIDOR_OPS_EMAIL when it is set (always logged). A failed email is logged and not retried:
the next state change produces a new notice, and source health stays visible in /api/v1/sources."""

from __future__ import annotations

import logging
from email.message import EmailMessage

from services.alerts.mailer import send_email
from shared.envelope import Envelope
from shared.errors import PoisonMessage
from shared.logs import shown_url
from shared.models import SourceHealthEvent, SubscriptionDisabled
from shared.settings import Settings

log = logging.getLogger(__name__)


class OpsNotifier:
    """Handles corridor.ops.v1."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    async def handle(self, envelope: Envelope) -> None:
        if envelope.type == "subscription.disabled":
            disabled = envelope.payload_as(SubscriptionDisabled)
            log.warning("subscription %s disabled: %s", disabled.subscription_id, disabled.reason)
            return  # the owner was emailed by the deliverer that disabled it
        if envelope.type not in ("source.broken", "source.recovered"):
            raise PoisonMessage(f"unexpected event type {envelope.type!r} on the ops topic")
        event = envelope.payload_as(SourceHealthEvent)
        log.warning(
            "%s: %s after %d errors: %s",
            envelope.type,
            shown_url(event.url),
            event.consecutive_errors,
            event.last_error,
        )
        if not self._settings.ops_email:
            return
        message = EmailMessage()
        message["From"] = self._settings.smtp_from
        message["To"] = self._settings.ops_email
        state = "is failing" if envelope.type == "source.broken" else "works again"
        message["Subject"] = f"[Corridor] source {state}: {event.name or shown_url(event.url)}"
        message.set_content(
            f"Source {shown_url(event.url)} ({event.source_id}) {state}.\n"
            f"Consecutive errors: {event.consecutive_errors}\nLast error: {event.last_error_kind}: {event.last_error}\n"
            f"At: {event.at.isoformat()}\n"
        )
        outcome = await send_email(self._settings, message)
        if not outcome.ok:
            log.error("could not email the operator about %s: %s", shown_url(event.url), outcome.error)
