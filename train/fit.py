"""`mycelium-train fit` and `mycelium-train all`: click commands, torch imported lazily."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import click

from mycelium.runtime.manifest import MODEL_NAMES

from .config import CLASSIFIER_HEADS, default

_SIZE = click.Choice(["tiny", "small"])
_DEVICE = click.Choice(["auto", "cpu", "cuda"])


def _training_options(func):  # type: ignore[no-untyped-def]
    """Options shared by `fit` and `all`."""
    options = [
        click.option("--out", "out", required=True,
                     type=click.Path(file_okay=False, path_type=Path),
                     help="Checkpoint folder to write."),
        click.option("--size", default=default("size"), show_default=True,
                     type=_SIZE,
                     help="Backbone size of the three specialists."),
        click.option("--epochs", default=default("epochs"), show_default=True,
                     type=click.IntRange(1),
                     help="Upper bound of epochs per model."),
        click.option("--minutes", default=default("minutes"), show_default=True,
                     type=click.FloatRange(0),
                     help="Wall-clock budget per model (0 = none)."),
        click.option("--patience", default=default("patience"), show_default=True,
                     type=click.IntRange(0),
                     help="Stop a model after this many epochs without a better dev "
                          "figure (0 = never)."),
        click.option("--seed", default=default("seed"), show_default=True,
                     type=int),
        click.option("--device", default=default("device"), show_default=True,
                     type=_DEVICE),
        click.option("--lr", default=default("lr"), show_default=True,
                     type=click.FloatRange(0, 1)),
        click.option("--threads", default=2, show_default=True, type=click.IntRange(1),
                     help="torch CPU threads."),
        click.option("--augment", default=default("augment"), show_default=True,
                     type=click.IntRange(0),
                     help="Number-resampled copies of each train problem (0 = none)."),
        click.option("--dropout", default=default("dropout"), show_default=True,
                     type=click.FloatRange(0, 1, max_open=True),
                     help="Residual dropout while fine-tuning the specialists."),
        click.option("--span-markers", is_flag=True,
                     help="Mark every quantity in the classifier's and extractor's problem "
                          "text and name a group's spans by index only."),
        click.option("--segmenter-init", default=default("segmenter_init"),
                     type=click.Path(exists=True, file_okay=False, path_type=str),
                     help="Start the segmenter from this pretrained encoder folder "
                          "(config.json, model.safetensors, tokenizer.json; e.g. "
                          "all-MiniLM-L6-v2, train/README.md) with its own tokenizer."),
        click.option("--classifier-init", default=default("classifier_init"),
                     type=click.Path(exists=True, file_okay=False, path_type=str),
                     help="Start the classifier from this pretrained encoder folder, read "
                          "as --classifier-head says (no shared prefix cache)."),
        click.option("--packed-batch-size", default=default("packed_batch_size"), show_default=True,
                     type=click.IntRange(1),
                     help="Problems per step for the classifier and the extractor (text "
                          "pairs per step for a pair classifier)."),
        click.option("--classifier-head", default=default("classifier_head"),
                     show_default=True, type=click.Choice(CLASSIFIER_HEADS),
                     help="How the --classifier-init encoder reads a group: each problem "
                          "once with every group pooled from its spans' tokens "
                          "(span-groups), or one text pair per group (pair)."),
        click.option("--classifier-layers", default=default("classifier_layers"), show_default=True,
                     type=click.IntRange(0),
                     help="Keep only the first N layers of the --classifier-init encoder "
                          "(0 = all): a cheaper classifier."),
        click.option("--init-lr", default=default("init_lr"), show_default=True,
                     type=click.FloatRange(0, 1, min_open=True),
                     help="Peak learning rate of a specialist started from a pretrained "
                          "encoder."),
        click.option("--reject-weight", default=default("reject_weight"), show_default=True,
                     type=click.FloatRange(0, min_open=True),
                     help="Loss weight of the classifier's reject-labelled (NONE) groups "
                          "against 1 for a step's operation (needs data written with "
                          "--reject-groups)."),
        click.option("--pretrain-minutes", default=default("pretrain_minutes"), show_default=True,
                     type=click.FloatRange(0),
                     help="Pretrain a shared backbone as a causal LM first (0 = off)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _run_fit(data: Path, out: Path, threads: int, pretrain_text: Path | None,
             backbone: Path | None = None, models: tuple[str, ...] = (),
             **options: Any) -> None:
    """Build the FitConfig from the shared options and train."""
    import torch

    from .config import FitConfig
    from .trainer import fit

    torch.set_num_threads(threads)
    config = FitConfig(pretrain_text=str(pretrain_text) if pretrain_text else None,
                       backbone=str(backbone) if backbone else None, **options)
    if models:
        config.models = tuple(models)
    try:
        report = fit(data, out, config)
    except ValueError as exc:  # a user error in the data or the options: one line
        raise click.ClickException(str(exc)) from None
    for name, entry in report["models"].items():
        figures = ", ".join(f"{k} {v:.4f}" for k, v in entry["best_dev"].items()
                            if isinstance(v, float))
        click.echo(f"{name}: best epoch {entry['best_epoch']}: {figures}")
    click.echo(f"wrote {out} in {report['wall_seconds']:.0f} s")


@click.command("fit")
@click.option("--data", "data", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder written by `mycelium-train data`.")
@_training_options
@click.option("--pretrain-text", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="GSM8K jsonl whose train answers join the pretraining text.")
@click.option("--backbone", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None,
              help="Start from this saved backbone.safetensors (a checkpoint's) instead of "
                   "pretraining.")
@click.option("--model", "models", multiple=True,
              type=click.Choice(MODEL_NAMES),
              help="Train only these specialists (repeatable; default: all three).")
def fit_command(data: Path, out: Path, threads: int, pretrain_text: Path | None,
                backbone: Path | None, models: tuple[str, ...], **options: Any) -> None:
    """Train the segmenter, classifier and extractor; write the checkpoint folder."""
    if backbone is not None and options["pretrain_minutes"] > 0:
        raise click.UsageError("--backbone and --pretrain-minutes exclude each other")
    _run_fit(data, out, threads, pretrain_text, backbone, models, **options)


@click.command("all")
@click.option("--data", "data", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="GSM8K jsonl (question, answer).")
@_training_options
@click.option("--data-out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep the supervision folder here (default: a temporary folder).")
@click.option("--vocab-size", default=4096, show_default=True, type=click.IntRange(300, 65536))
def all_command(data: Path, out: Path, threads: int, data_out: Path | None, vocab_size: int,
                **options: Any) -> None:
    """`data` then `fit`: GSM8K jsonl to a trained checkpoint."""
    from .data import DataError, build

    with tempfile.TemporaryDirectory(prefix="mycelium-data-") as scratch:
        folder = data_out or Path(scratch)
        try:
            build(data, folder, vocab_size)
        except DataError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"supervision written to {folder}")
        _run_fit(folder, out, threads, data, **options)


def register(group: click.Group) -> None:
    """Add `fit` and `all` to the `mycelium-train` group."""
    group.add_command(fit_command)
    group.add_command(all_command)
