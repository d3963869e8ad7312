from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from models.classifier import FusedClassifier, Neighbour
from models.compress import (
    VARIANTS,
    FeatureStats,
    Int8Linear,
    compress_linear,
    prune_linear,
    refit_pruned,
    state_bytes,
    zero_fraction,
)
from models.fusion import FusionParams
from models.head import HeadConfig, LinearHead
from models.registry import ModelDamaged, ModelRegistry, NoActiveModel, RegistryError
from models.training import cv_epochs, stratified_folds, stratified_split, train_classifier


def blobs(n: int = 300, c: int = 4, d: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(c, d))
    y = rng.integers(0, c, n)
    x = centres[y] + rng.normal(scale=0.8, size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), y


def test_head_learns_and_stops_early() -> None:
    x, y = blobs()
    head = LinearHead(HeadConfig(32, 4, max_epochs=2000, patience=10)).fit(x[:200], y[:200], x[200:], y[200:])
    assert (head.predict(x[200:]) == y[200:]).mean() > 0.9
    assert head.best_epoch < 2000
    probs = head.predict_proba(x[:5])
    assert probs.shape == (5, 4) and np.allclose(probs.sum(axis=1), 1.0)


def test_the_validation_curve_is_the_loss_early_stopping_watches() -> None:
    x, y = blobs(seed=4)
    config = HeadConfig(32, 4, max_epochs=300, patience=10**6)
    curve = LinearHead(config).validation_curve(x[:200], y[:200], x[200:], y[200:])
    stopped = LinearHead(config).fit(x[:200], y[:200], x[200:], y[200:])
    assert curve.shape == (300,) and stopped.best_epoch == int(np.argmin(curve)) + 1


def test_cv_epochs_stop_where_held_out_loss_is_lowest_summed_over_folds() -> None:
    x, y = blobs(n=200, d=32, seed=5)
    y = np.where(np.random.default_rng(5).random(200) < 0.3, (y + 1) % 4, y)  # 30% label noise: training overfits
    config = HeadConfig(32, 4, lr=0.2, weight_decay=0.0, max_epochs=400)
    epochs = cv_epochs(x, y, config, folds=4, seed=1)
    fold = stratified_folds(y, 4, 1)
    total = sum(
        LinearHead(config).validation_curve(x[fold != f], y[fold != f], x[fold == f], y[fold == f]) for f in range(4)
    )
    assert epochs == int(np.argmin(total)) + 1
    assert 1 < epochs < 400  # noisy labels: the held-out loss turns up before the last epoch
    assert cv_epochs(x, y, config, folds=4, seed=1) == epochs  # deterministic


def test_head_save_load_round_trip(tmp_path: Path) -> None:
    x, y = blobs()
    head = LinearHead(HeadConfig(32, 4)).fit(x, y)
    head.save(tmp_path)
    loaded = LinearHead.load(tmp_path)
    assert np.array_equal(loaded.predict_proba(x), head.predict_proba(x))
    assert loaded.config == head.config
    assert head.stats is not None and loaded.stats is not None
    assert torch.equal(loaded.stats.mean, head.stats.mean) and torch.equal(loaded.stats.rms, head.stats.rms)


def test_int8_variant_is_smaller_and_agrees() -> None:
    x, y = blobs()
    linear = LinearHead(HeadConfig(32, 4)).fit(x, y).linear
    assert isinstance(linear, torch.nn.Linear)
    q = compress_linear(linear, "int8")
    assert isinstance(q, Int8Linear)
    assert state_bytes(q) < state_bytes(linear) / 2
    xt = torch.as_tensor(x)
    with torch.no_grad():
        agree = (q(xt).argmax(1) == linear(xt).argmax(1)).float().mean().item()
    assert agree > 0.98


def test_pruned_variant_zeroes_exactly_twenty_percent() -> None:
    linear = torch.nn.Linear(50, 10)
    pruned = compress_linear(linear, "pruned")
    assert zero_fraction(pruned) == pytest.approx(0.2)
    assert zero_fraction(linear) == 0.0  # the original is untouched
    both = compress_linear(linear, "int8_pruned")
    assert zero_fraction(both) >= 0.2


