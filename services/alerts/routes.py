"""HTTP routes of alerts: /api/v1/subscriptions and /api/v1/deliveries (API key required: they
expose subscribers' addresses), plus the keyless confirm and unsubscribe pages linked from emails."""

from __future__ import annotations

import html
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator, model_validator

from services.alerts import links
from services.alerts.deliverer import CONFIRM_ITEM
from services.alerts.webhook import new_secret
from shared.api import Body
from shared.errors import BlockedAddress
from shared.models import (
    LANGUAGE_TAG,
    UNSUBSCRIBED,
    AlertKind,
    Area,
    Cadence,
    Country,
    Delivery,
    DeliveryStatus,
    Subscription,
)
from shared.netguard import AddressPolicy, InvalidURL, checked_url
from shared.settings import Settings
from shared.store import Store
from shared.store.base import MAX_PAGE
from shared.timeutil import utcnow

_HHMM = r"^([01]\d|2[0-3]):[0-5]\d$"
_DIGESTS_EMAIL_ONLY = (
    "digests (cadence hourly or daily) are sent by email only; webhook and kafka subscriptions are immediate"
)
# Filters a PATCH may set to null (back to "no filter"); null for any other field is refused,
# since it would either be dropped silently or store a value the model does not allow.
_NULLABLE = frozenset({"min_score"})


class Filters(Body):
    """What a subscription wants; every field optional in a PATCH."""

    model_config = ConfigDict(extra="forbid")

    sectors: list[str] | None = Field(default=None, max_length=50)
    countries: list[Country] | None = Field(default=None, max_length=2)
    bilateral_only: bool | None = None
    min_score: float | None = Field(default=None, ge=0, le=1000)
    keywords: list[Annotated[str, Field(min_length=2, max_length=100)]] | None = Field(default=None, max_length=50)
    sources: list[str] | None = Field(default=None, max_length=200)
    languages: list[Annotated[str, Field(min_length=2, max_length=8, pattern=LANGUAGE_TAG)]] | None = Field(
        default=None, max_length=20
    )
    agreements: list[Annotated[str, Field(max_length=80)]] | None = Field(
        default=None, max_length=100, description="agreement ids (GET /api/v1/agreements): items linked to one of them"
    )
    areas: list[Area] | None = Field(default=None, max_length=20, description="agreement areas, any of")
    kinds: list[AlertKind] | None = Field(
        default=None,
        min_length=1,
        description='what to be alerted of: "item" (default), "agreement.stage_changed", "agreement.setback", '
        '"agreement.stalled"',
    )
    cadence: Cadence | None = None
    digest_time: str | None = Field(default=None, pattern=_HHMM, description="local HH:MM of the daily digest")
    timezone: str | None = Field(default=None, max_length=64, description="IANA time zone, e.g. Asia/Karachi")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"unknown time zone {value!r}") from exc
        return value


