"""The taxonomy: sectors with weighted terms and negative phrases, sector implications, and
countries with entity names; loaded from JSON and validated at start. Operators extend it without
code by pointing ``--taxonomy`` / ``CORRIDOR_TAXONOMY_PATH`` at their own file (same schema).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.datafiles import load_json_model


class SectorTerms(BaseModel):
    """One sector: core terms (term → weight); supporting terms, too generic to stand alone
    ("exports" for trade) and counted only next to a core term; negative phrases that cancel the
    terms they contain ("palm oil" is not petroleum)."""

    model_config = ConfigDict(extra="forbid")

    terms: dict[str, float] = Field(min_length=1)
    support: dict[str, float] = Field(
        default_factory=dict, description="terms that add to the score only when a core term matched too"
    )
    negative: list[str] = Field(default_factory=list)
    threshold: float | None = Field(default=None, gt=0, description="overrides the taxonomy threshold")

    @field_validator("terms", "support")
    @classmethod
    def _weights(cls, value: dict[str, float]) -> dict[str, float]:
        for term, weight in value.items():
            if not term.strip():
                raise ValueError("empty term")
            if not 0 < weight <= 10:
                raise ValueError(f"weight of {term!r} must be in (0, 10]")
        return value


class Taxonomy(BaseModel):
    """A versioned taxonomy; ``threshold`` is the score a sector needs to be assigned, ``implies``
    adds broader sectors (petroleum → energy)."""

    model_config = ConfigDict(extra="forbid")

    version: str = Field(min_length=1)
    threshold: float = Field(gt=0)
    focus_threshold: float | None = Field(
        default=None, gt=0, description="threshold for items about Pakistan or Kazakhstan (the mission's focus)"
    )
    title_boost: float = Field(default=1.5, ge=1, le=5, description="weight factor of a term found in the title")
    sectors: dict[str, SectorTerms] = Field(min_length=1)
    implies: dict[str, list[str]] = Field(default_factory=dict)
    countries: dict[str, list[str]]

    @field_validator("countries")
    @classmethod
    def _countries(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        if set(value) != {"PK", "KZ"}:
            raise ValueError("countries must have exactly the keys PK and KZ")
        return value

    @model_validator(mode="after")
    def _known_implications(self) -> Taxonomy:
        for sector, broader in self.implies.items():
            unknown = {sector, *broader} - set(self.sectors)
            if unknown:
                raise ValueError(f"implies names unknown sectors: {sorted(unknown)}")
        return self


def load_taxonomy(path: Path | None = None) -> Taxonomy:
    """Load ``path`` or the taxonomy shipped with Corridor; :class:`ConfigError` when invalid."""
    return load_json_model(Taxonomy, package="services.classifier", filename="taxonomy.json", path=path)
