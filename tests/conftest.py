"""Suite-wide rules.

Every test that starts Lava must carry ``@pytest.mark.lava`` (so ``-m "not lava"`` really skips
Lava): while an unmarked test sets up (its fixtures too, module-scoped ones included) and runs,
Lava is switched off through ``DALIF_DEPLOY_FORBID_LAVA`` (inherited by CLI subprocesses), so
an unmarked test that reaches a Lava run fails with that reason.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Test modules are imported by their base names (pytest's prepend mode, no __init__.py in the
# folders), and a few share builders by importing each other (`from test_program import
# small_program`): every test folder is on sys.path so such an import finds the one module
# object pytest collected. Base names are unique across folders.
for _folder in sorted(p for p in Path(__file__).parent.iterdir()
                      if p.is_dir() and p.name not in ("helpers", "__pycache__")):
    if str(_folder) not in sys.path:
        sys.path.append(str(_folder))

FORBID_LAVA_ENV = "DALIF_DEPLOY_FORBID_LAVA"


def _switch(item: pytest.Item) -> None:
    if item.get_closest_marker("lava") is None:
        os.environ[FORBID_LAVA_ENV] = "this test lacks @pytest.mark.lava"
    else:
        os.environ.pop(FORBID_LAVA_ENV, None)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _switch(item)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    _switch(item)


def pytest_unconfigure(config: pytest.Config) -> None:
    os.environ.pop(FORBID_LAVA_ENV, None)
