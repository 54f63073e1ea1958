"""Tests for ``dropoutlab reproduce``, ``dropoutlab report`` and ``dropoutlab list``.

Bad input exits with status 2 and one line naming the valid values (budgets, experiment
names); a good run prints the findings table and, on its last line, the report's path.
Training runs use the fake experiments of ``test_reproduce.py`` (a known answer in
milliseconds) so these tests stay fast.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import dropoutlab.experiments as experiments_module
from dropoutlab.cli import main
from dropoutlab.cli.reproduce import BUDGET_CHOICES
from dropoutlab.experiments import BUDGETS
from test_reproduce import FAKES


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry holds the fake experiments (one good, one without data)."""
    monkeypatch.setattr(experiments_module, "EXPERIMENTS",
                        {k: FAKES[k] for k in ("fake-dropout", "fake-nodata")})


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the CLI in-process; argparse's own exits are turned into their status."""
    try:
        code = main(args)
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder for the module's store and reports."""
    yield tmp_path_factory.mktemp("cli")


class TestRejections:
    def test_budget_typo(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A misspelt budget exits 2 with one line that lists the budgets."""
        code, _, err = run_cli(["reproduce", "overfitting-curves", "--budget", "quik"], capsys)
        assert code == 2
        assert err.strip().count("\n") == 0
        assert "invalid choice: 'quik' (choose from 'smoke', 'quick', 'paper')" in err

    def test_budget_choices_match_the_experiments(self) -> None:
        """The CLI's spelled-out budgets are exactly experiments.BUDGETS."""
        assert BUDGET_CHOICES == BUDGETS

    def test_name_typo(self, fakes: None, capsys: pytest.CaptureFixture[str]) -> None:
        """A misspelt experiment exits 2 with one line: a suggestion and the valid names."""
        code, out, err = run_cli(["reproduce", "fake-dropot", "--budget", "smoke"], capsys)
        assert code == 2 and out == ""
        assert err == ("dropoutlab reproduce: error: unknown experiment 'fake-dropot' (did you "
                       "mean 'fake-dropout'?); valid names: all, fake-dropout, fake-nodata\n")

    @pytest.mark.parametrize(("flag", "value", "expected"), [
        ("--seeds", "0", "expected an integer in [1, 2147483647], got '0'"),
        ("--device", "tpu", "must be cpu, cuda or cuda:N (N a GPU index), got 'tpu'"),
        ("--workers", "x", "expected an integer in [1, 4096], got 'x'"),
    ])
    def test_bad_values(self, capsys: pytest.CaptureFixture[str], flag: str, value: str,
                        expected: str) -> None:
        """Bad flag values exit 2 naming the flag and what was expected."""
        code, _, err = run_cli(["reproduce", "all", flag, value], capsys)
        assert code == 2 and flag in err and expected in err

    @pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
    def test_cuda_without_cuda(self, fakes: None, capsys: pytest.CaptureFixture[str]) -> None:
        """--device cuda on a CPU-only machine exits 2 before anything runs."""
        code, _, err = run_cli(["reproduce", "fake-dropout", "--device", "cuda"], capsys)
        assert code == 2 and "CUDA is not available" in err and "--device cpu" in err

    def test_named_experiment_without_data(self, fakes: None, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
        """Asking by name for an experiment whose data is absent is an error, not a skip."""
        code, _, err = run_cli(["reproduce", "fake-nodata", "--budget", "smoke",
                                "--store", str(tmp_path / "s.sqlite")], capsys)
        assert code == 2 and "fake-nodata: needs --data-dir with CIFAR-10" in err
        assert not (tmp_path / "s.sqlite").exists()

    def test_report_without_store(self, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
        """`report` on a missing store exits 2 with one line saying so."""
        code, _, err = run_cli(["report", "--store", str(tmp_path / "none.sqlite")], capsys)
        assert code == 2 and "does not exist" in err and err.count("\n") == 1


class TestList:
    def test_one_line_each(self, capsys: pytest.CaptureFixture[str]) -> None:
        """`list` prints one line per registered experiment: name, paper reference, summary."""
        code, out, _ = run_cli(["list"], capsys)
        assert code == 0
        lines = out.splitlines()
        for i, experiment in enumerate(experiments_module.EXPERIMENTS.values()):
            assert lines[i].startswith(experiment.name + " ")
            assert experiment.paper_ref in lines[i] and experiment.summary in lines[i]

    def test_marks_absent_data(self, fakes: None, capsys: pytest.CaptureFixture[str]) -> None:
        """Experiments whose data is absent are marked."""
        _, out, _ = run_cli(["list"], capsys)
        lines = out.splitlines()
        assert lines[0].startswith("fake-dropout") and "needs data" not in lines[0]
        assert lines[1].startswith("fake-nodata") and lines[1].endswith("[needs data: "
                                                                         "--data-dir]")


class TestRunAndRebuild:
    def test_reproduce_all_then_report(self, fakes: None, store_root: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
        """`reproduce all` says what it skipped and why, prints findings and the report path
        last; `report` then rebuilds it from the store with the same table."""
        store = store_root / "runs.sqlite"
        code, out, _ = run_cli(["reproduce", "all", "--budget", "smoke", "--seeds", "2",
                                "--store", str(store), "--workers", "1",
                                "--out", str(store_root / "r1")], capsys)
        assert code == 0, out
        assert "skipped fake-nodata: data absent: needs --data-dir with CIFAR-10" in out
        assert re.search(r"fake-dropout  holds +dropout beats no dropout", out)
        last = out.strip().splitlines()[-1]
        assert last == f"report: {(store_root / 'r1' / 'index.html').resolve()}"

        code, out, _ = run_cli(["report", "all", "--budget", "smoke", "--seeds", "2",
                                "--store", str(store), "--out", str(store_root / "r2")], capsys)
        assert code == 0, out
        assert out.strip().splitlines()[-1] == \
            f"report: {(store_root / 'r2' / 'index.html').resolve()}"
        table = Path("fake-dropout") / "errors.csv"
        assert (store_root / "r2" / table).read_bytes() == (store_root / "r1" / table).read_bytes()

    def test_default_out_is_beside_the_store(self, fakes: None, store_root: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
        """Without --out the report goes to <store folder>/reports/NAME-BUDGET."""
        store = store_root / "runs.sqlite"
        code, out, _ = run_cli(["report", "fake-dropout", "--budget", "smoke", "--seeds", "2",
                                "--store", str(store)], capsys)
        assert code == 0
        expected = (store_root / "reports" / "fake-dropout-smoke" / "index.html").resolve()
        assert out.strip().splitlines()[-1] == f"report: {expected}"
        assert expected.is_file()
