"""Domain records shared by the services, the bus payloads and the store.

Records are stored as documents as they are (no dotted keys, so every field is a plain MongoDB
path). Every datetime is aware UTC with millisecond precision (see timeutil).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Annotated, Literal, get_args
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from shared.text import is_indic_script, is_unspaced_script, words
from shared.timeutil import to_utc_ms, utcnow

Country = Literal["PK", "KZ"]
# A language as a tag (ISO 639 "en", "kk", with a region or script: "zh-cn"): what the detector
# and the catalogue give; "english" or "zz9" as a filter matched nothing and answered an empty list.
LANGUAGE_TAG = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,4})?$"
# The areas of the agreements (services/classifier/agreements.json assigns each agreement one).
Area = Literal[
    "strategic-partnership",
    "transit-trade",
    "railways",
    "transport-corridor",
    "maritime",
    "customs",
    "petroleum-mining-geosciences",
    "energy",
    "agriculture",
    "health-pharma",
    "textiles-industry",
    "trade-investment",
    "ai-digital",
    "education-science",
    "media",
    "culture-humanitarian-sports",
    "climate-environment",
    "justice-security",
    "aviation",
    "islamic-finance",
]
AREAS: tuple[Area, ...] = get_args(Area)
# Implementation stages, in order of progress; "setback" stands apart (shown beside the stage).
Stage = Literal["signed", "follow_up_talks", "approved", "planning", "financed", "underway", "operational", "setback"]
PROGRESS: tuple[Stage, ...] = (
    "signed",
    "follow_up_talks",
    "approved",
    "planning",
    "financed",
    "underway",
    "operational",
)
Channel = Literal["webhook", "email", "kafka"]
DeliveryStatus = Literal["pending", "queued", "delivered", "failed"]


def stable_id(prefix: str, *parts: str) -> str:
    """A short deterministic id: the same parts always give the same id."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:24]
    return f"{prefix}_{digest}"


def web_link(value: str | None) -> str | None:
    """``value`` if it is an absolute http(s) URL, else None: feed links are shown as ``href`` on
    the dashboard, in RSS/Atom out and in emails, where ``javascript:`` or ``data:`` would run."""
    if value is None:
        return None
    link = value.strip()
    scheme, sep, rest = link.partition(":")
    if not sep or scheme.lower() not in ("http", "https") or not rest.startswith("//"):
        return None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in link):
        return None
    return link


WebLink = Annotated[str | None, AfterValidator(web_link)]

MAX_HOST_CHARS = 253  # the longest DNS name


def publisher_host(url: str | None) -> str | None:
    """Who publishes at ``url``: its host, lowercased, without ``www.`` (Dawn's home and business
    feeds are one publisher); None for no URL, one that is not http(s) or one without a host.

    Pure and total: an unreadable URL (a broken IPv6 literal, a bad port) is None, never an error."""
    link = web_link(url)
    if link is None:
        return None
    try:
        host = urlsplit(link).hostname
    except ValueError:
        return None
    if not host or len(host) > MAX_HOST_CHARS:
        return None
    return host.lower().rstrip(".").removeprefix("www.") or None  # "dawn.com." is dawn.com


