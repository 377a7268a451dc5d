"""HTTP routes of alerts: /api/v1/subscriptions and /api/v1/deliveries (API key required:
they expose subscribers' addresses)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from pydantic import BaseModel, ConfigDict, EmailStr, Field, model_validator

from services.alerts.webhook import new_secret
from shared.errors import BlockedAddress, FetchError
from shared.models import Country, Delivery, DeliveryStatus, Subscription
from shared.netguard import AddressPolicy
from shared.store import Store
from shared.store.base import MAX_PAGE
from shared.timeutil import utcnow


class SubscriptionIn(BaseModel):
    """Body of POST /api/v1/subscriptions: exactly one of ``webhook_url`` and ``email``."""

    model_config = ConfigDict(extra="ignore")

    webhook_url: str | None = Field(default=None, max_length=2048)
    email: EmailStr | None = None
    sectors: list[str] = Field(default_factory=list, max_length=50)
    countries: list[Country] = Field(default_factory=list, max_length=2)

    @model_validator(mode="after")
    def _one_channel(self) -> SubscriptionIn:
        if (self.webhook_url is None) == (self.email is None):
            raise ValueError("give exactly one of webhook_url and email")
        if self.webhook_url is not None:
            parts = urlsplit(self.webhook_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("webhook_url must be an absolute http or https URL")
        return self


class SubscriptionOut(BaseModel):
    """A subscription as the API shows it: never with its secret."""

    id: str
    channel: Literal["webhook", "email"]
    webhook_url: str | None
    email: str | None
    sectors: list[str]
    countries: list[str]
    active: bool
    created_at: datetime

    @classmethod
    def of(cls, subscription: Subscription) -> SubscriptionOut:
        return cls.model_validate(subscription.model_dump(exclude={"secret"}))


class SubscriptionCreated(SubscriptionOut):
    """The creation answer: the only time the webhook signing secret is shown."""

    secret: str | None


def _invalid(field: str, msg: str) -> HTTPException:
    return HTTPException(422, detail=[{"loc": ["body", field], "msg": msg, "type": "value_error"}])


def build_router(
    *, store: Store, policy: AddressPolicy, sector_ids: list[str], require_key: Callable[..., Any]
) -> APIRouter:
    """Routes for subscriptions and deliveries."""
    router = APIRouter(prefix="/api/v1", tags=["alerts"], dependencies=[Depends(require_key)])

    @router.post("/subscriptions", response_model=SubscriptionCreated, status_code=201)
    async def create_subscription(body: SubscriptionIn) -> SubscriptionCreated:
        unknown = sorted(set(body.sectors) - set(sector_ids))
        if unknown:
            raise _invalid("sectors", f"unknown sectors {unknown}; valid: {sector_ids}")
        if body.webhook_url:
            parts = urlsplit(body.webhook_url)
            try:
                await policy.check_host(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
            except BlockedAddress as exc:
                raise _invalid("webhook_url", str(exc)) from exc
            except FetchError:
                pass  # unresolvable now: attempts will record the DNS error and retry
        now = utcnow()
        subscription = Subscription(
            id=f"sub_{secrets.token_hex(12)}",  # random: two identical subscriptions are two subscriptions
            channel="webhook" if body.webhook_url else "email",
            webhook_url=body.webhook_url,
            email=str(body.email) if body.email else None,
            secret=new_secret() if body.webhook_url else None,
            sectors=sorted(set(body.sectors)),
            countries=sorted(set(body.countries)),
            created_at=now,
        )
        await store.insert_subscription(subscription)
        return SubscriptionCreated(**SubscriptionOut.of(subscription).model_dump(), secret=subscription.secret)

    @router.get("/subscriptions", response_model=list[SubscriptionOut])
    async def list_subscriptions() -> list[SubscriptionOut]:
        return [SubscriptionOut.of(s) for s in await store.list_subscriptions()]

    @router.get("/subscriptions/{subscription_id}", response_model=SubscriptionOut)
    async def get_subscription(subscription_id: str) -> SubscriptionOut:
        subscription = await store.get_subscription(subscription_id)
        if subscription is None:
            raise HTTPException(404, detail="no such subscription")
        return SubscriptionOut.of(subscription)

    @router.delete("/subscriptions/{subscription_id}", status_code=204)
    async def delete_subscription(subscription_id: str) -> Response:
        if not await store.delete_subscription(subscription_id):
            raise HTTPException(404, detail="no such subscription")
        return Response(status_code=204)

    @router.get("/deliveries", response_model=list[Delivery])
    async def list_deliveries(
        subscription_id: Annotated[str | None, Query(max_length=64)] = None,
        status: DeliveryStatus | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    ) -> list[Delivery]:
        return await store.list_deliveries(subscription_id=subscription_id, status=status, limit=limit)

    return router
