"""Encoder backends (JOBCLASS_EMBEDDING_BACKEND / _QUANTIZATION): settings, exports, signature, fallback."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

import app.settings as settings_module
import indexing.backends as backends
import indexing.embed as embed
from app.encoders import calibration_texts, effective_backend
from app.errors import IncompatibleModelError
from app.runtime import Runtime, backend_hint
from indexing.cache import cache_key_model
from tests.conftest import make_settings, memory_qdrant
from tests.fakes import FakeEncoder


@pytest.fixture
def openvino_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings see the OpenVINO runtime as installed, whether or not it is."""
    monkeypatch.setattr(settings_module, "missing_runtime", lambda backend: None)


# ---- settings ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"embedding_backend": "torch", "embedding_quantization": "int8"}, "JOBCLASS_EMBEDDING_DTYPE=int8"),
        ({"embedding_backend": "openvino", "embedding_dtype": "int8"}, "JOBCLASS_EMBEDDING_QUANTIZATION=int8"),
        ({"embedding_backend": "tensorflow"}, "embedding_backend"),
        ({"embedding_quantization": "int4"}, "embedding_quantization"),
    ],
)
def test_bad_backend_settings_fail_fast(
    tmp_path: Path, openvino_installed: None, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        make_settings(tmp_path, **values)


def test_backend_settings_are_read_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, openvino_installed: None
) -> None:
    monkeypatch.setenv("JOBCLASS_EMBEDDING_BACKEND", "openvino")
    monkeypatch.setenv("JOBCLASS_EMBEDDING_QUANTIZATION", "int8")
    s = settings_module.Settings(_env_file=None, state_dir=tmp_path)
    assert (s.embedding_backend, s.embedding_quantization) == ("openvino", "int8")
    assert s.encoder_export_dir == tmp_path.resolve() / "encoders" / "exports"


def test_openvino_is_the_default_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the project installs optimum-intel (constraints.txt holds the measured set): the default is what runs
    monkeypatch.delenv("JOBCLASS_EMBEDDING_BACKEND", raising=False)
    assert settings_module.missing_runtime("openvino") is None
    s = settings_module.Settings(_env_file=None, state_dir=tmp_path)
    assert s.embedding_backend == "openvino" and s.embedding_signature["backend"] == "openvino"


def test_a_missing_runtime_makes_the_settings_torch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(settings_module, "missing_runtime", lambda backend: "openvino")
    monkeypatch.setattr(settings_module, "_warned_backends", set())
    with caplog.at_level(logging.WARNING, logger="app.settings"):
        first = make_settings(tmp_path, embedding_backend="openvino", embedding_quantization="int8")
        make_settings(tmp_path, embedding_backend="openvino")
    assert (first.embedding_backend, first.embedding_quantization) == ("torch", "none")
    assert "backend" not in first.embedding_signature  # what really runs
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1  # one line, not one per Settings
    assert "openvino is not installed" in lines[0] and "embedding with torch" in lines[0]


# ---- the embedding signature and the cache key ---------------------------------------------
def test_the_signature_differs_per_backend(tmp_path: Path, openvino_installed: None) -> None:
    torch_sig = make_settings(tmp_path, embedding_backend="torch").embedding_signature
    ov = make_settings(tmp_path, embedding_backend="openvino").embedding_signature
    ov8 = make_settings(tmp_path, embedding_backend="openvino", embedding_quantization="int8").embedding_signature
    onnx8 = make_settings(tmp_path, embedding_backend="onnx", embedding_quantization="int8").embedding_signature
    assert len({str(torch_sig), str(ov), str(ov8), str(onnx8)}) == 4
    assert "backend" not in torch_sig  # the signature torch heads and indexes were built with before backends
    assert (ov["backend"], ov8["backend"], onnx8["backend"]) == ("openvino", "openvino-int8", "onnx-int8")
    assert {k: v for k, v in ov.items() if k != "backend"} == torch_sig


def test_the_cache_key_names_a_non_torch_backend() -> None:
    plain = FakeEncoder()
    ov = FakeEncoder()
    ov.backend_label = "openvino-int8"  # type: ignore[attr-defined]
    assert cache_key_model(plain) == "fake-encoder||float32|none|64"  # unchanged: old cache entries stay valid
    assert cache_key_model(ov) == "fake-encoder||float32|none|64|openvino-int8"


