"""``export_writer``: a trained program writer (``mycelium.train.program_writer``) to an
ONNX decoder that ``mycelium.runtime.writer.OnnxWriter`` serves.

The base named in ``RUN/writer.json`` is loaded with the trained top layers, final norm and
grammar head of ``RUN/writer.pt`` merged in, and traced as a decoder with a KV cache (the
I/O of the other decoders) whose head scores the grammar's characters and the end at the
last position. The graph is then checked against the PyTorch model: a left-padded prefill
of a few prompts, then program characters fed one at a time with the cache.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from mycelium.runtime.artifacts import embedded_default
from mycelium.runtime.equations import ALPHABET, END, char_ids
from mycelium.runtime.errors import ArtifactsError
from mycelium.runtime.manifest import (
    FORMAT_VERSION,
    KVCacheSpec,
    Manifest,
    ModelSpec,
    load_manifest,
    sha256_file,
)
from mycelium.runtime.spec import WriterSettings
from mycelium.runtime.writer import WRITER_FILE, OnnxWriter

from .errors import ExportError, ParityError
from .io_specs import decoder_io
from .manifest_builder import versions
from .onnx_export import DEFAULT_OPSET, check_opset, export_graph, sample_args
from .output import Staging, check_destination
from .pipeline import ExportReport, Log, Progress, publish
from .quantize import check_precision, convert
from .reuse import copy_reused
from .verify import TOLERANCES, ParityRow
from .wrappers import LastPositionDecoderGraph

STEM = "writer"
PROMPTS = ("Tom has 3 apples and buys 5 more. How many apples does he have?",
           "A box holds 12 pens. Ann buys 4 boxes and gives away 7 pens. How many are left?",
           "Sam ran 2 miles.")
CONTINUATION = "3+5=8\n8*2"  # program characters fed one at a time after each prompt


def _char_ids(tokenizer, alphabet: str) -> list[int]:
    try:
        return char_ids(tokenizer, alphabet)
    except ValueError as exc:
        raise ExportError(str(exc)) from None


def load_writer(run: Path):
    """The base causal LM (float32) with ``RUN/writer.pt`` merged into its top layers and
    final norm, the grammar head as an ``nn.Linear`` (classes, hidden), and the run's
    ``writer.json``."""
    from transformers import AutoModelForCausalLM

    config = json.loads((run / "writer.json").read_text(encoding="utf-8"))
    model = AutoModelForCausalLM.from_pretrained(Path(config["base"]), dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    trained = torch.load(run / "writer.pt", weights_only=True, map_location="cpu")
    frozen = int(config["frozen_layers"])
    merged = {}
    for key, value in trained.items():
        if key.startswith("layers."):
            index, rest = key[len("layers."):].split(".", 1)
            merged[f"layers.{frozen + int(index)}.{rest}"] = value
        elif key.startswith("norm."):
            merged[key] = value
        elif key != "head":
            raise ExportError(f"writer.pt has an unexpected tensor {key!r}")
    state = model.model.state_dict()
    unknown = [key for key in merged if key not in state]
    if unknown or "head" not in trained:
        raise ExportError(f"writer.pt does not fit the base: {unknown or 'no head'}")
    model.model.load_state_dict(merged, strict=False)
    weight = trained["head"].float()
    head = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    head.weight.data.copy_(weight)
    return model, head.eval(), config


def _reference(model, head, rows: list[list[int]]) -> list[np.ndarray]:
    """PyTorch head logits (positions, classes) over each row, one row at a time (no
    padding, no cache)."""
    out = []
    with torch.no_grad():
        for row in rows:
            hidden = model.model(input_ids=torch.tensor([row])).last_hidden_state[0]
            out.append(head(hidden).float().numpy())
    return out


def check_parity(folder: Path, model, head, precision: str) -> dict:
    """Max |Δlogits| of the exported graph against the PyTorch model: the prompts
    left-padded and prefilled together, then ``CONTINUATION`` fed with the cache; raises
    :class:`ParityError` (with its parity row) on any failure."""
    writer = OnnxWriter(folder)
    spec = writer.spec
    prompts = [writer.tokenizer.encode(spec.prompt.format(question=q)).ids for q in PROMPTS]
    chars = [spec.char_ids[spec.alphabet.index(c)] for c in CONTINUATION]
    want = _reference(model, head, [p + chars for p in prompts])
    logits, state = writer.runner.prefill(prompts)
    got = [logits]
    for char in chars:
        logits, state = writer.runner.step(np.full(len(prompts), char, np.int64), state)
        got.append(logits)
    tolerance = TOLERANCES[precision]
    failures, worst, limits, same = [], 0.0, [], True
    for step, g in enumerate(got):
        w = np.stack([ref[len(p) - 1 + step] for ref, p in zip(want, prompts, strict=True)])
        diff = float(np.abs(g.astype(np.float64) - w).max())
        worst = max(worst, diff)
        limit = tolerance.limit(float(np.abs(w).max()))
        limits.append(limit)
        same = same and bool(np.array_equal(g.argmax(-1), w.argmax(-1)))
        if not np.isfinite(g).all() or diff > limit:
            failures.append(f"step {step}: max |Δlogits| {diff:.3g} (tolerance {limit:.3g})")
        elif tolerance.argmax and not np.array_equal(g.argmax(-1), w.argmax(-1)):
            failures.append(f"step {step}: top-1 classes differ")
    if failures:
        row = ParityRow(STEM, precision, "FAIL", worst, min(limits), tolerance.describe(),
                        same, "CPUExecutionProvider", failures[0])
        raise ParityError(f"writer ({precision}) parity failed: " + "; ".join(failures),
                          [row])
    return {"max_abs_diff": worst, "tolerance": min(limits), "rule": tolerance.describe(),
            "steps": len(got), "argmax_match": same}


def export_writer(run: Path, out: Path, precision: str = "fp32", opset: int = DEFAULT_OPSET,
                  verify: bool = True) -> Path:
    """Export the writer of training run ``run`` into the folder ``out`` (``writer.onnx``,
    ``tokenizer.json``, ``writer.json``) at ``precision`` (fp32, or int8: weight-only
    MatMulNBits, see ``quantize.quantize_weights``); returns ``out``."""
    run, out = Path(run), Path(out)
    check_precision(precision)
    check_opset(opset)
    if precision not in ("fp32", "int8"):
        raise ExportError("the writer exports as fp32 or int8")
    model, head, config = load_writer(run)
    base = Path(config["base"])
    alphabet = config.get("alphabet", ALPHABET)
    tokenizer = Tokenizer.from_file(str(base / "tokenizer.json"))
    eos = int(model.config.eos_token_id)
    inner = model.model
    layers = len(inner.layers)
    kv_heads = model.config.num_key_value_heads
    head_dim = getattr(model.config, "head_dim", None) or (
        model.config.hidden_size // model.config.num_attention_heads)
    graph = LastPositionDecoderGraph(inner, head)
    io = decoder_io(layers, kv_heads, head_dim, len(alphabet) + 1, "float32")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        raw = Path(scratch) / f"{STEM}.raw.onnx"
        export_graph(graph, io, sample_args(io, model.config.vocab_size, torch.float32), raw,
                     opset)
        files = convert(raw, precision, out, STEM, Path(scratch), weight_only=True)
    shutil.copyfile(base / "tokenizer.json", out / "tokenizer.json")
    spec = {"graph": files[0], "tokenizer": "tokenizer.json", "alphabet": alphabet,
            "prompt": config["prompt"], "eos_id": eos,
            "char_ids": [*_char_ids(tokenizer, alphabet), eos], "num_layers": layers,
            "num_kv_heads": kv_heads, "head_dim": head_dim, "dtype": "float32",
            "precision": precision, "files": files}
    (out / WRITER_FILE).write_text(json.dumps(spec, indent=2), encoding="utf-8")
    if verify:
        spec["parity"] = check_parity(out, model, head, precision)
        (out / WRITER_FILE).write_text(json.dumps(spec, indent=2), encoding="utf-8")
    return out


def export_writer_set(run: str | Path, out: str | Path, precision: str = "int8", *,
                      segmenter: str | Path | None = None, opset: int = DEFAULT_OPSET,
                      force: bool = False, verify: bool = True, beam: int = 6,
                      max_chars: int = 90, log: Log | None = None) -> ExportReport:
    """A program writer's artifacts set in ``out``: the segmenter of ``segmenter`` (an
    artifacts folder; default: the embedded default), copied as exported there, and the
    writer of run ``run`` exported at ``precision`` with its parity checked; the manifest
    names both (kinds ``token_classifier`` and ``program_writer``), and its ``mycelium``
    section is the segmenter's, without the span search's answer scorer, calibration and
    prior, plus the writer's prompt and beam (``WriterSettings``)."""
    progress = Progress(log)
    run, out = Path(run), Path(out)
    check_precision(precision)
    check_opset(opset)
    check_destination(out, force)
    source = Path(segmenter) if segmenter is not None else embedded_default()
    try:
        donor = load_manifest(source)
    except ArtifactsError as exc:
        raise ExportError(f"--segmenter {source}: {exc}") from None
    staging = Staging(out)
    try:
        progress(f"exporting the writer of {run} ({precision}) ...")
        exported = export_writer(run, staging.scratch / STEM, precision, opset, verify)
        written = json.loads((exported / WRITER_FILE).read_text(encoding="utf-8"))
        for name in written["files"]:
            shutil.move(exported / name, staging.folder / name)
        tokenizer = f"{STEM}.tokenizer.json"
        shutil.move(exported / "tokenizer.json", staging.folder / tokenizer)
        staging.clear_scratch()
        progress(f"copying the segmenter from {source} ...")
        segmenter_spec, segmenter_row = copy_reused("segmenter", donor, source, staging.folder)
        parity = written.get("parity")
        row = ParityRow(STEM, precision, "skipped")
        if parity is not None:
            row = ParityRow(STEM, precision, "ok", parity["max_abs_diff"], parity["tolerance"],
                            parity["rule"], parity["argmax_match"], "CPUExecutionProvider",
                            f"{parity['steps']} steps")
        manifest = Manifest(
            format_version=FORMAT_VERSION, precision=precision,
            models={"segmenter": segmenter_spec,
                    "writer": _writer_entry(staging.folder, written, tokenizer)},
            mycelium=_writer_mycelium(donor.mycelium, written["prompt"], beam, max_chars),
            parity={r.model: r.to_dict() for r in (segmenter_row, row)},
            versions=versions(opset))
        manifest = manifest.with_mycelium(manifest.mycelium)  # validated as the runtime reads it
        return publish(staging, manifest, [segmenter_row, row], progress)
    finally:
        staging.close()


