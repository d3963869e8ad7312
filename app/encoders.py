"""The one place that turns settings into an encoder: every command, job and the API build it here."""

from __future__ import annotations

import csv
import logging
import random
from collections.abc import Callable, Sequence
from pathlib import Path

from app.settings import Settings
from indexing.backends import CALIBRATION_SAMPLES, backend_label, export_failure
from indexing.clean import clean_text
from indexing.embed import SentenceEmbedder, resolve_model_path, split_chunks
from models.registry import EncoderRegistry

log = logging.getLogger(__name__)


def resolve_encoder_settings(settings: Settings) -> Settings:
    """The settings a runtime serves with: a fine-tuned encoder promoted by `jobclass upgrade-encoder` (the
    encoder registry's active version under ``model_dir``) overrides JOBCLASS_EMBEDDING_MODEL, and a backend
    whose export of that model failed before (a ``.failed`` marker in the exports folder) becomes torch, so
    the embedding signature names what really runs. Applied where settings are built for a runtime (the
    server's lifespan, the CLI's commands); ``Runtime`` uses the settings it is given."""
    active = EncoderRegistry.under(settings.model_dir).active_path()
    if active is not None:
        settings = settings.model_copy(update={"embedding_model": str(active)})
    return effective_backend(settings)


def effective_backend(settings: Settings) -> Settings:
    """``settings`` with torch as the backend when the configured backend's export of the model failed."""
    if settings.embedding_backend == "torch":
        return settings
    source = resolve_model_path(settings.embedding_model)
    why = export_failure(
        settings.encoder_export_dir, source, settings.embedding_backend, settings.embedding_quantization
    )
    if why is None:
        return settings
    label = backend_label(settings.embedding_backend, settings.embedding_quantization)
    log.warning(
        "the %s export of %s failed before (%s): embedding with torch (delete the .failed marker in %s to retry)",
        label,
        settings.embedding_model,
        why,
        settings.encoder_export_dir,
    )
    return settings.model_copy(update={"embedding_backend": "torch", "embedding_quantization": "none"})


def calibration_texts(paths: Sequence[Path], n: int = CALIBRATION_SAMPLES, seed: int = 0) -> list[str]:
    """``n`` sentence chunks of the labelled CSVs' texts, cleaned as ingest cleans them: what the embedder
    sees, for int8 calibration (local texts, never a hub data set)."""
    chunks: list[str] = []
    for path in paths:
        if not Path(path).is_file():
            continue
        with Path(path).open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                chunks.extend(split_chunks(clean_text(row.get("text") or "")))
    chunks = [c for c in chunks if c.strip()]
    random.Random(seed).shuffle(chunks)
    return chunks[:n]


def _calibration(settings: Settings) -> Callable[[], list[str]]:
    def texts() -> list[str]:
        return [settings.embedding_prefix + t for t in calibration_texts(settings.sample_paths)]

    return texts


def load_encoder(settings: Settings) -> SentenceEmbedder:
    """The sentence-transformers encoder the settings describe (model or fine-tuned path, prefix, dtype,
    backend and quantisation, batch size, chunking). Loading takes seconds (a first export of a non-torch
    backend tens of seconds): callers build it once and keep it."""
    return SentenceEmbedder(
        settings.embedding_model,
        prefix=settings.embedding_prefix,
        dtype=settings.embedding_dtype,
        batch_size=settings.embedding_batch_size,
        chunking=settings.embedding_chunking,
        backend=settings.embedding_backend,
        quantization=settings.embedding_quantization,
        export_root=settings.encoder_export_dir,
        calibration=_calibration(settings),
    )
