"""How far does one decoder that writes the whole program get? (Experiment;
train/README.md has the result.)

    python docs/experiments/program_decoder.py data DATA_DIR OUT_DIR
    python docs/experiments/program_decoder.py CKPT ARTIFACTS [--beam B] [--limit N]

``data`` writes OUT_DIR from a `mycelium-train data` folder: its files linked, and an
extractor.jsonl with one row per aligned problem whose target is the whole program (the
few with a template step left out), for `mycelium-train fit --data OUT_DIR --model
extractor`.

CKPT: a checkpoint whose extractor was trained (`mycelium-train fit --model extractor`) on
rows whose target is a problem's whole aligned program in the extractor grammar with the
operation names in it (``DIV Q0 C2 ADD Q0 R1``: each operation name starts a step; `R<k>`
the result k steps back), written from `mycelium-train data`'s problems.jsonl. ARTIFACTS:
whose segmenter marks the spans (``Q<i>`` = the i-th span in text order), so the figure is
end to end: the gold answer is read only to count.

A beam search over the grammar (an operation, then two or more arguments: ``Q<i>`` of the
problem's spans, ``R<k>`` of the steps already written, a constant; end of program only
after a complete step), each finished program executed exactly. Reports the dev problems
whose best valid program is right (top-1), right after pooling the beam's probability per
value, and the ORACLE count whose gold value is among the beam's valid programs.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

import torch
from tokenizers import Tokenizer

from mycelium.executor import execute
from mycelium.executor.program import Step
from mycelium.runtime.diagnose import gold_value
from mycelium.runtime.grammar import parse_args
from mycelium.runtime.solver import Solver
from mycelium.runtime.spec import SolverSpec
from mycelium.runtime.templates import extractor_suffix, marked_problem
from mycelium.train.arg_decoder import BertForArgumentDecoding
from mycelium.train.data import read_problems, split_of

OPERATIONS = ("ADD", "SUB", "MUL", "DIV")


class Grammar:
    """Token classes of the program grammar in the decoder's vocabulary."""

    def __init__(self, tokenizer: Tokenizer, eos: int, outputs: int):
        vocab = tokenizer.get_vocab()
        self.eos = eos
        self.ops = {vocab[op]: op for op in OPERATIONS}
        self.quantity = {i: vocab[f"Q{i}"] for i in range(16) if f"Q{i}" in vocab}
        self.result = {k: vocab[f"R{k}"] for k in range(1, 16) if f"R{k}" in vocab}
        self.constants = [i for t, i in vocab.items()
                          if t.startswith("C") and i < outputs and t[1:2].isdigit()]
        self.outputs = outputs

    def allowed(self, state: tuple[int, int], spans: int) -> list[int]:
        """Ids allowed after (steps begun, arguments of the current step)."""
        steps, args = state
        out: list[int] = []
        if steps == 0 or args >= 2:
            out += list(self.ops)
        if steps and args >= 2:
            out.append(self.eos)
        if steps:
            out += [self.quantity[i] for i in range(min(spans, 16)) if i in self.quantity]
            out += [self.result[k] for k in range(1, steps) if k in self.result]
            out += self.constants
        return out

    def advance(self, state: tuple[int, int], token: int) -> tuple[int, int]:
        steps, args = state
        return (steps + 1, 0) if token in self.ops else (steps, args + 1)


@torch.no_grad()
def beam_programs(model: BertForArgumentDecoding, grammar: Grammar, prefix: list[int],
                  spans: int, beam: int, max_tokens: int = 40) -> list[tuple[list[int], float]]:
    """Finished token sequences (eos dropped) and their log-probabilities."""
    live: list[tuple[list[int], float, tuple[int, int]]] = [([], 0.0, (0, 0))]
    done: list[tuple[list[int], float]] = []
    for _ in range(max_tokens):
        if not live:
            break
        ids = torch.tensor([prefix + seq for seq, _, _ in live])
        logits = model(input_ids=ids, logits_to_keep=torch.tensor([ids.shape[1] - 1])).logits
        logp = torch.log_softmax(logits[:, 0].float(), -1)
        options = []
        for row, (seq, score, state) in enumerate(live):
            for token in grammar.allowed(state, spans):
                options.append((score + float(logp[row, token]), seq, token, state))
        options.sort(key=lambda o: -o[0])
        live = []
        for score, seq, token, state in options:
            if len(live) >= beam:
                break
            if token == grammar.eos:
                done.append((seq, score))
                if len(done) >= beam:
                    break
            else:
                live.append((seq + [token], score, grammar.advance(state, token)))
        if len(done) >= beam and (not live or max(s for _, s, _ in live) < min(
                s for _, s in sorted(done, key=lambda d: -d[1])[:beam])):
            break
    return sorted(done, key=lambda d: -d[1])[:beam]


