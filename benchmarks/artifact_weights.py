"""Fill a torch model with the weights an exported ONNX graph holds (dequantized).

The embedded default artifacts ship no checkpoint, only graphs. For the PyTorch-eager
baseline to run the same model as the runtime, :func:`fill_from_graph` copies every
weight of a graph into the torch model of the same shapes
(``benchmarks.make_checkpoint.checkpoint_like``): float initializers as they are, int8
ones dequantized, ``(q - zero_point) * scale`` per tensor or per output channel as
stored (MatMulInteger, a quantized Gather's DequantizeLinear; MatMulNBits by blocks),
a MatMul's (K, N) weight transposed to torch's (out, in).

The graph's initializer names cannot be trusted to say which parameter a tensor is:
the exporter renames MatMul weights (``onnx::MatMul_123``, ``_quantized`` after int8)
and merges identical tensors (an untrained model's zero biases and unit norms: one
initializer, Identity nodes for the others). So the mapping is by structure:

- the torch side: the graph's own wrapper module (``mycelium.export.registry``'s
  ``build_graph``, the one the exporter traced) runs once on the exporter's sample
  inputs under a ``TorchFunctionMode`` that records every call reading a parameter,
  in execution order: ``linear`` (weight, bias), ``embedding``, ``layer_norm``,
  a multiplication by a parameter (an RMS norm's weight), ``matmul`` (a tied head),
  ``where`` (a learned fill);
- the graph side: the nodes that read a weight initializer (through the Identity
  nodes of merged ones), in topological order, by the same kinds: (Dynamic)MatMul,
  MatMulInteger, MatMulNBits and Gemm (their bias: the Add fed by their output,
  through the dequantizing Cast/Mul), Gather, LayerNormalization, Mul, MatMul of a
  weight on the left, Where;
- each torch use takes the first unused graph use of its kind whose weight has its
  shape: execution order decides only between uses of equal shape (a layer's query
  and key), and the numeric check below catches a wrong decision.

Every parameter must be filled; one filled twice (a tied embedding and head, whose
int8 graph quantizes a copy) must agree with itself within the quantization step.
Initializers whose names are the wrapper's parameter names must be the ones mapped
to them. Last, the torch wrapper and onnxruntime run the same sample inputs (no padded
slot): the outputs must agree to 1e-4 of their range for a float graph; for an int8 one
the torch side then quantizes each int8 MatMul's input as DynamicQuantizeLinear does and
must agree to 1e-3 (it does to ~1e-6: the same arithmetic), which a wrong mapping (a
layer's query and key swapped) misses by far. The error with fp32 activations, as the
PyTorch baseline runs, is reported beside it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

QUANTIZED_OPS = ("MatMulInteger", "MatMulNBits", "DequantizeLinear", "DynamicQuantizeLinear")
FP32_TOLERANCE = 1e-4  # max |torch - onnxruntime| / max |onnxruntime| of a float graph
SIMULATED_TOLERANCE = 1e-3  # int8 activations: the torch side quantizes them as the graph
WEIGHT_ONLY_TOLERANCE = 0.05  # MatMulNBits (its kernel may quantize activations in blocks)


@dataclass
class _Use:
    """One read of a weight by the graph (or by the torch module)."""

    kind: str  # linear, embedding, layer_norm, mul, matmul, where
    shape: tuple[int, ...]  # torch layout of the main weight
    values: list[tuple[str, np.ndarray, float]] = field(default_factory=list)
    # graph: (initializer, value in torch layout, quantization step) per slot
    # (weight, bias / scale, bias); torch: parameter names per slot
    names: list[str | None] = field(default_factory=list)
    dynamic: bool = False  # graph: int8 activations (DynamicQuantizeLinear + MatMulInteger)


@dataclass
class FillReport:
    """What :func:`fill_from_graph` did for one model."""

    parameters: int  # parameters of the model (tied ones once)
    filled: int
    uses: dict[str, int]  # kind -> torch uses mapped
    quantized: int  # parameters filled from an int8 weight
    tied: list[str]  # parameters read twice (their second read agreed)
    merged: dict[str, list[str]]  # initializer -> parameters it stands for (> 1)
    unread: list[str]  # parameters the forward pass never reads (left as built)
    output_error: float  # max |torch - onnxruntime| / max |onnxruntime| on sample inputs
    tolerance: float
    check: str  # how the outputs were compared: float, int8 activations simulated, ...
    fp32_error: float  # the same with fp32 activations (as the PyTorch baseline runs)

    def summary(self) -> dict[str, Any]:
        """The stamp's record of this model."""
        return {
            "parameters": self.parameters, "filled": self.filled, "uses": self.uses,
            "dequantized": self.quantized, "tied": self.tied,
            "merged": {k: len(v) for k, v in self.merged.items()},
            "unread": self.unread,
            "check": self.check,
            "output_relative_error": float(f"{self.output_error:.3g}"),
            "tolerance": self.tolerance,
            "fp32_activations_relative_error": float(f"{self.fp32_error:.3g}"),
        }


