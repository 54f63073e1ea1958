"""Tests for ``dropoutlab.reproduce``: experiments → sweep → store → analysis → report.

Two levels:

* Fake experiments with a known answer (a trivial task whose "test error" is a fixed function
  of the config and seed), so the numbers in the written tables are known exactly, and the
  orchestration (skips, failures, broken analyses, re-runs, rebuilds) is checked precisely.
* Every registered experiment at ``smoke`` budget end to end through the real training code,
  into one temp store shared by the module (marked ``slow``), then a rebuild from that store.
"""

from __future__ import annotations

import csv
import io
import math
import shutil
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest

import dropoutlab.experiments as experiments_module
import dropoutlab.sweeps as sweep_module
from dropoutlab.config import DataConfig, RunConfig, with_changes
from dropoutlab.errors import DataError, DropoutlabError, StoreError
from dropoutlab.experiments import Analysis, Figure, Finding, PaperValue, Table
from dropoutlab.report import ReportError
from dropoutlab.reproduce import (
    Reproduction,
    SweepOptions,
    plan,
    rebuild,
    reproduce,
    select,
)
from dropoutlab.sweeps.job import Job

# --------------------------------------------------------------------- fake experiments


def fake_task(config: RunConfig, *, checkpoint_path: Path | None = None,
              resume: bool = False) -> dict[str, Any]:
    """A run whose test error is known: 1.0 with dropout, 2.0 without, plus 0.1 × seed."""
    base = 2.0 if config.model.dropout == "none" else 1.0
    return {"status": "done", "metrics": {"test_error": base + 0.1 * config.seed},
            "history": [{"epoch": 1, "test_error": base}]}


def failing_task(config: RunConfig, *, checkpoint_path: Path | None = None,
                 resume: bool = False) -> dict[str, Any]:
    """A run that always fails."""
    raise RuntimeError("this run always fails")


EPOCHS = {"smoke": 1, "quick": 2, "paper": 3}


@dataclass
class FakeExperiment:
    """An experiment with the real interface and a known answer."""

    name: str
    title: str = "Fake: dropout vs none"
    paper_ref: str = "Table 2"
    summary: str = "dropout vs no dropout on a known answer"
    datasets: tuple[str, ...] = ("digits",)
    task: str = "test_reproduce:fake_task"
    reason: str | None = None  # data absent when not None
    broken: bool = False  # analysis raises

    def missing_data(self, data_dir: str | None) -> str | None:
        """Why the data is absent, or None."""
        return self.reason

    def jobs(self, budget: str, *, seeds: int | None = None,
             data_dir: str | None = None) -> list[Job]:
        """Two variants × seeds, epochs by budget (so budgets give different run keys)."""
        base = RunConfig(data=DataConfig(dataset="digits"), epochs=EPOCHS[budget])
        return [Job(self.name, f"{variant} seed={seed}",
                    with_changes(base, {"model.dropout": variant, "seed": seed}), self.task)
                for variant in ("bernoulli", "none") for seed in range(seeds or 1)]

    def analyze(self, records: Sequence[Any]) -> Analysis:
        """Mean test error per variant beside made-up paper values; one figure; one finding."""
        if self.broken:
            raise RuntimeError("boom")
        done = [r for r in records if r.status == "done"]
        errors: dict[str, list[float]] = {"bernoulli": [], "none": []}
        for r in done:
            errors[r.config["model"]["dropout"]].append(r.metrics["test_error"])
        means = {k: sum(v) / len(v) if v else math.nan for k, v in errors.items()}
        paper = {"bernoulli": PaperValue(1.25, "Table 2"), "none": PaperValue(1.6, "Table 2",
                                                                                 True)}
        rows = [(k, means[k], paper[k], means[k] - paper[k].value) for k in errors]
        fig, ax = plt.subplots(figsize=(4, 3))
        ax.bar(list(means), [0 if math.isnan(v) else v for v in means.values()])
        findings = []
        if done:
            findings.append(Finding("dropout beats no dropout", means["bernoulli"] < means["none"],
                                    f"{means['bernoulli']:.2f} vs {means['none']:.2f}"))
        return Analysis(self.name, self.title, self.paper_ref,
                        tables=[Table("errors", "Test error", ("variant", "ours", "paper",
                                                               "difference"), rows)],
                        figures=[Figure("bars", "Test error", fig)], findings=findings,
                        notes=["fake"])


