"""``mycelium-export``: the command line of the exporter (a thin layer over the library)."""

from __future__ import annotations

from pathlib import Path

import click

from mycelium.runtime.errors import MyceliumError

from .errors import ParityError
from .onnx_export import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET
from .pipeline import export_checkpoint
from .quantize import PRECISIONS
from .verify import format_table


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
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
def main(checkpoint: Path, output: Path, precision: str, opset: int, force: bool,
         no_verify: bool, reuse: Path | None) -> None:
    """Export a Mycelium CHECKPOINT (segmenter, classifier, extractor) to ONNX artifacts.

    CHECKPOINT holds mycelium.json and the segmenter/, classifier/ and extractor/
    folders (save_pretrained, safetensors, tokenizer.json); with --reuse it may lack
    some of them. The artifacts folder gets the three graphs, their tokenizers and
    manifest.json, the only input of mycelium-rt. Progress goes to stderr; the parity
    table and a summary to stdout.
    """
    try:
        report = export_checkpoint(checkpoint, output, precision=precision, opset=opset,
                                   force=force, verify=not no_verify, reuse=reuse)
    except ParityError as exc:
        click.echo(format_table(exc.rows), err=True)
        raise click.ClickException(str(exc)) from None
    except MyceliumError as exc:
        raise click.ClickException(str(exc)) from None
    if not no_verify:
        click.echo(report.table())
    size = sum(report.files.values()) / 1e6
    click.echo(f"wrote {report.output} ({precision}, {len(report.files)} files, {size:.1f} MB) "
               f"in {report.seconds:.1f}s")
