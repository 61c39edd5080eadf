"""Dev accuracy of a trained program writer, end to end: the quantities come from the
artifacts' segmenter, a beam search over the equation grammar writes programs, the
executor computes every result and rejects invalid programs, and the candidates' beam
probabilities pool per value. The gold answer is read only to count.

    python -m mycelium.train.writer_eval --run RUN [--artifacts DIR] [--beam B] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import defaultdict
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from transformers import DynamicCache

from mycelium.executor.numbers import parse_number
from mycelium.runtime.compare import compare_reports
from mycelium.runtime.diagnose import gold_value
from mycelium.runtime.solver import Solver
from mycelium.runtime.spec import DEFAULT_CONSTANTS
from mycelium.runtime.writer import grammar_beams

from .data import read_problems, split_of
from .equations import ALPHABET, Sources
from .program_writer import PROMPT, TopLayers, WriterConfig, char_ids, load_base


class Writer:
    """The base with its trained top layers and grammar head, decoding with a KV cache."""

    def __init__(self, run: Path):
        config = WriterConfig(**json.loads((run / "writer.json").read_text()))
        self.model, self.tokenizer, base_config = load_base(Path(config.base))
        self.eos = int(base_config.eos_token_id)
        self.ids = [*char_ids(self.tokenizer), self.eos]
        self.top = TopLayers(self.model, config.frozen_layers, self.ids)
        trained = torch.load(run / "writer.pt", weights_only=True)
        self.top.load_state_dict(trained, strict=False)
        self.model.to(torch.bfloat16)  # decoding reads every weight per step: half the bytes

    def _logp(self, tokens: torch.Tensor, mask: torch.Tensor, cache: DynamicCache
              ) -> torch.Tensor:
        """Grammar log-probabilities (rows, classes) of the next character after ``tokens``
        (rows, T), ``mask`` covering the cache and the new tokens."""
        with torch.autocast("cpu", dtype=torch.bfloat16):
            hidden = self.model.model(input_ids=tokens, attention_mask=mask,
                                      past_key_values=cache, use_cache=True
                                      ).last_hidden_state[:, -1]
            logits = hidden @ self.top.head.T
        return torch.log_softmax(logits.float(), -1)

    @torch.no_grad()
    def beams(self, questions: list[str], sources: list[Sources], width: int = 8,
              max_chars: int = 90) -> list[list[tuple[Fraction, float, str]]]:
        """Per problem, its finished valid programs: (answer, log-probability, text), best
        first (`mycelium.runtime.writer.grammar_beams` over this PyTorch model)."""
        prompts = [self.tokenizer.encode(PROMPT.format(question=q)).ids for q in questions]
        longest = max(map(len, prompts))
        tokens = torch.tensor([[self.eos] * (longest - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompts])
        cache = DynamicCache()
        masks = {"mask": mask}

        def step(rows: np.ndarray, feed: np.ndarray) -> np.ndarray:
            index = torch.from_numpy(rows)
            cache.reorder_cache(index)
            masks["mask"] = torch.cat([masks["mask"][index],
                                       torch.ones(len(rows), 1, dtype=mask.dtype)], 1)
            return self._logp(torch.from_numpy(feed)[:, None], masks["mask"], cache).numpy()

        return grammar_beams(self._logp(tokens, mask, cache).numpy(), step, sources, ALPHABET,
                             tuple(self.ids), width, max_chars)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--artifacts", default=None)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/gsm8k/train.jsonl"))
    parser.add_argument("--beam", type=int, default=8)
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--batch", type=int, default=8, help="problems decoded together")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="per-problem JSONL")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="a `mycelium-rt diagnose` report of the same problems: paired "
                             "comparison (gained, lost, exact McNemar p)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    writer = Writer(args.run)
    solver = Solver.load(args.artifacts, "cpu")
    constants = tuple(parse_number(text) for text in DEFAULT_CONSTANTS)
    rows = [(n, r) for n, r in read_problems(args.data) if split_of(n) == "dev"]
    rows = rows[: args.limit] if args.limit else rows
    counts = defaultdict(int)
    verdicts: list[tuple[int, bool]] = []
    sink = args.out.open("w") if args.out else None
    started = time.time()
    for at in range(0, len(rows), args.batch):
        chunk = rows[at:at + args.batch]
        spans = solver.segment([r["question"] for _, r in chunk])
        sources = [Sources(tuple(s.value for s in found if s.value is not None), constants)
                   for found in spans]
        programs = writer.beams([r["question"] for _, r in chunk], sources, args.beam)
        for (number, record), finished in zip(chunk, programs, strict=True):
            gold = gold_value(record)
            mass: dict[Fraction, float] = defaultdict(float)
            for answer, score, _ in finished:
                mass[answer] += math.exp(score)
            pick = max(mass, key=mass.get) if mass else None
            counts["problems"] += 1
            counts["top1"] += bool(finished) and finished[0][0] == gold
            counts["pooled"] += pick == gold
            counts["ORACLE gold in beam"] += gold in mass
            counts["no valid program"] += not finished
            verdicts.append((number, pick == gold))
            if sink:
                sink.write(json.dumps({"id": number, "pick": str(pick), "gold": str(gold),
                                       "right": pick == gold, "share": (
                                           mass[pick] / sum(mass.values()) if pick else 0),
                                       "programs": [[str(a), s, t] for a, s, t in
                                                    finished[:4]]}) + "\n")
                sink.flush()
        rate = counts["problems"] / (time.time() - started)
        print(json.dumps({**counts, "problems/s": round(rate, 2)}), flush=True)
    if args.baseline:
        print(json.dumps(_paired(verdicts, args.baseline)))


def compare_only(answers: Path, baseline: Path) -> dict:
    """The paired comparison of a finished run's per-problem JSONL with a diagnose report."""
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    return _paired([(r["id"], r["right"]) for r in rows], baseline)


def _paired(verdicts: list[tuple[int, bool]], baseline: Path) -> dict:
    report = {"problems": [{"id": number, "stage": "correct" if right else "wrong"}
                           for number, right in verdicts]}
    return compare_reports(json.loads(baseline.read_text()), report)


if __name__ == "__main__":
    main()
