"""The dashboard in a real headless Chromium (Debian's package) against a running Corridor with
seeded data: the chart, the events and source health render; screenshots are saved."""

from __future__ import annotations

import asyncio
import base64
import re
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cdp import HEADLESS, Page
from helpers import IN_CI, CorridorProcess

from shared.models import ClassifiedItem, Evidence, SectorScore, Source
from shared.store.sqlite import SQLiteStore

NOW = datetime.now(UTC)
STORIES = [  # title, sectors, countries, the matched term of each sector (in the title)
    (
        "Pakistan and Kazakhstan agree rail corridor via Afghanistan",
        ["transport", "infrastructure"],
        ["PK", "KZ"],
        ["rail corridor", "corridor"],
    ),
    (
        "Kazakh wheat shipments to Karachi rise",
        ["agriculture", "trade_investment"],
        ["PK", "KZ"],
        ["wheat", "shipments"],
    ),
    ("Gwadar port to handle Kazakh transit cargo", ["maritime", "transport"], ["PK", "KZ"], ["Gwadar port", "transit"]),
    (
        "KazMunayGas and OGDCL discuss upstream cooperation",
        ["petroleum", "energy"],
        ["PK", "KZ"],
        ["KazMunayGas", "upstream"],
    ),
    ("Pakistan textile exports to Central Asia grow", ["textiles", "trade_investment"], ["PK"], ["textile", "exports"]),
    ("Kazatomprom uranium output steady", ["mining", "energy"], ["KZ"], ["uranium", "uranium"]),
]


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        message = "Debian's chromium is not installed (deploy/chromium.sh installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


async def seed(path: Path, weeks: int = 10) -> None:
    store = SQLiteStore(path)
    await store.start()
    n = 0
    for week in range(weeks):
        for i, (title, sectors, countries, terms) in enumerate(STORIES):
            if (week + i) % 3 == 0:
                continue
            n += 1
            at = NOW - timedelta(weeks=week, hours=i)
            await store.upsert_item(
                ClassifiedItem(
                    id=f"itm_{n:04d}",
                    source_id="src_ok",
                    source_url="https://www.dawn.com/feeds/business",
                    url=f"https://news.example/{n}",
                    title=f"{title} (week {week})",
                    summary=f"{title}.",
                    published_at=at,
                    fetched_at=at,
                    sectors=sectors,
                    sector_scores=[
                        SectorScore(id=s, score=round(3.5 - j, 1), terms=[s]) for j, s in enumerate(sectors)
                    ],
                    countries=countries,
                    bilateral=len(countries) == 2,  # type: ignore[arg-type]
                    # Both sectors matched in the title: two pieces of evidence, one snippet.
                    evidence=[
                        Evidence(kind="sector", label=s, term=t, snippet=f"…{title}…")
                        for s, t in zip(sectors, terms, strict=True)
                    ],
                    classifier_version="seed",
                )
            )
    await store.insert_source(
        Source(
            id="src_ok",
            url="https://www.dawn.com/feeds/business",
            name="Dawn business",
            interval_s=900,
            last_status="ok",
            last_success_at=NOW,
            next_check_at=NOW + timedelta(days=1),  # not due: the running Corridor must not poll it now
        )
    )
    await store.insert_source(
        Source(
            id="src_bad",
            url="https://mofa.example/press",
            name="MOFA press releases",
            interval_s=900,
            last_status="error",
            consecutive_errors=7,
            last_error="HTTP 503",
            last_error_kind="http_status",
            last_success_at=NOW - timedelta(days=2),
            next_check_at=NOW + timedelta(days=1),
        )
    )
    await store.close()


def render(browser: str, url: str, out: Path, size: str) -> str:
    flags = [
        *HEADLESS,
        f"--user-data-dir={out.parent / ('profile-' + out.stem)}",
        "--virtual-time-budget=10000",
        f"--window-size={size}",
    ]
    subprocess.run([browser, *flags, f"--screenshot={out}", url], check=True, capture_output=True, timeout=120)
    dom = subprocess.run(
        [browser, *flags, "--enable-logging=stderr", "--v=0", "--dump-dom", url],
        check=True,
        capture_output=True,
        timeout=120,
    )
    # The page's Content-Security-Policy blocks nothing it uses (Chromium logs each violation).
    assert "Content Security Policy" not in dom.stderr.decode(), dom.stderr.decode()[-2000:]
    return dom.stdout.decode()


