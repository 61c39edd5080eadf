"""Find the candidate quantities of a problem text: a plain character/word scanner.

Values always come from the runtime's own parser,
:func:`mycelium.runtime.quantities.parse_quantity`, so a span's training value is exactly
what the runtime will read from the same text.

1. *Words*: runs of non-whitespace characters, with their character offsets. Surrounding
   punctuation (``, . ? ! ( ) : ; " '`` brackets and curly quotes) is stripped from both ends;
   ``$``/``%`` attached to a number stay inside.
2. *Pieces*: a word that does not parse as a whole is cut into pieces at ``-`` and ``/``
   and between a digit and a letter ("5-year-old" -> "5" "year" "old", "5kg" -> "5" "kg",
   "$5/hour" -> "$5" "hour"); a digit run followed by an ordinal suffix (1st, 2nd, 3rd, 4th)
   is not a quantity.
3. *Windows*: from left to right, the longest window of 1..4 consecutive pieces that
   parses wins ("twenty-five", "a dozen", "3 million", "$1,200"), then scanning resumes
   after it, so spans never overlap. A window of several pieces must also be a well-formed
   numeral (:func:`_well_formed`): ``parse_quantity`` is lenient ("two three" -> 5), and the
   segmenter must not learn to merge neighbouring numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

# the number words are the runtime's lexicon (one source): units, tens and scales
from ..quantities import SCALES, TENS, UNITS, parse_quantity

LEADING_PUNCTUATION = "([{\"'“‘«"
TRAILING_PUNCTUATION = ",.?!):;]}\"'”’»…"
ORDINAL_SUFFIXES = ("st", "nd", "rd", "th")
MAX_WINDOW = 4  # pieces; 4 only matters for numerals like "one hundred and twenty"
# the words "a"/"an" may head ("a dozen", "a hundred")
_ARTICLE_HEADS = {"dozen", "half", "quarter", "hundred", "thousand", "million", "billion",
                  "couple", "pair"}


@dataclass(frozen=True)
class TextQuantity:
    """A candidate quantity span of the problem text."""

    start: int
    end: int
    text: str
    value: Fraction


def words(text: str) -> list[tuple[int, int]]:
    """(start, end) of each whitespace-separated word, surrounding punctuation stripped."""
    out = []
    i, length = 0, len(text)
    while i < length:
        if text[i].isspace():
            i += 1
            continue
        start = i
        while i < length and not text[i].isspace():
            i += 1
        end = i
        while start < end and text[start] in LEADING_PUNCTUATION:
            start += 1
        while end > start and text[end - 1] in TRAILING_PUNCTUATION:
            end -= 1
        if end > start:
            out.append((start, end))
    return out


def _split_word(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Pieces of a word that does not parse whole (see the module docstring)."""
    pieces: list[tuple[int, int]] = []
    piece_start = start
    i = start
    while i < end:
        char = text[i]
        if char in "-/":
            if i > piece_start:
                pieces.append((piece_start, i))
            piece_start = i + 1
        elif char.isalpha() and i > piece_start and text[i - 1].isdigit():
            letters_end = i
            while letters_end < end and text[letters_end].isalpha():
                letters_end += 1
            if text[i:letters_end].lower() not in ORDINAL_SUFFIXES:
                pieces.append((piece_start, i))
            piece_start = i
        i += 1
    if end > piece_start:
        pieces.append((piece_start, end))
    return pieces


def pieces(text: str) -> list[tuple[int, int]]:
    """Scanning units: words, cut into pieces when a word is not a numeral as a whole."""
    out = []
    for start, end in words(text):
        if parse_quantity(text[start:end]) is not None:
            out.append((start, end))
        else:
            out.extend(_split_word(text, start, end))
    return out


def _kind(token: str) -> str:
    if token in UNITS:
        return "unit"
    if token in TENS:
        return "tens"
    if token in SCALES:
        return "scale"
    if token in ("and", "dozen"):
        return token
    if token in _ARTICLE_HEADS:
        return "word"
    return "digits" if parse_quantity(token) is not None else "other"


_FOLLOWS = {  # kind -> kinds allowed right before it ("" = first token)
    "unit": ("", "tens", "scale", "and"),
    "tens": ("", "scale", "and"),
    "scale": ("", "unit", "tens", "digits", "scale"),
    "dozen": ("", "unit", "tens", "digits"),
    "and": ("scale",),
    "word": ("",),
    "digits": ("",),
}


def _well_formed(tokens: list[str]) -> bool:
    """Whether several words form one English numeral (not two neighbouring numbers)."""
    if tokens and tokens[0] in ("a", "an"):
        if len(tokens) < 2 or tokens[1] not in _ARTICLE_HEADS:
            return False
        tokens = tokens[1:]
    previous = ""
    for token in tokens:
        kind = _kind(token)
        if previous not in _FOLLOWS.get(kind, ()):
            return False
        previous = kind
    return previous != "and"


def _window_tokens(window: str) -> list[str]:
    text = window.lower()
    while text and text[0] in "$€£¥":
        text = text[1:]
    return [t for t in text.replace("-", " ").split() if t]


def scan_quantities(text: str) -> list[TextQuantity]:
    """Non-overlapping candidate quantities of ``text``, in text order."""
    units = pieces(text)
    out = []
    i = 0
    while i < len(units):
        found = None
        for size in range(min(MAX_WINDOW, len(units) - i), 0, -1):
            start, end = units[i][0], units[i + size - 1][1]
            window = text[start:end]
            value = parse_quantity(window)
            if value is None:
                continue
            if size > 1 or len(_window_tokens(window)) > 1:
                if not _well_formed(_window_tokens(window)):
                    continue
            found = (size, TextQuantity(start, end, window, value))
            break
        if found is None:
            i += 1
        else:
            out.append(found[1])
            i += found[0]
    return out
