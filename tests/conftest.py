"""Shared fixtures: the seed, the device and the dropout backend every test draws from.

* ``global_seed``: 42 by default. ``DROPOUTLAB_TEST_SEED=7`` runs the suite with seed 7 and
  ``DROPOUTLAB_TEST_SEED=all`` runs every seeded test for seeds 0..99. Statistical tests are
  written to pass for any seed in 0..99, with the false-failure rate stated in each test.
* ``device``: ``cpu`` unless ``TORCH_DEVICE`` says otherwise (e.g. ``TORCH_DEVICE=cuda``).
  Tests marked ``gpu`` are skipped when CUDA is absent.
* ``dropout_backend``: every backend that can run here — ``"torch"`` always, ``"native"`` when
  :func:`dropoutlab.kernels.available` says the fast CPU kernels are built — selected with
  :func:`dropoutlab.backend.use_backend` for the duration of the test. Every test of randomness
  takes it, so each backend passes the same tests unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

from dropoutlab import backend, kernels


def _seeds() -> list[int]:
    """Seeds from ``DROPOUTLAB_TEST_SEED``: ``all`` (0..99), a comma list, or 42."""
    raw = os.environ.get("DROPOUTLAB_TEST_SEED", "42")
    if raw == "all":
        return list(range(100))
    return [int(part) for part in raw.split(",")]


def _backends() -> list[str]:
    """``torch``, plus ``native`` when the native kernels are built on this machine."""
    names = ["torch"]
    if kernels.available():
        names.append("native")
    return names


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise ``global_seed`` over the seeds chosen by ``DROPOUTLAB_TEST_SEED``."""
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


@pytest.fixture(params=_backends())
def dropout_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test once per available dropout backend, with that backend selected."""
    name = str(request.param)
    with backend.use_backend(name):
        yield name


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``gpu`` when CUDA is absent."""
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
