"""Pieces of the learning loop that need no database: the stable hold-out split and the near-duplicate
override (the job registry, recorded in the database, is tested in tests/integration/test_jobs.py)."""

from __future__ import annotations

import numpy as np
import pytest

from models.classifier import DUPLICATE_SCORE, DUPLICATE_TRUST, FusedClassifier, Neighbour
from models.fusion import FusionParams
from models.head import HeadConfig, LinearHead
from models.training import holdout_split


# ---- hold-out split -----------------------------------------------------------------------------
def test_holdout_split_stays_put_as_data_grows() -> None:
    rng = np.random.default_rng(0)
    ids = [f"v{i}" for i in range(400)]
    y = rng.integers(0, 4, size=400)
    train, val = holdout_split(ids, y, 0.2, salt="s")
    assert 0.14 < len(val) / 400 < 0.26 and set(train).isdisjoint(val) and len(train) + len(val) == 400
    more_ids = ids + [f"new{i}" for i in range(100)]
    train2, val2 = holdout_split(more_ids, np.concatenate([y, rng.integers(0, 4, size=100)]), 0.2, salt="s")
    assert set(val) <= set(val2) and set(train) <= set(train2)  # nothing moves from one side to the other
    other_salt = holdout_split(ids, y, 0.2, salt="t")[1]
    assert set(other_salt) != set(val)


def test_holdout_split_keeps_every_class_trainable() -> None:
    ids = ["a", "b", "c", "solo"]
    y = np.array([0, 0, 0, 1])
    train, val = holdout_split(ids, y, 0.99, salt="")  # nearly everything would be held out
    assert 3 in train and {int(y[i]) for i in train} == {0, 1} and len(val) == 2
    train, val = holdout_split(ids, y, 1e-9, salt="")  # nothing would be: each class of 2+ gives one
    assert len(val) == 1 and y[val[0]] == 0
    with pytest.raises(ValueError):
        holdout_split(ids, y[:2], 0.2)


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