def test_dashboard_renders_chart_events_and_health(tmp_path: Path, artifacts: Path) -> None:
    browser = chromium()
    db = tmp_path / "dash.sqlite3"
    asyncio.run(seed(db))
    corridor = CorridorProcess(
        "all",
        {"CORRIDOR_SQLITE_PATH": str(db), "CORRIDOR_POLL_TICK_S": "60", "CORRIDOR_POLL_INTERVAL_S": "86400"},
        tmp_path / "corridor.log",
    ).start()
    try:
        dom = render(browser, corridor.base + "/", artifacts / "dashboard.png", "1280,1500")
        phone = render(browser, corridor.base + "/", artifacts / "dashboard-phone.png", "390,1600")
    finally:
        corridor.stop()
    assert 'data-ready="ok"' in dom, "every panel loaded its data"
    lines = re.findall(r'<polyline[^>]*data-sector="([a-z_]+)"', dom)
    assert len(lines) >= 6 and "transport" in lines, lines
    assert "Kazakh wheat shipments to Karachi rise (week 0)" in dom
    assert dom.count('class="badge"') >= 10 and "Kazakhstan</span>" in dom
    failing = re.search(r"<tr class=\"failing\">(.{0,160})", dom)
    assert failing and "MOFA press releases" in failing.group(1) and "http_status ×7" in failing.group(1), failing
    assert (artifacts / "dashboard.png").stat().st_size > 10_000
    # Issue 13, item 13: what a first run showed.
    assert 'data-subscription-form="hidden"' in dom, "no key: the subscription form stays hidden"
    events = re.findall(r"<li>(.*?)</li>", re.search(r'<ol id="events".*?</ol>', dom, re.S).group(0), re.S)  # type: ignore[union-attr]
    assert len(events) == 25
    for event in events:
        assert event.count('class="evidence"') == 1, "two sectors matched in one title: one snippet shown"
        assert "<mark>" in event, "the matched term is marked"
        assert "Dawn business" in event and "feeds/business" not in event, "the source's name, not its feed URL"
    assert "<mark>Gwadar port</mark>" in dom
    # Drawn at the width shown (so 11-pixel labels stay 11 pixels), not a fixed 900 scaled down.
    # Headless Chromium lays a DOM dump out at least 500 pixels wide (the screenshot is at 390).
    widths = [int(re.search(r'<svg viewBox="0 0 (\d+) ', d).group(1)) for d in (dom, phone)]  # type: ignore[union-attr]
    assert widths[0] > 1000 and widths[1] <= 500 - 2 * 16, widths
    assert 'data-weeks="11"' in dom, "26 weeks asked, 10 weeks of data: the chart starts a week before the first"


def test_dashboard_with_little_data_fits_the_chart_to_it(tmp_path: Path, artifacts: Path) -> None:
    browser = chromium()
    db = tmp_path / "little.sqlite3"
    asyncio.run(seed(db, weeks=2))
    corridor = CorridorProcess(
        "all",
        {"CORRIDOR_SQLITE_PATH": str(db), "CORRIDOR_POLL_TICK_S": "60", "CORRIDOR_POLL_INTERVAL_S": "86400"},
        tmp_path / "corridor.log",
    ).start()
    try:
        dom = render(browser, corridor.base + "/", artifacts / "dashboard-little.png", "1280,1200")
    finally:
        corridor.stop()
    assert 'data-weeks="4"' in dom, "two weeks of data: four weeks drawn, not 26 mostly flat"
    assert len(re.findall(r"<polyline", dom)) >= 6


STAGE_TERMS = {"planning": "feasibility study", "setback": "was postponed", "follow_up_talks": "talks"}
# The oldest item's link evidence: two terms in one sentence (drawn once), a term that also
# stands inside another word ("port" in "Transport"), and a third sentence (not drawn: two at most).
OLDEST_LINKS = [
    ("KTZ", "KTZ and Pakistan Railways met."),
    ("Pakistan Railways", "KTZ and Pakistan Railways met."),
    ("port", "Transport through the port of Karachi."),
    ("railway", "A third railway sentence."),
]


