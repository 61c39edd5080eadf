"""Parse the text of a quantity span into its exact value (grammar `en-numerals-v1`).

The segmenter decides *which* characters are a quantity; this module only reads
the numeral it marked, the way `int("48")` reads digits. The grammar:

    quantity := [currency] number [unit-suffix]
    number   := digits ("," digits)* ["." digits] | digits "/" digits | words
    words    := English cardinal numerals ("twenty-five", "a hundred", "3 million"),
                the multiplicative words "half", "quarter", "dozen", "twice", "double",
                "triple", "thrice", "pair", "couple", optionally preceded by "a"/"an"

Anything else yields ``None`` (the runtime then eliminates candidates that use it).
"""

from __future__ import annotations

from fractions import Fraction

MAX_QUANTITY_CHARS = 64
_CURRENCY = "$€£¥"
_SUFFIXES = ("%", "¢")
# The number-word lexicon (the one source: the gold scan reads it too)
UNITS: dict[str, int] = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19,
}
TENS: dict[str, int] = {
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
    "eighty": 80, "ninety": 90,
}
SCALES: dict[str, int] = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9}
_WORD_VALUES = {
    "half": Fraction(1, 2), "quarter": Fraction(1, 4), "dozen": Fraction(12), "twice": Fraction(2),
    "double": Fraction(2), "triple": Fraction(3), "thrice": Fraction(3), "pair": Fraction(2),
    "couple": Fraction(2), "once": Fraction(1),
}
_ARTICLES = ("a", "an")


def _parse_digits(text: str) -> Fraction | None:
    """Digits with thousands commas and an optional decimal part, or a fraction a/b."""
    if "/" in text:
        numerator, _, denominator = text.partition("/")
        top, bottom = _parse_digits(numerator), _parse_digits(denominator)
        if top is None or bottom is None or bottom == 0 or "/" in denominator:
            return None
        return top / bottom
    whole, dot, decimals = text.partition(".")
    if dot and (not decimals or not decimals.isascii() or not decimals.isdigit()):
        return None
    groups = whole.split(",")
    if not whole and decimals:
        groups = ["0"]
    elif not whole or not all(group.isascii() and group.isdigit() for group in groups):
        return None
    if len(groups) > 1 and (
        not groups[0] or len(groups[0]) > 3 or any(len(group) != 3 for group in groups[1:])
    ):
        return None
    value = Fraction(int("".join(groups)))
    if decimals:
        value += Fraction(int(decimals), 10 ** len(decimals))
    return value


def _parse_words(words: list[str]) -> Fraction | None:
    """English cardinals and multiplicative words."""
    if len(words) > 1 and words[0] in _ARTICLES:
        words = ["one", *words[1:]] if words[1] in SCALES else words[1:]
    if not words:
        return None
    if len(words) == 1 and words[0] in _WORD_VALUES:
        return _WORD_VALUES[words[0]]
    if len(words) == 2 and words[1] == "dozen":
        count = _parse_words(words[:1]) if words[0] not in _WORD_VALUES else None
        return None if count is None else count * 12
    total, current, seen = 0, 0, False
    for word in words:
        if word == "and" and seen:
            continue
        number = _parse_digits(word)
        if number is not None and not seen:
            current, seen = number, True
        elif word in UNITS:
            current, seen = current + UNITS[word], True
        elif word in TENS:
            current, seen = current + TENS[word], True
        elif word in SCALES and seen:
            scale = SCALES[word]
            if scale == 100:
                current *= scale
            else:
                total, current = total + current * scale, 0
        else:
            return None
    return Fraction(total + current) if seen else None


def parse_quantity(text: str) -> Fraction | None:
    """Exact value of a quantity span's text, or ``None`` if it is not a numeral."""
    if not isinstance(text, str):
        return None
    text = text.strip().lower()
    if not text or len(text) > MAX_QUANTITY_CHARS:
        return None
    text = text.lstrip(_CURRENCY).rstrip(".,;:!?")
    for suffix in _SUFFIXES:
        if text.endswith(suffix):
            text = text[: -len(suffix)].rstrip()
    negative = text.startswith("-") and len(text) > 1 and text[1].isdigit()
    if negative:
        text = text[1:]
    value = _parse_digits(text)
    if value is None:
        words = []
        for word in text.split():
            parts = word.split("-")
            words.extend(parts if len(parts) > 1 and all(p.isalpha() for p in parts) else [word])
        value = _parse_words(words)
    if value is None:
        return None
    return -value if negative else value
