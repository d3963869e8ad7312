from __future__ import annotations

import numpy as np
import pytest

from models.fusion import SIGNAL_TEMPERATURES, FusionParams, calibrate, fit_temperature, fuse, tune
from models.head import HeadConfig
from models.knn import exact_neighbours, knn_vote
from models.training import out_of_fold, stratified_folds, train_classifier


def test_vote_weights_closer_neighbours_more() -> None:
    labels = np.array([[0, 1, 1]])
    scores = np.array([[0.9, 0.5, 0.5]])
    sharp = knn_vote(labels, scores, 2, temperature=0.05)
    flat = knn_vote(labels, scores, 2, temperature=100.0)
    assert sharp[0].argmax() == 0
    assert flat[0].argmax() == 1  # with no weighting the majority wins
    assert np.allclose(sharp.sum(axis=1), 1.0)


def test_vote_uses_only_the_first_k_and_ignores_padding() -> None:
    labels = np.array([[2, 2, 0, 0, 0], [1, -1, -1, -1, -1], [-1, -1, -1, -1, -1]])
    scores = np.array([[0.8, 0.8, 0.9, 0.9, 0.9], [0.7, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
    p = knn_vote(labels, scores, 3, k=2)
    assert p[0].argmax() == 2 and p[0, 2] == pytest.approx(1.0)
    assert p[1, 1] == pytest.approx(1.0)
    assert np.allclose(p[2], 1 / 3)  # no neighbours: uniform


def test_class_prior_rebalances_the_vote() -> None:
    labels = np.array([[0, 0, 1]])
    scores = np.array([[0.5, 0.5, 0.5]])
    assert knn_vote(labels, scores, 2, temperature=1.0)[0].argmax() == 0
    balanced = knn_vote(labels, scores, 2, temperature=1.0, class_prior=np.array([0.9, 0.1]))
    assert balanced[0].argmax() == 1


def test_exact_neighbours_are_sorted_and_can_skip_self() -> None:
    corpus = np.eye(4, dtype=np.float32)
    corpus[1] = np.array([0.8, 0.6, 0, 0])
    idx, scores = exact_neighbours(corpus, corpus, 2, exclude_self=True)
    assert idx[0, 0] == 1 and idx[1, 0] == 0
    assert (np.diff(scores, axis=1) <= 0).all()
    assert (idx != np.arange(4)[:, None]).all()


def test_fuse_interpolates_and_calibrates() -> None:
    head = np.array([[0.8, 0.2]])
    knn = np.array([[0.2, 0.8]])
    assert np.allclose(fuse(head, knn, FusionParams(alpha=1.0)), head)
    assert np.allclose(fuse(head, knn, FusionParams(alpha=0.0)), knn)
    assert np.allclose(fuse(head, knn, FusionParams(alpha=0.5)), [[0.5, 0.5]])
    sharper = calibrate(head, 0.5)
    assert sharper[0, 0] > 0.8 and np.allclose(sharper.sum(), 1.0)


def test_tuning_is_never_worse_than_either_signal_on_its_data() -> None:
    rng = np.random.default_rng(1)
    n, c = 300, 4
    y = rng.integers(0, c, n)
    # head is right for the first half, kNN for the second: only the blend gets both
    head = np.full((n, c), 0.1)
    head[np.arange(n), np.where(np.arange(n) < n // 2, y, (y + 1) % c)] = 0.7
    nb_labels = np.where(np.arange(n)[:, None] >= n // 2, y[:, None], rng.integers(0, c, (n, 30)))
    nb_scores = np.sort(rng.uniform(0.3, 0.9, (n, 30)), axis=1)[:, ::-1]
    result = tune(head, nb_labels, nb_scores, y, c)
    assert result.accuracy >= result.head_accuracy
    assert result.accuracy >= result.knn_accuracy
    assert 0.0 < result.params.alpha < 1.0


def test_folds_deal_each_class_evenly() -> None:
    y = np.repeat(np.arange(3), [10, 7, 3])
    fold = stratified_folds(y, 5, seed=1)
    for cls in range(3):
        counts = np.bincount(fold[y == cls], minlength=5)
        assert counts.max() - counts.min() <= 1


def test_out_of_fold_never_uses_an_example_to_score_itself() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = np.arange(60) % 3
    p_head, nb_labels, nb_scores = out_of_fold(x, y, 3, HeadConfig(dim=16, n_classes=3), epochs=20, folds=5, seed=0)
    assert p_head.shape == (60, 3) and np.allclose(p_head.sum(axis=1), 1.0, atol=1e-5)
    assert nb_labels.shape == nb_scores.shape and nb_labels.shape[0] == 60
    assert nb_scores.max() < 0.99  # random directions: only the example itself would score 1.0
    exact, _ = exact_neighbours(x, x, 1)
    assert (exact[:, 0] == np.arange(60)).all()  # (whereas with itself in the corpus it comes first)


def test_cross_fitted_tuning_reports_on_the_untouched_validation_split() -> None:
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(4, 16))
    y = np.arange(200) % 4
    x = (centres[y] + rng.normal(scale=1.5, size=(200, 16))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = ["a", "b", "c", "d"]
    _, report = train_classifier(x[:160], y[:160], labels, x_val=x[160:], y_val=y[160:], refit=False, crossfit=5)
    _, plain_report = train_classifier(x[:160], y[:160], labels, x_val=x[160:], y_val=y[160:], refit=False, crossfit=0)
    assert report.metrics["fusion_tuning"] == {"on": "out_of_fold_5", "n": 160}
    assert plain_report.metrics["fusion_tuning"] == {"on": "validation", "n": 40}
    assert report.n_val == plain_report.n_val == 40  # both are scored on the same untouched split
    assert report.metrics["validation"]["fused"]["accuracy"] >= 0.5  # four noisy clusters: far above chance
    # the head's epochs: by cross-validation on the training split, or early-stopped on the validation split
    assert report.metrics["head_epochs"]["by"] == "cross_validation_5"
    assert plain_report.metrics["head_epochs"]["by"] == "validation"
    assert report.best_epoch == report.metrics["head_epochs"]["epochs"] >= 1


def test_each_signal_is_calibrated_before_the_blend() -> None:
    rng = np.random.default_rng(2)
    n, c = 400, 10
    y = rng.integers(0, c, n)
    # a lexical model right 90% of the time but barely above uniform; a confident head right 60%
    lex_pred = np.where(rng.random(n) < 0.9, y, (y + 1) % c)
    p_lex = np.full((n, c), 0.098)
    p_lex[np.arange(n), lex_pred] = 0.118
    p_lex /= p_lex.sum(axis=1, keepdims=True)
    head_pred = np.where(rng.random(n) < 0.6, y, (y + 2) % c)
    p_head = np.full((n, c), 0.01)
    p_head[np.arange(n), head_pred] = 0.91
    assert fit_temperature(p_lex, y, grid=SIGNAL_TEMPERATURES) < 0.25  # sharpened
    assert fit_temperature(p_head, y, grid=SIGNAL_TEMPERATURES) > 1.0  # softened
    nb_labels = rng.integers(0, c, (n, 30))
    nb_scores = np.sort(rng.uniform(0.3, 0.9, (n, 30)), axis=1)[:, ::-1]
    result = tune(p_head, nb_labels, nb_scores, y, c, p_lex=p_lex)
    assert result.params.lexical_temperature < 0.25 and result.params.head_temperature > 1.0
    assert result.lexical_accuracy is not None and result.accuracy >= result.lexical_accuracy
    # the stored temperatures are applied when the model serves: fuse() reproduces the tuned answers
    p_knn = knn_vote(nb_labels, nb_scores, c, k=result.params.k, temperature=result.params.knn_temperature)
    served = fuse(p_head, p_knn, result.params, p_lex)
    assert np.allclose(served.sum(axis=1), 1.0)
    assert (served.argmax(axis=1) == y).mean() == pytest.approx(result.accuracy)
