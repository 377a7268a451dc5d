"""The Reuters stories beside the repository, classified once, for the benchmarks."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from services.classifier.classify import Classifier
from services.classifier.taxonomy import load_taxonomy
from shared.models import ClassifiedItem, RawItem

REUTERS = Path(__file__).resolve().parents[1].parent / "shared/data/reuters/train.jsonl"


def classified_reuters(count: int | None = None) -> list[ClassifiedItem]:
    """The first ``count`` stories (all when None) as classified items, English, 20 sources."""
    classifier = Classifier(load_taxonomy())
    now = datetime.now(UTC)
    rows = [json.loads(line) for line in REUTERS.read_text().splitlines()[:count]]
    return [
        classifier.classify(
            RawItem(
                id=f"itm_{r['id']}",
                source_id=f"src_{r['id'] % 20}",
                source_url="s",
                title=r.get("title") or "",
                summary=r.get("body") or "",
                fetched_at=now,
                language="en",
            )
        )
        for r in rows
    ]
