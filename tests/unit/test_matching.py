"""The term matcher's word rules, script by script (services/classifier/matching.py)."""

from __future__ import annotations

import pytest

from services.classifier.matching import Term, TermMatcher


def found(terms: list[str], text: str) -> list[str]:
    matcher = TermMatcher(Term.of(t, t) for t in terms)
    return [h.term.payload for h in matcher.hits(text, False)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("the railway opened", ["railway"]),
        ("two railways", ["railway"]),  # an English plural
        ("railwayman", []),  # not a whole word
        ("a new-railway link", ["railway"]),  # a hyphen ends a word
    ],
)
def test_latin_terms_are_whole_words(text: str, expected: list[str]) -> None:
    assert found(["railway"], text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Kazakistan ve Pakistan demiryolları", ["demiryol*"]),  # Turkish: an inflection follows
        ("demiryolu hattı", ["demiryol*"]),
        ("ademiryolu", []),  # a stem still starts a word
        ("współpraca z Kazachstanem", ["Kazachstan*"]),  # Polish instrumental case
    ],
)
def test_a_latin_term_ending_in_a_star_is_a_stem(text: str, expected: list[str]) -> None:
    assert found(["demiryol*", "Kazachstan*"], text) == expected


def test_the_star_is_not_part_of_the_term() -> None:
    term = Term.of("demiryol*", None)
    assert term.term == "demiryol" and term.stem and not term.anywhere
    assert found(["demiryol*"], "demiryol*") == ["demiryol*"]
    assert Term.of("*", None).term == "*"  # a lone star is no stem marker


def test_cyrillic_and_arabic_terms_are_stems() -> None:
    assert found(["нефт"], "нефтяной сектор") == ["нефт"]
    assert found(["нефт"], "бензонефть") == []
    assert found(["پاکستان"], "پاکستانی") == ["پاکستان"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("中国与巴基斯坦签署合作协议", ["巴基斯坦"]),  # Chinese has no spaces between words
        ("巴基斯坦和哈萨克斯坦", ["巴基斯坦", "哈萨克斯坦"]),
        ("哈萨克斯坦铁路", ["哈萨克斯坦", "铁路"]),
    ],
)
def test_han_terms_match_anywhere(text: str, expected: list[str]) -> None:
    assert found(["巴基斯坦", "哈萨克斯坦", "铁路"], text) == expected


def test_acronyms_are_case_exact() -> None:
    assert found(["KTZ"], "KTZ and ktz") == ["KTZ"]


def test_turkish_dotted_capital_i_matches_a_lowercase_term() -> None:
    assert found(["islamabad", "kazakistan"], "İslamabad'da KAZAKİSTAN heyeti") == ["islamabad", "kazakistan"]
    hit = TermMatcher([Term.of("kazakistan", 1)]).hits("İİ Kazakistan", False)[0]
    assert (hit.start, hit.end) == (3, 13)  # offsets still point into the original text


def test_uzbek_apostrophe_letters_match_in_any_typography() -> None:
    for text in ("Qozog'iston", "Qozogʻiston", "Qozog‘iston", "Qozog’iston"):
        assert found(["Qozog'iston"], text) == ["Qozog'iston"], text


def test_devanagari_terms_are_stems_and_vowel_signs_are_inside_words() -> None:
    assert found(["किसान"], "किसानों की आय") == ["किसान"]  # an inflection follows
    assert found(["रक्षा"], "रक्षा सहयोग") == ["रक्षा"]
    assert found(["रक्षा"], "सुरक्षा सहयोग") == []  # सु + रक्षा: a vowel sign is no word break
    assert found(["रेल"], "ऑस्ट्रेलिया") == []