def test_a_model_of_another_backend_is_refused_with_the_setting_that_serves_it(
    tmp_path: Path, openvino_installed: None
) -> None:
    old = make_settings(tmp_path, embedding_backend="torch").embedding_signature  # a state folder of before
    rt = Runtime(make_settings(tmp_path, embedding_backend="openvino"), encoder=FakeEncoder(), qdrant=memory_qdrant())
    try:
        with pytest.raises(IncompatibleModelError, match="JOBCLASS_EMBEDDING_BACKEND=torch to keep them"):
            rt._check_compatible({"version": "v1", "embedding": old})
    finally:
        rt.close()
    expected = make_settings(tmp_path, embedding_backend="openvino", embedding_quantization="int8").embedding_signature
    hint = backend_hint(expected, old)
    assert "JOBCLASS_EMBEDDING_BACKEND=openvino JOBCLASS_EMBEDDING_QUANTIZATION=int8" in hint
    assert backend_hint({**old, "model": "other"}, old) == ""  # another model: reindex and train, no shortcut


# ---- exports: once, then reused; a failure is remembered ------------------------------------
def _fake_exporter(calls: list[str]) -> backends.Exporter:
    def export(source: str, out: Path, backend: str, quantization: str, calibration: Any) -> str:
        calls.append(source)
        (out / backend).mkdir(parents=True)
        (out / backend / "model.xml").write_text("weights")
        return "model.xml"

    return export


def _model_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "encoder"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"v1")
    return folder


def test_an_export_is_made_once_and_reused(tmp_path: Path) -> None:
    source = str(_model_folder(tmp_path))
    calls: list[str] = []
    root = tmp_path / "exports"
    first = backends.ensure_export(root, source, "openvino", "none", exporter=_fake_exporter(calls))
    again = backends.ensure_export(root, source, "openvino", "none", exporter=_fake_exporter(calls))
    assert first == again and calls == [source]  # the second load did not export
    assert (first / backends.EXPORT_INFO).is_file() and (first / "openvino" / "model.xml").is_file()
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp-")]
    int8 = backends.ensure_export(root, source, "openvino", "int8", exporter=_fake_exporter(calls))
    assert int8 != first and int8.name.startswith("openvino-int8-") and len(calls) == 2


def test_an_export_abandoned_by_a_dead_process_is_removed(tmp_path: Path) -> None:
    source = str(_model_folder(tmp_path))
    root = tmp_path / "exports"
    target = backends.export_path(root, source, "openvino", "none")
    root.mkdir()
    dead = target.with_name(f".tmp-{target.name}-999999999")  # no such process
    dead.mkdir()
    backends.ensure_export(root, source, "openvino", "none", exporter=_fake_exporter([]))
    assert not dead.exists()


def test_new_weights_get_a_new_export(tmp_path: Path) -> None:
    folder = _model_folder(tmp_path)
    before = backends.export_path(tmp_path / "exports", str(folder), "openvino", "none")
    (folder / "model.safetensors").write_bytes(b"weights of a retrained encoder")
    assert backends.export_path(tmp_path / "exports", str(folder), "openvino", "none") != before


def test_a_failed_export_is_remembered_and_the_settings_fall_back(
    tmp_path: Path, openvino_installed: None, caplog: pytest.LogCaptureFixture
) -> None:
    folder = _model_folder(tmp_path)
    settings = make_settings(tmp_path, embedding_backend="openvino", embedding_model=str(folder))
    calls: list[str] = []

    def broken(source: str, out: Path, backend: str, quantization: str, calibration: Any) -> str:
        calls.append(source)
        raise RuntimeError("unsupported operator\nstack")

    with pytest.raises(backends.ExportError, match="unsupported operator"):
        backends.ensure_export(settings.encoder_export_dir, str(folder), "openvino", "none", exporter=broken)
    with pytest.raises(backends.ExportError, match="failed before"):  # not retried at every start
        backends.ensure_export(settings.encoder_export_dir, str(folder), "openvino", "none", exporter=broken)
    assert len(calls) == 1
    assert not [p for p in settings.encoder_export_dir.iterdir() if p.name.startswith(".tmp-")]
    with caplog.at_level(logging.WARNING, logger="app.encoders"):
        fallen = effective_backend(settings)
    assert fallen.embedding_backend == "torch" and "backend" not in fallen.embedding_signature
    assert "failed before" in caplog.text and ".failed marker" in caplog.text


