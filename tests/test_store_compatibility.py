"""Stores written by older code stay valid: same config hashes, same task identity, nothing
retrained (design.md, "Users' stores and configs are sacred").

The fixtures in ``fixtures/main_4d5871b`` were written by commit 4d5871b (see its README): a
smoke-budget store of every experiment, and every job key of every experiment and budget.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from dropoutlab.config import HASH_NEUTRAL_DEFAULTS, RunConfig, config_hash
from dropoutlab.experiments import EXPERIMENTS, missing_data
from dropoutlab.reproduce import reproduce
from dropoutlab.run_status import FINAL_STATUSES
from dropoutlab.sweeps import Job, Store, SweepOptions

FIXTURE = Path(__file__).parent / "fixtures" / "main_4d5871b"

# Grids redesigned on purpose since 4d5871b, so their job keys are new (issue 15: the quick
# designs of Table 2 and Table 9 keep the paper's premises: paper widths for Table 2, each
# regularizer's own recipe for Table 9, the paper's widths for Figure 10). Their old configs
# must still hash to their old keys.
REDESIGNED = {"mnist-architectures/quick", "regularizers/quick", "dataset-size/quick"}
# Grids that gained seeds on some rows: the old jobs must all still be there, unchanged.
EXTENDED = {"retention-rate/quick"}
# Experiments whose grids gained rows the old code could not build (conv-nets: Fashion-MNIST
# from Debian's dataset-fashion-mnist); their old rows must be unchanged, the new ones are new.
NEW_ROWS = {"conv-nets": "fashion-mnist "}


def old_jobs() -> dict[str, object]:
    with gzip.open(FIXTURE / "job_keys.json.gz", "rt", encoding="utf-8") as f:
        data: dict[str, object] = json.load(f)
    return data


@pytest.mark.parametrize("grid", sorted(old_jobs()))
def test_every_old_job_key_is_computed_again(grid: str) -> None:
    """Each experiment's grid at each budget gives the same jobs (name, task, key) as the old
    code, and each old config, read back, hashes to its old key."""
    name, _, budget = grid.partition("/")
    old = old_jobs()[grid]
    if isinstance(old, dict):  # the old code could not build it here (data absent)
        pytest.skip(f"{grid}: {old['error']}")
    assert isinstance(old, list)
    if grid not in REDESIGNED:
        new = [j for j in EXPERIMENTS[name].jobs(budget)
               if name not in NEW_ROWS or not j.name.startswith(NEW_ROWS[name])]
        got = [(j.name, j.task, j.key) for j in new]
        want = [(o["name"], o["task"], o["key"]) for o in old]
        if grid in EXTENDED:
            assert [job for job in got if job in set(want)] == want
            assert len(got) > len(want)
        else:
            assert got == want
    for o in old:
        job = Job(name, o["name"], RunConfig.from_dict(o["config"]), o["task"])
        assert job.key == o["key"]


def test_old_store_opens_with_every_run_recognised(tmp_path: Path) -> None:
    """The old smoke store opens (read-only and for writing) and every smoke job of every
    experiment it holds is there, finished, under its old key: a re-run trains nothing."""
    path = tmp_path / "runs.sqlite"
    shutil.copyfile(FIXTURE / "runs.sqlite", path)
    with Store.open_readonly(path) as db:
        stored = {r.config_hash: r for r in db.records()}
    assert stored
    old = _smoke_jobs_of_old_grids()
    for job in old:
        assert job.key in stored, f"{job.experiment}: {job.name} not recognised"
        assert stored[job.key].status in FINAL_STATUSES
    with Store(path) as db:
        statuses = db.register(old)
    assert all(status in FINAL_STATUSES for status in statuses.values())


def _smoke_jobs_of_old_grids() -> list[Job]:
    """Today's smoke jobs of every grid the old code could build (not its new rows)."""
    jobs = []
    for name, experiment in EXPERIMENTS.items():
        if isinstance(old_jobs().get(f"{name}/smoke"), dict) or missing_data(experiment):
            continue  # conv-nets: no CIFAR/SVHN where the fixture was written
        jobs += [j for j in experiment.jobs("smoke")
                 if name not in NEW_ROWS or not j.name.startswith(NEW_ROWS[name])]
    return jobs


def test_reproduce_all_on_the_old_store_trains_nothing(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """`reproduce all --budget smoke` on the old store skips every run and reports them
    (Fashion-MNIST, which the old code had no grid for, hidden)."""
    from dropoutlab.data import sources

    monkeypatch.setattr(sources, "FASHION_DEFAULT_DIR", str(tmp_path / "no-fashion-mnist"))
    path = tmp_path / "runs.sqlite"
    shutil.copyfile(FIXTURE / "runs.sqlite", path)
    result = reproduce("all", budget="smoke", out_dir=tmp_path / "report",
                       sweep=SweepOptions(store=path, progress=False))
    assert result.summary is not None and result.summary.ok
    assert result.summary.done == 0 and result.summary.skipped == result.summary.total > 0
    assert result.index.is_file()


def test_new_fields_at_their_neutral_default_leave_the_hash_alone() -> None:
    """A config dict without the fields added since (what older code stored) hashes like the
    same config with those fields at their neutral defaults."""
    full = RunConfig().to_dict()
    old = json.loads(json.dumps(full))
    for dotted in HASH_NEUTRAL_DEFAULTS:
        section, _, key = dotted.rpartition(".")
        (old[section] if section else old).pop(key, None)
    assert config_hash(full) == config_hash(old)
    assert config_hash(RunConfig.from_dict(old)) == config_hash(full)
