"""Normalising entries: canonical URLs, content hashes, story keys for near-duplicates, language.

All pure functions except :class:`LanguageDetector`, which holds a loaded model (built once by
the caller and passed down, never at import).
"""

from __future__ import annotations

import hashlib

from courlan import normalize_url

from shared.text import STOPWORDS, words

MIN_TITLE_WORDS = 5  # shorter titles ("Daily briefing") are too generic to identify a story
LEAD_WORDS = 30  # the opening words of the text that identify a story across sources


def canonical_url(url: str | None) -> str | None:
    """The URL without tracking parameters and fragment, host lowercased; None if unusable."""
    if not url:
        return None
    try:
        return str(normalize_url(url.strip(), strict=True))
    except (ValueError, TypeError):
        return None


def content_hash(title: str, summary: str) -> str:
    """Hash of the normalised title and text: changes when the content does, not on whitespace."""
    normalised = " ".join(words(title)) + "\x1f" + " ".join(words(summary))
    return hashlib.sha256(normalised.encode()).hexdigest()[:32]


def story_keys(title: str, summary: str) -> list[str]:
    """Keys under which two copies of one story meet: the normalised title (stopwords and
    punctuation ignored) and the normalised opening words of the text. Empty when both are too
    short to identify a story."""
    keys = []
    title_words = [w for w in words(title) if w not in STOPWORDS]
    if len(title_words) >= MIN_TITLE_WORDS:
        keys.append("title:" + hashlib.sha256(" ".join(title_words).encode()).hexdigest()[:24])
    lead = words(summary)[:LEAD_WORDS]
    if len(lead) == LEAD_WORDS:
        keys.append("lead:" + hashlib.sha256(" ".join(lead).encode()).hexdigest()[:24])
    return keys


class LanguageDetector:
    """ISO 639-1 language of a text (py3langid), restricted to languages this mission meets."""

    LANGUAGES = (
        "en",
        "ru",
        "kk",
        "ur",
        "uz",
        "hi",
        "zh",
        "ar",
        "fa",
        "tr",
        "ky",
        "tg",
        "ps",
        "de",
        "it",
        "pl",
        "fr",
        "es",
    )
    MIN_CHARS = 20

    def __init__(self) -> None:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        self._identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        self._identifier.set_languages(list(self.LANGUAGES))

    def detect(self, text: str) -> str | None:
        """The most likely language, or None when the text is too short to tell."""
        text = text.strip()
        if len(text) < self.MIN_CHARS:
            return None
        language, _ = self._identifier.classify(text[:2000])
        return str(language)