def _writer_entry(folder: Path, written: dict, tokenizer: str) -> ModelSpec:
    """The writer's manifest entry: a decoder graph whose labels are the grammar's
    characters and ``END``, the end of the program (also its padding token)."""
    graph, *data = written["files"]
    io = decoder_io(written["num_layers"], written["num_kv_heads"], written["head_dim"],
                    len(written["alphabet"]) + 1, written["dtype"])
    return ModelSpec(
        file=graph, sha256=sha256_file(folder / graph), tokenizer=tokenizer,
        tokenizer_sha256=sha256_file(folder / tokenizer), inputs=io.inputs,
        outputs=io.outputs, external_data={name: sha256_file(folder / name) for name in data},
        labels=(*written["alphabet"], END),
        kv_cache=KVCacheSpec(written["num_layers"], written["num_kv_heads"],
                             written["head_dim"], written["dtype"]),
        special_tokens={"eos": written["eos_id"], "pad": written["eos_id"]},
        architecture="qwen2", kind="program_writer")


def _writer_mycelium(segmenter: dict, prompt: str, beam: int, max_chars: int) -> dict:
    """The set's mycelium.json: the segmenter's (its labels, quantity grammar, constants,
    token limits), without what was fitted on the span search's candidates."""
    fitted = ("answer_scorer", "confidence_calibration", "answer_prior")
    kept = {key: value for key, value in segmenter.items() if key not in fitted}
    return {**kept, "writer": asdict(WriterSettings(prompt, beam, max_chars))}
