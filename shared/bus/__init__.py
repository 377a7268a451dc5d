"""The message bus: one interface (:class:`Bus`), a Kafka adapter and an in-process adapter."""

from shared.bus.base import Bus, Handler, dead_letter_for

__all__ = ["Bus", "Handler", "dead_letter_for"]
