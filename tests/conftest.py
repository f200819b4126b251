"""Suite-wide rules.

Every test that starts Lava must carry ``@pytest.mark.lava`` (so ``-m "not lava"`` really skips
Lava): while an unmarked test sets up (its fixtures too, module-scoped ones included) and runs,
Lava is switched off through ``DALIF_DEPLOY_FORBID_LAVA`` (inherited by CLI subprocesses), so
an unmarked test that reaches a Lava run fails with that reason.

Test modules never import each other: what several share is in tests/helpers/ (builders) or
here (fixtures used in more than one folder).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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


@pytest.fixture(scope="session")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The shipped digits-cnn as a checkpoint, NIR graph, fixed-point program and ONNX graph
    (:func:`helpers.model_files.write_model_files`), made once per session."""
    from helpers.model_files import write_model_files

    return write_model_files(tmp_path_factory.mktemp("models"))
