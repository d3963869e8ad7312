"""The README's configuration table lists every setting, and nothing else, with today's defaults.

A setting added to ``app.settings.Settings`` without a README row (or a row left behind after a
setting is removed or renamed, or a default changed in one place only) fails here.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from app.settings import PROJECT_ROOT, Settings

README = PROJECT_ROOT / "README.md"
VARIABLE = re.compile(r"`(JOBCLASS_[A-Z0-9_]+)`")


def config_rows() -> dict[str, list[str]]:
    """{variable: [cells of its row]} from the table under the "## Configuration" heading."""
    text = README.read_text(encoding="utf-8")
    match = re.search(r"^## Configuration.*?$(.*?)(?=^## )", text, flags=re.MULTILINE | re.DOTALL)
    assert match, "README.md has no '## Configuration' section"
    rows: dict[str, list[str]] = {}
    for line in match.group(1).splitlines():
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        for name in VARIABLE.findall(cells[0]):
            assert name not in rows, f"{name} is listed twice"
            rows[name] = cells
    return rows


def simple_default(field: Any) -> str | None:
    """The default as the README writes it (`value`), for numbers and choices; None otherwise."""
    value = field.default
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return f"`{value}`"
    if isinstance(value, str) and value:
        return f"`{value}`"
    return None


def test_every_setting_has_a_row_and_every_row_a_setting() -> None:
    rows = config_rows()
    expected = {f"JOBCLASS_{name.upper()}" for name in Settings.model_fields}
    missing = sorted(expected - set(rows))
    unknown = sorted(set(rows) - expected)
    assert not missing, f"settings missing from the README configuration table: {missing}"
    assert not unknown, f"README rows for settings that do not exist: {unknown}"


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_rows_state_the_default_and_a_meaning(name: str) -> None:
    cells = config_rows().get(f"JOBCLASS_{name.upper()}")
    assert cells is not None and len(cells) >= 3, f"JOBCLASS_{name.upper()} needs | variable | default | meaning |"
    default, meaning = cells[1], cells[2]
    assert meaning, f"JOBCLASS_{name.upper()} has no description"
    expected = simple_default(Settings.model_fields[name])
    if expected is not None:
        assert expected in default, f"JOBCLASS_{name.upper()}: the README says {default!r}, the code {expected}"
