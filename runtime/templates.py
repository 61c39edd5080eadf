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


def classifier_suffix(templates: Templates, group: Sequence[tuple[int, str]]) -> str:
    """Text appended to the problem for the operation classifier."""
    return templates.classifier.replace("{items}", group_items(templates, group))


def extractor_suffix(templates: Templates, group: Sequence[tuple[int, str]], op: str) -> str:
    """Text appended to the problem for the argument extractor, given the operation."""
    return templates.extractor.replace("{items}", group_items(templates, group)).replace(
        "{op}", op
    )
