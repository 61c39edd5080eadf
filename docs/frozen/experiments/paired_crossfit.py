"""Experiment: are two searches' train candidates picked better by the scorer, paired?

`mycelium-train scorer --folds 5` reports one search's cross-fitted picks against the
default ranking. To compare two searches (or two sets of specialists) on the same train
problems, this fits the shipped scorer form (hidden 32, members 4, l2 0.01) fold by fold
on each candidate cache, records per problem whether the held-out pick is the gold value,
and prints both counts and the exact McNemar p of the problems that changed. The caches
must list the same problems in the same order (`mycelium-train scorer --cache` files of
the same data and split). Each cache's held-out results are kept next to it
(`CACHE.crossfit-FOLDS.json`, keyed by the cache's SHA-256), so a baseline compared again
is not refitted. Measured in train/README.md ("Groups that skip a span").

    python docs/experiments/paired_crossfit.py runs/cand_base_train.jsonl \
        runs/cand_gap1_train.jsonl

`--baseline-without FEATURE` (repeatable) zeroes those features' columns in the baseline's
candidates, so the same cache compares a feature set with and without them (a zeroed
column standardizes to a constant 0 that no weight can use: the scorer without it).

    python docs/experiments/paired_crossfit.py runs/cand_train.jsonl runs/cand_train.jsonl \
        --baseline-without is_step_mean --baseline-without args_mean

`--members N` averages N fits instead of the shipped 4 on the candidate side.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import click

from mycelium.runtime.compare import mcnemar_p
from mycelium.runtime.verifier import FEATURES
from mycelium.train.scorer import ProblemCandidates, fit, held_out_right, picked, read_cache

SHIPPED = {"l2": 0.01, "hidden": 32, "members": 4}  # the shipped scorer's form


def held_out(cache: Path, folds: int, without: tuple[str, ...] = (), members: int = 4
             ) -> tuple[list[str], list[bool]]:
    """The problems' ids and whether each held-out pick is the gold value, with the
    ``without`` features zeroed, the scorer an average of ``members`` fits (memoized per
    cache, zeroed set and form)."""
    form = {**SHIPPED, "members": members}
    digest = hashlib.sha256(cache.read_bytes()).hexdigest()
    zeroed = sorted(set(without))
    suffix = "".join(f"-{name}" for name in zeroed)
    suffix += f"-members{members}" if members != SHIPPED["members"] else ""
    memo = cache.with_name(f"{cache.name}.crossfit-{folds}{suffix}.json")
    if memo.exists():
        stored = json.loads(memo.read_text())
        if stored.get("sha256") == digest and stored.get("form") == form:
            return stored["ids"], stored["right"]
    problems = read_cache(cache)
    columns = [FEATURES.index(name) for name in zeroed]
    for problem in problems:
        for vector in problem.vectors:
            for column in columns:
                vector[column] = 0.0
    ids = [str(p.id) for p in problems]
    right = [bool(x) for x in held_out_right(problems, folds, **form)]
    memo.write_text(json.dumps({"sha256": digest, "form": form, "ids": ids,
                                "right": right}))
    return ids, right


def paired_line(new: list[bool], old: list[bool]) -> str:
    """``gained G, lost L, McNemar p P`` of per-problem rights ``new`` against ``old``."""
    gained = sum(now and not was for was, now in zip(old, new, strict=True))
    lost = sum(was and not now for was, now in zip(old, new, strict=True))
    return f"gained {gained}, lost {lost}, McNemar p {mcnemar_p(gained, lost):.3g}"


def shipped_held_out(cache: Path, problems: list[ProblemCandidates], folds: int
                     ) -> list[bool]:
    """:func:`held_out` of ``cache`` (the shipped form), checked to be ``problems``."""
    ids, right = held_out(cache, folds)
    if ids != [str(p.id) for p in problems]:
        raise SystemExit(f"the memoized cross-fit of {cache} is of other problems")
    return right


def shipped_dev_right(train: list[ProblemCandidates], dev: list[ProblemCandidates]
                      ) -> list[bool]:
    """Per dev problem: whether the shipped form fitted on ``train`` picks its gold value."""
    scorer = fit(train, **SHIPPED)
    return [bool(p.values) and picked(p, scorer.logits(p.vectors)) == p.gold for p in dev]


def print_paired(name: str, label: str, new: list[bool], old: list[bool]) -> None:
    """One line: ``label``'s right picks against the shipped form's, paired per problem."""
    print(f"{name}: {label} {sum(new)} vs shipped form {sum(old)} ({paired_line(new, old)})",
          flush=True)


@click.command()
@click.argument("baseline", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("candidate", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--folds", type=click.IntRange(2), default=5, show_default=True)
@click.option("--baseline-without", "without", multiple=True, type=click.Choice(FEATURES),
              help="A feature zeroed in the baseline's candidates (repeatable).")
@click.option("--members", type=click.IntRange(1), default=SHIPPED["members"],
              show_default=True, help="Fits averaged into the candidate side's scorer.")
def main(baseline: Path, candidate: Path, folds: int, without: tuple[str, ...],
         members: int) -> None:
    """Cross-fitted picks of two candidate caches of the same problems, paired."""
    before_ids, before = held_out(baseline, folds, without)
    after_ids, after = held_out(candidate, folds, members=members)
    if before_ids != after_ids:
        raise click.UsageError("the caches do not list the same problems in the same order")
    click.echo(f"{baseline}: {sum(before)}, {candidate}: {sum(after)}, "
               f"{paired_line(after, before)}")


if __name__ == "__main__":
    main()
