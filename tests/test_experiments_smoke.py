"""Every experiment end to end at the ``smoke`` budget: runs, store, analysis, report files.

Each job runs through the real engine — :func:`dropoutlab.sweeps.execution.execute`, the function a
sweep worker calls (real training on the bundled digits, or the experiment's own task) — in this
process, so the test pays no process-pool start-up; the outcomes go through the real store and the
analysis and report are built from the stored records (the process pool itself is tested with these
experiments in test_reproduce.py). conv-nets runs on tiny fabricated CIFAR-10 files.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from dropoutlab.experiments import EXPERIMENTS, Analysis, Experiment
from dropoutlab.experiments.conv_nets import fashion_available
from dropoutlab.report import write_report
from dropoutlab.report.header import ReportMeta
from dropoutlab.sweeps.execution import execute
from dropoutlab.sweeps.store import Store

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def run_in_process(experiment: Experiment, store_path: Path, *,
                   data_dir: str | None = None) -> Analysis:
    """Run the experiment's smoke jobs through execute() and the store; return its analysis."""
    jobs = experiment.jobs("smoke", data_dir=data_dir)
    with Store(store_path) as store:
        store.register(jobs)
        for job in jobs:
            token = store.claim(job.key)
            assert token is not None
            outcome = execute(job.task, job.config.to_dict(), None, threads=1)
            assert outcome["status"] == "done", outcome["error"]
            assert store.finish(job.key, token, outcome)
        records = store.records(experiment=experiment.name)
    assert len(records) == len(jobs)
    return experiment.analyze(records)


def check_report(analysis: Analysis, out: Path) -> None:
    """Write the report and check every figure and table landed as files."""
    index = write_report([analysis], out, ReportMeta(budget="smoke"))
    assert index.is_file()
    folder = out / analysis.experiment
    for figure in analysis.figures:
        assert (folder / f"{figure.name}.png").stat().st_size > 1000
        assert (folder / f"{figure.name}.svg").is_file()
    for table in analysis.tables:
        assert (folder / f"{table.name}.csv").is_file()
    assert analysis.figures and analysis.tables and analysis.findings
    assert all(f.evidence for f in analysis.findings)


IN_PROCESS = [name for name in EXPERIMENTS if name != "conv-nets"]


@pytest.mark.parametrize("name", IN_PROCESS)
def test_smoke_end_to_end(name: str, tmp_path: Path) -> None:
    """The experiment's smoke grid trains, is stored, analysed and written as a report."""
    analysis = run_in_process(EXPERIMENTS[name], tmp_path / "runs.sqlite")
    assert analysis.experiment == name
    check_report(analysis, tmp_path / "report")


def _tiny_cifar10(root: Path, per_file: int = 30) -> Path:
    """CIFAR-10 python batches of ``per_file`` random images each (the standard format)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (per_file, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in np.arange(per_file) % 10]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return root


def test_conv_nets_smoke_on_fabricated_cifar(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """conv-nets finds CIFAR-10 in --data-dir, runs its three variants and reports them
    (Fashion-MNIST hidden, so only CIFAR-10 runs)."""
    from dropoutlab.data import sources

    monkeypatch.setattr(sources, "FASHION_DEFAULT_DIR", str(tmp_path / "no-fashion-mnist"))
    data_dir = _tiny_cifar10(tmp_path / "data")
    experiment = EXPERIMENTS["conv-nets"]
    assert experiment.missing_data(str(data_dir)) is None  # type: ignore[attr-defined]
    analysis = run_in_process(experiment, tmp_path / "runs.sqlite", data_dir=str(data_dir))
    variants = [row[1] for row in analysis.tables[0].rows]
    assert variants == ["no dropout", "dropout in fc layers", "dropout in all layers"]
    assert str(analysis.tables[0].rows[0][3]) == "14.98"  # the paper's CIFAR-10 number
    check_report(analysis, tmp_path / "report")


@pytest.mark.skipif(not fashion_available(None),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_conv_nets_smoke_on_fashion_mnist(tmp_path: Path) -> None:
    """With Debian's Fashion-MNIST, conv-nets runs its three variants on the real images and
    states its findings: the ordering, dropout vs none, all layers vs fc only."""
    analysis = run_in_process(EXPERIMENTS["conv-nets"], tmp_path / "runs.sqlite")
    rows = analysis.tables[0].rows
    assert [(row[0], row[1]) for row in rows] == [
        ("fashion-mnist", v) for v in ("no dropout", "dropout in fc layers",
                                       "dropout in all layers")]
    claims = [f.claim for f in analysis.findings]
    assert "fashion-mnist: dropout beats no dropout" in claims
    assert "fashion-mnist: dropout in all layers beats dropout in the fc layers only" in claims
    check_report(analysis, tmp_path / "report")
