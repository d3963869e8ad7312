"""models.conformal on synthetic data: coverage of the prediction sets, Mondrian vs global thresholds, the
abstain rule, and per-class automation thresholds against one global threshold."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from app.services.uncertainty import compute_uncertainty, summary
from models.conformal import (
    NEVER,
    UncertaintyRule,
    automation_metrics,
    automation_thresholds,
    calibrate_conformal,
    conformal_quantile,
    global_threshold,
    prediction_sets,
    set_metrics,
)

K = 6


def synthetic(n: int, rng: np.random.Generator, temps: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and labels drawn from a tempered version of them: with ``temps`` a class's confidence
    means more (t < 1) or less (t > 1) than elsewhere, a per-class miscalibration."""
    logits = rng.normal(size=(n, K)) * 2.5
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    temps = np.ones(K) if temps is None else temps
    q = p ** (1.0 / temps[p.argmax(axis=1)][:, None])
    q /= q.sum(axis=1, keepdims=True)
    y = (q.cumsum(axis=1) > rng.random(n)[:, None]).argmax(axis=1)
    return p, y


def test_the_quantile_has_the_finite_sample_correction() -> None:
    scores = np.arange(1, 11) / 10.0  # 0.1 … 1.0
    assert conformal_quantile(scores, 0.8) == pytest.approx(0.9)  # ceil(11 · 0.8) = 9th smallest
    assert conformal_quantile(scores, 0.5) == pytest.approx(0.6)  # ceil(5.5) = 6th
    assert conformal_quantile(scores, 0.95) == math.inf  # ceil(10.45) = 11 > 10: no finite threshold
    with pytest.raises(ValueError):
        conformal_quantile(scores, 1.0)


@pytest.mark.parametrize("coverage", [0.8, 0.9])
def test_sets_cover_the_target_over_many_random_splits(coverage: float) -> None:
    rng = np.random.default_rng(0)
    p, y = synthetic(6000, rng)
    covered = []
    for _ in range(40):
        order = rng.permutation(len(y))
        cal, test = order[:1000], order[1000:]
        c = calibrate_conformal(p[cal], y[cal], coverage, min_class_rows=10**9)  # global threshold only
        covered.append(set_metrics(p[test], y[test], c.thresholds)["empirical_coverage"])
    # split conformal: E[coverage] ∈ [1 − α, 1 − α + 1/(n + 1)]; the mean over 40 splits sits tightly in it
    assert coverage - 0.01 <= float(np.mean(covered)) <= coverage + 0.015
    assert float(np.std(covered)) < 0.03


def test_mondrian_thresholds_cover_each_class_where_the_global_one_does_not() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, K, size=12000)
    logits = rng.normal(size=(len(y), K)) * 1.5
    logits[np.arange(len(y)), y] += np.array([4.0, 4.0, 3.0, 3.0, 1.0, 0.5])[y]  # classes 4 and 5 are hard
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    per_class_m, per_class_g, overall_g = [], [], []
    for _ in range(10):
        order = rng.permutation(len(y))
        cal, test = order[:5000], order[5000:]
        mondrian = calibrate_conformal(p[cal], y[cal], 0.9, min_class_rows=30)
        single = calibrate_conformal(p[cal], y[cal], 0.9, mondrian=False)
        assert mondrian.mondrian.all() and not single.mondrian.any()
        rows = [test[y[test] == c] for c in range(K)]
        per_class_m.append([set_metrics(p[r], y[r], mondrian.thresholds)["empirical_coverage"] for r in rows])
        per_class_g.append([set_metrics(p[r], y[r], single.thresholds)["empirical_coverage"] for r in rows])
        overall_g.append(set_metrics(p[test], y[test], single.thresholds)["empirical_coverage"])
    mean_m, mean_g = np.mean(per_class_m, axis=0), np.mean(per_class_g, axis=0)
    assert mean_m.min() >= 0.885  # every class near its target, averaged over the splits
    assert mean_g.min() < 0.8  # one threshold under-covers the hard classes ...
    assert abs(float(np.mean(overall_g)) - 0.9) < 0.01  # ... while covering 90 % overall


