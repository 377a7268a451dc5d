"""Where each agreement stands: its stage, the support behind it, setbacks, and whether it stalled.

Computed from the registry and the store's agreement activity (linked items counted by stage
and source), with the sources' publishers (country, official):

- A stage is *supported* when two independent publishers report it or one official source does.
  A publisher is a source's host (``www.`` aside): Dawn's home and business feeds, or Kazinform's
  English and Russian ones, are one publisher, not two; a source the store no longer has counts
  by its id. An aggregator's item (a source marked ``aggregator``, or GDELT's) counts for the
  publisher it names (:attr:`~shared.models.RawItem.publisher`), not for the aggregator: Dawn's
  story listed by Google News and Dawn's own feed are one publisher, two stories Google News
  lists from two papers are two. Such an item is official, and has a country, only when
  Corridor polls the named publisher and that source is official or has one. Any other feed's
  named publisher is not believed (one feed could name two papers, or a ministry).
- Another source's copy of a story is a duplicate, not a second item, and not a second
  independent report either; but a copy an *official* source published (a ministry's copy of a
  story a paper ran first) is that source's report: it makes the stage official, dated when the
  copy was seen, and lists the source and its country.
  Every agreement is ``signed`` on its signing date: the registry is the record of that.
- The *current stage* is the most advanced supported stage of progress. A setback is shown beside
  it (``setback``: the latest setback item) when reported after the agreement's last progress,
  and never lowers the stage.
- *Corroboration* of a stage: which sources report it, whether publishers of both countries do,
  whether an official source does.
- *Stalled*: no item beyond ``signed`` for ``stall_days`` (default 90), or no item at all for
  ``silence_days`` (60), counted from the last such item or from the signing. The quiet period's
  start names the stall, so a stall is one event however often it is noticed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from services.classifier.agreements import Agreement, Registry
from shared.models import PROGRESS, Country, Source, Stage, publisher_host, stable_id
from shared.store import AgreementActivity

STALL_DAYS = 90
SILENCE_DAYS = 60


@dataclass
class StageSupport:
    """The items reporting one stage of one agreement."""

    stage: Stage
    items: int = 0
    sources: list[str] = field(default_factory=list)
    publishers: list[str] = field(default_factory=list)
    first_at: datetime | None = None
    last_at: datetime | None = None
    official: bool = False
    countries: list[Country] = field(default_factory=list)
    first_by_publisher: dict[str, datetime] = field(default_factory=dict, repr=False)
    first_official_at: datetime | None = None

    @property
    def supported(self) -> bool:
        return len(self.publishers) >= 2 or self.official

    @property
    def supported_at(self) -> datetime | None:
        """When the support rule was first met: the second publisher's first report, or an
        official source's first, whichever came first (None while it is not met)."""
        firsts = sorted(self.first_by_publisher.values())
        second = firsts[1] if len(firsts) >= 2 else None
        return min(filter(None, (second, self.first_official_at)), default=None)

    @property
    def both_countries(self) -> bool:
        return set(self.countries) == {"PK", "KZ"}


@dataclass
class AgreementState:
    """One agreement as the tracker sees it (see the module docstring)."""

    agreement: Agreement
    stage: Stage
    stage_since: datetime
    supports: dict[str, StageSupport]
    items: int
    sources: int
    last_item_at: datetime | None
    last_progress_at: datetime | None
    setback_at: datetime | None
    days_quiet: int
    stalled: bool
    stall_reason: str | None
    stall_id: str | None
    stalled_since: datetime | None = None  # when the stall's condition began, as the data stand now
    progress_from: datetime | None = None  # the last progress on record, or the signing: "no progress" counts from it

    @property
    def setback(self) -> bool:
        return self.setback_at is not None


def publisher_of(source: Source) -> str:
    """Who publishes what ``source`` lists: its URL's host, without ``www.`` (its id without one)."""
    return publisher_host(source.url) or source.id


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def signing_moment(agreement: Agreement) -> datetime:
    """The start of the signing day (UTC): reports from before it are no follow-through."""
    return _midnight(agreement.signed_on)