async def seed_agreements(path: Path) -> None:
    from shared.models import AgreementLink

    store = SQLiteStore(path)
    await store.start()
    for n, (source, stage, days) in enumerate(
        [
            ("src_ok", "planning", 20),
            ("src_kz", "planning", 18),
            ("src_ok", "setback", 3),
            ("src_kz", "follow_up_talks", 25),
        ]
    ):
        links = OLDEST_LINKS if n == 3 else [("KTZ", f"KTZ and Pakistan Railways, report {n}.")]
        at = NOW - timedelta(days=days)
        await store.upsert_item(
            ClassifiedItem(
                id=f"itm_a{n}",
                source_id=source,
                source_url="https://news.example/rss",
                url=f"https://news.example/a{n}",
                title=f"Pakistan Kazakhstan railway report {n} ({stage})",
                published_at=at,
                fetched_at=at,
                countries=["PK", "KZ"],
                bilateral=True,
                agreements=[AgreementLink(id="railways-cooperation-mou", area="railways", score=2.0, terms=["KTZ"])],
                stage=stage,  # type: ignore[arg-type]
                evidence=[
                    *(
                        Evidence(kind="agreement", label="railways-cooperation-mou", term=term, snippet=snippet)
                        for term, snippet in links
                    ),
                    Evidence(
                        kind="stage", label=stage, term=STAGE_TERMS[stage], snippet=f"The line {STAGE_TERMS[stage]}."
                    ),
                ],
                classifier_version="seed",
                publisher="dawn.example" if n == 2 else None,  # the paper the entry names
            )
        )
    for source_id, country in (("src_ok", "PK"), ("src_kz", "KZ")):
        await store.insert_source(
            Source(
                id=source_id,
                url=f"https://{source_id}.example/rss",
                name=f"{source_id} news",
                country=country,  # type: ignore[arg-type]
                interval_s=900,
                next_check_at=NOW + timedelta(days=1),
            )
        )
    await store.close()


def test_agreements_board_shows_stages_flags_and_a_timeline(tmp_path: Path, artifacts: Path) -> None:
    """The Monday-morning page: one row per agreement, its stage as a progress bar, stalled and
    setback rows marked; /#agreement=ID opens that agreement's timeline with its evidence."""
    browser = chromium()
    db = tmp_path / "board.sqlite3"
    asyncio.run(seed_agreements(db))
    corridor = CorridorProcess(
        "all",
        {"CORRIDOR_SQLITE_PATH": str(db), "CORRIDOR_POLL_TICK_S": "60", "CORRIDOR_POLL_INTERVAL_S": "86400"},
        tmp_path / "corridor.log",
    ).start()
    try:
        dom = render(
            browser, corridor.base + "/#agreement=railways-cooperation-mou", artifacts / "board.png", "1280,1800"
        )
        # A malformed link (not percent-decodable) is ignored: the whole page still loads.
        bad_link = render(browser, corridor.base + "/#agreement=%", artifacts / "board-bad-link.png", "1280,1200")
        api = httpx.get(corridor.base + "/api/v1/agreements", timeout=10).json()
    finally:
        corridor.stop()
    assert 'data-ready="ok"' in dom
    board = re.search(r'<table id="board".*?</table>', dom, re.S)
    assert board is not None
    # Every row says what the API says, in its order: the stage, the last progress, days quiet.
    cells = r'<tr class="row[^"]*" data-id="([a-z0-9-]+)">.*?data-stage="([a-z_]+)".*?'
    drawn = re.findall(cells + r"</td><td>([^<]*)</td><td>([^<]*)</td></tr>", board.group(0), re.S)
    assert drawn == [(a["id"], a["stage"], (a["last_progress_at"] or "–")[:10], f"{a['days_quiet']} d") for a in api], (
        "the board's cells are the API's"
    )
    assert any(a["last_progress_at"] for a in api) and len({a["days_quiet"] for a in api}) > 1, "cells that differ"
    rows = re.findall(r'<tr class="row[^"]*" data-id="([a-z0-9-]+)"', board.group(0))
    assert len(rows) == 35 and "railways-cooperation-mou" in rows
    railways = re.search(r'<tr class="row([^"]*)" data-id="railways-cooperation-mou">(.*?)</tr>', board.group(0), re.S)
    assert railways is not None and "setback" in railways.group(1) and 'data-stage="planning"' in railways.group(2)
    assert railways.group(2).count('class="on"') == 4, "signed, talks, approved, planning lit"
    assert board.group(0).count('class="flag stalled"') == 34, "every other agreement is quiet since February"
    detail = re.search(r'<tr class="detail" data-detail="railways-cooperation-mou">(.*?)</tr>', board.group(0), re.S)
    assert detail is not None, "the linked agreement's timeline is open"
    planning = re.search(r"planning: ([^|<]*)", detail.group(1))
    assert planning and "✓ · both countries" in planning.group(1), "two sources, one from each country"
    assert "src_ok news" in planning.group(1) and "src_kz news" in planning.group(1)
    assert detail.group(1).count("<li>") == 4 and "railway report 2 (setback)" in detail.group(1)
    assert "src_ok news (dawn.example)" in detail.group(1), "the timeline names the paper an entry names"
    # Each item says why it is there and why it reports its stage, the matched terms marked.
    lines = re.findall(r'<p class="evidence" data-kind="([a-z]+)">([^<]*)<q>(.*?)</q></p>', detail.group(1))
    assert ("agreement", "linked: ", "<mark>KTZ</mark> and Pakistan Railways, report 2.") in lines, lines
    assert ("stage", "setback: ", "The line <mark>was postponed</mark>.") in lines, lines
    assert [k for k, _, _ in lines] == ["agreement", "stage"] * 3 + ["agreement", "agreement", "stage"], lines
    assert lines[-3:] == [
        ("agreement", "linked: ", "<mark>KTZ</mark> and Pakistan Railways met."),
        ("agreement", "linked: ", "Transport through the <mark>port</mark> of Karachi."),
        ("stage", "follow up talks: ", "The line <mark>talks</mark>."),
    ], "one line per sentence, two at most, the term where the matcher found it, the stage by name"
    assert 'data-ready="ok"' in bad_link and 'class="detail"' not in bad_link
    assert len(re.findall(r'<tr class="row[^"]*" data-id=', bad_link)) == 35


