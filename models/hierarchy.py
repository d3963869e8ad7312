"""A label hierarchy: every label has at most one parent (ISCO-08 4 → 3 → 2 → 1 digit; a Jobnet job type →
its category). Pure logic over label strings and probability arrays, no I/O.

The classifier is trained on the leaves (the labels without children). Its probabilities are *rolled up*:
a node's probability is the sum over the leaves below it (a leaf's is its own). An *answer* descends from
the roots: at each level it takes the child with the highest rolled-up probability, and stops before the
first one below the threshold. So an unsure leaf falls back to its parent (or grandparent…) instead of
abstaining outright, and only when no root reaches the threshold is there no answer at all. With a flat
taxonomy (no parents) every label is a root and a leaf: the answer is the most probable label when it
reaches the threshold, exactly the single-threshold abstain rule.

Levels count from the roots: a root is at level 0, its children at level 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


class HierarchyError(ValueError):
    """The parents do not form a forest: a parent that is not a label, or a cycle."""


@dataclass(frozen=True)
class Answer:
    label: str | None  # None: no level reached the threshold
    level: int | None  # depth of ``label`` (0 = a root)
    path: tuple[str, ...]  # root → label; empty without an answer
    confidence: float  # the rolled-up probability of ``label`` (of the best root without an answer)


class Hierarchy:
    """Labels in file order and each one's parent (None for a root)."""

    def __init__(self, labels: Sequence[str], parents: Mapping[str, str | None] | None = None) -> None:
        parents = dict(parents or {})
        self.labels: tuple[str, ...] = tuple(labels)
        if len(set(self.labels)) != len(self.labels):
            raise HierarchyError("duplicate labels")
        known = set(self.labels)
        stray = [lab for lab in parents if lab not in known]
        if stray:
            raise HierarchyError(f"parents given for labels that are not in the list: {_names(stray)}")
        unknown = [f"{lab!r} → {p!r}" for lab, p in parents.items() if p is not None and p not in known]
        if unknown:
            raise HierarchyError(f"unknown parent (not a label of the taxonomy): {', '.join(unknown[:5])}")
        self.parent: dict[str, str | None] = {lab: parents.get(lab) or None for lab in self.labels}
        _check_acyclic(self.parent)
        children: dict[str | None, list[str]] = {None: []}
        for lab in self.labels:
            children.setdefault(lab, [])
            children.setdefault(self.parent[lab], []).append(lab)
        self.children: dict[str | None, tuple[str, ...]] = {k: tuple(v) for k, v in children.items()}
        self.index = {lab: i for i, lab in enumerate(self.labels)}
        self._paths = {lab: self._walk(lab) for lab in self.labels}

    @classmethod
    def flat(cls, labels: Sequence[str]) -> Hierarchy:
        return cls(labels)

    def _walk(self, label: str) -> tuple[str, ...]:
        path = [label]
        parent = self.parent[label]
        while parent is not None:
            path.append(parent)
            parent = self.parent[parent]
        return tuple(reversed(path))

    # ---- the tree ---------------------------------------------------------------------------
    @property
    def is_flat(self) -> bool:
        return all(p is None for p in self.parent.values())

    @property
    def roots(self) -> tuple[str, ...]:
        return self.children[None]

    @property
    def leaves(self) -> tuple[str, ...]:
        """The labels without children, in file order: the classes a classifier is trained on."""
        return tuple(lab for lab in self.labels if not self.children[lab])

    @property
    def n_levels(self) -> int:
        return 1 + max((len(p) - 1 for p in self._paths.values()), default=0)

    def __contains__(self, label: object) -> bool:
        return label in self.index

    def path(self, label: str) -> tuple[str, ...]:
        """Root → ``label``."""
        return self._paths[label]

    def depth(self, label: str) -> int:
        return len(self._paths[label]) - 1

    def ancestor_at(self, label: str, level: int) -> str | None:
        """The node on ``label``'s path at ``level`` (None when ``label`` is shallower)."""
        path = self._paths[label]
        return path[level] if level < len(path) else None

    def lca(self, a: str, b: str) -> str | None:
        """The deepest common node of ``a``'s and ``b``'s paths (None when they share no root)."""
        common = None
        for x, y in zip(self._paths[a], self._paths[b], strict=False):
            if x != y:
                break
            common = x
        return common

    def signature(self) -> str:
        """The parent links as text (for a digest); empty for a flat taxonomy."""
        return "\n".join(f"{lab}\t{p}" for lab, p in self.parent.items() if p is not None)

    # ---- probabilities ----------------------------------------------------------------------
    def rollup_matrix(self, classes: Sequence[str]) -> np.ndarray:
        """(len(classes), len(labels)) 0/1: entry [i, j] is 1 when node j is class i or one of its ancestors."""
        matrix = np.zeros((len(classes), len(self.labels)), dtype=np.float64)
        for i, cls in enumerate(classes):
            if cls not in self.index:
                raise HierarchyError(f"class {cls!r} is not a label of the hierarchy")
            for node in self._paths[cls]:
                matrix[i, self.index[node]] = 1.0
        return matrix

    def rollup(self, probs: np.ndarray, classes: Sequence[str]) -> np.ndarray:
        """Every node's probability (columns in ``labels`` order): the sum of its classes' probabilities."""
        return np.asarray(probs, dtype=np.float64) @ self.rollup_matrix(classes)

    def answer(self, rolled: np.ndarray, threshold: float) -> Answer:
        """Descend from the roots by the highest rolled-up probability (ties: file order) while it reaches
        ``threshold``; ``rolled`` is one row of :meth:`rollup`."""
        node: str | None = None
        best_root = 0.0
        candidates = self.roots
        while candidates:
            scores = [float(rolled[self.index[c]]) for c in candidates]
            pick = int(np.argmax(scores))
            if node is None:
                best_root = scores[pick]
            if scores[pick] < threshold:
                break
            node = candidates[pick]
            candidates = self.children[node]
        if node is None:
            return Answer(None, None, (), best_root)
        return Answer(node, self.depth(node), self._paths[node], float(rolled[self.index[node]]))

    def answers(self, probs: np.ndarray, classes: Sequence[str], threshold: float) -> list[Answer]:
        rolled = self.rollup(probs, classes)
        return [self.answer(row, threshold) for row in rolled]


def _names(labels: Sequence[str]) -> str:
    shown = ", ".join(repr(lab) for lab in labels[:5])
    return shown + (f" and {len(labels) - 5} more" if len(labels) > 5 else "")


def _check_acyclic(parent: Mapping[str, str | None]) -> None:
    """A parent chain that comes back to where it started is one error naming the cycle."""
    done: set[str] = set()
    for start in parent:
        seen: list[str] = []
        node: str | None = start
        while node is not None and node not in done:
            if node in seen:
                cycle = [*seen[seen.index(node) :], node]
                raise HierarchyError(f"parent cycle: {' → '.join(repr(c) for c in cycle)}")
            seen.append(node)
            node = parent[node]
        done.update(seen)
