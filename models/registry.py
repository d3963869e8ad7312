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

from models.classifier import FusedClassifier
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