def _by_agreement(rows: Sequence[AgreementActivity]) -> dict[str, list[AgreementActivity]]:
    grouped: dict[str, list[AgreementActivity]] = {}
    for row in rows:
        grouped.setdefault(row.agreement_id, []).append(row)
    return grouped


def agreement_states(
    registry: Registry,
    activity: list[AgreementActivity],
    sources: dict[str, Source],
    now: datetime,
    *,
    copies: Sequence[AgreementActivity] = (),
    stall_days: int = STALL_DAYS,
    silence_days: int = SILENCE_DAYS,
) -> list[AgreementState]:
    """The state of every agreement of the registry, in registry order."""
    rows, copied = _by_agreement(activity), _by_agreement(copies)
    return [
        agreement_state(
            a,
            rows.get(a.id, []),
            sources,
            now,
            copies=copied.get(a.id, []),
            stall_days=stall_days,
            silence_days=silence_days,
        )
        for a in registry.agreements
    ]


@dataclass(frozen=True)
class Standing:
    """What Corridor knows of a publisher it polls: official if any of its sources at that host
    is (a ministry's press feed beside its news page), and the country one of them gives."""

    official: bool
    country: Country | None


def _polled_publishers(sources: dict[str, Source]) -> dict[str, Standing]:
    """The publishers Corridor polls itself, by host, with their standing (see :class:`Standing`)."""
    found: dict[str, Standing] = {}
    for source in sorted(sources.values(), key=lambda s: s.id):
        host = publisher_of(source)
        known = found.get(host, Standing(False, None))
        found[host] = Standing(known.official or source.official, known.country or source.country)
    return found


def _official_copies(
    copies: Sequence[AgreementActivity], sources: dict[str, Source], signed_at: datetime
) -> list[tuple[AgreementActivity, Source]]:
    """The copies an official source published of linked items, from the signing on (see the
    module docstring); other sources' copies are no report of their own."""
    found = []
    for copy in copies:
        source = sources.get(copy.source_id)
        if copy.stage is not None and source is not None and source.official and copy.last_at >= signed_at:
            found.append((copy, source))
    return found


