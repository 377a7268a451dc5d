"""Where an agreement stands: support, stage, setbacks, corroboration, stalls."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from services.classifier.agreements import Agreement, SourceRef
from services.classifier.tracker import agreement_state
from shared.models import Source
from shared.store import AgreementActivity

SIGNED = date(2026, 2, 4)
AGREEMENT = Agreement(
    id="railways-mou",
    area="railways",
    title="MoU on railway cooperation",
    signed_on=SIGNED,
    terms={"en": ["railway"]},
    sources=[SourceRef(url="https://example.org/x")],  # type: ignore[arg-type]
)
SOURCES = {
    "dawn": Source(id="dawn", url="https://dawn.example/rss", interval_s=900, country="PK"),
    "kazinform": Source(id="kazinform", url="https://kazinform.example/rss", interval_s=900, country="KZ"),
    "mofa": Source(id="mofa", url="https://mofa.example/press", interval_s=900, country="PK", official=True),
    "blog": Source(id="blog", url="https://blog.example/feed", interval_s=900),
}


def at(days: int) -> datetime:
    return datetime(2026, 2, 4, tzinfo=UTC) + timedelta(days=days)


def row(stage: str, source: str, first: int, last: int | None = None, items: int = 1) -> AgreementActivity:
    return AgreementActivity("railways-mou", stage, source, items, at(first), at(last if last is not None else first))  # type: ignore[arg-type]


def test_a_stage_needs_two_sources_or_an_official_one() -> None:
    one = agreement_state(AGREEMENT, [row("planning", "dawn", 10)], SOURCES, at(20))
    assert one.stage == "signed" and not one.supports["planning"].supported
    two = agreement_state(AGREEMENT, [row("planning", "dawn", 10), row("planning", "kazinform", 12)], SOURCES, at(20))
    # Since the stage had its support (the second publisher, day 12), not since its first report
    # (a review found the board dating the stage from one publisher's story).
    assert two.stage == "planning" and two.stage_since == at(12) and two.supports["planning"].first_at == at(10)
    assert two.supports["planning"].both_countries and not two.supports["planning"].official
    official = agreement_state(AGREEMENT, [row("underway", "mofa", 30)], SOURCES, at(31))
    assert official.stage == "underway" and official.supports["underway"].official
    assert official.stage_since == at(30)
    later_official = agreement_state(
        AGREEMENT, [row("underway", "dawn", 20, 40), row("underway", "mofa", 25)], SOURCES, at(41)
    )
    assert later_official.stage_since == at(25), "an official source's first report is support of its own"
    same_source_twice = agreement_state(AGREEMENT, [row("financed", "blog", 5, 9, items=2)], SOURCES, at(10))
    assert same_source_twice.stage == "signed", "two items of one source are one source"


def test_the_most_advanced_supported_stage_wins_and_a_setback_stands_beside_it() -> None:
    rows = [
        row("planning", "dawn", 10),
        row("planning", "kazinform", 11),
        row("operational", "blog", 40),  # unsupported: does not count
        row("setback", "dawn", 50),
    ]
    state = agreement_state(AGREEMENT, rows, SOURCES, at(55))
    assert state.stage == "planning" and state.setback and state.setback_at == at(50)
    later = agreement_state(AGREEMENT, [*rows, row("underway", "mofa", 60)], SOURCES, at(61))
    assert later.stage == "underway" and not later.setback, "progress reported after the setback"


def test_stalls_after_quiet_periods_named_by_their_start() -> None:
    quiet = agreement_state(AGREEMENT, [], SOURCES, at(59))
    assert not quiet.stalled and quiet.days_quiet == 59
    silent = agreement_state(AGREEMENT, [], SOURCES, at(60))
    assert silent.stalled and "no news for 60 days" in (silent.stall_reason or "")
    # Only news repeating the signing: items keep coming, nothing beyond "signed".
    signing_news = [row("signed", "dawn", 30, 85)]
    assert not agreement_state(AGREEMENT, signing_news, SOURCES, at(89)).stalled, "news, 89 days since signing"
    stalled = agreement_state(AGREEMENT, signing_news, SOURCES, at(95))
    assert stalled.stalled and "no progress reported for 95 days" in (stalled.stall_reason or "")
    again = agreement_state(AGREEMENT, signing_news, SOURCES, at(120))
    assert again.stall_id == stalled.stall_id, "one stall period, one id however often it is checked"
    talks = [*signing_news, row("follow_up_talks", "dawn", 100)]
    assert not agreement_state(AGREEMENT, talks, SOURCES, at(150)).stalled, "talks are beyond signed"
    moved = agreement_state(AGREEMENT, talks, SOURCES, at(195))
    assert moved.stalled and moved.stall_id != stalled.stall_id, "a new quiet period is a new stall"


def test_a_silence_that_turns_into_no_progress_is_one_stall() -> None:
    # One item (a signing report) a few days after the signing, then nothing: "no news" from
    # day 65, and "no progress" also holds from day 90 — still the same quiet period.
    rows = [row("signed", "dawn", 5)]
    silent = agreement_state(AGREEMENT, rows, SOURCES, at(66))
    assert silent.stalled and "no news" in (silent.stall_reason or "")
    both = agreement_state(AGREEMENT, rows, SOURCES, at(100))
    assert both.stalled and both.stall_id == silent.stall_id, "one stall period, one alert"


def test_reports_dated_before_the_signing_are_no_progress() -> None:
    archive = [row("operational", "mofa", -600)]  # an official story of 2024, found by a backfill
    state = agreement_state(AGREEMENT, archive, SOURCES, at(10))
    assert state.stage == "signed" and state.last_progress_at is None
    spans = [row("planning", "mofa", -30, 20)]  # a source that reported before and after
    assert agreement_state(AGREEMENT, spans, SOURCES, at(25)).stage == "planning"


def test_two_feeds_of_one_publisher_are_one_source_of_support() -> None:
    # Dawn's home and business feeds (or Kazinform's English and Russian ones) counted as two
    # independent sources: one publisher's story in two feeds moved a stage (review of 2026-12-04).
    sources = {
        **SOURCES,
        "dawn_business": Source(id="dawn_business", url="https://www.dawn.example/feeds/business", interval_s=900),
        "dawn_home": Source(id="dawn_home", url="https://dawn.example/feeds/home", interval_s=900),
    }
    one = agreement_state(
        AGREEMENT, [row("planning", "dawn_business", 10), row("planning", "dawn_home", 11)], sources, at(20)
    )
    assert one.stage == "signed" and one.supports["planning"].publishers == ["dawn.example"]
    assert one.supports["planning"].sources == ["dawn_business", "dawn_home"], "both feeds still listed"
    two = agreement_state(
        AGREEMENT, [row("planning", "dawn_home", 10), row("planning", "kazinform", 11)], sources, at(20)
    )
    assert two.stage == "planning" and two.supports["planning"].publishers == ["dawn.example", "kazinform.example"]
    gone = agreement_state(
        AGREEMENT, [row("planning", "dawn_home", 10), row("planning", "src_deleted", 11)], sources, at(20)
    )
    assert gone.stage == "planning", "a source the store no longer has counts by its id"


def test_an_aggregators_items_count_for_the_publishers_they_name() -> None:
    # Google News (or GDELT) was one publisher of its own: two papers' stories it listed counted
    # once, and its copy of Dawn's story beside Dawn's own feed counted twice.
    gnews = Source(id="gnews", url="https://news.google.example/rss/search?q=x", interval_s=900, aggregator=True)
    sources = {**SOURCES, "gnews": gnews}

    def listed(publisher: str | None, first: int, source: str = "gnews") -> AgreementActivity:
        return AgreementActivity("railways-mou", "planning", source, 1, at(first), at(first), publisher)

    papers = agreement_state(AGREEMENT, [listed("dawn.example", 10), listed("tribune.example", 11)], sources, at(20))
    assert papers.stage == "planning"
    assert papers.supports["planning"].publishers == ["dawn.example", "tribune.example"]
    assert papers.supports["planning"].sources == ["gnews"]
    assert papers.stage_since == at(11), "supported when the second publisher reported"
    same = agreement_state(AGREEMENT, [listed("dawn.example", 10), row("planning", "dawn", 11)], sources, at(20))
    assert same.stage == "signed" and same.supports["planning"].publishers == ["dawn.example"]
    own = agreement_state(AGREEMENT, [listed(None, 10), row("planning", "dawn", 11)], sources, at(20))
    assert own.stage == "planning", "the aggregator's own items count for its host"
    assert own.supports["planning"].publishers == ["dawn.example", "news.google.example"]
    ministry = agreement_state(AGREEMENT, [listed("mofa.example", 10)], sources, at(20))
    assert ministry.stage == "planning", "the foreign ministry's statement, listed by Google News, is official"
    assert ministry.supports["planning"].official and ministry.supports["planning"].countries == ["PK"]
    assert ministry.stage_since == at(10)
    # Review of 2026-12-05: any feed could name publishers. Only an aggregator (or GDELT) is believed.
    blog = agreement_state(
        AGREEMENT, [listed("dawn.example", 10, "blog"), listed("mofa.example", 11, "blog")], sources, at(20)
    )
    assert blog.stage == "signed" and blog.supports["planning"].publishers == ["blog.example"]
    assert not blog.supports["planning"].official, "a blog naming the ministry is not the ministry"
    gdelt = Source(id="gdelt", url="https://api.gdelt.example/api/v2/doc/doc?query=x", interval_s=900, kind="gdelt")
    found = agreement_state(
        AGREEMENT,
        [listed("dawn.example", 10, "gdelt"), listed("kazinform.example", 11, "gdelt")],
        {**sources, "gdelt": gdelt},
        at(20),
    )
    assert found.stage == "planning" and found.supports["planning"].countries == ["KZ", "PK"]
    # An official aggregator (a ministry's press-review page) listing a paper's story: the paper's.
    digest = gnews.model_copy(update={"official": True, "country": "PK"})
    review = agreement_state(AGREEMENT, [listed("blog.example", 10)], {**sources, "gnews": digest}, at(20))
    assert review.stage == "signed" and not review.supports["planning"].official
    assert review.supports["planning"].countries == [], "the blog has no country"
    # One host, two sources: the ministry's press feed (official, no country given) and its news
    # page (a country): the named host is official and of that country.
    press = Source(id="press", url="https://www.mofa2.example/press", interval_s=900, official=True)
    page = Source(id="page", url="https://mofa2.example/news", interval_s=900, country="KZ")
    both = agreement_state(AGREEMENT, [listed("mofa2.example", 10)], {**sources, "press": press, "page": page}, at(20))
    assert both.stage == "planning" and both.supports["planning"].countries == ["KZ"]


def test_a_stage_is_never_reached_before_the_signing() -> None:
    # One source's row held a report from before the signing and one after: the stage's "since"
    # fell before the agreement existed (review of 2026-12-04).
    # (The watch now asks the store for the signing onwards; a row like this one still comes
    # from a caller that does not.)
    rows = [row("planning", "dawn", -30, 10), row("planning", "mofa", -20, 5)]
    state = agreement_state(AGREEMENT, rows, SOURCES, at(20))
    assert state.stage == "planning" and state.stage_since == at(0)
    assert state.supports["planning"].first_at == at(0)


def test_stages_and_their_sources_come_in_one_order_whatever_the_stores_row_order() -> None:
    # SQLite and MongoDB return the rows in their own orders; the detail's corroboration list
    # followed them (review of 2026-12-05).
    rows = [
        row("setback", "dawn", 30),
        row("underway", "mofa", 20),
        row("follow_up_talks", "kazinform", 5),
        row("follow_up_talks", "dawn", 6),
    ]
    for ordered in (rows, rows[::-1]):
        state = agreement_state(AGREEMENT, ordered, SOURCES, at(31))
        assert list(state.supports) == ["signed", "follow_up_talks", "underway", "setback"]
        assert state.supports["follow_up_talks"].sources == ["dawn", "kazinform"]
        assert state.supports["follow_up_talks"].publishers == ["dawn.example", "kazinform.example"]


def test_an_official_sources_copy_is_its_report_and_other_copies_are_not() -> None:
    # Dawn ran the story first; copies are linked to Dawn's item, not stored as items.
    story = [row("financed", "dawn", 10)]

    def copied(source: str, seen: int) -> AgreementActivity:
        return AgreementActivity("railways-mou", "financed", source, 1, at(seen), at(seen))

    alone = agreement_state(AGREEMENT, story, SOURCES, at(30), copies=[copied("kazinform", 11)])
    assert alone.stage == "signed", "another paper's copy is the same report, not a second one"
    assert alone.supports["financed"].sources == ["dawn"] and alone.sources == 1
    official = agreement_state(AGREEMENT, story, SOURCES, at(30), copies=[copied("mofa", 12)])
    support = official.supports["financed"]
    assert official.stage == "financed" and support.official and support.sources == ["dawn", "mofa"]
    assert official.stage_since == at(12), "dated when the official copy was seen"
    assert support.countries == ["PK"] and support.items == 1 and official.items == 1
    assert official.last_item_at == at(10), "a copy is no new item"
    assert official.sources == 2, "the board counts the official copy's source as the detail lists it"
    early = agreement_state(AGREEMENT, story, SOURCES, at(30), copies=[copied("mofa", -3)])
    assert early.stage == "signed", "a copy seen before the signing is no follow-through"
