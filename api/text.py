"""One check for free text that people type and the audit log keeps (reasons, key labels).

Text is refused when it holds a character that can hide or fake what a reader sees: C0 and C1
controls (NUL, ESC, CR, LF, TAB, DEL ...), other format characters (the bidirectional controls
U+202A-U+202E and U+2066-U+2069, the marks U+200E and U+200F, zero-width characters), line and
paragraph separators, and lone surrogates. Everything else printable is accepted.
"""

from __future__ import annotations

import unicodedata

REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
"""Unicode general categories refused: controls, format characters (bidi controls among them),
surrogates, line and paragraph separators."""


def refused_char(text: str) -> tuple[int, str] | None:
    """Return (position, character) of the first refused character of `text`, or None."""
    for i, ch in enumerate(text):
        if unicodedata.category(ch) in REFUSED_CATEGORIES:
            return i, ch
    return None


def check_text(text: str, what: str) -> str:
    """Return `text` when it holds no refused character; raise `ValueError` naming `what`, the
    character's code point and its position otherwise."""
    found = refused_char(text)
    if found is not None:
        i, ch = found
        raise ValueError(
            f"{what}: character U+{ord(ch):04X} at position {i} is not allowed "
            "(control, bidirectional or line-break characters)"
        )
    return text
