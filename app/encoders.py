"""The one place that turns settings into an encoder: every command, job and the API build it here."""

from __future__ import annotations

from app.settings import Settings
from indexing.embed import SentenceEmbedder


def load_encoder(settings: Settings) -> SentenceEmbedder:
    """The sentence-transformers encoder the settings describe (model or fine-tuned path, prefix,
    dtype, batch size, chunking). Loading takes seconds: callers build it once and keep it."""
    return SentenceEmbedder(
        settings.embedding_model,
        prefix=settings.embedding_prefix,
        dtype=settings.embedding_dtype,
        batch_size=settings.embedding_batch_size,
        chunking=settings.embedding_chunking,
    )
