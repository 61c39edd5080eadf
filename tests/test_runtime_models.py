"""The onnxruntime runners: prefix KV reuse and batched decode match PyTorch."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from mycelium.runtime.solver import Solver  # noqa: E402

PROBLEMS = [
    "Tom has 12 apples and buys 7 more.",
    "A box holds 24 pens; a school buys 6 boxes and hands out 100 pens in total today.",
]
SUFFIXES = ["<sep> Q0=12<cls>", "<sep> Q0=24 Q1=6 Q2=100<cls>", "<sep> none<cls>"]


@pytest.fixture(scope="module")
def solver(fp32_export) -> Solver:
    return Solver.load(fp32_export.output, "cpu")


def _ids(solver: Solver, model: str, text: str) -> list[int]:
    return solver.tokenizers[model].encode_batch([text])[0].ids


def test_prefix_reuse_matches_one_full_pass(solver: Solver) -> None:
    runner = solver.classifier
    prefix = [_ids(solver, "classifier", p) for p in PROBLEMS]
    _, state = runner.prefill(prefix)
    rows = np.array([0, 1, 1, 0], dtype=np.int64)
    suffixes = [_ids(solver, "classifier", s) for s in (SUFFIXES + SUFFIXES[:1])[:4]]
    reused, _ = runner.prefill(suffixes, state.take(rows))
    pairs = zip(rows, suffixes, strict=True)
    full, _ = runner.prefill([prefix[r] + suffix for r, suffix in pairs])
    np.testing.assert_allclose(reused, full, atol=1e-4)


def test_classifier_matches_transformers(solver: Solver, tiny_checkpoint) -> None:
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        tiny_checkpoint / "classifier", use_safetensors=True
    ).eval()
    pairs = zip(PROBLEMS, SUFFIXES, strict=False)
    sequences = [_ids(solver, "classifier", p + s) for p, s in pairs]
    ours, _ = solver.classifier.prefill(sequences)
    with torch.inference_mode():
        for row, seq in enumerate(sequences):
            ref = model(torch.tensor([seq])).logits[0].numpy()
            np.testing.assert_allclose(ours[row], ref, atol=1e-4)


def test_greedy_decode_matches_transformers(solver: Solver, tiny_checkpoint) -> None:
    model = transformers.AutoModelForCausalLM.from_pretrained(
        tiny_checkpoint / "extractor", use_safetensors=True
    ).eval()
    prompts = [_ids(solver, "extractor", p + "<sep> Q0=12<op> ADD<args>") for p in PROBLEMS]
    logits, state = solver.extractor.prefill(prompts)
    eos = -1  # never stop early: compare a fixed number of steps
    generated, _ = solver.extractor.greedy(logits, state, eos_id=eos, max_new_tokens=6)
    with torch.inference_mode():
        for row, prompt in enumerate(prompts):
            ids = torch.tensor([prompt])
            ref = []
            for _ in range(6):
                nxt = int(model(ids).logits[0, -1].argmax())
                ref.append(nxt)
                ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
            assert generated[row] == ref


def test_finished_rows_stop_and_others_continue(solver: Solver) -> None:
    prompts = [_ids(solver, "extractor", p + "<sep> none<op> ADD<args>") for p in PROBLEMS]
    logits, state = solver.extractor.prefill(prompts)
    first = int(logits[0].argmax())  # make row 0 finish at once
    generated, logprob = solver.extractor.greedy(logits, state, eos_id=first, max_new_tokens=5)
    assert generated[0] == []
    assert all(token != first for token in generated[1])
    assert np.all(logprob <= 0)


@pytest.mark.parametrize("compact", [True, False])
def test_io_bound_cache_decodes_like_numpy(fp32_export, solver: Solver, compact: bool) -> None:
    """IO binding (cache kept as onnxruntime tensors) and keeping finished rows in the
    batch (what a device-resident cache does) give the same tokens and log-probabilities."""
    bound = Solver.load(fp32_export.output, "cpu", io_binding=True)
    assert bound.extractor.cache_device == "cpu" and solver.extractor.cache_device is None
    bound.extractor.compact_finished = compact
    prompts = [_ids(solver, "extractor", p + "<sep> Q0=12<op> SUB<args>") for p in PROBLEMS]
    logits, state = solver.extractor.prefill(prompts)
    eos = int(logits[0].argmax())  # row 0 finishes at once, row 1 goes on
    want = solver.extractor.greedy(logits, state, eos_id=eos, max_new_tokens=6)
    logits_b, state_b = bound.extractor.prefill(prompts)
    np.testing.assert_allclose(logits_b, logits, atol=1e-5)
    assert not isinstance(state_b.past[0], np.ndarray)  # the cache stayed an OrtValue
    got = bound.extractor.greedy(logits_b, state_b, eos_id=eos, max_new_tokens=6)
    assert got[0] == want[0] and want[0][0] == []
    np.testing.assert_allclose(got[1], want[1], atol=1e-4)


def test_io_bound_solver_gives_the_same_answers(fp32_export, solver: Solver) -> None:
    bound = Solver.load(fp32_export.output, "cpu", io_binding=True)
    questions = [*PROBLEMS, "Ann reads 3 books a week for 4 weeks and 2 more."]
    plain = [(r.answer_exact, r.error) for r in solver.solve(questions)]
    assert [(r.answer_exact, r.error) for r in bound.solve(questions)] == plain


def test_rows_per_call_respect_the_cache_budget(solver: Solver) -> None:
    from types import SimpleNamespace

    from mycelium.runtime.batching import KV_BUDGET_BYTES, MAX_ROWS_PER_CALL, rows_per_call
    from mycelium.runtime.manifest import KVCacheSpec

    state = solver.extractor.empty_state(2)
    state.mask = np.ones((2, 200), dtype=np.int64)
    suffix = solver.spec.max_suffix_tokens
    extractor = solver.specialist("extractor")
    short = solver.extractor.empty_state(2)
    short.mask = np.ones((2, 20), dtype=np.int64)
    assert extractor.rows_per_call(short, suffix, 12) == MAX_ROWS_PER_CALL  # tiny model
    tiny = extractor.runner.kv  # 200 cached tokens: the budget binds even on the tiny shape
    per_tiny = 2 * tiny.num_layers * tiny.num_kv_heads * tiny.head_dim * (200 + suffix + 12) * 4
    assert extractor.rows_per_call(state, suffix, 12) == min(MAX_ROWS_PER_CALL,
                                                             KV_BUDGET_BYTES // per_tiny)
    real_shape = SimpleNamespace(kv=KVCacheSpec(24, 2, 64, "float32"))  # Qwen2.5-0.5B cache
    assert rows_per_call(None, state, suffix, 12) == MAX_ROWS_PER_CALL  # no cache: no limit
    rows = rows_per_call(real_shape.kv, state, suffix, 12)
    per_row = 2 * 24 * 2 * 64 * (200 + solver.spec.max_suffix_tokens + 12) * 4
    assert rows == KV_BUDGET_BYTES // per_row and 1 <= rows < MAX_ROWS_PER_CALL


def test_preallocated_cache_buffers_are_reused_across_steps(fp32_export, solver: Solver) -> None:
    """IO-bound decode steps write the cache into two preallocated buffers in turn and
    give the same logits as plain numpy steps."""
    from mycelium.runtime.models import BufferView, CacheBuffers

    bound = Solver.load(fp32_export.output, "cpu", io_binding=True).extractor
    plain = solver.extractor
    prompts = [_ids(solver, "extractor", p + "<sep> Q0=12<op> MUL<args>") for p in PROBLEMS]
    logits_p, state_p = plain.prefill(prompts)
    logits_b, state_b = bound.prefill(prompts)
    kv = bound.kv
    length = state_b.mask.shape[1] + 3
    buffers = CacheBuffers(len(bound.past_names), 2 * kv.num_kv_heads * length * kv.head_dim,
                           bound.dtype, "cpu")
    pointers = set()
    for _ in range(3):
        tokens = logits_p.argmax(axis=-1)
        logits_p, state_p = plain.step(tokens, state_p)
        logits_b, state_b = bound.step(tokens, state_b, buffers.next())
        np.testing.assert_allclose(logits_b, logits_p, atol=1e-4)
        assert isinstance(state_b.past[0], BufferView)
        assert state_b.past[0].shape == state_p.past[0].shape
        np.testing.assert_allclose(state_b.past[0].numpy(), state_p.past[0], atol=1e-5)
        pointers.add(state_b.past[0].buffer.data_ptr())
    assert len(pointers) == 2  # ping-pong: step 3 wrote where step 1 did


def test_too_small_cache_buffers_fall_back_to_allocation(fp32_export, solver: Solver) -> None:
    from mycelium.runtime.models import BufferView, CacheBuffers

    bound = Solver.load(fp32_export.output, "cpu", io_binding=True).extractor
    prompts = [_ids(solver, "extractor", p + "<sep> none<op> ADD<args>") for p in PROBLEMS]
    logits, state = bound.prefill(prompts)
    tiny = CacheBuffers(len(bound.past_names), 8, bound.dtype, "cpu")
    logits_b, state_b = bound.step(logits.argmax(axis=-1), state, tiny.next())
    assert not isinstance(state_b.past[0], BufferView)  # onnxruntime allocated it instead
    logits_p, _ = solver.extractor.step(logits.argmax(axis=-1), state)
    np.testing.assert_allclose(logits_b, logits_p, atol=1e-4)


def _sequence_logprob(solver: Solver, prompt: list[int], tokens: list[int]) -> float:
    """Teacher-forced log-probability of ``tokens`` after ``prompt`` (one full pass each)."""
    from mycelium.runtime.models import log_softmax

    total = 0.0
    for k, token in enumerate(tokens):
        logits, _ = solver.extractor.prefill([prompt + tokens[:k]])
        total += float(log_softmax(logits)[0, token])
    return total


def test_a_beam_of_one_is_greedy(solver: Solver) -> None:
    prompts = [_ids(solver, "extractor", p + "<sep> Q0=12<op> MUL<args>") for p in PROBLEMS]
    logits, state = solver.extractor.prefill(prompts)
    eos = int(logits[1].argmax())  # row 1 ends at once, row 0 runs longer
    generated, logprob = solver.extractor.greedy(logits, state, eos_id=eos, max_new_tokens=4)
    found = solver.extractor.beam(logits, state, eos_id=eos, max_new_tokens=4, width=1)
    assert [[tokens for tokens, _ in row] for row in found] == [[g] for g in generated]
    np.testing.assert_allclose([row[0][1] for row in found], logprob, atol=1e-5)
    assert found[1] == [([], pytest.approx(float(logprob[1])))]


def test_beam_sequences_are_distinct_sorted_and_scored_by_the_model(solver: Solver) -> None:
    prompts = [_ids(solver, "extractor", p + "<sep> none<op> ADD<args>") for p in PROBLEMS]
    logits, state = solver.extractor.prefill(prompts)
    eos = solver.eos_id
    found = solver.extractor.beam(logits, state, eos_id=eos, max_new_tokens=3, width=3)
    assert len(found) == len(prompts)
    for prompt, row in zip(prompts, found, strict=True):
        assert 1 <= len(row) <= 3
        assert len({tuple(tokens) for tokens, _ in row}) == len(row)
        scores = [lp for _, lp in row]
        assert scores == sorted(scores, reverse=True)
        for tokens, lp in row:
            assert eos not in tokens
            # a sequence shorter than the limit ended with EOS, whose probability counts
            scored = tokens + [eos] if len(tokens) < 3 else tokens
            assert lp == pytest.approx(_sequence_logprob(solver, prompt, scored), abs=1e-4)


def test_a_beam_one_token_deep_is_the_first_token_branches(solver: Solver) -> None:
    """``depth=1``: the top first tokens, each continued greedily (``arg_readings``
    without ``arg_beam``), best first."""
    from mycelium.runtime.extract import branch_first_token

    prompts = [_ids(solver, "extractor", p + "<sep> Q0=12<op> SUB<args>") for p in PROBLEMS]
    logits, state = solver.extractor.prefill(prompts)
    eos = int(np.argsort(logits[0])[-2])  # row 0's second first token ends at once
    found = solver.extractor.beam(logits, state, eos_id=eos, max_new_tokens=4, width=3,
                                  depth=1)
    forced, branched, first = branch_first_token(logits, state, 3)
    generated, logprob = solver.extractor.greedy(forced, branched, eos_id=eos,
                                                 max_new_tokens=4)
    for row, beams in enumerate(found):
        expected = sorted(((generated[row * 3 + b], float(first[row * 3 + b]
                                                           + logprob[row * 3 + b]))
                           for b in range(3)), key=lambda item: -item[1])
        assert [tokens for tokens, _ in beams] == [tokens for tokens, _ in expected]
        np.testing.assert_allclose([lp for _, lp in beams], [lp for _, lp in expected],
                                   atol=1e-4)
    assert [] in [tokens for tokens, _ in found[0]]  # the branch that ended at once