def agreement_state(
    agreement: Agreement,
    rows: list[AgreementActivity],
    sources: dict[str, Source],
    now: datetime,
    *,
    copies: Sequence[AgreementActivity] = (),
    stall_days: int = STALL_DAYS,
    silence_days: int = SILENCE_DAYS,
) -> AgreementState:
    """One agreement's state from its activity ``rows`` and the ``copies`` of its items
    (:meth:`~shared.store.Store.agreement_copies`; only official sources' count)."""
    signed_at = signing_moment(agreement)
    # Reports dated before the signing (an archive entry, a GDELT backfill) are no follow-through
    # of it: a row all of whose items came before the signing day counts for nothing.
    rows = [r for r in rows if r.last_at is None or r.last_at >= signed_at]
    supports: dict[str, StageSupport] = {
        "signed": StageSupport("signed", official=True, first_at=signed_at, first_official_at=signed_at)
    }
    polled = _polled_publishers(sources)
    for row in rows:
        if row.stage is None:
            continue
        support = supports.setdefault(row.stage, StageSupport(row.stage))
        support.items += row.items
        source = sources.get(row.source_id)
        if row.source_id not in support.sources:
            support.sources.append(row.source_id)
        # The publisher an entry names is believed of an aggregator only (any feed could name
        # two papers, or a ministry); then that publisher's standing is the row's, not the
        # aggregator's: polled, it carries its own official flag and country; unknown, none.
        named = row.publisher if row.publisher and source is not None and source.lists_others else None
        if named is not None:
            standing = polled.get(named, Standing(False, None))
            official, country = standing.official, standing.country
        else:
            official = source is not None and source.official
            country = source.country if source is not None else None
        publisher = named or (publisher_of(source) if source is not None else row.source_id)
        if publisher not in support.publishers:
            support.publishers.append(publisher)
        # A source's row may hold reports from before the signing too (one before, one after),
        # when the store was not asked for the signing onwards: the stage cannot have been
        # reached before the agreement was signed.
        first_at = max(row.first_at, signed_at) if row.first_at is not None else None
        support.first_at = min(filter(None, (support.first_at, first_at)), default=None)
        if first_at is not None:
            known = support.first_by_publisher.get(publisher)
            support.first_by_publisher[publisher] = min(known, first_at) if known else first_at
        support.official = support.official or official
        if official and first_at is not None:
            support.first_official_at = min(filter(None, (support.first_official_at, first_at)))
        if country and country not in support.countries:
            support.countries.append(country)
        support.last_at = max(filter(None, (support.last_at, row.last_at)), default=None)
    official_copies = _official_copies(copies, sources, signed_at)
    for copy, source in official_copies:
        assert copy.stage is not None  # for mypy: _official_copies keeps staged rows only
        support = supports.setdefault(copy.stage, StageSupport(copy.stage))
        if copy.source_id not in support.sources:
            support.sources.append(copy.source_id)
        publisher = publisher_of(source)
        if publisher not in support.publishers:
            support.publishers.append(publisher)
        seen_at = max(copy.first_at, signed_at)
        known = support.first_by_publisher.get(publisher)
        support.first_by_publisher[publisher] = min(known, seen_at) if known else seen_at
        support.official = True
        support.first_official_at = min(filter(None, (support.first_official_at, seen_at)))
        if source.country and source.country not in support.countries:
            support.countries.append(source.country)
    # One order on every store (rows come in the store's own order): stages by progress, the
    # setback last; sources and publishers by name.
    order = [*PROGRESS, "setback"]
    supports = dict(sorted(supports.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
    for support in supports.values():
        support.sources.sort()
        support.publishers.sort()
        support.countries.sort()
    stage: Stage = "signed"
    for candidate in PROGRESS:
        if candidate in supports and supports[candidate].supported:
            stage = candidate
    dated = [r for r in rows if r.stage is not None]
    last_item = max((r.last_at for r in dated), default=None)
    progress_rows = [r for r in dated if r.stage not in ("signed", "setback")]
    last_progress = max((r.last_at for r in progress_rows), default=None)
    setbacks = [r.last_at for r in dated if r.stage == "setback"]
    setback_at = max(setbacks, default=None)
    if setback_at is not None and last_progress is not None and setback_at < last_progress:
        setback_at = None  # progress reported since: the setback is behind it
    # Since the stage had its support, not since its first report: one publisher's story is
    # not yet the stage the board shows.
    stage_since = supports[stage].supported_at or supports[stage].first_at or signed_at
    quiet_from = max(filter(None, (last_item, signed_at)))
    progress_from = max(filter(None, (last_progress, signed_at)))
    days_quiet = max(0, (now - quiet_from).days)
    stalled, reason, stall_id, stalled_since = False, None, None, None
    no_progress = (now - progress_from).days >= stall_days
    silent = days_quiet >= silence_days
    # One stall period, one id: when both hold, the condition that began first names the period
    # (silence from day 60 is still the same stall when "no progress" also holds at day 90).
    silence_first = quiet_from + timedelta(days=silence_days) <= progress_from + timedelta(days=stall_days)
    if silent and (silence_first or not no_progress):
        stalled, reason = True, f"no news for {days_quiet} days (since {quiet_from:%Y-%m-%d})"
        stall_id = stable_id("stall", agreement.id, "silence", quiet_from.date().isoformat())
        stalled_since = quiet_from + timedelta(days=silence_days)
    elif no_progress:
        stalled, reason = (
            True,
            f"no progress reported for {(now - progress_from).days} days (since {progress_from:%Y-%m-%d})",
        )
        stall_id = stable_id("stall", agreement.id, "progress", progress_from.date().isoformat())
        stalled_since = progress_from + timedelta(days=stall_days)
    return AgreementState(
        agreement=agreement,
        stage=stage,
        stage_since=stage_since,
        supports=supports,
        items=sum(r.items for r in rows),
        sources=len({r.source_id for r in rows} | {c.source_id for c, _ in official_copies}),
        last_item_at=last_item,
        last_progress_at=last_progress,
        setback_at=setback_at,
        days_quiet=days_quiet,
        stalled=stalled,
        stall_reason=reason,
        stall_id=stall_id,
        stalled_since=stalled_since,
        progress_from=progress_from,
    )
