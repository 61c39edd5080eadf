"""``export_checkpoint``: checkpoint folder in, artifacts folder out, as fixed steps.

validate (all three models, no weights) -> per model: load -> reference
outputs -> export -> convert (precision) -> verify -> then write the manifest,
check it loads, and publish the folder. One model is in memory at a time.
"""

from __future__ import annotations

import gc
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mycelium.runtime.manifest import KVCacheSpec, Manifest, load_manifest, write_manifest
from mycelium.runtime.spec import SolverSpec

from .checkpoint import ModelCheckpoint, load_model, validate_checkpoint
from .errors import ExportError, ParityError
from .io_specs import GraphIO, decoder_io, encoder_classifier_io, segmenter_io, span_group_io
from .manifest_builder import build_manifest, model_spec
from .onnx_export import DEFAULT_OPSET, check_opset, export_graph, sample_args
from .output import Staging, check_destination
from .pooling import rewrite_file
from .quantize import TRACE_DTYPES, check_precision, convert
from .registry import ROLES
from .reuse import copy_reused, open_reused
from .verify import (
    GREEDY_STEPS,
    ParityRow,
    Reference,
    compare,
    failure,
    format_table,
    open_session,
    reference,
    sample_inputs,
)

Log = Callable[[str], None]


@dataclass
class ExportReport:
    """What an export produced."""

    output: Path
    precision: str
    manifest: Manifest
    parity: list[ParityRow]
    files: dict[str, int] = field(default_factory=dict)  # artifact file -> bytes
    seconds: float = 0.0

    def table(self) -> str:
        """The parity table."""
        return format_table(self.parity)


class Progress:
    """Step messages with the elapsed time, to stderr by default."""

    def __init__(self, log: Log | None = None):
        self.start = time.perf_counter()
        self.log = log or (lambda text: print(text, file=sys.stderr, flush=True))

    @property
    def elapsed(self) -> float:
        """Seconds since the export started."""
        return time.perf_counter() - self.start

    def __call__(self, message: str) -> None:
        self.log(f"[{self.elapsed:7.1f}s] {message}")


def publish(staging: Staging, manifest: Manifest, rows: list[ParityRow], progress: Progress
            ) -> ExportReport:
    """The common end of an export: the manifest written and read back with the runtime's
    own checks (schema and every sha256), the staged folder moved into place, the report."""
    progress("writing manifest.json ...")
    write_manifest(manifest, staging.folder)
    load_manifest(staging.folder)
    staging.publish()
    files = {p.name: p.stat().st_size for p in sorted(staging.out.iterdir())}
    progress(f"wrote {staging.out} ({sum(files.values()) / 1e6:.1f} MB)")
    return ExportReport(staging.out, manifest.precision, manifest, rows, files,
                        progress.elapsed)


def graph_io(model: ModelCheckpoint, config: Any,
             dtype: str) -> tuple[GraphIO, KVCacheSpec | None]:
    """The graph I/O of a role, and its KV layout for decoders."""
    if not model.architecture.cached(model.name):
        labels = len(model.labels or ())
        if model.span_groups:
            return span_group_io(labels, dtype), None
        if model.name == "classifier":
            return encoder_classifier_io(labels, dtype), None
        return segmenter_io(labels, dtype), None
    assert model.architecture.kv_layout is not None  # checked at registration
    layers, kv_heads, head_dim = model.architecture.kv_layout(config)
    width = len(model.labels) if model.labels else config.vocab_size
    kv = KVCacheSpec(num_layers=layers, num_kv_heads=kv_heads, head_dim=head_dim, dtype=dtype)
    return decoder_io(layers, kv_heads, head_dim, width, dtype), kv


