"""Experiment: would the scorer gain from knowing the shape of the question's goal?

ORACLE features (read off the gold annotations, never available to the solver): whether a
candidate has the gold program's number of ``<<...>>`` steps (``steps``), whether its last
operation is the gold one's (``op``). A real one, free at serving (``pred_op``): the
classifier's log-probability for the candidate's last operation, read off its span-free
group and renormalized over the four operations (``empty_op.json``, written by
``empty-op``). Each is appended to the cached candidates' vectors and the scorer refitted
the shipped way (hidden 32, members 4, l2 0.01); it prints the dev picks and, with
``--folds 5``, the train cross-fitted picks. Measured in train/README.md ("Where the gold
readings stop ...").

    python docs/experiments/goal_features.py empty-op runs/empty_op.json
    python docs/experiments/goal_features.py fit runs/cand_base_train.jsonl \
        runs/cand_base_dev.jsonl --extra steps --extra op

The caches are `mycelium-train scorer --cache` files of the shipped default (the dev one
written by `mycelium.train.scorer.collect` and `write_cache` on the dev split).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import click
import numpy as np

import mycelium.runtime.verifier as verifier
import mycelium.train.scorer as scorer
from mycelium.train.annotations import AnnotationError, find_annotations
from mycelium.train.scorer import ProblemCandidates, fit, picked, read_cache

DATA = Path("../shared/data/gsm8k/train.jsonl")
SYMBOLS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
OPERATION_SYMBOLS = {"ADD": "+", "SUB": "-", "MUL": "*", "DIV": "/"}
UNREAD = -10.0  # log-probability of an operation the classifier does not name


def gold_shape(solution: str) -> tuple[int, str | None] | None:
    """(number of annotated steps, the last one's top-level operation) of a solution."""
    try:
        expressions = [body.split("=")[0] for body in find_annotations(solution)]
    except AnnotationError:
        return None
    if not expressions:
        return None
    try:
        node = ast.parse(expressions[-1].replace("x", "*").strip(), mode="eval").body
    except SyntaxError:
        return len(expressions), None
    return len(expressions), SYMBOLS.get(type(node.op)) if isinstance(node, ast.BinOp) else None


def candidate_shape(program: str) -> tuple[int, str | None]:
    """(steps, the last step's top-level operator) of a rendered candidate program."""
    lines = program.split("\n")[:-1]  # the last line is "#### answer"
    depth, symbol = 0, None
    for char in lines[-1].split(" = ")[0]:
        depth += (char == "(") - (char == ")")
        if depth == 0 and char in "+-*/" and symbol is None:
            symbol = char
    return len(lines), symbol


def extend(problems: list[ProblemCandidates], extra: tuple[str, ...], solutions: list[str],
           opinions: dict | None) -> None:
    """Append the ``extra`` features to every candidate's vector (in place)."""
    for problem in problems:
        gold = gold_shape(solutions[problem.id])
        if opinions is not None:
            logprobs = dict(zip(opinions["labels"], opinions["logprobs"][problem.id],
                                strict=True))
            real = {OPERATION_SYMBOLS[k]: v for k, v in logprobs.items()
                    if k in OPERATION_SYMBOLS}
            norm = float(np.logaddexp.reduce(list(real.values())))
        for vector, program in zip(problem.vectors, problem.programs, strict=True):
            steps, symbol = candidate_shape(program)
            for name in extra:
                if name == "steps":
                    vector.append(float(gold is not None and steps == gold[0]))
                elif name == "op":
                    vector.append(float(gold is not None and gold[1] is not None
                                        and symbol == gold[1]))
                else:
                    vector.append(real.get(symbol, UNREAD) - norm)


@click.group()
def main() -> None:
    """Goal-shape features for the answer scorer (experiment)."""


@main.command("empty-op")
@click.argument("out", type=click.Path(path_type=Path))
def empty_op(out: Path) -> None:
    """The shipped classifier's span-free group reading for every problem of DATA."""
    from mycelium.runtime.solver import Solver

    solver = Solver.load()
    questions = [json.loads(line)["question"] for line in DATA.open()]
    rows = []
    for start in range(0, len(questions), 64):
        chunk = questions[start : start + 64]
        logprobs = solver._classify_groups(chunk, [[] for _ in chunk],
                                           [(i, []) for i in range(len(chunk))])
        rows.extend(logprobs.tolist())
    out.write_text(json.dumps({"labels": list(solver.operations), "logprobs": rows}))


@main.command("fit")
@click.argument("train_cache", type=click.Path(exists=True, path_type=Path))
@click.argument("dev_cache", type=click.Path(exists=True, path_type=Path))
@click.option("--extra", type=click.Choice(["steps", "op", "pred_op"]), multiple=True)
@click.option("--opinions", type=click.Path(exists=True, path_type=Path),
              default=Path("runs/empty_op.json"), show_default=True)
@click.option("--folds", type=int, default=0, show_default=True)
def fit_command(train_cache: Path, dev_cache: Path, extra: tuple[str, ...], opinions: Path,
                folds: int) -> None:
    """Refit the scorer with the extra features; print dev (and cross-fitted) picks."""
    solutions = [json.loads(line)["answer"] for line in DATA.open()]
    table = json.loads(opinions.read_text()) if "pred_op" in extra else None
    train, dev = read_cache(train_cache), read_cache(dev_cache)
    extend(train, extra, solutions, table)
    extend(dev, extra, solutions, table)
    names = verifier.FEATURES + tuple(f"extra_{name}" for name in extra)
    verifier.FEATURES = scorer.FEATURES = names  # the experiment's wider vectors
    if folds > 1:
        right = 0
        for fold in range(folds):
            fitted = fit([p for k, p in enumerate(train) if k % folds != fold], l2=0.01,
                         hidden=32, members=4)
            right += sum(picked(p, fitted.logits(p.vectors)) == p.gold
                         for k, p in enumerate(train) if k % folds == fold and p.values)
        click.echo(f"{list(extra)} train cross-fitted {right}")
    fitted = fit(train, l2=0.01, hidden=32, members=4)
    right = sum(picked(p, fitted.logits(p.vectors)) == p.gold for p in dev if p.values)
    reach = sum(p.gold in p.values for p in dev)
    click.echo(f"{list(extra)} dev picks {right} (gold among the candidates: {reach})")


if __name__ == "__main__":
    main()
