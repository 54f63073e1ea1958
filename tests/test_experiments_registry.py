"""Tests for the experiment registry and every experiment's grid of jobs per budget.

Contract tests: the CLI names and their order, typos rejected with the list of valid names,
budgets validated, job names unique, every config valid, and the paper's retention convention
converted to drop probabilities in the right direction.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dropoutlab.errors import DataError
from dropoutlab.experiments import BUDGETS, EXPERIMENTS, get_experiment, missing_data
from dropoutlab.experiments.base import seed_list
from dropoutlab.experiments.common import drop_from_retain
from dropoutlab.experiments.conv_nets import fashion_available


@pytest.fixture
def no_fashion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fashion-MNIST is not installed (the Debian package's folder points nowhere)."""
    from dropoutlab.data import sources

    monkeypatch.setattr(sources, "FASHION_DEFAULT_DIR", str(tmp_path / "not-installed"))

CLI_ORDER = [
    "overfitting-curves", "mnist-architectures", "regularizers", "retention-rate",
    "dataset-size", "gaussian-vs-bernoulli", "mc-vs-weight-scaling", "features-and-sparsity",
    "marginalized-regression", "conv-nets",
]
NEEDS_NO_DATA_DIR = [name for name in CLI_ORDER if name != "conv-nets"]


class TestRegistry:
    def test_names_in_cli_order(self) -> None:
        """The registry lists the issue's experiment names, in the CLI's order."""
        assert list(EXPERIMENTS) == CLI_ORDER

    def test_a_name_used_twice_is_refused(self) -> None:
        """Two experiments of one name cannot both be registered: the second would hide the
        first from the CLI."""
        from dropoutlab.experiments import _registry

        first = EXPERIMENTS["regularizers"]
        with pytest.raises(ValueError, match="experiment name 'regularizers' is used twice"):
            _registry(first, EXPERIMENTS["dataset-size"], first)

    def test_get_experiment_typo_lists_valid_names(self) -> None:
        """A misspelt name raises ValueError naming it and listing every valid name."""
        with pytest.raises(ValueError, match="unknown experiment 'retention-rates'") as info:
            get_experiment("retention-rates")
        for name in CLI_ORDER:
            assert name in str(info.value)

    def test_get_experiment_returns_the_experiment(self) -> None:
        """A valid name gives the experiment object with that name."""
        assert get_experiment("regularizers").name == "regularizers"

    @pytest.mark.parametrize("name", CLI_ORDER)
    def test_interface_fields(self, name: str) -> None:
        """Every experiment has the protocol's text fields, a one-line summary included."""
        experiment = EXPERIMENTS[name]
        for field in ("title", "paper_ref", "summary"):
            value = getattr(experiment, field)
            assert isinstance(value, str) and value and "\n" not in value
        assert len(experiment.summary) <= 100
        assert isinstance(experiment.datasets, tuple)

    def test_only_conv_nets_needs_data(self, no_fashion: None) -> None:
        """``missing_data`` gives a reason for conv-nets without Fashion-MNIST or --data-dir,
        and for none else; the reason says how to install Fashion-MNIST."""
        for name in NEEDS_NO_DATA_DIR:
            assert missing_data(EXPERIMENTS[name], None) is None
        reason = missing_data(EXPERIMENTS["conv-nets"], None)
        assert reason is not None and "--data-dir" in reason
        assert "apt-get install dataset-fashion-mnist" in reason

    def test_conv_nets_jobs_without_data_raise(self, tmp_path: Path, no_fashion: None) -> None:
        """conv-nets with an empty data folder raises DataError saying what was looked for."""
        with pytest.raises(DataError, match="no Fashion-MNIST, CIFAR-10, CIFAR-100 or SVHN"):
            EXPERIMENTS["conv-nets"].jobs("smoke", data_dir=str(tmp_path))

    def test_fashion_mnist_in_data_dir(self, tmp_path: Path, no_fashion: None) -> None:
        """Fashion-MNIST's four IDX files in --data-dir give its three variants, reading
        from that folder."""
        for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                     "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte.gz"):
            (tmp_path / name).write_bytes(b"")
        jobs = EXPERIMENTS["conv-nets"].jobs("smoke", data_dir=str(tmp_path))
        assert [j.name for j in jobs] == [
            "fashion-mnist no dropout seed=0", "fashion-mnist dropout in fc layers seed=0",
            "fashion-mnist dropout in all layers seed=0"]
        assert {j.config.data.data_dir for j in jobs} == {str(tmp_path)}
        assert {j.config.data.dataset for j in jobs} == {"fashion-mnist"}

    @pytest.mark.skipif(not fashion_available(None),
                        reason="Debian's dataset-fashion-mnist is not installed")
    def test_conv_nets_run_on_installed_fashion_mnist(self) -> None:
        """With the Debian package, conv-nets needs no --data-dir and reads the package's
        folder (data_dir None) at every budget."""
        assert missing_data(EXPERIMENTS["conv-nets"], None) is None
        for budget in BUDGETS:
            jobs = EXPERIMENTS["conv-nets"].jobs(budget)
            assert {j.config.data.dataset for j in jobs} == {"fashion-mnist"}
            assert {j.config.data.data_dir for j in jobs} == {None}