HOSTILE = '"><img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
ADMIN_KEY, READ_KEY = "admin-key-0123456789abcdef", "read-key-0123456789abcdef"


async def seed_review(path: Path) -> None:
    """What the dashboard review of 2026-12-05 drew with: markup in every text an outside party
    chooses, a `javascript:` link, Turkish evidence, and one agreement with 25 linked items."""
    from shared.models import AgreementLink

    store = SQLiteStore(path)
    await store.start()
    railways = [AgreementLink(id="railways-cooperation-mou", area="railways", score=2.0, terms=["KTZ"])]
    for n in range(25):
        at = NOW - timedelta(days=30 - n)
        await store.upsert_item(
            ClassifiedItem(
                id=f"itm_r{n:02d}",
                source_id="src_evil",
                source_url="https://evil.example/rss",
                url=f"https://news.example/r{n}",
                title=f"Railway report {n}",
                published_at=at,
                fetched_at=at,
                countries=["PK", "KZ"],
                bilateral=True,
                agreements=railways,
                stage="follow_up_talks",
                # The newest one's link evidence is markup a feed chose: the timeline draws it as text.
                evidence=[Evidence(kind="agreement", label="railways-cooperation-mou", term="KTZ", snippet=HOSTILE)]
                if n == 24
                else [],
                classifier_version="seed",
            )
        )
    turkish = "İKİ ÜLKE: Kazakistan ve Pakistan demiryolları için anlaştı"
    # Where the matcher found the term: after a Turkish dotted capital ("İslamabad" for
    # "islamabad"), and an acronym in capitals (not "It" or the "it" inside "facilities").
    dotted = "Heyet İslamabad'da görüştü."
    acronym = "It opened new facilities for IT parks."
    for n, (title, url, snippet, term) in enumerate(
        [
            (HOSTILE, "javascript:alert(1)", HOSTILE, "img"),
            (turkish, "https://news.example/tr", turkish, "demiryol"),
            (dotted, "https://news.example/tr2", dotted, "islamabad"),
            (acronym, "https://news.example/it", acronym, "IT"),
        ]
    ):
        await store.upsert_item(
            ClassifiedItem(
                id=f"itm_x{n}",
                source_id="src_evil",
                source_url="https://evil.example/rss",
                url=url,
                title=title,
                published_at=NOW - timedelta(hours=n),
                fetched_at=NOW,
                sectors=["transport"],
                sector_scores=[SectorScore(id="transport", score=0.9, terms=[term])],
                countries=["PK", "KZ"],
                evidence=[Evidence(kind="sector", label="transport", term=term, snippet=snippet)],
                classifier_version="seed",
            )
        )
    await store.insert_source(
        Source(
            id="src_evil",
            url="https://evil.example/rss",
            name=HOSTILE,
            interval_s=900,
            consecutive_errors=2,
            last_error=HOSTILE,
            last_error_kind="http_status",
            next_check_at=NOW + timedelta(days=1),
        )
    )
    await store.close()