# --- the graph side ------------------------------------------------------------------------

def _dequantize(q: np.ndarray, scale: np.ndarray, zero: np.ndarray | None,
                axis: int) -> tuple[np.ndarray, float]:
    """``(q - zero) * scale``, per tensor or along ``axis``; and the largest step."""
    values = q.astype(np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    zero = np.zeros_like(scale) if zero is None else np.asarray(zero, dtype=np.float64)
    if scale.size > 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((values - zero) * scale).astype(np.float32), float(np.max(np.abs(scale)))


def _unpack_nbits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Little-endian ``bits``-bit integers packed in uint8, the first ``count`` of each
    row (last axis)."""
    if bits == 8:
        return packed[..., :count].astype(np.int32)
    per = 8 // bits
    parts = [(packed >> (bits * i)) & ((1 << bits) - 1) for i in range(per)]
    values = np.stack(parts, axis=-1).reshape(*packed.shape[:-1], -1)
    return values[..., :count].astype(np.int32)


class _Graph:
    """An ONNX graph's weight reads, by kind, in topological order."""

    def __init__(self, model: Any):
        from onnx import numpy_helper

        graph = model.graph
        self.nodes = list(graph.node)
        self.init = {t.name: t for t in graph.initializer}
        self._arrays: dict[str, np.ndarray] = {}
        self._to_array = numpy_helper.to_array
        self.producer = {out: node for node in self.nodes for out in node.output}
        self.consumers: dict[str, list[Any]] = defaultdict(list)
        for node in self.nodes:
            for name in node.input:
                self.consumers[name].append(node)
        self.quantized = any(node.op_type in QUANTIZED_OPS for node in self.nodes)
        self.uses: dict[str, list[_Use]] = defaultdict(list)
        self.aliases: dict[str, str] = {}  # an Identity output -> the initializer it copies
        for node in self.nodes:
            if node.op_type == "Identity" and self.resolve(node.input[0]) in self.init:
                self.aliases[node.output[0]] = self.resolve(node.input[0])
        for node in self.nodes:
            self._read(node)

    def array(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            self._arrays[name] = self._to_array(self.init[name])
        return self._arrays[name]

    def resolve(self, name: str) -> str:
        """The initializer a tensor is (through Identity nodes), or the name itself."""
        while name not in self.init:
            node = self.producer.get(name)
            if node is None or node.op_type != "Identity":
                return name
            name = node.input[0]
        return name

    def weight(self, name: str) -> str | None:
        """The initializer ``name`` reads if it is a float or integer weight (2+ values)."""
        name = self.resolve(name)
        tensor = self.init.get(name)
        if tensor is None or len(tensor.dims) == 0:
            return None
        return name

    def _float(self, name: str) -> tuple[str, np.ndarray, float] | None:
        resolved = self.weight(name)
        if resolved is None:
            return None
        value = self.array(resolved)
        if value.dtype.kind != "f":
            return None
        return resolved, value.astype(np.float32), 0.0

    def _scale_of(self, name: str) -> tuple[np.ndarray, np.ndarray | None]:
        """An ORT-quantized weight's scale and zero point (``X_quantized``: ``X_scale``,
        ``X_zero_point``)."""
        base = name.removesuffix("_quantized")
        if f"{base}_scale" not in self.init:
            raise ValueError(f"quantized weight {name}: no {base}_scale initializer")
        zero = self.init.get(f"{base}_zero_point")
        return self.array(f"{base}_scale"), None if zero is None else self._to_array(zero)

    def _bias_after(self, output: str, width: int) -> tuple[str, np.ndarray, float] | None:
        """The bias Add fed by a MatMul's output (through its dequantizing Cast/Mul)."""
        frontier = [output]
        for _ in range(4):
            following = []
            for name in frontier:
                for node in self.consumers.get(name, []):
                    if node.op_type == "Add":
                        for other in node.input:
                            found = self._float(other) if other != name else None
                            if found is not None and found[1].shape == (width,):
                                return found
                    elif node.op_type in ("Cast", "Mul"):
                        following.append(node.output[0])
            frontier = following
        return None

    def _read(self, node: Any) -> None:
        op = node.op_type
        if op in ("MatMul", "MatMulInteger") and len(node.input) > 1:
            b = self.weight(node.input[1])
            if b is not None:
                value = self.array(b)
                if value.ndim != 2:
                    return
                step = 0.0
                if op == "MatMulInteger":
                    zero_name = node.input[3] if len(node.input) > 3 and node.input[3] else None
                    scale, zero = self._scale_of(b)
                    if zero_name:
                        zero = self._to_array(self.init[self.resolve(zero_name)])
                    value, step = _dequantize(value, scale, zero, axis=1)
                elif value.dtype.kind != "f":
                    return
                self._add("linear", node, (b, value.T.astype(np.float32), step),
                          value.shape[1], dynamic=op == "MatMulInteger")
                return
            a = self._float(node.input[0]) if op == "MatMul" else None
            if a is not None and a[1].ndim == 2:  # a tied head: (V, hidden) @ h^T
                self.uses["matmul"].append(_Use("matmul", a[1].shape, [a]))
        elif op == "Gemm" and len(node.input) > 1:
            found = self._float(node.input[1])
            if found is None or found[1].ndim != 2:
                return
            attrs = {a.name: a.i for a in node.attribute if a.name in ("transA", "transB")}
            if attrs.get("transA"):
                return
            value = found[1] if attrs.get("transB") else found[1].T
            use = _Use("linear", value.shape, [(found[0], value, 0.0)])
            if len(node.input) > 2 and node.input[2]:
                bias = self._float(node.input[2])
                if bias is not None:
                    use.values.append(bias)
            self.uses["linear"].append(use)
        elif op == "MatMulNBits":
            self._nbits(node)
        elif op == "Gather":
            table = self.weight(node.input[0])
            if table is None or self.array(table).ndim != 2:
                return
            value, step = self.array(table), 0.0
            if value.dtype.kind in "iu":
                dequant = [n for n in self.consumers.get(node.output[0], [])
                           if n.op_type == "DequantizeLinear"]
                if len(dequant) != 1:
                    return  # an integer table read as such (not a weight)
                scale = self.array(self.resolve(dequant[0].input[1]))
                zero = (self.array(self.resolve(dequant[0].input[2]))
                        if len(dequant[0].input) > 2 and dequant[0].input[2] else None)
                if scale.size > 1 and scale.size != value.shape[-1]:
                    raise ValueError(f"{table}: a per-row scale of a gathered table")
                value, step = _dequantize(value, scale, zero, axis=value.ndim - 1)
            elif value.dtype.kind != "f":
                return
            self.uses["embedding"].append(
                _Use("embedding", value.shape, [(table, value.astype(np.float32), step)]))
        elif op == "LayerNormalization":
            scale = self._float(node.input[1])
            if scale is None:
                return
            use = _Use("layer_norm", scale[1].shape, [scale])
            bias = self._float(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            if bias is not None:
                use.values.append(bias)
            self.uses["layer_norm"].append(use)
        elif op == "Mul":
            for name in node.input:
                found = self._float(name)
                if found is not None and found[1].ndim == 1 and not self._aux(found[0]):
                    self.uses["mul"].append(_Use("mul", found[1].shape, [found]))
        elif op == "Where":
            for name in node.input[1:]:
                found = self._float(name)
                if found is not None and found[1].ndim == 1:
                    self.uses["where"].append(_Use("where", found[1].shape, [found]))

    def _aux(self, name: str) -> bool:
        """A quantized weight's scale or zero point."""
        for suffix in ("_scale", "_zero_point"):
            if name.endswith(suffix) and f"{name.removesuffix(suffix)}_quantized" in self.init:
                return True
        return False

    def _add(self, kind: str, node: Any, weight: tuple[str, np.ndarray, float],
             width: int, dynamic: bool = False) -> None:
        use = _Use(kind, weight[1].shape, [weight], dynamic=dynamic)
        bias = self._bias_after(node.output[0], width)
        if bias is not None:
            use.values.append(bias)
        self.uses[kind].append(use)

    def _nbits(self, node: Any) -> None:
        """MatMulNBits: B (N, blocks, blob) packed, scales (N * blocks), zero points
        packed (default: 2**(bits-1)); the weight is (N, K), torch's layout."""
        attrs = {a.name: a.i for a in node.attribute}
        k, n, bits, block = attrs["K"], attrs["N"], attrs.get("bits", 4), attrs["block_size"]
        b = self.resolve(node.input[1])
        blocks = (k + block - 1) // block
        q = _unpack_nbits(self.array(b).reshape(n, blocks, -1), bits, block)
        scale = self.array(self.resolve(node.input[2])).astype(np.float64).reshape(n, blocks)
        if len(node.input) > 3 and node.input[3]:
            zeros = self.array(self.resolve(node.input[3]))
            if zeros.dtype.kind == "f":
                zero = zeros.astype(np.float64).reshape(n, blocks)
            else:
                zero = _unpack_nbits(zeros.reshape(n, -1), bits, blocks).astype(np.float64)
        else:
            zero = np.full((n, blocks), 2 ** (bits - 1), dtype=np.float64)
        value = (q - zero[:, :, None]) * scale[:, :, None]
        value = value.reshape(n, blocks * block)[:, :k].astype(np.float32)
        self._add("linear", node, (b, value, float(np.max(np.abs(scale)))), n)


# --- the torch side ------------------------------------------------------------------------

_KINDS = {"linear": "linear", "embedding": "embedding", "layer_norm": "layer_norm",
          "mul": "mul", "__mul__": "mul", "__rmul__": "mul", "matmul": "matmul",
          "where": "where"}


def _torch_uses(wrapper: Any, args: tuple, names: dict[int, str]) -> list[_Use]:
    """The parameter reads of one forward pass of ``wrapper``, in execution order."""
    import torch
    from torch.overrides import TorchFunctionMode

    uses: list[_Use] = []
    unknown: list[str] = []

    def name_of(value: Any) -> str | None:
        return names.get(id(value)) if isinstance(value, torch.nn.Parameter) else None

    class Reads(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            kind = _KINDS.get(getattr(func, "__name__", ""))
            flat = [*args, *kwargs.values()]
            read = [name_of(a) for a in flat]
            if any(read):
                if kind == "linear":
                    weight = kwargs.get("weight", args[1] if len(args) > 1 else None)
                    bias = kwargs.get("bias", args[2] if len(args) > 2 else None)
                    slots = [weight, bias] if bias is not None else [weight]
                elif kind == "embedding":
                    slots = [kwargs.get("weight", args[1] if len(args) > 1 else None)]
                elif kind == "layer_norm":
                    weight = kwargs.get("weight", args[2] if len(args) > 2 else None)
                    bias = kwargs.get("bias", args[3] if len(args) > 3 else None)
                    slots = [weight, bias] if bias is not None else [weight]
                elif kind in ("mul", "where", "matmul"):
                    slots = [a for a in flat if name_of(a)]
                else:
                    slots = []
                    if getattr(func, "__name__", "") not in ("__get__", "size", "dim"):
                        unknown.append(f"{getattr(func, '__name__', func)}"
                                       f"({', '.join(n for n in read if n)})")
                if slots and all(name_of(s) for s in slots):
                    uses.append(_Use(kind, tuple(slots[0].shape),
                                     names=[name_of(s) for s in slots]))
                elif slots:
                    unknown.append(f"{kind}({', '.join(n for n in read if n)})")
            return func(*args, **kwargs)

    with torch.no_grad(), Reads():
        wrapper(*args)
    if unknown:
        raise ValueError(f"parameters read by calls the mapping does not know: "
                         f"{', '.join(sorted(set(unknown)))}")
    return uses


# --- mapping -------------------------------------------------------------------------------

class _SampleIO:
    """``sample_args``'s view of a manifest entry's inputs."""

    def __init__(self, spec: Any):
        self.inputs = spec.inputs


def _relative_error(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.max(np.abs(ours - theirs)) / max(float(np.max(np.abs(theirs))), 1e-6))


def fill_from_graph(model: Any, role: str, architecture: str, path: Path,
                    spec: Any) -> FillReport:
    """Copy the weights of the ONNX graph ``path`` (manifest entry ``spec``, ``role``,
    ``architecture``: the registry's model type) into ``model`` (a torch model of the
    graph's shapes, e.g. ``checkpoint_like``'s), in place; raises ValueError when a
    parameter finds no weight, a weight is left over, or the filled model's outputs
    differ from the graph's (see the module docstring)."""
    import onnx
    import onnxruntime as ort
    import torch

    from mycelium.export.onnx_export import sample_args
    from mycelium.export.registry import ARCHITECTURES

    where = f"{Path(path).name}"
    graph = _Graph(onnx.load(str(path)))
    wrapper = ARCHITECTURES[architecture].build_graph(role, model, quantized=graph.quantized)
    wrapper.eval()
    parameters = dict(wrapper.named_parameters())
    own = {id(p) for p in model.parameters()}
    if {id(p) for p in parameters.values()} != own:
        raise ValueError(f"{where}: the graph wrapper does not hold exactly the model's "
                         "parameters")
    names = {id(p): name for name, p in parameters.items()}
    args = sample_args(_SampleIO(spec), model.config.vocab_size, torch.float32)
    # no padded slot: what a padded position computes is nobody's answer, and torch and
    # the graph may mask it differently (an int8 graph's shared activation scale would
    # then spread the difference to every row)
    args = tuple(torch.ones_like(arg) if spec_in.name == "attention_mask" else arg
                 for spec_in, arg in zip(spec.inputs, args, strict=True))
    reads = _torch_uses(wrapper, args, names)

    taken: dict[str, set[int]] = defaultdict(set)
    sources: dict[str, list[tuple[str, np.ndarray, float]]] = defaultdict(list)
    counts: dict[str, int] = defaultdict(int)
    as_read: dict[int, tuple[np.ndarray, bool]] = {}  # a linear's weight as its graph reads it
    for read in reads:
        candidates = graph.uses.get(read.kind, [])
        index = next((i for i, use in enumerate(candidates)
                      if i not in taken[read.kind] and use.shape == read.shape
                      and len(use.values) >= len(read.names)), None)
        if index is None:
            raise ValueError(f"{where}: no graph weight left for {read.kind}"
                             f"({', '.join(map(str, read.names))}) of shape {read.shape}")
        taken[read.kind].add(index)
        counts[read.kind] += 1
        use = candidates[index]
        if read.kind == "linear":
            as_read[id(parameters[read.names[0]])] = (use.values[0][1], use.dynamic)
        if len(use.values) > len(read.names):  # a bias the torch call does not have
            raise ValueError(f"{where}: {read.kind}({read.names[0]}) has no bias, its "
                             f"graph weight {use.values[0][0]} is followed by one")
        for name, value in zip(read.names, use.values, strict=False):
            assert name is not None
            if tuple(parameters[name].shape) != value[1].shape:
                raise ValueError(f"{where}: {name} {tuple(parameters[name].shape)} vs "
                                 f"{value[0]} {value[1].shape}")
            sources[name].append(value)
    left = {kind: len(uses) - len(taken[kind]) for kind, uses in graph.uses.items()
            if kind in ("linear", "embedding", "layer_norm", "matmul")
            and len(uses) > len(taken[kind])}
    if left:
        raise ValueError(f"{where}: graph weights no parameter reads: {left}")

    tied, merged_by = [], defaultdict(list)
    with torch.no_grad():
        for name, found in sources.items():
            first_init, first, first_step = found[0]
            for other_init, other, step in found[1:]:
                allowed = 0.5 * (first_step + step) + 1e-6
                error = float(np.max(np.abs(first - other)))
                if error > allowed:
                    raise ValueError(f"{where}: {name} is read twice, as {first_init} and "
                                     f"{other_init}, {error:.3g} apart")
                tied.append(name)
            parameters[name].copy_(torch.from_numpy(first))
            merged_by[first_init].append(name)
    missing = [name for name in parameters if name not in sources
               and any(name in read.names for read in reads)]
    if missing:
        raise ValueError(f"{where}: no weight for {', '.join(missing)}")
    unread = [name for name in parameters if name not in sources]
    for init, users in merged_by.items():  # a name the exporter kept is its parameter's
        named = init.removesuffix("_quantized")
        if named in parameters and named not in users:
            raise ValueError(f"{where}: initializer {init} went to {users}, not to {named}")
    for alias, init in graph.aliases.items():  # a merged copy keeps its parameter's name
        if alias in parameters and alias in sources and sources[alias][0][0] != init:
            raise ValueError(f"{where}: {alias} (a copy of {init}) went elsewhere")

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {spec_in.name: arg.numpy() for spec_in, arg in zip(spec.inputs, args, strict=True)}
    theirs = session.run([spec.outputs[0].name], feed)[0]
    fp32_error = _relative_error(_first(wrapper, args), theirs)
    dynamic = any(flag for _, flag in as_read.values())
    weight_only = any(use.values[0][2] > 0 and not use.dynamic
                      for use in graph.uses["linear"])  # MatMulNBits
    if dynamic and not weight_only:
        # the graph's own arithmetic: each int8 MatMul's input quantized as
        # DynamicQuantizeLinear does, its weight as the graph holds it (a tied head's
        # quantized copy included)
        with _GraphArithmetic(as_read):
            error = _relative_error(_first(wrapper, args), theirs)
        tolerance, check = SIMULATED_TOLERANCE, "int8 activations simulated"
    else:
        error = fp32_error
        tolerance, check = ((WEIGHT_ONLY_TOLERANCE, "weight-only int8") if weight_only
                            else (FP32_TOLERANCE, "float"))
    if error > tolerance:
        raise ValueError(f"{where}: the filled model's {spec.outputs[0].name} differ from "
                         f"the graph's by {error:.3g} of their range (> {tolerance}, "
                         f"{check})")
    return FillReport(
        parameters=len(parameters), filled=len(sources), uses=dict(counts),
        quantized=sum(1 for found in sources.values() if found[0][2] > 0),
        tied=sorted(set(tied)),
        merged={k: v for k, v in merged_by.items() if len(v) > 1},
        unread=unread, output_error=error, tolerance=tolerance, check=check,
        fp32_error=fp32_error,
    )


def _first(wrapper: Any, args: tuple) -> np.ndarray:
    """The wrapper's first output (logits) on ``args``."""
    import torch

    with torch.no_grad():
        out = wrapper(*args)
    out = out[0] if isinstance(out, tuple) else out
    return out.float().numpy()


def _quantize_like_onnxruntime(x: Any) -> Any:
    """DynamicQuantizeLinear then back: uint8, one scale for the tensor, the range
    widened to hold 0, round half to even."""
    import torch

    low = torch.clamp(x.min(), max=0.0)
    high = torch.clamp(x.max(), min=0.0)
    scale = (high - low) / 255.0
    if float(scale) == 0.0:
        return x
    zero = torch.clamp(torch.round(-low / scale), 0, 255)
    q = torch.clamp(torch.round(x / scale) + zero, 0, 255)
    return (q - zero) * scale


class _GraphArithmetic:
    """While active, every ``linear`` whose weight an int8 graph reads dynamically
    quantizes its input as onnxruntime does and uses the graph's weight."""

    def __init__(self, as_read: dict[int, tuple[np.ndarray, bool]]):
        import torch
        from torch.overrides import TorchFunctionMode

        weights = {key: (torch.from_numpy(value), flag) for key, (value, flag) in
                   as_read.items()}

        class Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                if getattr(func, "__name__", "") == "linear" and len(args) > 1:
                    found = weights.get(id(args[1]))
                    if found is not None:
                        value, flag = found
                        x = _quantize_like_onnxruntime(args[0]) if flag else args[0]
                        args = (x, value, *args[2:])
                return func(*args, **kwargs)

        self.mode = Mode()

    def __enter__(self) -> None:
        self.mode.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self.mode.__exit__(*exc)
