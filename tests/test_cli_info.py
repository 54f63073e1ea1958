"""Tests of the ``dropoutlab`` command line entry point and its ``info`` subcommand."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dropoutlab import cli
from dropoutlab.cli import info
from dropoutlab.errors import ConfigError


def test_info_exits_zero_and_prints_fixed_width_facts(capsys: pytest.CaptureFixture[str]) -> None:
    """``dropoutlab info`` returns 0 and prints one aligned ``key  value`` line per fact,
    including the versions, the backend and whether the native kernels are available."""
    assert cli.main(["info"]) == 0
    lines = capsys.readouterr().out.splitlines()
    facts = {line[: line.index("  ")].strip(): line for line in lines}
    for key in ("dropoutlab", "python", "torch", "cuda", "threads", "backend", "native kernels",
                "freed memory"):
        assert key in facts, lines
    width = max(len(key) for key in facts)
    assert all(line[width : width + 2] == "  " for line in lines)  # values start in one column


def test_info_reports_the_selected_backend(capsys: pytest.CaptureFixture[str]) -> None:
    """The ``backend`` line shows the backend selected with ``use_backend``."""
    from dropoutlab.backend import use_backend

    with use_backend("torch"):
        cli.main(["info"])
    backend_line = next(line for line in capsys.readouterr().out.splitlines()
                        if line.startswith("backend "))
    assert backend_line.split()[-1] == "torch"


def test_unknown_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown subcommand is a usage error: one line on stderr, exit status 2."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["no-such-command"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "dropoutlab: error:" in err and "no-such-command" in err


def test_missing_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """No subcommand at all is also a usage error (exit 2)."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main([])
    assert exit_info.value.code == 2


def test_user_errors_print_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A DropoutlabError (or ValueError) raised by a handler becomes one stderr line, exit 2."""

    def fail(args: object) -> int:
        raise ConfigError("`optim.lr` must be > 0, got optim.lr=-1")

    monkeypatch.setattr(info, "run", fail)
    assert cli.main(["info"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["dropoutlab info: error: `optim.lr` must be > 0, got optim.lr=-1"]


def test_ctrl_c_exits_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """KeyboardInterrupt in a handler exits with status 130 and a short message."""

    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(info, "run", interrupted)
    assert cli.main(["info"]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_python_dash_m_entry_point() -> None:
    """``python -m dropoutlab.cli info`` runs in a fresh interpreter and exits 0."""
    done = subprocess.run([sys.executable, "-m", "dropoutlab.cli", "info"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("dropoutlab")


def test_info_says_when_freed_memory_goes_back(capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """With DROPOUTLAB_KEEP_FREED_MEMORY=0 the ``freed memory`` line says it is returned."""
    from dropoutlab import allocator

    monkeypatch.setattr(allocator, "_applied", False)  # an earlier test may have applied it
    monkeypatch.setenv("DROPOUTLAB_KEEP_FREED_MEMORY", "0")
    assert cli.main(["info"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("freed memory"))
    assert "returned to the system (DROPOUTLAB_KEEP_FREED_MEMORY=0)" in line
