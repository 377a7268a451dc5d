"""Email sender: one message per alert over SMTP (aiosmtplib), text and HTML parts.

Permanent SMTP failures (5xx, refused recipients) are not retried; everything else is.
"""

from __future__ import annotations

import html
from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib

from services.alerts.outcome import Outcome
from shared.models import ClassifiedItem, Subscription
from shared.settings import Settings


def build_message(
    settings: Settings, subscription: Subscription, item: ClassifiedItem, *, delivery_id: str, link: str
) -> EmailMessage:
    """The alert email for one item."""
    sectors = ", ".join(item.sectors) or "no sector"
    countries = ", ".join(item.countries) or "no country"
    msg = EmailMessage()
    msg["From"] = settings.smtp_from
    msg["To"] = subscription.email or ""
    msg["Subject"] = f"[Corridor] {sectors}: {item.title[:150]}"
    msg["Message-ID"] = make_msgid(idstring=delivery_id, domain="corridor.local")
    msg["X-Corridor-Delivery-Id"] = delivery_id
    evidence = "\n".join(f"- {e.label}: “{e.term}” … {e.snippet}" for e in item.evidence[:8])
    msg.set_content(
        f"{item.title}\n\nSectors: {sectors}\nCountries: {countries}\nSource: {item.source_url}\n"
        f"Link: {item.url or '-'}\nEvent: {link}\n\n{item.summary[:2000]}\n\nEvidence:\n{evidence}\n"
    )
    items_html = "".join(
        f"<li><b>{html.escape(e.label)}</b>: {html.escape(e.term)} — {html.escape(e.snippet)}</li>"
        for e in item.evidence[:8]
    )
    msg.add_alternative(
        f"<h2>{html.escape(item.title)}</h2><p>Sectors: {html.escape(sectors)}<br>Countries: "
        f'{html.escape(countries)}</p><p><a href="{html.escape(item.url or link)}">Read the item</a></p>'
        f"<p>{html.escape(item.summary[:2000])}</p><ul>{items_html}</ul>",
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
