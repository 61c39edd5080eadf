"""mycelium.executor: the exact symbolic executor for Mycelium programs.

Programs are short lists of typed steps (see docs/ARCHITECTURE.md, "Programs");
``execute`` runs them with exact rationals under strict bounds and never raises.
"""

from .engine import execute
from .limits import Limits
from .numbers import format_fraction, parse_number
from .program import (
    COMMUTATIVE,
    DEFAULT_CONSTANTS,
    OPERATIONS,
    TEMPLATES,
    Arg,
    Program,
    Step,
    canonical_args,
)
from .results import ExecutionError, ExecutionResult, StepTrace

__all__ = [
    "COMMUTATIVE",
    "DEFAULT_CONSTANTS",
    "OPERATIONS",
    "TEMPLATES",
    "canonical_args",
    "Arg",
    "ExecutionError",
    "ExecutionResult",
    "Limits",
    "Program",
    "Step",
    "StepTrace",
    "execute",
    "format_fraction",
    "parse_number",
]
