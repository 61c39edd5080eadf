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
from mycelium.runtime.compare import compare_reports
from mycelium.runtime.diagnose import gold_value
from mycelium.runtime.solver import Solver
from mycelium.runtime.spec import DEFAULT_CONSTANTS
from mycelium.runtime.writer import settled as _settled

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
        first. All problems' beams advance together, one character per step (a character
        the executor writes is fed like any other, with no choice and no score)."""
        prompts = [self.tokenizer.encode(PROMPT.format(question=q)).ids for q in questions]
        longest = max(map(len, prompts))
        tokens = torch.tensor([[self.eos] * (longest - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompts])
        cache = DynamicCache()
        logp = self._logp(tokens, mask, cache)
        # a live beam: (problem, score, state, text, characters the executor still writes)
        live = [(n, 0.0, WriterState(), "", "") for n in range(len(questions))]
        done: list[list[tuple[Fraction, float, str]]] = [[] for _ in questions]
        for _ in range(max_chars):
            options: list[list] = [[] for _ in questions]
            for row, (n, score, state, text, pending) in enumerate(live):
                if pending:
                    options[n].append((score, row, None, text + pending[0], pending[1:],
                                       pending[0]))
                    continue
                for char in allowed(state, sources[n]):
                    value = score + float(logp[row, self.symbols.index(char)])
                    options[n].append((value, row, state, text, "", char))
            kept, rows, feed = [], [], []
            for n, candidates in enumerate(options):
                candidates.sort(key=lambda o: -o[0])
                taken = 0
                for score, row, state, text, pending, char in candidates:
                    if taken >= width:
                        break
                    if char == END:
                        answer = finish(state, sources[n])
                        if answer is not None:
                            done[n].append((answer, score, text))
                        continue
                    if state is None:  # a written character: the beam moves on
                        kept.append((n, score, live[row][2], text, pending))
                    else:
                        moved = advance(state, char, sources[n])
                        if moved is None:
                            continue
                        kept.append((n, score, moved[0], text + char, moved[1]))
                    rows.append(row)
                    feed.append(self.ids[self.symbols.index(char)])
                    taken += 1
            # a problem stops once no live beam can matter: its best is far below the best
            # finished program, or below the width-th finished one (scores only fall)
            best = {}
            for n, score, *_ in kept:
                best[n] = max(best.get(n, -math.inf), score)
            keep = [i for i, (n, *_rest) in enumerate(kept) if not _settled(done[n], best[n],
                                                                               width)]
            if not keep:
                break
            kept = [kept[i] for i in keep]
            index = torch.tensor([rows[i] for i in keep])
            cache.reorder_cache(index)
            mask = torch.cat([mask[index], torch.ones(len(keep), 1, dtype=mask.dtype)], 1)
            live = kept
            logp = self._logp(torch.tensor([feed[i] for i in keep])[:, None], mask, cache)
        return [sorted(d, key=lambda item: -item[1]) for d in done]


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
        report = {"problems": [{"id": number, "stage": "correct" if right else "wrong"}
                               for number, right in verdicts]}
        print(json.dumps(compare_reports(json.loads(args.baseline.read_text()), report)))


def compare_only(answers: Path, baseline: Path) -> dict:
    """The paired comparison of a finished run's per-problem JSONL with a diagnose report."""
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    report = {"problems": [{"id": r["id"], "stage": "correct" if r["right"] else "wrong"}
                           for r in rows]}
    return compare_reports(json.loads(baseline.read_text()), report)


if __name__ == "__main__":
    main()