def to_program(tokenizer: Tokenizer, seq: list[int]) -> tuple[Step, ...]:
    words = [tokenizer.id_to_token(i) for i in seq]
    steps, current = [], None
    for word in words:
        if word in OPERATIONS:
            if current is not None:
                steps.append(current)
            current = [word, []]
        else:
            current[1].append(word)
    steps.append(current)
    return tuple(Step(op, parse_args(" ".join(args))) for op, args in steps)


def write_program_data(source: Path, out: Path) -> dict[str, int]:
    """OUT: SOURCE's files linked, extractor.jsonl replaced by whole-program rows."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("classifier.jsonl", "coverage.json", "problems.jsonl", "segmenter.jsonl",
                 "tokenizer.json"):
        link = out / name
        if not link.exists():
            link.symlink_to((source / name).resolve())
    counts: dict[str, int] = defaultdict(int)
    with (out / "extractor.jsonl").open("w", encoding="utf-8") as handle:
        for line in (source / "problems.jsonl").open(encoding="utf-8"):
            record = json.loads(line)
            if not record["aligned"] or not record.get("program"):
                continue
            if any(step["op"] not in OPERATIONS for step in record["program"]):
                counts["template step, left out"] += 1
                continue
            target = " ".join(f"{s['op']} {' '.join(s['args'])}" for s in record["program"])
            handle.write(json.dumps({
                "id": record["id"], "split": record["split"], "question": record["question"],
                "spans": [[s["start"], s["end"]] for s in record["spans"]], "group": [],
                "op": "ADD", "reachable": record["reachable"], "target": target}) + "\n")
            counts[record["split"]] += 1
    return dict(counts)


def main() -> None:
    import sys

    if sys.argv[1:2] == ["data"]:
        print(write_program_data(Path(sys.argv[2]), Path(sys.argv[3])))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("ckpt", type=Path)
    parser.add_argument("artifacts", type=Path)
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--limit", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    spec = SolverSpec.from_dict(json.loads((args.ckpt / "mycelium.json").read_text()))
    folder = args.ckpt / "extractor"
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    model = BertForArgumentDecoding.from_pretrained(folder).eval()
    eos = tokenizer.token_to_id(spec.special_tokens["eos"])
    grammar = Grammar(tokenizer, eos, model.config.output_tokens)
    solver = Solver.load(args.artifacts, "cpu")
    rows = [(n, r["question"], gold_value(r)) for n, r in
            read_problems(Path("../shared/data/gsm8k/train.jsonl")) if split_of(n) == "dev"]
    rows = rows[: args.limit] if args.limit else rows
    constants = solver.constants
    suffix = tokenizer.encode(extractor_suffix(spec.templates, [], "ADD"),
                              add_special_tokens=False).ids
    top1 = pooled = oracle = valid_any = 0
    for at in range(0, len(rows), 16):
        chunk = rows[at:at + 16]
        spans = solver._segment([q for _, q, _ in chunk])
        for (_, question, gold), found in zip(chunk, spans, strict=True):
            text = marked_problem(spec.templates, question, [(s.start, s.end) for s in found])
            prefix = tokenizer.encode(text, add_special_tokens=False).ids[
                : spec.max_problem_tokens] + suffix
            values = [s.value for s in found]
            results = []
            for seq, score in beam_programs(model, grammar, prefix, len(found), args.beam):
                result = execute(to_program(tokenizer, seq), values, constants=constants)
                if result.ok:
                    results.append((result.value, score))
            if not results:
                continue
            valid_any += 1
            top1 += results[0][0] == gold
            mass: dict = defaultdict(float)
            for value, score in results:
                mass[value] += math.exp(score)
            pooled += max(mass, key=mass.get) == gold
            oracle += gold in mass
        print(f"{at + len(chunk)}: top-1 {top1}, pooled {pooled}, ORACLE in beam {oracle}, "
              f"with a valid program {valid_any}", flush=True)


if __name__ == "__main__":
    main()
