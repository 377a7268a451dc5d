"""The judge: a small linear model that gives the keyword evidence a second opinion.

The keyword pass proposes candidate sectors and keeps the evidence (the matched terms and their
snippets); the judge reads how prominent that evidence is (:mod:`services.classifier.salience`)
and returns the probability that a careful reader would label the item with the sector. That
probability is the sector's score: it lies in [0, 1] and is calibrated on the labelled dev data
(the reliability table is in the judge file and in the README), so ``min_score=0.8`` means "at
least four in five such alerts were right on the dev data".

A sector the keyword rule assigns is kept when its probability reaches ``keep_threshold``; one
it does not assign is added when the probability reaches ``add_threshold``. Both thresholds are
chosen by cross-validation on the dev data when the judge is trained.

The judge is data: ``judge.json`` beside this module, written by ``corridor judge train``
(``make judge``) from the labelled files it names with their SHA-256, and rebuilt the same way
from the same data. It holds one weight per feature and no sector ids, so it also serves an
operator's own taxonomy. Applying it is a dot product: no scikit-learn at run time.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.classifier.salience import FEATURES
from shared.datafiles import load_json_model


class TrainingFile(BaseModel):
    """One labelled file the judge was trained on."""

    model_config = ConfigDict(extra="forbid")

    name: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    items: int = Field(ge=0)
    candidates: int = Field(ge=0)


class ReliabilityBin(BaseModel):
    """Cross-validated predictions in one probability bin: how many, their mean, how many were right."""

    model_config = ConfigDict(extra="forbid")

    low: float
    high: float
    count: int
    mean_predicted: float | None
    observed: float | None


class JudgeModel(BaseModel):
    """The judge file: weights over :data:`FEATURES`, thresholds, and how it was made."""

    model_config = ConfigDict(extra="forbid")

    features: list[str]
    weights: list[float]
    bias: float
    keep_threshold: float = Field(ge=0, le=1)
    add_threshold: float = Field(ge=0, le=1)
    trainer: dict[str, str | float | int]
    trained_on: list[TrainingFile]
    cross_validation: dict[str, float]
    reliability: list[ReliabilityBin]

    @model_validator(mode="after")
    def _shape(self) -> JudgeModel:
        if tuple(self.features) != FEATURES:
            raise ValueError(f"trained on features {self.features}; this Corridor computes {list(FEATURES)}")
        if len(self.weights) != len(self.features):
            raise ValueError("one weight per feature")
        if not all(math.isfinite(w) for w in [*self.weights, self.bias]):
            raise ValueError("weights must be finite")
        return self


class Judge:
    """Applies a :class:`JudgeModel`; safe to share."""

    def __init__(self, model: JudgeModel) -> None:
        self.model = model
        self._weights = list(zip(model.features, model.weights, strict=True))
        decision = [model.weights, model.bias, model.keep_threshold, model.add_threshold]
        digest = hashlib.sha256(json.dumps(decision).encode())
        self.version = digest.hexdigest()[:8]

    def probability(self, features: dict[str, float]) -> float:
        """P(a reader labels the item with the sector | the features of its evidence)."""
        z = self.model.bias + sum(w * features[name] for name, w in self._weights)
        return 1.0 / (1.0 + math.exp(-z)) if z > -500 else 0.0

    def decides(self, probability: float, keyword_assigned: bool) -> bool:
        return probability >= (self.model.keep_threshold if keyword_assigned else self.model.add_threshold)


def load_judge(path: Path | None = None) -> Judge:
    """Load ``path`` or the judge shipped with Corridor; :class:`ConfigError` when invalid."""
    return Judge(load_json_model(JudgeModel, package="services.classifier", filename="judge.json", path=path))
