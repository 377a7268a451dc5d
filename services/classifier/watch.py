"""Agreement events: a stage reached, a setback reported, an agreement gone quiet.

After each stored item the classifier asks :meth:`AgreementWatch.after_item` about the item's
agreements: each one's stage is recomputed (:mod:`services.classifier.tracker`) and, when it
differs from the stage recorded in the store, recorded with an atomic swap, so a handler holding
a stale result never sets it back. Then the *recorded* stage is announced
(``agreement.stage_changed``) if it differs from the last announced one. Announcements form a
chain: each one's id is fixed by the one before it, so one announcement has at most one successor
(of handlers racing to announce, one inserts, the others read again) and the last one is found by
following the chain, not by time (replicas' clocks differ) nor by a scan of recent events (a run
of setbacks hid it). An item reporting a setback announces ``agreement.setback`` (one per item).

:meth:`AgreementWatch.run` does, every ``stall_check_s``: a reconciliation (an agreement whose
stage moved without an item of its own, after ``corridor reclassify``, a corrected item, a source
made official or a registry edit, is recorded and announced), the stall check (``agreement.stalled``
once per stall), and the republication of events a crash left unpublished. Every event is stored
(unique id) before it is published on corridor.agreements.v1, then marked published. So however
many replicas notice something and however often they restart, it is one event, and one alert per
subscription.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from datetime import datetime, timedelta

from services.classifier.agreements import Agreement, Registry
from services.classifier.tracker import AgreementState, agreement_state, agreement_states, signing_moment
from shared.bus import Bus
from shared.envelope import TOPIC_AGREEMENTS, Envelope
from shared.errors import Unavailable
from shared.models import PROGRESS, AgreementEvent, ClassifiedItem, Source, Stage, stable_id
from shared.outage import OutageLog, sleep_or_stop
from shared.settings import Settings
from shared.store import AgreementActivity, Store
from shared.timeutil import Clock, utcnow

log = logging.getLogger(__name__)


def _official(sources: dict[str, Source]) -> list[str]:
    """The ids of the official sources: the only ones whose copies count (tracker)."""
    return sorted(s.id for s in sources.values() if s.official)


def _progress(stage: Stage) -> int:
    return PROGRESS.index(stage) if stage in PROGRESS else -1


SOURCES_CACHE_S = 60.0
REPUBLISH_AFTER = timedelta(minutes=1)
MAX_SWAPS = 5  # tries to record (or announce) a stage while other handlers do the same agreement's
NO_LEGACY_TTL_S = 600.0  # how long "no announcement from before the chain" is believed
HISTORY_SCAN = 1000  # newest events of an agreement read for its last stall alert, or its last
# stage announcement made before announcements were chained
MAX_CHAIN = 10_000  # announcements followed at most (a bound, far above any agreement's history)
STAGE_CHANGED = "agreement.stage_changed"


class AgreementWatch:
    """See the module docstring."""

    def __init__(
        self, *, store: Store, bus: Bus, registry: Registry, settings: Settings, clock: Clock = utcnow
    ) -> None:
        self._store = store
        self._bus = bus
        self._registry = registry
        self._agreements = registry.by_id()
        self._by_signing: dict[datetime, set[str]] = {}  # agreement ids by their signing moment
        for a in registry.agreements:
            self._by_signing.setdefault(signing_moment(a), set()).add(a.id)
        self._settings = settings
        self._clock = clock
        self._topic = settings.topic(TOPIC_AGREEMENTS)
        self._sources: dict[str, Source] = {}
        self._missing: set[str] = set()  # sources asked for that the last read did not have
        self._sources_at = float("-inf")
        self._heads: dict[str, AgreementEvent] = {}  # the last stage announcement seen, per agreement
        self._legacy: set[str] = set()  # announcements made before the chain, found by a scan
        self._no_legacy: dict[str, float] = {}  # agreements found to have none, until (monotonic)

    async def _known_sources(self, needed: set[str] = frozenset(), *, fresh: bool = False) -> dict[str, Source]:  # type: ignore[assignment]
        """The sources (publishers' country, official), re-read every SOURCES_CACHE_S, when a
        source not read yet reports on an agreement, and when ``fresh`` (the board and the
        reconciliation: a source just made official may count only through its copies, which
        name no source to ask for). A source the store no longer has (deleted after it reported)
        is remembered as missing until the next timed re-read: it would otherwise make every call
        read all sources again."""
        unknown = needed - self._sources.keys() - self._missing
        if fresh or time.monotonic() - self._sources_at > SOURCES_CACHE_S or unknown:
            self._sources = {s.id: s for s in await self._store.list_sources()}
            self._sources_at = time.monotonic()
            self._missing = needed - self._sources.keys()
        return self._sources

    async def state(self, agreement_id: str, *, sources: dict[str, Source] | None = None) -> AgreementState:
        """One agreement's state; ``sources`` (read fresh by a caller that shows them beside it)
        instead of the cached ones, so the answer does not contradict itself."""
        agreement = self._agreements[agreement_id]
        since = signing_moment(agreement)
        rows = await self._store.agreement_activity(agreement_id, since=since)
        known = sources if sources is not None else await self._known_sources({r.source_id for r in rows})
        copies = await self._store.agreement_copies(_official(known), agreement_id, since=since)
        s = self._settings
        return agreement_state(
            agreement,
            rows,
            known,
            self._clock(),
            copies=copies,
            stall_days=s.stall_days,
            silence_days=s.silence_days,
        )

    async def states(self) -> list[AgreementState]:
        s = self._settings
        # Items from before an agreement's signing are no follow-through of it: the store counts
        # from the signing, one read per signing date (the February documents share one).
        rows: list[AgreementActivity] = []
        for moment, ids in self._by_signing.items():
            rows += [r for r in await self._store.agreement_activity(since=moment) if r.agreement_id in ids]
        known = await self._known_sources({r.source_id for r in rows}, fresh=True)
        # Only official sources' copies count (tracker): read from their copies, per signing date.
        copies: list[AgreementActivity] = []
        if official := _official(known):
            for moment, ids in self._by_signing.items():
                copies += [
                    r for r in await self._store.agreement_copies(official, since=moment) if r.agreement_id in ids
                ]
        return agreement_states(
            self._registry,
            rows,
            known,
            self._clock(),
            copies=copies,
            stall_days=s.stall_days,
            silence_days=s.silence_days,
        )

    async def after_item(self, item: ClassifiedItem, *, dropped: Iterable[str] = ()) -> None:
        """Announce what this stored item changed for its agreements, and for the ones an update
        of it no longer links (``dropped``: their stages are recomputed without it).

        The stage is computed after the recorded one is read, and recorded with a swap that
        fails if another handler recorded meanwhile (then both are read again). The recorded
        stage is then announced against the last announcement (see the module docstring): a
        change whose announcement a crash or an outage cut off (swap done, event not stored) is
        announced when the agreement's next item comes, this one is consumed again, or the next
        reconciliation runs."""
        for agreement_id in dropped:
            if agreement_id in self._agreements:
                await self._record_stage(agreement_id)
                await self._announce_stage(self._agreements[agreement_id], None)
        for link in item.agreements:
            if link.id not in self._agreements:
                continue  # linked by an older registry: nothing to track
            state = await self._record_stage(link.id)
            await self._announce_stage(state.agreement, item)
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

    async def _record_stage(self, agreement_id: str) -> AgreementState:
        """The agreement's state, its stage recorded unless other handlers kept recording (they
        announce what they record; the state is still this item's to judge a setback by)."""
        for _ in range(MAX_SWAPS):
            recorded = await self._store.get_agreement_stage(agreement_id)
            state = await self.state(agreement_id)
            if recorded == state.stage or await self._store.swap_agreement_stage(agreement_id, recorded, state.stage):
                return state
        log.warning(
            "agreement %s: stage not recorded after %d tries (busy); the next item retries", agreement_id, MAX_SWAPS
        )
        return state

    def _next_announcement_id(self, agreement_id: str, last: AgreementEvent | None) -> str:
        """The id the announcement after ``last`` must have. The chain starts at a fixed id,
        also after an announcement made before the chain (``_legacy``): every walk can then
        begin at the start, and setbacks can never hide where the chain is."""
        after = "-" if last is None or last.id in self._legacy else last.id
        return stable_id("evt", agreement_id, "stage-after", after)

    async def _last_announcement(self, agreement_id: str) -> AgreementEvent | None:
        """The agreement's last stage announcement: the end of its chain, walked from the one
        seen last or from its start. Before the chain starts, the last announcement made before
        chaining (older ids) is looked for among the agreement's newest events."""
        start = self._next_announcement_id(agreement_id, None)
        head = self._heads.get(agreement_id) or await self._store.get_agreement_event(start)
        if head is None:
            if self._no_legacy.get(agreement_id, 0.0) > time.monotonic():
                return None
            events = await self._store.list_agreement_events(agreement_id=agreement_id, limit=HISTORY_SCAN)
            head = next((e for e in events if e.kind == STAGE_CHANGED), None)
            if head is None:
                # For a while only: an old replica still running in an upgrade (the README says
                # to stop them first) could make one.
                self._no_legacy[agreement_id] = time.monotonic() + NO_LEGACY_TTL_S
                return None
            # The chain may have started while the scan ran: then its start is the head (the
            # scan may have met it, or its successor), never an older announcement.
            head = await self._store.get_agreement_event(start) or head
            if head.id != start:
                self._legacy.add(head.id)
        seen = {head.id}
        for _ in range(MAX_CHAIN):
            following = await self._store.get_agreement_event(self._next_announcement_id(agreement_id, head))
            if following is None or following.id in seen:
                break
            seen.add(following.id)
            head = following
        self._heads[agreement_id] = head
        return head

    async def _announce_stage(self, agreement: Agreement, item: ClassifiedItem | None) -> None:
        """Announce the recorded stage if the last announced one differs ("signed" before any:
        every agreement starts there, which is no news). The event names ``item`` (and carries
        its evidence) only when the item reports the stage announced: a stage recomputed because
        support went away, or reached through a source made official, is no item's news."""
        if await self._store.get_agreement_stage(agreement.id) is None:
            return  # nothing recorded yet (and a recorded stage is never unrecorded): nothing to say
        rechecked = False
        for _ in range(MAX_SWAPS):
            # The chain first, the recorded stage after it: what is recorded is then at least as
            # new as what the last announcement announced (read the other way round, a handler
            # holding an older recorded stage announced it after a newer one: backwards).
            last = await self._last_announcement(agreement.id)
            recorded = await self._store.get_agreement_stage(agreement.id) or "signed"
            before = (last.after if last else None) or "signed"
            if recorded == before:
                return
            if last is None and not rechecked and self._no_legacy.pop(agreement.id, None) is not None:
                rechecked = True
                continue  # about to start the chain: look for an older announcement again first
            reported = item is not None and item.stage == recorded
            event = AgreementEvent(
                id=self._next_announcement_id(agreement.id, last),
                kind=STAGE_CHANGED,
                agreement_id=agreement.id,
                area=agreement.area,
                title=agreement.title,
                before=before,
                after=recorded,
                item_id=item.id if item is not None and reported else None,
                detail=(
                    f"{item.title} ({item.url or item.source_url})"
                    if item is not None and reported
                    else f"recomputed from the reports on record: {before} is no longer supported"
                    if _progress(recorded) < _progress(before)
                    else f"recomputed from the reports on record: {recorded} is supported"
                ),
                evidence=[e for e in item.evidence if e.kind in ("agreement", "stage")] if item and reported else [],
            )
            if await self._emit(event):
                self._heads[agreement.id] = event
                return
            # Another handler announced first (or this event was stored before): read again.
        log.warning("agreement %s: stage not announced after %d tries (busy)", agreement.id, MAX_SWAPS)

    async def reconcile(self, states: list[AgreementState] | None = None) -> int:
        """Record and announce every agreement whose stage moved without an item of its own (see
        the module docstring); how many stages were recorded."""
        moved = 0
        self._no_legacy.clear()  # each round looks again (an old replica may still have announced)
        for state in states if states is not None else await self.states():
            recorded = await self._store.get_agreement_stage(state.agreement.id)
            if recorded != state.stage and not (recorded is None and state.stage == "signed"):
                now = await self._record_stage(state.agreement.id)
                moved += now.stage != recorded
            # Also when nothing moved now: a change whose announcement a crash cut off (swap
            # done, event not stored) is announced here, not at the agreement's next item.
            await self._announce_stage(state.agreement, None)
        return moved

    async def check_stalls(self, states: list[AgreementState] | None = None) -> int:
        """Announce every agreement stalled in a quiet period not announced before; how many."""
        announced = 0
        for state in states if states is not None else await self.states():
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
                    progress_at=state.progress_from,
                )
                announced += await self._emit(event)
        return announced

    async def _stall_announced(self, state: AgreementState) -> bool:
        """Whether the agreement's last stall alert was about this same stall.

        A stall's id is fixed by the date its quiet period began and by its kind, and both move
        while the agreement stays as stalled as it was: items dated inside the period arrive late
        (a feed added today lists February's stories), or a story that is no progress (a re-told
        signing, a setback) ends "no news" while "no progress" already holds. The stall is the one
        announced when, as the data stand now, it had already begun when that alert went out, or
        when no progress has been reported since that alert: nothing moved."""
        if state.stalled_since is None:
            return False
        events = await self._store.list_agreement_events(agreement_id=state.agreement.id, limit=HISTORY_SCAN)
        last = next((e for e in events if e.kind == "agreement.stalled"), None)
        if last is None or last.id == state.stall_id:
            return False  # the insert of the same id decides
        # Progress counts by what is on record, not by its date: a report published before the
        # alert but fetched after it still ends that stall (alerts before progress_at was kept
        # are judged by the first rule alone).
        unmoved = last.progress_at is not None and last.progress_at == state.progress_from
        return state.stalled_since <= last.at or unmoved

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
                states = await self.states()
                moved = await self.reconcile(states)
                stalled = await self.check_stalls(states)
                republished = await self.republish()
                if moved or stalled or republished:
                    log.info(
                        "agreements: %d stages reconciled, %d stalls announced, %d events republished",
                        moved,
                        stalled,
                        republished,
                    )
                outage.up()
            except Unavailable as exc:
                outage.down(str(exc))
            await sleep_or_stop(self._settings.stall_check_s, stop)
