"""The checkpoint's `mycelium.json`: templates, grammar, constants and limits.

It is written by the trainer, copied verbatim into the artifacts manifest by the
exporter, and read by the runtime through :class:`SolverSpec`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from fractions import Fraction
from typing import Any

from mycelium.executor import DEFAULT_CONSTANTS as EXECUTOR_CONSTANTS
from mycelium.executor import OPERATIONS, format_fraction

from .calibration import ConfidenceCalibration
from .errors import ArtifactsError
from .verifier import AnswerScorer

SPEC_FORMAT_VERSION = 1
# OPERATIONS (the classifier's operation labels) is the executor's vocabulary, re-exported.
# Optional extra classifier label: "this group is no step of the program". Never extracted;
# the mass it takes lowers the other operations' log-probabilities, so candidates built
# from groups the classifier rejects rank lower.
REJECT = "NONE"
SEGMENTER_LABELS = ("O", "B-QTY", "I-QTY", "B-UNUSED", "I-UNUSED")
SPECIAL_TOKENS = {
    "pad": "<pad>",
    "eos": "<eos>",
    "sep": "<sep>",
    "cls": "<cls>",
    "op": "<op>",
    "args": "<args>",
}
# The executor's domain constants, as text (one source of truth: mycelium.executor).
DEFAULT_CONSTANTS = tuple(format_fraction(value) for value in sorted(EXECUTOR_CONSTANTS))


@dataclass(frozen=True)
class Templates:
    """How a span group is serialised after the problem text (see docs/ARCHITECTURE.md)."""

    group_item: str = " Q{index}={text}"  # one per span of the group ({text}: its text)
    empty_group: str = " none"  # a tail step that consumes no span
    classifier: str = "<sep>{items}<cls>"  # classifier suffix
    extractor: str = "<sep>{items}<op> {op}<args>"  # extractor suffix; the model writes args
    # written right after every quantity span of the classifier's and extractor's problem
    # text ("" = the text as is), so a group item can find its span by an identical token
    span_marker: str = ""
    # An encoder classifier (no KV cache) reads one text pair per group instead: the problem
    # with the group's spans wrapped in ``group_mark``, then the group's span texts joined
    # by spaces (``group_pair_empty`` for a step that consumes no span).
    group_mark: str = "[ {text} ]"
    group_pair_empty: str = "none"


# `mycelium-train fit --span-markers`: spans marked in the text, groups named by index only
# (measured no better than the default on dev: see train/README.md).
MARKED_TEMPLATES = Templates(group_item=" Q{index}", span_marker=" Q{index}")


@dataclass(frozen=True)
class SearchSpec:
    """Bounds of the candidate search."""

    max_group_size: int = 3  # spans per chunk
    # used spans a group may skip inside (another group reads them): (Q0, Q2) and (Q1)
    group_gap: int = 0
    max_candidates: int = 15  # candidate programs per problem
    max_spans: int = 12  # used spans beyond this are ignored (bounded search)
    used_flips: int = 2  # alternative used sets: the most uncertain spans flipped one at a time
    ops_per_group: int = 2  # top-k operations from the classifier tried per group
    min_op_prob: float = 0.0  # operations after the first need this probability to be extracted
    tail_templates: tuple[str, ...] = ("ACC_ADD", "ACC_SUB", "AVG", "DERIVED_MUL")
    permute_chunks: int = 4  # chunks may run in any order when a candidate has at most this many
    connected: bool = True  # every step's result must be used by a later step (else invalid)
    readings_per_group: int = 2  # a group's best (operation, arguments) readings tried
    arg_readings: int = 1  # per (group, operation): the extractor's top-k first tokens, each
    # continued greedily (k-best arguments; decode rows grow k-fold)
    # the arg_readings as a beam search's best argument sequences instead of the top first
    # tokens each continued greedily (a reading may then differ after its first token)
    arg_beam: bool = False
    learned_steps: int = 1  # span-free steps (readings of the empty group) a candidate may have
    # the span-free (tail) group, one per problem, may be read more widely (0: as any group)
    tail_ops: int = 0  # operations tried for it (0: ops_per_group)
    tail_arg_readings: int = 0  # first-token branches per operation (0: arg_readings)
    tail_readings: int = 0  # readings kept (0: readings_per_group)
    pool_temperature: float = 2.0  # the scorer pools exp(score / T) per answer (dev: 1.5-4 > 1)
    inversion_logprob: float = 0.0  # score per pair of chunks out of text order (dev: 0 best)

    def check(self) -> None:
        """Raise ValueError naming the first out-of-range setting."""
        if not 0 <= self.min_op_prob < 1:
            raise ValueError(f"min_op_prob must be in [0, 1), got {self.min_op_prob}")
        for name in ("ops_per_group", "max_group_size", "readings_per_group", "arg_readings",
                     "learned_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("tail_ops", "tail_arg_readings", "tail_readings"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 (as any group) or more, "
                                 f"got {getattr(self, name)}")
        if self.group_gap < 0:
            raise ValueError(f"group_gap must be 0 (consecutive spans) or more, "
                             f"got {self.group_gap}")
        if not self.pool_temperature > 0:
            raise ValueError(f"pool_temperature must be positive, got {self.pool_temperature}")


def group_breadth(search: SearchSpec, group: tuple[int, ...]) -> tuple[int, int, int]:
    """(operations tried, first-token branches per operation, readings kept) for a group:
    the ``tail_*`` settings for the span-free group where set, else the general ones."""
    if group:
        return search.ops_per_group, search.arg_readings, search.readings_per_group
    return (search.tail_ops or search.ops_per_group,
            search.tail_arg_readings or search.arg_readings,
            search.tail_readings or search.readings_per_group)


def _parse_setting(key: str, text: str, current: Any) -> Any:
    """One search setting from text, typed like its current value."""
    try:
        if isinstance(current, bool):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return text.lower() in ("true", "1")
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
        if isinstance(current, tuple):
            return tuple(item for item in text.split(",") if item)
    except ValueError:
        pass
    raise ArtifactsError(f"--search {key}={text}: expected a {type(current).__name__}")


def search_record(search: SearchSpec, *, changed_only: bool = False) -> dict[str, Any]:
    """The search block as written to JSON: the one writer of every stored search.

    Three files carry one: ``mycelium-train data``'s coverage.json (``changed_only``: the
    settings that differ from :class:`SearchSpec`'s defaults, i.e. the structure the gold
    programs were fitted to), the checkpoint's mycelium.json (``SolverSpec.to_dict``, every
    setting) and, after ``mycelium-train scorer --write --search``, the artifacts manifest's
    ``mycelium.search`` (every setting, those the scorer's candidates were collected under).
    The trainer copies coverage.json's into mycelium.json, the exporter copies mycelium.json
    verbatim into the manifest, and the runtime reads only the manifest's: it is
    authoritative (``mycelium-rt --search`` overrides it for one run, never stored).
    """
    record = asdict(search)
    if changed_only:
        default = SearchSpec()
        record = {name: value for name, value in record.items()
                  if value != getattr(default, name)}
    return record


def search_from_record(raw: Mapping[str, Any]) -> SearchSpec:
    """The :class:`SearchSpec` of a search block written by :func:`search_record` (missing
    settings take their defaults); raises TypeError or ValueError when it does not
    validate."""
    settings = {key: tuple(value) if isinstance(value, list) else value
                for key, value in dict(raw).items()}
    search = SearchSpec(**settings)
    search.check()
    return search


def override_search(search: SearchSpec, settings: Iterable[str]) -> SearchSpec:
    """``search`` with ``KEY=VALUE`` settings applied (e.g. ``permute_chunks=1``)."""
    names = {f.name for f in fields(SearchSpec)}
    changes = {}
    for setting in settings:
        key, sep, text = setting.partition("=")
        key = key.strip()
        if not sep or key not in names:
            choices = ", ".join(sorted(names))
            raise ArtifactsError(
                f"--search {setting!r}: expected KEY=VALUE with KEY one of {choices}"
            )
        changes[key] = _parse_setting(key, text.strip(), getattr(search, key))
    out = replace(search, **changes)
    try:
        out.check()
    except ValueError as exc:
        raise ArtifactsError(f"--search: {exc}") from None
    return out


ANSWER_CLASSES = ("nonnegative_integer", "negative_integer", "fraction")
# log P(class of the gold answer), add-one smoothed, fitted by `mycelium-train fit` on the
# train split's final answers (GSM8K train: 6,722 of 6,725 are non-negative integers)
DEFAULT_ANSWER_PRIOR = {
    "nonnegative_integer": -0.000743,
    "negative_integer": -7.427739,
    "fraction": -8.814033,
}


def answer_class(value: Fraction) -> str:
    """Which class of :data:`ANSWER_CLASSES` an exact answer falls in."""
    if value.denominator != 1:
        return "fraction"
    return "nonnegative_integer" if value >= 0 else "negative_integer"


def fit_answer_prior(answers: Iterable[Fraction]) -> dict[str, float]:
    """Add-one smoothed log-probabilities of the answer classes."""
    counts = dict.fromkeys(ANSWER_CLASSES, 1)
    for value in answers:
        counts[answer_class(value)] += 1
    total = sum(counts.values())
    return {name: round(math.log(count / total), 6) for name, count in counts.items()}


@dataclass(frozen=True)
class WriterSettings:
    """How a program writer's set reads a problem and searches its programs (the
    ``writer`` section of mycelium.json; the writer model's labels are the grammar)."""

    prompt: str  # the problem as the writer reads it, with ``{question}``
    beam: int = 6  # programs kept per problem at each character
    max_chars: int = 90  # characters of a program, the executor's included
    problems_per_call: int = 8  # problems whose beams advance together (bounds the cache)
    max_prompt_tokens: int = 1024  # a longer prompt is answered with an error record

    def __post_init__(self) -> None:
        if "{question}" not in self.prompt:
            raise ValueError("writer.prompt must hold {question}")
        if min(self.beam, self.max_chars, self.problems_per_call, self.max_prompt_tokens) < 1:
            raise ValueError("writer.beam, max_chars, problems_per_call and max_prompt_tokens "
                             "must be >= 1")


@dataclass(frozen=True)
class SolverSpec:
    """Everything the runtime must know that no model config says."""

    format_version: int = SPEC_FORMAT_VERSION
    operations: tuple[str, ...] = OPERATIONS
    segmenter_labels: tuple[str, ...] = SEGMENTER_LABELS
    special_tokens: dict[str, str] = field(default_factory=lambda: dict(SPECIAL_TOKENS))
    templates: Templates = field(default_factory=Templates)
    grammar: str = "mycelium-args-v1"  # extractor output grammar (runtime/grammar.py)
    quantity_grammar: str = "en-numerals-v1"  # span text -> value (runtime/quantities.py)
    constants: tuple[str, ...] = DEFAULT_CONSTANTS
    max_problem_tokens: int = 256
    max_suffix_tokens: int = 64
    max_new_tokens: int = 12
    search: SearchSpec = field(default_factory=SearchSpec)
    answer_prior: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_ANSWER_PRIOR))
    answer_scorer: AnswerScorer | None = None  # learned candidate scorer (runtime/verifier.py)
    # P(right) of an answer picked by answer_scorer (runtime/calibration.py)
    confidence_calibration: ConfidenceCalibration | None = None
    writer: WriterSettings | None = None  # a program writer's set (runtime/write.py)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the content of mycelium.json)."""
        data = asdict(self)
        data["search"] = search_record(self.search)
        if self.writer is None:  # only a program writer's set has the section
            del data["writer"]
        return data

    @classmethod
    def from_dict(cls, data: Any) -> SolverSpec:
        """Validate a decoded mycelium.json; unknown keys are ignored."""
        if not isinstance(data, dict):
            raise ArtifactsError("mycelium.json: expected a JSON object")
        version = data.get("format_version")
        if version != SPEC_FORMAT_VERSION:
            raise ArtifactsError(f"mycelium.json: unsupported format_version {version!r}")
        try:
            templates = Templates(**data.get("templates", {}))
            search = search_from_record(data.get("search", {}))
            kwargs = {
                key: data[key]
                for key in ("grammar", "quantity_grammar", "max_problem_tokens",
                            "max_suffix_tokens", "max_new_tokens")
                if key in data
            }
            for key in ("operations", "segmenter_labels", "constants"):
                if key in data:
                    kwargs[key] = tuple(str(x) for x in data[key])
            if "answer_prior" in data:
                prior = {str(k): float(v) for k, v in data["answer_prior"].items()}
                if set(prior) != set(ANSWER_CLASSES) or any(v > 0 for v in prior.values()):
                    raise ValueError("answer_prior needs a log-probability per answer class")
                kwargs["answer_prior"] = prior
            if data.get("answer_scorer") is not None:
                kwargs["answer_scorer"] = AnswerScorer.from_dict(data["answer_scorer"])
            if data.get("confidence_calibration") is not None:
                if "answer_scorer" not in kwargs:
                    raise ValueError("confidence_calibration calibrates an answer_scorer's "
                                     "picks: it needs one")
                kwargs["confidence_calibration"] = ConfidenceCalibration.from_dict(
                    data["confidence_calibration"])
            if data.get("writer") is not None:
                kwargs["writer"] = WriterSettings(**data["writer"])
            if "special_tokens" in data:
                special = data["special_tokens"]
                kwargs["special_tokens"] = {str(k): str(v) for k, v in special.items()}
            spec = cls(format_version=version, templates=templates, search=search, **kwargs)
        except (TypeError, ValueError, AttributeError) as exc:
            raise ArtifactsError(f"mycelium.json: invalid field ({exc})") from None
        if spec.grammar != "mycelium-args-v1":
            raise ArtifactsError(f"mycelium.json: unknown grammar {spec.grammar!r}")
        if spec.quantity_grammar != "en-numerals-v1":
            raise ArtifactsError(
                f"mycelium.json: unknown quantity grammar {spec.quantity_grammar!r}"
            )
        return spec
