"""Markdown (and the files next to it) of every benchmark: ``report.md`` of ``jobclass bench``, the
fine-tuned rows, the targets table and ``docs/benchmarks.md`` of ``bench-all``, ``extract.md`` of
``bench --extract`` and ``report.md`` of ``bench-perf``. Formatting only: the numbers come in as the
metrics dictionaries the runs return."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.metrics import plot_confusion

METHOD_ORDER = (
    "tfidf_lr",
    "head",
    "knn",
    "lexical",
    "fused",
    "fused_int8",
    "fused_pruned",
    "fused_int8_pruned",
)
HIER_METHODS = ("head_hier", "fused_hier")  # with label_fine: trained on it, rolled up to label
FT_METHODS = (
    "fused_holdout",
    "ft_head",
    "ft_knn",
    "ft_fused",
    "ft_fused_int8",
    "ft_fused_pruned",
    "ft_fused_int8_pruned",
)


# ---- jobclass bench: report.md ----------------------------------------------------------------
def _methods_table(m: dict[str, Any]) -> list[str]:
    lines = ["| method | accuracy | macro-F1 | ECE | head bytes | head µs/item |", "|---|---|---|---|---|---|"]
    for name in (*METHOD_ORDER, *HIER_METHODS):
        if name not in m:
            continue
        s = m[name]
        lines.append(
            f"| {name} | {s['accuracy']:.4f} | {s['macro_f1']:.4f} | {s['ece']:.3f} | "
            f"{s.get('head_bytes', '')} | {s.get('head_latency_us_per_item', '')} |"
        )
    return lines


def _abstain_lines(fused: dict[str, Any]) -> list[str]:
    a = fused["abstain"]
    return [
        "",
        f"Abstain threshold {a['threshold']}: coverage {a['coverage']:.3f}, accuracy on answered {a['accuracy']:.4f}.",
    ]


COVERAGE_TOLERANCE = 0.015  # the target: empirical coverage within ±1.5 points of JOBCLASS_COVERAGE


def _calibration_rows(u: dict[str, Any]) -> str:
    n, held = u["n_calibration"], u.get("n_holdout", u["n_calibration"])
    if n == held:
        return f"the {held} validation rows"
    return f"{n} rows: {held} validation + {n - held} out-of-fold training rows"


def _within(coverage: float, target: float) -> str:
    gap = (coverage - target) * 100
    return f"{gap:+.1f} points, {'within' if abs(gap) <= COVERAGE_TOLERANCE * 100 + 1e-9 else 'outside'} ±1.5"


def _uncertainty_lines(u: dict[str, Any]) -> list[str]:
    t = u["test"]
    lines = [
        "",
        f"Prediction sets (coverage target {u['coverage_target']:g}, calibrated on {_calibration_rows(u)}, "
        f"{u['mondrian_classes']} classes with their own threshold): on test, empirical coverage "
        f"{t['empirical_coverage']:.4f} ({_within(t['empirical_coverage'], u['coverage_target'])}), mean set size "
        f"{t['mean_set_size']:.2f}, singletons {t['singleton_share']:.1%}, empty sets {t.get('empty_share', 0):.1%}.",
        "",
        "Automation on test, thresholds chosen on validation (share automated / accuracy of the automated part):",
        "",
        "| target accuracy | per-class thresholds | one global threshold |",
        "|---|---|---|",
    ]

    def cell(m: dict[str, Any]) -> str:
        acc = m["accuracy_automated"]
        return f"{m['share_automated']:.1%} / {acc:.4f}" if acc is not None else f"{m['share_automated']:.1%} / –"

    for row in u["automation"]["targets"]:
        lines.append(f"| {row['target']:g} | {cell(row['per_class'])} | {cell(row['global'])} |")
    return lines


def _fine_lines(f: dict[str, Any], fused: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"Fine labels ({f['n_fine_classes']} classes): fused fine accuracy {f['fused_fine_accuracy']:.4f}, "
        f"macro-F1 {f['fused_fine_macro_f1']:.4f}; coarse accuracy of the most probable fine label's parent "
        f"{f['fused_coarse_from_fine_accuracy']:.4f} (vs {fused['accuracy']:.4f} trained on coarse labels).",
    ]
    if "flat_comparison" in f:
        d, a = f["flat_comparison"], f["answers"]
        levels = ", ".join(f"level {k} {v:.4f}" for k, v in sorted(f["level_accuracy"].items()))
        lines += [
            "",
            "Hierarchical (trained on the fine labels, `label` their parent, probabilities rolled up): "
            f"fused_hier − fused {d['fused_hier_minus_flat']:+.2f} points accuracy, "
            f"{d['fused_hier_minus_flat_f1']:+.2f} macro-F1; head_hier − head {d['head_hier_minus_flat']:+.2f} / "
            f"{d['head_hier_minus_flat_f1']:+.2f}. Accuracy per level of the most probable fine label: {levels}; "
            f"LCA score {f['lca_score']:.4f}.",
            f"Answers at threshold {a['threshold']} (descend while the rolled-up probability reaches it): "
            f"{100 * a['share_fine']:.1f}% fine, {100 * a['share_coarse']:.1f}% coarse (the parent), "
            f"{100 * a['share_abstained']:.1f}% none; {a['accuracy_answered']:.4f} of the answers on the true path; "
            f"LCA score {a['lca_score']:.4f}.",
        ]
    return lines


def _timing_lines(t: dict[str, Any]) -> list[str]:
    return [
        "",
        f"Timing ({t['threads']} threads): embedding {t['embed_texts_per_s']} texts/s; one classification "
        f"(clean → embed → Qdrant local, {t['index_points']} points → fuse) p50 {t['classify_p50_ms']} ms, "
        f"p99 {t['classify_p99_ms']} ms; index upsert {t['index_upsert_points_per_s']} points/s.",
    ]


def _cv_lines(cv: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"{cv['folds']}-fold cross-validation over {cv['n']} rows (train + val pooled):",
        "",
        "| method | accuracy | macro-F1 |",
        "|---|---|---|",
    ]
    for name in (*METHOD_ORDER, *HIER_METHODS):
        if name in cv["methods"]:
            s = cv["methods"][name]
            lines.append(
                f"| {name} | {s['accuracy_mean']:.4f} ± {s['accuracy_std']:.4f} | "
                f"{s['macro_f1_mean']:.4f} ± {s['macro_f1_std']:.4f} |"
            )
    return lines


def markdown_report(result: dict[str, Any], image: str | None = None, heading: str = "##") -> str:
    m = result["methods"]
    lines = [
        f"{heading} {result['dataset']}",
        "",
        f"train {result['n_train']} · val {result['n_val']} · test {result['n_test']} · "
        f"{result['n_classes']} classes · embedder `{result['embedder']}`",
        "",
        *_methods_table(m),
    ]
    if "abstain" in m["fused"]:
        lines += _abstain_lines(m["fused"])
    if "uncertainty" in result:
        lines += _uncertainty_lines(result["uncertainty"])
        if image:
            lines += ["", f"![share automated vs accuracy on {result['dataset']}](automation.png)"]
    if "fine" in result:
        lines += _fine_lines(result["fine"], m["fused"])
    if "timing" in result:
        lines += _timing_lines(result["timing"])
    if "cv" in result:
        lines += _cv_lines(result["cv"])
    if image:
        lines += ["", f"![confusion matrix of fused on {result['dataset']}]({image})"]
    return "\n".join(lines) + "\n"


def write_outputs(result: dict[str, Any], out: Path) -> None:
    """``metrics.json``, ``report.md`` and ``confusion_fused.png`` of one ``jobclass bench`` run."""
    out.mkdir(parents=True, exist_ok=True)
    cm = np.array(result["confusion_fused"])
    plot_confusion(cm, result["labels"], out / "confusion_fused.png", title=f"fused — {result['dataset']}")
    if "uncertainty" in result:
        from app.services.uncertainty import automation_png

        title = f"fused — {result['dataset']}: automation on test (thresholds chosen on validation)"
        (out / "automation.png").write_bytes(automation_png(result["uncertainty"]["automation"], title))
    (out / "metrics.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    (out / "report.md").write_text(markdown_report(result, "confusion_fused.png", heading="#"))


# ---- jobclass bench --finetune: rows appended to report.md ------------------------------------
def finetune_markdown(result: dict[str, Any]) -> str:
    """The fine-tuned rows next to the frozen ones they compete with (appended to report.md)."""
    m, f = result["methods"], result["finetune"]
    objective = f.get("params", {}).get("objective", "triplets")
    examples = "triplets" if objective == "triplets" else "labelled texts"
    if f.get("params", {}).get("fine_labels"):
        objective += ", fine labels"
    lines = [
        "",
        "## Fine-tuned encoder",
        "",
        f"Fine-tuning of `{f['base_model']}` ({objective} objective): {f['n_examples']} {examples} from "
        f"{f['n_train_texts']} texts, {f['steps']} steps (best {f['best_step']}), {f['wall_seconds']:.0f} s wall "
        f"({f['texts_per_s']:.1f} texts/s through forward + backward; load average at the end "
        f"{f['load_average']}).",
        "",
        "| method | accuracy | macro-F1 | ECE |",
        "|---|---|---|---|",
    ]
    for name in ("tfidf_lr", "head", "knn", "fused", *FT_METHODS):
        if name in m:
            s = m[name]
            lines.append(f"| {name} | {s['accuracy']:.4f} | {s['macro_f1']:.4f} | {s['ece']:.3f} |")
    if {"ft_fused", "fused", "tfidf_lr"} <= m.keys():
        gain = 100 * (m["ft_fused"]["accuracy"] - m["fused"]["accuracy"])
        over_tfidf = 100 * (m["ft_fused"]["accuracy"] - m["tfidf_lr"]["accuracy"])
        lines += [
            "",
            f"ft_fused − fused: {gain:+.2f} points (target ≥ +2); ft_fused − tfidf_lr: {over_tfidf:+.2f} points "
            "(target ≥ +3 on English data).",
        ]
    if {"ft_fused", "fused_holdout"} <= m.keys():
        like = 100 * (m["ft_fused"]["accuracy"] - m["fused_holdout"]["accuracy"])
        lines += [
            f"ft_fused − fused_holdout: {like:+.2f} points (fused_holdout: the frozen encoder with the head "
            "early-stopped and the fusion tuned on the validation split, as the ft rows are; `fused` cross-fits "
            "over the training split, which a fine-tuned encoder cannot do without flattering itself).",
        ]
    return "\n".join(lines) + "\n"


# ---- jobclass bench-all: targets and docs/benchmarks.md ----------------------------------------
def targets_markdown(rows: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """One row per dataset (and per CV section): ✓ where the target holds, the margin in points."""

    def cell(value: float, ok: bool) -> str:
        return f"{'✓' if ok else '✗'} {value:+.2f}"

    lines = [
        "| dataset | fused − head (acc / F1) | fused − knn (acc / F1) | fused − lexical (acc / F1) | fused − tfidf_lr "
        "| worst compression loss |",
        "|---|---|---|---|---|---|",
    ]
    for name, checks in rows:
        for scope, d in checks.items():
            lines.append(
                f"| {name}{' (5-fold CV)' if scope == 'cv' else ''} "
                f"| {cell(d['fused_minus_head'], d['fused_minus_head'] >= 0)} / "
                f"{cell(d['fused_minus_head_f1'], d['fused_minus_head_f1'] >= 0)} "
                f"| {cell(d['fused_minus_knn'], d['fused_minus_knn'] >= 0)} / "
                f"{cell(d['fused_minus_knn_f1'], d['fused_minus_knn_f1'] >= 0)} "
                f"| {cell(d['fused_minus_lexical'], d['fused_minus_lexical'] >= 0)} / "
                f"{cell(d['fused_minus_lexical_f1'], d['fused_minus_lexical_f1'] >= 0)} "
                f"| {cell(d['fused_minus_tfidf'], d['fused_minus_tfidf'] >= 0)} "
                f"| {cell(-d['compression_loss'], d['compression_loss'] <= 0.5)} |"
            )
    return "\n".join(lines)


def summary_row(name: str, result: dict[str, Any]) -> str:
    """One dataset's accuracy per method, a row of the benchmarks.md summary table."""
    m = result["methods"]
    return f"| {name} | " + " | ".join(f"{m[k]['accuracy']:.4f}" for k in METHOD_ORDER) + " |"