def test_the_dashboard_used_by_keyboard_key_and_phone(tmp_path: Path, artifacts: Path) -> None:
    """What the dashboard review of 2026-12-05 found, done as a user would in a real Chromium:
    markup from feeds stays text; the webhook secret stays on screen; board rows open from the
    keyboard; the address opens a timeline on a loaded page; links carry the read key where
    reads need one; the board fits a phone; badge text is readable; a cut timeline says so."""
    browser = chromium()
    db = tmp_path / "review.sqlite3"
    asyncio.run(seed_review(db))
    corridor = CorridorProcess(
        "all",
        {
            "CORRIDOR_SQLITE_PATH": str(db),
            "CORRIDOR_POLL_TICK_S": "60",
            "CORRIDOR_POLL_INTERVAL_S": "86400",
            "CORRIDOR_API_KEY": ADMIN_KEY,
            "CORRIDOR_READ_API_KEYS": READ_KEY,
            "CORRIDOR_PUBLIC_READS": "false",
            "CORRIDOR_ALLOW_PRIVATE_NETWORKS": "127.0.0.0/8",
        },
        tmp_path / "corridor.log",
    ).start()
    try:
        with Page(browser, tmp_path / "profile") as page:
            review_the_page(page, corridor.base, artifacts)
    finally:
        corridor.stop()


