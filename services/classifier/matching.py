"""Finding many terms in a text at once: one Aho-Corasick pass (pyahocorasick), then word rules.

Matching rules, by script of the term:
- Latin: case-insensitive, whole words; an English plural ending (-s, -es) still matches. Short
  all-capital acronyms (AI, APP, KTZ) match only in capitals.
- Cyrillic, Arabic script and Devanagari (Russian, Kazakh, Uzbek, Urdu, Persian, Hindi): the term
  is a stem that must start a word and may be followed by an inflection (нефт → нефть, нефтяной;
  پاکستان → پاکستانی; किसान → किसानों). Combining marks (Devanagari vowel signs, the virama) are
  part of a word: रक्षा does not start inside सुरक्षा.
- A Latin term written with a final ``*`` is a stem the same way, for the inflecting languages
  written in Latin script (Turkish ``demiryol*`` → demiryolu, demiryolları; Polish ``Kazachstan*``
  → Kazachstanu); the ``*`` is not part of the term.
- Chinese and Japanese (Han, kana): written without spaces, so the term matches anywhere.

Shared by the sector classifier and the agreement linker: each gives its terms with a payload
(what the term stands for) and reads back the hits.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

import ahocorasick

from shared.text import is_unspaced_script

SENTENCE_RADIUS = 120
_ENDS = (".", "!", "?", "؟", "۔", "।")
_FOLD = str.maketrans({"İ": "i", "ʻ": "'", "ʼ": "'", "‘": "'", "’": "'"})
P = TypeVar("P")


def is_stem_script(term: str) -> bool:
    """Cyrillic, Arabic script and Devanagari: inflected languages whose terms are stems."""
    return any("\u0400" <= ch <= "\u04ff" or "\u0600" <= ch <= "\u06ff" or "\u0900" <= ch <= "\u097f" for ch in term)


def _in_word(ch: str) -> bool:
    """A letter, digit or combining mark: Devanagari vowel signs and the virama, Arabic
    vowel marks are inside a word, not breaks between words."""
    return ch.isalnum() or unicodedata.category(ch).startswith("M")


def lower(text: str) -> str:
    """Lowercased, keeping every offset: Turkish "İ" becomes a plain "i" (Python lowers it to two
    characters), so "İslamabad" and "KAZAKİSTAN" match their terms; the typographic apostrophes
    Uzbek writes its letters oʻ, gʻ with (ʻ ʼ ‘ ’) become "'", so "Qozogʻiston" matches
    "Qozog'iston"."""
    if not text.isascii():  # news in English: nothing to fold, skip the copy
        text = text.translate(_FOLD)
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered
    # A few other characters change length when lowered; keep offsets aligned with the original.
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


def snippet(text: str, start: int, end: int) -> str:
    """The sentence around ``text[start:end]``: evidence a reader can judge on its own. A sentence
    longer than 2 × SENTENCE_RADIUS characters is cut around the match (… marks a cut)."""
    left = start
    floor = max(0, start - SENTENCE_RADIUS)
    while left > floor and not (
        text[left - 1] in "\n" or (text[left - 1] == " " and text[left - 2 : left - 1] in _ENDS)
    ):
        left -= 1
    right = end
    ceiling = min(len(text), end + SENTENCE_RADIUS)
    while (
        right < ceiling
        and text[right] != "\n"
        and not (text[right] in _ENDS and text[right + 1 : right + 2] in ("", " ", "\n"))
    ):
        right += 1
    if right < len(text) and text[right] in _ENDS:
        right += 1
    cut_left, cut_right = left > 0 and left == floor, right < len(text) and right == ceiling
    return ("…" if cut_left else "") + text[left:right].strip() + ("…" if cut_right else "")


@dataclass(frozen=True)
class Term(Generic[P]):
    """A term to find and what it stands for (``payload``)."""

    term: str
    payload: P
    stem: bool  # may be followed by more letters (Cyrillic, Arabic script, a Latin "…*")
    exact_case: bool  # acronyms
    anywhere: bool = False  # no word boundaries to respect (Han, kana)

    @classmethod
    def of(cls, term: str, payload: P) -> Term[P]:
        """The term as written in a taxonomy or registry: a final ``*`` marks a stem."""
        if len(term) > 1 and term.endswith("*"):
            return cls(term[:-1], payload, True, False, is_unspaced_script(term))
        unspaced = is_unspaced_script(term)
        return cls(term, payload, is_stem_script(term) or unspaced, term.isupper() and len(term) <= 5, unspaced)


@dataclass(frozen=True)
class Hit(Generic[P]):
    term: Term[P]
    start: int
    end: int  # exclusive
    in_title: bool
    text: str

    @property
    def snippet(self) -> str:
        return snippet(self.text, self.start, self.end)


class TermMatcher(Generic[P]):
    """Finds every term of a fixed set in texts; safe to share, holds no per-text state."""

    def __init__(self, terms: Iterable[Term[P]]) -> None:
        keyed: dict[str, list[Term[P]]] = {}
        for term in terms:
            keyed.setdefault(lower(term.term), []).append(term)
        automaton = ahocorasick.Automaton()
        for key, group in keyed.items():
            automaton.add_word(key, (len(key), tuple(group)))
        automaton.make_automaton()
        self._automaton = automaton
        self._empty = not keyed

    def hits(self, text: str, in_title: bool) -> list[Hit[P]]:
        """Every match in ``text`` that passes the word rules, in order of position."""
        if self._empty:
            return []
        lowered = lower(text)
        found: list[Hit[P]] = []
        n = len(text)
        for last, (length, group) in self._automaton.iter(lowered):
            start, end = last - length + 1, last + 1
            at_word_start = start == 0 or not _in_word(lowered[start - 1])
            for term in group:
                if not (at_word_start or term.anywhere):
                    continue
                if not term.stem and end < n and _in_word(lowered[end]):
                    tail = lowered[end : end + 3]
                    plural = (tail[:1] == "s" and not tail[1:2].isalnum()) or (
                        tail[:2] == "es" and not tail[2:3].isalnum()
                    )
                    if term.exact_case or not plural:
                        continue
                if term.exact_case and text[start:end] != term.term:
                    continue
                found.append(Hit(term, start, end, in_title, text))
        return found
