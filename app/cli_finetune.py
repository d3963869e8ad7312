"""CLI commands of the encoder lifecycle: ``jobclass finetune``, ``jobclass upgrade-encoder``,
``jobclass encoders list|rollback`` (registered by ``app.cli``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, cast

import typer

from app.errors import ServiceError
from app.settings import get_settings
from indexing.finetune import OBJECTIVES, FinetuneConfig, Objective

encoders_cli = typer.Typer(help="List and switch fine-tuned encoders.", no_args_is_help=True)

Epochs = Annotated[
    float, typer.Option(min=0.01, help="passes over the training triplets (early stopping may end sooner)")
]
BatchSize = Annotated[int, typer.Option(min=2, max=1024, help="triplets per step (in-batch negatives)")]
MaxPairs = Annotated[int, typer.Option(min=1, help="anchor/positive pairs sampled per class")]
Seed = Annotated[int, typer.Option(help="sampling and training seed")]
MaxSeqLength = Annotated[int, typer.Option(min=8, max=512, help="tokens per text while training")]
Bf16 = Annotated[
    bool | None,
    typer.Option(help="bfloat16 autocast (float32 master weights); default: on where the CPU has native bfloat16"),
]
ObjectiveOpt = Annotated[
    str,
    typer.Option(
        "--objective",
        help=(
            "triplets: label-aware MNRL on hard-negative triplets; supcon: supervised contrastive on labelled"
            " texts; softmax: margin softmax over one proxy per class"
        ),
    ),
]


def _fail(exc: Exception) -> typer.Exit:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)


def objective_option(value: str, flag: str = "--objective") -> Objective:
    """The fine-tuning objective named on the command line; exits with a clear error otherwise."""
    if value not in OBJECTIVES:
        raise _fail(ValueError(f"{flag} must be one of {', '.join(OBJECTIVES)}, not {value!r}"))
    return cast(Objective, value)


def _config(
    epochs: float,
    batch_size: int,
    max_pairs_per_class: int,
    seed: int,
    max_seq_length: int,
    bf16: bool | None,
    objective: str = "triplets",
) -> FinetuneConfig:
    return FinetuneConfig(
        objective=objective_option(objective),
        epochs=epochs,
        batch_size=batch_size,
        max_pairs_per_class=max_pairs_per_class,
        seed=seed,
        max_seq_length=max_seq_length,
        bf16=bf16,
        chunking=get_settings().embedding_chunking == "sentences",
    )


def finetune_command(
    train: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="training CSV (id,text,label[,label_fine])")],
    val: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="validation CSV for early stopping")],
    out: Annotated[Path, typer.Option(help="folder for the fine-tuned sentence-transformers model + finetune.json")],
    base: Annotated[str | None, typer.Option(help="model name or folder (default: JOBCLASS_EMBEDDING_MODEL)")] = None,
    epochs: Epochs = 1.0,
    batch_size: BatchSize = 32,
    max_pairs_per_class: MaxPairs = 200,
    seed: Seed = 20240601,
    max_seq_length: MaxSeqLength = 128,
    bf16: Bf16 = None,
    objective: ObjectiveOpt = "triplets",
    fine_labels: Annotated[
        bool, typer.Option(help="train on label_fine; report fine and coarse (fine mapped up) kNN accuracy")
    ] = False,
    resume: Annotated[bool, typer.Option(help="continue from the last checkpoint in OUT/checkpoints")] = False,
    register: Annotated[bool, typer.Option(help="also store it in the encoder registry (not active)")] = False,
) -> None:
    """Contrastive fine-tuning (label-aware MultipleNegativesRankingLoss on anchor/positive/hard-negative
    triplets), early-stopped on validation kNN accuracy; progress bar with ETA."""
    from app.services.dataset import load_split
    from indexing.finetune import finetune
    from models.registry import EncoderRegistry

    settings = get_settings()
    cfg = _config(epochs, batch_size, max_pairs_per_class, seed, max_seq_length, bf16, objective)
    try:
        tr = load_split(train, settings.clean_max_chars)
        va = load_split(val, settings.clean_max_chars)
    except (ValueError, KeyError) as exc:
        raise _fail(exc) from exc
    coarse = None
    tr_labels, va_labels = tr.labels, va.labels
    if fine_labels:
        if tr.fine is None or va.fine is None:
            raise _fail(ValueError("--fine-labels needs a label_fine column in both CSV files"))
        coarse = dict(zip(tr.fine + va.fine, tr.labels + va.labels, strict=True))
        tr_labels, va_labels = tr.fine, va.fine
    base_model = base or settings.embedding_model
    try:
        result = finetune(
            base_model, tr.texts, tr_labels, va.texts, va_labels, out, cfg, coarse=coarse, resume=resume, say=typer.echo
        )
    except ValueError as exc:
        raise _fail(exc) from exc
    typer.echo(json.dumps({k: v for k, v in result.to_dict().items() if k != "history"}, indent=2))
    if register:
        registry = EncoderRegistry.under(settings.model_dir)
        version = registry.register(
            out,
            {
                "parent": registry.active_version() or base_model,
                "base_model": base_model,
                "data_hash": result.data_hash,
                "metrics": result.metrics,
                "wall_seconds": result.wall_seconds,
                "texts_per_s": result.texts_per_s,
                "n_train": result.n_train_texts,
            },
            move=False,
        )
        typer.echo(
            f"registered encoder {version} (not active; `jobclass upgrade-encoder` promotes through a comparison)"
        )
    typer.echo(f"wrote {out} (sentence-transformers folder + finetune.json)")


def upgrade_encoder_command(
    train: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, help="fine-tuning CSV (default: the labelled vacancies outside the hold-out)"
        ),
    ] = None,
    val: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="early-stopping CSV (default: 10% of the training texts)"),
    ] = None,
    margin: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="promote if accuracy ≥ champion's − margin")
    ] = None,
    epochs: Epochs = 1.0,
    batch_size: BatchSize = 32,
    max_pairs_per_class: MaxPairs = 200,
    seed: Seed = 20240601,
    max_seq_length: MaxSeqLength = 128,
    bf16: Bf16 = None,
    objective: ObjectiveOpt = "triplets",
) -> None:
    """Fine-tune the encoder, reindex into a new collection, train a head on it, compare with the champion
    on the hold-out; swap encoder + alias + model together, or discard the candidate."""
    from app.cli import _progress_bar, _runtime
    from app.services.dataset import load_split
    from app.services.encoder_upgrade import LabelledTexts, sentence_transformers_finetune, upgrade_encoder

    settings = get_settings()
    cfg = _config(epochs, batch_size, max_pairs_per_class, seed, max_seq_length, bf16, objective)
    sets: list[LabelledTexts | None] = []
    for path in (train, val):
        if path is None:
            sets.append(None)
            continue
        try:
            split = load_split(path, settings.clean_max_chars)
        except (ValueError, KeyError) as exc:
            raise _fail(exc) from exc
        sets.append(LabelledTexts(split.ids, split.texts, split.labels))
    runtime = _runtime()
    bar, progress = _progress_bar("embedding with the new encoder")
    try:
        with runtime.sessions() as session:
            result = upgrade_encoder(
                runtime,
                session,
                train=sets[0],
                val=sets[1],
                margin=margin,
                finetune_fn=sentence_transformers_finetune(cfg, say=typer.echo),
                say=typer.echo,
                progress=progress,
            )
    except ServiceError as exc:
        raise _fail(exc) from exc
    finally:
        bar.close()
        runtime.close()
    typer.echo(json.dumps(result.to_dict(), indent=2, default=str))
    typer.echo(f"{'promoted' if result.promoted else 'discarded'} encoder {result.encoder_version}: {result.reason}")


@encoders_cli.command("list")
def encoders_list() -> None:
    """Fine-tuned encoders, newest first (status: candidate, active, retired, rejected)."""
    from models.registry import EncoderRegistry

    registry = EncoderRegistry.under(get_settings().model_dir)
    active = registry.active_version()
    for meta in registry.versions():
        mark = "*" if meta["version"] == active else " "
        typer.echo(
            f"{mark} {meta['version']}  {meta.get('status', '?'):9s} parent {meta.get('parent')}  "
            f"data {meta.get('data_hash')}  metrics {json.dumps(meta.get('metrics', {}))}"
        )
    if active is None:
        typer.echo(f"(no fine-tuned encoder active: the configured {get_settings().embedding_model} is used)")


@encoders_cli.command("rollback")
def encoders_rollback() -> None:
    """Go back to the active encoder's parent (a registered version or the base model) and the head that
    served with it: every labelled vacancy is re-embedded into a new collection, then encoder, alias and
    model switch together."""
    from app.cli import _progress_bar, _runtime
    from app.services.encoder_upgrade import rollback_encoder

    runtime = _runtime()
    bar, progress = _progress_bar("embedding with the previous encoder")
    try:
        with runtime.sessions() as session:
            result = rollback_encoder(runtime, session, say=typer.echo, progress=progress)
    except ServiceError as exc:
        raise _fail(exc) from exc
    finally:
        bar.close()
        runtime.close()
    typer.echo(json.dumps(result.to_dict(), indent=2))
    typer.echo(f"rolled back encoder {result.rolled_back}: now {result.encoder} with model {result.model_version}")
