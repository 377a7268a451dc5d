"""Portable full-text search: the same word tokens are stored with each item and taken from a
query, so any store that can match array elements (or run FTS5) can search, without a text index."""

from __future__ import annotations

import re
import unicodedata

MAX_TOKENS = 400
# Characters XML 1.0 forbids (and DEL, a control character to RFC 5545): never in feeds or calendars.
_NOT_TEXT = re.compile(r"[^\t\n\r\x20-\x7e\x80-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
MAX_QUERY_TOKENS = 8
_WORDS = re.compile(r"\w+", re.UNICODE)
# fmt: off
STOPWORDS = frozenset((
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "has", "have", "in", "is", "it", "its", "of",
    "on", "or", "that", "the", "to", "was", "were", "will", "with", "this", "their", "said", "says",
    "и", "в", "во", "на", "с", "по", "к", "о", "от", "для", "что", "это", "как", "а", "но",
))
# fmt: on


def is_unspaced_script(text: str) -> bool:
    """Han or kana: scripts written without spaces between words."""
    return any("\u3040" <= ch <= "\u30ff" or "\u3400" <= ch <= "\u4dbf" or "\u4e00" <= ch <= "\u9fff" for ch in text)


def is_indic_script(text: str) -> bool:
    """Devanagari to Sinhala: scripts whose vowel signs :func:`words` splits words at."""
    return any("\u0900" <= ch <= "\u0dff" for ch in text)


def words(text: str) -> list[str]:
    """Word tokens, case-folded and accent-folded (the one normalisation used for search,
    content hashes and story keys)."""
    folded = unicodedata.normalize("NFKD", text.casefold())
    return _WORDS.findall("".join(c for c in folded if not unicodedata.combining(c)))


def search_tokens(text: str, limit: int = MAX_TOKENS) -> list[str]:
    """Distinct folded words of two or more characters, stopwords dropped, in order of first
    appearance, at most ``limit``."""
    seen: dict[str, None] = {}
    for word in words(text):
        if len(word) >= 2 and word not in STOPWORDS:
            seen.setdefault(word, None)
            if len(seen) >= limit:
                break
    return list(seen)


def text_chars(text: str) -> str:
    """``text`` without the characters XML 1.0 forbids and without DEL: safe in RSS, Atom and
    iCalendar. A forbidden character that is whitespace (vertical tab, form feed, the separators
    U+001C-U+001F) becomes a space, so the words it separated stay apart; the rest are dropped."""
    return _NOT_TEXT.sub(lambda m: " " if m.group().isspace() else "", text)
