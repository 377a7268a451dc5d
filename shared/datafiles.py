"""Data files validated at start: a JSON file shipped in a package, or an operator's replacement."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from shared.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def load_json_model(model: type[M], *, package: str, filename: str, path: Path | None = None) -> M:
    """``path`` (or ``filename`` shipped in ``package``) parsed and validated as ``model``;
    :class:`ConfigError` naming the file and every problem when it is unreadable, not UTF-8, not
    JSON or invalid."""
    try:
        if path is None:
            text = resources.files(package).joinpath(filename).read_text("utf-8")
        else:
            text = path.read_text("utf-8")
        return model.model_validate(json.loads(text))
    # UnicodeDecodeError: an operator's file saved in another encoding (cp1251, UTF-16) is a
    # configuration problem like any other, not a traceback without the file's name.
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValidationError) as exc:
        raise ConfigError(f"invalid {filename.removesuffix('.json')} {path or '(built-in)'}: {exc}") from exc
