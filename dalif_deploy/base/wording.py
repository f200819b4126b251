"""Counts and percentages in printed text: "1 epoch", "2 epochs", "97.50 %", and "-" for a value
that was not measured (the one mark for it, in text, tables and the HTML report alike)."""

from __future__ import annotations

#: how printed text shows a value that was not measured (or does not apply)
MISSING = "-"


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun``, plural (``plural`` or ``noun + "s"``) unless ``n`` is 1."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def percent(fraction: float | None, unit: str = " %", digits: int = 2) -> str:
    """``fraction`` (0.975) as a percentage (``"97.50 %"``), with ``digits`` decimals;
    ``unit=""`` where a column header already says %. :data:`MISSING` for None."""
    return MISSING if fraction is None else f"{100 * fraction:.{digits}f}{unit}"


def printable(text: object) -> str:
    """``text`` with every character that is not printable (newlines, carriage returns, tabs,
    escape sequences, Unicode line separators) written as its Python escape (``\\n``, ``\\x1b``,
    ``\\u2028``), so a name taken from the file system or a file can never start a line of its
    own (a forged ``error:`` line) or move the cursor. Every line the command line prints on
    stderr goes through it, and messages pass names through it (:func:`shown`)."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in s)


def shown(path: object) -> str:
    """A file name as a message shows it: :func:`printable`, and in quotes when it would
    otherwise be ambiguous (leading or trailing blanks, or characters that had to be
    escaped)."""
    s = str(path)
    out = printable(s)
    return repr(s) if out != s or s != s.strip() or not s else out
