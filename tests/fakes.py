"""Small deterministic stand-ins and factories for tests."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.services.encoder_upgrade import LabelledTexts
from indexing.embed import l2_normalise

_WORD = re.compile(r"\w+", re.UNICODE)


class FakeEncoder:
    """Hashed bag of words: texts sharing words get similar vectors. Deterministic and fast."""

    def __init__(self, dim: int = 64, name: str = "fake-encoder") -> None:
        self.dim = dim
        self.name = name
        self.calls: list[int] = []

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        self.calls.append(len(texts))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
                out[i, h % self.dim] += 1.0 if (h >> 32) & 1 else -1.0
            if not out[i].any():
                out[i, 0] = 1.0
        return l2_normalise(out)


class SlowEncoder(FakeEncoder):
    """A fake encoder whose batch calls (more than one text, as in a reindex) can be slowed down or
    held at a gate; single texts (classify, feedback) always go through at once."""

    def __init__(self, dim: int = 64, name: str = "fake-encoder") -> None:
        super().__init__(dim, name)
        self.delay = 0.0
        self.gate: threading.Event | None = None
        self.waiting = threading.Event()  # set while a batch call waits at the gate

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        if len(texts) > 1:
            gate = self.gate
            if gate is not None and not gate.is_set():
                self.waiting.set()
                gate.wait(timeout=30)
            time.sleep(self.delay)
        return super().encode(texts, show_progress=show_progress)


# Three easily told apart groups of texts, with labels from the default taxonomy.
TOPICS: dict[str, list[str]] = {
    "Bygge og anlæg": [
        "carpenter",
        "bricklayer",
        "scaffolding",
        "concrete",
        "roofing",
        "site",
        "timber",
        "building",
    ],
    "It og teleteknik": [
        "developer",
        "python",
        "kubernetes",
        "network",
        "software",
        "cloud",
        "database",
        "backend",
    ],
    "Sundhed, omsorg og personlig pleje": [
        "nurse",
        "patients",
        "care",
        "hospital",
        "elderly",
        "medication",
        "ward",
        "health",
    ],
}


def topic_texts(n_per_label: int = 12, seed: int = 0) -> list[tuple[str, str, str]]:
    """(id, text, label) rows: each text mixes words of its topic with some shared filler."""
    rng = np.random.default_rng(seed)
    filler = ["we", "offer", "a", "good", "team", "and", "salary", "in", "aarhus", "odense", "full", "time"]
    rows = []
    for t, (label, words) in enumerate(TOPICS.items()):
        for i in range(n_per_label):
            picked = list(rng.choice(words, size=5)) + list(rng.choice(filler, size=4))
            rng.shuffle(picked)
            rows.append((f"t{t}-{i:02d}", " ".join(picked), label))
    return rows


class FakeFinetune:
    """Writes a folder shaped like a sentence-transformers model and records what it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, LabelledTexts, LabelledTexts]] = []

    def __call__(self, base: str, train: LabelledTexts, val: LabelledTexts, out: Path) -> dict[str, Any]:
        self.calls.append((base, train, val))
        out.mkdir(parents=True)
        (out / "modules.json").write_text("[]")
        (out / "model.safetensors").write_bytes(b"\0" * 8)
        info = {"metrics": {"base_knn_accuracy": 0.5, "best_knn_accuracy": 0.9}, "wall_seconds": 0.1, "texts_per_s": 9}
        (out / "finetune.json").write_text(json.dumps(info))
        return info
