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

from models.classifier import FusedClassifier, Neighbour, neighbours_from_arrays
from models.conformal import true_class_probs
from models.fusion import fuse, tune
from models.head import HeadConfig, LinearHead
from models.knn import exact_neighbours, hybrid_candidates, hybrid_votes, knn_vote
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
    # the fused probabilities of the validation rows before any refit (not serialised): what prediction sets
    # and automation thresholds can be calibrated on when the validation split is a clean hold-out
    val_probs: np.ndarray | None = field(default=None, repr=False, compare=False)
    # with cross-fitting: each training row's fused out-of-fold probability of its true class and the class,
    # ``(p_true, y)``: more calibration rows for the prediction sets (``models.conformal``), saved with the version
    calibration: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False, compare=False)

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


@dataclass(frozen=True)
class TextInputs:
    """What a row holds beside its embedding: its cleaned text (for the lexical model) and, for hybrid
    retrieval, its BM25 vectors as the index stores them (``docs``) and queries with them (``queries``),
    scipy CSR matrices over one shared term-column space."""

    texts: list[str]
    docs: Any = None
    queries: Any = None

    @property
    def hybrid(self) -> bool:
        return self.docs is not None and self.queries is not None

    def take(self, idx: np.ndarray) -> TextInputs:
        rows = np.asarray(idx, dtype=np.int64)
        pick = lambda m: m[rows] if m is not None else None  # noqa: E731
        return TextInputs([self.texts[int(i)] for i in rows], pick(self.docs), pick(self.queries))

    @staticmethod
    def concat(a: TextInputs, b: TextInputs) -> TextInputs:
        import scipy.sparse as sp

        stack = lambda m, n: sp.vstack([m, n]).tocsr() if m is not None and n is not None else None  # noqa: E731
        return TextInputs(a.texts + b.texts, stack(a.docs, b.docs), stack(a.queries, b.queries))


Votes = dict[str, tuple[np.ndarray, np.ndarray]]


def vote_arrays(
    queries_x: np.ndarray,
    corpus_x: np.ndarray,
    corpus_y: np.ndarray,
    queries: TextInputs | None = None,
    corpus: TextInputs | None = None,
    k: int = MAX_K,
) -> Votes:
    """The neighbour arrays the vote can use: ``{"cosine": …}`` from exact dense kNN, or, when both sides
    carry BM25 vectors, the hybrid query's candidates weighed by cosine and by rank (``"rank"``)."""
    if queries is not None and corpus is not None and queries.hybrid and corpus.hybrid:
        votes = hybrid_votes(queries_x, corpus_x, corpus_y, queries.queries, corpus.docs, k)
        return {name: (labels, scores) for name, (labels, scores) in votes.items()}
    return {"cosine": neighbour_arrays(queries_x, corpus_x, corpus_y, k)}


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
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    config: HeadConfig,
    epochs: int,
    folds: int,
    seed: int,
    inputs: TextInputs | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Head probabilities and kNN neighbours for every training example from models that never saw it.

    Each fold's head is trained on the other folds for ``epochs`` epochs (the early-stopped count of
    the full fit) and its neighbours come from the other folds only, as a new vacancy's come from the
    index. Returns ``(p_head, neighbour_labels, neighbour_scores)`` over all of ``x``; with hybrid
    ``inputs`` see :func:`out_of_fold_votes` for every weighting.
    """
    p_head, votes = out_of_fold_votes(x, y, n_classes, config, epochs, folds, seed, inputs)
    return p_head, *votes["cosine"]


def out_of_fold_votes(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    config: HeadConfig,
    epochs: int,
    folds: int,
    seed: int,
    inputs: TextInputs | None = None,
) -> tuple[np.ndarray, Votes]:
    """:func:`out_of_fold`'s head probabilities and every vote weighting's neighbour arrays."""
    fold = stratified_folds(y, folds, seed)
    p_head = np.zeros((len(y), n_classes), dtype=np.float32)
    k = min(MAX_K, len(y) - int(np.bincount(fold).max()))
    votes: Votes = {}
    fold_config = replace(config, max_epochs=max(1, epochs))
    for f in range(folds):
        inside, rest = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
        if len(inside) == 0:
            continue
        head = LinearHead(fold_config).fit(x[rest], y[rest], prune=False)  # only its predictions are used
        p_head[inside] = head.predict_proba(x[inside])
        q_in, c_in = (inputs.take(inside), inputs.take(rest)) if inputs is not None else (None, None)
        for name, (labels, scores) in vote_arrays(x[inside], x[rest], y[rest], q_in, c_in, k).items():
            if name not in votes:
                votes[name] = (np.full((len(y), k), -1, dtype=np.int64), np.zeros((len(y), k), dtype=np.float32))
            votes[name][0][inside], votes[name][1][inside] = labels, scores
    return p_head, votes


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
    inputs: TextInputs | None = None,
    inputs_val: TextInputs | None = None,
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

    With ``inputs`` (the rows' cleaned texts, and ``inputs_val`` of ``x_val`` when given) the lexical
    model is the third signal: fitted, cross-fitted and tuned the same way, and refit with the head.
    When they carry BM25 vectors, the vote's neighbours are those of the hybrid query (dense + sparse,
    RRF), and tuning also chooses whether they weigh by cosine or by rank.
    """
    n_classes = len(labels)
    in_tr: TextInputs | None = None
    in_va: TextInputs | None = None
    if x_val is None or y_val is None:
        tr, va = stratified_split(y, val_fraction, seed)
        x_tr, y_tr, x_va, y_va = x[tr], y[tr], x[va], y[va]
        if inputs is not None:
            in_tr, in_va = inputs.take(tr), inputs.take(va)
    else:
        x_tr, y_tr, x_va, y_va = x, y, x_val, y_val
        if inputs is not None:
            if inputs_val is None:
                raise ValueError("inputs_val is needed with inputs and x_val")
            in_tr, in_va = inputs, inputs_val
    lex_config = lexical or LexicalConfig()
    lex_model = LexicalModel(n_classes, lex_config).fit(in_tr.texts, y_tr) if in_tr is not None else None
    p_lex, lex_ok = lex_model.proba_and_mask(in_va.texts) if lex_model and in_va is not None else (None, None)
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
    votes_va = vote_arrays(x_va, x_tr, y_tr, in_va, in_tr)
    if crossfitting:
        p_oof, votes_oof = out_of_fold_votes(x_tr, y_tr, n_classes, config, head.best_epoch, crossfit, seed, in_tr)
        oof_lex, oof_ok = (
            lexical_out_of_fold(in_tr.texts, y_tr, n_classes, lex_config, crossfit, seed)
            if in_tr is not None
            else (None, None)
        )
        tuned = _tune(p_oof, votes_oof, y_tr, n_classes, abstain_threshold, oof_lex, oof_ok)
        tuning = {"on": f"out_of_fold_{crossfit}", "n": len(y_tr)}
    else:
        tuned = _tune(p_head, votes_va, y_va, n_classes, abstain_threshold, p_lex, lex_ok)
        tuning = {"on": "validation", "n": len(y_va)}
    params = tuned.params
    nb_labels, nb_scores = votes_va[params.vote]
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
        if in_tr is not None and in_va is not None:
            all_texts, all_y = in_tr.texts + in_va.texts, np.concatenate([y_tr, y_va])
            classifier.lexical = LexicalModel(n_classes, lex_config).fit(all_texts, all_y)
        n_train += len(y_va)
    report = TrainReport(n_train=n_train, n_val=len(y_va), best_epoch=best_epoch, metrics=metrics, val_probs=p_fused)
    if crossfitting and tuned.probs is not None:
        report.calibration = true_class_probs(tuned.probs, y_tr), np.asarray(y_tr, dtype=np.int64)
    return classifier, report


