"""A taxonomy: the ordered list of labels a vacancy can get, with display names and, optionally, a hierarchy.

CSV with a label column (``label``, ``name_da`` or ``name``) and optionally a display column
(``display_name`` or ``name_en``). Any file of that shape replaces the default Jobnet categories.

An optional ``parent`` column makes it a hierarchy (ISCO-08 4 → 3 → 2 → 1 digit; a Jobnet job type → its
category): each row names its parent by label, or by the ``id`` column's value when the file has one and
no label matches; an empty cell is a root. Parents come before or after their children, as you like. The
file is checked when it is read: a parent that is no row of the file, or a cycle, is one error naming the
rows. The classifier is trained on the leaves (the labels without children: ``leaves``); answers roll its
probabilities up the tree (``models.hierarchy``). Without the column, every label is a leaf and a root.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from models.hierarchy import Hierarchy, HierarchyError

_LABEL_COLUMNS = ("label", "name_da", "name")
_DISPLAY_COLUMNS = ("display_name", "name_en")
PARENT_COLUMN = "parent"
ID_COLUMN = "id"


@dataclass(frozen=True)
class Taxonomy:
    labels: tuple[str, ...]
    display: dict[str, str]
    digest: str
    hierarchy: Hierarchy = field(compare=False)  # flat (no parents) without a ``parent`` column

    def __contains__(self, label: object) -> bool:
        return label in self.display

    def display_name(self, label: str) -> str:
        return self.display.get(label, label)

    @property
    def leaves(self) -> tuple[str, ...]:
        """The labels a model is trained on and answers among: all of them in a flat taxonomy."""
        return self.hierarchy.leaves

    @property
    def is_hierarchical(self) -> bool:
        return not self.hierarchy.is_flat

    def not_a_leaf(self, label: str) -> str | None:
        """Why a label of the taxonomy cannot label a vacancy (None when it can): in a hierarchy, vacancies
        are labelled with leaves, the classes the model learns; a node with children would not be learnt."""
        children = self.hierarchy.children.get(label)
        if not children:
            return None
        shown = ", ".join(repr(c) for c in children[:3]) + (", …" if len(children) > 3 else "")
        return f"label {label!r} is not a leaf of the taxonomy: choose one below it ({shown})"

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
        labels = tuple((r[label_col] or "").strip() for r in rows)
        if len(set(labels)) != len(labels) or any(not lab for lab in labels):
            raise ValueError(f"taxonomy {path} has empty or duplicate labels")
        display = {(r[label_col] or "").strip(): (r[display_col] or r[label_col]).strip() for r in rows}
        digest = "\n".join(labels)
        hierarchy = Hierarchy.flat(labels)
        if PARENT_COLUMN in fields:
            hierarchy = _hierarchy(path, rows, labels, ID_COLUMN if ID_COLUMN in fields else None)
            if not hierarchy.is_flat:  # a flat file keeps its digest: the models trained on it stay valid
                digest += "\n\n" + hierarchy.signature()
        return cls(
            labels=labels,
            display=display,
            digest=hashlib.sha256(digest.encode()).hexdigest()[:16],
            hierarchy=hierarchy,
        )


def _hierarchy(path: Path, rows: list[dict[str, str]], labels: tuple[str, ...], id_col: str | None) -> Hierarchy:
    """The ``parent`` cells resolved to labels (by label, else by id) and checked as a forest."""
    by_id = {(r[id_col] or "").strip(): lab for r, lab in zip(rows, labels, strict=True)} if id_col else {}
    known = set(labels)
    parents: dict[str, str | None] = {}
    for line, (row, label) in enumerate(zip(rows, labels, strict=True), start=2):
        cell = (row.get(PARENT_COLUMN) or "").strip()
        if not cell:
            parents[label] = None
        elif cell in known:
            parents[label] = cell
        elif cell in by_id:
            parents[label] = by_id[cell]
        else:
            raise ValueError(
                f"taxonomy {path} line {line}: label {label!r} has parent {cell!r}, which is not a label"
                f"{' or an id' if id_col else ''} of the file"
            )
    try:
        return Hierarchy(labels, parents)
    except HierarchyError as exc:
        raise ValueError(f"taxonomy {path}: {exc}") from exc