def review_the_page(page: Page, base: str, artifacts: Path) -> None:
    """The steps of the test above, on a page of the running Corridor at ``base``."""
    page.goto(base + "/")
    assert page.evaluate("document.body.dataset.ready") == "error", "reads need a key: the page says so"
    # A read key: every panel fills in, and links the page gives out carry it.
    page.evaluate(f"document.getElementById('key').value = '{READ_KEY}'")
    page.evaluate("document.getElementById('keyform').requestSubmit()")
    page.wait_for("document.body.dataset.ready === 'ok' && document.querySelectorAll('#board tr.row').length > 30")
    for link in ("#ics", "#rss"):
        href = page.wait_for(f"[document.querySelector('{link}').href].find((h) => h.includes('key='))")
        assert f"key={READ_KEY}" in href, href
        assert page.evaluate(f"fetch('{href}').then((r) => r.status)") == 200, href
    # Markup from a feed is text everywhere; a javascript: link is never a link.
    assert page.evaluate("window.__pwned") is None
    assert page.evaluate("document.querySelectorAll('main img, main script').length") == 0
    assert HOSTILE in page.evaluate("document.getElementById('events').textContent")
    assert HOSTILE in page.evaluate("document.getElementById('sources').textContent")
    hrefs = page.evaluate("[...document.querySelectorAll('#events a')].map((a) => a.getAttribute('href'))")
    assert not [h for h in hrefs if h.lower().startswith("javascript")], hrefs
    # The matched term is marked where it stands, after a Turkish "İ" too.
    marks = page.evaluate("[...document.querySelectorAll('#events mark')].map((m) => m.textContent)")
    assert "demiryol" in marks, marks
    assert "İslamabad" in marks and "IT" in marks and not {"it", "It"} & set(marks), marks
    # Badge text reads on its colour (WCAG AA, 4.5:1).
    ratios = page.evaluate(
        """[...document.querySelectorAll('.badge')].map((b) => {
          const s = getComputedStyle(b);
          const lum = (c) => { const [r, g, bl] = c.match(/\\d+/g).slice(0, 3).map((v) => {
            v = v / 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
            return 0.2126 * r + 0.7152 * g + 0.0722 * bl; };
          const [a, b2] = [lum(s.color), lum(s.backgroundColor)].sort((x, y) => y - x);
          return (a + 0.05) / (b2 + 0.05); })"""
    )
    assert ratios and min(ratios) >= 4.5, ratios
    # Board rows open from the keyboard: Tab reaches a row's button, Enter opens its timeline.
    page.evaluate("document.getElementById('q').focus()")
    for _ in range(12):
        page.press("Tab")
        if page.evaluate("document.activeElement.matches('#board button.open')"):
            break
    else:
        raise AssertionError("Tab never reached a board row")
    opened = page.evaluate("document.activeElement.closest('tr').dataset.id")
    page.press("Enter")
    page.wait_for(f"!!document.querySelector('tr.detail[data-detail=\"{opened}\"]')")
    assert page.evaluate("document.activeElement.getAttribute('aria-expanded')") == "true"
    # The address opens a timeline on a loaded page; a cut timeline says how much it holds.
    page.evaluate("location.hash = '#agreement=railways-cooperation-mou'")
    more = page.wait_for(
        "document.querySelector('tr.detail[data-detail=\"railways-cooperation-mou\"] [data-more]')?.textContent"
    )
    assert more.startswith("Newest 20 of 25 items"), more
    timeline = "document.querySelector('tr.detail[data-detail=\"railways-cooperation-mou\"]')"
    assert HOSTILE in page.evaluate(f"{timeline}.querySelector('.evidence').textContent")
    assert page.evaluate("window.__pwned") is None
    assert page.evaluate(f"{timeline}.querySelectorAll('img, script').length") == 0
    # The admin key, entered right after the read key again, before either key's subscription
    # list has answered: the read key's late 401 must not make the admin key a "read" key
    # (whose links carry it). Then a webhook subscription's secret stays on screen.
    page.hold("*/api/v1/subscriptions*")
    for key in (READ_KEY, ADMIN_KEY):
        page.evaluate(f"document.getElementById('key').value = '{key}'")
        page.evaluate("document.getElementById('keyform').requestSubmit()")
    page.wait_held(2)
    page.release_one(-1)  # the admin key's answer first
    page.wait_for("!document.getElementById('subform').hidden && state.keyScope === 'admin'")
    lists = "performance.getEntriesByType('resource').filter((e) => e.name.includes('/subscriptions')).length"
    answered = page.evaluate(lists)
    page.release()  # then the read key's, late: a 401 about a key no longer entered
    page.wait_for(f"{lists} > {answered}")
    time.sleep(0.3)  # the late answer has been handled
    assert page.evaluate("state.keyScope") == "admin" and not page.evaluate("document.getElementById('subform').hidden")
    assert not page.evaluate(f"document.documentElement.outerHTML.includes('{ADMIN_KEY}')")
    page.evaluate("document.getElementById('target').value = 'http://127.0.0.1:9/hook'")
    page.evaluate("document.getElementById('subform').requestSubmit()")
    page.wait_for("document.querySelectorAll('#subs li').length === 1")
    time.sleep(0.5)  # anything that would overwrite the message has run by now
    message = page.evaluate("document.getElementById('admin-msg').textContent")
    assert "Signing secret (shown once): whsec_" in message, message
    # The admin key is never put in a link (links go to feed readers, histories, proxy logs).
    page.wait_for("!document.querySelector('#rss').href.includes('key=')")
    assert not page.evaluate(f"document.documentElement.outerHTML.includes('{ADMIN_KEY}')")
    # A slow route holds back only its own panel: the events and the board are drawn while the
    # sources (another service behind the proxy) have not answered.
    page.hold("*/api/v1/sources*")
    page.goto(base + "/", drawn=False)
    page.wait_for("document.querySelectorAll('#events li').length && document.querySelectorAll('#board tr.row').length")
    assert page.paused and page.evaluate("document.querySelectorAll('#sources tbody tr').length") == 0
    page.release()
    page.wait_for("document.querySelectorAll('#sources tbody tr').length > 0 && !!document.body.dataset.ready")
    # A phone: nothing wider than the screen.
    page.viewport(390, 844, mobile=True)
    page.goto(base + "/")
    page.wait_for("document.querySelectorAll('#board tr.row').length > 30")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shot = page.send("Page.captureScreenshot", format="png")
    (artifacts / "dashboard-review-phone.png").write_bytes(base64.b64decode(shot["data"]))
    assert not [p for p in page.problems if "Content Security Policy" in p], page.problems
