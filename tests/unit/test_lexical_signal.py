"""The lexical signal (models.lexical), its place in the fusion, and the sparse/hybrid neighbour maths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from models.fusion import FusionParams, blend, fuse, tune
from models.knn import exact_neighbours, idf, rrf_fuse, sparse_neighbours
from models.lexical import LexicalConfig, LexicalModel

TEXTS = [
    "tømrer til tagarbejde",
    "tømrerlærling søges til nybyggeri",
    "erfaren tømrer og snedker",
    "sygeplejerske til medicinsk afdeling",
    "social- og sundhedsassistent i hjemmeplejen",
    "sygeplejerske nattevagt",
    "python udvikler til backend",
    "backend developer python og postgres",
    "frontend udvikler react",
]
Y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])


def test_lexical_model_reads_danish_word_parts() -> None:
    model = LexicalModel(3).fit(TEXTS, Y)
    p = model.predict_proba(["tømrerarbejde på tag", "sundhedsassistent", "udvikler"])
    assert p.argmax(axis=1).tolist() == [0, 1, 2]
    assert np.allclose(p.sum(axis=1), 1.0)


def test_lexical_model_round_trips_exactly(tmp_path: Path) -> None:
    model = LexicalModel(4, LexicalConfig(c=3.0)).fit(TEXTS, Y)  # class 3 never seen
    size = model.save(tmp_path)
    assert size == sum(f.stat().st_size for f in tmp_path.iterdir())
    loaded = LexicalModel.load(tmp_path)
    assert loaded.config == model.config
    assert np.array_equal(loaded.predict_proba(TEXTS), model.predict_proba(TEXTS))
    assert loaded.predict_proba(TEXTS)[:, 3].max() < 1e-6  # an unseen class gets no probability


def test_features_are_sklearns_tfidf_transform(tmp_path: Path) -> None:
    """The inference-time features (computed without sklearn's per-call checks) equal what the fitted
    ``TfidfVectorizer``s give, before and after a save/load, repeated terms and unknown ones included."""
    model = LexicalModel(3).fit(TEXTS, Y)
    texts = [*TEXTS, "tømrer tømrer tømrer tag", "TØMRER på Tag!", "ukendte ord ¤¤¤", "", "a"]
    for m in (model, LexicalModel.load(tmp_path) if model.save(tmp_path) else model):
        want = sp.hstack([v.transform(texts) for v in m._vectorizers], format="csr")
        got = m.features(texts)
        assert got.shape == want.shape
        np.testing.assert_allclose(got.toarray(), want.toarray(), atol=1e-6)
        np.testing.assert_allclose(m.predict_proba_features(got), m.predict_proba_features(want), atol=1e-6)
    assert model.coef.shape == (3, model.n_features) and model.coef.flags["F_CONTIGUOUS"]


def test_text_without_known_ngrams_is_marked_unusable() -> None:
    model = LexicalModel(3).fit(TEXTS, Y)
    _, ok = model.proba_and_mask(["tømrer", "§§§ ¤¤¤", ""])
    assert ok.tolist() == [True, False, False]


def test_blend_leaves_out_a_missing_signal_and_renormalises() -> None:
    p_head = np.array([[0.6, 0.4], [0.6, 0.4]])
    p_knn = np.array([[0.0, 1.0], [0.0, 1.0]])
    p_lex = np.array([[1.0, 0.0], [1.0, 0.0]])
    out = blend(p_head, p_knn, 0.5, p_lex, 0.25, lex_ok=np.array([True, False]))
    assert out[0] == pytest.approx([0.5 * 0.6 + 0.25, 0.5 * 0.4 + 0.25])
    assert out[1] == pytest.approx([(0.5 * 0.6) / 0.75, (0.5 * 0.4 + 0.25) / 0.75])
    head_only = blend(p_head, None, 0.0, None, 0.0)  # every weight gone: the head answers
    assert np.allclose(head_only, p_head)


def test_params_saved_before_the_lexical_signal_fuse_as_before() -> None:
    old = FusionParams(alpha=0.3, k=5, knn_temperature=0.05, temperature=1.0)  # classifier.json before β and vote
    p_head, p_knn = np.array([[0.9, 0.1]]), np.array([[0.2, 0.8]])
    assert old.beta == 0.0
    assert np.allclose(fuse(p_head, p_knn, old), 0.3 * p_head + 0.7 * p_knn)


def test_tuning_picks_the_lexical_signal_when_only_it_knows() -> None:
    rng = np.random.default_rng(0)
    n, c = 120, 3
    y = rng.integers(0, c, n)
    p_head = rng.dirichlet(np.ones(c), n)  # noise
    p_lex = np.full((n, c), 0.1)
    p_lex[np.arange(n), y] = 0.8  # always right
    labels = rng.integers(0, c, (n, 10))
    scores = rng.random((n, 10))
    result = tune(p_head, labels, scores, y, c, p_lex=p_lex)
    assert result.params.beta >= 0.5
    assert result.accuracy == pytest.approx(1.0)
    assert result.lexical_accuracy == pytest.approx(1.0)
    assert result.accuracy >= max(result.head_accuracy, result.knn_accuracy)


def test_idf_is_qdrants_formula() -> None:
    assert idf(np.array([1]), 10)[0] == pytest.approx(np.log(1 + (10 - 1 + 0.5) / 1.5))


def test_sparse_neighbours_score_shared_terms_by_idf() -> None:
    corpus = sp.csr_matrix(np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0]]))
    queries = sp.csr_matrix(np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    idx, scores = sparse_neighbours(queries, corpus, 2)
    assert idx[0, 0] == 0 and scores[0, 0] == pytest.approx(idf(np.array([1]), 3)[0])
    assert scores[0, 1] == 0.0  # no shared term
    assert scores[1, 0] == pytest.approx(idf(np.array([3]), 3)[0])


def test_rrf_matches_qdrant_local_mode() -> None:
    from qdrant_client import QdrantClient, models

    vectors = np.array([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0]], dtype=np.float32)
    client = QdrantClient(":memory:")
    client.create_collection(
        "t",
        vectors_config={"dense": models.VectorParams(size=2, distance=models.Distance.COSINE)},
        sparse_vectors_config={"lex": models.SparseVectorParams(modifier=models.Modifier.IDF)},
    )
    docs = [([0, 1], [1.0, 1.0]), ([1], [1.0]), ([2], [1.0]), ([0, 2], [1.5, 0.5])]  # no ties in the fused order
    client.upsert(
        "t",
        [
            models.PointStruct(
                id=i, vector={"dense": vectors[i].tolist(), "lex": models.SparseVector(indices=d[0], values=d[1])}
            )
            for i, d in enumerate(docs)
        ],
    )
    query, terms = np.array([0.9, 0.1]), [0]
    got = client.query_points(
        "t",
        prefetch=[
            models.Prefetch(query=query.tolist(), using="dense", limit=3),
            models.Prefetch(query=models.SparseVector(indices=terms, values=[1.0]), using="lex", limit=3),
        ],
        query=models.FusionQuery(fusion=models.Fusion.RRF),
        limit=3,
    ).points
    d_idx, _ = exact_neighbours((query / np.linalg.norm(query))[None].astype(np.float32), vectors, 3)
    corpus = sp.lil_matrix((4, 3))
    for i, (ids, vals) in enumerate(docs):
        corpus[i, ids] = vals
    s_idx, s_scores = sparse_neighbours(sp.csr_matrix(([1.0], ([0], terms)), shape=(1, 3)), corpus, 3)
    idx, scores = rrf_fuse([d_idx, s_idx], 3, valid=[np.ones_like(d_idx, bool), s_scores > 0])
    assert [p.id for p in got] == idx[0].tolist()
    assert [p.score for p in got] == pytest.approx(scores[0].tolist())


def test_hybrid_training_tunes_the_vote_and_saves_the_lexical_model(tmp_path: Path) -> None:
    from indexing.sparse import LexicalEncoder, to_csr
    from models.classifier import FusedClassifier, Neighbour
    from models.training import TextInputs, train_classifier, vote_arrays

    rng = np.random.default_rng(3)
    words = [["tømrer", "tag", "byggeplads"], ["sygeplejerske", "patient", "afdeling"], ["udvikler", "python", "kode"]]
    texts, y = [], []
    for i in range(90):
        c = i % 3
        texts.append(" ".join(rng.choice(words[c], 2)) + f" opgave{i}")
        y.append(c)
    y_arr = np.array(y)
    x = rng.normal(size=(90, 8)).astype(np.float32)  # the embedding knows nothing: the words carry it
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    enc = LexicalEncoder()
    docs, queries = to_csr(enc.documents(texts), enc.queries(texts))
    inputs = TextInputs(texts, docs, queries)
    votes = vote_arrays(x[:10], x[10:], y_arr[10:], inputs.take(np.arange(10)), inputs.take(np.arange(10, 90)))
    assert set(votes) == {"cosine", "rank"}
    assert (votes["rank"][1][:, :-1] >= votes["rank"][1][:, 1:]).all()  # best first
    assert (votes["cosine"][1][:, :-1] >= votes["cosine"][1][:, 1:]).all()
    clf, report = train_classifier(x, y_arr, ["a", "b", "c"], seed=0, inputs=inputs)
    assert report.metrics["validation"]["fused"]["accuracy"] >= report.metrics["validation"]["head"]["accuracy"]
    assert "lexical" in report.metrics["validation"]
    assert clf.params.beta + (1 - clf.params.alpha - clf.params.beta) > 0.5  # the words' signals carry it
    clf.save(tmp_path)
    loaded = FusedClassifier.load(tmp_path)
    assert loaded.lexical is not None
    nbs = [[Neighbour("a", 0.2, rank_score=1.0), Neighbour("b", 0.9, rank_score=0.3)]]
    assert np.allclose(loaded.predict_proba(x[:1], nbs, texts[:1]), clf.predict_proba(x[:1], nbs, texts[:1]))


def test_rank_vote_orders_neighbours_by_their_fused_score() -> None:
    from models.classifier import FusedClassifier, Neighbour
    from models.head import HeadConfig, LinearHead

    head = LinearHead(HeadConfig(dim=2, n_classes=2))
    row = [[Neighbour("a", 0.9, rank_score=0.3), Neighbour("b", 0.5, rank_score=1.0)]]
    by_cos = FusedClassifier(["a", "b"], head, FusionParams(k=1, vote="cosine")).knn_proba(row)
    by_rank = FusedClassifier(["a", "b"], head, FusionParams(k=1, vote="rank")).knn_proba(row)
    assert by_cos[0].argmax() == 0 and by_rank[0].argmax() == 1
