"""Fixtures of the converter tests."""

from __future__ import annotations

import pytest
from helpers.foreign_exported import N

from dalif_deploy.cli import main
from dalif_deploy.datasets.loaders import load_dataset


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    """digits-events (T = 8): the first N test samples and their .npz from `dataset`, and 300
    training samples (for the prototype weights)."""
    d = tmp_path_factory.mktemp("data")
    assert main(["dataset", "digits-events", "-o", str(d / "test.npz")]) == 0
    assert main(["dataset", "digits-events", "--split", "train", "-o",
                 str(d / "train.npz")]) == 0
    return (load_dataset("digits-events").head(N), d / "test.npz",
            load_dataset("digits-events", "train").head(300), d / "train.npz")
