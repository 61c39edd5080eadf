"""``mycelium-export``: the command line of the exporter (a thin layer over the library)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import click

from mycelium.runtime.errors import MyceliumError

from .errors import ParityError
from .onnx_export import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET
from .pipeline import export_checkpoint
from .quantize import PRECISIONS
from .verify import format_table

CONTEXT = {"help_option_names": ["-h", "--help"]}


class _Group(click.Group):
    """``mycelium-export CHECKPOINT ...`` stays the checkpoint export: arguments that do not
    start with a command name go to ``checkpoint`` (a checkpoint folder named like a
    command is given as ``./NAME``)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["checkpoint", *args]
        return super().parse_args(ctx, args)


@contextlib.contextmanager
def _export_errors() -> Iterator[None]:
    """An export's errors as one line (a parity failure also prints its table)."""
    try:
        yield
    except ParityError as exc:
        click.echo(format_table(exc.rows), err=True)
        raise click.ClickException(str(exc)) from None
    except MyceliumError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(cls=_Group, context_settings=CONTEXT)
def main() -> None:
    """Export trained specialists to ONNX artifacts, the only input of mycelium-rt.

    \b
    mycelium-export CHECKPOINT -o DIR [--precision fp32|fp16|int8] ...
        the three specialists of a checkpoint (same as `checkpoint CHECKPOINT ...`)
    mycelium-export writer RUN -o DIR [--precision fp32|int8] ...
        a program writer's artifacts set from a writer run folder

    `mycelium-export COMMAND --help` lists each command's options.
    """


@main.command(context_settings=CONTEXT)
@click.argument("checkpoint", type=click.Path(path_type=Path), envvar="MYCELIUM_CHECKPOINT")
@click.option("-o", "--output", "output", type=click.Path(path_type=Path), required=True,
              help="Artifacts folder to write (must not exist unless --force).")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
              help="Weights of the graphs: fp32, fp16 (traced in half) or int8 (MatMul weights).")
@click.option("--opset", type=int, default=DEFAULT_OPSET, show_default=True,
              help=f"ONNX opset ({MIN_OPSET} to {MAX_OPSET}).")
@click.option("--force", is_flag=True, help="Replace an existing artifacts folder.")
@click.option("--no-verify", is_flag=True, help="Skip the onnxruntime-vs-PyTorch parity check.")
@click.option("--reuse", type=click.Path(path_type=Path), default=None, metavar="ARTIFACTS",
              help="Take each model the checkpoint lacks from this artifacts folder, as "
                   "exported there (re-export one retrained specialist).")
def checkpoint(checkpoint: Path, output: Path, precision: str, opset: int, force: bool,
               no_verify: bool, reuse: Path | None) -> None:
    """Export a Mycelium CHECKPOINT (segmenter, classifier, extractor) to ONNX artifacts.

    CHECKPOINT holds mycelium.json and the segmenter/, classifier/ and extractor/
    folders (save_pretrained, safetensors, tokenizer.json); with --reuse it may lack
    some of them. The artifacts folder gets the three graphs, their tokenizers and
    manifest.json, the only input of mycelium-rt. Progress goes to stderr; the parity
    table and a summary to stdout.
    """
    with _export_errors():
        report = export_checkpoint(checkpoint, output, precision=precision, opset=opset,
                                   force=force, verify=not no_verify, reuse=reuse)
    _summary(report, precision, no_verify)


@main.command(context_settings=CONTEXT)
@click.argument("run", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("-o", "--output", "output", type=click.Path(path_type=Path), required=True,
              help="Artifacts folder to write (must not exist unless --force).")
@click.option("--precision", type=click.Choice(("fp32", "int8")), default="int8",
              show_default=True, help="The writer's weights: fp32 or int8 (MatMul weights).")
@click.option("--segmenter", type=click.Path(path_type=Path, file_okay=False), default=None,
              metavar="ARTIFACTS", help="Take the segmenter from this artifacts folder, as "
                                        "exported there (default: the embedded default).")
@click.option("--beam", type=click.IntRange(1, 64), default=6, show_default=True,
              help="Programs kept per problem at each character of the writer's beam.")
@click.option("--opset", type=int, default=DEFAULT_OPSET, show_default=True,
              help=f"ONNX opset ({MIN_OPSET} to {MAX_OPSET}).")
@click.option("--force", is_flag=True, help="Replace an existing artifacts folder.")
@click.option("--no-verify", is_flag=True, help="Skip the onnxruntime-vs-PyTorch parity check.")
def writer(run: Path, output: Path, precision: str, segmenter: Path | None, beam: int,
           opset: int, force: bool, no_verify: bool) -> None:
    """Build a program writer's artifacts set from a writer RUN folder.

    RUN is a `mycelium.train.program_writer` run (writer.json, writer.pt; the base it
    names must be on disk). The set holds the segmenter (copied from --segmenter) and the
    exported writer, with manifest.json naming both; `mycelium-rt solve/diagnose/serve
    --artifacts OUTPUT` then serve it. Progress goes to stderr; the parity table and a
    summary to stdout.
    """
    from .writer import export_writer_set

    with _export_errors():
        report = export_writer_set(run, output, precision, segmenter=segmenter, opset=opset,
                                   force=force, verify=not no_verify, beam=beam)
    _summary(report, precision, no_verify)


def _summary(report, precision: str, no_verify: bool) -> None:
    """The parity table (unless skipped) and one line: folder, precision, files, size."""
    if not no_verify:
        click.echo(report.table())
    size = sum(report.files.values()) / 1e6
    click.echo(f"wrote {report.output} ({precision}, {len(report.files)} files, {size:.1f} MB) "
               f"in {report.seconds:.1f}s")
