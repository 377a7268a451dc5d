"""The judge: a learned second opinion on the keyword evidence.

The keyword pass proposes candidate sectors (any sector with a core term) and keeps the evidence
(matched terms and their snippets). For each candidate the judge returns the probability that a
careful reader would label the item with that sector, from two kinds of input:

- the salience of the sector's evidence (:mod:`services.classifier.salience`: title, lead, share of
  sentences, next to a country, against the other candidates), and
- the item's words: a bag of lowercase words, adjacent word pairs ("minister for", "to ship") and
  five-character stems, each with a learned weight per sector (a linear model over binary
  features, like TF-IDF + logistic regression without the IDF). Pairs let the model tell a verb
  or a title of office from the noun the keyword pass matched; stems pool inflected forms.

One logistic model per sector; sectors the training data did not cover (an operator's own) use
the ``default`` model, which reads salience only. The probability is the sector's score: it lies in
[0, 1] and is calibrated on out-of-fold predictions (the reliability table is in the judge file
and the README), so ``min_score=0.8`` means "on the labelled data, at least four in five such
sectors were right".

The raw probability is calibrated per group (Platt scaling, see :class:`Thresholds`): the word
weights are learned mostly from the large Reuters corpus and are over-confident on our own news
without it. A sector is assigned when its probability reaches a threshold: ``keep`` for sectors the keyword
rule assigns, ``add`` for the other candidates, each for items about Pakistan or Kazakhstan
(``focus``) and for the rest (``other``), chosen by cross-validation when the judge is trained.
The judge never assigns a sector without keyword evidence, so every sector still says why.

The judge is data: ``judge.json`` beside this module, written by ``corridor judge train``
(``make judge``) from labelled files it names with their SHA-256, and rebuilt the same way from
the same data. Applying it is a few dictionary lookups: no scikit-learn at run time.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from itertools import pairwise
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.classifier.salience import FEATURES
from shared.datafiles import load_json_model

_WORD = re.compile(r"\b\w\w+\b")


STEM_CHARS = 5  # out of fold, Reuters 0.856 -> 0.862 with 5-character stems (4: 0.858, 6: 0.859)


def words(text: str) -> set[str]:
    """The judge's tokenizer (training and run time): lowercase words of two or more characters;
    each pair of adjacent words joined by a space; and the first STEM_CHARS characters of each
    longer word followed by ``*`` — a crude stem ("shipping", "shipped", "shipments" → ``shipp*``;
    "нефтяной", "нефтью" → ``нефтя*``, ``нефть*``) for the inflected languages and English
    alike. A word never holds a space or ``*``, so pairs and stems cannot collide with words."""
    found = _WORD.findall(text.lower())
    return {
        *found,
        *(f"{a} {b}" for a, b in pairwise(found)),
        *(f"{w[:STEM_CHARS]}*" for w in found if len(w) > STEM_CHARS),
    }


class TrainingFile(BaseModel):
    """One labelled file the judge was trained on."""

    model_config = ConfigDict(extra="forbid")

    name: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    items: int = Field(ge=0)
    candidates: int = Field(ge=0)


class ReliabilityBin(BaseModel):
    """Out-of-fold predictions in one probability bin: how many, their mean, the share that was right."""

    model_config = ConfigDict(extra="forbid")

    low: float
    high: float
    count: int
    mean_predicted: float | None
    observed: float | None


class Thresholds(BaseModel):
    """One group's decision: Platt scaling of the raw probability (``scale`` × logit + ``shift``,
    fit on out-of-fold predictions of the group), then the two thresholds on the result."""

    model_config = ConfigDict(extra="forbid")

    scale: float = 1.0
    shift: float = 0.0
    keep: float = Field(ge=0, le=1)
    add: float = Field(ge=0, le=1)

    def calibrate(self, raw: float) -> float:
        return _sigmoid(self.scale * _logit(raw) + self.shift)

    def decides(self, probability: float, keyword_assigned: bool) -> bool:
        return probability >= (self.keep if keyword_assigned else self.add)


class SectorModel(BaseModel):
    """A logistic model: bias, one weight per salience feature, sparse word weights."""

    model_config = ConfigDict(extra="forbid")

    bias: float
    features: list[float]
    words: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _finite(self) -> SectorModel:
        if len(self.features) != len(FEATURES):
            raise ValueError(f"needs {len(FEATURES)} feature weights, has {len(self.features)}")
        if not all(math.isfinite(w) for w in [self.bias, *self.features, *self.words.values()]):
            raise ValueError("weights must be finite")
        return self


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(min(z, 500.0), -500.0)))


def _logit(p: float) -> float:
    p = min(max(p, 1e-9), 1 - 1e-9)
    return math.log(p / (1 - p))


def sector_probability(m: SectorModel, features: dict[str, float], tokens: set[str]) -> float:
    """The logistic model ``m`` applied to one candidate, before calibration (the trainer uses it too)."""
    z = m.bias + sum(w * features[name] for name, w in zip(FEATURES, m.features, strict=True))
    if m.words:
        z += sum(m.words.get(t, 0.0) for t in tokens)
    return _sigmoid(z)


class JudgeModel(BaseModel):
    """The judge file: its models, thresholds, and how it was made."""

    model_config = ConfigDict(extra="forbid")

    features: list[str]
    sectors: dict[str, SectorModel]
    default: SectorModel
    focus: Thresholds
    other: Thresholds
    trainer: dict[str, str | float | int]
    trained_on: list[TrainingFile]
    cross_validation: dict[str, float]
    reliability: dict[str, list[ReliabilityBin]]  # per training file (stem) and "all"

    @model_validator(mode="after")
    def _features(self) -> JudgeModel:
        if tuple(self.features) != FEATURES:
            raise ValueError(f"trained on features {self.features}; this Corridor computes {list(FEATURES)}")
        return self


class Judge:
    """Applies a :class:`JudgeModel`; safe to share, holds no per-item state."""

    def __init__(self, model: JudgeModel) -> None:
        self.model = model
        decision = model.model_dump(include={"sectors", "default", "focus", "other"})
        self.version = hashlib.sha256(json.dumps(decision, sort_keys=True).encode()).hexdigest()[:8]

    def probability(self, sector: str, features: dict[str, float], tokens: set[str], focus: bool) -> float:
        """P(a reader labels the item with ``sector`` | its evidence's salience and the item's
        words), calibrated for its group (``focus``: the item is about Pakistan or Kazakhstan)."""
        raw = sector_probability(self.model.sectors.get(sector, self.model.default), features, tokens)
        return (self.model.focus if focus else self.model.other).calibrate(raw)

    def decides(self, probability: float, keyword_assigned: bool, focus: bool) -> bool:
        return (self.model.focus if focus else self.model.other).decides(probability, keyword_assigned)


def load_judge(path: Path | None = None) -> Judge:
    """Load ``path`` or the judge shipped with Corridor; :class:`ConfigError` when invalid."""
    return Judge(load_json_model(JudgeModel, package="services.classifier", filename="judge.json", path=path))
