"""On-disk embedding cache keyed by (model, prefix, dtype, chunking, backend, text hash).

Embedding dominates every offline job (training, reindex, bench); the cache makes re-runs cheap.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from indexing.embed import Encoder


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(self.path), check_same_thread=False)
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS embeddings ("
            " model TEXT NOT NULL, key TEXT NOT NULL, vector BLOB NOT NULL,"
            " PRIMARY KEY (model, key))"
        )
        self._conn.commit()

    def get_many(self, model: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = list(keys[start : start + 500])
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    f"SELECT key, vector FROM embeddings WHERE model = ? AND key IN ({marks})",
                    [model, *chunk],
                ).fetchall()
                for key, blob in rows:
                    found[key] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, model: str, items: dict[str, np.ndarray]) -> None:
        with self._lock:
            self._conn.executemany(
                "INSERT OR REPLACE INTO embeddings (model, key, vector) VALUES (?, ?, ?)",
                [(model, k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in items.items()],
            )
            self._conn.commit()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def cache_key_model(encoder: Encoder) -> str:
    prefix = getattr(encoder, "prefix", "")
    dtype = getattr(encoder, "dtype", "float32")
    chunking = getattr(encoder, "chunking", "none")
    backend = getattr(encoder, "backend_label", "torch")  # torch keeps the key it had before backends existed
    return f"{encoder.name}|{prefix}|{dtype}|{chunking}|{encoder.dim}" + (f"|{backend}" if backend != "torch" else "")


def encode_cached(
    encoder: Encoder, texts: Sequence[str], cache: EmbeddingCache | None, *, show_progress: bool = False
) -> np.ndarray:
    """Encode ``texts``, reading and filling ``cache`` when one is given."""
    if cache is None:
        return encoder.encode(texts, show_progress=show_progress)
    model = cache_key_model(encoder)
    keys = [text_hash(t) for t in texts]
    found = cache.get_many(model, list(dict.fromkeys(keys)))
    missing = list(dict.fromkeys(k for k in keys if k not in found))
    if missing:
        by_key = dict(zip(keys, texts, strict=True))
        fresh = encoder.encode([by_key[k] for k in missing], show_progress=show_progress)
        new = dict(zip(missing, fresh, strict=True))
        cache.put_many(model, new)
        found.update(new)
    out = np.empty((len(texts), encoder.dim), dtype=np.float32)
    for i, k in enumerate(keys):
        out[i] = found[k]
    return out


def encode_in_steps(
    encoder: Encoder,
    texts: Sequence[str],
    cache: EmbeddingCache | None,
    step: int,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """``encode_cached`` over ``step`` texts at a time, reporting ``progress(done, total)`` after each."""
    parts = [np.zeros((0, encoder.dim), dtype=np.float32)]
    for offset in range(0, len(texts), step):
        parts.append(encode_cached(encoder, texts[offset : offset + step], cache))
        if progress:
            progress(min(offset + step, len(texts)), len(texts))
    return np.concatenate(parts)
