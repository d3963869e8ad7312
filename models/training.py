"""Train a fused classifier from embeddings: split, fit the head, tune the fusion, refit.

Pure numpy/torch: the caller embeds the texts. The kNN neighbours used for tuning and evaluation
are exact (brute-force cosine), which is what the vector store returns for small collections.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from models.classifier import FusedClassifier, neighbours_from_arrays
from models.fusion import fuse, tune
from models.head import HeadConfig, LinearHead
from models.knn import exact_neighbours, knn_vote
from models.lexical import LexicalConfig, LexicalModel
from models.metrics import summary

MAX_K = 30
CROSSFIT_FOLDS = 5


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): each class with at least two examples gives ``fraction`` of them
    (at least one) to validation; singletons stay in training."""
    rng = np.random.default_rng(seed)
    train: list[int] = []
    val: list[int] = []
    for cls in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == cls))
        if len(members) < 2:
            train.extend(members.tolist())
            continue
        n_val = min(len(members) - 1, max(1, round(len(members) * fraction)))
        val.extend(members[:n_val].tolist())
        train.extend(members[n_val:].tolist())
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(val, dtype=np.int64))


def holdout_split(keys: Sequence[str], y: np.ndarray, fraction: float, salt: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) of a validation split that stays put as the data grows.

    An example is held out when the hash of its key (a vacancy id) falls below ``fraction``. Every model
    trained with the same salt keeps the same examples out of training, so a later model's validation
    set holds nothing an earlier model saw: champion and challenger can be compared on it fairly.
    Guards: a class whose examples all hash into validation keeps its highest-hash one for training, and
    if nothing at all falls into validation, each class with two or more examples gives its lowest one.
    """
    y = np.asarray(y)
    if len(keys) != len(y):
        raise ValueError("keys and y must have the same length")
    u = np.array([int.from_bytes(hashlib.sha256(f"{salt}\0{k}".encode()).digest()[:8], "big") / 2.0**64 for k in keys])
    val = u < fraction
    classes = [np.flatnonzero(y == cls) for cls in np.unique(y)]
    for members in classes:
        if val[members].all():
            val[members[np.argmax(u[members])]] = False
    if not val.any():
        for members in classes:
            if len(members) >= 2:
                val[members[np.argmin(u[members])]] = True
    return np.flatnonzero(~val), np.flatnonzero(val)


@dataclass
class TrainReport:
    n_train: int
    n_val: int
    best_epoch: int
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"n_train": self.n_train, "n_val": self.n_val, "best_epoch": self.best_epoch, **self.metrics}


def neighbour_arrays(
    queries: np.ndarray,
    corpus: np.ndarray,
    corpus_y: np.ndarray,
    k: int = MAX_K,
    *,
    exclude_self: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    idx, scores = exact_neighbours(queries, corpus, k, exclude_self=exclude_self)
    return corpus_y[idx], scores


def stratified_folds(y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """A fold number per example, each class dealt round-robin over the folds in a shuffled order."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=np.int64)
    for cls in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == cls))
        fold[members] = (np.arange(len(members)) + int(rng.integers(folds))) % folds
    return fold


def cv_epochs(x: np.ndarray, y: np.ndarray, config: HeadConfig, folds: int, seed: int) -> int:
    """The head's epoch count chosen by ``folds``-fold cross-validation: each fold's head trains on the
    other folds for ``config.max_epochs`` epochs, and the count with the lowest held-out cross-entropy
    summed over all folds wins.

    Early stopping on a small validation split is noisy: on 614 Google postings (66 held out) it picked
    epoch 53, and the fused accuracy on the scored split moved by 5 points between neighbouring epochs.
    Summed over every training example, the curve is smooth."""
    fold = stratified_folds(y, folds, seed)
    total = np.zeros(config.max_epochs, dtype=np.float64)
    for f in range(folds):
        inside, rest = fold == f, fold != f
        if not inside.any():
            continue
        total += LinearHead(config).validation_curve(x[rest], y[rest], x[inside], y[inside])
    return int(np.argmin(total)) + 1


