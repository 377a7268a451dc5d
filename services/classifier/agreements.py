"""The agreements registry: the Pakistan–Kazakhstan agreements and MoUs Corridor tracks, as data.

``agreements.json`` (shipped) lists the documents signed in Islamabad on 4 February 2026 and any
signed later, each with its area, parties, date, what it commits to, its terms (English, Russian,
Kazakh and Urdu; the stage phrases, and the terms of the areas no sector links, cover the
taxonomy's further languages too), the sources every fact comes from and what is uncertain; and,
per implementation stage, the phrases that report it. Loaded and validated at start; operators extend it without code by
pointing ``CORRIDOR_AGREEMENTS_PATH`` at their own file (``corridor eval --agreements`` scores one).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator

from shared.datafiles import load_json_model
from shared.models import AREAS, PROGRESS, Area, Stage

Language = Literal["en", "ru", "kk", "ur", "uz", "hi", "ar", "fa", "ps", "tr", "zh", "ky", "de", "it", "pl"]


class SourceRef(BaseModel):
    """Where a fact comes from."""

    model_config = ConfigDict(extra="forbid")

    url: HttpUrl
    title: str = ""
    says: str = ""


class Agreement(BaseModel):
    """One signed document (or a package of them, when reports do not tell them apart)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,79}$")
    area: Area
    title: str = Field(min_length=3)
    parties: list[str] = Field(default_factory=list)
    signed_on: date
    commits_to: str = ""
    terms: dict[Language, list[str]] = Field(description="phrases that name this agreement's subject, by language")
    sources: list[SourceRef] = Field(min_length=1)
    uncertain: list[str] = Field(default_factory=list, description="facts not confirmed by two sources")

    @model_validator(mode="after")
    def _some_terms(self) -> Agreement:
        if not any(t.strip() for terms in self.terms.values() for t in terms):
            raise ValueError(f"agreement {self.id} has no terms")
        return self


class AreaSpec(BaseModel):
    """An area: its label, and phrases that name its subject without naming one agreement (an
    item matching them, or one of ``from_sectors``, is linked to the area's ``lead`` agreement,
    with ``via`` saying so)."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field(min_length=1)
    from_sectors: list[str] = Field(
        default_factory=list,
        description="an item concerning both countries in one of these taxonomy sectors is linked to the area",
    )
    unless_areas: list[Area] = Field(
        default_factory=list, description="…unless one of these areas is linked by its own terms"
    )
    terms: dict[Language, list[str]] = Field(default_factory=dict)
    lead: str | None = Field(
        default=None,
        description="the agreement that news about the area as a whole links to (its umbrella); "
        "default: the area's first agreement in the file",
    )


class Registry(BaseModel):
    """The registry file."""

    model_config = ConfigDict(extra="forbid")

    version: str = Field(min_length=1)
    signed_in: str = ""
    notes: str = ""
    areas: dict[Area, AreaSpec] = Field(description="every area id: its label and its terms")
    stages: dict[Stage, dict[Language, list[str]]] = Field(description="phrases reporting each stage")
    agreements: list[Agreement] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Registry:
        missing = set(get_args(Area)) - set(self.areas)
        if missing:
            raise ValueError(f"areas without a label: {sorted(missing)}")
        if set(self.stages) != set(get_args(Stage)):
            raise ValueError(f"stages must list phrases for exactly {list(get_args(Stage))}")
        ids = [a.id for a in self.agreements]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"agreement ids must be unique: {repeated}")
        area_of = {a.id: a.area for a in self.agreements}
        wrong = sorted(
            f"{area}: {spec.lead}" for area, spec in self.areas.items() if spec.lead and area_of.get(spec.lead) != area
        )
        if wrong:
            raise ValueError(f"an area's lead must be one of its agreements: {wrong}")
        return self

    def by_id(self) -> dict[str, Agreement]:
        return {a.id: a for a in self.agreements}

    def leads(self) -> dict[Area, str]:
        """Each area's lead agreement (its ``lead``, else its first in the file), which news
        about the area as a whole links to; areas without agreements have none."""
        leads: dict[Area, str] = {}
        for agreement in self.agreements:
            leads.setdefault(agreement.area, agreement.id)
        return leads | {area: spec.lead for area, spec in self.areas.items() if spec.lead}


def load_registry(path: Path | None = None) -> Registry:
    """Load ``path`` or the registry shipped with Corridor; :class:`ConfigError` when invalid."""
    return load_json_model(Registry, package="services.classifier", filename="agreements.json", path=path)


__all__ = ["AREAS", "PROGRESS", "Agreement", "Area", "Registry", "Stage", "load_registry"]
