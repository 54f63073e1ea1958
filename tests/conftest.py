"""Shared fixtures: the seed and the device every test draws from.

* ``global_seed``: 42 by default. ``DROPOUTLAB_TEST_SEED=7`` runs the suite with seed 7 and
  ``DROPOUTLAB_TEST_SEED=all`` runs every seeded test for seeds 0..99. Statistical tests are
  written to pass for any seed in 0..99, with the false-failure rate stated in each test.
* ``device``: ``cpu`` unless ``TORCH_DEVICE`` says otherwise (e.g. ``TORCH_DEVICE=cuda``).
  Tests marked ``gpu`` are skipped when CUDA is absent.
"""

from __future__ import annotations

import os

import pytest
import torch


def _seeds() -> list[int]:
    raw = os.environ.get("DROPOUTLAB_TEST_SEED", "42")
    if raw == "all":
        return list(range(100))
    return [int(part) for part in raw.split(",")]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "global_seed" in metafunc.fixturenames:
        metafunc.parametrize("global_seed", _seeds(), ids=lambda s: f"seed{s}")


@pytest.fixture
def device() -> torch.device:
    """The device under test (``TORCH_DEVICE``, default ``cpu``)."""
    return torch.device(os.environ.get("TORCH_DEVICE", "cpu"))


@pytest.fixture
def generator(global_seed: int, device: torch.device) -> torch.Generator:
    """A generator on the test device seeded with ``global_seed``."""
    return torch.Generator(device=device).manual_seed(global_seed)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
