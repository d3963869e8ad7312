"""Fine-tuning pieces that need no model: triplet sampling, the label-aware loss, the kNN score and the
encoder registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from indexing.finetune import (
    CosineSoftmaxLoss,
    LabelAwareMNRLoss,
    SupConLoss,
    build_triplets,
    class_centroids,
    knn_predictions,
    labelled_data_hash,
)
from models.registry import EncoderRegistry, ModelRegistry, RegistryError


# ---- triplets ---------------------------------------------------------------------------------
def _data() -> tuple[list[str], np.ndarray]:
    texts = [f"a{i}" for i in range(30)] + [f"b{i}" for i in range(5)] + [f"c{i}" for i in range(8)] + ["d0"]
    y = np.array([0] * 30 + [1] * 5 + [2] * 8 + [3])
    return texts, y


def test_triplets_pair_a_class_with_itself_and_another_class() -> None:
    texts, y = _data()
    triplets = build_triplets(texts, y, max_pairs_per_class=12, seed=1)
    assert triplets
    for a, p, n in triplets:
        assert y[a] == y[p] and a != p and texts[a] != texts[p]
        assert y[n] != y[a]
    per_class = np.bincount([y[a] for a, _, _ in triplets], minlength=4)
    assert per_class[0] == 12  # capped
    assert per_class[1] == 10 and per_class[2] == 12  # small classes: at most 2 pairs per text
    assert per_class[3] == 0  # a class with one text gives no pair
    anchors_0 = [a for a, _, _ in triplets if y[a] == 0]
    assert len(set(anchors_0)) == 12  # every member once before any repeats
    assert build_triplets(texts, y, 12, seed=1) == triplets  # deterministic
    assert build_triplets(texts, y, 12, seed=2) != triplets


def test_hard_negatives_are_the_nearest_texts_of_another_class() -> None:
    texts = ["x0", "x1", "x2", "y0", "y1", "z0", "z1"]
    y = np.array([0, 0, 0, 1, 1, 2, 2])
    emb = np.array(
        [[1, 0, 0], [1, 0.1, 0], [1, 0, 0.1], [0.9, 0.3, 0], [0, 1, 0], [0, 0, 1], [0, 0.1, 1]], dtype=np.float32
    )
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    triplets = build_triplets(texts, y, 3, seed=0, embeddings=emb, hard_pool=1)
    for a, _, n in triplets:
        if y[a] == 0:
            assert n == 3  # "y0" sits next to the x texts: the hardest negative
        assert y[n] != y[a]


def test_a_single_class_cannot_be_fine_tuned() -> None:
    with pytest.raises(ValueError):
        build_triplets(["a", "b"], np.array([0, 1]), 5, seed=0)


def test_data_hash_ignores_order_but_not_labels() -> None:
    assert labelled_data_hash(["a", "b"], ["x", "y"]) == labelled_data_hash(["b", "a"], ["y", "x"])
    assert labelled_data_hash(["a", "b"], ["x", "y"]) != labelled_data_hash(["a", "b"], ["y", "x"])


# ---- loss -------------------------------------------------------------------------------------
class _Table(torch.nn.Module):
    """A "model" whose sentence embedding is looked up by the ids in the features."""

    def __init__(self, vectors: torch.Tensor) -> None:
        super().__init__()
        self.vectors = torch.nn.Parameter(vectors.clone())

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"sentence_embedding": self.vectors[features["ids"]]}


def _loss(vectors: torch.Tensor, labels: list[list[int]]) -> float:
    model = _Table(vectors)
    batch = len(labels)
    feats = [{"ids": torch.arange(batch) + i * batch} for i in range(3)]
    return float(LabelAwareMNRLoss(model, scale=10.0)(feats, torch.tensor(labels)).detach())


def test_same_class_candidates_are_masked_not_pushed_away() -> None:
    torch.manual_seed(1)
    vectors = torch.nn.functional.normalize(torch.randn(6, 4), dim=-1)
    labels = [[0, 1], [0, 1]]  # both anchors of class 0, both negatives of class 1
    got = _loss(vectors, labels)
    a, p, n = vectors[:2], vectors[2:4], vectors[4:]
    expected = 0.0
    for i in range(2):
        # candidates: own positive, both negatives; the other anchor's positive (same class) is masked
        logits = torch.stack([a[i] @ p[i], a[i] @ n[0], a[i] @ n[1]]) * 10.0
        expected += float(-torch.log_softmax(logits, 0)[0]) / 2
    assert got == pytest.approx(expected, rel=1e-5)
    # plain MNRL (no mask) would differ: the other positive would be a negative
    unmasked = 0.0
    for i in range(2):
        logits = torch.stack([a[i] @ p[i], a[i] @ p[1 - i], a[i] @ n[0], a[i] @ n[1]]) * 10.0
        unmasked += float(-torch.log_softmax(logits, 0)[0]) / 2
    assert got != pytest.approx(unmasked, rel=1e-3)


def test_supcon_averages_over_every_same_class_positive() -> None:
    torch.manual_seed(2)
    vectors = torch.nn.functional.normalize(torch.randn(4, 5), dim=-1)
    labels = torch.tensor([0, 0, 1, 2])  # text 0 and 1 share a class; 2 and 3 have no positive in the batch
    model = _Table(vectors)
    got = float(SupConLoss(model, scale=10.0)([{"ids": torch.arange(4)}], labels).detach())
    expected = 0.0
    for i, j in ((0, 1), (1, 0)):  # only anchors with a positive count
        others = [k for k in range(4) if k != i]
        logits = torch.stack([vectors[i] @ vectors[k] for k in others]) * 10.0
        expected += float(-torch.log_softmax(logits, 0)[others.index(j)]) / 2
    assert got == pytest.approx(expected, rel=1e-5)


def _descend(loss_fn: torch.nn.Module, labels: torch.Tensor, steps: int = 30) -> list[float]:
    """Plain SGD on every parameter of the loss (its model's and its own); the loss at each step."""
    optimiser = torch.optim.SGD(loss_fn.parameters(), lr=0.5)
    losses = []
    for _ in range(steps):
        optimiser.zero_grad()
        loss = loss_fn([{"ids": torch.arange(len(labels))}], labels)
        losses.append(float(loss.detach()))
        loss.backward()
        optimiser.step()
    return losses


def test_supcon_pulls_a_class_together() -> None:
    torch.manual_seed(3)
    model = _Table(torch.nn.functional.normalize(torch.randn(6, 8), dim=-1))
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    losses = _descend(SupConLoss(model, scale=10.0), labels)
    assert losses[-1] < 0.5 * losses[0]
    v = torch.nn.functional.normalize(model.vectors.detach(), dim=-1)
    sims = v @ v.T
    assert float(sims[:3, :3].mean()) > float(sims[:3, 3:].mean())


def test_supcon_without_any_positive_is_zero_and_keeps_the_graph() -> None:
    model = _Table(torch.eye(3))
    loss = SupConLoss(model)([{"ids": torch.arange(3)}], torch.tensor([0, 1, 2]))
    loss.backward()
    assert float(loss.detach()) == 0.0 and model.vectors.grad is not None


def test_cosine_softmax_is_a_margin_softmax_over_the_class_proxies() -> None:
    torch.manual_seed(4)
    vectors = torch.randn(3, 5)
    proxies = torch.randn(2, 5)
    labels = torch.tensor([0, 1, 1])
    loss_fn = CosineSoftmaxLoss(_Table(vectors), 2, scale=10.0, margin=0.2, init=proxies.numpy())
    got = float(loss_fn([{"ids": torch.arange(3)}], labels).detach())
    v, w = torch.nn.functional.normalize(vectors, dim=-1), torch.nn.functional.normalize(proxies, dim=-1)
    expected = 0.0
    for i, c in enumerate(labels.tolist()):
        cos = v[i] @ w.T
        cos[c] -= 0.2  # the margin handicaps the true class only
        expected += float(-torch.log_softmax(10.0 * cos, 0)[c]) / 3
    assert got == pytest.approx(expected, rel=1e-5)
    no_margin = CosineSoftmaxLoss(_Table(vectors), 2, scale=10.0, margin=0.0, init=proxies.numpy())
    assert float(no_margin([{"ids": torch.arange(3)}], labels).detach()) < got


def test_cosine_softmax_separates_the_classes_and_moves_its_proxies() -> None:
    torch.manual_seed(5)
    model = _Table(torch.randn(6, 8))
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    init = class_centroids(model.vectors.detach().numpy(), labels.numpy(), 2)
    loss_fn = CosineSoftmaxLoss(model, 2, scale=10.0, init=init)
    losses = _descend(loss_fn, labels)  # the encoder's and the proxies' weights
    assert losses[-1] < 0.5 * losses[0]
    assert not np.allclose(loss_fn.proxies.detach().numpy(), init) and loss_fn.proxy_drift() < 1.0
    pred = loss_fn.logits(model.vectors.detach()).argmax(1)
    assert pred.tolist() == labels.tolist()


def test_class_centroids_are_unit_means_per_class() -> None:
    x = np.array([[1.0, 0.0], [0.0, 1.0], [3.0, 0.0]], dtype=np.float32)
    c = class_centroids(x, np.array([0, 0, 1]), 3)
    assert np.allclose(c[0], [np.sqrt(0.5), np.sqrt(0.5)], atol=1e-6)
    assert np.allclose(c[1], [1.0, 0.0]) and np.allclose(c[2], 0.0)  # a class without texts: a zero row
    with pytest.raises(ValueError, match="3 initial proxies for 2 classes"):
        CosineSoftmaxLoss(_Table(torch.eye(2)), 2, init=c)


# ---- kNN score --------------------------------------------------------------------------------
def test_knn_prediction_follows_the_nearest_labelled_texts() -> None:
    ref = np.eye(3, dtype=np.float32)[[0, 0, 1, 1, 2, 2]]
    ref_y = np.array([0, 0, 1, 1, 2, 2])
    query = np.array([[0.9, 0.1, 0], [0, 0.2, 0.9]], dtype=np.float32)
    preds = knn_predictions(ref, ref_y, query, 3, [(2, 0.05)])
    assert preds[(2, 0.05)].tolist() == [0, 2]


def test_knn_predictions_cover_the_grid_from_one_neighbour_search() -> None:
    # one reference of class 1 right next to the query, three of class 0 a little further away
    ref = np.array([[1.0, 0.0], [0.8, 0.6], [0.8, 0.6], [0.8, 0.6]], dtype=np.float32)
    ref_y = np.array([1, 0, 0, 0])
    query = np.array([[1.0, 0.0]], dtype=np.float32)
    preds = knn_predictions(ref, ref_y, query, 2, [(1, 0.05), (4, 1.0), (4, 0.01), (50, 1.0)])
    assert preds[(1, 0.05)].tolist() == [1]  # the nearest alone
    assert preds[(4, 1.0)].tolist() == [0]  # a flat vote of four: the majority
    assert preds[(4, 0.01)].tolist() == [1]  # a sharp vote: the nearest dominates
    assert preds[(50, 1.0)].tolist() == [0]  # k beyond the references is capped


# ---- encoder registry -------------------------------------------------------------------------
def _st_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "modules.json").write_text("[]")
    (path / "model.safetensors").write_bytes(b"\0" * 16)
    (path / "finetune.json").write_text(json.dumps({"wall_seconds": 1.0}))
    return path


