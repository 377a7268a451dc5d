"""README documents every setting (the configuration table is the operators' reference)."""

from __future__ import annotations

from helpers import REPO

from shared.settings import Settings


def test_every_setting_is_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    missing = [name for name in Settings.model_fields if f"`CORRIDOR_{name.upper()}`" not in readme]
    assert not missing, f"README.md does not document: {missing}"


def test_readme_leads_with_the_two_commands() -> None:
    readme = (REPO / "README.md").read_text()
    first_block = readme.split("```sh", 1)[1].split("```", 1)[0]
    assert "make run" in first_block and "make test" in first_block
