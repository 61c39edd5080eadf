"""Batched runners of the three exported specialists on onnxruntime.

The segmenter reads right-padded problems; so does an encoder classifier (one text
pair per span group, or each problem once with all its span groups). A decoder
classifier and the extractor have a KV cache: each problem's text is prefilled once,
its cache rows are gathered for every span group of that problem, and only the short
group suffixes (and, for the extractor, the generated arguments) are computed per
group.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from .manifest import ModelSpec
from .tokenization import EncodedPair, GroupedProblem, group_feed, pad_batch, pair_feed

_NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16}


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float32."""
    logits = logits.astype(np.float32, copy=False)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def greedy_pick(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's argmax token and its log-probability (no full log-softmax matrix)."""
    logits = logits.astype(np.float32, copy=False)
    tokens = logits.argmax(axis=-1)
    best = logits[np.arange(len(tokens)), tokens]
    normaliser = best + np.log(np.exp(logits - best[:, None]).sum(axis=-1))
    return tokens, best - normaliser


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Each row's ``k`` highest columns, best first (ties: the lower column first), without
    sorting the whole row (a vocabulary-wide argsort costs more than the decoder call)."""
    k = min(k, scores.shape[1])
    if k == scores.shape[1]:
        return np.argsort(-scores, axis=1, kind="stable")
    part = np.sort(np.argpartition(-scores, k - 1, axis=1)[:, :k], axis=1)
    values = np.take_along_axis(scores, part, axis=1)
    out = np.take_along_axis(part, np.argsort(-values, axis=1, kind="stable"), axis=1)
    tied = (scores >= values.min(axis=1, keepdims=True)).sum(axis=1) > k  # a tie at the cut
    if tied.any():
        out[tied] = np.argsort(-scores[tied], axis=1, kind="stable")[:, :k]
    return out


class SegmenterRunner:
    """C1: token classification over right-padded problems."""

    def __init__(self, session: ort.InferenceSession, pad_id: int):
        self.session = session
        self.pad_id = pad_id

    def label_probs(self, sequences: list[list[int]]) -> list[np.ndarray]:
        """Label probabilities (T, L) per token of each sequence (padding dropped)."""
        ids, mask = pad_batch(sequences, self.pad_id, left=False)
        (logits,) = self.session.run(["logits"], {"input_ids": ids, "attention_mask": mask})
        probs = np.exp(log_softmax(logits))
        return [probs[row, : len(seq)] for row, seq in enumerate(sequences)]


class EncoderClassifierRunner:
    """C2 as a bidirectional encoder: one (problem with the group marked, group) text pair
    per row, right-padded, classified from the whole sequence (no cache to share)."""

    def __init__(self, session: ort.InferenceSession, pad_id: int):
        self.session = session
        self.pad_id = pad_id

    def logits(self, rows: list[EncodedPair]) -> np.ndarray:
        """Label logits (B, L) of the encoded pairs."""
        (logits,) = self.session.run(["logits"], pair_feed(rows, self.pad_id))
        return logits


class SpanGroupClassifierRunner:
    """C2 as an encoder reading each problem once: every span group of a problem is
    classified from that one pass (its spans' token vectors pooled)."""

    def __init__(self, session: ort.InferenceSession, pad_id: int):
        self.session = session
        self.pad_id = pad_id

    def logits(self, rows: list[GroupedProblem]) -> np.ndarray:
        """Label logits (B, G, L) of each row's group slots (G: the most groups of a row;
        a row's slots past its own groups are padding)."""
        (logits,) = self.session.run(["logits"], group_feed(rows, self.pad_id))
        return logits


@dataclass(frozen=True)
class BufferView:
    """A cache tensor stored at the front of a preallocated flat onnxruntime buffer."""

    buffer: ort.OrtValue
    shape: tuple[int, ...]

    def numpy(self) -> np.ndarray:
        """A host copy of the tensor."""
        return self.buffer.numpy()[: math.prod(self.shape)].reshape(self.shape)


Cache = np.ndarray | ort.OrtValue | BufferView  # host array, or an onnxruntime tensor


def host(value: Cache) -> np.ndarray:
    """A cache tensor on the host (an onnxruntime tensor is copied out; others pass)."""
    return value.numpy() if isinstance(value, (ort.OrtValue, BufferView)) else value


class CacheBuffers:
    """Two preallocated flat buffers per cache tensor on the cache device.

    Decode step k reads its past from one set and writes its present into the other,
    so a whole greedy decode allocates its cache once (IO binding with buffer pointers)
    instead of once per step.
    """

    def __init__(self, count: int, elements: int, dtype: type, device: str):
        self.sets = [
            [ort.OrtValue.ortvalue_from_shape_and_type([elements], dtype, device, 0)
             for _ in range(count)]
            for _ in range(2)
        ]
        self.turn = 0

    def next(self) -> list[ort.OrtValue]:
        """The set to write the next step's present into."""
        self.turn ^= 1
        return self.sets[self.turn]


@dataclass
class DecoderState:
    """Rows of a decoder batch: attention mask (B, P), next positions (B,), KV per layer.

    With IO binding the cache tensors are onnxruntime values that stay where the
    provider wrote them (device memory on CUDA) and go back in as the next step's past.
    """

    mask: np.ndarray  # (B, P) int64
    next_position: np.ndarray  # (B,) int64
    past: list[Cache]  # 2 * layers tensors (B, KV, P, D): key, value per layer

    def take(self, rows: np.ndarray) -> DecoderState:
        """The sub-batch of the given rows (a gather over every cache tensor, on the host)."""
        return DecoderState(
            self.mask[rows], self.next_position[rows], [host(kv)[rows] for kv in self.past]
        )


def extend(
    state: DecoderState, new_mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Attention mask (B, P+T), position ids (B, T) and next positions (B,) for new tokens."""
    mask = np.concatenate([state.mask, new_mask], axis=1)
    positions = state.next_position[:, None] + np.cumsum(new_mask, axis=1) - 1
    positions = np.maximum(positions, 0).astype(np.int64)
    return mask, positions, state.next_position + new_mask.sum(axis=1)


class DecoderRunner:
    """C2/C3: a decoder graph with KV cache and last-position logits.

    ``cache_device`` (``None``, ``"cpu"`` or ``"cuda"``) turns on IO binding: the
    ``present.*`` outputs are bound to that device and fed back as the next step's
    ``past_key_values.*`` without a round trip through numpy (no host copy of the cache
    per decode step). On a device, finished rows are not compacted away during decoding
    (that would need a host gather): they keep decoding and their tokens are ignored.
    """

    def __init__(
        self,
        session: ort.InferenceSession,
        spec: ModelSpec,
        pad_id: int,
        cache_device: str | None = None,
    ):
        assert spec.kv_cache is not None
        self.session = session
        self.pad_id = pad_id
        self.cache_device = cache_device
        # drop finished rows from the batch during decoding (a host gather of the cache)
        self.compact_finished = cache_device in (None, "cpu")
        self.kv = spec.kv_cache
        self.dtype = _NUMPY_DTYPES.get(self.kv.dtype, np.float32)
        self.past_names = [
            f"past_key_values.{layer}.{part}"
            for layer in range(self.kv.num_layers)
            for part in ("key", "value")
        ]
        self.output_names = ["logits"] + [
            f"present.{layer}.{part}"
            for layer in range(self.kv.num_layers)
            for part in ("key", "value")
        ]

    def _run(
        self,
        ids: np.ndarray,
        state: DecoderState,
        new_mask: np.ndarray,
        out: list[ort.OrtValue] | None = None,
    ) -> tuple[np.ndarray, DecoderState]:
        """Feed new tokens (B, T) after the state's cache; return logits (B, N) and new state.

        ``out``: preallocated buffers to write the present cache into (IO binding only).
        """
        mask, positions, next_position = extend(state, new_mask)
        feed = {"input_ids": ids, "attention_mask": mask, "position_ids": positions}
        if self.cache_device is not None:
            shape = (ids.shape[0], self.kv.num_kv_heads, mask.shape[1], self.kv.head_dim)
            logits, present = self._run_bound(feed, state.past, out, shape)
            return logits, DecoderState(mask, next_position, present)
        feed.update(zip(self.past_names, (host(kv) for kv in state.past), strict=True))
        outputs = self.session.run(self.output_names, feed)
        return outputs[0], DecoderState(mask, next_position, list(outputs[1:]))

    def _run_bound(
        self,
        feed: dict[str, np.ndarray],
        past: list[Cache],
        out: list[ort.OrtValue] | None,
        shape: tuple[int, ...],
    ) -> tuple[np.ndarray, list[Cache]]:
        """One call with IO binding: logits to the host, the cache left on its device
        (in ``out``'s buffers when given, else where onnxruntime allocates it)."""
        binding = self.session.io_binding()
        for name, value in feed.items():
            binding.bind_cpu_input(name, value)
        for name, value in zip(self.past_names, past, strict=True):
            if isinstance(value, np.ndarray):
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
            elif isinstance(value, BufferView):
                binding.bind_input(name, value.buffer.device_name(), 0, self.dtype,
                                   list(value.shape), value.buffer.data_ptr())
            else:
                binding.bind_ortvalue_input(name, value)
        binding.bind_output("logits", "cpu")
        names = self.output_names[1:]
        if out is not None and math.prod(shape) > out[0].shape()[0]:
            out = None  # would not fit (onnxruntime writes through the raw pointer)
        if out is None:
            for name in names:
                binding.bind_output(name, self.cache_device)
        else:
            for name, buffer in zip(names, out, strict=True):
                binding.bind_output(name, self.cache_device, 0, self.dtype, list(shape),
                                    buffer.data_ptr())
        self.session.run_with_iobinding(binding)
        outputs = binding.get_outputs()
        present: list[Cache] = (
            list(outputs[1:]) if out is None else [BufferView(b, shape) for b in out]
        )
        return outputs[0].numpy(), present

    def empty_state(self, batch: int) -> DecoderState:
        """A state with no past (prefill)."""
        shape = (batch, self.kv.num_kv_heads, 0, self.kv.head_dim)
        past = [np.zeros(shape, dtype=self.dtype) for _ in self.past_names]
        return DecoderState(
            np.zeros((batch, 0), dtype=np.int64), np.zeros(batch, dtype=np.int64), past
        )

    def prefill(self, sequences: list[list[int]], state: DecoderState | None = None):
        """Left-pad the sequences and feed them (after ``state`` if given)."""
        ids, mask = pad_batch(sequences, self.pad_id, left=True)
        state = state if state is not None else self.empty_state(len(sequences))
        return self._run(ids, state, mask)

    def step(
        self, tokens: np.ndarray, state: DecoderState, out: list[ort.OrtValue] | None = None
    ):
        """Feed one token per row (``out``: preallocated buffers for the present cache)."""
        ids = tokens.reshape(-1, 1).astype(np.int64)
        return self._run(ids, state, np.ones_like(ids), out)

    def greedy(
        self,
        first_logits: np.ndarray,
        state: DecoderState,
        *,
        eos_id: int,
        max_new_tokens: int,
    ) -> tuple[list[list[int]], np.ndarray]:
        """Greedy decode from the logits after the prompt; finished rows stop.

        Returns the generated ids per row (EOS excluded) and each row's summed
        log-probability (EOS included when it was produced).
        """
        batch = first_logits.shape[0]
        generated: list[list[int]] = [[] for _ in range(batch)]
        logprob = np.zeros(batch, dtype=np.float64)
        rows = np.arange(batch)  # output row of each batch position; -1: finished, kept
        logits = first_logits
        buffers = None
        if self.cache_device is not None and max_new_tokens > 1:
            length = state.mask.shape[1] + max_new_tokens
            elements = batch * self.kv.num_kv_heads * length * self.kv.head_dim
            buffers = CacheBuffers(len(self.past_names), elements, self.dtype,
                                   self.cache_device)
        for step in range(max_new_tokens):
            tokens, chosen = greedy_pick(logits)
            live = rows >= 0
            logprob[rows[live]] += chosen[live]
            still = live & (tokens != eos_id)
            for row, token in zip(rows[still], tokens[still], strict=True):
                generated[row].append(int(token))
            if not still.any() or step == max_new_tokens - 1:
                break
            if not still.all():
                if self.compact_finished:
                    keep = np.flatnonzero(still)
                    rows, tokens, state = rows[keep], tokens[keep], state.take(keep)
                else:  # finished rows keep decoding; their tokens are ignored
                    rows = np.where(still, rows, -1)
            logits, state = self.step(tokens, state, buffers.next() if buffers else None)
        return generated, logprob

    def beam(
        self,
        first_logits: np.ndarray,
        state: DecoderState,
        *,
        eos_id: int,
        max_new_tokens: int,
        width: int,
        depth: int | None = None,
    ) -> list[list[tuple[list[int], float]]]:
        """Beam search of ``width`` beams per row from the logits after the prompt.

        Returns, per row, its finished sequences (EOS excluded) with their summed
        log-probabilities (EOS included), best first: at most ``width``; a beam still
        open after ``max_new_tokens`` ends there. Every step feeds only the open beams.
        With ``depth``, the beams open after that many tokens are continued greedily
        (each step of the beam gathers the whole cache by beam; greedy steps do not).
        """
        batch = first_logits.shape[0]
        logprobs = log_softmax(first_logits)
        top = top_k(logprobs, width)  # (B, k)
        done: list[list[tuple[list[int], float]]] = [[] for _ in range(batch)]
        # open beams: (row, tokens, logprob), and the state row each continues from
        parents = np.repeat(np.arange(batch), top.shape[1])
        open_beams = [(r, [int(t)], float(logprobs[r, t])) for r in range(batch) for t in top[r]]
        for step in range(max_new_tokens):
            still, keep = [], []
            for index, (row, tokens, lp) in enumerate(open_beams):
                if tokens[-1] == eos_id:
                    done[row].append((tokens[:-1], lp))
                elif step == max_new_tokens - 1:
                    done[row].append((tokens, lp))
                else:
                    still.append((row, tokens, lp))
                    keep.append(index)
            if not still:
                break
            state = state.take(parents[np.array(keep)])
            last = np.array([tokens[-1] for _, tokens, _ in still], dtype=np.int64)
            logits, state = self.step(last, state)
            if depth is not None and step + 1 >= depth:
                generated, logprob = self.greedy(logits, state, eos_id=eos_id,
                                                 max_new_tokens=max_new_tokens - step - 1)
                for (row, tokens, lp), more, extra in zip(still, generated, logprob,
                                                          strict=True):
                    done[row].append((tokens + more, lp + float(extra)))
                break
            logprobs = log_softmax(logits)
            expand = top_k(logprobs, width)
            per_row: dict[int, list[tuple[float, int, int]]] = {}
            for b, (row, _, lp) in enumerate(still):
                for t in expand[b]:
                    per_row.setdefault(row, []).append((lp + float(logprobs[b, t]), b, int(t)))
            open_beams, chosen = [], []
            for row, options in per_row.items():
                room = width - len(done[row])
                options.sort(key=lambda option: -option[0])
                for score, b, token in options[:max(room, 0)]:
                    open_beams.append((row, [*still[b][1], token], score))
                    chosen.append(b)
            parents = np.array(chosen, dtype=np.int64)
        return [sorted(found, key=lambda item: -item[1])[:width] for found in done]
