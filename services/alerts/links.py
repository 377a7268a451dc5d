"""Keyless links in emails: double opt-in confirmation and one-click unsubscribe (RFC 8058).

Tokens are HMACs of (purpose, subscription id) with CORRIDOR_LINK_SECRET: nothing to store, a
token for one subscription or purpose never works for another, and none can be guessed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Literal

from pydantic import SecretStr

from shared.models import Subscription

Purpose = Literal["confirm", "unsubscribe"]


def link_token(secret: SecretStr, purpose: Purpose, subscription_id: str) -> str:
    digest = hmac.new(secret.get_secret_value().encode(), f"{purpose}:{subscription_id}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()[:18]).decode()


def check_token(secret: SecretStr, purpose: Purpose, subscription_id: str, token: str) -> bool:
    # As bytes: compare_digest refuses non-ASCII str, and a token is whatever a client sent.
    given = token.encode("utf-8", "replace")
    return hmac.compare_digest(link_token(secret, purpose, subscription_id).encode(), given)


def link(base_url: str, secret: SecretStr, purpose: Purpose, subscription: Subscription) -> str:
    """The absolute URL of a confirm or unsubscribe page for this subscription."""
    token = link_token(secret, purpose, subscription.id)
    return f"{base_url.rstrip('/')}/api/v1/subscriptions/{subscription.id}/{purpose}?token={token}"
