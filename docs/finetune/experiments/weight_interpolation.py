"""Weight-space interpolation between the base and a fine-tuned encoder (WiSE-FT, Wortsman et al. 2022).

Reproduces the "Fourth re-run" tables of docs/finetune.md:

    HF_HUB_OFFLINE=1 .venv/bin/python docs/finetune/experiments/weight_interpolation.py \
        jobbert_titles_isco softmax 2 fine

fine-tunes as ``jobclass bench --finetune`` does (same tuning split, same seed), then for each λ in LAMS
(default 0,0.25,0.5,0.75,1) scores head, kNN and fusion of the encoder θ_base + λ·(θ_ft − θ_base) under the
ft rows' protocol (``app.bench.finetune_rows.holdout_rows``: head early-stopped and fusion tuned on the tuning
split) on val.csv.
λ = 0 is the frozen encoder under that protocol (the bench's ``fused_holdout``); λ = 1 is ``ft_fused``.
It also prints the best convex blends of frozen and fine-tuned probabilities, with the weight picked on
val.csv itself: an optimistic ceiling of mixing the two encoders, not a method.
An experiment, not part of the service: its outputs go to /tmp/wise.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from app.bench.accuracy import BenchConfig, indices, load_bench_encoder, score, with_tuning_split
from app.bench.finetune_rows import finetune_targets, holdout_rows
from app.services.dataset import load_split
from app.settings import get_settings
from indexing.embed import SentenceEmbedder
from indexing.finetune import FinetuneConfig, finetune, load_model


def main(dataset: str, objective: str, epochs: float, level: str, learning_rate: float = 5e-5) -> None:
    root = Path(os.environ.get("DATASETS", "../shared/datasets")) / dataset
    settings = get_settings()
    encoder, _ = load_bench_encoder(settings)
    cfg = BenchConfig(name=dataset)
    train = load_split(root / "train.csv", settings.clean_max_chars)
    test = load_split(root / "val.csv", settings.clean_max_chars)
    train, val = with_tuning_split(train, None, cfg)
    labels = sorted(set(train.labels) | set(val.labels))
    index = {lab: i for i, lab in enumerate(labels)}
    work = Path("/tmp/wise") / f"{dataset}_{objective}_{level}_{epochs}"
    if not (work / "finetune.json").exists():
        ft_cfg = FinetuneConfig(
            objective=objective,  # type: ignore[arg-type]
            epochs=epochs,
            batch_size=64 if dataset.startswith("jobbert") else 32,
            learning_rate=learning_rate,
            seed=cfg.seed,
        )
        tr_labels, va_labels, coarse = finetune_targets(train, val, level == "fine")
        finetune(encoder.name, train.texts, tr_labels, val.texts, va_labels, work, ft_cfg, coarse=coarse, say=print)
    base, tuned = load_model(encoder.name).state_dict(), load_model(str(work)).state_dict()
    y_tr, y_va, y_te = (indices(s.labels, index) for s in (train, val, test))
    results, probs_at = {}, {}
    for lam in (float(x) for x in os.environ.get("LAMS", "0,0.25,0.5,0.75,1").split(",")):
        folder = Path(f"{work}_lambda{lam}")
        if not folder.exists():
            model = load_model(str(work))
            mixed = {k: base[k].float() + lam * (v.float() - base[k].float()) for k, v in tuned.items()}
            model.load_state_dict({k: mixed[k].to(v.dtype) if v.is_floating_point() else v for k, v in tuned.items()})
            model.save(str(folder))
        emb = SentenceEmbedder(
            str(folder), dtype=encoder.dtype, batch_size=encoder.batch_size, chunking=encoder.chunking
        )
        t0 = time.perf_counter()
        x_tr, x_va, x_te = (emb.encode(s.texts) for s in (train, val, test))
        probs, clf = holdout_rows(x_tr, y_tr, x_va, y_va, x_te, labels, cfg)
        probs_at[lam] = probs
        row: dict[str, object] = {}
        for name in ("head", "knn", "fused"):
            scores = score(probs[name], y_te, labels)
            row[name], row[f"{name}_f1"] = round(scores["accuracy"], 4), round(scores["macro_f1"], 4)
        row["fusion"], row["seconds"] = clf.params.to_dict(), round(time.perf_counter() - t0)
        results[lam] = row
        print("lambda", lam, json.dumps(row), flush=True)
    if 0.0 in probs_at and 1.0 in probs_at:
        frozen, ft = probs_at[0.0], probs_at[1.0]
        for a, b in (("fused", "fused"), ("knn", "head"), ("knn", "fused"), ("knn", "knn")):
            best = max(
                (float(np.mean((w * frozen[a] + (1 - w) * ft[b]).argmax(1) == y_te)), w) for w in np.linspace(0, 1, 11)
            )
            print(f"ceiling: frozen {a} + fine-tuned {b}: accuracy {best[0]:.4f} at weight {best[1]:.1f}")
    (Path(f"{work}_interpolation.json")).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4], *(float(a) for a in sys.argv[5:6]))
