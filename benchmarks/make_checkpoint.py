"""Write a random-weight Mycelium checkpoint (docs/ARCHITECTURE.md, checkpoint contract).

    python -m benchmarks.make_checkpoint --shape tiny|qwen2.5-0.5b -o DIR [--seed N]

The three specialists are built by the trainer's constructors (``mycelium.train.models``)
with random weights (``torch.manual_seed``) in the chosen shape, and share the trainer's
byte-level BPE recipe (``mycelium.train.tokenizer``) trained in-process on synthetic
sentences (no download). Used by the exporter's tests and by the benchmarks of the real
model size.
"""

from __future__ import annotations

import gc
import json
import random
from dataclasses import dataclass
from pathlib import Path

import click

from mycelium.runtime.spec import OPERATIONS, SEGMENTER_LABELS, SPECIAL_TOKENS, SolverSpec


@dataclass(frozen=True)
class Shape:
    """Model dimensions of one checkpoint shape."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    vocab_size: int | None  # None: the tokenizer's size
    max_position_embeddings: int
    rope_theta: float
    tokenizer_vocab: int  # target size of the trained BPE


SHAPES = {
    "tiny": Shape(64, 2, 4, 2, 128, None, 1024, 10000.0, 512),
    "qwen2.5-0.5b": Shape(896, 24, 14, 2, 4864, 151936, 32768, 1000000.0, 512),
}

_NAMES = ("Tom", "Ann", "Lee", "Maria", "Sam", "Priya", "John", "Chen", "Olga", "Ben", "Zoe",
          "Carlos", "Fatima", "Kenji", "Nadia", "Peter", "Ruth", "Omar", "Grace", "Ivan")
_ITEMS = ("apples", "pens", "books", "cookies", "marbles", "dollars", "miles", "boxes", "eggs",
          "tickets", "stickers", "pencils", "oranges", "cards", "shirts", "candles", "minutes",
          "hours", "pages", "bottles", "flowers", "students", "cupcakes", "stamps", "toys")
_VERBS = ("has", "buys", "sells", "gives away", "finds", "loses", "eats", "makes", "collects",
          "reads", "bakes", "plants", "earns", "spends", "shares", "packs", "counts", "orders")
_PLACES = ("store", "school", "farm", "market", "library", "garden", "bakery", "park", "office")


def synthetic_corpus(count: int = 400, seed: int = 0) -> list[str]:
    """Simple word-problem sentences with digits, and the group serialisations."""
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        name, item, verb = rng.choice(_NAMES), rng.choice(_ITEMS), rng.choice(_VERBS)
        place, other = rng.choice(_PLACES), rng.choice(_NAMES)
        a, b = rng.randint(0, 999), rng.randint(1, 99)
        lines.append(f"{name} {verb} {a} {item} at the {place}. Then {other} {verb} {b} more.")
        lines.append(f"How many {item} does {name} have after {b} days? {a / b:.2f} each.")
        lines.append(f"Each {item[:-1]} costs ${b}. {name} pays {a} cents for {b} {item}.")
        lines.append(f" Q0={a} {item} Q1={b} {item} {rng.choice(OPERATIONS)} R1 C{b}")
    return lines


def train_tokenizer(vocab_size: int, seed: int = 0):
    """The trainer's byte-level BPE (``mycelium.train.tokenizer``: mycelium.json's special
    tokens, the argument and operation tokens) trained on the synthetic corpus."""
    from mycelium.train.tokenizer import train_tokenizer as train_bpe

    return train_bpe(synthetic_corpus(seed=seed), vocab_size)


def make_checkpoint(shape: str, out: Path, seed: int = 0) -> Path:
    """Write a random checkpoint of the named shape into ``out``; returns ``out``."""
    import torch

    from mycelium.train.models import (
        BackboneSize,
        TokenIds,
        build_classifier,
        build_extractor,
        build_segmenter,
    )

    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r} (choose from {', '.join(SHAPES)})")
    dims = SHAPES[shape]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(dims.tokenizer_vocab, seed=seed)
    size = BackboneSize(dims.hidden_size, dims.num_hidden_layers, dims.num_attention_heads,
                        dims.num_key_value_heads, dims.intermediate_size,
                        dims.max_position_embeddings)
    tokens = TokenIds(tokenizer.token_to_id(SPECIAL_TOKENS["pad"]),
                      tokenizer.token_to_id(SPECIAL_TOKENS["eos"]),
                      dims.vocab_size or tokenizer.get_vocab_size(with_added_tokens=True))
    builders = (
        ("segmenter", lambda: build_segmenter(size, tokens, SEGMENTER_LABELS,
                                              rope_theta=dims.rope_theta)),
        ("classifier", lambda: build_classifier(size, tokens, OPERATIONS,
                                                rope_theta=dims.rope_theta)),
        ("extractor", lambda: build_extractor(size, tokens, rope_theta=dims.rope_theta)),
    )
    for offset, (name, build) in enumerate(builders):
        torch.manual_seed(seed + offset)
        model = build().eval()
        folder = out / name
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save(str(folder / "tokenizer.json"))
        del model
        gc.collect()  # one model in memory at a time (2 GB each at 0.5B, fp32)
    spec = SolverSpec().to_dict()
    (out / "mycelium.json").write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    return out


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--shape", type=click.Choice(sorted(SHAPES)), default="tiny", show_default=True,
              help="Model dimensions.")
@click.option("-o", "--output", "output", type=click.Path(path_type=Path), required=True,
              help="Checkpoint folder to write.")
@click.option("--seed", type=int, default=0, show_default=True, help="torch.manual_seed base.")
def main(shape: str, output: Path, seed: int) -> None:
    """Write a random-weight Mycelium checkpoint of the given shape."""
    make_checkpoint(shape, output, seed=seed)
    click.echo(f"wrote {shape} checkpoint to {output}")


if __name__ == "__main__":
    main()
