"""Email: alert, digest and confirmation messages (text and HTML parts, List-Unsubscribe with
one-click POST per RFC 8058), sent over SMTP with aiosmtplib.

How :func:`send_email` classifies a failure (one place, by exception type and reply code):
- permanent — the recipient refused with a 5xx reply (unknown mailbox, policy), the message
  content refused with a 5xx reply to DATA, or a message that cannot be sent as built (no
  recipient, a header the email package or aiosmtplib refuses): no retry can change these;
- retryable — everything else: 4xx replies (greylisting, mailbox busy, quota), refusals that
  are our own configuration or the server's state (authentication 530/534/535/538, sender
  refused, HELO/STARTTLS refused), timeouts and connection errors. A misconfigured server thus
  runs through the retry schedule and reaches the dead-letter topic, instead of failing every
  delivery at its first attempt.
"""

from __future__ import annotations

import html
from email.errors import MessageError
from email.headerregistry import BaseHeader, HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.policy import Policy
from email.policy import default as default_policy
from email.utils import make_msgid

import aiosmtplib

from services.alerts import links
from services.alerts.outcome import Outcome
from shared.models import AgreementEvent, ClassifiedItem, Subscription
from shared.settings import Settings


class _OneLineHeader(UnstructuredHeader, BaseHeader):
    """A header written on one line, never folded or encoded.

    aiosmtplib writes messages with ``email.policy.SMTP`` (78 characters a line), which turns an
    unbreakable value longer than that — every List-Unsubscribe URL with its token — into RFC 2047
    encoded words (``=?utf-8?q?=3Chttp=3A//…``), which mail clients do not read as a URL. RFC 5322
    allows lines of up to 998 characters; our URLs are far shorter, and ASCII.
    """

    def fold(self, *, policy: Policy) -> str:
        line = f"{self.name}: {self}"
        if not line.isascii() or len(line) > 998 or "\r" in line or "\n" in line:
            return super().fold(policy=policy)  # what cannot go on one line is folded as before
        return line + policy.linesep


_HEADERS = HeaderRegistry()
_HEADERS.map_to_type("list-unsubscribe", _OneLineHeader)
POLICY = default_policy.clone(header_factory=_HEADERS)


def build_message(
    settings: Settings, subscription: Subscription, item: ClassifiedItem, *, delivery_id: str, link: str
) -> EmailMessage:
    """The alert email for one item."""
    sectors = ", ".join(item.sectors) or "no sector"
    countries = ", ".join(item.countries) or "no country"
    msg = _base(settings, subscription, f"[Corridor] {sectors}: {item.title[:150]}", delivery_id)
    unsubscribe = _unsubscribe_headers(settings, subscription, msg)
    evidence = "\n".join(f"- {e.label}: “{e.term}” … {e.snippet}" for e in item.evidence[:8])
    msg.set_content(
        f"{item.title}\n\nSectors: {sectors}\nCountries: {countries}\nSource: {item.source_url}\n"
        f"Link: {item.url or '-'}\nEvent: {link}\n\n{item.summary[:2000]}\n\nEvidence:\n{evidence}\n\n"
        f"Unsubscribe: {unsubscribe}\n"
    )
    items_html = "".join(
        f"<li><b>{html.escape(e.label)}</b>: {html.escape(e.term)} — {html.escape(e.snippet)}</li>"
        for e in item.evidence[:8]
    )
    msg.add_alternative(
        f"<h2>{html.escape(item.title)}</h2><p>Sectors: {html.escape(sectors)}<br>Countries: "
        f'{html.escape(countries)}</p><p><a href="{html.escape(item.url or link)}">Read the item</a></p>'
        f"<p>{html.escape(item.summary[:2000])}</p><ul>{items_html}</ul>"
        f'<p><a href="{html.escape(unsubscribe)}">Unsubscribe</a></p>',
        subtype="html",
    )
    return msg


_KIND_TITLES = {
    "agreement.stage_changed": "moved",
    "agreement.setback": "setback",
    "agreement.stalled": "stalled",
}


def describe(event: AgreementEvent) -> str:
    """One line saying what happened to the agreement."""
    if event.kind == "agreement.stage_changed":
        return f"{event.title}: {event.before or '-'} → {event.after}"
    if event.kind == "agreement.setback":
        return f"{event.title}: setback reported ({event.detail or 'see the evidence'})"
    return f"{event.title}: stalled — {event.detail}"


