"""The versioned event envelope every bus message carries, and the topic names.

Wire format: UTF-8 JSON of :class:`Envelope`. ``type`` names the payload model and
``schema_version`` its version; a consumer that cannot decode a message dead-letters it
rather than guessing. That includes a version this code does not read (:data:`SCHEMA_VERSIONS`):
``decode`` and ``payload_as`` refuse it with :class:`~shared.errors.PoisonMessage`.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Mapping
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

# The payload versions this code reads, per event type (every type is at version 1 so far). To
# change a payload incompatibly, list the new version here and deploy the consumers before any
# producer writes it: until then a consumer dead-letters it instead of reading it as the old one.
SCHEMA_VERSIONS: Mapping[str, frozenset[int]] = {
    "item.raw": frozenset({1}),
    "item.updated": frozenset({1}),
    "item.classified": frozenset({1}),
    "alert": frozenset({1}),
    "agreement.event": frozenset({1}),
    "source.broken": frozenset({1}),
    "source.recovered": frozenset({1}),
    "subscription.disabled": frozenset({1}),
    "deadletter": frozenset({1}),
}
# A type not listed (a handler refuses types it does not expect on its topic) is read at 1 only.
OTHER_SCHEMA_VERSIONS = frozenset({1})

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
        """Validate the payload as ``model``. A :class:`PoisonMessage` when the payload is
        invalid or its ``schema_version`` is not one this code reads for ``type``."""
        self._check_version()
        try:
            return model.model_validate(self.payload)
        except ValidationError as exc:
            raise PoisonMessage(f"invalid {self.type} payload: {exc.error_count()} errors: {exc}") from exc
        except (ValueError, OverflowError, TypeError) as exc:
            # The call only validates the message's data, so a validator that raised past pydantic
            # (an OverflowError from datetime arithmetic) is this message's fault: dead-lettered,
            # where taking it for a bug would stop the consumer on it at every restart.
            raise PoisonMessage(f"invalid {self.type} payload: {type(exc).__name__}: {exc}") from exc

    def encode(self) -> bytes:
        """Serialise to the wire format."""
        return self.model_dump_json().encode()

    @classmethod
    def decode(cls, data: bytes) -> Envelope:
        """Parse the wire format. Anything malformed, or a ``schema_version`` this code does not
        read for the message's ``type``, is a :class:`PoisonMessage`."""
        try:
            envelope = cls.model_validate_json(data)
        except ValidationError as exc:
            raise PoisonMessage(f"not a Corridor envelope: {exc.errors()[0]['msg']}") from exc
        except (ValueError, OverflowError, TypeError) as exc:  # as in payload_as: the data's fault
            raise PoisonMessage(f"not a Corridor envelope: {type(exc).__name__}: {exc}") from exc
        envelope._check_version()
        return envelope

    def _check_version(self) -> None:
        known = SCHEMA_VERSIONS.get(self.type, OTHER_SCHEMA_VERSIONS)
        if self.schema_version not in known:
            raise PoisonMessage(
                f"unknown schema_version {self.schema_version} of {self.type!r} "
                f"(this consumer reads {', '.join(map(str, sorted(known)))})"
            )


class DeadLetter(BaseModel):
    """Payload of a corridor.deadletter.v1 message: where the message came from and why it failed."""

    topic: str
    key: str | None
    reason: str
    original: str = Field(description="the original message, decoded as UTF-8 with replacement, capped")
    partition: int | None = None
    offset: int | None = None