def test_pooled_out_of_fold_rows_narrow_the_realised_coverage() -> None:
    # a 66-row hold-out (the Google postings' size) alone, or with 600 more rows scored out of fold
    rng = np.random.default_rng(3)
    p, y = synthetic(20000, rng)
    alone: list[float] = []
    pooled: list[float] = []
    for _ in range(60):
        order = rng.permutation(len(y))
        held, oof, test = order[:66], order[66:666], order[666:4666]
        extra = (p[oof, y[oof]], y[oof])
        for out, cal in (
            (alone, calibrate_conformal(p[held], y[held], 0.9, mondrian=False)),
            (pooled, calibrate_conformal(p[held], y[held], 0.9, mondrian=False, extra=extra)),
        ):
            out.append(set_metrics(p[test], y[test], cal.thresholds)["empirical_coverage"])
    assert float(np.std(pooled)) < 0.6 * float(np.std(alone))
    assert abs(float(np.mean(pooled)) - 0.9) < 0.01


def test_the_mondrian_gate_counts_hold_out_rows_and_the_threshold_uses_all() -> None:
    rng = np.random.default_rng(4)
    p, y = synthetic(3000, rng)
    held, oof = np.arange(200), np.arange(200, 3000)
    counts = np.bincount(y[held], minlength=K)
    gate = int(np.sort(counts)[K // 2])  # about half of the classes pass on their hold-out rows
    extra = (p[oof, y[oof]], y[oof])
    cal = calibrate_conformal(p[held], y[held], 0.9, min_class_rows=gate, extra=extra)
    assert (cal.mondrian == (counts >= gate)).all() and cal.n == 3000
    c = int(np.flatnonzero(cal.mondrian)[0])
    mine = y == c  # its threshold comes from every row of the class, hold-out and out-of-fold
    assert cal.thresholds[c] == pytest.approx(1.0 - conformal_quantile(1.0 - p[mine, c], 0.9))
    with pytest.raises(ValueError, match="same length"):
        calibrate_conformal(p[held], y[held], 0.9, extra=(extra[0], extra[1][:-1]))


def test_a_small_class_shares_the_global_threshold() -> None:
    rng = np.random.default_rng(2)
    p, y = synthetic(400, rng)
    y[y == 5] = 4  # class 5 has no rows at all
    y[:10] = 3
    cal = calibrate_conformal(p, y, 0.9, min_class_rows=30)
    assert not cal.mondrian[5] and cal.thresholds[5] == cal.global_threshold
    back = type(cal).from_dict(cal.to_dict([str(i) for i in range(K)]), [str(i) for i in range(K)])
    assert np.allclose(back.thresholds, cal.thresholds) and (back.mondrian == cal.mondrian).all()


def test_sets_are_ordered_by_probability_and_may_be_empty() -> None:
    probs = np.array([[0.5, 0.3, 0.2], [0.34, 0.33, 0.33], [0.1, 0.3, 0.6]])
    thresholds = np.array([0.25, 0.25, 0.9])
    assert prediction_sets(probs, thresholds) == [[0, 1], [0, 1], [1]]
    # no label reaches its threshold: the set is empty (filling it with the top label would over-cover)
    assert prediction_sets(np.array([[0.4, 0.35, 0.25]]), np.array([0.9, 0.9, 0.9])) == [[]]
    m = set_metrics(np.array([[0.4, 0.35, 0.25], [0.95, 0.03, 0.02]]), np.array([0, 0]), np.array([0.9, 0.9, 0.9]))
    assert (m["empirical_coverage"], m["empty_share"], m["mean_set_size"]) == (0.5, 0.5, 0.5)


def test_the_abstain_rule() -> None:
    labels = ["a", "b", "c"]
    meta = {
        "uncertainty": {
            "conformal": {"coverage": 0.9, "n": 100, "global_threshold": 0.3, "class_thresholds": {"a": 0.6}}
        }
    }
    rule = UncertaintyRule.from_metadata(meta, labels)
    probs = np.array([[0.9, 0.05, 0.05], [0.5, 0.45, 0.05], [0.55, 0.25, 0.2], [0.2, 0.7, 0.1]])
    got = rule.decide(probs)
    assert [(d.prediction_set, d.abstained, d.reason) for d in got] == [
        ([0], False, None),
        ([1], True, "below_class_threshold"),  # 0.5 < a's 0.6; b's 0.45 ≥ 0.3: the set is {b}, not the top label
        ([], True, "below_class_threshold"),  # nothing reaches its threshold: an empty set, abstaining
        ([1], False, None),
    ]
    assert got[1].margin == pytest.approx(0.05)
    probs2 = np.array([[0.62, 0.35, 0.03]])
    assert rule.decide(probs2)[0].reason == "set_size"  # {a, b}
    assert rule.decide(probs2, floor=0.7)[0].reason == "below_floor"
    # an operating point replaces the set rule with per-class automation thresholds
    meta["uncertainty"]["operating_point"] = {"class_thresholds": {"a": 0.6, "b": 0.8, "c": NEVER}}
    op = UncertaintyRule.from_metadata(meta, labels)
    assert [d.abstained for d in op.decide(probs)] == [False, True, True, True]
    assert op.decide(probs2)[0].abstained is False
    # a model from before prediction sets: the top label and the floor only
    old = UncertaintyRule.from_metadata({}, labels).decide(probs, floor=0.6)
    assert [d.prediction_set for d in old] == [[0], [0], [0], [1]] and [d.abstained for d in old] == [
        False,
        True,
        True,
        False,
    ]


@pytest.mark.parametrize("temps", [None, np.array([0.5, 0.8, 1.0, 1.2, 1.6, 2.2])], ids=["calibrated", "per-class"])
def test_per_class_thresholds_reach_the_target_and_beat_one_threshold(temps: np.ndarray | None) -> None:
    rng = np.random.default_rng(3)
    target = 0.9
    share_per, share_glob, acc_per = [], [], []
    for _ in range(8):
        p, y = synthetic(5000, rng, temps)
        hold, fresh = slice(0, 1500), slice(1500, None)
        per = automation_thresholds(p[hold], y[hold], target)
        single = np.full(K, global_threshold(p[hold], y[hold], target))
        on_hold = automation_metrics(p[hold], y[hold], per)
        assert on_hold["accuracy_automated"] >= target  # reached on the hold-out it was chosen on
        assert on_hold["share_automated"] >= automation_metrics(p[hold], y[hold], single)["share_automated"]
        m_per, m_glob = automation_metrics(p[fresh], y[fresh], per), automation_metrics(p[fresh], y[fresh], single)
        share_per.append(m_per["share_automated"])
        share_glob.append(m_glob["share_automated"])
        acc_per.append(m_per["accuracy_automated"])
    assert float(np.mean(acc_per)) >= target - 0.015  # and held on fresh rows
    assert float(np.mean(share_per)) >= float(np.mean(share_glob)) - 0.01
    if temps is not None:  # where classes differ, the per-class thresholds automate far more
        assert float(np.mean(share_per)) > 2 * float(np.mean(share_glob))


def test_an_unreachable_target_automates_nothing() -> None:
    rng = np.random.default_rng(4)
    p, y = synthetic(300, rng, np.full(K, 5.0))  # confidence says nothing
    assert global_threshold(p, y, 0.999) == NEVER
    assert (automation_thresholds(p, y, 0.999) == NEVER).all()


def test_the_stored_block_and_its_summary() -> None:
    rng = np.random.default_rng(5)
    p, y = synthetic(900, rng)
    labels = [f"l{i}" for i in range(K)]
    block = compute_uncertainty(p, y, labels, coverage=0.9, target_accuracy=0.9)
    s = summary(block)
    assert s is not None and s["rule"] == "operating_point" and s["target_accuracy"] == 0.9
    assert s["accuracy_automated"] >= 0.9 and 0 < s["share_automated"] < 1
    assert s["share_automated"] >= s["global_share_automated"]
    assert abs(s["empirical_coverage"] - 0.9) < 0.03 and s["mean_set_size"] >= 1
    assert s["mondrian_classes"] == K and s["n_holdout"] == 900
    assert [c["target"] for c in block["curve_per_class_thresholds"]][:2] == [0.8, 0.85]
    plain = summary(compute_uncertainty(p, y, labels, coverage=0.9))
    assert plain is not None and plain["rule"] == "conformal" and plain["target_accuracy"] is None
    assert summary(None) is None and summary({}) is None


def test_a_tiny_hold_out_gives_a_block_that_stores_as_strict_json() -> None:
    # three hold-out rows cannot be halved for the resampled estimate: None, never NaN (Postgres refuses NaN)
    rng = np.random.default_rng(5)
    p, y = synthetic(300, rng)
    extra = (p[np.arange(3, 300), y[3:]], y[3:])
    block = compute_uncertainty(p[:3], y[:3], [str(i) for i in range(K)], coverage=0.9, extra=extra)
    assert block["holdout"]["resampled_empirical_coverage"] is None
    assert block["conformal"]["n"] == 300 and not block["conformal"]["holdout_too_small"]
    json.dumps(block, allow_nan=False)
