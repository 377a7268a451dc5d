"""The versioned event envelope every bus message carries, and the topic names.

Wire format: UTF-8 JSON of :class:`Envelope`. ``type`` names the payload model and
``schema_version`` its version; a consumer that cannot decode a message dead-letters it
rather than guessing.
"""

from __future__ import annotations

import builtins
import uuid
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import PoisonMessage
from shared.timeutil import utcnow

TOPIC_RAW = "corridor.items.raw.v1"
TOPIC_CLASSIFIED = "corridor.items.classified.v1"
TOPIC_ALERTS = "corridor.alerts.v1"
TOPIC_DEADLETTER = "corridor.deadletter.v1"
TOPIC_OPS = "corridor.ops.v1"  # operator events: source broken / recovered
TOPIC_AGREEMENTS = "corridor.agreements.v1"  # an agreement moved, met a setback or stalled
ALL_TOPICS = (TOPIC_RAW, TOPIC_CLASSIFIED, TOPIC_ALERTS, TOPIC_DEADLETTER, TOPIC_OPS, TOPIC_AGREEMENTS)

MAX_MESSAGE_BYTES = 900_000  # below Kafka's default 1 MiB message.max.bytes

P = TypeVar("P", bound=BaseModel)


class Envelope(BaseModel):
    """One bus message: who, what, when, and the payload as a JSON object."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    type: str
    schema_version: int = 1
    occurred_at: datetime = Field(default_factory=utcnow)
    payload: dict[str, Any]

    @classmethod
    def wrap(cls, event_type: str, payload: BaseModel, *, schema_version: int = 1) -> Envelope:
        """Build an envelope around a payload model."""
        return cls(type=event_type, schema_version=schema_version, payload=payload.model_dump(mode="json"))

    def payload_as(self, model: builtins.type[P]) -> P:
        """Validate the payload as ``model``; an invalid payload is a :class:`PoisonMessage`."""
        try:
            return model.model_validate(self.payload)
        except ValidationError as exc:
            raise PoisonMessage(f"invalid {self.type} payload: {exc.error_count()} errors: {exc}") from exc

    def encode(self) -> bytes:
        """Serialise to the wire format."""
        return self.model_dump_json().encode()

    @classmethod
    def decode(cls, data: bytes) -> Envelope:
        """Parse the wire format; anything malformed is a :class:`PoisonMessage`."""
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            raise PoisonMessage(f"not a Corridor envelope: {exc.errors()[0]['msg']}") from exc


class DeadLetter(BaseModel):
    """Payload of a corridor.deadletter.v1 message: where the message came from and why it failed."""

    topic: str
    key: str | None
    reason: str
    original: str = Field(description="the original message, decoded as UTF-8 with replacement, capped")
    partition: int | None = None
    offset: int | None = None