def skewed_blobs(n: int = 2000, c: int = 6, d: int = 50, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Embedding-like data: an offset shared by all classes and very unequal feature scales."""
    rng = np.random.default_rng(seed)
    scale = np.exp(rng.normal(scale=1.0, size=d))
    y = rng.integers(0, c, n)
    x = 2.0 * scale + scale * (rng.normal(size=(c, d))[y] * 0.6 + rng.normal(size=(n, d)))
    return x.astype(np.float32), y


def test_activation_aware_pruning_keeps_the_logits_at_the_mean_and_agrees_better() -> None:
    x, y = skewed_blobs()
    head = LinearHead(HeadConfig(50, 6, max_epochs=300)).fit(x, y)
    assert head.stats is not None
    linear = head.linear
    assert isinstance(linear, torch.nn.Linear)
    aware, plain = prune_linear(linear, stats=head.stats), prune_linear(linear)
    assert zero_fraction(aware) == pytest.approx(0.2) and zero_fraction(plain) == pytest.approx(0.2)
    xt = torch.as_tensor(x)
    with torch.no_grad():
        # The removed weights' average contribution went into the bias: at the mean input nothing moves.
        mean = head.stats.mean[None, :]
        assert torch.allclose(aware(mean), linear(mean), atol=1e-4)
        assert not torch.allclose(plain(mean), linear(mean), atol=1e-2)
        reference = linear(xt).argmax(1)
        agree_aware = (aware(xt).argmax(1) == reference).float().mean().item()
        agree_plain = (plain(xt).argmax(1) == reference).float().mean().item()
    assert agree_aware > agree_plain


def test_refit_keeps_the_zeros_and_reproduces_the_logits_better() -> None:
    x, y = skewed_blobs()
    head = LinearHead(HeadConfig(50, 6, max_epochs=300)).fit(x, y)
    linear = head.linear
    assert isinstance(linear, torch.nn.Linear) and head.stats is not None
    pruned = prune_linear(linear, stats=head.stats)
    xt = torch.as_tensor(x)
    refit = refit_pruned(linear, pruned, xt)
    assert torch.equal(refit.weight == 0, pruned.weight == 0)  # the same weights are gone
    with torch.no_grad():
        error_before = float((pruned(xt) - linear(xt)).pow(2).mean())
        error_after = float((refit(xt) - linear(xt)).pow(2).mean())
    assert error_after < 0.9 * error_before  # least squares: never worse; here clearly better
    # nothing pruned: the least-squares refit returns the layer itself (up to the small ridge)
    same = refit_pruned(linear, prune_linear(linear, amount=0.0), xt)
    assert torch.allclose(same.weight, linear.weight, atol=1e-4) and torch.allclose(same.bias, linear.bias, atol=1e-4)


def test_the_fit_head_carries_its_refit_pruned_layer_through_save_and_load(tmp_path: Path) -> None:
    x, y = skewed_blobs()
    head = LinearHead(HeadConfig(50, 6, max_epochs=100)).fit(x, y)
    assert head.pruned is not None and zero_fraction(head.compressed("pruned")) == pytest.approx(0.2)
    assert head.compressed("pruned") is head.pruned
    head.save(tmp_path)
    loaded = LinearHead.load(tmp_path)
    assert loaded.pruned is not None and torch.equal(loaded.pruned.weight, head.pruned.weight)
    int8_pruned = loaded.compressed("int8_pruned")
    assert isinstance(int8_pruned, Int8Linear) and zero_fraction(int8_pruned) == pytest.approx(0.2)


def test_pruning_without_statistics_is_plain_magnitude_pruning() -> None:
    linear = torch.nn.Linear(20, 3)
    stats = FeatureStats(mean=torch.zeros(20), rms=torch.ones(20))
    # Unit scales and a zero mean make the importance |w|: the same weights go, the bias stays.
    assert torch.equal(prune_linear(linear, stats=stats).weight, prune_linear(linear).weight)
    assert torch.equal(prune_linear(linear, stats=stats).bias, linear.bias)


def test_classifier_round_trip_in_every_variant(tmp_path: Path) -> None:
    x, y = blobs()
    labels = ["a", "b", "c", "d"]
    clf, report = train_classifier(x, y, labels, seed=0)
    assert report.metrics["validation"]["fused"]["accuracy"] > 0.85
    clf.save(tmp_path)
    for variant in VARIANTS:
        loaded = FusedClassifier.load(tmp_path, variant)
        assert loaded.variant == variant and loaded.params == clf.params
        agreement = np.mean(np.array(loaded.predict(x)) == np.array(clf.predict(x)))
        assert agreement > 0.97, variant


def test_head_alone_when_no_neighbours() -> None:
    x, y = blobs()
    clf, _ = train_classifier(x, y, ["a", "b", "c", "d"], seed=0)
    with_nb = clf.predict_proba(x[:3], [[Neighbour("zzz-unknown", 0.9)]] * 3)  # unknown labels do not vote
    alone = clf.predict_proba(x[:3])
    assert with_nb.shape == alone.shape == (3, 4)
    assert np.allclose(alone.sum(axis=1), 1.0)


def test_signals_are_computed_once_for_the_blend_and_the_disagreement() -> None:
    x, y = blobs()
    clf, _ = train_classifier(x, y, ["a", "b", "c", "d"], seed=0)
    rows = [[Neighbour("a", 0.9), Neighbour("b", 0.8)], [Neighbour("zzz-unknown", 0.9)]]
    signals = clf.signals(x[:2], rows)
    assert np.allclose(clf.fuse_signals(signals, rows), clf.predict_proba(x[:2], rows))
    tv = signals.head_knn_disagreement()
    expected = 0.5 * np.abs(clf.head_proba(x[:1]) - clf.knn_proba(rows[:1])).sum()
    assert tv[0] is not None and tv[0] == pytest.approx(expected) and 0.0 <= tv[0] <= 1.0
    assert tv[1] is None  # no neighbour of a known label: nothing to disagree with
    assert clf.signals(x[:2]).head_knn_disagreement() == [None, None]


def test_stratified_split_keeps_every_class_in_training() -> None:
    y = np.array([0] * 10 + [1] * 3 + [2])
    tr, va = stratified_split(y, 0.2, seed=0)
    assert set(y[tr]) == {0, 1, 2}
    assert set(y[va]) == {0, 1}
    assert len(set(tr) & set(va)) == 0 and len(tr) + len(va) == len(y)


def test_registry_versions_and_activation(tmp_path: Path) -> None:
    x, y = blobs()
    clf, _ = train_classifier(x, y, ["a", "b", "c", "d"], seed=0)
    registry = ModelRegistry(tmp_path)
    assert registry.active_version() is None
    with pytest.raises(RegistryError):
        registry.load()
    first = registry.save(clf, {"embedder": "e"})
    second = registry.save(clf, {"embedder": "e", "parent": first})
    registry.activate(first)
    assert registry.active_version() == first
    loaded, meta = registry.load(variant="int8")
    assert meta["version"] == first and meta["variant_bytes"]["int8"] < meta["variant_bytes"]["fp32"]
    assert loaded.variant == "int8"
    registry.activate(second)
    assert [m["version"] for m in registry.versions()] == [second, first]
    with pytest.raises(RegistryError):
        registry.activate("no-such-version")
    with pytest.raises(RegistryError):
        registry.path("../escape")


def test_classifier_rejects_mismatched_labels() -> None:
    head = LinearHead(HeadConfig(8, 3))
    with pytest.raises(ValueError, match="3 outputs"):
        FusedClassifier(["a", "b"], head, FusionParams())


def test_a_fit_does_not_depend_on_what_ran_before_and_leaves_the_global_rng_alone() -> None:
    x, y = blobs()
    config = HeadConfig(32, 4, max_epochs=40, seed=7)
    torch.manual_seed(1)
    first = LinearHead(config).fit(x, y)
    torch.manual_seed(2)
    torch.randn(1000)  # other work consumed random numbers in between
    second = LinearHead(config).fit(x, y)
    weights = [h.linear.state_dict()["weight"] for h in (first, second)]
    assert torch.equal(*weights) and first.best_epoch == second.best_epoch
    torch.manual_seed(3)
    LinearHead(config)
    expected = torch.rand(1)
    torch.manual_seed(3)
    LinearHead(config).fit(x, y)
    assert torch.equal(torch.rand(1), expected)


def test_registry_skips_tmp_folders_and_names_the_damaged_file(tmp_path: Path) -> None:
    x, y = blobs()
    clf, _ = train_classifier(x, y, ["a", "b", "c", "d"], seed=0)
    registry = ModelRegistry(tmp_path)
    with pytest.raises(NoActiveModel):
        registry.load()
    first = registry.save(clf, {"embedder": "e"})
    second = registry.save(clf, {"embedder": "e"})
    registry.activate(second)
    shutil.copytree(tmp_path / second, tmp_path / f".tmp-{registry.new_version_id()}")  # a crashed save
    assert [m["version"] for m in registry.versions()] == [second, first]
    head = tmp_path / second / "head.safetensors"
    head.write_bytes(head.read_bytes()[:100])
    with pytest.raises(ModelDamaged) as info:
        registry.load()
    assert str(head) in str(info.value) and f"jobclass models activate {first}" in str(info.value)
    (tmp_path / "ACTIVE").write_bytes(b"\xff\x00")
    with pytest.raises(ModelDamaged, match="marker"):
        registry.load()
    assert registry.active_version() is None  # lenient: a parent, a listing mark
    registry.activate(first)
    registry.discard(second)
    assert [m["version"] for m in registry.versions()] == [first]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == sorted(["ACTIVE", first])