def out_of_fold(
    x: np.ndarray, y: np.ndarray, n_classes: int, config: HeadConfig, epochs: int, folds: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Head probabilities and kNN neighbours for every training example from models that never saw it.

    Each fold's head is trained on the other folds for ``epochs`` epochs (the early-stopped count of
    the full fit) and its neighbours come from the other folds only, as a new vacancy's come from the
    index. Returns ``(p_head, neighbour_labels, neighbour_scores)`` over all of ``x``.
    """
    fold = stratified_folds(y, folds, seed)
    p_head = np.zeros((len(y), n_classes), dtype=np.float32)
    k = min(MAX_K, len(y) - int(np.bincount(fold).max()))
    nb_labels = np.zeros((len(y), k), dtype=np.int64)
    nb_scores = np.zeros((len(y), k), dtype=np.float32)
    fold_config = replace(config, max_epochs=max(1, epochs))
    for f in range(folds):
        inside, rest = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
        if len(inside) == 0:
            continue
        head = LinearHead(fold_config).fit(x[rest], y[rest], prune=False)  # only its predictions are used
        p_head[inside] = head.predict_proba(x[inside])
        nb_labels[inside], nb_scores[inside] = neighbour_arrays(x[inside], x[rest], y[rest], k)
    return p_head, nb_labels, nb_scores


def lexical_out_of_fold(
    texts: Sequence[str], y: np.ndarray, n_classes: int, config: LexicalConfig, folds: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The lexical model's probabilities (and usable-row mask) for every training text from models that
    never saw it, over the same folds as :func:`out_of_fold`."""
    fold = stratified_folds(y, folds, seed)
    p_lex = np.zeros((len(y), n_classes), dtype=np.float64)
    ok = np.zeros(len(y), dtype=bool)
    for f in range(folds):
        inside, rest = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
        if len(inside) == 0:
            continue
        model = LexicalModel(n_classes, config).fit([texts[int(i)] for i in rest], y[rest])
        p_lex[inside], ok[inside] = model.proba_and_mask([texts[int(i)] for i in inside])
    return p_lex, ok


