"""Baselines the embedding methods are compared with: ``tfidf_lr`` (word + char TF-IDF, logistic
regression), which the served ``fused`` row must beat."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from models.metrics import macro_f1

TFIDF_CS: tuple[float, ...] = (3.0, 30.0)


def tfidf_features(train_texts: Sequence[str]) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion

    word = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1, max_features=100_000, dtype=np.float32)
    char = TfidfVectorizer(
        sublinear_tf=True, analyzer="char_wb", ngram_range=(2, 5), min_df=2, max_features=100_000, dtype=np.float32
    )
    return FeatureUnion([("word", word), ("char", char)]).fit(train_texts)


class TfidfLR:
    """The classic baseline: word 1–2-grams + char 2–5-grams, TF-IDF, multinomial logistic regression."""

    def __init__(self, texts: Sequence[str], y: np.ndarray, n_classes: int) -> None:
        self.features = tfidf_features(texts)
        self.x = self.features.transform(texts)
        self.y = y
        self.n_classes = n_classes
        self.model: Any = None

    def fit(self, c: float) -> TfidfLR:
        from sklearn.linear_model import LogisticRegression

        self.model = LogisticRegression(C=c, max_iter=1000, tol=1e-3).fit(self.x, self.y)
        return self

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        probs = np.zeros((len(texts), self.n_classes))
        probs[:, self.model.classes_] = self.model.predict_proba(self.features.transform(texts))
        return probs


def selection_score(probs: np.ndarray, y: np.ndarray, n_classes: int) -> float:
    """Accuracy + macro-F1 on a tuning split: what C and β are chosen by."""
    pred = probs.argmax(1)
    return float(np.mean(pred == y)) + macro_f1(y, pred, n_classes)


def tune_tfidf_c(
    texts_tr: Sequence[str], y_tr: np.ndarray, texts_va: Sequence[str], y_va: np.ndarray, n_classes: int
) -> tuple[float, np.ndarray]:
    """The C of ``TFIDF_CS`` that scores best on validation (features fitted once) and its validation
    probabilities."""
    best_c, best_score, p_va = TFIDF_CS[0], -1.0, None
    baseline = TfidfLR(texts_tr, y_tr, n_classes)
    for c in TFIDF_CS:
        probs = baseline.fit(c).predict_proba(texts_va)
        score = selection_score(probs, y_va, n_classes)
        if score > best_score:
            best_c, best_score, p_va = c, score, probs
    assert p_va is not None
    return best_c, p_va
