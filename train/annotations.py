"""GSM8K's calculator annotations as exact steps: the code lives in the runtime,
:mod:`mycelium.runtime.gold.annotations` (pure Python, so that `mycelium-rt diagnose` needs
nothing of train/); these are its names as training imports them."""

from mycelium.runtime.gold.annotations import (
    ASSOCIATIVE,
    LEFT_CHAINS,
    OPERATORS,
    AnnotationError,
    Leaf,
    LiteralTest,
    Operand,
    RawStep,
    Ref,
    annotation_bounds,
    final_answer_text,
    find_annotations,
    normalise,
    parse_annotation,
    parse_number,
    parse_solution,
    plain_calculations,
)

__all__ = [
    "OPERATORS", "ASSOCIATIVE", "LEFT_CHAINS", "AnnotationError", "Leaf", "Ref", "Operand",
    "RawStep", "annotation_bounds", "find_annotations", "plain_calculations",
    "final_answer_text", "normalise", "parse_number", "LiteralTest", "parse_annotation",
    "parse_solution",
]
