"""Email: alert, digest and confirmation messages (text and HTML parts, List-Unsubscribe with
one-click POST per RFC 8058), sent over SMTP with aiosmtplib.

Permanent SMTP failures (5xx, refused recipients) are not retried; everything else is.
"""

from __future__ import annotations

import html
from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib

from services.alerts import links
from services.alerts.outcome import Outcome
from shared.models import AgreementEvent, ClassifiedItem, Subscription
from shared.settings import Settings


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


async def send_email(settings: Settings, message: EmailMessage) -> Outcome:
    """Send one message with the configured SMTP server."""
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
        return Outcome.permanent(f"recipient refused: {exc}")
    except aiosmtplib.SMTPResponseException as exc:
        error = f"SMTP {exc.code}: {exc.message}"
        return (
            Outcome.permanent(error, status_code=exc.code)
            if exc.code >= 500
            else Outcome.transient(error, status_code=exc.code)
        )
    except (aiosmtplib.SMTPException, OSError) as exc:
        return Outcome.transient(f"{type(exc).__name__}: {exc}")
    return Outcome.success(250)


def _unsubscribe_headers(settings: Settings, subscription: Subscription, message: EmailMessage) -> str:
    url = links.link(settings.public_base_url, settings.link_secret, "unsubscribe", subscription)
    message["List-Unsubscribe"] = f"<{url}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return url


def _base(settings: Settings, subscription: Subscription, subject: str, message_key: str) -> EmailMessage:
    msg = EmailMessage()
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
) -> EmailMessage:
    """One email for a digest period: agreement events first, then items grouped by sector."""
    groups: dict[str, list[ClassifiedItem]] = {}
    for item in sorted(items, key=lambda i: i.sort_at, reverse=True):
        wanted = [s for s in item.sectors if not subscription.sectors or s in subscription.sectors]
        groups.setdefault(wanted[0] if wanted else "other", []).append(item)
    label = "hourly" if subscription.cadence == "hourly" else "daily"
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
    msg = EmailMessage()
    msg["From"] = settings.smtp_from
    msg["To"] = subscription.owner_email or ""
    msg["Subject"] = "[Corridor] webhook endpoint disabled after sustained failures"
    msg.set_content(
        f"Corridor disabled subscription {subscription.id} for {subscription.webhook_url}.\n\nReason: {reason}\n\n"
        "Fix the endpoint, then resume the subscription (POST /api/v1/subscriptions/{id}/resume) and redeliver "
        "what failed (POST /api/v1/deliveries/{id}/redeliver).\n"
    )
    return msg
