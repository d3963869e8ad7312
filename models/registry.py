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

import contextlib
import json
import os
import secrets
import shutil
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.torch import load_file

from models.classifier import LEXICAL_DIR, FusedClassifier
from models.compress import VARIANTS, Variant
from models.lexical import FILES as LEXICAL_FILES

ACTIVE = "ACTIVE"
# extra calibration rows of a version (out-of-fold p(true class) and class of its training rows), for
# ``jobclass calibrate`` to pool with the hold-out as training did (models.conformal)
CALIBRATION_FILE = "calibration.npz"
TMP_PREFIX = "."  # ``.tmp-<version>`` (a save in progress or one that crashed), ``.ACTIVE.tmp``: never versions


class RegistryError(LookupError):
    """A registry problem the user can fix, with a message that says how: an unknown version, no active
    model, a damaged version or marker, a folder that cannot be written."""


class NoActiveModel(RegistryError):
    """No ``ACTIVE`` marker: nothing was ever activated (``jobclass train``)."""


class ModelDamaged(RegistryError):
    """A file of a model version, or the ``ACTIVE`` marker, exists but cannot be read: the message names
    the file and the fix. Never a reason to train a new model silently."""


def _why(exc: BaseException) -> str:
    """A short reason, on one line, for a file that could not be read."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _read_metadata(path: Path) -> dict[str, Any] | str:
    """A version's metadata, or why it cannot be read."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return f"cannot be read ({_why(exc)})"
    if not isinstance(meta, dict) or not all(isinstance(meta.get(k), str) for k in ("version", "created_at")):
        return "is not a model's metadata (no version or created_at)"
    return meta