# Every stored or published moment: aware UTC, milliseconds (what BSON keeps). A validator on the
# fields that hold one, rather than on every field: validation is on the hot path of every read.
Moment = Annotated[datetime, AfterValidator(to_utc_ms)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore")


SourceKind = Literal["feed", "html", "gdelt"]


class HtmlSelectors(BaseModel):
    """CSS selectors for an HTML list page: ``item`` finds each entry; the others are looked up
    inside it (``link`` defaults to the first ``a[href]``, ``title`` to the link text)."""

    model_config = ConfigDict(extra="forbid")

    item: str = Field(min_length=1, max_length=200)
    link: str | None = Field(default=None, max_length=200)
    title: str | None = Field(default=None, max_length=200)
    date: str | None = Field(default=None, max_length=200)
    summary: str | None = Field(default=None, max_length=200)


class Source(_Record):
    """A polled source (feed, HTML list page or query API) and its health."""

    id: str
    url: str
    name: str | None = None
    kind: SourceKind = "feed"
    language: str | None = None
    selectors: HtmlSelectors | None = None
    note: str | None = None
    interval_s: float
    active: bool = True
    created_at: Moment = Field(default_factory=utcnow)
    broken: bool = False  # a "source broken" event was published and no recovery yet
    last_error_at: Moment | None = None
    etag: str | None = None
    last_modified: str | None = None
    next_check_at: Moment = Field(default_factory=utcnow)
    lease_until: Moment | None = None
    last_fetch_at: Moment | None = None
    last_success_at: Moment | None = None
    last_status: Literal["ok", "not_modified", "error"] | None = None
    consecutive_errors: int = 0
    last_error: str | None = None
    last_error_kind: str | None = None
    country: Country | None = None  # where the publisher is (corroboration: both countries' press)
    official: bool = False  # a government or state body's own channel (one official source suffices)
    # Lists other publishers' stories (Google News): the publisher an entry names is its
    # publisher for the tracker. GDELT sources are so whatever this says (see lists_others).
    aggregator: bool = False

    @property
    def lists_others(self) -> bool:
        """Whether the publisher an entry names is believed: an aggregator, or any GDELT query."""
        return self.aggregator or self.kind == "gdelt"

    items_seen: int = 0  # entries first seen from this source: new stories and copies of others'


class RawItem(_Record):
    """Payload of corridor.items.raw.v1: one normalised entry.

    ``revision`` counts content changes of the same entry (0 = first seen); ``content_hash`` is
    over title and text, so an edited entry is recognised as an update of the same item.
    """

    id: str
    source_id: str
    source_url: str
    url: WebLink = None
    canonical_url: WebLink = None
    title: str = ""
    summary: str = ""
    author: str | None = None
    language: str | None = None
    published_at: Moment | None = None
    fetched_at: Moment
    content_hash: str = ""
    revision: int = 0
    # The entry's own publisher when the source lists other publishers' stories (an aggregator:
    # RSS <source url>, Atom <source>, a GDELT article), as publisher_host gives it; None when
    # the source publishes it itself. The tracker counts independent publishers by it.
    publisher: str | None = Field(default=None, max_length=MAX_HOST_CHARS)

    @property
    def sort_at(self) -> datetime:
        """The time the event is listed under: published time, else fetch time."""
        return self.published_at or self.fetched_at


class SourceHealthEvent(_Record):
    """Payload of corridor.ops.v1 ``source.broken`` / ``source.recovered``."""

    source_id: str
    url: str
    name: str | None = None
    consecutive_errors: int
    last_error: str | None = None
    last_error_kind: str | None = None
    at: Moment


class SubscriptionDisabled(_Record):
    """Payload of corridor.ops.v1 ``subscription.disabled``: a webhook endpoint failed too long."""

    subscription_id: str
    webhook_url: str
    reason: str
    at: Moment


class DuplicateRef(_Record):
    """Another source's copy of a story, linked to the first item instead of published again."""

    id: str  # the duplicate's own item id
    item_id: str  # the first item of the story
    source_id: str
    url: WebLink = None
    title: str = ""
    reason: Literal["canonical_url", "near_duplicate"]
    seen_at: Moment = Field(default_factory=utcnow)


class SectorScore(BaseModel):
    """One sector the item concerns, with its score and the matched terms."""

    id: str
    score: float
    terms: list[str]


LinkVia = Literal["agreement", "area", "sectors"]


class AgreementLink(BaseModel):
    """An agreement the item reports on, with its score, the matched terms, and how it was linked
    (``via``): by the agreement's own terms; by its area's terms (news about the area that names no
    one agreement links the area's lead agreement, the registry's ``lead``); or by the item's
    sectors (the registry's ``from_sectors``, ``terms`` then empty). Only ``agreement`` says that
    the item names this very agreement; the other two say it reports on the agreement's area."""

    id: str
    area: Area
    score: float
    terms: list[str]
    via: LinkVia = "agreement"


class Evidence(BaseModel):
    """One matched term and the snippet around it, for a sector, a country, an agreement or the
    implementation stage the item reports."""

    kind: Literal["sector", "country", "agreement", "stage"]
    label: str
    term: str
    snippet: str


class ClassifiedItem(RawItem):
    """Payload of corridor.items.classified.v1 and the stored event."""

    sectors: list[str] = Field(default_factory=list)
    sector_scores: list[SectorScore] = Field(default_factory=list)
    countries: list[Country] = Field(default_factory=list)
    bilateral: bool = False
    evidence: list[Evidence] = Field(default_factory=list)
    agreements: list[AgreementLink] = Field(default_factory=list)
    stage: Stage | None = None  # what the item reports of its agreements' implementation
    classifier_version: str
    classified_at: Moment = Field(default_factory=utcnow)

    @property
    def top_score(self) -> float:
        """The best sector score (0 for an item in no sector)."""
        return max((s.score for s in self.sector_scores), default=0.0)

    @property
    def week(self) -> str:
        """The Monday (YYYY-MM-DD, UTC) of the ISO week the item is listed under."""
        day = self.sort_at.astimezone(UTC).date()
        return (day - timedelta(days=day.weekday())).isoformat()


AgreementEventKind = Literal["agreement.stage_changed", "agreement.setback", "agreement.stalled"]
AlertKind = Literal["item", "agreement.stage_changed", "agreement.setback", "agreement.stalled"]


class AgreementEvent(_Record):
    """Payload of corridor.agreements.v1: an agreement moved, met a setback, or went quiet.

    ``id`` is fixed by what happened (the agreement, the change, the item or the quiet period),
    so however many replicas notice it, it is one event and one alert per subscription.
    """

    id: str
    kind: AgreementEventKind
    agreement_id: str
    area: Area
    title: str
    before: Stage | None = None
    after: Stage | None = None
    item_id: str | None = None
    detail: str = ""
    evidence: list[Evidence] = Field(default_factory=list)
    at: Moment = Field(default_factory=utcnow)
    published_at: Moment | None = None
    # agreement.stalled: the last progress on record (or the signing) when it was announced, so
    # a later stall is known to be the same one while nothing has moved since.
    progress_at: Moment | None = None


Cadence = Literal["immediate", "hourly", "daily"]


def _item_alerts() -> list[AlertKind]:
    return ["item"]


UNSUBSCRIBED = "unsubscribed"
"""A subscription's ``disabled_reason`` once its recipient unsubscribed: no admin can resume it."""


@lru_cache(maxsize=256)
def _folded_words(title: str, summary: str) -> tuple[str, str]:
    """An item's folded words joined by single spaces with a space at each end, and its plain
    case-folded text: computed once per item for all the subscriptions with keywords the matcher
    checks it against (folding is the costly part)."""
    text = f"{title} {summary}"
    return f" {' '.join(words(text))} ", text.casefold()


def keyword_in(keyword: str, item_text: tuple[str, str]) -> bool:
    """Whether a subscription's keyword (a word or a phrase) occurs in an item (``item_text`` from
    :func:`_folded_words`): where a word starts, case- and accent-insensitive, so "port" is not
    found in "support" nor "oil" in "soil" (a substring test found both), while an inflected or
    longer form still is ("Казахстан" in "Казахстана", "Pakistan" in "Pakistani", "railway" in
    "railways"). A final ``*`` says the same and is accepted. Chinese, Japanese and Indic keywords
    match anywhere, as before."""
    folded, plain = item_text
    if is_unspaced_script(keyword) or is_indic_script(keyword):
        return keyword.rstrip("*").casefold() in plain
    phrase = " ".join(words(keyword))
    return bool(phrase) and f" {phrase}" in folded


class Subscription(_Record):
    """Who wants which alerts, where and how often. Secrets are never returned after creation.

    Filters combine with AND; inside one filter any value matches; an empty filter matches all.
    ``confirmed`` is False for an email address until its owner follows the opt-in link.
    """

    id: str
    channel: Channel
    webhook_url: str | None = None
    email: str | None = None
    owner_email: str | None = None  # told when a failing webhook endpoint is disabled
    secret: str | None = None
    previous_secret: str | None = None  # still signed with until previous_secret_expires_at
    previous_secret_expires_at: Moment | None = None
    sectors: list[str] = Field(default_factory=list)
    countries: list[Country] = Field(default_factory=list)
    bilateral_only: bool = False
    min_score: float | None = None
    keywords: list[str] = Field(default_factory=list)
    sources: list[str] = Field(default_factory=list)
    languages: list[str] = Field(default_factory=list)
    agreements: list[str] = Field(default_factory=list)
    areas: list[Area] = Field(default_factory=list)
    kinds: list[AlertKind] = Field(default_factory=_item_alerts)
    cadence: Cadence = "immediate"
    digest_time: str = "08:00"  # local HH:MM of the daily digest
    timezone: str = "UTC"
    active: bool = True
    confirmed: bool = True
    failing_since: Moment | None = None
    disabled_reason: str | None = None  # UNSUBSCRIBED when the recipient withdrew consent
    created_at: Moment = Field(default_factory=utcnow)

    def matches(self, item: ClassifiedItem) -> bool:
        """True when every filter of an active, confirmed subscription accepts the item.

        An item in no sector never matches a sector filter; ``min_score`` applies to the best
        score among the wanted sectors (or all sectors when none are named). Item alerts go only to
        subscriptions whose ``kinds`` include "item"; ``agreements`` and ``areas`` ask for items
        linked to one of those agreements or areas.
        """
        if not self.active or not self.confirmed:
            return False
        if self.sectors and not set(self.sectors) & set(item.sectors):
            return False
        if self.countries and not set(self.countries) & set(item.countries):
            return False
        if self.bilateral_only and not item.bilateral:
            return False
        if self.min_score is not None:
            wanted = set(self.sectors) or set(item.sectors)
            if max((s.score for s in item.sector_scores if s.id in wanted), default=0.0) < self.min_score:
                return False
        if self.sources and item.source_id not in self.sources:
            return False
        if self.languages and (item.language or "") not in self.languages:
            return False
        if self.keywords:
            text = _folded_words(item.title, item.summary)
            if not any(keyword_in(k, text) for k in self.keywords):
                return False
        if "item" not in self.kinds:
            return False
        if self.agreements and not {a.id for a in item.agreements} & set(self.agreements):
            return False
        return not (self.areas and not {a.area for a in item.agreements} & set(self.areas))

    def wants(self, event: AgreementEvent) -> bool:
        """True when an active, confirmed subscription asks for this kind of agreement event and
        its agreement and area filters accept it (the item filters do not apply to it)."""
        if not self.active or not self.confirmed or event.kind not in self.kinds:
            return False
        if self.agreements and event.agreement_id not in self.agreements:
            return False
        return not (self.areas and event.area not in self.areas)


class Delivery(_Record):
    """One alert for one subscription and one item on one channel; unique on that triple.

    ``queued`` deliveries wait for their digest (``digest_period``); the digest itself is a
    delivery whose ``item_id`` is ``digest:<period>``, attempted and retried like any other.
    """

    id: str
    subscription_id: str
    item_id: str
    channel: Channel
    status: DeliveryStatus = "pending"
    attempts: int = 0
    created_at: Moment = Field(default_factory=utcnow)
    next_attempt_at: Moment = Field(default_factory=utcnow)
    lease_until: Moment | None = None
    last_attempt_at: Moment | None = None
    delivered_at: Moment | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    digest_period: str | None = None

    @staticmethod
    def make_id(subscription_id: str, item_id: str, channel: str) -> str:
        """The delivery id, also the webhook-id: stable across retries and restarts."""
        return stable_id("msg", subscription_id, item_id, channel)


EVENT_ITEM_PREFIX = "agreement-event:"  # a delivery's item_id when it carries an agreement event


class AlertPayload(BaseModel):
    """Payload of corridor.alerts.v1: a delivery to attempt, with the item or the agreement event
    it is about (exactly one of them)."""

    delivery_id: str
    subscription_id: str
    channel: Channel
    item: ClassifiedItem | None = None
    event: AgreementEvent | None = None