def benchmarks_markdown(
    embedder: str,
    about_embedder: str,
    wall_seconds: float,
    cached: bool,
    summary_rows: Sequence[str],
    checks: Sequence[tuple[str, dict[str, Any]]],
    sections: Sequence[str],
) -> str:
    """``docs/benchmarks.md``: the summary table, the targets and each dataset's report."""
    header = "| dataset | " + " | ".join(METHOD_ORDER) + " |"
    text = "\n".join(
        [
            "# Benchmarks",
            "",
            "Generated by `make bench` (`jobclass bench-all`). Each dataset in `../shared/datasets` is trained on its",
            "`train.csv` and scored on its `val.csv`, which is never used for training or tuning (the official test",
            "splits are held back elsewhere). A stratified 10% of train (the service's hold-out share) tunes",
            "TF-IDF's C, which is then refit on all of train; the head's epoch count is chosen by 5-fold",
            "cross-validation and the fusion (α, β, k, temperatures, vote) on 5-fold out-of-fold predictions over",
            "the other 90%, and the served rows are *not* refit on the 10%: exactly what `jobclass train` serves",
            "(its hold-out stays unseen by every version; the index, and so the vote, holds it). All methods share",
            "one run, one machine and the same embeddings, so the rows compare side by side.",
            f"Embedder: `{embedder}` ({about_embedder}). Wall time of this run: {wall_seconds:.0f} s"
            f" ({'embeddings from the cache where present' if cached else 'no embedding cache'}).",
            "",
            "## Accuracy on val.csv",
            "",
            header,
            "|---" * (len(METHOD_ORDER) + 1) + "|",
            *summary_rows,
            "",
            "## Targets",
            "",
            "Accuracy (and macro-F1) points; ✓ where the target holds: fused (what the service serves) ≥ each of",
            "its signals (head, knn, lexical) and ≥ the tfidf_lr baseline, compression loses ≤ 0.5.",
            "",
            targets_markdown(checks),
            "",
            "## Per dataset",
            "",
            *sections,
        ]
    )
    return text + "\n"


