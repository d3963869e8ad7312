"""`upgrade-encoder` end to end: fine-tune → new collection → head → comparison → swap or discard.

The orchestration runs on SQLite and Postgres with fake encoders and a fake fine-tuning step; one slow
test fine-tunes the real MiniLM for a few steps on ~60 short texts and runs the whole chain."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from app.db import ModelVersion
from app.encoders import resolve_encoder_settings
from app.errors import Conflict
from app.runtime import Runtime
from app.services.encoder_upgrade import LabelledTexts, rollback_encoder, upgrade_encoder
from app.services.training import train
from app.services.vacancies import ingest_csv
from app.settings import Settings
from indexing.embed import l2_normalise
from indexing.finetune import Objective
from models.registry import EncoderRegistry
from models.training import holdout_split
from tests.conftest import make_settings, memory_qdrant
from tests.factories import seed, write_csv
from tests.fakes import FakeEncoder, FakeFinetune, topic_texts


class NoiseEncoder(FakeEncoder):
    """An encoder that forgot everything: a pseudo-random vector per text."""

    def encode(self, texts: Any, *, show_progress: bool = False) -> np.ndarray:
        rows = [
            np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)).normal(size=self.dim)
            for t in texts
        ]
        return l2_normalise(np.array(rows, dtype=np.float32).reshape(len(texts), self.dim))


def _collections(runtime: Runtime) -> set[str]:
    return {c.name for c in runtime.store.client.get_collections().collections}


def test_a_worse_encoder_is_discarded_and_nothing_changes(runtime: Runtime, tmp_path: Path) -> None:
    seed(runtime, tmp_path)
    before = (runtime.model.version, runtime.store.active_collection(), _collections(runtime))
    fake = FakeFinetune()
    with runtime.sessions() as session:
        # The lexical model reads the same texts for both, so a noise encoder can tie the champion on this
        # small data: a challenger must beat it here (a negative margin) to replace it.
        result = upgrade_encoder(
            runtime,
            session,
            finetune_fn=fake,
            load_encoder=lambda s: NoiseEncoder(name=s.embedding_model),
            margin=-0.001,
        )
        assert not result.promoted and "<" in result.reason
        assert result.champion_scores is not None
        assert result.challenger_scores["accuracy"] <= result.champion_scores["accuracy"]
        row = session.get(ModelVersion, result.model_version)
        assert row is not None and not row.is_active  # the challenger head is on record, not active
    assert (runtime.model.version, runtime.store.active_collection(), _collections(runtime)) == before
    assert runtime.settings.embedding_model == "fake-encoder"
    encoders = EncoderRegistry.under(runtime.settings.model_dir)
    meta = encoders.metadata(result.encoder_version)
    assert meta["status"] == "rejected" and meta["parent"] == "fake-encoder" and meta["data_hash"]
    assert meta["metrics"]["best_knn_accuracy"] == 0.9
    assert not (encoders.path(result.encoder_version) / "model.safetensors").exists()
    assert encoders.active_version() is None
    # the fine-tuning never saw a held-out vacancy
    _, ft_train, ft_val = fake.calls[0]
    with runtime.sessions() as session:
        held = _held_out_ids(runtime, session)
    assert held and not held & (set(ft_train.ids) | set(ft_val.ids))


def test_a_good_encoder_is_promoted_with_its_collection_and_head(
    runtime: Runtime, tmp_path: Path, settings: Settings
) -> None:
    seed(runtime, tmp_path)
    old_collection = runtime.store.active_collection()
    fake = FakeFinetune()
    with runtime.sessions() as session:
        result = upgrade_encoder(
            runtime, session, finetune_fn=fake, load_encoder=lambda s: FakeEncoder(name=s.embedding_model)
        )
        assert result.promoted, result.reason
        active_rows = session.scalars(select(ModelVersion).where(ModelVersion.is_active)).all()
        assert [r.id for r in active_rows] == [result.model_version]
    # the challenger's fusion was tuned on the training rows the encoder only validated on, not out of fold over
    # rows it trained on; its head was then refit on every training row
    _, ft_train, ft_val = fake.calls[0]
    metrics = runtime.registry.metadata(result.model_version)["metrics"]
    assert metrics["fusion_tuning"] == {"on": "rows_the_encoder_did_not_train_on", "n": len(ft_val.ids)}
    assert metrics["n_train"] == len(ft_train.ids) + len(ft_val.ids)
    encoders = EncoderRegistry.under(settings.model_dir)
    path = str(encoders.path(result.encoder_version))
    assert encoders.active_version() == result.encoder_version
    assert encoders.metadata(result.encoder_version)["status"] == "active"
    # encoder, alias and model switched together
    assert runtime.settings.embedding_model == path and runtime.encoder.name == path
    assert runtime.model.version == result.model_version
    assert runtime.store.active_collection() == result.collection != old_collection
    assert old_collection not in _collections(runtime)
    runtime.check_index_compatible()
    hits = runtime.store.search(runtime.encoder.encode(["python developer backend"])[0], 3)
    assert hits and hits[0].label
    # a restart picks the fine-tuned encoder over JOBCLASS_EMBEDDING_MODEL and the head fits it
    restarted = Runtime(
        resolve_encoder_settings(settings),
        encoder=FakeEncoder(name=path),
        qdrant=memory_qdrant(),
        engine=runtime.engine,
    )
    try:
        assert restarted.settings.embedding_model == path
        loaded = restarted.load_active_model()
        assert loaded is not None and loaded.version == result.model_version
    finally:
        restarted.store.client.close()
        if restarted.cache is not None:
            restarted.cache.close()


def test_training_rows_of_held_out_vacancies_are_dropped(runtime: Runtime, tmp_path: Path) -> None:
    seed(runtime, tmp_path)
    rows = topic_texts(12)
    fake = FakeFinetune()
    csv_rows = LabelledTexts([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
    with runtime.sessions() as session:
        held = _held_out_ids(runtime, session)
        upgrade_encoder(
            runtime,
            session,
            train=csv_rows,
            finetune_fn=fake,
            load_encoder=lambda s: FakeEncoder(name=s.embedding_model),
        )
    _, ft_train, ft_val = fake.calls[0]
    assert held and held <= set(csv_rows.ids)
    assert not held & (set(ft_train.ids) | set(ft_val.ids))
    assert len(ft_train.ids) + len(ft_val.ids) == len(csv_rows.ids) - len(held)


def test_an_upgrade_waits_for_no_reindex(runtime: Runtime, tmp_path: Path) -> None:
    seed(runtime, tmp_path)
    collections = _collections(runtime)
    runtime.index_lock.acquire()
    try:
        with runtime.sessions() as session, pytest.raises(Conflict):
            upgrade_encoder(
                runtime, session, finetune_fn=FakeFinetune(), load_encoder=lambda s: FakeEncoder(name=s.embedding_model)
            )
    finally:
        runtime.index_lock.release()
    assert _collections(runtime) == collections
    assert EncoderRegistry.under(runtime.settings.model_dir).active_version() is None


def _fake_loader(settings: Settings) -> FakeEncoder:
    return FakeEncoder(name=settings.embedding_model)


def _promote(runtime: Runtime) -> str:
    with runtime.sessions() as session:
        result = upgrade_encoder(runtime, session, finetune_fn=FakeFinetune(), load_encoder=_fake_loader)
    assert result.promoted, result.reason
    return result.encoder_version


def test_rollback_restores_the_parent_encoder_and_its_head(runtime: Runtime, tmp_path: Path) -> None:
    seed(runtime, tmp_path)
    champion, base = runtime.model.version, runtime.settings.embedding_model
    upgraded = _promote(runtime)
    upgraded_collection = runtime.store.active_collection()
    with runtime.sessions() as session:
        result = rollback_encoder(runtime, session, load_encoder=_fake_loader)
        active_rows = session.scalars(select(ModelVersion).where(ModelVersion.is_active)).all()
        assert [r.id for r in active_rows] == [champion]
    assert (result.rolled_back, result.encoder, result.model_version, result.retrained) == (
        upgraded,
        base,
        champion,
        False,
    )
    encoders = EncoderRegistry.under(runtime.settings.model_dir)
    assert encoders.active_version() is None and encoders.metadata(upgraded)["status"] == "retired"
    # encoder, head and alias switched together, to a collection embedded by the base encoder
    assert runtime.settings.embedding_model == base and runtime.encoder.name == base
    assert runtime.model.version == champion and runtime.registry.active_version() == champion
    assert runtime.store.active_collection() == result.collection != upgraded_collection
    assert upgraded_collection not in _collections(runtime)
    assert runtime.store.count() == result.count > 0
    runtime.check_index_compatible()
    with runtime.sessions() as session, pytest.raises(Conflict, match="nothing to roll back"):  # nothing to undo
        rollback_encoder(runtime, session, load_encoder=_fake_loader)


def test_rollback_trains_a_head_when_the_parents_head_is_gone(runtime: Runtime, tmp_path: Path) -> None:
    seed(runtime, tmp_path)
    champion = runtime.model.version
    _promote(runtime)
    shutil.rmtree(runtime.registry.path(champion))
    with runtime.sessions() as session:
        result = rollback_encoder(runtime, session, load_encoder=_fake_loader)
        row = session.get(ModelVersion, result.model_version)
        assert row is not None and row.is_active
    assert result.retrained and result.model_version != champion
    assert runtime.model.version == result.model_version
    assert runtime.registry.metadata(result.model_version)["embedding"] == runtime.settings.embedding_signature


def test_rollback_waits_for_no_reindex(runtime: Runtime, tmp_path: Path) -> None:
    seed(runtime, tmp_path)
    upgraded = _promote(runtime)
    before = (runtime.model.version, runtime.store.active_collection(), _collections(runtime))
    runtime.index_lock.acquire()
    try:
        with runtime.sessions() as session, pytest.raises(Conflict):
            rollback_encoder(runtime, session, load_encoder=_fake_loader)
    finally:
        runtime.index_lock.release()
    assert (runtime.model.version, runtime.store.active_collection(), _collections(runtime)) == before
    assert EncoderRegistry.under(runtime.settings.model_dir).active_version() == upgraded


def _held_out_ids(runtime: Runtime, session: Any) -> set[str]:
    from app.services.vacancies import labelled_vacancies

    vacancies = labelled_vacancies(session)
    index = {lab: i for i, lab in enumerate(runtime.taxonomy.labels)}
    y = np.array([index[v.label] for v in vacancies if v.label is not None])
    _, va = holdout_split(
        [v.id for v in vacancies], y, runtime.settings.validation_fraction, salt=str(runtime.settings.seed)
    )
    return {vacancies[i].id for i in va}


@pytest.mark.slow
def test_real_minilm_fine_tunes_and_the_chain_runs(tmp_path: Path) -> None:
    """A few steps of real fine-tuning on ~60 short texts: the artifact is saved, registered, reloaded and
    encodes; the chain compares it with the frozen champion and swaps or discards consistently."""
    from app.services.encoder_upgrade import sentence_transformers_finetune
    from indexing.finetune import FinetuneConfig

    settings = make_settings(
        tmp_path,
        embedding_model="sentence-transformers/all-MiniLM-L6-v2",
        embedding_chunking="none",
        database_url=f"sqlite:///{tmp_path / 'chain.db'}",
    )
    from app.db import migrate

    migrate(settings.db_url)
    runtime = Runtime(settings, qdrant=memory_qdrant())
    try:
        path = write_csv(tmp_path / "seed.csv", topic_texts(20))  # 60 texts, 3 classes
        with runtime.sessions() as session:
            assert ingest_csv(session, path, runtime.taxonomy, source="sample").ok
            champion = train(runtime, session).version
            cfg = FinetuneConfig(
                epochs=1, batch_size=8, max_pairs_per_class=8, max_seq_length=32, evals_per_epoch=1, patience=1
            )
            result = upgrade_encoder(runtime, session, finetune_fn=sentence_transformers_finetune(cfg), margin=1.0)
        assert result.promoted  # margin 1.0: any challenger passes
        encoders = EncoderRegistry.under(settings.model_dir)
        folder = encoders.path(result.encoder_version)
        info = json.loads((folder / "finetune.json").read_text())
        assert info["steps"] >= 1 and info["texts_per_s"] > 0 and info["base_model"] == settings.embedding_model
        assert encoders.metadata(result.encoder_version)["parent"] == settings.embedding_model
        assert runtime.settings.embedding_model == str(folder) and runtime.model.version != champion
        vectors = runtime.encoder.encode(["python developer", "nurse in elderly care"])
        assert vectors.shape == (2, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    finally:
        runtime.close()


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["supcon", "softmax"])
def test_single_text_objectives_fine_tune_real_minilm(tmp_path: Path, objective: Objective) -> None:
    """supcon and softmax: one example per text, saved as a sentence-transformers folder that reloads."""
    from indexing.embed import SentenceEmbedder
    from indexing.finetune import FinetuneConfig, finetune, read_finetune_info

    rows = topic_texts(8)  # 24 texts, 3 classes
    texts, labels = [r[1] for r in rows], [r[2] for r in rows]
    cfg = FinetuneConfig(
        objective=objective, epochs=1, batch_size=8, max_seq_length=32, evals_per_epoch=1, patience=1, chunking=False
    )
    result = finetune(
        "sentence-transformers/all-MiniLM-L6-v2",
        texts,
        labels,
        texts[::4],
        labels[::4],
        tmp_path / "ft",
        cfg,
        show_progress=False,
    )
    assert result.n_examples == len(texts) and result.steps == 3 and result.texts_per_s > 0
    info = read_finetune_info(tmp_path / "ft")
    assert info["params"]["objective"] == objective and "base_knn_accuracy" in info["metrics"]
    if objective == "softmax":  # the proxies are trained too (their own learning rate), from the centroids
        assert 0.5 < info["metrics"]["proxy_cosine_to_centroid"] < 0.9999
    vectors = SentenceEmbedder(str(tmp_path / "ft"), dtype="float32", chunking="none").encode(["python developer"])
    assert vectors.shape == (1, 384) and np.isclose(np.linalg.norm(vectors), 1.0, atol=1e-4)
