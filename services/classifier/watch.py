"""Agreement events: a stage reached, a setback reported, an agreement gone quiet.

After each stored item the classifier asks :meth:`AgreementWatch.after_item` about the item's
agreements: each one's stage is recomputed (:mod:`services.classifier.tracker`) and, when it
differs from the stage recorded in the store, recorded with an atomic swap — of replicas that saw
the same old stage only one wins, and only the winner announces ``agreement.stage_changed``. An
item reporting a setback announces ``agreement.setback`` (one per item).

:meth:`AgreementWatch.run` checks for stalls every ``stall_check_s`` and announces
``agreement.stalled`` once per quiet period. Every event's id is fixed by what happened, and it is
stored (unique) before it is published on corridor.agreements.v1, then marked published; events
left unpublished by a crash are published by the next round. So however many replicas notice
something and however often they restart, it is one event, and one alert per subscription.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

from services.classifier.agreements import Registry
from services.classifier.tracker import AgreementState, agreement_state, agreement_states
from shared.bus import Bus
from shared.envelope import TOPIC_AGREEMENTS, Envelope
from shared.errors import Unavailable
from shared.models import AgreementEvent, ClassifiedItem, Source, stable_id
from shared.outage import OutageLog, sleep_or_stop
from shared.settings import Settings
from shared.store import Store
from shared.timeutil import Clock, utcnow

log = logging.getLogger(__name__)

SOURCES_CACHE_S = 60.0
REPUBLISH_AFTER = timedelta(minutes=1)
MAX_SWAPS = 5  # tries to record a stage while other handlers record the same agreement's
ANNOUNCED_SCAN = 50  # newest events of an agreement read to find its last stage change


class AgreementWatch:
    """See the module docstring."""

    def __init__(
        self, *, store: Store, bus: Bus, registry: Registry, settings: Settings, clock: Clock = utcnow
    ) -> None:
        self._store = store
        self._bus = bus
        self._registry = registry
        self._agreements = registry.by_id()
        self._settings = settings
        self._clock = clock
        self._topic = settings.topic(TOPIC_AGREEMENTS)
        self._sources: dict[str, Source] = {}
        self._missing: set[str] = set()  # sources asked for that the last read did not have
        self._sources_at = float("-inf")

    async def _known_sources(self, needed: set[str] = frozenset()) -> dict[str, Source]:  # type: ignore[assignment]
        """The sources (publishers' country, official), re-read every SOURCES_CACHE_S and when a
        source not read yet reports on an agreement. A source the store no longer has (deleted
        after it reported) is remembered as missing until the next timed re-read: it would
        otherwise make every call read all sources again."""
        unknown = needed - self._sources.keys() - self._missing
        if time.monotonic() - self._sources_at > SOURCES_CACHE_S or unknown:
            self._sources = {s.id: s for s in await self._store.list_sources()}
            self._sources_at = time.monotonic()
            self._missing = needed - self._sources.keys()
        return self._sources

    async def state(self, agreement_id: str) -> AgreementState:
        agreement = self._agreements[agreement_id]
        rows = await self._store.agreement_activity(agreement_id)
        s = self._settings
        return agreement_state(
            agreement,
            rows,
            await self._known_sources({r.source_id for r in rows}),
            self._clock(),
            stall_days=s.stall_days,
            silence_days=s.silence_days,
        )

    async def states(self) -> list[AgreementState]:
        s = self._settings
        rows = await self._store.agreement_activity()
        return agreement_states(
            self._registry,
            rows,
            await self._known_sources({r.source_id for r in rows}),
            self._clock(),
            stall_days=s.stall_days,
            silence_days=s.silence_days,
        )

    async def after_item(self, item: ClassifiedItem) -> None:
        """Announce what this stored item changed for its agreements.

        The stage is computed after the recorded one is read, and recorded with a swap that
        fails if another handler recorded meanwhile (then both are read again): a handler
        holding a result computed from older rows can never set the stage back. The change is
        announced by comparing the recorded stage with the last announced one, under an id fixed
        by that previous announcement: so a change whose announcement a crash or an outage cut
        off (swap done, event not stored) is announced when the agreement's next item comes or
        this one is consumed again, and replicas noticing it at once store one event."""
        for link in item.agreements:
            if link.id not in self._agreements:
                continue  # linked by an older registry: nothing to track
            state = await self._record_stage(link.id)
            if state is None:
                continue
            await self._announce_stage(state, item)
            # Only a setback the board shows (reported after the last progress) is news.
            behind = state.last_progress_at is not None and item.sort_at < state.last_progress_at
            if item.stage == "setback" and state.setback and not behind:
                agreement = state.agreement
                await self._emit(
                    AgreementEvent(
                        id=stable_id("evt", link.id, "setback", item.id),
                        kind="agreement.setback",
                        agreement_id=link.id,
                        area=agreement.area,
                        title=agreement.title,
                        before=state.stage,
                        after=state.stage,
                        item_id=item.id,
                        detail=item.title,
                        evidence=[e for e in item.evidence if e.kind in ("agreement", "stage")],
                    )
                )

    async def _record_stage(self, agreement_id: str) -> AgreementState | None:
        """The agreement's state, its stage recorded; None when other handlers kept winning."""
        for _ in range(MAX_SWAPS):
            recorded = await self._store.get_agreement_stage(agreement_id)
            state = await self.state(agreement_id)
            if recorded == state.stage or await self._store.swap_agreement_stage(agreement_id, recorded, state.stage):
                return state
        log.warning(
            "agreement %s: stage not recorded after %d tries (busy); the next item retries", agreement_id, MAX_SWAPS
        )
        return None

    async def _announce_stage(self, state: AgreementState, item: ClassifiedItem) -> None:
        """Announce the recorded stage if the last announced one differs ("signed" before any:
        every agreement starts there, which is no news)."""
        agreement = state.agreement
        events = await self._store.list_agreement_events(agreement_id=agreement.id, limit=ANNOUNCED_SCAN)
        last = next((e for e in events if e.kind == "agreement.stage_changed"), None)
        before = (last.after if last else None) or "signed"
        if state.stage == before:
            return
        await self._emit(
            AgreementEvent(
                id=stable_id("evt", agreement.id, "stage", before, state.stage, "after", last.id if last else "-"),
                kind="agreement.stage_changed",
                agreement_id=agreement.id,
                area=agreement.area,
                title=agreement.title,
                before=before,
                after=state.stage,
                item_id=item.id,
                detail=f"{item.title} ({item.url or item.source_url})",
                evidence=[e for e in item.evidence if e.kind in ("agreement", "stage")],
            )
        )

    async def check_stalls(self) -> int:
        """Announce every agreement stalled in a quiet period not announced before; how many."""
        announced = 0
        for state in await self.states():
            if state.stalled and state.stall_id and not await self._stall_announced(state):
                agreement = state.agreement
                event = AgreementEvent(
                    id=state.stall_id,
                    kind="agreement.stalled",
                    agreement_id=agreement.id,
                    area=agreement.area,
                    title=agreement.title,
                    before=state.stage,
                    after=state.stage,
                    detail=state.stall_reason or "",
                    at=self._clock(),
                )
                announced += await self._emit(event)
        return announced

    async def _stall_announced(self, state: AgreementState) -> bool:
        """Whether the agreement's last stall alert was about this same stall.

        A stall's id is fixed by the date its quiet period began, and that date moves when items
        dated inside the period arrive late (a feed added today lists February's stories): the
        agreement never stopped being stalled, yet the id changed. The stall is the one announced
        when, as the data stand now, it had already begun when that alert went out."""
        if state.stalled_since is None:
            return False
        events = await self._store.list_agreement_events(agreement_id=state.agreement.id, limit=ANNOUNCED_SCAN)
        last = next((e for e in events if e.kind == "agreement.stalled"), None)
        return last is not None and last.id != state.stall_id and state.stalled_since <= last.at

    async def republish(self) -> int:
        """Publish events a crash left stored but unpublished; how many."""
        stale = await self._store.list_agreement_events(unpublished_before=self._clock() - REPUBLISH_AFTER)
        for event in stale:
            await self._publish(event)
        return len(stale)

    async def _emit(self, event: AgreementEvent) -> bool:
        if not await self._store.insert_agreement_event(event):
            return False  # announced before (by this process or another)
        await self._publish(event)
        log.info("agreement event %s: %s", event.kind, event.id)
        return True

    async def _publish(self, event: AgreementEvent) -> None:
        await self._bus.publish(self._topic, event.agreement_id, Envelope.wrap("agreement.event", event))
        await self._store.mark_agreement_event_published(event.id, self._clock())

    async def run(self, stop: asyncio.Event) -> None:
        """Check for stalls and unpublished events every ``stall_check_s`` until ``stop``. An
        outage (store or broker) skips the round, logged once per state change; a bug raises."""
        outage = OutageLog("agreement checks")
        while not stop.is_set():
            try:
                stalled = await self.check_stalls()
                republished = await self.republish()
                if stalled or republished:
                    log.info("agreements: %d stalls announced, %d events republished", stalled, republished)
                outage.up()
            except Unavailable as exc:
                outage.down(str(exc))
            await sleep_or_stop(self._settings.stall_check_s, stop)
