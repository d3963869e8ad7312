"""Contrastive fine-tuning of the sentence-transformers encoder on labelled texts (SetFit-style).

Training examples are (anchor, positive, hard negative) triplets built from the labels: for every class
up to ``max_pairs_per_class`` anchors, each paired with another text of its class, and a *hard* negative:
one of the nearest texts of another class under the encoder before fine-tuning. The loss is
MultipleNegativesRankingLoss made label-aware (:class:`LabelAwareMNRLoss`): the other positives and
negatives in the batch serve as extra negatives, except those of the anchor's own class, which plain
MNRL would wrongly push away (with ten classes and batches of 32 that is most of the batch).
Two objectives train on single labelled texts instead: ``supcon`` (:class:`SupConLoss`, every same-class
text in the batch a positive) and ``softmax`` (:class:`CosineSoftmaxLoss`, a margin softmax over one
learnable proxy per class, started at the base encoder's class centroids).

Model selection: a kNN evaluator (similarity-weighted vote of the nearest training texts, texts
embedded the way the service embeds them: sentence chunks, averaged; k and temperature the best of the
fusion's grid, as the service would tune them) scores the validation texts at every evaluation; the
trainer keeps the best checkpoint and stops early when it stops improving.

Everything runs on CPU. ``bf16`` trains under bfloat16 autocast (master weights stay float32); by default it
is on where the CPU computes bfloat16 natively (1.7× faster per step on 128-token ads with AVX512-BF16) and off
where torch would emulate it (≥ 8× slower).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import platform
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from indexing.embed import l2_normalise, native_bf16, resolve_model_path, split_chunks
from indexing.objectives import OBJECTIVES as OBJECTIVES  # re-exported: the CLI lists them
from indexing.objectives import Objective
from models.fusion import KNN_TEMPERATURES, KS
from models.knn import knn_vote

log = logging.getLogger(__name__)
FINETUNE_FILE = "finetune.json"
Say = Callable[[str], None]


@dataclass
class FinetuneConfig:
    objective: Objective = "triplets"
    epochs: float = 1.0
    batch_size: int = 32
    max_pairs_per_class: int = 200  # triplets: anchors per class
    max_texts_per_class: int | None = None  # supcon, softmax: training texts per class (None: all)
    hard_negatives: bool = True
    learning_rate: float = 3e-5
    warmup_ratio: float = 0.1
    seed: int = 20240601
    bf16: bool | None = None  # bfloat16 autocast; None: where the CPU has native bfloat16 (see the module docstring)
    max_seq_length: int | None = 128
    evals_per_epoch: int = 4  # kNN evaluations (and checkpoints) per epoch
    patience: int = 3  # evaluations without improvement before stopping early
    knn_grid: tuple[tuple[int, float], ...] = tuple(itertools.product(KS, KNN_TEMPERATURES))  # the fusion's grid
    max_eval_reference: int = 25000  # training texts the kNN evaluator votes with (the service votes with all)
    max_eval_queries: int = 1500  # validation texts it scores
    chunking: bool = True  # evaluate as the service embeds: mean of sentence-chunk embeddings
    scale: float = 20.0  # logit scale (1 / temperature) of every objective
    margin: float = 0.1  # softmax: additive cosine margin (CosFace) on the true class
    proxy_learning_rate: float = 1e-2  # softmax: learning rate of the class proxies (the encoder's is learning_rate)
    threads: int | None = None  # torch threads; None keeps torch's default
    keep_checkpoints: bool = False  # a finished run deletes OUT/checkpoints (an interrupted one keeps them)


@dataclass
class FinetuneResult:
    out_dir: Path
    base_model: str
    data_hash: str
    n_train_texts: int
    n_examples: int
    n_classes: int
    steps: int
    best_step: int | None
    wall_seconds: float
    train_seconds: float
    texts_per_s: float  # sequences through forward + backward per second of training
    metrics: dict[str, float]  # kNN accuracy on validation: before fine-tuning and of the best checkpoint
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out_dir"] = str(self.out_dir)
        return d


# ---- data -------------------------------------------------------------------------------------
def labelled_data_hash(texts: Sequence[str], labels: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for text, label in sorted(zip(texts, labels, strict=True)):
        digest.update(f"{label}\t{hashlib.sha256(text.encode()).hexdigest()}\n".encode())
    return digest.hexdigest()[:16]


def build_triplets(
    texts: Sequence[str],
    y: np.ndarray,
    max_pairs_per_class: int,
    seed: int,
    embeddings: np.ndarray | None = None,
    hard_pool: int = 5,
) -> list[tuple[int, int, int]]:
    """(anchor, positive, negative) indices into ``texts``.

    Per class, up to ``max_pairs_per_class`` anchors (each member once before any repeats); the
    positive is another member of the class with a different text. The negative is drawn from the
    ``hard_pool`` nearest texts of another class under ``embeddings`` (rows L2-normalised), or
    uniformly from other classes when no embeddings are given. Classes with one distinct text give no
    pair."""
    rng = np.random.default_rng(seed)
    y = np.asarray(y)
    classes = np.unique(y)
    triplets: list[tuple[int, int, int]] = []
    anchors: list[tuple[int, int]] = []
    for cls in classes:
        members = np.flatnonzero(y == cls)
        if len({texts[int(i)] for i in members}) < 2:
            continue
        n = min(max_pairs_per_class, max(len(members), 1) * 2)  # a small class gives at most 2 pairs per text
        order = np.concatenate([rng.permutation(members) for _ in range(-(-n // len(members)))])[:n]
        for a in order:
            for _ in range(10):
                p = int(rng.choice(members))
                if p != a and texts[p] != texts[int(a)]:
                    anchors.append((int(a), p))
                    break
    if not anchors:
        raise ValueError("fine-tuning needs at least one class with two different texts")
    anchor_idx = np.array([a for a, _ in anchors])
    if embeddings is not None:
        negatives = _hard_negatives(embeddings, y, anchor_idx, hard_pool, rng)
    else:
        negatives = np.array([rng.choice(np.flatnonzero(y != y[a])) for a in anchor_idx])
    for (a, p), n_ in zip(anchors, negatives, strict=True):
        triplets.append((a, p, int(n_)))
    order = rng.permutation(len(triplets))
    return [triplets[i] for i in order]


def _hard_negatives(
    embeddings: np.ndarray, y: np.ndarray, anchors: np.ndarray, pool: int, rng: np.random.Generator
) -> np.ndarray:
    out = np.empty(len(anchors), dtype=np.int64)
    for start in range(0, len(anchors), 1024):
        block = anchors[start : start + 1024]
        sims = embeddings[block] @ embeddings.T
        sims[y[None, :] == y[block][:, None]] = -np.inf  # only other classes
        top = np.argpartition(-sims, min(pool, sims.shape[1] - 1), axis=1)[:, :pool]
        pick = top[np.arange(len(block)), rng.integers(0, top.shape[1], len(block))]
        out[start : start + len(block)] = pick
    return out


# ---- loss -------------------------------------------------------------------------------------
class LabelAwareMNRLoss(nn.Module):
    """MultipleNegativesRankingLoss over (anchor, positive, negative) with labels: candidates of the
    anchor's own class (other than its positive) are masked out of the softmax instead of being
    treated as negatives. ``labels`` is ``(batch, 2)``: the anchor/positive class and the negative's
    class."""

    def __init__(self, model: Any, scale: float = 20.0) -> None:
        super().__init__()
        self.model = model
        self.scale = scale

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        reps = [self.model(features)["sentence_embedding"] for features in sentence_features]
        anchor, candidates = reps[0], torch.cat(reps[1:])
        anchor = nn.functional.normalize(anchor.float(), dim=-1)
        candidates = nn.functional.normalize(candidates.float(), dim=-1)
        scores = anchor @ candidates.T * self.scale
        batch = anchor.shape[0]
        labels = labels.view(batch, -1).to(scores.device)
        cand_labels = torch.cat([labels[:, 0]] + [labels[:, 1]] * (len(reps) - 2))
        same = labels[:, :1] == cand_labels[None, :]
        target = torch.arange(batch, device=scores.device)
        same[target, target] = False  # the own positive stays
        scores = scores.masked_fill(same, float("-inf"))
        return nn.functional.cross_entropy(scores, target)

    def get_config_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "same_class_masked": True}


class SupConLoss(nn.Module):
    """Supervised contrastive loss (Khosla et al. 2020) over a batch of labelled texts: each text is an
    anchor whose positives are all other texts of its class in the batch, contrasted against every
    other text of the batch. One forward pass per text (a triplet costs three), so an epoch covers
    every training text at a third of the cost of as many triplets; anchors with no positive in the
    batch contribute nothing."""

    def __init__(self, model: Any, scale: float = 20.0) -> None:
        super().__init__()
        self.model = model
        self.scale = scale

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        (features,) = list(sentence_features)
        reps = nn.functional.normalize(self.model(features)["sentence_embedding"].float(), dim=-1)
        labels = labels.view(-1).to(reps.device)
        n = reps.shape[0]
        self_mask = torch.eye(n, dtype=torch.bool, device=reps.device)
        scores = (reps @ reps.T * self.scale).masked_fill(self_mask, float("-inf"))
        log_prob = scores.log_softmax(dim=1).masked_fill(self_mask, 0.0)
        positive = (labels[:, None] == labels[None, :]) & ~self_mask
        n_pos = positive.sum(dim=1)
        has = n_pos > 0
        if not bool(has.any()):
            return (reps * 0.0).sum()  # keeps the graph; nothing to learn from this batch
        per_anchor = -(log_prob * positive).sum(dim=1)[has] / n_pos[has]
        return per_anchor.mean()

    def get_config_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "objective": "supcon"}


class CosineSoftmaxLoss(nn.Module):
    """Normalised softmax with an additive margin (NormFace / CosFace) over the labels: one learnable
    unit vector (proxy) per class, logits ``scale·(cos(e, w_c) − margin·[c = y])``, cross-entropy.

    Each text is pulled towards its class's proxy and pushed from every other class's, so classes become
    tight, separated cones on the sphere, which both the kNN vote and a linear head read. Unlike the
    pair objectives it needs no positive in the batch and sees every class at every step. The proxies
    start at the base encoder's class centroids (``init``): training starts from a nearest-centroid
    classifier instead of random directions, and the first steps move the encoder, not the proxies."""

    def __init__(
        self, model: Any, n_classes: int, *, scale: float = 20.0, margin: float = 0.1, init: np.ndarray | None = None
    ) -> None:
        super().__init__()
        self.model = model
        self.scale = scale
        self.margin = margin
        if init is None:
            dim = int(model.get_embedding_dimension())
            init = np.random.default_rng(0).standard_normal((n_classes, dim)).astype(np.float32)
        if init.shape[0] != n_classes:
            raise ValueError(f"{init.shape[0]} initial proxies for {n_classes} classes")
        self.initial = torch.as_tensor(np.asarray(init, dtype=np.float32)).clone()
        self.proxies = nn.Parameter(self.initial.clone())

    def proxy_drift(self) -> float:
        """Mean cosine between each proxy and where it started (1.0: untrained)."""
        with torch.no_grad():
            unit = nn.functional.normalize
            return float((unit(self.proxies, dim=-1) * unit(self.initial, dim=-1)).sum(dim=1).mean())

    def logits(self, reps: Tensor) -> Tensor:
        return nn.functional.normalize(reps.float(), dim=-1) @ nn.functional.normalize(self.proxies, dim=-1).T

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        (features,) = list(sentence_features)
        cos = self.logits(self.model(features)["sentence_embedding"])
        labels = labels.view(-1).to(cos.device)
        margin = nn.functional.one_hot(labels, cos.shape[1]).to(cos.dtype) * self.margin
        return nn.functional.cross_entropy(self.scale * (cos - margin), labels)

    def get_config_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "margin": self.margin, "objective": "softmax"}


def class_centroids(embeddings: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """Unit-length mean embedding per class (a class with no text gets a zero row)."""
    sums = np.zeros((n_classes, embeddings.shape[1]), dtype=np.float64)
    np.add.at(sums, y, embeddings)
    return l2_normalise(sums.astype(np.float32))


# ---- evaluation -------------------------------------------------------------------------------
def encode_texts(
    model: Any, texts: Sequence[str], *, chunking: bool, batch_size: int = 64, bf16: bool = True
) -> np.ndarray:
    """L2-normalised embeddings as the service computes them (sentence chunks averaged when ``chunking``)."""
    if len(texts) == 0:
        return np.zeros((0, model.get_embedding_dimension()), dtype=np.float32)
    chunked = [split_chunks(t) for t in texts] if chunking else [[t] for t in texts]
    flat = [c for chunks in chunked for c in chunks]
    was_training = model.training
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        vectors = model.encode(flat, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
    model.train(was_training)
    vectors = l2_normalise(np.asarray(vectors, dtype=np.float32))
    out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
    start = 0
    for i, chunks in enumerate(chunked):
        out[i] = vectors[start : start + len(chunks)].mean(axis=0)
        start += len(chunks)
    return l2_normalise(out)


def knn_predictions(
    ref: np.ndarray,
    ref_y: np.ndarray,
    query: np.ndarray,
    n_classes: int,
    grid: Sequence[tuple[int, float]],
) -> dict[tuple[int, float], np.ndarray]:
    """Predicted class per query for every ``(k, temperature)`` in ``grid``: a similarity-weighted vote of
    its ``k`` nearest references (found once, for the largest ``k``)."""
    sims = query @ ref.T
    k_max = min(max(k for k, _ in grid), ref.shape[0])
    top = np.argpartition(-sims, k_max - 1, axis=1)[:, :k_max]
    top_s = np.take_along_axis(sims, top, axis=1)
    order = np.argsort(-top_s, axis=1)
    top, top_s = np.take_along_axis(top, order, axis=1), np.take_along_axis(top_s, order, axis=1)
    labels = ref_y[top]
    return {(k, t): knn_vote(labels, top_s, n_classes, k=min(k, k_max), temperature=t).argmax(1) for k, t in grid}


def _per_class_cap(y: np.ndarray, cap: int | None, seed: int) -> np.ndarray:
    """Indices of at most ``cap`` texts per class (all when ``cap`` is None), shuffled."""
    rng = np.random.default_rng(seed)
    if cap is None:
        return rng.permutation(len(y))
    picked = [rng.permutation(np.flatnonzero(y == cls))[:cap] for cls in np.unique(y)]
    return rng.permutation(np.concatenate(picked))


def _stratified_cap(y: np.ndarray, cap: int, seed: int) -> np.ndarray:
    if len(y) <= cap:
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    picked = []
    for cls in np.unique(y):
        members = np.flatnonzero(y == cls)
        share = max(1, round(cap * len(members) / len(y)))
        picked.append(rng.permutation(members)[:share])
    return np.sort(np.concatenate(picked))


def make_knn_evaluator(
    ref_texts: Sequence[str],
    ref_y: np.ndarray,
    val_texts: Sequence[str],
    val_y: np.ndarray,
    n_classes: int,
    cfg: FinetuneConfig,
    coarse_of: np.ndarray | None = None,
    name: str = "val",
) -> Any:
    """A sentence-transformers evaluator: kNN accuracy of the validation texts (primary metric), plus
    coarse accuracy (fine predictions mapped up through ``coarse_of``) when labels are fine."""
    try:  # sentence-transformers ≥ 6 moved it
        from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator
    except ImportError:  # pragma: no cover - older releases
        from sentence_transformers.evaluation import SentenceEvaluator  # type: ignore[no-redef]

    ref_pick = _stratified_cap(np.asarray(ref_y), cfg.max_eval_reference, cfg.seed)
    val_pick = _stratified_cap(np.asarray(val_y), cfg.max_eval_queries, cfg.seed)
    refs = [ref_texts[i] for i in ref_pick]
    refs_y = np.asarray(ref_y)[ref_pick]
    queries = [val_texts[i] for i in val_pick]
    queries_y = np.asarray(val_y)[val_pick]

    class KnnAccuracyEvaluator(SentenceEvaluator):
        def __init__(self) -> None:
            super().__init__()
            self.name = name
            self.primary_metric = "knn_accuracy"
            self.greater_is_better = True
            self.history: list[dict[str, float]] = []

        def __call__(
            self, model: Any, output_path: str | None = None, epoch: float = -1, steps: int = -1
        ) -> dict[str, float]:
            t0 = time.perf_counter()
            ref = encode_texts(model, refs, chunking=cfg.chunking, bf16=_eval_bf16(cfg))
            query = encode_texts(model, queries, chunking=cfg.chunking, bf16=_eval_bf16(cfg))
            # The service tunes k and the vote's temperature for each encoder, so a checkpoint is scored with
            # its best setting from the same grid: a fixed one would reward changes that tuning gets anyway.
            preds = knn_predictions(ref, refs_y, query, n_classes, cfg.knn_grid)
            truth = queries_y if coarse_of is None else coarse_of[queries_y]  # what selection is on
            (k, t), pred = max(
                preds.items(),
                key=lambda kv: (float(np.mean((kv[1] if coarse_of is None else coarse_of[kv[1]]) == truth)), -kv[0][0]),
            )
            metrics = {"knn_accuracy": float(np.mean(pred == queries_y)), "knn_k": float(k), "knn_temperature": t}
            if coarse_of is not None:
                metrics["knn_coarse_accuracy"] = float(np.mean(coarse_of[pred] == truth))
            self.history.append({**metrics, "steps": float(max(steps, 0)), "seconds": time.perf_counter() - t0})
            log.info("kNN evaluation at step %s: %s", steps, metrics)
            metrics = self.prefix_name_to_metrics(metrics, self.name)
            self.store_metrics_in_model_card_data(model, metrics, cast(Any, epoch), steps)
            return metrics

    return KnnAccuracyEvaluator()


# ---- fine-tuning ------------------------------------------------------------------------------
def load_model(base_model: str, max_seq_length: int | None = None) -> Any:
    from sentence_transformers import SentenceTransformer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = SentenceTransformer(resolve_model_path(base_model), device="cpu")
    if max_seq_length is not None:
        model.max_seq_length = min(max_seq_length, model.max_seq_length or max_seq_length)
    return model


def finetune(
    base_model: str,
    train_texts: Sequence[str],
    train_labels: Sequence[str],
    val_texts: Sequence[str],
    val_labels: Sequence[str],
    out_dir: Path | str,
    cfg: FinetuneConfig | None = None,
    *,
    coarse: dict[str, str] | None = None,
    resume: bool | str = False,
    base_embeddings: np.ndarray | None = None,
    show_progress: bool = True,
    say: Say = log.info,
) -> FinetuneResult:
    """Fine-tune ``base_model`` and save the best checkpoint as a sentence-transformers folder in
    ``out_dir`` (with ``finetune.json``). ``coarse`` maps fine labels to coarse ones: the evaluator then
    also reports coarse accuracy, and model selection uses it. ``resume`` continues from the last
    checkpoint in ``out_dir/checkpoints`` (``True``) or from a given checkpoint folder.
    ``base_embeddings`` (L2-normalised, one row per training text) saves re-encoding for hard-negative
    mining."""
    cfg = cfg or FinetuneConfig()
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    targets = _targets(train_labels, val_texts, val_labels, coarse)
    model = load_model(base_model, cfg.max_seq_length)
    t0 = time.perf_counter()
    data = _objective_data(model, train_texts, targets, cfg, base_embeddings, say)
    mining_seconds = time.perf_counter() - t0
    n_labels = len(targets.labels)
    evaluator = make_knn_evaluator(
        train_texts, targets.y_tr, targets.val_texts, targets.y_va, n_labels, cfg, targets.coarse_of
    )
    metric = "knn_coarse_accuracy" if targets.coarse_of is not None else "knn_accuracy"
    say(f"{data.described} from {len(train_texts)} texts, {n_labels} classes; scoring the base encoder")
    before = evaluator(model)
    run = _train(model, data, evaluator, cfg, out / "checkpoints", metric, resume, show_progress)
    history = [h for h in evaluator.history]
    model.save(str(out))
    wall = time.perf_counter() - started
    sequences = data.per_example * min(run.steps * cfg.batch_size, data.n_examples * max(cfg.epochs, 1))
    metrics = {"base_" + k.removeprefix("val_"): float(v) for k, v in before.items() if isinstance(v, int | float)}
    if run.best_metric is not None:
        metrics[f"best_{metric}"] = float(run.best_metric)
    if isinstance(data.loss, CosineSoftmaxLoss):  # how far the class proxies moved from the base centroids
        metrics["proxy_cosine_to_centroid"] = round(data.loss.proxy_drift(), 4)
    result = FinetuneResult(
        out_dir=out,
        base_model=base_model,
        data_hash=labelled_data_hash(train_texts, train_labels),
        n_train_texts=len(train_texts),
        n_examples=data.n_examples,
        n_classes=n_labels,
        steps=run.steps,
        best_step=run.best_step,
        wall_seconds=round(wall, 2),
        train_seconds=round(run.seconds, 2),
        texts_per_s=round(sequences / run.seconds, 2) if run.seconds > 0 else 0.0,
        metrics=metrics,
        history=history,
    )
    _write_info(out, result, cfg, targets.labels, coarse, mining_seconds)
    say(
        f"fine-tuned in {wall:.0f}s ({run.steps} steps, {result.texts_per_s:.1f} texts/s); "
        f"kNN {metric} {metrics.get('base_' + metric, float('nan')):.4f} → {run.best_metric}"
    )
    return result


@dataclass(frozen=True)
class _Targets:
    labels: list[str]  # the training classes, sorted
    y_tr: np.ndarray
    val_texts: list[str]  # the validation texts of a class seen in training
    y_va: np.ndarray
    coarse_of: np.ndarray | None  # fine class index -> coarse class index


def _targets(
    train_labels: Sequence[str], val_texts: Sequence[str], val_labels: Sequence[str], coarse: dict[str, str] | None
) -> _Targets:
    labels = sorted(set(train_labels))
    if len(labels) < 2:
        raise ValueError("fine-tuning needs at least two classes")
    index = {lab: i for i, lab in enumerate(labels)}
    y_tr = np.array([index[lab] for lab in train_labels], dtype=np.int64)
    known = [i for i, lab in enumerate(val_labels) if lab in index]
    y_va = np.array([index[val_labels[i]] for i in known], dtype=np.int64)
    if len(y_va) == 0:
        raise ValueError("the validation set has no text of a class seen in training")
    coarse_of = None
    if coarse is not None:
        coarse_names = sorted(set(coarse.values()))
        coarse_of = np.array([coarse_names.index(coarse[lab]) for lab in labels], dtype=np.int64)
    return _Targets(labels, y_tr, [val_texts[i] for i in known], y_va, coarse_of)


@dataclass(frozen=True)
class _ObjectiveData:
    dataset: Any  # a datasets.Dataset
    loss: nn.Module
    n_examples: int
    per_example: int  # texts per example (a triplet: 3)
    described: str
    lr_mapping: dict[str, float]


def _objective_data(
    model: Any,  # a SentenceTransformer
    train_texts: Sequence[str],
    targets: _Targets,
    cfg: FinetuneConfig,
    base_embeddings: np.ndarray | None,
    say: Say,
) -> _ObjectiveData:
    """The training examples and the loss of ``cfg.objective``."""
    from datasets import Dataset

    y_tr, n_labels = targets.y_tr, len(targets.labels)
    if cfg.objective == "triplets":
        return _triplet_data(model, train_texts, y_tr, cfg, base_embeddings, say)
    picked = _per_class_cap(y_tr, cfg.max_texts_per_class, cfg.seed)
    dataset = Dataset.from_dict({"text": [train_texts[i] for i in picked], "label": [int(y_tr[i]) for i in picked]})
    if cfg.objective == "supcon":
        described = f"{len(picked)} labelled texts (supervised contrastive)"
        return _ObjectiveData(dataset, SupConLoss(model, scale=cfg.scale), len(picked), 1, described, {})
    emb = base_embeddings
    if emb is None:
        say(f"embedding {len(train_texts)} training texts with the base encoder for the class proxies")
        emb = encode_texts(model, train_texts, chunking=cfg.chunking, bf16=_eval_bf16(cfg))
    init = class_centroids(emb, y_tr, n_labels)
    loss = CosineSoftmaxLoss(model, n_labels, scale=cfg.scale, margin=cfg.margin, init=init)
    described = f"{len(picked)} labelled texts (normalised softmax over {n_labels} class proxies)"
    return _ObjectiveData(dataset, loss, len(picked), 1, described, {r"^proxies$": cfg.proxy_learning_rate})


def _triplet_data(
    model: Any,  # a SentenceTransformer
    train_texts: Sequence[str],
    y_tr: np.ndarray,
    cfg: FinetuneConfig,
    base_embeddings: np.ndarray | None,
    say: Say,
) -> _ObjectiveData:
    """(anchor, positive, negative) triplets, hard negatives mined on the base encoder's embeddings."""
    from datasets import Dataset

    emb = base_embeddings
    if cfg.hard_negatives and emb is None:
        say(f"embedding {len(train_texts)} training texts with the base encoder to mine hard negatives")
        emb = encode_texts(model, train_texts, chunking=False, bf16=_eval_bf16(cfg))
    triplets = build_triplets(train_texts, y_tr, cfg.max_pairs_per_class, cfg.seed, emb if cfg.hard_negatives else None)
    dataset = Dataset.from_dict(
        {
            "anchor": [train_texts[a] for a, _, _ in triplets],
            "positive": [train_texts[p] for _, p, _ in triplets],
            "negative": [train_texts[n] for _, _, n in triplets],
            "label": [[int(y_tr[a]), int(y_tr[n])] for a, _, n in triplets],
        }
    )
    loss = LabelAwareMNRLoss(model, scale=cfg.scale)
    return _ObjectiveData(dataset, loss, len(triplets), 3, f"{len(triplets)} triplets", {})


