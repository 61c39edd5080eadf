"""Post-export conversion of a raw graph to the requested precision.

fp32 and fp16 graphs are traced in their own dtype, so they are only saved;
int8 graphs are fp32 graphs whose MatMul weights onnxruntime quantizes to
QInt8, one scale per tensor (activations are quantized on the fly). On the
Qwen2.5-0.5B shape, per-channel scales gave larger logit errors (0.20 vs 0.11
on the classifier) at the same speed, and MatMulNBits 8-bit (weight-only)
was 3-4x slower to prefill on CPU. The program writer's int8 is weight-only instead
(``quantize_weights``: MatMulNBits, 8 bits in blocks of 32): on Qwen2.5-Coder-0.5B its
dynamic int8 logits were off by up to 4.6 (per channel 2.1), failing the int8 rule; its
embedding table becomes int8 rows (``embedding_rows``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from .errors import ExportError
from .onnx_export import save_model

PRECISIONS = ("fp32", "fp16", "int8")
TRACE_DTYPES = {"fp32": "float32", "fp16": "float16", "int8": "float32"}  # graph float type


def check_precision(precision: str) -> None:
    """Refuse an unknown precision name."""
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")


def quantize_int8(source: Path, target: Path, ops: tuple[str, ...] = ("MatMul",),
                  per_channel: bool = False) -> None:
    """Dynamic quantization of the constant-weight ``ops`` (MatMul, and Gather for an
    encoder's embeddings) to QInt8, per tensor unless ``per_channel``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs a pre-processing hint on the root logger
    try:
        quantize_dynamic(
            source,
            target,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(ops),
            per_channel=per_channel,
            use_external_data_format=True,
            extra_options={"MatMulConstBOnly": True},
        )
    finally:
        root.setLevel(level)


def quantize_weights(source: Path, target: Path, bits: int = 8, block_size: int = 32) -> None:
    """Weight-only quantization of the constant-weight MatMuls to ``bits`` (MatMulNBits,
    symmetric, one scale per ``block_size`` weights; activations stay float) and of the
    embedding tables to int8 rows (:mod:`.embedding_rows`)."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    from .embedding_rows import quantize_embedding_tables

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantizer = MatMulNBitsQuantizer(onnx.load(str(source)), bits=bits,
                                         block_size=block_size, is_symmetric=True,
                                         accuracy_level=4)
        quantizer.process()
        quantize_embedding_tables(quantizer.model.model)
        quantizer.model.save_model_to_file(str(target), use_external_data_format=True)
    finally:
        root.setLevel(level)


def convert(raw: Path, precision: str, folder: Path, stem: str, scratch: Path,
            int8_ops: tuple[str, ...] = ("MatMul",), per_channel: bool = False,
            weight_only: bool = False) -> list[str]:
    """Write ``folder/stem.onnx`` (+ data) at ``precision`` from the raw export ``raw``;
    ``weight_only``: int8 as :func:`quantize_weights`, not dynamic quantization."""
    check_precision(precision)
    if precision == "int8":
        quantized = scratch / f"{stem}.int8.onnx"
        try:
            if weight_only:
                quantize_weights(raw, quantized)
            else:
                quantize_int8(raw, quantized, int8_ops, per_channel)
        except (RuntimeError, ValueError) as exc:
            raise ExportError(f"{stem}: int8 quantization failed: {exc}") from None
        raw = quantized
    return save_model(raw, folder, stem)