def build_agreement_message(
    settings: Settings, subscription: Subscription, event: AgreementEvent, *, delivery_id: str, link: str
) -> EmailMessage:
    """The alert email for one agreement event."""
    subject = f"[Corridor] agreement {_KIND_TITLES[event.kind]}: {event.title[:140]}"
    msg = _base(settings, subscription, subject, delivery_id)
    unsubscribe = _unsubscribe_headers(settings, subscription, msg)
    evidence = "\n".join(f"- {e.kind} {e.label}: “{e.term}” … {e.snippet}" for e in event.evidence[:8])
    msg.set_content(
        f"{describe(event)}\n\nArea: {event.area}\nAgreement: {link}\n\nEvidence:\n{evidence or '-'}\n\n"
        f"Unsubscribe: {unsubscribe}\n"
    )
    items_html = "".join(
        f"<li><b>{html.escape(e.label)}</b>: {html.escape(e.term)} — {html.escape(e.snippet)}</li>"
        for e in event.evidence[:8]
    )
    msg.add_alternative(
        f"<h2>{html.escape(describe(event))}</h2><p>Area: {html.escape(event.area)}</p>"
        f'<p><a href="{html.escape(link)}">The agreement in Corridor</a></p><ul>{items_html}</ul>'
        f'<p><a href="{html.escape(unsubscribe)}">Unsubscribe</a></p>',
        subtype="html",
    )
    return msg


# Replies that say the client (we) must authenticate or authenticate differently: our
# configuration, not the recipient, so they are retried even when a recipient gets them.
_AUTH_CODES = frozenset({530, 534, 535, 538})


def _refused_permanently(code: int) -> bool:
    """True for a 5xx reply about the recipient or the message itself (not our credentials)."""
    return code >= 500 and code not in _AUTH_CODES


async def send_email(settings: Settings, message: EmailMessage) -> Outcome:
    """Send one message with the configured SMTP server; never raises for a failure of this
    message (see the module doc for which outcomes are permanent)."""
    if not any(str(address).strip() for address in message.get_all("To", [])):
        # aiosmtplib would connect first and then raise ValueError: refuse before any network.
        return Outcome.permanent("message has no recipient address")
    if settings.smtp_starttls and settings.smtp_tls:
        # aiosmtplib refuses the pair with ValueError, which below means "this message"; it is our
        # configuration, so retry until an operator fixes it (settings should refuse it at start).
        return Outcome.transient("SMTP settings: smtp_starttls and smtp_tls are mutually exclusive")
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    try:
        await aiosmtplib.send(
            message,
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username,
            password=password,
            start_tls=settings.smtp_starttls,
            use_tls=settings.smtp_tls,
            timeout=settings.smtp_timeout_s,
        )
    except aiosmtplib.SMTPRecipientsRefused as exc:
        # Raised when every recipient was refused, whatever the codes: 450/451/452 (mailbox
        # busy, greylisting, over quota) are temporary and must be retried.
        codes = [r.code for r in exc.recipients]
        error = "recipient refused: " + "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
        if codes and all(_refused_permanently(code) for code in codes):
            return Outcome.permanent(error, status_code=codes[0])
        return Outcome.transient(error, status_code=codes[0] if codes else None)
    except aiosmtplib.SMTPDataError as exc:
        error = f"message refused: SMTP {exc.code}: {exc.message}"
        if _refused_permanently(exc.code):
            return Outcome.permanent(error, status_code=exc.code)
        return Outcome.transient(error, status_code=exc.code)
    except aiosmtplib.SMTPResponseException as exc:
        # Authentication, sender, HELO, STARTTLS and other command refusals: the server's state
        # or our own configuration, which an operator can fix while the delivery waits.
        return Outcome.transient(f"{type(exc).__name__}: SMTP {exc.code}: {exc.message}", status_code=exc.code)
    except (aiosmtplib.SMTPException, OSError) as exc:
        return Outcome.transient(f"{type(exc).__name__}: {exc}")
    except (ValueError, MessageError) as exc:
        # The message as built cannot be sent (aiosmtplib: no recipient or sender header, an
        # address that cannot be encoded; email: a malformed header): the same on every retry.
        return Outcome.permanent(f"message cannot be sent: {type(exc).__name__}: {exc}")
    return Outcome.success(250)


def _unsubscribe_headers(settings: Settings, subscription: Subscription, message: EmailMessage) -> str:
    url = links.link(settings.public_base_url, settings.link_secret, "unsubscribe", subscription)
    message["List-Unsubscribe"] = f"<{url}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return url


