"""The program writer's ONNX path on the tiny random Qwen2 of test_program_writer: export
with parity, the numpy/onnxruntime beam giving the PyTorch writer's programs, and a
runtime writer that never imports torch."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction as F
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from test_program_writer import QUESTION, cached  # noqa: E402, F401

from mycelium.runtime.equations import Sources  # noqa: E402
from mycelium.train.program_writer import fit, load_base  # noqa: E402

QUESTIONS = [QUESTION, "Sam has 3 apples and buys 5 more."]
SOURCES = [Sources((F(48), F(1, 2)), (F(2), F(60))), Sources((F(3), F(5)), (F(2), F(60)))]


@pytest.fixture(scope="module")
def exported(cached, tmp_path_factory: pytest.TempPathFactory  # noqa: F811
             ) -> tuple[Path, Path]:
    """The overfitted tiny writer's run and its fp32 export."""
    from mycelium.export.writer import export_writer

    _, _, run = cached
    fit(run, epochs=150, threads=1)
    out = export_writer(run, tmp_path_factory.mktemp("writer_onnx") / "writer")
    return run, out


def _fp32_writer(run: Path, monkeypatch: pytest.MonkeyPatch):
    """``Writer`` decoding in float32, its weights never rounded to bfloat16 (the exported
    graph's precision)."""
    from mycelium.train import writer_eval

    def fp32_base(folder: Path):
        model, tokenizer, config = load_base(folder)
        model.to = lambda *_args, **_kwargs: model  # Writer would cast it to bfloat16
        return model, tokenizer, config

    class Fp32Writer(writer_eval.Writer):
        def _logp(self, tokens, mask, cache):
            hidden = self.model.model(input_ids=tokens, attention_mask=mask,
                                      past_key_values=cache, use_cache=True
                                      ).last_hidden_state[:, -1]
            return torch.log_softmax((hidden @ self.top.head.T).float(), -1)

    with monkeypatch.context() as patch:
        patch.setattr(writer_eval, "load_base", fp32_base)
        return Fp32Writer(run)


def test_export_has_logit_parity(exported) -> None:
    _, out = exported
    spec = json.loads((out / "writer.json").read_text())
    assert {"writer.onnx", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    assert len(spec["char_ids"]) == len(spec["alphabet"]) + 1 == 18
    assert spec["num_layers"] == 2 and spec["num_kv_heads"] == 2 and spec["head_dim"] == 8
    assert spec["parity"]["max_abs_diff"] <= 1e-4


def test_onnx_beams_write_the_pytorch_programs(exported, monkeypatch) -> None:
    from mycelium.runtime.writer import OnnxWriter
    from mycelium.train.writer_eval import Writer

    run, out = exported
    onnx = OnnxWriter(out).beams(QUESTIONS, SOURCES, width=4)
    for reference, tolerance in ((_fp32_writer(run, monkeypatch), 1e-3), (Writer(run), 0.1)):
        with torch.no_grad():
            want = reference.beams(QUESTIONS, SOURCES, width=4)
        assert [[(a, t) for a, _, t in p] for p in onnx] == [[(a, t) for a, _, t in p]
                                                             for p in want]
        diffs = [abs(g[1] - w[1]) for gp, wp in zip(onnx, want, strict=True)
                 for g, w in zip(gp, wp, strict=True)]
        assert max(diffs) <= tolerance
    answer, score, text = onnx[0][0]
    assert (answer, text) == (F(72), "48/2=24\n48+24=72\n")
    assert score > -1.0


def test_the_runtime_writer_imports_no_torch(exported) -> None:
    _, out = exported
    script = (
        "import sys\n"
        "from fractions import Fraction as F\n"
        "from mycelium.runtime.equations import Sources\n"
        "from mycelium.runtime.writer import OnnxWriter\n"
        f"w = OnnxWriter({str(out)!r})\n"
        f"w.beams([{QUESTION!r}], [Sources((F(48), F(1, 2)), (F(2),))], width=2)\n"
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "print('clean')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "clean" in done.stdout