class TestJobs:
    @pytest.mark.parametrize("name", NEEDS_NO_DATA_DIR)
    def test_budget_typo_lists_budgets(self, name: str) -> None:
        """An unknown budget raises ValueError listing smoke, quick and paper."""
        with pytest.raises(ValueError, match=r"`budget` must be one of \('smoke', 'quick', "
                                             r"'paper'\), got budget='quik'"):
            EXPERIMENTS[name].jobs("quik")

    @pytest.mark.parametrize("budget", BUDGETS)
    @pytest.mark.parametrize("name", NEEDS_NO_DATA_DIR)
    def test_grid_is_well_formed(self, name: str, budget: str) -> None:
        """Jobs belong to the experiment, have unique names and unique (config, task) keys."""
        jobs = EXPERIMENTS[name].jobs(budget)
        assert jobs
        assert all(job.experiment == name for job in jobs)
        assert len({job.name for job in jobs}) == len(jobs)
        assert len({job.key for job in jobs}) == len(jobs)
        assert all(job.name.endswith(f"seed={job.config.seed}") for job in jobs)

    @pytest.mark.parametrize("name", NEEDS_NO_DATA_DIR)
    def test_quick_has_three_seeds_or_more(self, name: str) -> None:
        """The quick budget reports mean ± std over at least three seeds."""
        seeds = {job.config.seed for job in EXPERIMENTS[name].jobs("quick")}
        assert len(seeds) >= 3

    def test_seeds_override(self) -> None:
        """``seeds=`` overrides the budget's seed count; a bad count is rejected by name."""
        jobs = EXPERIMENTS["overfitting-curves"].jobs("smoke", seeds=4)
        assert sorted({job.config.seed for job in jobs}) == [0, 1, 2, 3]
        with pytest.raises(ValueError, match="`seeds` must be an integer >= 1, got seeds=0"):
            seed_list("smoke", 0)

    def test_rows_can_have_more_seeds(self) -> None:
        """retention-rate's two p = 0.1 rows run 8 seeds at quick (the noise rule asked for ~6
        a side) and dataset-size's two 50K rows 6, every other row 3, seed by seed; ``seeds=``
        gives every row that count."""
        jobs = EXPERIMENTS["retention-rate"].jobs("quick")
        counts: dict[str, int] = {}
        for job in jobs:
            label = job.name.rsplit(" seed=", 1)[0]
            counts[label] = counts.get(label, 0) + 1
        assert counts["n fixed p=0.1"] == counts["p·n fixed p=0.1"] == 8
        assert {n for label, n in counts.items() if not label.endswith("p=0.1")} == {3}
        assert [job.config.seed for job in jobs] == sorted(job.config.seed for job in jobs)
        override = EXPERIMENTS["retention-rate"].jobs("quick", seeds=2)
        assert len(override) == 2 * len(counts)
        sizes = [job.name for job in EXPERIMENTS["dataset-size"].jobs("quick")
                 if " N=50000 " in job.name]
        assert len(sizes) == 2 * 6

    def test_smoke_uses_digits_and_quick_uses_mnist(self) -> None:
        """Smoke runs on the bundled digits (fast tests), quick and paper on real MNIST."""
        for name in NEEDS_NO_DATA_DIR:
            if name == "marginalized-regression":
                continue  # synthetic data
            assert {j.config.data.dataset for j in EXPERIMENTS[name].jobs("smoke")} == {"digits"}
            assert {j.config.data.dataset for j in EXPERIMENTS[name].jobs("quick")} == {"mnist"}


