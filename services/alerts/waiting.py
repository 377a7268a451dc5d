"""Fresh alerts waiting for a delivery slot of their subscription (ids only, bounded).

When a subscription already has its share of attempts in flight, a new alert's delivery id waits
here, first come first served per subscription, and subscriptions take turns. It is a shortcut,
not the record: the delivery is pending in the store, and the sweep claims it anyway once its
hand-off time passes — so an id dropped for lack of room, or lost with the process, only waits
a little longer.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterator
from typing import Protocol


class Slots(Protocol):
    def has_room(self, key: str | None = None) -> bool: ...


class WaitingAlerts:
    """Delivery ids by subscription, at most ``max_total`` in all."""

    def __init__(self, max_total: int) -> None:
        self._max = max_total
        self._by_subscription: OrderedDict[str, deque[str]] = OrderedDict()
        self._count = 0
        self.dropped = 0

    def __len__(self) -> int:
        return self._count

    def add(self, subscription_id: str, delivery_id: str) -> None:
        if self._count >= self._max:
            self.dropped += 1  # the sweep finds it in the store after its hand-off time
            return
        self._by_subscription.setdefault(subscription_id, deque()).append(delivery_id)
        self._count += 1

    def take(self, slots: Slots) -> Iterator[str]:
        """Yield delivery ids while ``slots`` has room, round robin over the
        subscriptions whose share is not used up; each yielded id leaves the queue."""
        while slots.has_room():
            for subscription_id in list(self._by_subscription):
                if slots.has_room(subscription_id):
                    break
            else:
                return
            queue = self._by_subscription.pop(subscription_id)
            delivery_id = queue.popleft()
            self._count -= 1
            if queue:
                self._by_subscription[subscription_id] = queue  # to the back: subscriptions take turns
            yield delivery_id
