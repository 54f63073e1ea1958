"""Package-level contract: ``__all__``, docstrings that cite the paper, and a light import."""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys
from types import ModuleType

import pytest

import dropoutlab

# The modules that implement the paper: each module's docstring cites its sections (§).
PAPER_MODULES = (
    "dropoutlab.functional",
    "dropoutlab.layers",
    "dropoutlab.constraints",
    "dropoutlab.penalties",
    "dropoutlab.inference",
)
EXPORTING_MODULES = ("dropoutlab", *PAPER_MODULES, "dropoutlab.errors")  # declare __all__
CORE_MODULES = (*PAPER_MODULES, "dropoutlab.backend", "dropoutlab.errors")
# The public names that implement a section of the paper: their docstrings cite it (§). Helpers
# and methods (``forward``, ``weight_parameters``) say what they do and need no ritual citation.
PAPER_NAMES = {
    "dropoutlab.functional": ("dropout", "gaussian_dropout", "gaussian_sigma", "relu_dropout"),
    "dropoutlab.layers": ("Dropout", "GaussianDropout"),
    "dropoutlab.constraints": ("MaxNorm", "max_norm_"),
    "dropoutlab.penalties": ("kl_sparsity", "l1", "l2"),
    "dropoutlab.inference": ("MCPrediction", "mc_predict", "sample_probabilities",
                             "weight_scaled_predict"),
}
HEAVY = ("matplotlib", "rich", "ray", "sklearn")


def public_names(module: ModuleType) -> list[str]:
    """The names a module exports: its ``__all__``, else its public functions and classes."""
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    return [name for name, obj in vars(module).items()
            if not name.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
            and obj.__module__ == module.__name__]


def own_public_methods(cls: type) -> list[tuple[str, object]]:
    """Public methods and properties defined on ``cls`` itself (not inherited)."""
    return [(name, member) for name, member in vars(cls).items()
            if not name.startswith("_") and (inspect.isfunction(member)
                                             or isinstance(member, property))]


@pytest.mark.parametrize("module_name", EXPORTING_MODULES)
def test_all_is_sorted_unique_and_resolvable(module_name: str) -> None:
    """``__all__`` exists, has no duplicates, is sorted, and every name exists."""
    module = importlib.import_module(module_name)
    assert hasattr(module, "__all__"), module_name
    names = public_names(module)
    assert len(names) == len(set(names))
    assert names == sorted(names)
    for name in names:
        assert hasattr(module, name), f"{module_name}.{name}"


@pytest.mark.parametrize("module_name", PAPER_MODULES)
def test_all_lists_every_public_definition(module_name: str) -> None:
    """Every public function or class defined in a core module is exported."""
    module = importlib.import_module(module_name)
    defined = {
        name for name, obj in vars(module).items()
        if not name.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
        and getattr(obj, "__module__", None) == module_name
    }
    assert defined <= set(public_names(module))


def test_top_level_exports_the_issue_api() -> None:
    """The names the API promises are reachable from ``import dropoutlab as dl``."""
    for name in ("Dropout", "GaussianDropout", "MaxNorm", "max_norm_", "functional",
                 "penalties", "inference"):
        assert name in dropoutlab.__all__
    assert callable(dropoutlab.inference.mc_predict)
    assert callable(dropoutlab.penalties.kl_sparsity)


@pytest.mark.parametrize("module_name", ["dropoutlab", *CORE_MODULES])
def test_every_public_name_has_a_docstring(module_name: str) -> None:
    """The module, each exported name and each public method has a non-empty docstring."""
    module = importlib.import_module(module_name)
    assert (module.__doc__ or "").strip(), module_name
    for name in public_names(module):
        obj = getattr(module, name)
        if isinstance(obj, str):  # __version__
            continue
        assert (inspect.getdoc(obj) or "").strip(), f"{module_name}.{name}"
        if inspect.isclass(obj):
            for method_name, method in own_public_methods(obj):
                doc = method.__doc__ if isinstance(method, property) else inspect.getdoc(method)
                assert (doc or "").strip(), f"{module_name}.{name}.{method_name}"


@pytest.mark.parametrize("module_name", PAPER_MODULES)
def test_docstrings_cite_the_paper_section(module_name: str) -> None:
    """In the modules that implement the paper, the module docstring and the docstring of every
    name that implements a section of the paper cite it (§)."""
    module = importlib.import_module(module_name)
    assert "§" in (module.__doc__ or ""), module_name
    assert set(PAPER_NAMES[module_name]) <= set(public_names(module)), module_name
    for name in PAPER_NAMES[module_name]:
        assert "§" in (inspect.getdoc(getattr(module, name)) or ""), f"{module_name}.{name}"


def test_import_does_not_pull_heavy_dependencies() -> None:
    """``import dropoutlab`` (and its core modules) loads none of matplotlib, rich, ray or
    scikit-learn: they belong to the experiment, report and sweep code, imported on demand."""
    code = (
        "import sys, json\n"
        "import dropoutlab\n"
        f"for name in {list(CORE_MODULES)!r}: __import__(name)\n"
        f"heavy = {list(HEAVY)!r}\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & set(heavy))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_version() -> None:
    """``__version__`` is the installed distribution's version."""
    from importlib.metadata import version

    assert dropoutlab.__version__ == version("dropoutlab")