def test_encoder_versions_are_registered_activated_and_rejected(tmp_path: Path) -> None:
    models_dir = tmp_path / "models"
    registry = EncoderRegistry.under(models_dir)
    meta: dict[str, Any] = {"parent": "base", "base_model": "base", "data_hash": "abc", "metrics": {"knn": 0.8}}
    v1 = registry.register(_st_folder(tmp_path / "ft1"), meta)
    assert not (tmp_path / "ft1").exists()  # moved in
    assert registry.metadata(v1)["status"] == "candidate" and registry.active_version() is None
    registry.activate(v1)
    assert registry.active_path() == registry.path(v1) and registry.metadata(v1)["status"] == "active"
    v2 = registry.register(_st_folder(tmp_path / "ft2"), {**meta, "parent": v1}, move=False)
    assert (tmp_path / "ft2").exists()  # copied
    registry.reject(v2, "worse than the champion")
    m2 = registry.metadata(v2)
    assert m2["status"] == "rejected" and m2["parent"] == v1 and m2["reason"] == "worse than the champion"
    assert not (registry.path(v2) / "model.safetensors").exists()  # weights gone, record kept
    assert (registry.path(v2) / "finetune.json").exists()
    with pytest.raises(RegistryError):
        registry.activate(v2)
    with pytest.raises(RegistryError):
        registry.reject(v1, "active")
    assert [m["version"] for m in registry.versions()] == [v2, v1]
    registry.deactivate()
    assert registry.active_version() is None
    # the heads' registry does not mistake the encoders folder for a model version
    assert ModelRegistry(models_dir).versions() == []


def test_registering_something_else_than_a_model_folder_fails(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(RegistryError):
        EncoderRegistry(tmp_path / "enc").register(tmp_path / "empty", {})
    with pytest.raises(RegistryError):
        EncoderRegistry(tmp_path / "enc").metadata("../x")