def _valid_version(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and not name.startswith(TMP_PREFIX)


class ModelRegistry:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    @staticmethod
    def new_version_id() -> str:
        return f"{datetime.now(UTC):%Y%m%dT%H%M%S}Z-{secrets.token_hex(3)}"

    def path(self, version: str) -> Path:
        if not _valid_version(version):
            raise RegistryError(f"invalid model version {version!r}")
        return self.root / version

    def save(
        self,
        classifier: FusedClassifier,
        metadata: dict[str, Any],
        version: str | None = None,
        *,
        calibration: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> str:
        """Write a new version (not yet active) and return its id; ``calibration``: extra calibration rows
        ``(p_true, y)`` kept beside it (:meth:`calibration`)."""
        version = version or self.new_version_id()
        final = self.path(version)
        if final.exists():
            raise RegistryError(f"model version {version} already exists")
        tmp = self.root / f"{TMP_PREFIX}tmp-{version}"
        try:
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
                lexical_bytes = sum(f.stat().st_size for f in files)
                meta["lexical"] = {"bytes": lexical_bytes, "features": classifier.lexical.n_features}
            if calibration is not None:
                p_true, y = calibration
                np.savez(tmp / CALIBRATION_FILE, p_true=np.asarray(p_true, np.float32), y=np.asarray(y, np.int32))
                meta["calibration_rows"] = len(y)
            (tmp / "metadata.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))
            os.replace(tmp, final)  # a version folder is either complete or absent
        except (OSError, SafetensorError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise self._unwritable(f"model {version}", exc) from exc
        return version

    def discard(self, version: str) -> None:
        """Delete ``version`` (one whose database row could not be written): it leaves the listing at once
        (renamed to a hidden folder), then its files go. Never the active version."""
        final = self.path(version)
        if self.active_version() == version:
            raise RegistryError(f"model {version} is active")
        if not final.exists():
            return
        doomed = self.root / f"{TMP_PREFIX}tmp-discard-{version}"
        shutil.rmtree(doomed, ignore_errors=True)
        os.replace(final, doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    def update_metadata(self, version: str, **fields: Any) -> dict[str, Any]:
        """Replace some top-level fields of ``version``'s metadata (atomically) and return the new metadata:
        e.g. ``uncertainty`` when ``jobclass calibrate`` recomputes it."""
        meta = {**self.metadata(version), **fields}
        path = self.path(version)
        tmp = path / f"{TMP_PREFIX}metadata.json.tmp"
        try:
            tmp.write_text(json.dumps(meta, indent=2, ensure_ascii=False))
            os.replace(tmp, path / "metadata.json")
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise self._unwritable(f"the metadata of model {version}", exc) from exc
        return meta

    def activate(self, version: str) -> None:
        if not (self.path(version) / "metadata.json").is_file():
            raise RegistryError(f"unknown model version {version!r}")
        tmp = self.root / f"{TMP_PREFIX}{ACTIVE}.tmp"
        try:
            tmp.write_text(version)
            os.replace(tmp, self.root / ACTIVE)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise self._unwritable(f"the {ACTIVE} marker", exc) from exc

    def active_version(self) -> str | None:
        """The version the ``ACTIVE`` marker names; None without a marker, and None when the marker cannot be
        read (``active_marker`` says why): what a new version records as its parent, what a listing marks."""
        try:
            return self.active_marker()
        except ModelDamaged:
            return None

    def active_marker(self) -> str | None:
        """The version the ``ACTIVE`` marker names (None: no marker); ``ModelDamaged`` when the marker is there
        but unreadable, empty or not a version name. Whether that version exists is ``load``'s business."""
        marker = self.root / ACTIVE
        try:
            raw = marker.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._damaged_marker(f"cannot be read ({_why(exc)})") from exc
        try:
            version = raw.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise self._damaged_marker("is not a version name (not UTF-8 text)") from exc
        if not version:
            raise self._damaged_marker("is empty")
        if not _valid_version(version) or len(version.splitlines()) != 1:
            raise self._damaged_marker(f"does not hold a version name ({version[:40]!r})")
        return version

    def metadata(self, version: str) -> dict[str, Any]:
        path = self.path(version) / "metadata.json"
        if not path.is_file():
            raise RegistryError(f"unknown model version {version!r}")
        meta = _read_metadata(path)
        if isinstance(meta, str):
            raise self._damaged(version, path, meta)
        return meta

    def calibration(self, version: str) -> tuple[np.ndarray, np.ndarray] | None:
        """The extra calibration rows ``(p_true, y)`` saved with ``version``; None when it has none (trained
        without cross-fitting, or before they were kept). A damaged file is a :class:`ModelDamaged`."""
        path = self.path(version) / CALIBRATION_FILE
        if not path.is_file():
            return None
        try:
            with np.load(path) as data:
                p_true, y = np.asarray(data["p_true"], np.float64), np.asarray(data["y"], np.int64)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise self._damaged(version, path, _why(exc)) from exc
        if p_true.shape != y.shape or p_true.ndim != 1:
            raise self._damaged(version, path, "p_true and y differ in shape")
        return p_true, y

    def load(self, version: str | None = None, variant: Variant = "fp32") -> tuple[FusedClassifier, dict[str, Any]]:
        """Version ``version`` (default: the active one) as a classifier in ``variant``, and its metadata.

        ``NoActiveModel`` without an ``ACTIVE`` marker; ``ModelDamaged`` when the marker names a version that
        is not there or a file of the version cannot be read (naming the file); ``RegistryError`` for an
        unknown ``version``."""
        if variant not in VARIANTS:
            raise ValueError(f"unknown head variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        if version is None:
            version = self.active_marker()
            if version is None:
                raise NoActiveModel(f"no active model in {self.root}: run `jobclass train`")
            if not (self.path(version) / "metadata.json").is_file():
                raise self._damaged_marker(f"names model {version}, which is not in {self.root}")
        meta = self.metadata(version)
        folder = self.path(version)
        try:
            classifier = FusedClassifier.load(folder, variant)
        except Exception as exc:  # which file: the first one that cannot be read on its own, else the folder
            file, why = self._diagnose(folder, variant) or (folder, f"cannot be loaded ({_why(exc)})")
            raise self._damaged(version, file, why) from exc
        return classifier, meta

    def versions(self) -> list[dict[str, Any]]:
        """The readable versions' metadata, newest first (a damaged one is left out: ``scan`` lists it)."""
        return self.scan()[0]

    def scan(self) -> tuple[list[dict[str, Any]], list[ModelDamaged]]:
        """(the readable versions' metadata, newest first; the damaged versions). Hidden folders (a
        ``.tmp-*`` save in progress or left by a crash) and folders without metadata are not versions."""
        if not self.root.is_dir():
            return [], []
        found: list[dict[str, Any]] = []
        problems: list[tuple[str, str]] = []
        for p in self.root.iterdir():
            if not _valid_version(p.name) or not (p / "metadata.json").is_file():
                continue
            meta = _read_metadata(p / "metadata.json")
            if isinstance(meta, str):
                problems.append((p.name, meta))
            else:
                found.append(meta)
        found.sort(key=lambda m: m["created_at"], reverse=True)
        return found, [self._damaged(name, self.path(name) / "metadata.json", why) for name, why in problems]

    # ---- errors that say which file and what to do ------------------------------------------------
    def _diagnose(self, folder: Path, variant: Variant) -> tuple[Path, str] | None:
        """The first file of a version folder that cannot be read on its own, and why."""
        files: list[tuple[Path, tuple[str, ...]]] = [
            (folder / "classifier.json", ("labels", "params")),
            (folder / "head.json", ("config",)),
            (folder / "head.safetensors", ()),
            (folder / f"head_{variant}.safetensors", ()),
        ]
        lexical = folder / LEXICAL_DIR
        if lexical.exists():
            files += [(lexical / LEXICAL_FILES[0], ("config", "vocabulary")), (lexical / LEXICAL_FILES[1], ())]
        for path, keys in files:
            if not path.is_file():
                return path, "is missing"
            try:
                if path.suffix == ".json":
                    content = json.loads(path.read_text(encoding="utf-8"))
                    if not isinstance(content, dict) or any(k not in content for k in keys):
                        return path, f"does not hold what it should ({', '.join(keys)})"
                else:
                    load_file(str(path))
            except (OSError, ValueError, SafetensorError) as exc:
                return path, f"cannot be read ({_why(exc)})"
        return None

    def _fix(self, damaged: str | None) -> str:
        readable: list[dict[str, Any]] = []
        if self.root.is_dir():
            for p in self.root.iterdir():
                if p.name != damaged and _valid_version(p.name) and (p / "metadata.json").is_file():
                    meta = _read_metadata(p / "metadata.json")
                    readable += [] if isinstance(meta, str) else [meta]
        other = max(readable, key=lambda m: m["created_at"])["version"] if readable else None
        if other is None:
            return "run `jobclass train`"
        return f"run `jobclass models activate {other}` (or another from `jobclass models list`) or `jobclass train`"

    def _damaged(self, version: str, path: Path, why: str) -> ModelDamaged:
        return ModelDamaged(f"model {version} is damaged: {path} {why}: {self._fix(version)}")

    def _damaged_marker(self, why: str) -> ModelDamaged:
        return ModelDamaged(f"the active-model marker {self.root / ACTIVE} {why}: {self._fix(None)}")

    def _unwritable(self, what: str, exc: BaseException) -> RegistryError:
        where = getattr(exc, "filename", None) or self.root
        return RegistryError(
            f"cannot write {what} to {self.root} ({_why(exc)}: {where}): make {self.root} writable by this "
            "user (it is JOBCLASS_STATE_DIR/models) and run the command again"
        )


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
        if not _valid_version(version):
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
        found = [
            self.metadata(p.name)
            for p in self.root.iterdir()
            if _valid_version(p.name) and (p / "metadata.json").is_file()  # not a ``.tmp-*`` save
        ]
        return sorted(found, key=lambda m: m["created_at"], reverse=True)
