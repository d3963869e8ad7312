"""Encoder runtimes other than torch: an OpenVINO (or ONNX) copy of a sentence-transformers folder.

The copy is exported once from the configured model (the packaged MiniLM, a hub cache entry or a fine-tuned
encoder of the registry) into ``ROOT/<backend>-<model>-<hash>/`` and loaded from there afterwards. The
folder name hashes the source folder's path and weight files (size, mtime), the backend, the quantisation
and the runtime's version, so a retrained encoder or an upgraded runtime gets a fresh export. An export is
written to a ``.tmp-*`` folder and renamed when complete: a folder without ``export.json`` is never used.

``int8`` for OpenVINO is static post-training quantisation (NNCF), calibrated on local texts handed in by the
caller (the shipped sample vacancies, split into the sentence chunks the embedder sees), never on a hub
data set; for ONNX it is dynamic quantisation (no calibration).

OpenVINO runs with ``INFERENCE_PRECISION_HINT=bf16`` where the CPU computes bfloat16 natively (lossless here:
cosine 0.9999 to float32) and ``f32`` otherwise, and with CPU pinning off (pinned threads of two processes
on one machine land on the same cores).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

Backend = Literal["torch", "openvino", "onnx"]
Quantization = Literal["none", "int8"]
# importable modules each backend needs (checked without importing them: settings stay fast)
RUNTIME_MODULES: dict[str, tuple[str, ...]] = {
    "openvino": ("openvino", "optimum.intel"),
    "onnx": ("onnxruntime", "optimum.onnxruntime"),
}
RUNTIME_PACKAGES: dict[str, tuple[str, ...]] = {
    "openvino": ("openvino", "optimum-intel"),
    "onnx": ("onnxruntime", "optimum-onnx"),
}
EXPORT_INFO = "export.json"
FAILED_SUFFIX = ".failed"
CALIBRATION_SAMPLES = 300
CALIBRATION_MAX_TOKENS = 128
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "config.json", "modules.json")

# texts for int8 calibration (called only when an int8 export is made)
Calibration = Callable[[], Sequence[str]]


class ExportError(RuntimeError):
    """The model could not be exported to (or loaded in) the requested backend."""


def backend_label(backend: str, quantization: str = "none") -> str:
    """One name for a backend and its quantisation: ``torch``, ``openvino``, ``openvino-int8``, ``onnx-int8``."""
    return backend if quantization == "none" else f"{backend}-{quantization}"


def missing_runtime(backend: str) -> str | None:
    """The first module ``backend`` needs that cannot be imported (None: all there, or torch)."""
    for module in RUNTIME_MODULES.get(backend, ()):
        try:
            if importlib.util.find_spec(module) is None:
                return module
        except (ImportError, ValueError):  # a parent package is missing
            return module
    return None


def runtime_versions(backend: str) -> dict[str, str]:
    """The installed versions of the packages ``backend`` runs on (for the export record and benchmarks)."""
    found: dict[str, str] = {}
    for package in ("sentence-transformers", "transformers", "torch", *RUNTIME_PACKAGES.get(backend, ())):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[package] = importlib.metadata.version(package)
    return found


def ov_config(dtype: str) -> dict[str, str]:
    """OpenVINO's CPU properties: bf16 precision hint for ``bfloat16`` (the caller decides whether the CPU
    has it natively), true float32 otherwise; no thread pinning."""
    return {"INFERENCE_PRECISION_HINT": "bf16" if dtype == "bfloat16" else "f32", "ENABLE_CPU_PINNING": "NO"}


def _fingerprint(source: Path) -> list[Any]:
    """What identifies the weights in ``source``: its path and its weight/config files' sizes and mtimes."""
    parts: list[Any] = [str(source.resolve())]
    for name in _WEIGHT_FILES:
        path = source / name
        if path.is_file():
            stat = path.stat()
            parts.append([name, stat.st_size, stat.st_mtime_ns])
    return parts


