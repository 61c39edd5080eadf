"""C3, the argument extractor: batched decoding of every (group, operation) reading
after its problem's cached prefix."""

from __future__ import annotations

import numpy as np

from .batching import Specialist
from .models import DecoderRunner, DecoderState, log_softmax, top_k
from .spec import SolverSpec
from .stats import timed
from .templates import extractor_suffix

# arg_beam searches the first two argument tokens with a beam and continues each beam
# greedily (a beam step gathers the cache; a greedy step does not)
BEAM_DEPTH = 2

ExtractRow = tuple[int, list[tuple[int, str]], str]  # (problem, group items, operation)


def branch_first_token(
    logits: np.ndarray, state: DecoderState, branches: int
) -> tuple[np.ndarray, DecoderState, np.ndarray]:
    """Each row's top ``branches`` next tokens as rows of their own (row r becomes rows
    r*branches ... r*branches + branches - 1, best first): logits that force each
    row's token, the repeated state, and the forced tokens' log-probabilities."""
    logprobs = log_softmax(logits)
    top = top_k(logprobs, branches)
    rows = np.repeat(np.arange(len(logits)), top.shape[1])
    tokens = top.reshape(-1)
    forced = np.full((len(rows), logits.shape[1]), -1e4, dtype=np.float32)
    forced[np.arange(len(rows)), tokens] = 0.0
    return forced, state.take(rows), logprobs[rows, tokens].astype(np.float64)


def extract(model: Specialist, prefix: DecoderState, rows: list[ExtractRow], branches: int,
            spec: SolverSpec, eos_id: int) -> list[list[tuple[str, float]]]:
    """Argument texts and their log-probabilities per (problem, group, op) row:
    ``branches`` of them (the top first tokens, each continued greedily, or with
    ``search.arg_beam`` the beam search's best sequences); ``prefix``: the extractor's
    cache after each problem's text (row ``p`` for problem ``p``)."""
    suffixes = model.suffix_ids(
        [extractor_suffix(spec.templates, items, op) for _, items, op in rows],
        spec.max_suffix_tokens,
    )
    runner: DecoderRunner = model.runner
    decode = model.tokenizer.decode
    model.stats.extractor_rows += len(rows) * branches
    out: list[list[tuple[str, float]]] = []
    step = model.rows_per_call(prefix, spec.max_suffix_tokens, spec.max_new_tokens)
    step = max(1, step // branches)
    for start in range(0, len(rows), step):
        chunk = range(start, min(start + step, len(rows)))
        state = prefix.take(np.array([rows[i][0] for i in chunk], dtype=np.int64))
        batch = [suffixes[i] for i in chunk]
        logits, state = runner.prefill(batch, state)
        found: list[list[tuple[list[int], float]]]  # per row: (token ids, logprob)
        if branches > 1 and spec.search.arg_beam:
            found = runner.beam(logits, state, eos_id=eos_id,
                                max_new_tokens=spec.max_new_tokens,
                                width=branches, depth=BEAM_DEPTH)
        else:
            first_logprob = 0.0
            if branches > 1:
                logits, state, first_logprob = branch_first_token(logits, state, branches)
            generated, logprob = runner.greedy(
                logits, state, eos_id=eos_id, max_new_tokens=spec.max_new_tokens
            )
            pairs = list(zip(generated, (logprob + first_logprob).tolist(), strict=True))
            found = [pairs[i:i + branches] for i in range(0, len(pairs), branches)]
        model.stats.tokens[model.name] += sum(len(x) for x in batch) + sum(
            len(ids) for row in found for ids, _ in row)
        with timed(model.stats, "tokenize"):
            out.extend([(decode(ids), float(lp)) for ids, lp in row] for row in found)
    return out
