"""The layering of design.md holds at import time, not only in lint-imports' static view.

The operators and the report are what a user imports most; neither may drag in training, data
loading or the paper's experiments (a fresh interpreter shows what an import really loads).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("dropoutlab.train", "dropoutlab.data", "dropoutlab.experiments", "dropoutlab.sweeps")


def loaded_by(module: str) -> list[str]:
    """The dropoutlab modules a fresh interpreter holds after ``import module``."""
    code = (f"import json, sys, {module}; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('dropoutlab'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    modules: list[str] = json.loads(out)
    return modules


@pytest.mark.parametrize("module", ["dropoutlab.report", "dropoutlab.functional",
                                    "dropoutlab"])
def test_import_loads_no_training_data_or_experiments(module: str) -> None:
    """``import dropoutlab.report`` / ``dropoutlab.functional`` / ``dropoutlab`` load none of
    the run's training, data, experiment or sweep modules."""
    loaded = loaded_by(module)
    assert module in loaded
    heavy = [m for m in loaded if m.startswith(HEAVY)]
    assert heavy == [], f"import {module} loaded {heavy}"