FAKES = {
    "fake-dropout": FakeExperiment("fake-dropout"),
    "fake-nodata": FakeExperiment("fake-nodata", reason="needs --data-dir with CIFAR-10"),
    "fake-broken": FakeExperiment("fake-broken", broken=True),
    "fake-failing": FakeExperiment("fake-failing", task="test_reproduce:failing_task"),
}


def run_count(store: Path) -> int:
    """Rows in the store's runs table."""
    with sqlite3.connect(store) as db:
        return int(db.execute("SELECT count(*) FROM runs").fetchone()[0])


def read_csv(path: Path) -> list[list[str]]:
    """A CSV file as rows of strings."""
    return list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))


@pytest.fixture(scope="class")
def fakes() -> Iterator[None]:
    """The registry holds only the fake experiments while a class of fake tests runs."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(experiments_module, "EXPERIMENTS", dict(FAKES))
        yield


@pytest.fixture(scope="class")
def fake_all(fakes: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Reproduction, Path]:
    """``reproduce all`` over the fakes at smoke budget with 3 seeds, one worker."""
    root = tmp_path_factory.mktemp("fake")
    options = SweepOptions(store=root / "runs.sqlite", workers=1, retries=0, progress=False)
    lines: list[str] = []
    outcome = reproduce("all", budget="smoke", seeds=3, sweep=options, out_dir=root / "report",
                        echo=lines.append)
    return outcome, root


class TestSelectAndPlan:
    def test_unknown_name_lists_valid_names(self, fakes: None) -> None:
        """A typo is rejected with a suggestion and the list of valid names, 'all' included."""
        with pytest.raises(ValueError, match=r"unknown experiment 'fake-dropuot' \(did you "
                           r"mean 'fake-dropout'\?\); valid names: all, fake-dropout, "):
            select("fake-dropuot")

    def test_all_is_every_experiment(self, fakes: None) -> None:
        """'all' stands for every registered experiment, in registry order."""
        assert [e.name for e in select("all")] == list(FAKES)

    def test_budget_typo_lists_budgets(self) -> None:
        """A wrong budget names the valid ones."""
        with pytest.raises(ValueError, match=r"`budget` must be one of \('smoke', 'quick', "
                           r"'paper'\), got budget='quik'"):
            plan([FAKES["fake-dropout"]], budget="quik")

    @pytest.mark.parametrize("seeds", [0, -1, 1.5, True])
    def test_bad_seeds(self, seeds: Any) -> None:
        """Seeds must be a positive integer."""
        with pytest.raises(ValueError, match="`seeds` must be an integer >= 1"):
            plan([FAKES["fake-dropout"]], budget="smoke", seeds=seeds)

    def test_device_is_set_on_every_run(self) -> None:
        """--device reaches every run's config, and CPU and GPU runs get different keys."""
        (cpu,), _ = plan([FAKES["fake-dropout"]], budget="smoke", seeds=2)
        (gpu,), _ = plan([FAKES["fake-dropout"]], budget="smoke", seeds=2, device="cuda")
        assert {j.config.device for j in gpu.jobs} == {"cuda"}
        assert {j.key for j in cpu.jobs}.isdisjoint({j.key for j in gpu.jobs})
        assert len(gpu.jobs) == 4

    def test_absent_data(self) -> None:
        """Absent data skips with the reason, or is an error when the experiment was named."""
        plans, skipped = plan([FAKES["fake-nodata"], FAKES["fake-dropout"]], budget="smoke")
        assert [p.experiment.name for p in plans] == ["fake-dropout"]
        assert skipped[0].reason == "data absent: needs --data-dir with CIFAR-10"
        with pytest.raises(DataError, match="fake-nodata: needs --data-dir with CIFAR-10"):
            plan([FAKES["fake-nodata"]], budget="smoke", strict=True)