def _export_model(model: ModelCheckpoint, staging: Staging, precision: str, opset: int,
                  verify: bool, spec: SolverSpec, progress: Progress):
    """load -> reference -> export -> convert -> verify, for one model."""
    import torch

    name = model.name
    progress(f"loading {name} ...")
    hf = load_model(model)
    config = hf.config
    pad_id = model.special_tokens["pad"]
    ref: Reference | None = None
    if verify:
        progress(f"computing the PyTorch reference of {name} ...")
        cached = model.architecture.cached(name)
        ref_pad = config.pad_token_id if config.pad_token_id is not None else pad_id
        steps = GREEDY_STEPS if name == "extractor" else 1
        sample = sample_inputs(name, model.tokenizer, spec, cached, model.span_groups)
        ref = reference(name, hf, sample, ref_pad, steps)
    dtype = TRACE_DTYPES[precision]
    io, kv = graph_io(model, config, dtype)
    torch_dtype = getattr(torch, dtype)
    hf = hf.to(torch_dtype)
    graph = model.architecture.build_graph(name, hf, quantized=precision == "int8")
    progress(f"exporting {name} (opset {opset}, {dtype}) ...")
    raw = staging.scratch / f"{name}.onnx"
    try:
        export_graph(graph, io, sample_args(io, config.vocab_size, torch_dtype), raw, opset)
    except (RuntimeError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"exporting {name} failed: {first}") from None
    del graph, hf
    gc.collect()
    progress(f"{'quantizing' if precision == 'int8' else 'writing'} {name} ({precision}) ...")
    files = convert(raw, precision, staging.folder, name, staging.scratch,
                    model.architecture.int8_ops, model.architecture.int8_per_channel)
    staging.clear_scratch()
    if model.span_groups:  # max-pool one group at a time: same logits, bounded memory
        rewrite_file(staging.folder / files[0])
    tokenizer = f"{name}.tokenizer.json"
    shutil.copyfile(model.tokenizer, staging.folder / tokenizer)
    row = ParityRow(name, precision, "skipped")
    if ref is not None:
        progress(f"verifying {name} with onnxruntime ...")
        opened = open_session(staging.folder / files[0], precision)
        if opened is None:
            row = ParityRow(name, precision, "unverified",
                            note="no onnxruntime provider here runs fp16")
            progress(f"fp16 parity of {name} is unverified: no provider here runs it")
        else:
            session, provider = opened
            row = compare(name, precision, session, provider, io, ref, pad_id)
            del session
        gc.collect()
    return model_spec(staging.folder, model, io, files, tokenizer, kv), row


def export_checkpoint(checkpoint: str | Path, out: str | Path, precision: str = "fp32",
                      opset: int = DEFAULT_OPSET, force: bool = False, verify: bool = True,
                      log: Log | None = None, reuse: str | Path | None = None) -> ExportReport:
    """Export a checkpoint folder to an artifacts folder; see docs/ARCHITECTURE.md.

    ``reuse``: an artifacts folder that supplies each model the checkpoint lacks, copied
    as exported there (:mod:`mycelium.export.reuse`).

    Raises :class:`~mycelium.export.errors.CheckpointError` for a checkpoint
    that breaks the contract, :class:`~mycelium.export.errors.ParityError`
    when a graph disagrees with its PyTorch model (nothing is published then)
    and :class:`~mycelium.export.errors.ExportError` for other failures.
    """
    progress = Progress(log)
    out = Path(out)
    check_precision(precision)
    check_opset(opset)
    check_destination(out, force)
    progress(f"validating checkpoint {checkpoint} ...")
    source = Path(reuse) if reuse is not None else None
    ckpt = validate_checkpoint(checkpoint, optional=source is not None)
    lacking = [name for name in ROLES if name not in ckpt.models]
    reused = open_reused(source, lacking, precision, ckpt.spec) if source is not None else None
    staging = Staging(out)
    try:
        specs, rows = {}, []
        for name in ROLES:
            if name in ckpt.models:
                specs[name], row = _export_model(ckpt.models[name], staging, precision, opset,
                                                 verify, ckpt.spec, progress)
            else:
                assert reused is not None and source is not None
                progress(f"copying {name} from {source} ...")
                specs[name], row = copy_reused(name, reused, source, staging.folder)
            rows.append(row)
        failed = [row for row in rows if row.status == "FAIL"]
        if failed:
            raise ParityError("parity check failed: " + "; ".join(map(failure, failed)), rows)
        return publish(staging, build_manifest(ckpt, precision, specs, rows, opset), rows,
                       progress)
    finally:
        staging.close()
