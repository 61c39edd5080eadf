"""Serialise a span group into the classifier's and the extractor's input suffix.

The problem text is tokenized on its own and the suffix on its own, so a
problem's token ids (and KV cache) are shared by all of its groups. Both the
trainer and the runtime build inputs only through these functions.
"""

from __future__ import annotations

from collections.abc import Sequence

from .spec import Templates


def group_items(templates: Templates, group: Sequence[tuple[int, str]]) -> str:
    """The items text of a group of ``(span index, span text)`` pairs, in order."""
    if not group:
        return templates.empty_group
    items = []
    for index, text in group:
        item = templates.group_item.replace("{index}", str(index))
        items.append(item.replace("{text}", " ".join(text.split())))
    return "".join(items)


def marked_problem(templates: Templates, question: str,
                   spans: Sequence[tuple[int, int]]) -> str:
    """The problem text the classifier and the extractor read: ``templates.span_marker``
    written right after each quantity span (character ``(start, end)``, in text order; the
    marker's index is the span's rank, as in ``Q<i>`` arguments)."""
    if not templates.span_marker:
        return question
    pieces, last = [], 0
    for index, (_, end) in enumerate(spans):
        pieces.append(question[last:end])
        pieces.append(templates.span_marker.replace("{index}", str(index)))
        last = end
    pieces.append(question[last:])
    return "".join(pieces)


def group_pair(templates: Templates, question: str, spans: Sequence[tuple[int, int]],
               group: Sequence[tuple[int, str]]) -> tuple[str, str]:
    """An encoder classifier's input for one group: the problem text with the group's spans
    (character ``(start, end)`` of every quantity, in text order; the group names them by
    rank) wrapped in ``templates.group_mark``, and the group's span texts."""
    chosen = {index for index, _ in group}
    pieces, last = [], 0
    for index, (start, end) in enumerate(spans):
        if index in chosen:
            pieces.append(question[last:start])
            pieces.append(templates.group_mark.replace("{text}", question[start:end]))
            last = end
    pieces.append(question[last:])
    items = " ".join(text for _, text in group) or templates.group_pair_empty
    return "".join(pieces), items


def classifier_suffix(templates: Templates, group: Sequence[tuple[int, str]]) -> str:
    """Text appended to the problem for the operation classifier."""
    return templates.classifier.replace("{items}", group_items(templates, group))


def extractor_suffix(templates: Templates, group: Sequence[tuple[int, str]], op: str) -> str:
    """Text appended to the problem for the argument extractor, given the operation."""
    return templates.extractor.replace("{items}", group_items(templates, group)).replace(
        "{op}", op
    )
