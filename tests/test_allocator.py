"""``allocator.keep_freed_memory``: freed tensors are reused without page faults; the switch."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dropoutlab import allocator
from dropoutlab.cli import main

GLIBC = allocator._glibc() and os.path.exists("/proc/self/stat")

# Allocates and frees a 64 MiB tensor 30 times and prints the minor page faults of the last 10
# (the first few allocations may still grow the heap).
_PROBE = """
import resource, torch
from dropoutlab.allocator import describe, keep_freed_memory
print(keep_freed_memory(), describe().split(" (")[0].replace(" ", "_"))
counts = []
for _ in range(30):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.empty(1 << 24)
    t.fill_(1.0)
    del t
    counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(counts[-10:]))
"""


def _probe(setting: str) -> tuple[str, str, int]:
    """(keep_freed_memory's result, describe()'s first words, faults) in a fresh process."""
    env = {**os.environ, allocator.ENV_VAR: setting}
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True,
                         text=True, check=True, timeout=120).stdout.split()
    return out[0], out[1], int(out[2])


@pytest.mark.skipif(not GLIBC, reason="needs glibc and /proc")
def test_freed_tensors_are_reused_without_page_faults() -> None:
    """With the setting, 10 allocations of 64 MiB (16384 pages each) fault under 100 times."""
    applied, described, faults = _probe("1")
    assert (applied, described) == ("True", "kept_for_reuse")
    assert faults < 100


@pytest.mark.skipif(not GLIBC, reason="needs glibc and /proc")
def test_switched_off_by_the_environment() -> None:
    """DROPOUTLAB_KEEP_FREED_MEMORY=0: nothing is changed and False is returned."""
    applied, described, _ = _probe("0")
    assert (applied, described) == ("False", "returned_to_the_system")


def test_not_glibc_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    """Elsewhere than glibc the C library is not touched at all."""
    monkeypatch.setattr(allocator, "_glibc", lambda: False)
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda *a: pytest.fail("libc was loaded"))
    monkeypatch.delenv(allocator.ENV_VAR, raising=False)
    assert allocator.keep_freed_memory() is False


def test_bad_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(allocator.ENV_VAR, "yes")
    with pytest.raises(ValueError, match="DROPOUTLAB_KEEP_FREED_MEMORY must be 0 or 1, "
                                         "got 'yes'"):
        allocator.keep_freed_memory()


def test_cli_rejects_a_bad_setting(monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The command exits 2 with the message, no traceback."""
    monkeypatch.setenv(allocator.ENV_VAR, "on")
    assert main(["list"]) == 2
    err = capsys.readouterr().err
    assert "DROPOUTLAB_KEEP_FREED_MEMORY must be 0 or 1, got 'on'" in err
    assert "Traceback" not in err
