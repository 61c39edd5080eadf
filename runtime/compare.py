"""How sure a dev figure is: a confidence interval, and a paired test against a baseline.

At a few percent accuracy on 748 problems, two training runs or two settings often
differ by a handful of problems; these say whether such a difference means anything.
"""

from __future__ import annotations

import math
from typing import Any

from .errors import InputError


def wilson_interval(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of an accuracy (95 % for the default ``z``)."""
    if total <= 0:
        return 0.0, 0.0
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_p(gained: int, lost: int) -> float:
    """Exact two-sided McNemar p-value: the chance of a split at least this uneven of the
    problems that changed, if either side were as likely to win each."""
    n = gained + lost
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(0, min(gained, lost) + 1)) / 2**n
    return min(1.0, 2 * tail)


def _correct_by_id(report: dict[str, Any], name: str) -> dict[str, bool]:
    problems = report.get("problems") if isinstance(report, dict) else None
    if not isinstance(problems, list):
        raise InputError(f"{name}: not a diagnose report (no 'problems' list)")
    return {str(p.get("id")): p.get("stage") == "correct" for p in problems}


def compare_reports(baseline: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """Paired comparison of two diagnose reports over the same problems."""
    before = _correct_by_id(baseline, "baseline report")
    after = _correct_by_id(current, "report")
    if set(before) != set(after):
        raise InputError(
            f"the reports cover different problems ({len(before)} and {len(after)} ids, "
            f"{len(set(before) ^ set(after))} not in both)"
        )
    gained = sum(after[i] and not before[i] for i in after)
    lost = sum(before[i] and not after[i] for i in after)
    return {
        "baseline_correct": sum(before.values()),
        "correct": sum(after.values()),
        "gained": gained,
        "lost": lost,
        "mcnemar_p": round(mcnemar_p(gained, lost), 4),
    }
