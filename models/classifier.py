"""The fused classifier: label set + linear head (in one of four variants) + the lexical model + fusion
parameters.

Like SetFit it is small and self-describing: ``save`` writes the head, its compressed variants and
a JSON config; ``load`` picks the variant to serve. Neighbours are passed in, so this module stays
free of any vector-store code.

Near-duplicate override: when a neighbour is the query's own text (cosine ≥ ``DUPLICATE_SCORE``: the
same ad, or one that differs by a token or two), its label is a human's answer for this very text, and
the answer follows it whatever the fusion weights say: the probabilities become
``DUPLICATE_TRUST·onehot(label) + (1 − DUPLICATE_TRUST)·p_fused``. Among several such duplicates the
most recently labelled one wins (last write wins, as in the database). This is what makes a correction
change the very next answer even when the tuned blend trusts the head far more than the vote.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from models.compress import VARIANTS, Variant, empty_linear, state_bytes
from models.fusion import FusionParams, fuse
from models.head import LinearHead
from models.knn import knn_vote
from models.lexical import LexicalModel

LEXICAL_DIR = "lexical"

DUPLICATE_SCORE = 0.999  # re-embedding the same text agrees to > 0.99999; distinct ads stay far below
DUPLICATE_TRUST = 0.95


@dataclass(frozen=True)
class Neighbour:
    label: str
    score: float  # cosine similarity of the dense vectors
    labelled_at: float = 0.0  # when its label was last set (Unix time); the latest duplicate wins
    rank_score: float | None = None  # the hybrid query's fused (RRF) score, when it came from one


@dataclass(frozen=True)
class Signals:
    """One batch's probabilities from each signal, before the blend; ``knn``/``lexical`` None when that
    signal was not asked (no neighbours, no texts), and ``*_ok`` the rows where it has something to say."""

    head: np.ndarray
    knn: np.ndarray | None
    knn_ok: np.ndarray | None
    lexical: np.ndarray | None
    lexical_ok: np.ndarray | None

    def head_knn_disagreement(self) -> list[float | None]:
        """Per row, the total variation distance between the head's and the vote's probabilities (0: they
        agree exactly, 1: no overlap); None where the row has no usable neighbour (or none were given)."""
        if self.knn is None or self.knn_ok is None:
            return [None] * len(self.head)
        tv = 0.5 * np.abs(self.head - self.knn).sum(axis=1)
        return [float(d) if usable else None for d, usable in zip(tv, self.knn_ok, strict=True)]


def neighbours_from_arrays(
    labels: Sequence[str], nb_labels: np.ndarray, nb_scores: np.ndarray
) -> list[list[Neighbour]]:
    """Rows of ``Neighbour`` from the arrays of ``models.training.neighbour_arrays`` (label indices, scores)."""
    return [
        [Neighbour(labels[int(lab)], float(s)) for lab, s in zip(row_l, row_s, strict=True)]
        for row_l, row_s in zip(nb_labels, nb_scores, strict=True)
    ]


class FusedClassifier:
    def __init__(
        self,
        labels: Sequence[str],
        head: LinearHead,
        params: FusionParams,
        variant: Variant = "fp32",
        module: nn.Module | None = None,
        lexical: LexicalModel | None = None,
    ) -> None:
        if head.config.n_classes != len(labels):
            raise ValueError(f"head has {head.config.n_classes} outputs but {len(labels)} labels were given")
        if lexical is not None and lexical.n_classes != len(labels):
            raise ValueError(f"the lexical model has {lexical.n_classes} outputs but {len(labels)} labels were given")
        self.lexical = lexical
        self.labels = list(labels)
        self.index = {label: i for i, label in enumerate(self.labels)}
        self.head = head
        self.params = params
        self.variant: Variant = variant
        self.module = module if module is not None else head.compressed(variant)
        self.module.eval()

    @property
    def n_classes(self) -> int:
        return len(self.labels)

    @torch.no_grad()
    def head_proba(self, embeddings: np.ndarray) -> np.ndarray:
        logits = self.module(torch.as_tensor(embeddings, dtype=torch.float32))
        return torch.softmax(logits, dim=-1).numpy().astype(np.float64)

    def knn_proba(self, neighbours: Sequence[Sequence[Neighbour]]) -> np.ndarray:
        """The vote over each row's neighbours, weighed by cosine or, with ``vote="rank"``, by the hybrid
        query's fused score (rows without one fall back to cosine); the first ``k`` in that order vote."""
        width = max((len(n) for n in neighbours), default=0)
        labels = np.full((len(neighbours), width), -1, dtype=np.int64)
        scores = np.zeros((len(neighbours), width), dtype=np.float64)
        for i, row in enumerate(neighbours):
            by_rank = self.params.vote == "rank" and all(nb.rank_score is not None for nb in row)
            weighed = [(nb.rank_score if by_rank else nb.score, nb) for nb in row]
            weighed.sort(key=lambda pair: -float(pair[0] or 0.0))  # stable: the store's order breaks ties
            for j, (score, nb) in enumerate(weighed):
                labels[i, j] = self.index.get(nb.label, -1)  # labels outside the head's set do not vote
                scores[i, j] = float(score or 0.0)
        return knn_vote(labels, scores, self.n_classes, k=self.params.k, temperature=self.params.knn_temperature)

    def lexical_proba(self, texts: Sequence[str] | None) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The lexical model's probabilities and the rows it can read (``None`` without model or texts)."""
        if self.lexical is None or texts is None:
            return None, None
        return self.lexical.proba_and_mask(texts)

    def signals(
        self,
        embeddings: np.ndarray,
        neighbours: Sequence[Sequence[Neighbour]] | None = None,
        texts: Sequence[str] | None = None,
    ) -> Signals:
        """Each signal's probabilities for the rows, before the blend (:meth:`fuse_signals`)."""
        p_lex, lex_ok = self.lexical_proba(texts)
        if neighbours is None:
            return Signals(self.head_proba(embeddings), None, None, p_lex, lex_ok)
        knn_ok = np.array([any(nb.label in self.index for nb in row) for row in neighbours], dtype=bool)
        return Signals(self.head_proba(embeddings), self.knn_proba(neighbours), knn_ok, p_lex, lex_ok)

    def fuse_signals(self, signals: Signals, neighbours: Sequence[Sequence[Neighbour]] | None = None) -> np.ndarray:
        """The blend of :meth:`signals` (a missing signal left out), then the near-duplicate override."""
        fused = fuse(
            signals.head, signals.knn, self.params, signals.lexical, knn_ok=signals.knn_ok, lex_ok=signals.lexical_ok
        )
        return fused if neighbours is None else self.follow_duplicates(fused, neighbours)

    def predict_proba(
        self,
        embeddings: np.ndarray,
        neighbours: Sequence[Sequence[Neighbour]] | None = None,
        texts: Sequence[str] | None = None,
    ) -> np.ndarray:
        """Fused probabilities of head, neighbour vote and lexical model (over ``texts``, the cleaned
        texts the embeddings were made from). A signal that is missing — no neighbours (index
        unavailable), no texts, or a text with no known n-gram — is left out and the others answer.
        A near-duplicate neighbour overrides the blend (see the module docstring)."""
        return self.fuse_signals(self.signals(embeddings, neighbours, texts), neighbours)

    def duplicate_label(self, neighbours: Sequence[Neighbour]) -> str | None:
        """The label of the most recently labelled near-duplicate among ``neighbours``, if any."""
        dups = [nb for nb in neighbours if nb.score >= DUPLICATE_SCORE and nb.label in self.index]
        return max(dups, key=lambda nb: nb.labelled_at).label if dups else None  # ties: the closest

    def follow_duplicates(self, probs: np.ndarray, neighbours: Sequence[Sequence[Neighbour]]) -> np.ndarray:
        out = probs.copy()
        for i, row in enumerate(neighbours):
            label = self.duplicate_label(row)
            if label is not None:
                out[i] *= 1.0 - DUPLICATE_TRUST
                out[i, self.index[label]] += DUPLICATE_TRUST
        return out

    def predict(
        self,
        embeddings: np.ndarray,
        neighbours: Sequence[Sequence[Neighbour]] | None = None,
        texts: Sequence[str] | None = None,
    ) -> list[str]:
        return [self.labels[i] for i in self.predict_proba(embeddings, neighbours, texts).argmax(axis=1)]

    def variant_bytes(self) -> dict[str, int]:
        """Bytes of the tensors each head variant stores."""
        return {v: state_bytes(self.head.compressed(v)) for v in VARIANTS}

    def with_variant(self, variant: Variant) -> FusedClassifier:
        return FusedClassifier(self.labels, self.head, self.params, variant, lexical=self.lexical)

    # ---- persistence ----------------------------------------------------------------------
    def save(self, directory: Path | str) -> dict[str, int]:
        """Write the float32 head, every compressed variant and the config; return variant sizes."""
        directory = Path(directory)
        self.head.save(directory)
        sizes: dict[str, int] = {}
        for variant in VARIANTS:
            module = self.head.compressed(variant)
            state = {k: v.contiguous() for k, v in module.state_dict().items()}
            save_file(state, str(directory / f"head_{variant}.safetensors"))
            sizes[variant] = state_bytes(module)
        config: dict[str, Any] = {"labels": self.labels, "params": self.params.to_dict(), "variant_bytes": sizes}
        if self.lexical is not None:
            config["lexical_bytes"] = self.lexical.save(directory / LEXICAL_DIR)
            config["lexical_features"] = self.lexical.n_features
        (directory / "classifier.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
        return sizes

    @classmethod
    def load(cls, directory: Path | str, variant: Variant = "fp32") -> FusedClassifier:
        directory = Path(directory)
        if variant not in VARIANTS:
            raise ValueError(f"unknown head variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        config: dict[str, Any] = json.loads((directory / "classifier.json").read_text())
        head = LinearHead.load(directory)
        module = empty_linear(variant, head.config.dim, head.config.n_classes)
        module.load_state_dict(load_file(str(directory / f"head_{variant}.safetensors")))
        lexical = LexicalModel.load(directory / LEXICAL_DIR) if LexicalModel.exists(directory / LEXICAL_DIR) else None
        return cls(config["labels"], head, FusionParams(**config["params"]), variant, module, lexical)