def train_classifier(
    x: np.ndarray,
    y: np.ndarray,
    labels: Sequence[str],
    *,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    abstain_threshold: float = 0.0,
    refit: bool = True,
    head_config: HeadConfig | None = None,
    crossfit: int = CROSSFIT_FOLDS,
    texts: Sequence[str] | None = None,
    texts_val: Sequence[str] | None = None,
    lexical: LexicalConfig | None = None,
) -> tuple[FusedClassifier, TrainReport]:
    """Fit on ``x``/``y`` (class indices into ``labels``), tune the fusion, report validation metrics,
    and, when ``refit`` is true, refit the head on training + validation data for the early-stopped
    number of epochs (the fusion parameters stay).

    The validation split (given, or carved out of the data) is what the metrics are reported on. With
    ``crossfit >= 2`` the head's epoch count is chosen by cross-validation on the training split
    (:func:`cv_epochs`) and the fusion (α, k, temperatures) is tuned on out-of-fold predictions for every
    training example: a few hundred validation examples make a noisy choice, the whole training set does
    not, and the validation split stays an unbiased score. ``crossfit=0`` early-stops the head and tunes
    the fusion on the validation split.

    With ``texts`` (the cleaned texts of ``x``, and ``texts_val`` of ``x_val`` when given) the lexical
    model is the third signal: fitted, cross-fitted and tuned the same way, and refit with the head.
    """
    n_classes = len(labels)
    t_tr: list[str] | None = None
    t_va: list[str] | None = None
    if x_val is None or y_val is None:
        tr, va = stratified_split(y, val_fraction, seed)
        x_tr, y_tr, x_va, y_va = x[tr], y[tr], x[va], y[va]
        if texts is not None:
            t_tr, t_va = [texts[int(i)] for i in tr], [texts[int(i)] for i in va]
    else:
        x_tr, y_tr, x_va, y_va = x, y, x_val, y_val
        if texts is not None:
            if texts_val is None:
                raise ValueError("texts_val is needed with texts and x_val")
            t_tr, t_va = list(texts), list(texts_val)
    lex_config = lexical or LexicalConfig()
    lex_model = LexicalModel(n_classes, lex_config).fit(t_tr, y_tr) if t_tr is not None else None
    p_lex, lex_ok = lex_model.proba_and_mask(t_va) if lex_model is not None and t_va is not None else (None, None)
    if len(y_va) == 0:
        raise ValueError("training needs at least two labelled examples of some class for validation")
    config = head_config or HeadConfig(dim=x.shape[1], n_classes=n_classes, seed=seed)
    crossfitting = crossfit >= 2 and len(y_tr) >= crossfit * 2
    if crossfitting:  # epochs by cross-validation on the training split; validation stays a clean score
        epochs = cv_epochs(x_tr, y_tr, config, crossfit, seed)
        head = LinearHead(replace(config, max_epochs=epochs)).fit(x_tr, y_tr)
        head.config = config  # the fixed count is recorded in best_epoch, not as the config's ceiling
        epochs_by = f"cross_validation_{crossfit}"
    else:
        head = LinearHead(config).fit(x_tr, y_tr, x_va, y_va)
        epochs_by = "validation"
    p_head = head.predict_proba(x_va)
    nb_labels, nb_scores = neighbour_arrays(x_va, x_tr, y_tr)
    if crossfitting:
        oof = out_of_fold(x_tr, y_tr, n_classes, config, head.best_epoch, crossfit, seed)
        oof_lex, oof_ok = (
            lexical_out_of_fold(t_tr, y_tr, n_classes, lex_config, crossfit, seed) if t_tr is not None else (None, None)
        )
        tuned = tune(*oof, y_tr, n_classes, abstain_threshold=abstain_threshold, p_lex=oof_lex, lex_ok=oof_ok)
        tuning = {"on": f"out_of_fold_{crossfit}", "n": len(y_tr)}
    else:
        tuned = tune(
            p_head,
            nb_labels,
            nb_scores,
            y_va,
            n_classes,
            abstain_threshold=abstain_threshold,
            p_lex=p_lex,
            lex_ok=lex_ok,
        )
        tuning = {"on": "validation", "n": len(y_va)}
    params = tuned.params
    p_knn = knn_vote(nb_labels, nb_scores, n_classes, k=params.k, temperature=params.knn_temperature)
    p_fused = fuse(p_head, p_knn, params, p_lex, lex_ok=lex_ok)
    validation = {"head": summary(p_head, y_va, labels), "knn": summary(p_knn, y_va, labels)}
    if p_lex is not None:
        validation["lexical"] = summary(p_lex, y_va, labels)
    validation["fused"] = summary(p_fused, y_va, labels)
    metrics: dict[str, Any] = {
        "head_epochs": {"by": epochs_by, "epochs": head.best_epoch},
        "fusion_tuning": tuning,
        "validation": validation,
    }
    best_epoch = head.best_epoch
    classifier = FusedClassifier(labels, head, params, lexical=lex_model)
    n_train = len(y_tr)
    if refit:
        classifier = refit_head(classifier, np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va]), best_epoch)
        if t_tr is not None and t_va is not None:
            all_texts, all_y = t_tr + t_va, np.concatenate([y_tr, y_va])
            classifier.lexical = LexicalModel(n_classes, lex_config).fit(all_texts, all_y)
        n_train += len(y_va)
    report = TrainReport(n_train=n_train, n_val=len(y_va), best_epoch=best_epoch, metrics=metrics)
    return classifier, report


def refit_head(classifier: FusedClassifier, x: np.ndarray, y: np.ndarray, epochs: int) -> FusedClassifier:
    """The same classifier with its head retrained from scratch on (x, y) for a fixed number of epochs."""
    config = replace(classifier.head.config, max_epochs=max(1, epochs))
    head = LinearHead(config).fit(x, y)
    head.best_epoch = epochs
    return FusedClassifier(classifier.labels, head, classifier.params, classifier.variant, lexical=classifier.lexical)


def evaluate(
    classifier: FusedClassifier,
    x: np.ndarray,
    y: np.ndarray,
    corpus_x: np.ndarray,
    corpus_y: np.ndarray,
    texts: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Score ``classifier`` on (x, y) (and ``texts`` for the lexical model) with neighbours drawn from
    the labelled corpus."""
    return summary(predict_with_corpus(classifier, x, corpus_x, corpus_y, texts), y, classifier.labels)


def predict_with_corpus(
    classifier: FusedClassifier,
    x: np.ndarray,
    corpus_x: np.ndarray,
    corpus_y: np.ndarray,
    texts: Sequence[str] | None = None,
) -> np.ndarray:
    """Fused probabilities for ``x`` with neighbours drawn from the labelled corpus (exact cosine kNN)."""
    nb_labels, nb_scores = neighbour_arrays(x, corpus_x, corpus_y)
    return classifier.predict_proba(x, neighbours_from_arrays(classifier.labels, nb_labels, nb_scores), texts)