# ---- jobclass bench --extract: extract.md -----------------------------------------------------
EXTRACT_REPORTED = ("tfidf_lr", "head", "knn", "fused")


def extract_markdown(result: dict[str, Any]) -> str:
    reported = EXTRACT_REPORTED
    lines = [
        f"## Raw vs cleaned vs extracted text — {result['dataset']}",
        "",
        f"Train {result['n_train']}, validation {result['n_val']}, test {result['n_test']}; "
        f"extractor `{result['extractor']}`; torch threads {result['torch_threads']}; {result['created_at']}.",
        "",
        "| text | " + " | ".join(f"{m} acc" for m in reported) + " | fused macro-F1 | texts/s (prep + embed) "
        "| extraction texts/s | mean chars | fell back to cleaned |",
        "|---|" + "---:|" * (len(reported) + 5),
    ]
    for name, v in result["variants"].items():
        acc = " | ".join(f"{v['accuracy'][m]:.4f}" for m in reported)
        ext = v["extract_texts_per_second"] if v["extract_texts_per_second"] is not None else "–"
        lines.append(
            f"| {name} | {acc} | {v['macro_f1']['fused']:.4f} | {v['texts_per_second']} | {ext} "
            f"| {v['mean_chars']} | {v['n_fallback_to_cleaned']} |"
        )
    lines += ["", "Example of each text (the last test ad):", ""]
    for name, v in result["variants"].items():
        example = " ".join(v["example"][:200].replace("`", "").split())
        lines.append(f"- **{name}**: `{example}`")
    return "\n".join(lines) + "\n"