def _base(settings: Settings, subscription: Subscription, subject: str, message_key: str) -> EmailMessage:
    msg = EmailMessage(policy=POLICY)
    msg["From"] = settings.smtp_from
    msg["To"] = subscription.email or ""
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(idstring=message_key, domain="corridor.local")
    msg["X-Corridor-Delivery-Id"] = message_key
    return msg


def build_confirmation(settings: Settings, subscription: Subscription, *, delivery_id: str) -> EmailMessage:
    """The double opt-in email: nothing else is sent until its link is followed."""
    url = links.link(settings.public_base_url, settings.link_secret, "confirm", subscription)
    msg = _base(settings, subscription, "[Corridor] Confirm your alert subscription", delivery_id)
    wanted = ", ".join(subscription.sectors) or "all sectors"
    msg.set_content(
        f"Someone (hopefully you) subscribed {subscription.email} to Corridor alerts ({wanted}, "
        f"{subscription.cadence}).\n\nConfirm here: {url}\n\nIf it was not you, ignore this email: "
        "nothing will be sent without confirmation.\n"
    )
    return msg


def build_digest(
    settings: Settings,
    subscription: Subscription,
    items: list[ClassifiedItem],
    *,
    delivery_id: str,
    period: str,
    events: list[AgreementEvent] | None = None,
    follow_up: bool = False,
) -> EmailMessage:
    """One email for a digest period: agreement events first, then items grouped by sector.
    ``follow_up`` marks a digest of alerts that reached a period after its digest had gone."""
    groups: dict[str, list[ClassifiedItem]] = {}
    for item in sorted(items, key=lambda i: i.sort_at, reverse=True):
        wanted = [s for s in item.sectors if not subscription.sectors or s in subscription.sectors]
        groups.setdefault(wanted[0] if wanted else "other", []).append(item)
    # From the period key, not the cadence: the subscription may have changed cadence since
    # (an hourly key reads "2026-11-26T14", a daily one "2026-11-26").
    label = ("hourly" if "T" in period else "daily") + (" follow-up" if follow_up else "")
    events = events or []
    count = f"{len(items)} items" + (f", {len(events)} agreement events" if events else "")
    msg = _base(settings, subscription, f"[Corridor] {label} digest {period}: {count}", delivery_id)
    unsubscribe = _unsubscribe_headers(settings, subscription, msg)
    lines = [f"Corridor {label} digest for {period}: {count}.", ""]
    html_parts = [f"<h2>Corridor {label} digest for {html.escape(period)}: {html.escape(count)}</h2>"]
    if events:
        lines.append(f"agreements ({len(events)})")
        html_parts.append(f"<h3>agreements ({len(events)})</h3><ul>")
        for event in sorted(events, key=lambda e: e.at, reverse=True):
            lines.append(f"  - {describe(event)}")
            html_parts.append(f"<li>{html.escape(describe(event))}</li>")
        lines.append("")
        html_parts.append("</ul>")
    for sector, group in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        lines.append(f"{sector} ({len(group)})")
        html_parts.append(f"<h3>{html.escape(sector)} ({len(group)})</h3><ul>")
        for item in group:
            lines.append(f"  - {item.title} — {item.url or item.source_url}")
            html_parts.append(
                f'<li><a href="{html.escape(item.url or item.source_url)}">{html.escape(item.title)}</a></li>'
            )
        html_parts.append("</ul>")
        lines.append("")
    lines.append(f"Unsubscribe: {unsubscribe}")
    html_parts.append(f'<p><a href="{html.escape(unsubscribe)}">Unsubscribe</a></p>')
    msg.set_content("\n".join(lines) + "\n")
    msg.add_alternative("".join(html_parts), subtype="html")
    return msg


def build_disabled_notice(settings: Settings, subscription: Subscription, reason: str) -> EmailMessage:
    """Tells a webhook subscription's owner that Corridor stopped sending to the endpoint."""
    msg = EmailMessage(policy=POLICY)
    msg["From"] = settings.smtp_from
    msg["To"] = subscription.owner_email or ""
    msg["Subject"] = "[Corridor] webhook endpoint disabled after sustained failures"
    msg.set_content(
        f"Corridor disabled subscription {subscription.id} for {subscription.webhook_url}.\n\nReason: {reason}\n\n"
        "Fix the endpoint, then resume the subscription (POST /api/v1/subscriptions/{id}/resume) and redeliver "
        "what failed (POST /api/v1/deliveries/{id}/redeliver).\n"
    )
    return msg
