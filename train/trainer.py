"""`mycelium-train fit`: train the specialists from a supervision folder and write a
checkpoint folder (``mycelium.json``, one ``save_pretrained`` folder per specialist,
``training.json``).

What each piece does lives elsewhere: the hyper-parameters in ``config``, the tokenizers in
``vocab``, item encoding in ``items``, the tasks in ``tasks``, the models in ``factory``,
the training loop in ``loop`` and the optional backbone pretraining in ``pretrain``. This
module only runs them in order and records what happened.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from mycelium.runtime.manifest import MODEL_NAMES
from mycelium.runtime.spec import (
    MARKED_TEMPLATES,
    SearchSpec,
    SolverSpec,
    fit_answer_prior,
    search_from_record,
)

from .config import FitConfig
from .factory import build_model
from .items import read_jsonl
from .loop import Log, log_stderr, resolve_device, seed_everything, train_task
from .models import (
    MAX_EXPORT_BYTES,
    SIZES,
    export_bytes,
    load_backbone,
    parameter_count,
    size_summary,
)
from .pretrain import pretrain_backbone
from .tasks import ExtractorTask, SegmenterTask, Task, load_tasks, reject_class_weights
from .vocab import Vocab

BACKBONE_FILE = "backbone.safetensors"  # the pretrained backbone a checkpoint started from


def save_model(model: torch.nn.Module, folder: Path, tokenizer_json: bytes) -> None:
    """``save_pretrained`` (safetensors) plus a copy of tokenizer.json (as read at the start)."""
    folder.mkdir(parents=True, exist_ok=True)
    model.to("cpu").save_pretrained(folder, safe_serialization=True)
    (folder / "tokenizer.json").write_bytes(tokenizer_json)


def train_answers(data: Path) -> Iterator[Fraction]:
    """The final answers of the train split's problems (``problems.jsonl``)."""
    for record in read_jsonl(data / "problems.jsonl"):
        if record.get("split") == "train" and record.get("answer") is not None:
            yield Fraction(record["answer"])


def sha256(path: Path) -> str:
    """The hex sha256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def data_search(data: Path) -> SearchSpec:
    """The search structure ``data``'s programs were fitted to (``mycelium-train data
    --search``, recorded in its coverage.json), which the checkpoint then serves with."""
    coverage = Path(data) / "coverage.json"
    settings = json.loads(coverage.read_text()).get("search", {}) if coverage.is_file() else {}
    return search_from_record(settings)


def _load_tasks(data: Path, config: FitConfig, vocabs: dict[str, Vocab], spec: SolverSpec,
                encoders: dict[str, Path], log: Log) -> dict[str, Task]:
    """The requested specialists' tasks, with the classifier's reject weight applied."""
    tasks: dict[str, Task] = {}
    for name in config.models:
        tasks.update(load_tasks(data, vocabs[name], spec, [name], config.augment, config.seed,
                                encoder_classifier=config.classifier_head
                                if "classifier" in encoders else None))
    for name, task in tasks.items():
        log(f"[{name}] {len(task.train)} train / {len(task.dev)} dev items")
        if name == "classifier" and config.reject_weight != 1.0:
            if not getattr(task, "reject", False):
                raise ValueError("--reject-weight needs classifier records with the reject "
                                 "label (`mycelium-train data --reject-groups`)")
            task.class_weights = reject_class_weights(spec, config.reject_weight)
    return tasks


def _check_size(config: FitConfig, vocabs: dict[str, Vocab], spec: SolverSpec,
                encoders: dict[str, Path], device: torch.device,
                log: Log) -> tuple[dict[str, int], int]:
    """Parameters per specialist and the exported bytes of all three; refuses a set
    that would not fit ``MAX_EXPORT_BYTES``."""
    built = [build_model(n, config, vocabs[n], spec, 0) for n in MODEL_NAMES]
    params = {n: parameter_count(m) for n, m in zip(MODEL_NAMES, built, strict=True)}
    # a pretrained encoder ships int8 (embeddings included): count it at 1 byte per weight
    total_bytes = export_bytes([m for n, m in zip(MODEL_NAMES, built, strict=True)
                                if n not in encoders]) + sum(params[n] for n in encoders)
    del built
    log(f"models: {params} parameters, {total_bytes / 2**20:.1f} MiB together "
        f"({'the encoders at int8, the others ' if encoders else ''}fp32) on {device}")
    if total_bytes >= MAX_EXPORT_BYTES:
        raise ValueError(f"models too large: {total_bytes} bytes >= {MAX_EXPORT_BYTES}")
    return params, total_bytes


def _backbone(data: Path, vocab: Vocab, spec: SolverSpec, config: FitConfig,
              device: torch.device, log: Log
              ) -> tuple[dict[str, torch.Tensor] | None, dict[str, Any] | None]:
    """The backbone the Qwen2 specialists start from: read (``config.backbone``),
    pretrained (``config.pretrain_minutes``) or none; and what the report says of it."""
    if config.backbone:
        from safetensors.torch import load_file

        backbone = load_file(config.backbone)
        log(f"backbone read from {config.backbone}")
        return backbone, {"backbone": config.backbone,
                          "backbone_sha256": sha256(Path(config.backbone))}
    if config.pretrain_minutes > 0:
        answers = Path(config.pretrain_text) if config.pretrain_text else None
        return pretrain_backbone(data, vocab, spec, config, device, log, answers=answers)
    return None, None


def _train_one(name: str, offset: int, task: Task, config: FitConfig, vocab: Vocab,
               spec: SolverSpec, backbone: dict[str, torch.Tensor] | None,
               device: torch.device, log: Log) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build, train and check one specialist; its trained model and report entry."""
    reject = bool(getattr(task, "reject", False))
    pretrained = config.encoder_init(name) is not None
    model = build_model(name, config, vocab, spec, config.seed * 1000 + offset, reject)
    if backbone is not None and not pretrained:
        load_backbone(model, backbone)
    seed_everything(config.seed * 1000 + offset)
    result = train_task(task, model, config, device, log, batch_size=config.batch_size_for(name),
                        lr=config.peak_lr_for(name))
    entry: dict[str, Any] = {
        "train_items": len(task.train),
        "dev_items": len(task.dev),
        "epochs": result.history,
        "best_epoch": result.best_epoch,
        "best_dev": result.best,
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
    }
    if isinstance(task, SegmenterTask):
        entry["dev_label_ceiling_span_f1"] = task.label_ceiling()
    if isinstance(task, ExtractorTask) and config.generate_eval > 0:
        check = task.generate_check(result.model, device, config.generate_eval)
        entry["best_dev"] = {**result.best, **check}
        log(f"[extractor] greedy generate on {check['generate_rows']} dev rows: "
            f"exact match {check['generate_exact_match']:.4f}")
    log(f"[{name}] best epoch {result.best_epoch}: {task.metric} "
        f"{result.best[task.metric]:.4f}, {result.seconds:.0f} s")
    return result.model, entry