@dataclass(frozen=True)
class _Run:
    steps: int
    best_step: int | None
    best_metric: float | None
    seconds: float  # training time of this process (a resumed run skips some steps)


def _train(
    model: Any,  # a SentenceTransformer
    data: _ObjectiveData,
    evaluator: Any,
    cfg: FinetuneConfig,
    ckpt_dir: Path,
    metric: str,
    resume: bool | str,
    show_progress: bool,
) -> _Run:
    """The sentence-transformers trainer run: evaluate and checkpoint a few times an epoch, keep the best
    checkpoint by ``metric``, stop early after ``cfg.patience`` evaluations without improvement."""
    from sentence_transformers import SentenceTransformerTrainer
    from transformers import EarlyStoppingCallback

    trainer = SentenceTransformerTrainer(
        model=model,
        args=_training_args(cfg, ckpt_dir, data, metric, show_progress),
        train_dataset=data.dataset,
        loss=data.loss,
        evaluator=evaluator,
        callbacks=[EarlyStoppingCallback(early_stopping_patience=cfg.patience)],
    )
    t1 = time.perf_counter()
    resume_arg: bool | str | None = resume if resume else None
    if resume is True and not any(ckpt_dir.glob("checkpoint-*")):
        resume_arg = None
    output = trainer.train(resume_from_checkpoint=resume_arg)
    seconds = time.perf_counter() - t1
    best_ckpt = trainer.state.best_model_checkpoint
    best_step = int(Path(best_ckpt).name.split("-")[-1]) if best_ckpt else None
    return _Run(int(output.global_step), best_step, trainer.state.best_metric, seconds)


