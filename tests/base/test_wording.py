"""Printed counts and percentages: one helper each, one mark for a missing value."""

import re

import pytest
from helpers import REPO_ROOT

from dalif_deploy.base.wording import MISSING, counted, percent


def test_counted():
    assert (counted(1, "epoch"), counted(2, "epoch"), counted(0, "process", "processes")) == (
        "1 epoch", "2 epochs", "0 processes")


@pytest.mark.parametrize(("args", "kwargs", "text"), [
    ((0.975,), {}, "97.50 %"),
    ((1.0,), {}, "100.00 %"),
    ((0.0,), {}, "0.00 %"),
    ((0.96512, ""), {}, "96.51"),  # a column whose header says %
    ((0.96512, "", 1), {}, "96.5"),
    ((0.96512,), {"digits": 1}, "96.5 %"),
    ((None,), {}, MISSING),
    ((None, ""), {}, MISSING),
])
def test_percent(args, kwargs, text):
    assert percent(*args, **kwargs) == text


def test_missing_is_a_hyphen():
    """Text, tables and the HTML report all show a value not measured as "-"."""
    assert MISSING == "-"


def test_no_module_formats_percentages_by_hand():
    """Every percentage goes through :func:`percent` (a second formatter would drift: there
    were four, with three marks for a missing value)."""
    by_hand = re.compile(r"def _pct\b|\{100 \* [^{}]*:[<>^]?\d*\.\d+f\}")
    found = [f"{p.relative_to(REPO_ROOT)}:{i}"
             for folder in ("dalif_deploy", "converters", "targets")
             for p in sorted((REPO_ROOT / folder).rglob("*.py"))
             for i, line in enumerate(p.read_text().splitlines(), 1) if by_hand.search(line)]
    assert not found, f"percentages formatted by hand (use base.wording.percent): {found}"
