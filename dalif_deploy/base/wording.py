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