class TestRowsAndEstimate:
    def test_rows_pattern_chooses_rows(self) -> None:
        """--rows keeps the rows it matches (glob or substring) and remembers every label."""
        (item,), _ = plan([FAKES["fake-dropout"]], budget="smoke", seeds=2, rows="none")
        assert {j.name for j in item.jobs} == {"none seed=0", "none seed=1"}
        assert item.labels == ["bernoulli", "none"]
        (item,), _ = plan([FAKES["fake-dropout"]], budget="smoke", rows="bern*")
        assert [j.name for j in item.jobs] == ["bernoulli seed=0"]

    def test_rows_matching_nothing_lists_the_rows(self) -> None:
        """A pattern that matches no row is an error that lists the rows there are."""
        with pytest.raises(ValueError, match=r"--rows 'gaussian' matches no row; the rows "
                           r"are: fake-dropout: bernoulli, none"):
            plan([FAKES["fake-dropout"]], budget="smoke", rows="gaussian")

    def test_report_marks_missing_rows(self, fakes: None, tmp_path: Path) -> None:
        """Only the chosen row trains; the analysis and the page name the row left out."""
        options = SweepOptions(store=tmp_path / "runs.sqlite", workers=1, retries=0,
                               progress=False)
        outcome = reproduce("fake-dropout", budget="smoke", sweep=options, rows="none",
                            out_dir=tmp_path / "report", echo=lambda line: None)
        assert run_count(tmp_path / "runs.sqlite") == 1
        (analysis,) = outcome.analyses
        assert analysis.missing_rows == ["bernoulli"]
        assert "Rows not run (--rows): bernoulli" in outcome.index.read_text(encoding="utf-8")

    def test_cheapest_experiment_first(self) -> None:
        """The sweep runs whole experiments, the cheapest (fewest FLOPs) first: a fake at
        smoke (1 epoch) before the same fake at paper (3 epochs), each in grid order."""
        from dropoutlab.reproduce import cheapest_first

        (big,), _ = plan([FakeExperiment("fake-big")], budget="paper")
        (small,), _ = plan([FakeExperiment("fake-small")], budget="smoke")
        order = [(j.experiment, j.name) for j in cheapest_first([big, small])]
        assert order == [("fake-small", "bernoulli seed=0"), ("fake-small", "none seed=0"),
                         ("fake-big", "bernoulli seed=0"), ("fake-big", "none seed=0")]

    def test_dearest_job_first_within_an_experiment(self) -> None:
        """Figure 10 at quick: its 50K runs (the longest) start first, the estimated cost never
        rises along the order, and no job is lost or repeated."""
        from dropoutlab.experiments.cost import run_cost
        from dropoutlab.experiments.dataset_size import EXPERIMENT as FIGURE_10
        from dropoutlab.reproduce import cheapest_first

        (item,), _ = plan([FIGURE_10], budget="quick")
        order = cheapest_first([item])
        assert sorted(j.name for j in order) == sorted(j.name for j in item.jobs)
        assert all("N=50000" in j.name for j in order[:12])
        costs = [run_cost(j.config).flops for j in order]
        assert costs == sorted(costs, reverse=True)

    @pytest.mark.parametrize("passed", [False, True])
    def test_contradiction_beside_premises(self, passed: bool) -> None:
        """A contradicted finding gets a note: caveated when a premise check fails, called a
        result of the design when every premise check passes."""
        from dropoutlab.report.content import Premise
        from dropoutlab.reproduce import Plan, _analyze

        class Contradicted(FakeExperiment):
            def analyze(self, records: Sequence[Any]) -> Analysis:
                return Analysis(self.name, self.title, self.paper_ref,
                                findings=[Finding.of("a beats b", "contradicted", "e")],
                                premises=[Premise("runs converged", passed, "m")])

        experiment = Contradicted("fake-c")
        analysis = _analyze(Plan(experiment, [], ["a"]), [], [], "smoke")
        assert analysis is not None
        note = analysis.notes[0]
        if passed:
            assert note.startswith("contradicted with every premise check passing")
        else:
            assert "while a premise check fails (runs converged)" in note
        assert note.endswith("a beats b")

    def test_estimate_counts_without_training(self, fakes: None) -> None:
        """--plan's numbers: 2 runs × 1 epoch × ceil(1097/100) = 22 updates on the digits,
        FLOPs and a positive time; nothing is stored."""
        from dropoutlab.reproduce import estimate

        (cost,) = estimate("fake-dropout", budgets=("smoke",))
        assert (cost.experiment, cost.budget, cost.runs, cost.updates) == (
            "fake-dropout", "smoke", 2, 22)
        assert cost.flops > 0 and cost.core_seconds > 0


