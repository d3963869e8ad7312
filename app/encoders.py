"""The one place that turns settings into an encoder: every command, job and the API build it here."""

from __future__ import annotations

from app.settings import Settings
from indexing.embed import SentenceEmbedder
from models.registry import EncoderRegistry


def resolve_encoder_settings(settings: Settings) -> Settings:
    """The settings a runtime serves with: a fine-tuned encoder promoted by `jobclass upgrade-encoder` (the
    encoder registry's active version under ``model_dir``) overrides JOBCLASS_EMBEDDING_MODEL. Applied
    where settings are built for a runtime (the server's lifespan, the CLI's commands); ``Runtime`` uses
    the settings it is given."""
    active = EncoderRegistry.under(settings.model_dir).active_path()
    if active is None:
        return settings
    return settings.model_copy(update={"embedding_model": str(active)})


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
