"""Portable full-text search: the same word tokens are stored with each item and taken from a
query, so any store that can match array elements (or run FTS5) can search, without a text index."""

from __future__ import annotations

import re
import unicodedata

MAX_TOKENS = 400
MAX_QUERY_TOKENS = 8
_WORDS = re.compile(r"\w+", re.UNICODE)
# fmt: off
STOPWORDS = frozenset((
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "has", "have", "in", "is", "it", "its", "of",
    "on", "or", "that", "the", "to", "was", "were", "will", "with", "this", "their", "said", "says",
    "и", "в", "во", "на", "с", "по", "к", "о", "от", "для", "что", "это", "как", "а", "но",
))
# fmt: on


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
