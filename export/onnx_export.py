"""Trace a graph module to ONNX (TorchScript exporter) and save it, large or small.

``torch.onnx.export(..., dynamo=False)`` writes a raw graph into a scratch
folder; :func:`save_model` then writes the final ``{name}.onnx``, moving the
weights into one ``{name}.onnx.data`` file when they exceed
:data:`EXTERNAL_DATA_BYTES` (protobuf cannot hold more than 2 GB).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from .errors import ExportError
from .io_specs import GraphIO

MIN_OPSET = 17
MAX_OPSET = 20  # the TorchScript exporter's newest opset in torch 2.13
DEFAULT_OPSET = 17
EXTERNAL_DATA_BYTES = 1_500_000_000  # above this, weights go to {name}.onnx.data


def check_opset(opset: int) -> None:
    """Refuse opsets the exported graphs are not built for."""
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"opset {opset} is not supported (choose {MIN_OPSET} to {MAX_OPSET})")


def sample_args(io: GraphIO, vocab_size: int, dtype: torch.dtype, batch: int = 2,
                seq: int = 3, past: int = 2) -> tuple[torch.Tensor, ...]:
    """Example inputs for tracing, in the order of ``io.inputs`` (sizes are dynamic)."""
    generator = torch.Generator().manual_seed(0)
    sizes = {"batch": batch, "seq": seq, "past_seq": past, "total_seq": past + seq,
             "groups": 3}
    args = []
    for spec in io.inputs:
        shape = [sizes[dim] if isinstance(dim, str) else dim for dim in spec.shape]
        if spec.name == "input_ids":
            args.append(torch.randint(0, vocab_size, shape, generator=generator))
        elif spec.name == "attention_mask":
            mask = torch.ones(shape, dtype=torch.int64)
            mask[0, 0] = 0  # one padded slot, so the mask path is traced with real values
            args.append(mask)
        elif spec.name == "token_type_ids":  # a text pair: the second half is segment 1
            args.append((torch.arange(seq) >= seq // 2).long().expand(batch, seq).contiguous())
        elif spec.name == "group_tokens":  # token membership, one span-free group
            members = torch.randint(0, 2, shape, generator=generator)
            members[:, -1] = 0
            args.append(members)
        elif spec.name == "position_ids":
            args.append(torch.arange(past, past + seq).expand(batch, seq).contiguous())
        else:
            args.append(torch.randn(shape, generator=generator).to(dtype))
    return tuple(args)


def export_graph(graph: nn.Module, io: GraphIO, args: tuple[torch.Tensor, ...], path: Path,
                 opset: int) -> None:
    """Trace ``graph`` on ``args`` and write a raw ONNX file (maybe with side files)."""
    graph.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings: expected, not useful
        torch.onnx.export(
            graph,
            args,
            str(path),
            input_names=io.input_names,
            output_names=io.output_names,
            dynamic_axes=io.dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    exported = onnx.load(str(path), load_external_data=False)
    names = ([i.name for i in exported.graph.input], [o.name for o in exported.graph.output])
    if names != (io.input_names, io.output_names):
        raise ExportError(f"exported graph {path.name} has I/O {names}, expected the GraphIO")


def tensor_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the weights held in the model (initializers and Constant nodes)."""
    total = sum(len(t.raw_data) for t in model.graph.initializer)
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                total += len(attr.t.raw_data)
    return total


def save_model(source: Path, folder: Path, stem: str) -> list[str]:
    """Load an ONNX file (external data included) and write ``folder/stem.onnx``.

    Returns the files written, relative to ``folder``: the graph and, when the
    weights exceed the threshold, ``stem.onnx.data``.
    """
    model = onnx.load(str(source), load_external_data=True)
    target = folder / f"{stem}.onnx"
    if tensor_bytes(model) <= EXTERNAL_DATA_BYTES:
        onnx.save_model(model, str(target))
        return [target.name]
    data = f"{stem}.onnx.data"
    onnx.save_model(model, str(target), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data, size_threshold=1024)
    return [target.name, data]
