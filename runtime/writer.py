"""The program writer served torch-free: its exported decoder graph on onnxruntime and the
grammar-constrained beam search of ``mycelium.train.writer_eval`` in numpy.

The folder that ``mycelium.export.writer.export_writer`` writes holds the graph
(``writer.onnx``), the base's ``tokenizer.json`` and ``writer.json``: the grammar's
alphabet, the prompt template, the end-of-program token, the token id of every head class
and the KV layout. The graph is a decoder with a KV cache (the inputs and outputs of the
other decoders) whose head scores only the grammar's characters and the end.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from .equations import END, Sources, WriterState, advance, allowed, finish
from .manifest import KVCacheSpec, ModelSpec
from .models import DecoderRunner, log_softmax
from .sessions import make_session

WRITER_FILE = "writer.json"
Program = tuple[Fraction, float, str]  # answer, log-probability, text


@dataclass(frozen=True)
class WriterSpec:
    """What ``writer.json`` says about an exported writer."""

    graph: str  # ONNX file, relative to the folder
    tokenizer: str  # tokenizer.json file, relative
    alphabet: str  # the head's classes before the end of the program
    prompt: str  # with ``{question}``
    eos_id: int  # the end of the program, also the padding token
    char_ids: tuple[int, ...]  # token id of each head class (the alphabet, then END)
    num_layers: int
    num_kv_heads: int
    head_dim: int
    dtype: str = "float32"

    @classmethod
    def read(cls, folder: Path) -> WriterSpec:
        """The spec in ``folder/writer.json`` (unknown keys, such as parity, ignored)."""
        data = json.loads((folder / WRITER_FILE).read_text(encoding="utf-8"))
        names = cls.__dataclass_fields__
        fields = {key: value for key, value in data.items() if key in names}
        fields["char_ids"] = tuple(fields["char_ids"])
        return cls(**fields)


def settled(done: list[Program], best_live: float, width: int, margin: float = 3.0) -> bool:
    """Whether a problem's search can stop: no live beam within ``margin`` nats of its best
    finished program, or ``width`` finished programs all better than every live beam."""
    if not done:
        return False
    scores = sorted((d[1] for d in done), reverse=True)
    return best_live < scores[0] - margin or (len(scores) >= width
                                               and best_live < scores[width - 1])


class ProgramWriter:
    """A program writer's decoder on onnxruntime: prompts in, programs out (numpy only)."""

    def __init__(self, runner: DecoderRunner, tokenizer: Tokenizer, prompt: str,
                 alphabet: str, char_ids: tuple[int, ...]):
        """``char_ids``: the token id of each head class, the alphabet's then the end's."""
        if len(char_ids) != len(alphabet) + 1:
            raise ValueError(f"{len(char_ids)} token ids for {len(alphabet) + 1} head classes")
        self.runner, self.tokenizer, self.prompt = runner, tokenizer, prompt
        self.alphabet, self.char_ids = alphabet, tuple(char_ids)
        self.positions = 0  # token positions computed: prompts, then one per beam step

    def prompt_ids(self, question: str) -> list[int]:
        """The token ids of the prompt the writer reads for ``question``."""
        return self.tokenizer.encode(self.prompt.format(question=question)).ids

    def beams(self, questions: list[str], sources: list[Sources], width: int = 8,
              max_chars: int = 90) -> list[list[Program]]:
        """Per problem, its finished valid programs: (answer, log-probability, text), best
        first (`grammar_beams` over this graph)."""
        prompts = [self.prompt_ids(q) for q in questions]
        logits, state = self.runner.prefill(prompts)
        self.positions += sum(len(p) for p in prompts)
        cache = {"state": state}

        def step(rows: np.ndarray, feed: np.ndarray) -> np.ndarray:
            self.positions += len(feed)
            logits, cache["state"] = self.runner.step(feed, cache["state"].take(rows))
            return log_softmax(logits)

        return grammar_beams(log_softmax(logits), step, sources, self.alphabet,
                             self.char_ids, width, max_chars)


class OnnxWriter(ProgramWriter):
    """The folder ``export_writer`` writes (``writer.json``, graph, tokenizer), loaded."""

    def __init__(self, folder: str | Path, provider: str = "cpu", threads: int | None = None):
        folder = Path(folder)
        self.spec = WriterSpec.read(folder)
        session = make_session(folder / self.spec.graph, provider, threads)
        kv = KVCacheSpec(self.spec.num_layers, self.spec.num_kv_heads, self.spec.head_dim,
                         self.spec.dtype)
        model = ModelSpec(file=self.spec.graph, sha256="", tokenizer=self.spec.tokenizer,
                          tokenizer_sha256="", inputs=(), outputs=(), kv_cache=kv)
        super().__init__(DecoderRunner(session, model, pad_id=self.spec.eos_id),
                         Tokenizer.from_file(str(folder / self.spec.tokenizer)),
                         self.spec.prompt, self.spec.alphabet, self.spec.char_ids)
        self.symbols = [*self.spec.alphabet, END]


def grammar_beams(logp: np.ndarray, step: Callable[[np.ndarray, np.ndarray], np.ndarray],
                  sources: list[Sources], alphabet: str, char_ids: tuple[int, ...],
                  width: int = 8, max_chars: int = 90) -> list[list[Program]]:
    """The beam search over the equation grammar, whatever runs the model.

    ``logp`` (problems, classes): the head's log-probabilities after each problem's prompt;
    ``step(rows, tokens)`` keeps the given rows of the model's state (in that order), feeds
    one token to each and returns the next log-probabilities. All problems' beams advance
    together, one character per step; a character the executor writes is fed like any
    other, with no choice and no score. Returns per problem its finished valid programs,
    best first."""
    symbols = [*alphabet, END]
    # a live beam: (problem, score, state, text, characters the executor still writes)
    live = [(n, 0.0, WriterState(), "", "") for n in range(len(sources))]
    done: list[list[Program]] = [[] for _ in sources]
    for _ in range(max_chars):
        options: list[list] = [[] for _ in sources]
        for row, (n, score, grammar, text, pending) in enumerate(live):
            if pending:
                options[n].append((score, row, None, text + pending[0], pending[1:],
                                   pending[0]))
                continue
            for char in allowed(grammar, sources[n]):
                value = score + float(logp[row, symbols.index(char)])
                options[n].append((value, row, grammar, text, "", char))
        kept, rows, feed = [], [], []
        for n, candidates in enumerate(options):
            candidates.sort(key=lambda o: -o[0])
            taken = 0
            for score, row, grammar, text, pending, char in candidates:
                if taken >= width:
                    break
                if char == END:
                    answer = finish(grammar, sources[n])
                    if answer is not None:
                        done[n].append((answer, score, text))
                    continue
                if grammar is None:  # a written character: the beam moves on
                    kept.append((n, score, live[row][2], text, pending))
                else:
                    moved = advance(grammar, char, sources[n])
                    if moved is None:
                        continue
                    kept.append((n, score, moved[0], text + char, moved[1]))
                rows.append(row)
                feed.append(char_ids[symbols.index(char)])
                taken += 1
        best: dict[int, float] = {}
        for n, score, *_ in kept:
            best[n] = max(best.get(n, -math.inf), score)
        keep = [i for i, (n, *_rest) in enumerate(kept) if not settled(done[n], best[n], width)]
        if not keep:
            break
        live = [kept[i] for i in keep]
        logp = step(np.array([rows[i] for i in keep], dtype=np.int64),
                    np.array([feed[i] for i in keep], dtype=np.int64))
    return [sorted(d, key=lambda item: -item[1]) for d in done]