def export_path(root: Path, source: str, backend: str, quantization: str) -> Path:
    """The folder an export of ``source`` for ``backend``/``quantization`` lives in."""
    src = Path(source)
    key = json.dumps(
        [_fingerprint(src) if src.is_dir() else source, backend, quantization, runtime_versions(backend)],
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", src.name or source)[:48]
    return Path(root) / f"{backend_label(backend, quantization)}-{slug}-{digest}"


def failed_marker(target: Path) -> Path:
    return target.with_name(target.name + FAILED_SUFFIX)


def export_failure(root: Path, source: str, backend: str, quantization: str) -> str | None:
    """Why an earlier export of this model failed (a ``.failed`` marker beside it), or None."""
    marker = failed_marker(export_path(root, source, backend, quantization))
    if not marker.is_file():
        return None
    return marker.read_text(encoding="utf-8").strip() or "unknown error"


Exporter = Callable[[str, Path, str, str, Calibration | None], str]


def ensure_export(
    root: Path,
    source: str,
    backend: str,
    quantization: str,
    calibration: Calibration | None = None,
    exporter: Exporter | None = None,
) -> Path:
    """The export folder of ``source``, exported now if there is none (``exporter``: ``export_model``).

    An exporter that fails leaves a ``.failed`` marker with its error beside the folder (the settings then
    fall back to torch without retrying; delete the marker to retry) and raises ``ExportError``."""
    target = export_path(root, source, backend, quantization)
    if (target / EXPORT_INFO).is_file():
        return target
    marker = failed_marker(target)
    if marker.is_file():
        raise ExportError(
            f"exporting {source} to {backend_label(backend, quantization)} failed before "
            f"({marker.read_text(encoding='utf-8').strip()}); delete {marker} to retry"
        )
    exporter = exporter or export_model
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(target)
    tmp = target.with_name(f".tmp-{target.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    label = backend_label(backend, quantization)
    log.info("exporting %s to %s into %s (once)", source, label, target)
    start = time.perf_counter()
    try:
        file_name = exporter(source, tmp, backend, quantization, calibration)
    except ImportError:  # a runtime package is missing: nothing to remember, installing it fixes it
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        why = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        failed_marker(target).write_text(why + "\n", encoding="utf-8")
        raise ExportError(f"exporting {source} to {label} failed: {why}") from exc
    info = {
        "source": source,
        "backend": backend,
        "quantization": quantization,
        "file_name": file_name,
        "seconds": round(time.perf_counter() - start, 2),
        "versions": runtime_versions(backend),
    }
    (tmp / EXPORT_INFO).write_text(json.dumps(info, indent=2), encoding="utf-8")
    try:
        os.replace(tmp, target)
    except OSError:  # another process finished the same export first: use it
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / EXPORT_INFO).is_file():
            raise
    log.info("exported %s in %.1fs", label, info["seconds"])
    return target


def _remove_abandoned(target: Path) -> None:
    """``.tmp-*`` exports of this target left by processes that died (killed mid-export)."""
    for tmp in target.parent.glob(f".tmp-{target.name}-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:  # alive, another user's
            pass


def calibration_dataset(model: SentenceTransformer, texts: Sequence[str]) -> Any:
    """A ``datasets.Dataset`` of tokenised local texts (as sentence-transformers' own int8 export builds
    from a hub data set)."""
    import datasets

    if not texts:
        raise ExportError("int8 calibration needs texts, none were given")
    tokens = model.tokenizer(
        list(texts)[:CALIBRATION_SAMPLES],
        padding="max_length",
        max_length=CALIBRATION_MAX_TOKENS,
        truncation=True,
    )
    return datasets.Dataset.from_dict(dict(tokens))


def export_model(source: str, out: Path, backend: str, quantization: str, calibration: Calibration | None) -> str:
    """Export ``source`` into the sentence-transformers folder ``out``; the model file's name (under
    ``out/<backend>/``) is returned."""
    from sentence_transformers import SentenceTransformer

    if backend == "openvino":
        with _export_noise_muted():
            model = SentenceTransformer(
                source, device="cpu", backend="openvino", model_kwargs={"ov_config": ov_config("float32")}
            )
        model.save_pretrained(str(out))
        if quantization == "int8":
            _quantize_openvino(model, out, calibration)
        return "openvino_model.xml"
    if backend == "onnx":
        model = SentenceTransformer(source, device="cpu", backend="onnx")
        model.save_pretrained(str(out))
        if quantization == "int8":
            from sentence_transformers import export_dynamic_quantized_onnx_model

            from indexing.embed import _cpu_flags

            flags = _cpu_flags() or set()
            config = "avx512_vnni" if "avx512_vnni" in flags else "avx512" if "avx512f" in flags else "avx2"
            export_dynamic_quantized_onnx_model(model, config, str(out), file_suffix=f"qint8_{config}")
            return f"model_qint8_{config}.onnx"
        return "model.onnx"
    raise ExportError(f"no exporter for backend {backend!r}")


def _quantize_openvino(model: SentenceTransformer, out: Path, calibration: Calibration | None) -> None:
    """Static int8 (NNCF) of the exported model, written over ``out/openvino/openvino_model.*``."""
    from optimum.intel import OVConfig, OVQuantizationConfig, OVQuantizer

    if calibration is None:
        raise ExportError("int8 quantisation needs calibration texts")
    texts = calibration()
    config = OVConfig(quantization_config=OVQuantizationConfig(num_samples=min(len(texts), CALIBRATION_SAMPLES)))
    quantizer = OVQuantizer.from_pretrained(model.transformers_model)
    scratch = out / ".int8"
    quantizer.quantize(calibration_dataset(model, texts), save_directory=str(scratch), ov_config=config)
    written = scratch / "openvino"  # sentence-transformers saves its OpenVINO model under openvino/
    written = written if (written / "openvino_model.xml").is_file() else scratch
    for suffix in (".xml", ".bin"):
        os.replace(written / f"openvino_model{suffix}", out / "openvino" / f"openvino_model{suffix}")
    shutil.rmtree(scratch, ignore_errors=True)


# What optimum-intel and sentence-transformers say at every export or load of a local folder that does not
# apply here: optimum guesses whether the folder still needs converting by looking it up like a hub repo (the
# lookup fails, it then converts or loads as asked); sentence-transformers recommends saving the export, which
# ``export_model`` does; torch's tracer warns about shape-dependent branches of the traced BERT, which the
# exported IR handles with dynamic shapes (the cosine to torch is checked in tests).
_NOISE: dict[str, str] = {
    "optimum.intel.openvino.modeling_base": "Could not infer whether the model was already converted",
    "sentence_transformers.backend.utils": "Saving the exported OpenVINO model is heavily recommended",
}


class _DropMessage(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


@contextlib.contextmanager
def _export_noise_muted() -> Iterator[None]:
    filters = [(logging.getLogger(name), _DropMessage(text)) for name, text in _NOISE.items()]
    for logger, drop in filters:
        logger.addFilter(drop)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Converting a tensor to a Python boolean")
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch.*")
            yield
    finally:
        for logger, drop in filters:
            logger.removeFilter(drop)


def load_export(folder: Path, backend: str, dtype: str) -> SentenceTransformer:
    """The exported model in ``folder`` (no export: the file is there)."""
    from sentence_transformers import SentenceTransformer

    info = json.loads((folder / EXPORT_INFO).read_text(encoding="utf-8"))
    kwargs: dict[str, Any] = {"file_name": info["file_name"], "subfolder": backend}
    if backend == "openvino":
        kwargs["ov_config"] = ov_config(dtype)
    with _export_noise_muted():
        return SentenceTransformer(str(folder), device="cpu", backend=backend, model_kwargs=kwargs)  # type: ignore[arg-type]
