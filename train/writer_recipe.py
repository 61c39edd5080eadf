"""`mycelium-train writer`: the program writer from a pinned base in one resumable command.

Each stage keeps what it wrote, so running the command again (in a later session, after
an interruption or a ``--minutes`` stop) continues where the last run stopped:

1. the base: a pinned name is fetched, verified and converted once (``train/base.py``,
   cached); ``--base-dir`` takes a checkpoint folder already converted;
2. the supervision: ``mycelium-train data`` with ``group_gap=1`` into ``RUN/data``;
3. the frozen lower layers' states over every training sequence (``RUN/cache``, shards);
4. the top layers (``RUN/state.pt`` every ``save_every`` steps, ``RUN/writer.pt`` at the
   end).

Then ``mycelium-export writer RUN -o ARTIFACTS --precision int8`` builds the served set.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DATA_SEARCH = ("group_gap=1",)  # the programs the writer learns: the default's search space


class RecipeError(ValueError):
    """A run folder that does not belong to these options (one line, for the CLI)."""


@dataclass(frozen=True)
class WriterRecipe:
    """What one writer run is built from."""

    out: Path
    data: Path  # GSM8K train jsonl (question, answer)
    base_name: str | None = "qwen2.5-coder-0.5b"  # a pinned base, unless base_dir is given
    base_dir: Path | None = None
    frozen_layers: int = 16
    epochs: int = 2
    minutes: float = 0.0
    threads: int = 2
    find_links: str | None = None


def _base(recipe: WriterRecipe, echo: Callable[[str], None]) -> Path:
    if recipe.base_dir is not None:
        return recipe.base_dir
    from .base import PINNED, default_base_dir, fetch_base

    assert recipe.base_name is not None
    folder = fetch_base(PINNED[recipe.base_name], default_base_dir(recipe.base_name),
                        recipe.find_links)
    echo(f"base: {recipe.base_name} verified, {folder}")
    return folder


def _supervision(recipe: WriterRecipe, echo: Callable[[str], None]) -> Path:
    folder = recipe.out / "data"
    problems = folder / "problems.jsonl"
    if (folder / "coverage.json").exists():
        echo(f"data: kept {folder}")
        return problems
    from mycelium.runtime.spec import SearchSpec, override_search

    from .data import build

    coverage = build(recipe.data, folder, search=override_search(SearchSpec(), DATA_SEARCH))
    train = coverage["splits"]["train"]
    echo(f"data: {train['problems']} train problems, aligned "
         f"{train['aligned_fraction']:.1%}, in {folder}")
    return problems


def _check_run(recipe: WriterRecipe, base: Path) -> None:
    """A frozen depth that leaves no layer to train, or a run folder started with another
    base or frozen depth, is refused, not mixed."""
    layers = json.loads((base / "config.json").read_text())["num_hidden_layers"]
    if not 0 <= recipe.frozen_layers < layers:
        raise RecipeError(f"--frozen-layers {recipe.frozen_layers} leaves none of the base's "
                          f"{layers} layers to train")
    config_path = recipe.out / "writer.json"
    if not config_path.exists():
        return
    config = json.loads(config_path.read_text())
    if Path(config["base"]).resolve() != base.resolve():
        raise RecipeError(f"{recipe.out} was started from the base {config['base']}, "
                          f"not {base}: use another --out")
    if config["frozen_layers"] != recipe.frozen_layers:
        raise RecipeError(f"{recipe.out} was started with --frozen-layers "
                          f"{config['frozen_layers']}, not {recipe.frozen_layers}: use "
                          "another --out")


def run_writer_recipe(recipe: WriterRecipe, echo: Callable[[str], None] = print) -> bool:
    """Run or continue every stage; returns whether ``RUN/writer.pt`` is complete."""
    import torch

    from .program_writer import build_cache, fit, read_examples

    torch.set_num_threads(recipe.threads)
    if recipe.epochs < 1:
        raise RecipeError(f"--epochs must be at least 1, not {recipe.epochs}")
    base = _base(recipe, echo)
    _check_run(recipe, base)
    problems = _supervision(recipe, echo)
    if not read_examples(problems, "train"):
        raise RecipeError(f"{recipe.data}: no train-split problem (the fixed split: lines "
                          "not divisible by 10) has an aligned program of the four "
                          "operations to learn from")
    build_cache(base, problems, recipe.out, recipe.frozen_layers)
    echo(f"cache: lower {recipe.frozen_layers} layers' states in {recipe.out / 'cache'}")
    done = fit(recipe.out, recipe.epochs, resume=True, threads=recipe.threads,
               minutes=recipe.minutes)
    if done:
        echo(f"next: mycelium-export writer {recipe.out} -o ARTIFACTS --precision int8")
    else:
        echo("stopped on --minutes: run the same command again to continue")
    return done
