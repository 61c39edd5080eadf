"""The chain-of-thought baseline: greedy generation of a full written solution.

A causal LM of the extractor's shape (its config; the extractor's weights or
random ones) writes ``new_tokens`` tokens for each problem, forced to that length
(``min_new_tokens = max_new_tokens``, as a 0.5B instruct model writes about 200
tokens on GSM8K), through transformers ``generate`` with a KV cache, batched with
left padding; the prompt is the question's tokens. Weights are not trained for
CoT, so only the speed is measured, never the accuracy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import Qwen2Config, Qwen2ForCausalLM

from mycelium.runtime.tokenization import pad_batch

from .measure import chunks, percentile

DEFAULT_NEW_TOKENS = 200
WEIGHTS = ("extractor", "random")


def load_cot_model(checkpoint: str | Path, weights: str = "extractor") -> Qwen2ForCausalLM:
    """The extractor's causal LM (``weights="extractor"``) or one of its shape, random."""
    folder = Path(checkpoint) / "extractor"
    if weights == "extractor":
        return Qwen2ForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    if weights == "random":
        torch.manual_seed(0)
        return Qwen2ForCausalLM(Qwen2Config.from_pretrained(folder)).eval()
    raise ValueError(f"unknown CoT weights {weights!r} (choose from {', '.join(WEIGHTS)})")


class CotGenerator:
    """Batched greedy generation of exactly ``new_tokens`` tokens per prompt."""

    def __init__(self, model: Qwen2ForCausalLM, tokenizer: Tokenizer, *, pad_id: int,
                 eos_id: int, new_tokens: int = DEFAULT_NEW_TOKENS, max_prompt_tokens: int = 256):
        self.model = model
        self.tokenizer = tokenizer
        self.pad_id, self.eos_id = pad_id, eos_id
        self.new_tokens = new_tokens
        self.max_prompt_tokens = max_prompt_tokens
        self.positions = 0  # token positions computed (prompts + fed-back generated tokens)
        self.generated = 0

    def prompts(self, questions: Sequence[str]) -> list[list[int]]:
        """The questions' token ids (no special tokens), truncated like the pipeline's."""
        encoded = self.tokenizer.encode_batch(list(questions), add_special_tokens=False)
        return [list(enc.ids[: self.max_prompt_tokens]) for enc in encoded]

    def generate(self, questions: Sequence[str]) -> list[list[int]]:
        """The generated ids of each question (exactly ``new_tokens`` each)."""
        prompts = self.prompts(questions)
        ids, mask = pad_batch(prompts, self.pad_id, left=True)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=torch.from_numpy(ids),
                attention_mask=torch.from_numpy(mask),
                max_new_tokens=self.new_tokens,
                min_new_tokens=self.new_tokens,
                do_sample=False,
                num_beams=1,
                use_cache=True,
                pad_token_id=self.pad_id,
                eos_token_id=self.eos_id,
            )
        generated = out[:, ids.shape[1]:].tolist()
        # prefill computes each prompt; every generated token but the last is fed back
        self.positions += sum(len(p) for p in prompts) + len(prompts) * (self.new_tokens - 1)
        self.generated += sum(len(g) for g in generated)
        return generated


def _sweep(batch_size: int, problems: int, seconds: float, single: int,
           single_ms: float) -> list[dict[str, Any]]:
    """Throughput at batch 1 (the latency pass) and at ``batch_size``."""
    rows = [{"batch_size": 1, "problems": single, "seconds": single_ms / 1000.0,
             "problems_per_second": single / (single_ms / 1000.0)}]
    if batch_size > 1:
        rows.append({"batch_size": batch_size, "problems": problems, "seconds": seconds,
                     "problems_per_second": problems / seconds})
    return rows


def measure_cot(
    generator: CotGenerator,
    questions: Sequence[str],
    *,
    batch_size: int,
    warmup: int | None = None,
    latency_limit: int | None = None,
    progress: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """Warm up, then time batched throughput and batch-1 latency of the CoT generator."""
    questions = list(questions)
    warm = questions[: max(1, warmup if warmup is not None else batch_size)]
    progress(f"CoT warm-up: {len(warm[:batch_size])} problems batched, 1 alone")
    generator.generate(warm[:batch_size])
    generator.generate(warm[:1])

    progress(f"CoT timed: {len(questions)} problems, batch {batch_size}, "
             f"{generator.new_tokens} new tokens each")
    generator.positions = generator.generated = 0
    lengths: list[int] = []
    start = time.perf_counter()
    for batch in chunks(questions, batch_size):
        lengths += [len(g) for g in generator.generate(batch)]
    seconds = time.perf_counter() - start
    positions = generator.positions
    lat_questions = questions[: latency_limit or len(questions)]
    progress(f"CoT timed: {len(lat_questions)} problems, batch 1 (latency)")
    latencies = []
    for question in lat_questions:
        begin = time.perf_counter()
        generator.generate([question])
        latencies.append((time.perf_counter() - begin) * 1000.0)
    prompt_lengths = [len(p) for p in generator.prompts(questions)]
    total_ms = float(np.sum(latencies))
    return {
        "problems": len(questions),
        "batch_size": batch_size,
        "new_tokens": generator.new_tokens,
        "generated_tokens_per_problem": float(np.mean(lengths)),
        "prompt_tokens_per_problem": float(np.mean(prompt_lengths)),
        "tokens_per_problem": {
            "prompt": float(np.mean(prompt_lengths)),
            "generated": positions / len(questions) - float(np.mean(prompt_lengths)),
            "total": positions / len(questions),
        },
        "seconds": seconds,
        "problems_per_second": len(questions) / seconds,
        "generated_tokens_per_second": sum(lengths) / seconds,
        "latency_problems": len(lat_questions),
        "latency_ms": latencies,
        "latency_ms_p50": percentile(latencies, 50),
        "latency_ms_p95": percentile(latencies, 95),
        "latency_ms_mean": total_ms / len(lat_questions),
        "sweep": _sweep(batch_size, len(questions), seconds, len(lat_questions), total_ms),
        "accuracy": None,
    }
