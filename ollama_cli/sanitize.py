"""Text from outside (a backend's error, a job's name) made safe to store, log and show:
one line, no control characters or terminal escapes, bounded length."""

from __future__ import annotations

import unicodedata

# Control (escape sequences, carriage returns), format (bidi overrides, zero-width) and
# lone surrogates (which cannot even be encoded): none of them belongs in one line of text.
_HIDDEN = frozenset({"Cc", "Cf", "Cs"})


def one_line(text: str, limit: int) -> str:
    """`text` as one line of at most `limit` characters: every run of whitespace and
    hidden characters becomes one space, and a longer text ends in `…`."""
    head = text[: limit * 4]  # enough to fill `limit` after spaces collapse; never read 10 MB
    shown = "".join(" " if unicodedata.category(ch) in _HIDDEN else ch for ch in head)
    line = " ".join(shown.split())
    return line if len(line) <= limit and len(head) == len(text) else line[: limit - 1] + "…"


def printable(text: str) -> str:
    """`text` whole, its line breaks and tabs kept and every other hidden character as a
    space: the user's own text (a prompt) shown on a terminal that must not obey it."""
    return "".join(ch if ch in "\n\t" or unicodedata.category(ch) not in _HIDDEN else " " for ch in text)
