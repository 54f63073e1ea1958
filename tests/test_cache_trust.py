"""Tests for dropoutlab.cache_trust: code is loaded only from folders and files no one else
can write (a library planted in a shared cache would run as the current user)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from dropoutlab.cache_trust import (
    UntrustedPathError,
    check_trusted,
    private_cache_dir,
    trusted_cache_dir,
    trusted_dir,
    untrusted_reason,
)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


@pytest.fixture
def private(tmp_path: Path) -> Path:
    """A folder of this user's with mode 0700 (pytest's tmp_path folders are private)."""
    folder = tmp_path / "cache"
    folder.mkdir(mode=0o700)
    return folder


class TestUntrustedReason:
    def test_private_folder_and_file_are_trusted(self, private: Path) -> None:
        """This user's folder (0700) and a 0644 file in it may be loaded from."""
        library = private / "k.so"
        library.write_bytes(b"\x7fELF")
        library.chmod(0o644)
        assert untrusted_reason(private) is None and untrusted_reason(library) is None
        assert trusted_dir(private)
        assert check_trusted(library) == library

    @pytest.mark.parametrize("mode", [0o777, 0o770, 0o702])
    def test_group_or_world_writable_folder(self, private: Path, mode: int) -> None:
        """A folder others may write is refused with its mode."""
        private.chmod(mode)
        assert f"writable by group or others (mode {mode:o})" in (untrusted_reason(private)
                                                                    or "")
        assert not trusted_dir(private)

    def test_world_writable_file(self, private: Path) -> None:
        """A library file others may write is refused even in a private folder."""
        library = private / "k.so"
        library.write_bytes(b"x")
        library.chmod(0o666)
        with pytest.raises(UntrustedPathError, match=r"k\.so', which is writable by group"):
            check_trusted(library, "cached kernel")

    @needs_root
    def test_file_and_folder_of_another_user(self, private: Path) -> None:
        """A file or folder planted by another user (uid 65534 here) is refused."""
        library = private / "k.so"
        library.write_bytes(b"x")
        os.chown(library, 65534, 65534)
        assert "owned by uid 65534" in (untrusted_reason(library) or "")
        os.chown(private, 65534, 65534)
        assert "owned by uid 65534" in (untrusted_reason(private) or "")

    def test_symlink_is_refused(self, private: Path, tmp_path: Path) -> None:
        """A symlink in place of the library (or folder) is never followed."""
        target = tmp_path / "elsewhere.so"
        target.write_bytes(b"x")
        link = private / "k.so"
        link.symlink_to(target)
        assert untrusted_reason(link) == "is a symbolic link"
        folder_link = tmp_path / "link"
        folder_link.symlink_to(private)
        assert not trusted_dir(folder_link)

    def test_in_a_folder_others_can_write(self, tmp_path: Path) -> None:
        """A private file inside a non-sticky world-writable folder can be swapped: refused;
        the same folder with the sticky bit (like /tmp) is fine."""
        shared = tmp_path / "shared"
        shared.mkdir()
        shared.chmod(0o777)
        mine = shared / "mine"
        mine.mkdir(mode=0o700)
        assert "which others can write (mode 777, not sticky)" in (untrusted_reason(mine) or "")
        shared.chmod(0o1777)
        assert untrusted_reason(mine) is None

    def test_missing_path(self, tmp_path: Path) -> None:
        """A path that is not there is not trusted and says so."""
        assert "cannot be inspected" in (untrusted_reason(tmp_path / "nope") or "")
        with pytest.raises(UntrustedPathError, match="set DROPOUTLAB_CACHE to a private"):
            check_trusted(tmp_path / "nope")


class TestTrustedCacheDir:
    def test_missing_folder_is_created_private(self, tmp_path: Path) -> None:
        """A cache folder that does not exist yet is created with mode 0700 and used."""
        wanted = tmp_path / "a" / "kernels"
        assert trusted_cache_dir(wanted) == wanted
        assert wanted.stat().st_mode & 0o777 == 0o700

    def test_untrusted_folder_falls_back_with_a_warning(
            self, private: Path, caplog: pytest.LogCaptureFixture) -> None:
        """A world-writable cache folder is not used: a private one is, with a warning."""
        private.chmod(0o777)
        (private / "planted.so").write_bytes(b"evil")
        with caplog.at_level(logging.WARNING, logger="dropoutlab.cache_trust"):
            chosen = trusted_cache_dir(private)
        assert chosen != private and trusted_dir(chosen)
        assert not (chosen / "planted.so").exists()
        assert "writable by group or others" in caplog.text and str(chosen) in caplog.text

    def test_private_cache_dir_is_private(self) -> None:
        """The fallback folder belongs to this user alone."""
        folder = private_cache_dir("kernels-test")
        assert trusted_dir(folder)
        assert folder.stat().st_mode & 0o077 == 0


def test_kernels_never_load_a_library_planted_in_a_world_writable_cache(tmp_path: Path) -> None:
    """Copies of the real compiled libraries in a world-writable DROPOUTLAB_CACHE/kernels are
    not loaded: a fresh process warns and builds into (or loads from) its private folder."""
    import shutil
    import subprocess
    import sys

    from dropoutlab import kernels

    if not kernels.available():
        pytest.skip("native kernels unavailable on this machine")
    library = kernels.library()
    assert library is not None
    planted = tmp_path / "shared" / "kernels"
    planted.mkdir(parents=True)
    for built in library.path.parent.glob("*.so"):
        shutil.copy2(built, planted / built.name)
    planted.chmod(0o777)
    code = ("from dropoutlab import kernels\n"
            "assert kernels.available(), kernels.require()\n"
            "print(kernels.library().path)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "DROPOUTLAB_CACHE": str(tmp_path / "shared")},
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    loaded = Path(done.stdout.strip().splitlines()[-1])
    assert planted not in loaded.parents
    assert "not loading code from the cache folder" in done.stderr
