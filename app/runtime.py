"""The long-lived parts of the service, built once (FastAPI lifespan or a CLI command).

Encoder, vector store, model registry, database engine and background jobs live here. The active
classifier can be swapped atomically while requests are being served: readers take one reference to
``LoadedModel``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.batching import MicroBatchingEncoder
from app.db import make_engine, make_session_factory
from app.encoders import load_encoder
from app.errors import IncompatibleModelError, Unavailable
from app.services.jobs import JobRegistry
from app.settings import Settings
from app.taxonomy import Taxonomy
from indexing.backends import backend_label
from indexing.cache import EmbeddingCache
from indexing.embed import Encoder
from indexing.extract import ExtractingEncoder, Extractor, ExtractorError, TextExtractor, parse_labels
from indexing.sparse import LexicalEncoder
from indexing.store import NEEDS_REINDEX, StoreClient, VectorStore, connect
from models.classifier import FusedClassifier
from models.conformal import UncertaintyRule
from models.registry import ModelRegistry, NoActiveModel

log = logging.getLogger(__name__)
VACANCY_LOCK_STRIPES = 64


def backend_hint(found: Any, expected: dict[str, str]) -> str:
    """When only the encoder backend differs (e.g. a state folder built before OpenVINO became the default):
    the setting that serves the existing model and index as they are."""
    if not isinstance(found, dict):
        return ""
    without = {k: v for k, v in found.items() if k != "backend"}
    if without != {k: v for k, v in expected.items() if k != "backend"}:
        return ""
    backend = str(found.get("backend", "torch"))
    name, _, quantization = backend.partition("-")
    setting = f"JOBCLASS_EMBEDDING_BACKEND={name}" + (
        f" JOBCLASS_EMBEDDING_QUANTIZATION={quantization}" if quantization else ""
    )
    return f" (they were built with the {backend} encoder backend: or set {setting} to keep them)"


@dataclass(frozen=True)
class LoadedModel:
    classifier: FusedClassifier
    version: str
    metadata: dict[str, Any]
    # prediction sets and abstain rule of this version (its metadata's ``uncertainty``), parsed once
    rule: UncertaintyRule = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rule", UncertaintyRule.from_metadata(self.metadata, self.classifier.labels))


class Runtime:
    def __init__(
        self,
        settings: Settings,
        *,
        encoder: Encoder | None = None,
        extractor: TextExtractor | None = None,
        qdrant: StoreClient | None = None,
        engine: Engine | None = None,
    ) -> None:
        # ``settings`` as given: app.encoders.resolve_encoder_settings applies an active fine-tuned encoder.
        self.settings = settings
        self.taxonomy = Taxonomy.from_csv(settings.taxonomy_path)
        self.engine = engine or make_engine(settings.db_url)
        self.sessions: sessionmaker[Session] = make_session_factory(self.engine)
        self._encoder = self._batched(encoder) if encoder is not None else None
        self._encoder_lock = threading.Lock()
        # BM25 sparse vectors for hybrid retrieval: documents (indexed texts) and queries (classify, search)
        self.lexical = LexicalEncoder(settings.lexical_language)
        self._extractor = extractor  # GLiNER, loaded on first use when JOBCLASS_EXTRACTOR_MODEL is set
        self._extracting: ExtractingEncoder | None = None
        client = qdrant or connect(
            settings.qdrant_url,
            settings.qdrant_location,
            settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None,
            backend=settings.qdrant_backend,
        )
        self.store = VectorStore(client, alias=settings.collection)
        self.registry = ModelRegistry(settings.model_dir)
        self.cache = EmbeddingCache(settings.cache_path) if settings.embedding_cache else None
        self._model: LoadedModel | None = None
        self.index_lock = threading.Lock()  # one index rebuild at a time
        self.model_lock = threading.Lock()  # one switch of the active model at a time
        # index writes of one vacancy, one at a time (app.services.index.index_committed): striped, bounded
        self._vacancy_locks = tuple(threading.Lock() for _ in range(VACANCY_LOCK_STRIPES))
        # reindex / retrain / encoder jobs started through the API, recorded in the database (the session
        # factory is looked up per use: tests bind ``sessions`` to one rolled-back connection)
        self.jobs = JobRegistry(lambda: self.sessions())

    def vacancy_lock(self, vacancy_id: str) -> threading.Lock:
        """The lock that orders this process's index writes of ``vacancy_id`` (shared with a few other ids)."""
        return self._vacancy_locks[hash(vacancy_id) % VACANCY_LOCK_STRIPES]

    # ---- encoder (loaded on first use: CLI commands that never embed stay fast) ------------
    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            with self._encoder_lock:
                if self._encoder is None:
                    s = self.settings
                    log.info(
                        "loading embedding model %s (%s, %s)",
                        s.embedding_model,
                        s.embedding_dtype,
                        backend_label(s.embedding_backend, s.embedding_quantization),
                    )
                    loaded = load_encoder(s)
                    self._settle_backend(loaded)
                    self._encoder = self._batched(loaded)
        return self._encoder if not self.settings.extractor_model else self._extracting_encoder(self._encoder)

    def _settle_backend(self, encoder: Encoder) -> None:
        """An export that failed while loading fell back to torch: the settings (and so the embedding
        signature of what is trained and indexed from now on) follow what runs. A loaded head of the other
        backend is then not served: 503 with the fix, never vectors of one backend against the other's head."""
        s = self.settings
        running = getattr(encoder, "backend_label", None)
        wanted = backend_label(s.embedding_backend, s.embedding_quantization)
        if running is None or running == wanted:
            return
        self.settings = s.model_copy(update={"embedding_backend": "torch", "embedding_quantization": "none"})
        loaded = self._model
        if loaded is not None and loaded.metadata.get("embedding") != self.settings.embedding_signature:
            self._model = None
            raise Unavailable(
                f"the {wanted} export failed (see the log), embedding with {running}, but model {loaded.version} "
                f"was trained on {wanted} embeddings: fix the export (delete its .failed marker in "
                f"{s.encoder_export_dir}) or set JOBCLASS_EMBEDDING_BACKEND=torch and run `jobclass reindex` "
                f"and `jobclass train`"
            )

    # ---- lexical encoder (BM25 sparse vectors for the hybrid query and for training) -------------
    @property
    def lexical_encoder(self) -> LexicalEncoder:
        """The BM25 encoder of the hybrid query (built with the runtime: a few milliseconds)."""
        return self.lexical

    # ---- extractor (GLiNER): embed "title: …; skills: …; tasks: …" and scrub person names ----
    @property
    def extractor(self) -> TextExtractor | None:
        if self._extractor is None and self.settings.extractor_model:
            with self._encoder_lock:
                if self._extractor is None:
                    s = self.settings
                    log.info("loading extractor %s", s.extractor_model)
                    try:
                        self._extractor = Extractor.load(
                            s.extractor_model, labels=parse_labels(s.extractor_labels), threshold=s.extractor_threshold
                        )
                    except ExtractorError as exc:
                        raise Unavailable(f"{exc} (JOBCLASS_EXTRACTOR_MODEL)") from exc
        return self._extractor

    def _extracting_encoder(self, inner: Encoder) -> ExtractingEncoder:
        extractor = self.extractor
        assert extractor is not None  # extractor_model is set
        current = self._extracting
        if current is None or current.inner is not inner:
            current = self._extracting = ExtractingEncoder(inner, extractor)
        return current

    def _batched(self, encoder: Encoder) -> Encoder:
        """Concurrent small encode calls share one model call (``JOBCLASS_MICROBATCH``, on by default)."""
        s = self.settings
        if not s.microbatch or isinstance(encoder, MicroBatchingEncoder):
            return encoder
        return MicroBatchingEncoder(encoder, wait_ms=s.microbatch_wait_ms, max_items=s.microbatch_max)

    # ---- active model ----------------------------------------------------------------------
    @property
    def model(self) -> LoadedModel:
        loaded = self._model
        if loaded is None:
            raise Unavailable("no trained model is active: run `jobclass train`")
        return loaded

    @property
    def has_model(self) -> bool:
        return self._model is not None

    def load_active_model(self) -> LoadedModel | None:
        """Load the registry's active version, checking it fits this embedder and taxonomy; None when no
        version was ever activated. A damaged one (an unreadable file, a marker naming a missing version)
        raises ``models.registry.ModelDamaged``, naming the file and the fix: it is not "no model", so
        nobody trains a new one over it, and the server does not start."""
        try:
            classifier, meta = self.registry.load(variant=self.settings.head_variant)
        except NoActiveModel:
            return None
        self._check_compatible(meta, classifier)
        self._model = LoadedModel(classifier, meta["version"], meta)
        return self._model

    def set_model(self, classifier: FusedClassifier, version: str, metadata: dict[str, Any]) -> None:
        self._check_compatible(metadata, classifier)
        variant = self.settings.head_variant
        if classifier.variant != variant:
            classifier = classifier.with_variant(variant)
        self._model = LoadedModel(classifier, version, metadata)  # one assignment: atomic for readers

    def switch_embedder(
        self, settings: Settings, encoder: Encoder, classifier: FusedClassifier, version: str, metadata: dict[str, Any]
    ) -> None:
        """An encoder upgrade: the settings (embedder signature), the encoder and the model switch together."""
        with self._encoder_lock:
            self.settings = settings
            self._encoder = self._batched(encoder)
        self.set_model(classifier, version, metadata)

    def _check_compatible(self, meta: dict[str, Any], classifier: FusedClassifier | None = None) -> None:
        expected = self.settings.embedding_signature
        if meta.get("embedding") != expected:
            raise IncompatibleModelError(
                f"model {meta.get('version')} was trained on embeddings {meta.get('embedding')}, but the "
                f"settings give {expected}: run `jobclass reindex` and `jobclass train` after changing them"
                + backend_hint(meta.get("embedding"), expected)
            )
        # A hierarchical taxonomy rolls the model's probabilities up its tree: the classes must be its leaves.
        if classifier is not None and self.taxonomy.is_hierarchical and classifier.labels != list(self.taxonomy.leaves):
            raise IncompatibleModelError(
                f"model {meta.get('version')} was trained on other labels than the leaves of the hierarchical "
                f"taxonomy {self.settings.taxonomy_path.name}: run `jobclass train`"
            )

    def index_metadata(self, embedding: dict[str, Any] | None = None) -> dict[str, Any]:
        """What a new collection records: the embedding signature and the lexical (BM25) one."""
        return {"embedding": embedding or self.settings.embedding_signature, "lexical": self.lexical.signature}

    def check_index_compatible(self) -> None:
        meta = self.store.collection_metadata()
        found = meta.get("embedding")
        expected = self.settings.embedding_signature
        if found is not None and found != expected:
            raise IncompatibleModelError(
                f"the collection behind {self.store.alias!r} holds vectors of {found}, but the settings "
                f"give {expected}: run `jobclass reindex`" + backend_hint(found, expected)
            )
        if self.store.has_hybrid_layout() is False:
            raise IncompatibleModelError(NEEDS_REINDEX.format(alias=self.store.alias))
        lexical = meta.get("lexical")
        if lexical is not None and lexical != self.lexical.signature:
            raise IncompatibleModelError(
                f"the collection behind {self.store.alias!r} holds lexical vectors of {lexical}, but the "
                f"settings give {self.lexical.signature}: run `jobclass reindex`"
            )

    def close(self) -> None:
        self.jobs.shutdown()
        if isinstance(self._encoder, MicroBatchingEncoder):
            self._encoder.close()
        if self.cache is not None:
            self.cache.close()
        self.store.client.close()
        self.engine.dispose()