class TestPaperConventions:
    def test_retention_converted_to_drop(self) -> None:
        """Retention 0.8 input / 0.5 hidden becomes drop 0.2 / 0.5 (p is P(retain) in §4)."""
        assert drop_from_retain(0.8) == 0.2
        assert drop_from_retain(0.9) == 0.1  # rounded: no 0.09999999999999998
        assert drop_from_retain(1.0) == 0.0
        with pytest.raises(ValueError, match=r"`retain` must be in \(0, 1\], got retain=0"):
            drop_from_retain(0)

    def test_table2_dropout_rows_drop_rates(self) -> None:
        """Table 2's dropout nets drop 20 % of inputs and 50 % of hidden units; the standard
        net drops nothing and has no max-norm."""
        jobs = {j.name: j.config for j in EXPERIMENTS["mnist-architectures"].jobs("paper")}
        standard = jobs["standard logistic 2×800 seed=0"]
        assert standard.model.dropout == "none" and standard.optim.max_norm is None
        assert standard.model.hidden == (800, 800) and standard.model.activation == "logistic"
        best = jobs["dropout + max-norm ReLU 2×8192 seed=0"]
        assert (best.model.drop_input, best.model.drop_hidden) == (0.2, 0.5)
        assert best.model.hidden == (8192, 8192) and best.optim.max_norm == 3.0

    def test_paper_budget_uses_the_recipe(self) -> None:
        """The paper budget: full MNIST, batch 100, momentum 0.5 → 0.99, 10⁶ updates."""
        config = EXPERIMENTS["regularizers"].jobs("paper")[0].config
        assert config.data.train_size is None and config.optim.batch_size == 100
        assert (config.optim.momentum_start, config.optim.momentum_end) == (0.5, 0.99)
        assert config.epochs * 50_000 // config.optim.batch_size == 1_000_000
        assert config.model.hidden == (1024, 1024, 2048)

    @pytest.mark.parametrize("name", NEEDS_NO_DATA_DIR)
    def test_row_seeds_name_grid_rows(self, name: str) -> None:
        """Every row given more seeds is a row of that budget's grid (a typo would silently
        leave it at the default count)."""
        experiment = EXPERIMENTS[name]
        for budget, rows in getattr(experiment, "row_seeds", {}).items():
            assert set(rows) <= set(experiment.grid(budget, None)), (name, budget)

    def test_quick_keeps_the_papers_widths_where_affordable(self) -> None:
        """Figure 10 at quick: the paper's 784-1024-1024-2048-10 at every size, in what
        ``auto`` gives here; Table 2's two logistic rows train 100 epochs, the others 50."""
        sizes = {j.config.model.hidden for j in EXPERIMENTS["dataset-size"].jobs("quick")}
        assert sizes == {(1024, 1024, 2048)}
        table2 = {j.name: j.config for j in EXPERIMENTS["mnist-architectures"].jobs("quick")}
        assert table2["standard logistic 2×800 seed=0"].epochs == 100
        assert table2["dropout logistic 3×1024 seed=0"].epochs == 100
        assert table2["dropout ReLU 3×1024 seed=0"].epochs == 50

    def test_retention_grid_modes(self) -> None:
        """Figure 9: n fixed keeps 2048 units; p·n fixed gives 256/p units (2560 at p = 0.1)."""
        jobs = {j.name: j.config for j in EXPERIMENTS["retention-rate"].jobs("paper")}
        assert jobs["n fixed p=0.1 seed=0"].model.hidden == (2048, 2048, 2048)
        assert jobs["p·n fixed p=0.1 seed=0"].model.hidden == (2560, 2560, 5120)
        assert jobs["p·n fixed p=0.1 seed=0"].model.drop_hidden == 0.9
        assert jobs["n fixed p=1 seed=0"].model.dropout == "none"
        assert all(c.model.drop_input == 0.0 for c in jobs.values())

    def test_gaussian_and_bernoulli_differ_only_in_noise(self) -> None:
        """Table 10's two variants share every setting but the kind of noise."""
        jobs = EXPERIMENTS["gaussian-vs-bernoulli"].jobs("quick")
        by_seed: dict[int, dict[str, object]] = {}
        for job in jobs:
            data = job.config.to_dict()
            kind = data["model"].pop("dropout")
            by_seed.setdefault(job.config.seed, {})[kind] = data
        for pair in by_seed.values():
            assert pair["bernoulli"] == pair["gaussian"]
        assert len(by_seed) == 5