class _StubModel:
    def get_embedding_dimension(self) -> int:
        return 8


def test_the_embedder_falls_back_to_torch_when_the_runtime_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_runtime(*args: Any, **kwargs: Any) -> Path:
        raise ImportError("No module named 'openvino'")

    torch_loads: list[str] = []

    def load_torch(self: embed.SentenceEmbedder, source: str, device: str) -> _StubModel:
        torch_loads.append(source)
        return _StubModel()

    monkeypatch.setattr(embed, "ensure_export", no_runtime)
    monkeypatch.setattr(embed.SentenceEmbedder, "_load_torch", load_torch)
    monkeypatch.setattr(embed, "resolve_model_path", lambda name: name)
    with caplog.at_level(logging.WARNING, logger="indexing.embed"):
        embedder = embed.SentenceEmbedder(
            "some-model", backend="openvino", quantization="int8", export_root=tmp_path, dtype="float32"
        )
    assert torch_loads == ["some-model"]
    assert (embedder.backend, embedder.quantization, embedder.backend_label) == ("torch", "none", "torch")
    assert [r.getMessage() for r in caplog.records] == [
        "the openvino-int8 backend's runtime is not installed (No module named 'openvino'): embedding with torch"
    ]


def test_missing_runtime_names_the_module(monkeypatch: pytest.MonkeyPatch) -> None:
    assert backends.missing_runtime("torch") is None
    monkeypatch.setitem(backends.RUNTIME_MODULES, "openvino", ("json", "no_such_pkg_jc.sub"))
    assert backends.missing_runtime("openvino") == "no_such_pkg_jc.sub"


def test_the_runtime_follows_an_embedder_that_fell_back(tmp_path: Path, openvino_installed: None) -> None:
    rt = Runtime(make_settings(tmp_path, embedding_backend="openvino"), qdrant=memory_qdrant())
    try:
        fallen = FakeEncoder()
        fallen.backend_label = "torch"  # type: ignore[attr-defined]
        rt._settle_backend(fallen)  # no model loaded: nothing to refuse
        assert rt.settings.embedding_backend == "torch" and "backend" not in rt.settings.embedding_signature
    finally:
        rt.close()


def test_calibration_uses_the_shipped_sample_chunks() -> None:
    texts = calibration_texts(settings_module.Settings(_env_file=None).sample_paths, n=50)
    assert len(texts) == 50 and len(set(texts)) == 50
    assert all(0 < len(t.split()) <= 120 for t in texts)


# ---- the real OpenVINO export (loads MiniLM) ----------------------------------------------
@pytest.mark.slow
def test_openvino_embeddings_match_torch(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from app.encoders import load_encoder

    texts = [
        "Senior Python developer for our data platform team in Aarhus.",
        "Sygeplejerske til akutmodtagelsen, dag- og aftenvagter.",
        "Truck driver wanted: CE licence, night shifts. Good pay!",
    ]
    ref = load_encoder(make_settings(tmp_path, embedding_model=embed.DEFAULT_MODEL, embedding_backend="torch"))
    settings = make_settings(tmp_path, embedding_model=embed.DEFAULT_MODEL, embedding_backend="openvino")
    ov = load_encoder(settings)
    assert ov.backend_label == "openvino"
    exports = [p for p in settings.encoder_export_dir.iterdir() if p.is_dir()]
    assert len(exports) == 1 and (exports[0] / "openvino" / "openvino_model.xml").is_file()
    cosine = np.sum(ov.encode(texts) * ref.encode(texts), axis=1)
    assert cosine.min() >= 0.999
    with caplog.at_level(logging.WARNING):  # the second start loads the export, without optimum's guesswork
        again = load_encoder(settings)
    assert again.backend_label == "openvino" and np.allclose(again.encode(texts), ov.encode(texts), atol=1e-5)
    noise = ("Could not infer", "heavily recommended")  # the export's and the load's (indexing.backends._NOISE)
    assert not [r for r in caplog.records if any(n in r.getMessage() for n in noise)]
    # one compiled infer request: threads encoding at once take turns instead of "Infer Request is busy"
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: ov.encode(texts * (i + 1)), range(8)))
    assert all(np.allclose(r[: len(texts)], results[0], atol=1e-5) for r in results)
