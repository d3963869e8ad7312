"""A taxonomy: the ordered list of labels a vacancy can get, with display names.

CSV with a label column (``label``, ``name_da`` or ``name``) and optionally a display column
(``display_name`` or ``name_en``). Any file of that shape replaces the default Jobnet categories.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

_LABEL_COLUMNS = ("label", "name_da", "name")
_DISPLAY_COLUMNS = ("display_name", "name_en")


@dataclass(frozen=True)
class Taxonomy:
    labels: tuple[str, ...]
    display: dict[str, str]
    digest: str

    def __contains__(self, label: object) -> bool:
        return label in self.display

    def display_name(self, label: str) -> str:
        return self.display.get(label, label)

    @classmethod
    def from_csv(cls, path: Path | str) -> Taxonomy:
        path = Path(path)
        raw = path.read_bytes()
        rows = list(csv.DictReader(raw.decode("utf-8-sig").splitlines()))
        if not rows:
            raise ValueError(f"taxonomy {path} has no rows")
        fields = rows[0].keys()
        label_col = next((c for c in _LABEL_COLUMNS if c in fields), None)
        if label_col is None:
            raise ValueError(f"taxonomy {path} needs one of the columns {', '.join(_LABEL_COLUMNS)}")
        display_col = next((c for c in _DISPLAY_COLUMNS if c in fields), label_col)
        labels = tuple(r[label_col].strip() for r in rows)
        if len(set(labels)) != len(labels) or any(not lab for lab in labels):
            raise ValueError(f"taxonomy {path} has empty or duplicate labels")
        display = {r[label_col].strip(): (r[display_col] or r[label_col]).strip() for r in rows}
        return cls(labels=labels, display=display, digest=hashlib.sha256("\n".join(labels).encode()).hexdigest()[:16])