def _training_args(
    cfg: FinetuneConfig, ckpt_dir: Path, data: _ObjectiveData, metric: str, show_progress: bool
) -> Any:  # SentenceTransformerTrainingArguments
    from sentence_transformers import SentenceTransformerTrainingArguments

    steps_per_epoch = max(1, -(-data.n_examples // cfg.batch_size))
    eval_steps = max(1, steps_per_epoch // max(cfg.evals_per_epoch, 1))
    return SentenceTransformerTrainingArguments(
        output_dir=str(ckpt_dir),
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        **_warmup(cfg.warmup_ratio),
        bf16=_train_bf16(cfg),
        use_cpu=True,
        seed=cfg.seed,
        data_seed=cfg.seed,
        eval_strategy="steps",
        eval_steps=eval_steps,
        save_strategy="steps",
        save_steps=eval_steps,
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model=f"eval_val_{metric}",
        greater_is_better=True,
        logging_steps=max(1, eval_steps // 2),
        report_to="none",
        learning_rate_mapping=data.lr_mapping,
        disable_tqdm=not show_progress,
        dataloader_num_workers=0,
    )


def _write_info(
    out: Path,
    result: FinetuneResult,
    cfg: FinetuneConfig,
    labels: list[str],
    coarse: dict[str, str] | None,
    mining_seconds: float,
) -> None:
    """``finetune.json`` next to the saved encoder; the checkpoints go unless ``cfg.keep_checkpoints``."""
    info = {
        **result.to_dict(),
        "params": {**asdict(cfg), "bf16": _train_bf16(cfg)},  # as it ran
        "labels": labels,
        "coarse": coarse,
        "mining_seconds": round(mining_seconds, 2),
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
        },
    }
    (out / FINETUNE_FILE).write_text(json.dumps(info, indent=2, ensure_ascii=False))
    if not cfg.keep_checkpoints:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)


def _train_bf16(cfg: FinetuneConfig) -> bool:
    return native_bf16() if cfg.bf16 is None else cfg.bf16


def _eval_bf16(cfg: FinetuneConfig) -> bool:
    """Encode for evaluation and mining in bfloat16 where training runs in it or the CPU computes it natively
    (there it is ≈3× faster at cosine ≈0.9999; emulated, it is slower than float32)."""
    return bool(cfg.bf16) or native_bf16()


def _warmup(ratio: float) -> dict[str, Any]:
    """Transformers 5 takes the warm-up ratio as a float ``warmup_steps``; 4 as ``warmup_ratio``."""
    import transformers

    major = int(transformers.__version__.split(".")[0])
    return {"warmup_steps": ratio} if major >= 5 else {"warmup_ratio": ratio}


def read_finetune_info(path: Path | str) -> dict[str, Any]:
    file = Path(path) / FINETUNE_FILE
    return json.loads(file.read_text()) if file.is_file() else {}
