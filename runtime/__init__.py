"""mycelium.runtime: the torch-free serving runtime.

    from mycelium.runtime import Solver
    solver = Solver.load(artifacts=None, provider="auto")
    results = solver.solve(["question", ...])
"""

from .errors import ArtifactsError, InputError, MyceliumError
from .results import SolveResult, SolveTrace, Span

__all__ = ["Solver", "SolveResult", "SolveTrace", "Span", "MyceliumError", "ArtifactsError",
           "InputError"]


def __getattr__(name: str):
    # Solver pulls in onnxruntime; import it on first use so `import mycelium.runtime` stays light.
    if name == "Solver":
        from .solver import Solver

        return Solver
    raise AttributeError(name)