# ---- jobclass bench-perf: report.md -----------------------------------------------------------
def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _perf_header(result: dict[str, Any]) -> list[str]:
    machine = result["machine"]
    return [
        "# Performance benchmark (`jobclass bench-perf`)",
        "",
        f"Run {result['when']} on {machine['cpus']} CPUs ({machine['processor']}), torch "
        f"{machine['torch']} with {machine['torch_threads']} threads; load average at start "
        f"{', '.join(f'{x:.1f}' for x in machine['load_avg_at_start'])}. Ratios are side by side in one run.",
        "",
    ]


def _embedding_md(emb: dict[str, Any]) -> list[str]:
    lines = [
        "## Embedding",
        "",
        f"CPU capability `{emb['cpu_capability']}`, native bfloat16: {emb['native_bf16']} → default dtype here: "
        f"`{emb['default_dtype_here']}`.",
        "",
        "| texts | variant | texts/s | × raw float32 | cosine mean | cosine min | cosine vs |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for set_name, data in emb["sets"].items():
        for name, r in data["variants"].items():
            lines.append(
                f"| {set_name} ({data['n_texts']}) | {name} | {r['texts_per_s']:.1f} | "
                f"{r['speed_vs_raw_float32']:.2f} | "
                f"{r['cosine_mean']:.5f} | {r['cosine_min']:.5f} | {r['cosine_reference']} |"
            )
    return [*lines, ""]


def _service_md(svc: dict[str, Any]) -> list[str]:
    lines = [
        "## Service overhead",
        "",
        "| texts | POST /v1/classify/batch (s, median) | encode + head (s, median) | overhead (median of rounds) |",
        "|---:|---:|---:|---:|",
        f"| {svc['n_texts']} | {svc['service_batch_s']:.2f} | {svc['encode_plus_head_s']:.2f} | "
        f"{svc['overhead_pct']:.1f}% |",
        "",
        svc["what"] + ".",
        "",
    ]
    if "overhead_pct_rounds" in svc:
        lines += ["Per round: " + ", ".join(f"{x:+.1f}%" for x in svc["overhead_pct_rounds"]) + ".", ""]
    if "breakdown" in svc:
        lines += [
            "The service's own steps, each timed alone (best of 3), as a share of encode + head:",
            "",
            "| step | seconds | share |",
            "|---|---:|---:|",
            *(
                f"| {key.removesuffix('_s')} | {value:.3f} | {svc['breakdown_pct'][key]:.1f}% |"
                for key, value in svc["breakdown"].items()
            ),
            "",
        ]
    return lines


def _microbatch_md(mb: dict[str, Any]) -> list[str]:
    lines = [
        "## Micro-batching",
        "",
        f"{mb['clients']} concurrent clients, {mb['requests']} single `POST /v1/classify` requests per run.",
        "",
        "| texts | run | requests/s | CPU s / request | p50 ms | p99 ms | model calls | largest group |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, runs in mb["sets"].items():
        for mode in ("without", "with", "without_again"):
            r = runs[mode]
            lines.append(
                f"| {name} | {mode.replace('_', ' ')} | {r['requests_per_s']:.2f} | {r['cpu_s_per_request']:.3f} | "
                f"{r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {_f(r.get('model_calls'))} | "
                f"{_f(r.get('largest_group'))} |"
            )
    lines.append("")
    for name, runs in mb["sets"].items():
        lines.append(
            f"- {name}: throughput with micro-batching {runs['speedup']:.2f}× the faster run without; "
            f"CPU time per request {runs['cpu_ratio']:.2f}× less."
        )
    return [*lines, ""]


def _knn_row(n: str, backend: str, r: dict[str, Any], queries: int) -> str:
    if "skipped" in r:
        return f"| {int(n):,} | {backend} | – | – | – | – | – | – | skipped: {r['skipped']} |"
    note = f" ({r['queries_measured']} queries)" if r.get("queries_measured", 0) not in (0, queries) else ""
    return (
        f"| {int(n):,} | {backend}{note} | {_f(r.get('upsert_per_s'), 0)} | {_f(r.get('hnsw_build_s'))} | "
        f"{r['search']['p50_ms']:.2f} | {r['search']['p99_ms']:.2f} | "
        f"{r['search_filtered']['p50_ms']:.2f} | "
        f"{r['search_filtered']['p99_ms']:.2f} | {r['recall_at_10']:.3f} |"
    )


def _quantization_md(none: dict[str, Any], quant: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "### Quantization at 100k (edge, HNSW m=16 ef_construct=100)",
        "",
        "| quantization | search | index build s | recall@10 | p50 ms | p99 ms |",
        "|---|---|---:|---:|---:|---:|",
        f"| none | float32 | {_f(none.get('hnsw_build_s'))} | {none['recall_at_10']:.3f} | "
        f"{none['search']['p50_ms']:.2f} | {none['search']['p99_ms']:.2f} |",
    ]
    for name, r in quant.items():
        kind, _, search = name.partition("_")
        lines.append(
            f"| {kind} | {search} | {r['build_s']:.1f} | {r['recall_at_10']:.3f} | {r['p50_ms']:.2f} | "
            f"{r['p99_ms']:.2f} |"
        )
    return lines


def _knn_md(knn: dict[str, Any]) -> list[str]:
    lines = [
        "## kNN search",
        "",
        f"{knn['dim']}-d synthetic clustered unit vectors (1000 clusters), {knn['queries']} queries, k = 10; "
        f"filter: {knn['filter']}. Latency per single query through `VectorStore.search` (numpy: the matrix "
        "product and a partial sort only).",
        "",
        "| vectors | backend | upsert/s | index build s | p50 ms | p99 ms | filtered p50 ms | filtered p99 ms "
        "| recall@10 |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, row in knn["sizes"].items():
        for backend in ("numpy_exact", "qdrant_local", "edge"):
            if row.get(backend) is not None:
                lines.append(_knn_row(n, backend, row[backend], knn["queries"]))
    quant = next((row["edge_quantization"] for row in knn["sizes"].values() if "edge_quantization" in row), None)
    if quant:
        lines += _quantization_md(knn["sizes"]["100000"]["edge"], quant)
    return [*lines, ""]


def _memory_md(mem: dict[str, Any]) -> list[str]:
    lines = [
        "## Memory",
        "",
        f"RSS of a process with the serving embedder loaded, then with {mem['vectors']:,} vectors indexed and queried.",
        "",
        "| backend | python MB | + model MB | + index MB | index share MB |",
        "|---|---:|---:|---:|---:|",
    ]
    for backend in ("edge", "local"):
        r = mem.get(backend, {})
        if "error" in r:
            lines.append(f"| {backend} | error | | | |")
            continue
        lines.append(
            f"| {backend} | {r['python_mb']:.0f} | {r['with_model_mb']:.0f} | {r['with_index_mb']:.0f} | "
            f"{r['index_mb']:.0f} |"
        )
    return [*lines, ""]


def _signals_md(sig: dict[str, Any]) -> list[str]:
    served, before = sig["served"], sig["two_signal"]
    return [
        "## Cost of the lexical signal and hybrid retrieval",
        "",
        "| path (one ad per request) | p50 ms | p99 ms |",
        "|---|---:|---:|",
        f"| served: hybrid query, head + lexical + vote | {served['p50_ms']:.1f} | {served['p99_ms']:.1f} |",
        f"| two-signal: dense query, head + vote | {before['p50_ms']:.1f} | {before['p99_ms']:.1f} |",
        "",
        f"p50 ratio served / two-signal: **{sig['p50_ratio']:.2f}×** ({sig['rounds']} requests each, "
        f"a {sig['words']}-word ad). {sig['what']}.",
        "",
    ]


PERF_SECTIONS_MD = {
    "embedding": _embedding_md,
    "service": _service_md,
    "microbatch": _microbatch_md,
    "knn": _knn_md,
    "memory": _memory_md,
    "signals": _signals_md,
}


def perf_markdown(result: dict[str, Any]) -> str:
    """``report.md`` of ``jobclass bench-perf``: one section per measured part, in a fixed order."""
    lines = _perf_header(result)
    for key, section in PERF_SECTIONS_MD.items():
        if result.get(key):
            lines += section(result[key])
    return "\n".join(lines)


def write_perf_outputs(result: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2, default=str))
    (out / "report.md").write_text(perf_markdown(result))
