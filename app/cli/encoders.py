"""The encoder lifecycle: ``finetune``, ``upgrade-encoder``, ``encoders list|rollback``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.cli import common
from app.errors import InvalidInput
from app.settings import get_settings

if TYPE_CHECKING:
    from indexing.finetune import FinetuneConfig

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


def _config(
    epochs: float,
    batch_size: int,
    max_pairs_per_class: int,
    seed: int,
    max_seq_length: int,
    bf16: bool | None,
    objective: str = "triplets",
) -> FinetuneConfig:
    from indexing.finetune import FinetuneConfig

    return FinetuneConfig(
        objective=common.objective_option(objective),
        epochs=epochs,
        batch_size=batch_size,
        max_pairs_per_class=max_pairs_per_class,
        seed=seed,
        max_seq_length=max_seq_length,
        bf16=bf16,
        chunking=get_settings().embedding_chunking == "sentences",
    )


def _register(out: Path, base_model: str, result: Any) -> str:
    """Store the fine-tuned model in OUT in the encoder registry (not active); its version."""
    from models.registry import EncoderRegistry

    registry = EncoderRegistry.under(get_settings().model_dir)
    return registry.register(
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
    from app.bench.finetune_rows import finetune_targets
    from indexing.finetune import finetune

    settings = get_settings()
    cfg = _config(epochs, batch_size, max_pairs_per_class, seed, max_seq_length, bf16, objective)
    tr, va = common.read_split(train, settings), common.read_split(val, settings)
    if fine_labels and (tr.fine is None or va.fine is None):
        raise InvalidInput("--fine-labels needs a label_fine column in both CSV files")
    tr_labels, va_labels, coarse = finetune_targets(tr, va, fine_labels)
    base_model = base or settings.embedding_model
    result = finetune(
        base_model, tr.texts, tr_labels, va.texts, va_labels, out, cfg, coarse=coarse, resume=resume, say=typer.echo
    )
    typer.echo(json.dumps({k: v for k, v in result.to_dict().items() if k != "history"}, indent=2))
    if register:
        version = _register(out, base_model, result)
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
    from app.services.encoder_upgrade import LabelledTexts, sentence_transformers_finetune, upgrade_encoder

    settings = get_settings()
    cfg = _config(epochs, batch_size, max_pairs_per_class, seed, max_seq_length, bf16, objective)
    sets: list[LabelledTexts | None] = []
    for path in (train, val):
        if path is None:
            sets.append(None)
            continue
        split = common.read_split(path, settings)
        sets.append(LabelledTexts(split.ids, split.texts, split.labels))
    runtime = common.runtime()
    bar, progress = common.progress_bar("embedding with the new encoder")
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
    from app.services.encoder_upgrade import rollback_encoder

    runtime = common.runtime()
    bar, progress = common.progress_bar("embedding with the previous encoder")
    try:
        with runtime.sessions() as session:
            result = rollback_encoder(runtime, session, say=typer.echo, progress=progress)
    finally:
        bar.close()
        runtime.close()
    typer.echo(json.dumps(result.to_dict(), indent=2))
    typer.echo(f"rolled back encoder {result.rolled_back}: now {result.encoder} with model {result.model_version}")


def register(cli: typer.Typer) -> None:
    cli.command("finetune")(finetune_command)
    cli.command("upgrade-encoder")(upgrade_encoder_command)
    cli.add_typer(encoders_cli, name="encoders")