class SubscriptionIn(Filters):
    """Body of POST /api/v1/subscriptions: exactly one channel — ``webhook_url``, ``email``, or
    ``"channel": "kafka"`` (alerts read straight from corridor.alerts.v1). Unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    webhook_url: str | None = Field(default=None, max_length=2048)
    email: EmailStr | None = None
    channel: Literal["webhook", "email", "kafka"] | None = None
    owner_email: EmailStr | None = Field(default=None, description="told if a failing webhook endpoint is disabled")

    @model_validator(mode="after")
    def _one_channel(self) -> SubscriptionIn:
        given = [c for c, v in (("webhook", self.webhook_url), ("email", self.email)) if v is not None]
        if self.channel == "kafka":
            given.append("kafka")
        if len(given) != 1 or (self.channel and self.channel != given[0]):
            raise ValueError("give exactly one channel: webhook_url, email, or channel=kafka")
        if self.cadence not in (None, "immediate") and given[0] != "email":
            raise ValueError(_DIGESTS_EMAIL_ONLY)
        return self


class SubscriptionOut(BaseModel):
    """A subscription as the API shows it: never with a secret."""

    id: str
    channel: Literal["webhook", "email", "kafka"]
    webhook_url: str | None
    email: str | None
    owner_email: str | None
    sectors: list[str]
    countries: list[str]
    bilateral_only: bool
    min_score: float | None
    keywords: list[str]
    sources: list[str]
    languages: list[str]
    agreements: list[str]
    areas: list[str]
    kinds: list[str]
    cadence: Cadence
    digest_time: str
    timezone: str
    active: bool
    confirmed: bool
    disabled_reason: str | None
    previous_secret_expires_at: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, subscription: Subscription) -> SubscriptionOut:
        return cls.model_validate(subscription.model_dump(exclude={"secret", "previous_secret"}))


class SubscriptionCreated(SubscriptionOut):
    """The creation (or rotation) answer: the only time the webhook signing secret is shown."""

    secret: str | None


def _invalid(field: str, msg: str) -> HTTPException:
    return HTTPException(422, detail=[{"loc": ["body", field], "msg": msg, "type": "value_error"}])


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
        f"<title>{title}</title></head><body style='font-family:sans-serif;max-width:36em;margin:3em auto'>"
        f"<h1>{title}</h1>{body}</body></html>"
    )


def _button_page(title: str, label: str, token: str) -> HTMLResponse:
    """A page whose only action is a POST back with the token (escaped: it comes from the URL)."""
    return _page(
        title,
        f"<form method='post'><input type='hidden' name='token' value='{html.escape(token, quote=True)}'>"
        f"<button type='submit'>{html.escape(label)}</button></form>",
    )


def build_router(
    *,
    store: Store,
    policy: AddressPolicy,
    sector_ids: list[str],
    agreement_ids: list[str],
    require_key: Callable[..., Any],
    settings: Settings,
    on_change: Callable[[], None] = lambda: None,
) -> APIRouter:
    """Routes for subscriptions and deliveries. ``on_change`` is called after every request that
    may have changed a subscription (the matcher of this process re-reads them at once)."""

    async def changed(request: Request) -> AsyncIterator[None]:
        yield
        if request.method != "GET":
            on_change()

    router = APIRouter(prefix="/api/v1", tags=["alerts"], dependencies=[Depends(changed)])
    admin = [Depends(require_key)]

    async def found(subscription_id: str) -> Subscription:
        subscription = await store.get_subscription(subscription_id)
        if subscription is None:
            raise HTTPException(404, detail="no such subscription")
        return subscription

    def checked_filters(body: Filters, *, patch: bool = False) -> dict[str, Any]:
        """The fields the body sets, validated against the registries. On create an explicit
        null means the default (it is left out); on ``patch`` it clears a nullable filter
        (``min_score``) and is refused (422) for any other field."""
        fields = body.model_dump(exclude_unset=True, exclude={"webhook_url", "email", "channel", "owner_email"})
        nulls = sorted(k for k, v in fields.items() if v is None and k not in _NULLABLE)
        if patch and nulls:
            raise _invalid(nulls[0], f"{nulls[0]} cannot be null; leave it out to keep the current value")
        unknown = sorted(set(fields.get("sectors") or []) - set(sector_ids))
        if unknown:
            raise _invalid("sectors", f"unknown sectors {unknown}; valid: {sector_ids}")
        unknown = sorted(set(fields.get("agreements") or []) - set(agreement_ids))
        if unknown:
            raise _invalid("agreements", f"unknown agreements {unknown}; see GET /api/v1/agreements")
        for key in ("sectors", "countries", "sources", "languages", "agreements", "areas", "kinds"):
            if fields.get(key) is not None:
                fields[key] = sorted(set(fields[key]))
        if patch:
            return fields
        return {k: v for k, v in fields.items() if v is not None}

    @router.post("/subscriptions", response_model=SubscriptionCreated, status_code=201, dependencies=admin)
    async def create_subscription(body: SubscriptionIn) -> SubscriptionCreated:
        fields = checked_filters(body)
        webhook_url = None
        if body.webhook_url is not None:
            try:
                webhook_url = await checked_url(policy, body.webhook_url)
            except InvalidURL as exc:
                raise _invalid("webhook_url", f"webhook_url {exc}") from exc
            except BlockedAddress as exc:
                raise _invalid("webhook_url", str(exc)) from exc
        now = utcnow()
        channel = "webhook" if body.webhook_url else "email" if body.email else "kafka"
        subscription = Subscription(
            id=f"sub_{secrets.token_hex(12)}",  # random: two identical subscriptions are two subscriptions
            channel=channel,
            webhook_url=webhook_url,
            email=str(body.email) if body.email else None,
            owner_email=str(body.owner_email) if body.owner_email else None,
            secret=new_secret() if webhook_url else None,
            confirmed=channel != "email",  # email addresses need double opt-in
            created_at=now,
            **fields,
        )
        await store.insert_subscription(subscription)
        if channel == "email":
            # The confirmation email goes out through the deliverer, with its retries.
            await store.insert_delivery(
                Delivery(
                    id=Delivery.make_id(subscription.id, CONFIRM_ITEM, "email"),
                    subscription_id=subscription.id,
                    item_id=CONFIRM_ITEM,
                    channel="email",
                    created_at=now,
                    next_attempt_at=now,
                )
            )
        return SubscriptionCreated(**SubscriptionOut.of(subscription).model_dump(), secret=subscription.secret)

    @router.get("/subscriptions", response_model=list[SubscriptionOut], dependencies=admin)
    async def list_subscriptions() -> list[SubscriptionOut]:
        return [SubscriptionOut.of(s) for s in await store.list_subscriptions()]

    @router.get("/subscriptions/{subscription_id}", response_model=SubscriptionOut, dependencies=admin)
    async def get_subscription(subscription_id: str) -> SubscriptionOut:
        return SubscriptionOut.of(await found(subscription_id))

    @router.patch("/subscriptions/{subscription_id}", response_model=SubscriptionOut, dependencies=admin)
    async def patch_subscription(subscription_id: str, body: Filters) -> SubscriptionOut:
        subscription = await found(subscription_id)
        fields = checked_filters(body, patch=True)
        if fields.get("cadence", "immediate") != "immediate" and subscription.channel != "email":
            raise _invalid("cadence", _DIGESTS_EMAIL_ONLY)
        if fields:
            await store.update_subscription(subscription_id, fields)
        return SubscriptionOut.of(await found(subscription_id))

    @router.post("/subscriptions/{subscription_id}/pause", response_model=SubscriptionOut, dependencies=admin)
    async def pause(subscription_id: str) -> SubscriptionOut:
        await found(subscription_id)
        await store.update_subscription(subscription_id, {"active": False})
        return SubscriptionOut.of(await found(subscription_id))

    @router.post("/subscriptions/{subscription_id}/resume", response_model=SubscriptionOut, dependencies=admin)
    async def resume(subscription_id: str) -> SubscriptionOut:
        await found(subscription_id)
        # The recipient withdrew consent: only a new subscription, confirmed by them, restores it.
        # The store checks and writes in one step: an unsubscribe landing meanwhile still wins.
        if not await store.update_subscription(
            subscription_id,
            {"active": True, "disabled_reason": None, "failing_since": None},
            unless_reason=UNSUBSCRIBED,
        ):
            if await store.get_subscription(subscription_id) is None:
                raise HTTPException(404, detail="no such subscription")
            raise HTTPException(
                409, detail="the recipient unsubscribed; create a new subscription (they confirm it again)"
            )
        return SubscriptionOut.of(await found(subscription_id))

    @router.post(
        "/subscriptions/{subscription_id}/rotate-secret", response_model=SubscriptionCreated, dependencies=admin
    )
    async def rotate_secret(subscription_id: str) -> SubscriptionCreated:
        subscription = await found(subscription_id)
        if subscription.channel != "webhook":
            raise HTTPException(409, detail="only webhook subscriptions have a signing secret")
        grace = timedelta(seconds=settings.secret_rotation_grace_s)
        fresh = new_secret()
        await store.update_subscription(
            subscription_id,
            {"secret": fresh, "previous_secret": subscription.secret, "previous_secret_expires_at": utcnow() + grace},
        )
        updated = await found(subscription_id)
        return SubscriptionCreated(**SubscriptionOut.of(updated).model_dump(), secret=fresh)

    @router.delete("/subscriptions/{subscription_id}", status_code=204, dependencies=admin)
    async def delete_subscription(subscription_id: str) -> Response:
        if not await store.delete_subscription(subscription_id):
            raise HTTPException(404, detail="no such subscription")
        return Response(status_code=204)

    # Keyless pages linked from emails. GET only shows a button: mail scanners prefetch links, and
    # a prefetch must neither confirm nor unsubscribe anybody.
    async def linked(subscription_id: str, purpose: links.Purpose, token: str) -> None:
        subscription = await store.get_subscription(subscription_id)
        if subscription is None or not links.check_token(settings.link_secret, purpose, subscription_id, token):
            raise HTTPException(404, detail="no such subscription or wrong token")

    @router.get("/subscriptions/{subscription_id}/confirm", response_class=HTMLResponse)
    async def confirm_page(subscription_id: str, token: Annotated[str, Query(max_length=64)]) -> HTMLResponse:
        return _button_page("Confirm your Corridor alerts", "Confirm subscription", token)

    @router.post("/subscriptions/{subscription_id}/confirm", response_class=HTMLResponse)
    async def confirm(
        subscription_id: str,
        token: Annotated[str | None, Form(max_length=64)] = None,
        token_q: Annotated[str | None, Query(alias="token", max_length=64)] = None,
    ) -> HTMLResponse:
        await linked(subscription_id, "confirm", token or token_q or "")
        await store.update_subscription(subscription_id, {"confirmed": True})
        return _page("Subscription confirmed", "<p>You will receive Corridor alerts at this address.</p>")

    @router.get("/subscriptions/{subscription_id}/unsubscribe", response_class=HTMLResponse)
    async def unsubscribe_page(subscription_id: str, token: Annotated[str, Query(max_length=64)]) -> HTMLResponse:
        return _button_page("Unsubscribe from Corridor alerts", "Unsubscribe", token)

    @router.post("/subscriptions/{subscription_id}/unsubscribe", response_class=HTMLResponse)
    async def unsubscribe(
        subscription_id: str,
        token: Annotated[str | None, Form(max_length=64)] = None,
        token_q: Annotated[str | None, Query(alias="token", max_length=64)] = None,
    ) -> HTMLResponse:
        """One-click unsubscribe (RFC 8058): mail clients POST ``List-Unsubscribe=One-Click`` to
        the URL of the List-Unsubscribe header, token included in the query."""
        await linked(subscription_id, "unsubscribe", token or token_q or "")
        await store.update_subscription(subscription_id, {"active": False, "disabled_reason": UNSUBSCRIBED})
        return _page("Unsubscribed", "<p>You will not receive these alerts any more.</p>")

    @router.get("/deliveries", response_model=list[Delivery], dependencies=admin)
    async def list_deliveries(
        subscription_id: Annotated[str | None, Query(max_length=64)] = None,
        item_id: Annotated[str | None, Query(max_length=80)] = None,
        status: DeliveryStatus | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
        before: Annotated[
            str | None, Query(max_length=80, description="the last delivery id of the previous page: the next page")
        ] = None,
    ) -> list[Delivery]:
        after_this = None
        if before is not None:
            last = await store.get_delivery(before)
            if last is None:
                raise HTTPException(
                    422, detail=[{"loc": ["query", "before"], "msg": "no such delivery", "type": "value_error"}]
                )
            after_this = (last.created_at, last.id)
        return await store.list_deliveries(
            subscription_id=subscription_id, item_id=item_id, status=status, limit=limit, before=after_this
        )

    @router.post("/deliveries/{delivery_id}/redeliver", response_model=Delivery, status_code=202, dependencies=admin)
    async def redeliver(delivery_id: str) -> Delivery:
        """Send again from the first attempt. Refused (409) while the delivery waits for its
        digest or an attempt of it is in flight: clearing a live lease would let a second worker
        send it while the first still is."""
        delivery = await store.get_delivery(delivery_id)
        if delivery is None:
            raise HTTPException(404, detail="no such delivery")
        if delivery.status == "queued":
            raise HTTPException(409, detail="queued for a digest that has not been sent yet")
        # The attempt would fail at once for these (the deliverer refuses them): say so now, not
        # with a 202 and a delivery that turns "failed" a moment later.
        if delivery.item_id != CONFIRM_ITEM:
            subscription = await store.get_subscription(delivery.subscription_id)
            if subscription is None:
                raise HTTPException(409, detail="its subscription was deleted")
            if not subscription.active:
                raise HTTPException(409, detail="its subscription is paused or was disabled: resume it first")
            if not subscription.confirmed:
                raise HTTPException(409, detail="its subscription is not confirmed yet")
        if delivery.status == "pending":
            # Take the lease ourselves (atomic in the store): if a worker holds it, it is sending
            # now, and the reset below must wait for it. Delivered or failed deliveries have no
            # attempt in flight, and nothing claims them.
            now = utcnow()
            hold = now + timedelta(seconds=settings.delivery_lease_s)
            if await store.claim_delivery(delivery_id, now, hold) is None:
                current = await store.get_delivery(delivery_id)
                until = current.lease_until.isoformat() if current and current.lease_until else "now"
                raise HTTPException(
                    409, detail=f"an attempt of this delivery is in flight (leased until {until}); try again after it"
                )
        await store.update_delivery(
            delivery_id, {"status": "pending", "attempts": 0, "next_attempt_at": utcnow(), "lease_until": None}
        )
        updated = await store.get_delivery(delivery_id)
        assert updated is not None
        return updated

    return router
