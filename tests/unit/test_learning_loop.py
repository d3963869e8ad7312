"""Pieces of the learning loop that need no database: the near-duplicate override."""

from __future__ import annotations

import numpy as np
import pytest

from models.classifier import DUPLICATE_SCORE, DUPLICATE_TRUST, FusedClassifier, Neighbour
from models.fusion import FusionParams
from models.head import HeadConfig, LinearHead


# ---- near-duplicate override ------------------------------------------------------------------------
def classifier(alpha: float = 1.0) -> FusedClassifier:
    head = LinearHead(HeadConfig(dim=4, n_classes=3, seed=0))
    x = np.eye(4, dtype=np.float32)[[0, 1, 2, 0, 1, 2]]
    head.fit(x, np.array([0, 1, 2, 0, 1, 2]))
    return FusedClassifier(["a", "b", "c"], head, FusionParams(alpha=alpha, k=3))


def test_a_near_duplicate_decides_whatever_the_blend() -> None:
    clf = classifier(alpha=1.0)  # the vote does not count at all
    x = np.eye(4, dtype=np.float32)[[0]]
    plain = clf.predict_proba(x, [[Neighbour("c", 0.9)]])
    assert clf.labels[int(plain.argmax())] == "a"
    dup = clf.predict_proba(x, [[Neighbour("c", DUPLICATE_SCORE), Neighbour("a", 0.5)]])
    assert clf.labels[int(dup.argmax())] == "c" and dup[0, 2] >= DUPLICATE_TRUST
    assert dup.sum() == pytest.approx(1.0)
    assert np.argsort(-dup[0])[1] == 0  # the rest of the ranking is still the model's
    assert np.allclose(clf.predict_proba(x, [[Neighbour("zzz", 1.0)]]), plain)  # unknown labels: no effect


def test_the_latest_labelled_duplicate_wins() -> None:
    clf = classifier()
    older, newer = Neighbour("b", 1.0, labelled_at=100.0), Neighbour("c", 0.9995, labelled_at=200.0)
    assert clf.duplicate_label([older, newer]) == "c"
    assert clf.duplicate_label([Neighbour("b", 1.0), Neighbour("c", 1.0)]) == "b"  # a tie: the closest
    assert clf.duplicate_label([Neighbour("b", 0.99)]) is None
