"""Tests for dropoutlab.atomic_io: atomic writes that never follow a planted link, and path
checks that name the argument, what was expected and what was found."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import pytest

from dropoutlab.atomic_io import (
    atomic_write,
    atomic_write_text,
    check_input_dir,
    check_input_file,
    check_output_dir,
    check_output_file,
    make_output_dir,
)
from dropoutlab.errors import PathError


class TestAtomicWrite:
    def test_writes_and_replaces(self, tmp_path: Path) -> None:
        """The file holds the new bytes, with umask permissions, and no temporary is left."""
        path = tmp_path / "out.txt"
        path.write_text("old")
        atomic_write_text(path, "new ✓")
        assert path.read_text(encoding="utf-8") == "new ✓"
        umask = os.umask(0)
        os.umask(umask)
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]

    def test_a_symlink_is_replaced_not_followed(self, tmp_path: Path) -> None:
        """A link planted at the target is replaced by a regular file; its target is kept."""
        victim = tmp_path / "victim"
        victim.write_text("precious")
        link = tmp_path / "out.txt"
        link.symlink_to(victim)
        atomic_write_text(link, "mine")
        assert victim.read_text() == "precious"
        assert not link.is_symlink() and link.read_text() == "mine"

    def test_a_failing_writer_keeps_the_old_file(self, tmp_path: Path) -> None:
        """An exception inside the writer leaves the old file and no temporary."""
        path = tmp_path / "out.bin"
        path.write_bytes(b"old")

        def fail(handle: BinaryIO) -> None:
            handle.write(b"half")
            raise OSError(28, "No space left on device")

        with pytest.raises(PathError, match=r"cannot write `--out` .*out\.bin'.*disk is full"):
            atomic_write(path, fail, what="`--out`")
        assert path.read_bytes() == b"old"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]

    def test_interrupt_leaves_no_temporary(self, tmp_path: Path) -> None:
        """Ctrl-C while writing propagates; the temporary file is removed."""
        def interrupted(handle: BinaryIO) -> None:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            atomic_write(tmp_path / "x", interrupted)
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.parametrize("kind", ["folder", "fifo", "under a file"])
    def test_unwritable_targets(self, tmp_path: Path, kind: str) -> None:
        """A folder, a FIFO or a path under a file is refused before anything is written."""
        plain = tmp_path / "plain"
        plain.write_text("x")
        target = {"folder": tmp_path, "fifo": tmp_path / "fifo",
                  "under a file": plain / "out"}[kind]
        if kind == "fifo":
            os.mkfifo(target)
        with pytest.raises(PathError, match="`--out` must be"):
            atomic_write_text(target, "x", what="`--out`")
        assert plain.read_text() == "x"


class TestChecks:
    def test_input_file(self, tmp_path: Path) -> None:
        """Missing, folder and FIFO inputs are refused with the kind found and the hint."""
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        for path, words in ((tmp_path / "nope", "which does not exist"),
                            (tmp_path, "which is a folder"),
                            (fifo, r"which is a FIFO \(named pipe\)")):
            with pytest.raises(PathError, match=f"`--config` must be .*{words}; do this"):
                check_input_file(path, "`--config`", hint="do this")
        ok = tmp_path / "ok"
        ok.write_text("x")
        assert check_input_file(ok, "`--config`") == ok

    def test_input_dir(self, tmp_path: Path) -> None:
        """A missing folder or a file where a folder is wanted is refused."""
        (tmp_path / "f").write_text("x")
        with pytest.raises(PathError, match=r"must be an existing folder.*does not exist"):
            check_input_dir(tmp_path / "nope", "`--data-dir`")
        with pytest.raises(PathError, match=r"must be a folder.*which is a regular file"):
            check_input_dir(tmp_path / "f", "`--data-dir`")
        assert check_input_dir(tmp_path, "`--data-dir`") == tmp_path

    def test_output_paths(self, tmp_path: Path) -> None:
        """Output folders and files: the wrong kind or a path under a file is refused, a new
        path in a writable folder is fine, and nothing is created by a check."""
        (tmp_path / "f").write_text("x")
        with pytest.raises(PathError, match=r"must be a folder.*which is a regular file"):
            check_output_dir(tmp_path / "f", "`--out`")
        with pytest.raises(PathError, match="a parent of it is a file"):
            check_output_dir(tmp_path / "f" / "sub", "`--out`")
        with pytest.raises(PathError, match=r"must be a file path.*which is a folder"):
            check_output_file(tmp_path, "`--out`")
        assert check_output_dir(tmp_path / "a" / "b", "`--out`") == tmp_path / "a" / "b"
        assert check_output_file(tmp_path / "new.csv", "`--out`") == tmp_path / "new.csv"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]

    def test_make_output_dir_and_symlinks(self, tmp_path: Path) -> None:
        """Folders are created with their parents; a link is refused where it must not be."""
        made = make_output_dir(tmp_path / "a" / "b", "`--out`")
        assert made.is_dir()
        link = tmp_path / "link"
        link.symlink_to(made)
        assert make_output_dir(link, "`--out`") == link
        with pytest.raises(PathError, match=r"must be a real folder.*symbolic link"):
            make_output_dir(link, "the experiment's folder", allow_symlink=False)