class TestExitCode:
    @pytest.mark.parametrize(("ok", "stopped", "broken", "code"), [
        (True, False, False, 0), (False, False, False, 1), (None, False, False, 0),
        (False, True, False, 130), (True, False, True, 1)])
    def test_exit_code(self, ok: bool | None, stopped: bool, broken: bool, code: int) -> None:
        """0 all good; 1 failed runs or a broken analysis; 130 after Ctrl-C."""
        from dropoutlab.report import Skipped

        summary = None if ok is None else SimpleNamespace(ok=ok)
        outcome = Reproduction(index=Path("x"), stopped=stopped, summary=summary)  # type: ignore[arg-type]
        if broken:
            outcome.skipped.append(Skipped("b", "B", "r", "analysis failed: boom"))
        assert outcome.exit_code == code


class TestReproduceFakes:
    def test_known_numbers_in_the_table(self, fake_all: tuple[Reproduction, Path]) -> None:
        """Means over seeds 0, 1, 2 are 1.1 (dropout) and 2.1 (none); the (?) mark is kept."""
        outcome, root = fake_all
        rows = read_csv(root / "report" / "fake-dropout" / "errors.csv")
        assert rows[0] == ["variant", "ours", "paper", "difference"]
        assert rows[1][0] == "bernoulli" and float(rows[1][1]) == pytest.approx(1.1)
        assert rows[1][2] == "1.25" and float(rows[1][3]) == pytest.approx(-0.15)
        assert rows[2][0] == "none" and float(rows[2][1]) == pytest.approx(2.1)
        assert rows[2][2] == "1.6 (?)" and float(rows[2][3]) == pytest.approx(0.5)
        assert (root / "report" / "fake-dropout" / "bars.png").is_file()
        assert (root / "report" / "fake-dropout" / "bars.svg").is_file()
        assert outcome.index == root / "report" / "index.html"

    def test_header_counts(self, fake_all: tuple[Reproduction, Path]) -> None:
        """The header knows each experiment's runs, seeds and that they were trained now."""
        outcome, _ = fake_all
        assert outcome.meta is not None
        info = outcome.meta.experiments["fake-dropout"]
        assert (info.runs, info.seeds, info.ran) == (6, (0, 1, 2), 6)
        assert info.run_seconds > 0
        assert outcome.meta.wall_seconds is not None and outcome.meta.wall_seconds > 0
        assert "digits" in outcome.meta.data

    def test_skips_and_failures_are_reported(self, fake_all: tuple[Reproduction, Path]) -> None:
        """Absent data and a broken analysis are sections with reasons; failed runs count."""
        outcome, root = fake_all
        reasons = {s.name: s.reason for s in outcome.skipped}
        assert reasons["fake-nodata"] == "data absent: needs --data-dir with CIFAR-10"
        assert reasons["fake-broken"] == "analysis failed: RuntimeError: boom"
        assert outcome.summary is not None and outcome.summary.failed == 6
        assert {f.experiment for f in outcome.summary.failures} == {"fake-failing"}
        assert outcome.exit_code == 1
        html = (root / "report" / "index.html").read_text(encoding="utf-8")
        assert "analysis failed: RuntimeError: boom" in html
        assert "needs --data-dir with CIFAR-10" in html
        assert [a.experiment for a in outcome.analyses] == ["fake-dropout", "fake-failing"]

    def test_rerun_trains_nothing(self, fake_all: tuple[Reproduction, Path]) -> None:
        """Running the same experiment again finds every run stored and skips it."""
        _, root = fake_all
        options = SweepOptions(store=root / "runs.sqlite", workers=1, progress=False)
        again = reproduce("fake-dropout", budget="smoke", seeds=3, sweep=options,
                          out_dir=root / "again", echo=lambda line: None)
        summary = again.summary
        assert summary is not None and (summary.skipped, summary.done) == (6, 0)
        assert again.meta is not None and again.meta.experiments["fake-dropout"].ran == 0
        assert again.exit_code == 0
        assert (root / "again" / "fake-dropout" / "errors.csv").read_bytes() == \
            (root / "report" / "fake-dropout" / "errors.csv").read_bytes()

    def test_rebuild_same_tables_without_training(self, fake_all: tuple[Reproduction, Path],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
        """`report` rebuilds the same tables from the store; nothing runs, the store is as was."""
        _, root = fake_all
        store = root / "runs.sqlite"
        before = run_count(store)

        def no_sweep(*args: Any, **kwargs: Any) -> None:
            raise AssertionError("rebuild must not run a sweep")

        monkeypatch.setattr(sweep_module, "run_sweep", no_sweep)
        outcome = rebuild("all", budget="smoke", seeds=3, store=store,
                          out_dir=root / "rebuilt", echo=lambda line: None)
        assert run_count(store) == before
        assert (root / "rebuilt" / "fake-dropout" / "errors.csv").read_bytes() == \
            (root / "report" / "fake-dropout" / "errors.csv").read_bytes()
        assert outcome.meta is not None and outcome.meta.rebuilt
        reasons = {s.name: s.reason for s in outcome.skipped}
        assert reasons["fake-failing"].startswith("no stored runs at budget smoke")
        assert "rebuilt from stored runs" in outcome.index.read_text(encoding="utf-8")

    def test_rebuild_other_budget(self, fake_all: tuple[Reproduction, Path]) -> None:
        """A budget that never ran: an error naming the command to run, or a skip for 'all'."""
        _, root = fake_all
        with pytest.raises(DropoutlabError, match=r"no stored runs of fake-dropout at budget "
                           r"quick .*run `dropoutlab reproduce fake-dropout --budget quick` first"):
            rebuild("fake-dropout", budget="quick", store=root / "runs.sqlite",
                    out_dir=root / "q")
        outcome = rebuild("all", budget="quick", store=root / "runs.sqlite",
                          out_dir=root / "q", echo=lambda line: None)
        assert outcome.analyses == []
        assert outcome.index.is_file()

    def test_out_dir_checked_before_training(self, fakes: None, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
        """A report folder that is a file is refused before any run starts."""
        monkeypatch.setattr(sweep_module, "run_sweep", lambda *a, **k: pytest.fail("ran"))
        (tmp_path / "file").write_text("")
        with pytest.raises(ReportError, match="is a file"):
            reproduce("fake-dropout", budget="smoke", out_dir=tmp_path / "file" / "report",
                      sweep=SweepOptions(store=tmp_path / "s.sqlite"))

    def test_rebuild_without_store(self, tmp_path: Path) -> None:
        """A store that does not exist is an error, and nothing is created."""
        with pytest.raises(StoreError, match="does not exist"):
            rebuild("all", store=tmp_path / "none.sqlite", out_dir=tmp_path / "r")
        assert not (tmp_path / "none.sqlite").exists()


# ----------------------------------------------------- every real experiment at smoke budget


@pytest.fixture(scope="module")
def smoke_all(tmp_path_factory: pytest.TempPathFactory) -> tuple[Reproduction, Path]:
    """`reproduce all --budget smoke` over the real registry, one store for the module."""
    root = tmp_path_factory.mktemp("smoke")
    options = SweepOptions(store=root / "runs.sqlite", progress=False)
    outcome = reproduce("all", budget="smoke", sweep=options, out_dir=root / "report",
                        echo=lambda line: None)
    return outcome, root


def _report_files(outcome: Reproduction) -> list[Path]:
    out = outcome.index.parent
    files = []
    for analysis in outcome.analyses:
        for table in analysis.tables:
            files += [out / analysis.experiment / f"{table.name}.{ext}" for ext in ("md", "csv")]
        for figure in analysis.figures:
            files += [out / analysis.experiment / f"{figure.name}.{ext}"
                      for ext in ("png", "svg")]
    return files


@pytest.mark.slow
class TestEveryExperimentAtSmoke:
    def test_every_experiment_runs_or_says_why(self, smoke_all: tuple[Reproduction, Path]) -> None:
        """Each experiment is analysed, or skipped only because its data is absent."""
        outcome, _ = smoke_all
        shown = {a.experiment for a in outcome.analyses}
        skipped = {s.name: s.reason for s in outcome.skipped}
        assert shown | set(skipped) == set(experiments_module.EXPERIMENTS)
        assert all(reason.startswith("data absent") for reason in skipped.values()), skipped
        assert outcome.summary is not None and outcome.summary.ok
        assert outcome.exit_code == 0
        assert all(a.findings for a in outcome.analyses)

    def test_report_files(self, smoke_all: tuple[Reproduction, Path]) -> None:
        """index.html, every table as .md and .csv, every figure as .png and .svg."""
        outcome, _ = smoke_all
        html = outcome.index.read_text(encoding="utf-8")
        files = _report_files(outcome)
        assert files
        for path in files:
            assert path.is_file() and path.stat().st_size > 0, path
            if path.suffix in (".png", ".csv"):
                assert path.relative_to(outcome.index.parent).as_posix() in html

    def test_rebuild_from_the_store(self, smoke_all: tuple[Reproduction, Path]) -> None:
        """`report` rebuilds the same tables from stored runs; the store does not change."""
        outcome, root = smoke_all
        store = root / "runs.sqlite"
        before = run_count(store)
        rebuilt = rebuild("all", budget="smoke", store=store, out_dir=root / "rebuilt",
                          echo=lambda line: None)
        assert run_count(store) == before
        assert [a.experiment for a in rebuilt.analyses] == \
            [a.experiment for a in outcome.analyses]
        for path in _report_files(outcome):
            if path.suffix in (".md", ".csv"):
                twin = root / "rebuilt" / path.relative_to(outcome.index.parent)
                assert twin.read_bytes() == path.read_bytes(), path

    @pytest.mark.browser
    @pytest.mark.skipif(shutil.which("chromium") is None and
                        shutil.which("chromium-browser") is None,
                        reason="needs headless Chromium on PATH")
    def test_real_report_renders(self, smoke_all: tuple[Reproduction, Path],
                                 tmp_path: Path) -> None:
        """The real smoke report loads in headless Chromium: every image, no console error."""
        from test_report_browser import PROBE, open_in_chromium

        outcome, _ = smoke_all
        html = outcome.index.read_text(encoding="utf-8")
        probe = outcome.index.with_name("probe.html")
        probe.write_text(html.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
        check, stderr = open_in_chromium(probe, tmp_path / "profile")
        assert len(check["images"]) == html.count("<img ") > 0
        assert all(img["width"] > 0 for img in check["images"]), check["images"]
        assert check["errors"] == []
        assert ":CONSOLE" not in stderr
