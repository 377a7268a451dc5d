"""The per-day Bloom filter of words that lets a search skip days (shared/store/mongo_events.py)."""

from __future__ import annotations

import random
import string

from shared.store.mongo_events import WordFilter


def test_no_word_that_is_in_is_ever_missed_and_few_that_are_not_pass() -> None:
    rng = random.Random(1)
    words = {"".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 10))) for _ in range(6000)}
    words |= {"порт", "گوادر", "темір"}  # non-ASCII words are hashed from their UTF-8 bytes
    wf = WordFilter.loads(WordFilter.of(words).dumps())  # as stored and read back
    assert all(wf.may_contain(w) for w in words)
    others = {"".join(rng.choices(string.ascii_lowercase, k=12)) for _ in range(20000)} - words
    false_positive = sum(wf.may_contain(w) for w in others) / len(others)
    assert false_positive < 0.04, false_positive  # ~10 bits per word, 3 probes: about 2 %


def test_an_empty_day_contains_nothing() -> None:
    assert not WordFilter.of([]).may_contain("rail")
