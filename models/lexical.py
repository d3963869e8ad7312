"""The lexical signal: word 1–2-gram and character 2–5-gram TF-IDF → multinomial logistic regression.

It reads the surface of a text, whatever its language: Danish compounds ("tømrerarbejde",
"social- og sundhedsassistent") share character n-grams with their parts, which an English sentence
encoder does not see. It is the third signal of the fused classifier, beside the head on the
embedding and the neighbour vote.

Like the head it is small and self-describing: ``save`` writes the two vocabularies (JSON), the IDF
weights and the regression coefficients (safetensors, no pickle); ``load`` rebuilds it exactly.
A text none of whose n-grams is in the vocabulary gives an all-zero feature row: ``usable`` says so,
and the fusion leaves this signal out for it instead of letting its intercepts vote.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from safetensors.numpy import load_file, save_file

FILES = ("lexical.json", "lexical.safetensors")


@dataclass(frozen=True)
class LexicalConfig:
    """Feature and regression settings (the defaults are the bench's ``tfidf_lr`` baseline)."""

    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (2, 5)
    word_min_df: int = 1
    char_min_df: int = 2
    max_features: int = 100_000  # per analyzer
    c: float = 10.0  # inverse regularisation strength
    max_iter: int = 1000


def _vectorizers(config: LexicalConfig, vocab: tuple[dict[str, int], dict[str, int]] | None = None) -> list[Any]:
    from sklearn.feature_extraction.text import TfidfVectorizer

    word, char = vocab if vocab is not None else (None, None)
    common: dict[str, Any] = {"sublinear_tf": True, "dtype": np.float32, "lowercase": True}
    return [
        TfidfVectorizer(
            ngram_range=config.word_ngrams,
            min_df=config.word_min_df,
            max_features=config.max_features,
            vocabulary=word,
            **common,
        ),
        TfidfVectorizer(
            analyzer="char_wb",
            ngram_range=config.char_ngrams,
            min_df=config.char_min_df,
            max_features=config.max_features,
            vocabulary=char,
            **common,
        ),
    ]


class LexicalModel:
    """``fit`` / ``predict_proba`` / ``save`` / ``load`` over raw (cleaned) texts."""

    def __init__(self, n_classes: int, config: LexicalConfig | None = None) -> None:
        self.n_classes = n_classes
        self.config = config or LexicalConfig()
        self._vectorizers: list[Any] = []
        self._readers: list[_Reader] = []
        self.coef = np.zeros((n_classes, 0), dtype=np.float32)
        self.intercept = np.zeros(n_classes, dtype=np.float32)

    @property
    def coef(self) -> np.ndarray:
        """The regression's (classes × features) weights: a view of the (features × classes) array kept
        C-contiguous, which a sparse feature row multiplies without a copy of the whole matrix."""
        return self._coef_t.T

    @coef.setter
    def coef(self, value: np.ndarray) -> None:
        self._coef_t = np.ascontiguousarray(np.asarray(value).T)

    @property
    def fitted(self) -> bool:
        return bool(self._vectorizers)

    @property
    def n_features(self) -> int:
        return int(self._coef_t.shape[0])

    # ---- features ----------------------------------------------------------------------------
    def features(self, texts: Sequence[str]) -> sp.csr_matrix:
        """The rows' TF-IDF features: sklearn's ``TfidfVectorizer.transform`` of each analyzer (sublinear
        term frequency, IDF, L2 per analyzer), side by side, computed here from the fitted vocabularies
        without sklearn's per-call validation (a few milliseconds per request)."""
        if not self.fitted:
            raise RuntimeError("the lexical model is not fitted")
        return sp.hstack([reader.transform(texts) for reader in self._readers], format="csr")

    def usable(self, features: sp.csr_matrix) -> np.ndarray:
        """Rows with at least one known n-gram (a boolean mask)."""
        return np.asarray(features.getnnz(axis=1) > 0)

    # ---- fit / predict -------------------------------------------------------------------------
    def fit(self, texts: Sequence[str], y: np.ndarray) -> LexicalModel:
        from sklearn.linear_model import LogisticRegression

        y = np.asarray(y, dtype=np.int64)
        if len(texts) != len(y) or len(y) == 0:
            raise ValueError("the lexical model needs as many labels as texts, and at least one")
        self._vectorizers = _vectorizers(self.config)
        x = sp.hstack([v.fit_transform(texts) for v in self._vectorizers], format="csr")
        self._readers = [_Reader(v) for v in self._vectorizers]
        coef = np.zeros((self.n_classes, x.shape[1]), dtype=np.float32)
        intercept = np.full(self.n_classes, -30.0, dtype=np.float32)  # classes never seen: probability ≈ 0
        present = np.unique(y)
        if len(present) == 1:
            intercept[present[0]] = 0.0
        else:
            lr = LogisticRegression(C=self.config.c, max_iter=self.config.max_iter, tol=1e-3).fit(x, y)
            rows = lr.classes_.astype(np.int64)
            if len(rows) == 2:  # sklearn's binary form: one row for the second class
                coef[rows[1]], intercept[rows[1]] = lr.coef_[0], lr.intercept_[0]
                intercept[rows[0]] = 0.0
            else:
                coef[rows], intercept[rows] = lr.coef_, lr.intercept_
        self.coef, self.intercept = coef, intercept
        return self

    def predict_proba_features(self, features: sp.csr_matrix) -> np.ndarray:
        logits = np.asarray(features @ self._coef_t, dtype=np.float64) + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return self.predict_proba_features(self.features(texts))

    def proba_and_mask(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and the rows where this signal has something to say."""
        x = self.features(texts)
        return self.predict_proba_features(x), self.usable(x)

    # ---- persistence -----------------------------------------------------------------------
    def save(self, directory: Path | str) -> int:
        """Write the vocabularies, IDF weights and coefficients; return the bytes written."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        word, char = self._vectorizers
        config = {
            "n_classes": self.n_classes,
            "config": asdict(self.config),
            "vocabulary": {"word": _ordered(word.vocabulary_), "char": _ordered(char.vocabulary_)},
        }
        (directory / FILES[0]).write_text(json.dumps(config, ensure_ascii=False))
        tensors = {
            "idf.word": word.idf_.astype(np.float32),
            "idf.char": char.idf_.astype(np.float32),
            "coef": np.ascontiguousarray(self.coef),
            "intercept": self.intercept,
        }
        save_file(tensors, str(directory / FILES[1]))
        return sum((directory / f).stat().st_size for f in FILES)

    @classmethod
    def load(cls, directory: Path | str) -> LexicalModel:
        directory = Path(directory)
        meta = json.loads((directory / FILES[0]).read_text())
        raw = meta["config"]
        config = LexicalConfig(
            **{**raw, "word_ngrams": tuple(raw["word_ngrams"]), "char_ngrams": tuple(raw["char_ngrams"])}
        )
        model = cls(int(meta["n_classes"]), config)
        tensors = load_file(str(directory / FILES[1]))
        vocab = tuple({term: i for i, term in enumerate(meta["vocabulary"][k])} for k in ("word", "char"))
        model._vectorizers = _vectorizers(config, vocab)  # type: ignore[arg-type]
        for vectorizer, key in zip(model._vectorizers, ("idf.word", "idf.char"), strict=True):
            vectorizer.idf_ = tensors[key].astype(np.float64)
        model._readers = [_Reader(v) for v in model._vectorizers]
        model.coef, model.intercept = tensors["coef"], tensors["intercept"]
        return model

    @staticmethod
    def exists(directory: Path | str) -> bool:
        return all((Path(directory) / f).is_file() for f in FILES)


class _Reader:
    """One fitted ``TfidfVectorizer``'s transform, as sklearn computes it: each text's analyzer terms
    counted, those in the vocabulary weighted ``(1 + ln count) · idf``, each row scaled to unit L2."""

    def __init__(self, vectorizer: Any) -> None:
        self.analyze = vectorizer.build_analyzer()
        self.vocabulary: dict[str, int] = vectorizer.vocabulary_
        self.idf = np.asarray(vectorizer.idf_, dtype=np.float64)
        self.width = len(self.vocabulary)

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        indptr, indices, counts = [0], list[int](), list[int]()
        vocabulary = self.vocabulary
        for text in texts:
            row: dict[int, int] = {}
            for term in self.analyze(text):
                column = vocabulary.get(term)
                if column is not None:
                    row[column] = row.get(column, 0) + 1
            indices.extend(row)
            counts.extend(row.values())
            indptr.append(len(indices))
        cols = np.asarray(indices, dtype=np.int64)
        weights = (1.0 + np.log(np.asarray(counts, dtype=np.float64))) * self.idf[cols]
        rows = np.repeat(np.arange(len(texts)), np.diff(indptr))
        norms = np.sqrt(np.bincount(rows, weights=weights * weights, minlength=len(texts)))
        weights /= np.where(norms > 0, norms, 1.0)[rows]
        matrix = sp.csr_matrix(
            (weights.astype(np.float32), cols, np.asarray(indptr, dtype=np.int64)), shape=(len(texts), self.width)
        )
        matrix.sort_indices()
        return matrix


def _ordered(vocabulary: dict[str, Any]) -> list[str]:
    """The terms in column order (a list is half the size of the term → index map)."""
    terms = [""] * len(vocabulary)
    for term, i in vocabulary.items():
        terms[int(i)] = term
    return terms
