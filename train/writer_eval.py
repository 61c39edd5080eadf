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

import torch
from transformers import DynamicCache

from mycelium.executor.numbers import parse_number
from mycelium.runtime.diagnose import gold_value
from mycelium.runtime.solver import Solver
from mycelium.runtime.spec import DEFAULT_CONSTANTS

from .data import read_problems, split_of
from .equations import ALPHABET, END, Sources, WriterState, advance, allowed, finish
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
        self.symbols = [*ALPHABET, END]

    def _logp(self, tokens: torch.Tensor, cache: DynamicCache) -> torch.Tensor:
        hidden = self.model.model(input_ids=tokens, past_key_values=cache,
                                  use_cache=True).last_hidden_state[:, -1]
        return torch.log_softmax((hidden @ self.top.head.T).float(), -1)

    @torch.no_grad()
    def beam(self, question: str, sources: Sources, width: int = 8, max_chars: int = 120
             ) -> list[tuple[Fraction, float, str]]:
        """Finished valid programs: (answer, log-probability, text), best first."""
        prompt = self.tokenizer.encode(PROMPT.format(question=question)).ids
        cache = DynamicCache()
        logp = self._logp(torch.tensor([prompt]), cache)
        # a beam: (score, state, text, characters the executor still writes)
        beams = [(0.0, WriterState(), "", "")]
        done: list[tuple[Fraction, float, str]] = []
        for _ in range(max_chars):
            options = []
            for row, (score, state, text, pending) in enumerate(beams):
                if pending:
                    options.append((score, row, state, text + pending[0], pending[1:],
                                    pending[0]))
                    continue
                for char in allowed(state, sources):
                    value = score + float(logp[row, self.symbols.index(char)])
                    options.append((value, row, state, text, "", char))
            options.sort(key=lambda o: -o[0])
            kept, rows, feed = [], [], []
            for score, row, state, text, pending, char in options:
                if len(kept) >= width:
                    break
                if char == END:
                    answer = finish(state, sources)
                    if answer is not None:
                        done.append((answer, score, text))
                    continue
                if beams[row][3]:  # a forced character: already advanced
                    kept.append((score, state, text, pending))
                else:
                    moved = advance(state, char, sources)
                    if moved is None:
                        continue
                    kept.append((score, moved[0], text + char, moved[1]))
                rows.append(row)
                feed.append(self.ids[self.symbols.index(char)])
            best_done = max((d[1] for d in done), default=-math.inf)
            if not kept or (len(done) >= width and kept[0][0] < best_done):
                break
            cache.reorder_cache(torch.tensor(rows))
            beams = kept
            logp = self._logp(torch.tensor(feed)[:, None], cache)
        return sorted(done, key=lambda d: -d[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--artifacts", default=None)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/gsm8k/train.jsonl"))
    parser.add_argument("--beam", type=int, default=8)
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="per-problem JSONL")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    writer = Writer(args.run)
    solver = Solver.load(args.artifacts, "cpu")
    constants = tuple(parse_number(text) for text in DEFAULT_CONSTANTS)
    rows = [(n, r) for n, r in read_problems(args.data) if split_of(n) == "dev"]
    rows = rows[: args.limit] if args.limit else rows
    counts = defaultdict(int)
    sink = args.out.open("w") if args.out else None
    started = time.time()
    for at in range(0, len(rows), 16):
        chunk = rows[at:at + 16]
        spans = solver.segment([r["question"] for _, r in chunk])
        for (number, record), found in zip(chunk, spans, strict=True):
            gold = gold_value(record)
            sources = Sources(tuple(s.value for s in found if s.value is not None), constants)
            finished = writer.beam(record["question"], sources, args.beam)
            mass: dict[Fraction, float] = defaultdict(float)
            for answer, score, _ in finished:
                mass[answer] += math.exp(score)
            pick = max(mass, key=mass.get) if mass else None
            counts["problems"] += 1
            counts["top1"] += bool(finished) and finished[0][0] == gold
            counts["pooled"] += pick == gold
            counts["ORACLE gold in beam"] += gold in mass
            counts["no valid program"] += not finished
            if sink:
                sink.write(json.dumps({"id": number, "pick": str(pick), "gold": str(gold),
                                       "right": pick == gold, "share": (
                                           mass[pick] / sum(mass.values()) if pick else 0),
                                       "programs": [[str(a), s, t] for a, s, t in
                                                    finished[:4]]}) + "\n")
        rate = counts["problems"] / (time.time() - started)
        print(json.dumps({**counts, "problems/s": round(rate, 2)}), flush=True)


if __name__ == "__main__":
    main()
