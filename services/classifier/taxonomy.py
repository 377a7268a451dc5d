"""The taxonomy: sectors with weighted terms and countries with entity names, loaded from JSON
and validated at start. Operators extend it by pointing CORRIDOR_TAXONOMY_PATH at their file.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError, field_validator

from shared.errors import ConfigError


class SectorTerms(BaseModel):
    """Terms for one sector: term → weight. Matching rules are in classify.py."""

    terms: dict[str, float] = Field(min_length=1)

    @field_validator("terms")
    @classmethod
    def _weights(cls, value: dict[str, float]) -> dict[str, float]:
        for term, weight in value.items():
            if not term.strip():
                raise ValueError("empty term")
            if not 0 < weight <= 10:
                raise ValueError(f"weight of {term!r} must be in (0, 10]")
        return value


class Taxonomy(BaseModel):
    """A versioned taxonomy; ``threshold`` is the score a sector needs to be assigned."""

    version: str = Field(min_length=1)
    threshold: float = Field(gt=0)
    sectors: dict[str, SectorTerms] = Field(min_length=1)
    countries: dict[str, list[str]]

    @field_validator("countries")
    @classmethod
    def _countries(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        if set(value) != {"PK", "KZ"}:
            raise ValueError("countries must have exactly the keys PK and KZ")
        return value


def load_taxonomy(path: Path | None = None) -> Taxonomy:
    """Load ``path`` or the taxonomy shipped with Corridor; :class:`ConfigError` when invalid."""
    try:
        if path is None:
            text = resources.files("services.classifier").joinpath("taxonomy.json").read_text("utf-8")
        else:
            text = path.read_text("utf-8")
        return Taxonomy.model_validate(json.loads(text))
    except (OSError, json.JSONDecodeError, ValidationError) as exc:
        raise ConfigError(f"invalid taxonomy {path or '(built-in)'}: {exc}") from exc