def _tune(
    p_head: np.ndarray,
    votes: Votes,
    y: np.ndarray,
    n_classes: int,
    abstain_threshold: float,
    p_lex: np.ndarray | None,
    lex_ok: np.ndarray | None,
) -> Any:
    extra = {name: arrays for name, arrays in votes.items() if name != "cosine"}
    return tune(
        p_head,
        *votes["cosine"],
        y,
        n_classes,
        abstain_threshold=abstain_threshold,
        p_lex=p_lex,
        lex_ok=lex_ok,
        extra_votes=extra,
    )


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
    inputs: TextInputs | None = None,
    corpus_inputs: TextInputs | None = None,
) -> dict[str, Any]:
    """Score ``classifier`` on (x, y) with neighbours drawn from the labelled corpus (see
    :func:`predict_with_corpus`)."""
    probs = predict_with_corpus(classifier, x, corpus_x, corpus_y, inputs, corpus_inputs)
    return summary(probs, y, classifier.labels)


def corpus_neighbours(
    labels: Sequence[str],
    x: np.ndarray,
    corpus_x: np.ndarray,
    corpus_y: np.ndarray,
    inputs: TextInputs | None = None,
    corpus_inputs: TextInputs | None = None,
) -> list[list[Neighbour]]:
    """Each row's neighbours in the labelled corpus as the service draws them: the hybrid query's
    candidates (cosine and RRF score) when both sides carry BM25 vectors, else exact cosine kNN."""
    if inputs is None or corpus_inputs is None or not (inputs.hybrid and corpus_inputs.hybrid):
        nb_labels, nb_scores = neighbour_arrays(x, corpus_x, corpus_y)
        return neighbours_from_arrays(labels, nb_labels, nb_scores)
    idx, cosine, rrf = hybrid_candidates(x, corpus_x, inputs.queries, corpus_inputs.docs, MAX_K)
    return [
        [
            Neighbour(labels[int(corpus_y[i])], float(c), rank_score=float(r))
            for i, c, r in zip(row_i, row_c, row_r, strict=True)
            if i >= 0
        ]
        for row_i, row_c, row_r in zip(idx, cosine, rrf, strict=True)
    ]


def predict_with_corpus(
    classifier: FusedClassifier,
    x: np.ndarray,
    corpus_x: np.ndarray,
    corpus_y: np.ndarray,
    inputs: TextInputs | None = None,
    corpus_inputs: TextInputs | None = None,
) -> np.ndarray:
    """Fused probabilities for ``x`` with neighbours drawn from the labelled corpus
    (:func:`corpus_neighbours`); the lexical model reads ``inputs.texts``."""
    neighbours = corpus_neighbours(classifier.labels, x, corpus_x, corpus_y, inputs, corpus_inputs)
    return classifier.predict_proba(x, neighbours, inputs.texts if inputs is not None else None)
