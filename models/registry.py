"""Versioned model artifacts on disk, one marked active.

Layout::

    ROOT/
      ACTIVE                    # the active version id (replaced atomically)
      20261123T161500Z-3fa2c1/  # one folder per version
        classifier.json  head.json  head.safetensors  head_<variant>.safetensors
        metadata.json           # embedder, taxonomy hash, data hash, metrics, parent, ...

A head is only valid with the embedder it was trained on: ``metadata["embedder"]`` records it and
the application refuses to serve a head with a different embedder.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from models.classifier import LEXICAL_DIR, FusedClassifier
from models.compress import Variant


class RegistryError(LookupError):
    pass


class ModelRegistry:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    @staticmethod
    def new_version_id() -> str:
        return f"{datetime.now(UTC):%Y%m%dT%H%M%S}Z-{secrets.token_hex(3)}"

    def path(self, version: str) -> Path:
        if not version or "/" in version or version.startswith("."):
            raise RegistryError(f"invalid model version {version!r}")
        return self.root / version

    def save(self, classifier: FusedClassifier, metadata: dict[str, Any], version: str | None = None) -> str:
        """Write a new version (not yet active) and return its id."""
        version = version or self.new_version_id()
        final = self.path(version)
        if final.exists():
            raise RegistryError(f"model version {version} already exists")
        tmp = self.root / f".tmp-{version}"
        shutil.rmtree(tmp, ignore_errors=True)
        sizes = classifier.save(tmp)
        meta = {
            **metadata,
            "version": version,
            "created_at": datetime.now(UTC).isoformat(),
            "labels": classifier.labels,
            "params": classifier.params.to_dict(),
            "variant_bytes": sizes,
        }
        if classifier.lexical is not None:  # the lexical model's own artifacts: vocabularies, IDF, weights
            files = [f for f in (tmp / LEXICAL_DIR).iterdir() if f.is_file()]
            meta["lexical"] = {"bytes": sum(f.stat().st_size for f in files), "features": classifier.lexical.n_features}
        (tmp / "metadata.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))
        os.replace(tmp, final)  # a version folder is either complete or absent
        return version

    def activate(self, version: str) -> None:
        if not (self.path(version) / "metadata.json").is_file():
            raise RegistryError(f"unknown model version {version!r}")
        tmp = self.root / ".ACTIVE.tmp"
        tmp.write_text(version)
        os.replace(tmp, self.root / "ACTIVE")

    def active_version(self) -> str | None:
        marker = self.root / "ACTIVE"
        return marker.read_text().strip() or None if marker.is_file() else None

    def metadata(self, version: str) -> dict[str, Any]:
        path = self.path(version) / "metadata.json"
        if not path.is_file():
            raise RegistryError(f"unknown model version {version!r}")
        return json.loads(path.read_text())

    def load(self, version: str | None = None, variant: Variant = "fp32") -> tuple[FusedClassifier, dict[str, Any]]:
        version = version or self.active_version()
        if version is None:
            raise RegistryError(f"no active model in {self.root}: run `jobclass train`")
        meta = self.metadata(version)
        return FusedClassifier.load(self.path(version), variant), meta

    def versions(self) -> list[dict[str, Any]]:
        if not self.root.is_dir():
            return []
        found = [self.metadata(p.name) for p in self.root.iterdir() if (p / "metadata.json").is_file()]
        return sorted(found, key=lambda m: m["created_at"], reverse=True)


ENCODERS_DIR = "encoders"


class EncoderRegistry:
    """Fine-tuned encoders as versioned artifacts, next to the heads (``MODEL_DIR/encoders``).

    Layout::

        ROOT/
          ACTIVE                      # the encoder in use (absent: the configured base model)
          enc-20261123T190000Z-ab12cd/
            config.json  model.safetensors  modules.json ...   # a sentence-transformers folder
            finetune.json             # how it was trained (params, history, wall time)
            metadata.json             # version, parent, base model, data hash, metrics, status

    ``status`` is ``candidate`` until an upgrade promotes it (``active``) or rejects it (``rejected``:
    the weights are deleted, the metadata stays as a record). Only files are handled here; loading the
    weights is the job of ``indexing``.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    @classmethod
    def under(cls, model_dir: Path | str) -> EncoderRegistry:
        return cls(Path(model_dir) / ENCODERS_DIR)

    @staticmethod
    def new_version_id() -> str:
        return f"enc-{ModelRegistry.new_version_id()}"

    def path(self, version: str) -> Path:
        if not version or "/" in version or version.startswith("."):
            raise RegistryError(f"invalid encoder version {version!r}")
        return self.root / version

    def register(self, folder: Path | str, metadata: dict[str, Any], *, move: bool = True) -> str:
        """Store the encoder in ``folder`` as a new version (not active) and return its id."""
        source = Path(folder)
        if not (source / "modules.json").is_file() and not (source / "config.json").is_file():
            raise RegistryError(f"{source} is not a sentence-transformers folder")
        version = self.new_version_id()
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{version}"
        shutil.rmtree(tmp, ignore_errors=True)
        if move:
            shutil.move(str(source), tmp)
        else:
            shutil.copytree(source, tmp)
        meta = {
            "status": "candidate",
            **metadata,
            "version": version,
            "created_at": datetime.now(UTC).isoformat(),
        }
        (tmp / "metadata.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))
        os.replace(tmp, self.path(version))  # a version folder is either complete or absent
        return version

    def metadata(self, version: str) -> dict[str, Any]:
        path = self.path(version) / "metadata.json"
        if not path.is_file():
            raise RegistryError(f"unknown encoder version {version!r}")
        return json.loads(path.read_text())

    def update(self, version: str, **fields: Any) -> dict[str, Any]:
        meta = {**self.metadata(version), **fields}
        tmp = self.path(version) / ".metadata.json.tmp"
        tmp.write_text(json.dumps(meta, indent=2, ensure_ascii=False))
        os.replace(tmp, self.path(version) / "metadata.json")
        return meta

    def activate(self, version: str) -> None:
        meta = self.metadata(version)
        if meta.get("status") == "rejected":
            raise RegistryError(f"encoder {version} was rejected and its weights deleted")
        previous = self.active_version()
        tmp = self.root / ".ACTIVE.tmp"
        tmp.write_text(version)
        os.replace(tmp, self.root / "ACTIVE")
        self.update(version, status="active")
        if previous and previous != version and (self.path(previous) / "metadata.json").is_file():
            self.update(previous, status="retired")

    def deactivate(self) -> None:
        """Go back to the configured base model (``JOBCLASS_EMBEDDING_MODEL``)."""
        (self.root / "ACTIVE").unlink(missing_ok=True)

    def active_version(self) -> str | None:
        marker = self.root / "ACTIVE"
        return (marker.read_text().strip() or None) if marker.is_file() else None

    def active_path(self) -> Path | None:
        version = self.active_version()
        return self.path(version) if version is not None else None

    def reject(self, version: str, reason: str) -> None:
        """Keep the record, delete the weights (a rejected encoder is never served)."""
        if self.active_version() == version:
            raise RegistryError(f"encoder {version} is active")
        folder = self.path(version)
        for child in folder.iterdir():
            if child.name not in {"metadata.json", "finetune.json"}:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        self.update(version, status="rejected", reason=reason)

    def versions(self) -> list[dict[str, Any]]:
        if not self.root.is_dir():
            return []
        found = [self.metadata(p.name) for p in self.root.iterdir() if (p / "metadata.json").is_file()]
        return sorted(found, key=lambda m: m["created_at"], reverse=True)
