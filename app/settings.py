"""All configuration in one pydantic-settings class; environment variables ``JOBCLASS_*``."""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from indexing.backends import RUNTIME_PACKAGES, backend_label, missing_runtime
from models.compress import Variant

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT / "data"


MIN_TOKEN_CHARS = 16
log = logging.getLogger(__name__)
_warned_backends: set[str] = set()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JOBCLASS_", env_file=".env", extra="ignore")

    profile: Literal["dev", "production"] = "dev"
    state_dir: Path = PROJECT_ROOT / "var"

    # Relational database: the source of truth. Default: a SQLite file in the state folder.
    database_url: str | None = None

    # Vector store: a Qdrant server when ``qdrant_url`` is set, otherwise local mode in the state folder.
    qdrant_url: str | None = None
    qdrant_api_key: SecretStr | None = None
    qdrant_path: str | None = None  # a folder, or ":memory:"
    # Embedded store without a URL: "edge" (the in-process Qdrant engine, HNSW: milliseconds at 100k vectors) or
    # "local" (qdrant-client local mode, a brute-force Python store: fine for a few thousand, slow past ~20k).
    qdrant_backend: Literal["local", "edge"] = "edge"
    collection: str = "vacancies"

    # Embedding
    embedding_model: str = "sentence-transformers/all-MiniLM-L6-v2"
    embedding_prefix: str = ""  # e5 models: "query: "
    # bfloat16 where the CPU has native bf16 (AVX512-BF16/AMX), float32 elsewhere; int8 = dynamic quantization
    embedding_dtype: Literal["float32", "bfloat16", "int8"] = "bfloat16"
    embedding_chunking: Literal["none", "sentences"] = "sentences"  # mean of sentence-chunk embeddings
    # The runtime that runs the encoder: "openvino" (the default; optimum-intel, exported once into
    # STATE_DIR/encoders/exports, bf16 precision hint where the CPU has native bf16: faster than torch at cosine
    # 0.9999, docs/performance.md), "torch" (sentence-transformers as is), "onnx" (needs optimum-onnx, not
    # installable beside sentence-transformers 6). A missing runtime or a failed export falls back to torch (one
    # log line). Part of the embedding signature.
    embedding_backend: Literal["torch", "openvino", "onnx"] = "openvino"
    # "int8": static int8 quantisation (openvino, calibrated on the shipped sample texts) or dynamic (onnx)
    embedding_quantization: Literal["none", "int8"] = "none"
    embedding_batch_size: int = Field(32, ge=1, le=1024)
    embedding_cache: bool = True
    # Micro-batching: concurrent small encode calls (single /v1/classify requests) share one model call.
    microbatch: bool = True
    microbatch_wait_ms: float = Field(5.0, ge=0.0, le=1000.0)  # how long the first request waits for others
    microbatch_max: int = Field(64, ge=1, le=1024)  # texts per grouped call

    # Data
    taxonomy_path: Path = DATA_DIR / "taxonomy" / "jobnet_categories.csv"
    # Labelled CSVs that `setup` ingests into an empty database (source "sample"): English and Danish ads.
    sample_paths: list[Path] = [DATA_DIR / "vacancies.csv", DATA_DIR / "vacancies_da.csv"]
    # A coding index of occupation titles ingested beside them (source "title"); none when unset.
    titles_path: Path | None = DATA_DIR / "taxonomy" / "jobnet_titles_da.csv"

    # Classification
    head_variant: Variant = "fp32"
    # a floor: an answer below this confidence abstains whatever the prediction set says
    abstain_threshold: float = Field(0.25, ge=0.0, le=1.0)
    # A hierarchical taxonomy (a `parent` column): answers descend the tree while the rolled-up probability
    # reaches this, so an unsure leaf falls back to its parent; unset: the abstain threshold.
    hierarchy_threshold: float | None = Field(None, ge=0.0, le=1.0)
    # Prediction sets (split conformal on the hold-out, models.conformal): the share of answers whose set
    # holds the true label; class-conditional thresholds for classes with this many hold-out rows or more.
    coverage: float = Field(0.9, gt=0.0, lt=1.0)
    conformal_min_class_rows: int = Field(30, ge=1)
    # Automation target: per-class confidence thresholds chosen on the hold-out so that the answers that do
    # not abstain reach this accuracy (train, retrain; `jobclass calibrate --target-accuracy`). Unset: the
    # conformal rule (abstain when the set is not the top label alone).
    target_accuracy: float | None = Field(None, gt=0.0, lt=1.0)
    search_k: int = Field(30, ge=1, le=200)  # neighbours fetched per classify (the vote uses the tuned k)
    # Hybrid retrieval: the Snowball stemmer of the BM25 lexical vectors stored beside the embeddings
    # (Danish + English stop words); changing it needs `jobclass reindex`.
    lexical_language: str = "danish"  # one of indexing.sparse.SNOWBALL
    # The id-hashed hold-out no version trains on (comparisons, calibration). 10 %: the prediction sets pool it
    # with the out-of-fold rows, so a larger one only takes training data from the served model. Nested:
    # the rows of a 10 % hold-out were in every earlier 20 % one, so earlier versions never saw them either.
    validation_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    # folds of out-of-fold predictions the fusion is tuned on (0: tune on the hold-out alone)
    fusion_crossfit: int = Field(5, ge=0, le=20)
    seed: int = 20240601

    # Learning loop and index lifecycle
    promotion_margin: float = Field(0.0, ge=0.0, le=1.0)  # promote if accuracy ≥ champion's − margin
    index_batch_size: int = Field(256, ge=1, le=10_000)  # vacancies embedded and written per reindex step

    # Limits
    max_text_chars: int = Field(20_000, ge=100)
    max_batch_items: int = Field(256, ge=1)
    max_search_k: int = Field(100, ge=1, le=1000)
    clean_max_chars: int = Field(4_000, ge=100)  # text kept for embedding after cleaning
    # seconds a request's body may take to arrive (after its headers): a client that stalls gets a 408
    body_timeout_s: float = Field(30.0, gt=0.0, le=3600.0)

    # Extraction (GLiNER): when a model is set, ingest and classify embed the compact
    # "title: …; skills: …; tasks: …" string and person names are scrubbed. Empty = off.
    extractor_model: str = ""  # a GLiNER folder or hub id (HF_HUB_OFFLINE: local cache only)
    extractor_labels: str = ""  # "" / "en", "da", or "title=job title,skills=skill,tasks=task,person=person"
    extractor_threshold: float = Field(0.5, gt=0.0, lt=1.0)
    # Privacy: keep e-mails, phone numbers, URLs and names in stored texts (DB rows, index payloads).
    store_raw_text: bool = False

    # Access
    admin_token: SecretStr | None = None
    api_token: SecretStr | None = None

    host: str = "127.0.0.1"
    port: int = 8000

    @field_validator("taxonomy_path", "state_dir", "titles_path")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return value.expanduser().resolve() if value is not None else None

    @field_validator("sample_paths")
    @classmethod
    def _absolute_all(cls, value: list[Path]) -> list[Path]:
        return [p.expanduser().resolve() for p in value]

    @field_validator("admin_token", "api_token")
    @classmethod
    def _token(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        """A token that is set must be one: an empty JOBCLASS_ADMIN_TOKEN left every admin route open."""
        if value is None:
            return None
        length = len(value.get_secret_value().strip())
        if length < MIN_TOKEN_CHARS:
            name = f"JOBCLASS_{(info.field_name or '').upper()}"
            raise ValueError(
                f"{name} is set but has {length} characters: use at least {MIN_TOKEN_CHARS} "
                f"(e.g. `openssl rand -hex 24`), or unset it"
            )
        return value

    @field_validator("lexical_language")
    @classmethod
    def _lexical_language(cls, value: str) -> str:
        from indexing.sparse import SNOWBALL

        value = value.strip().lower()
        if value not in SNOWBALL:
            raise ValueError(
                f"JOBCLASS_LEXICAL_LANGUAGE: no Snowball stemmer for {value!r}; "
                f"choose one of {', '.join(sorted(SNOWBALL))}"
            )
        return value

    @field_validator("extractor_labels")
    @classmethod
    def _extractor_labels(cls, value: str) -> str:
        from indexing.extract import parse_labels

        parse_labels(value)  # fail fast on a malformed spec
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if not self.taxonomy_path.is_file():
            raise ValueError(f"taxonomy file not found: {self.taxonomy_path} (JOBCLASS_TAXONOMY_PATH)")
        from app.taxonomy import Taxonomy

        try:  # fail fast: a malformed file (or a parent that is no label, a cycle) stops start-up
            Taxonomy.from_csv(self.taxonomy_path)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"{exc} (JOBCLASS_TAXONOMY_PATH)") from exc
        if self.profile == "production" and self.admin_token is None:
            raise ValueError("the production profile needs JOBCLASS_ADMIN_TOKEN")
        if self.database_url and not self.database_url.startswith(("sqlite", "postgresql")):
            raise ValueError("JOBCLASS_DATABASE_URL must be a sqlite:// or postgresql+psycopg:// URL")
        if self.embedding_backend == "torch" and self.embedding_quantization != "none":
            raise ValueError(
                "JOBCLASS_EMBEDDING_QUANTIZATION=int8 needs JOBCLASS_EMBEDDING_BACKEND=openvino or onnx "
                "(torch's dynamic quantization is JOBCLASS_EMBEDDING_DTYPE=int8)"
            )
        if self.embedding_backend != "torch" and self.embedding_dtype == "int8":
            raise ValueError(
                f"JOBCLASS_EMBEDDING_DTYPE=int8 is torch's dynamic quantization; with "
                f"JOBCLASS_EMBEDDING_BACKEND={self.embedding_backend} use JOBCLASS_EMBEDDING_QUANTIZATION=int8"
            )
        missing = missing_runtime(self.embedding_backend)
        if missing is not None:  # the settings say what really runs: the signature stays honest
            if self.embedding_backend not in _warned_backends:
                _warned_backends.add(self.embedding_backend)
                log.warning(
                    "JOBCLASS_EMBEDDING_BACKEND=%s: %s is not installed (pip install %s): embedding with torch",
                    self.embedding_backend,
                    missing,
                    " ".join(RUNTIME_PACKAGES[self.embedding_backend]),
                )
            self.embedding_backend, self.embedding_quantization = "torch", "none"
        return self

    @property
    def answer_threshold(self) -> float:
        """The threshold of a hierarchical answer at every level (``models.hierarchy``)."""
        return self.abstain_threshold if self.hierarchy_threshold is None else self.hierarchy_threshold

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.state_dir / 'jobclass.db'}"

    @property
    def qdrant_location(self) -> str:
        return self.qdrant_path or str(self.state_dir / ("qdrant-edge" if self.qdrant_backend == "edge" else "qdrant"))

    @property
    def embedding_signature(self) -> dict[str, str]:
        """What makes two vectors comparable: a head or a collection is valid only for this signature."""
        backend = backend_label(self.embedding_backend, self.embedding_quantization)
        return (
            {
                "model": self.embedding_model,
                "prefix": self.embedding_prefix,
                "chunking": self.embedding_chunking,
            }
            # torch vectors keep the signature they had before backends existed: their heads and indexes stay valid
            | ({"backend": backend} if backend != "torch" else {})
            | ({"extractor": self.extractor_signature} if self.extractor_model else {})
        )

    @property
    def extractor_signature(self) -> str:
        """Vectors of extracted text are not comparable with vectors of the cleaned text."""
        if not self.extractor_model:
            return ""
        from indexing.extract import parse_labels, signature_of

        return signature_of(self.extractor_model, parse_labels(self.extractor_labels), self.extractor_threshold)

    @property
    def model_dir(self) -> Path:
        return self.state_dir / "models"

    @property
    def encoder_export_dir(self) -> Path:
        """Where the configured encoder is exported for a non-torch backend (once, then reused)."""
        return self.state_dir / "encoders" / "exports"

    @property
    def cache_path(self) -> Path:
        return self.state_dir / "cache" / "embeddings.sqlite"


@lru_cache
def get_settings() -> Settings:
    return Settings()
