"""Domain exceptions of the runtime; only the CLI layer turns them into exit codes."""


class MyceliumError(Exception):
    """Base class of every error a user can cause (bad artifacts, bad input)."""


class ArtifactsError(MyceliumError):
    """The artifacts folder is missing, invalid or tampered with."""


class InputError(MyceliumError):
    """An input record cannot be solved (bad JSON, missing question, ...)."""