def fit(data: Path, out: Path, config: FitConfig, log: Log = log_stderr) -> dict[str, Any]:
    """Train the specialists on ``data`` and write the checkpoint folder ``out``."""
    wall = time.perf_counter()
    data, out = Path(data), Path(out)
    spec = SolverSpec(templates=MARKED_TEMPLATES) if config.span_markers else SolverSpec()
    spec = replace(spec, search=data_search(data))
    seed_everything(config.seed)
    device = resolve_device(config.device)
    tokenizer_path = data / "tokenizer.json"
    tokenizer_json = tokenizer_path.read_bytes()  # the data folder may be rewritten meanwhile
    data_files = {p.name: sha256(p) for p in sorted(data.glob("*.json*"))}
    vocab = Vocab.load(tokenizer_path, spec)
    if vocab.pad != 0:
        raise ValueError(f"tokenizer: <pad> must be id 0, got {vocab.pad}")
    encoders = {n: folder for n in MODEL_NAMES if (folder := config.encoder_init(n)) is not None}
    vocabs = {name: vocab for name in MODEL_NAMES}
    vocabs.update({name: Vocab.for_encoder(folder) for name, folder in encoders.items()})
    tasks = _load_tasks(data, config, vocabs, spec, encoders, log)
    params, total_bytes = _check_size(config, vocabs, spec, encoders, device, log)
    backbone, pretrain_info = _backbone(data, vocab, spec, config, device, log)

    out.mkdir(parents=True, exist_ok=True)
    if backbone is not None:
        from safetensors.torch import save_file

        save_file(backbone, str(out / BACKBONE_FILE))
    report: dict[str, Any] = {
        "config": asdict(config),
        "seed": config.seed,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "size": size_summary(SIZES[config.size]),
        "parameters": params,
        "export_bytes_fp32": total_bytes,
        "data": str(data),
        "data_sha256": data_files,
        "pretrain": pretrain_info,
        "models": {},
    }
    for offset, name in enumerate(MODEL_NAMES):
        if name not in tasks:
            continue
        model, report["models"][name] = _train_one(name, offset, tasks[name], config,
                                                   vocabs[name], spec, backbone, device, log)
        save_model(model, out / name, (encoders[name] / "tokenizer.json").read_bytes()
                   if name in encoders else tokenizer_json)
    if (data / "problems.jsonl").is_file():
        spec = replace(spec, answer_prior=fit_answer_prior(train_answers(data)))
        log(f"answer prior (log-probabilities from the train answers): {spec.answer_prior}")
    with open(out / "mycelium.json", "w", encoding="utf-8") as handle:
        json.dump(spec.to_dict(), handle, indent=2)
    report["wall_seconds"] = round(time.perf_counter() - wall, 1)
    with open(out / "training.json", "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
    log(f"checkpoint written to {out} in {report['wall_seconds']:.0f} s")
    return report
