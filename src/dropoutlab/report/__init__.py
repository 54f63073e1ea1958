"""The reproduction report: tables beside the paper's numbers, figures that redraw the paper's.

:func:`write_report` takes the experiments' analyses (``experiments/base.py``) and writes, into
one folder that opens in a browser with no server and no network::

    index.html                     the page (html.py): header, contents, one section each
    <experiment>/<figure>.png|svg  every figure (figures.py)
    <experiment>/<table>.md|csv    every table (tables.py)

The header's facts (budget, data, hardware, versions, seeds, wall time, commit) are a
:class:`ReportMeta` (header.py).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from pathlib import Path

from dropoutlab.atomic_io import atomic_write_text, make_output_dir
from dropoutlab.errors import DropoutlabError, PathError
from dropoutlab.report.content import Analysis
from dropoutlab.report.figures import save_figure, use_agg
from dropoutlab.report.header import (
    ExperimentMeta,
    ReportMeta,
    collect_meta,
    format_seconds,
    meta_from_records,
)
from dropoutlab.report.html import ExperimentFiles, Skipped, render_page
from dropoutlab.report.tables import findings_text, format_cell, write_table

__all__ = [
    "ExperimentMeta",
    "ReportError",
    "ReportMeta",
    "Skipped",
    "collect_meta",
    "findings_text",
    "format_cell",
    "format_seconds",
    "meta_from_records",
    "use_agg",
    "write_report",
]

class ReportError(DropoutlabError):
    """The report folder cannot be written; the message names it."""


_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def _check_name(kind: str, name: str, seen: set[str]) -> None:
    if not _SAFE_NAME.match(name):
        raise ValueError(f"{kind} name must be letters, digits, '.', '_' or '-' (a file stem), "
                         f"got {name!r}")
    if name in seen:
        raise ValueError(f"{kind} name {name!r} is used twice; names must be unique")
    seen.add(name)


def _png_size(path: Path) -> tuple[int, int]:
    """Pixel width and height from a PNG's IHDR chunk."""
    with path.open("rb") as handle:
        head = handle.read(24)
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)


def write_report(analyses: Sequence[Analysis], out_dir: str | Path, meta: ReportMeta, *,
                 skipped: Sequence[Skipped] = ()) -> Path:
    """Write the report folder and return the path of its ``index.html``.

    Files of an earlier report in ``out_dir`` are replaced where names agree and otherwise
    left alone; every file is written through :func:`dropoutlab.atomic_io.atomic_write`, so a
    symlink planted in the folder is replaced, never followed. Figures are closed once saved.

    Args:
        analyses: One analysis per experiment, in the order the page shows them.
        out_dir: The report folder (created if needed).
        meta: The header's facts.
        skipped: Experiments that could not run, each with the reason shown on the page.

    Returns:
        The path of ``index.html``.

    Raises:
        ValueError: an experiment, table or figure name is not a safe file stem or is repeated.
        ReportError: ``out_dir`` is a file or cannot be created, or an experiment's folder in it
            is a symbolic link.
        PathError: a file cannot be written (full disk, read-only media).
    """
    out = Path(out_dir)
    try:
        make_output_dir(out, "`out_dir`")
    except PathError as err:
        raise ReportError(str(err)) from None
    use_agg()
    experiment_names: set[str] = set()
    written: list[ExperimentFiles] = []
    for analysis in analyses:
        _check_name("experiment", analysis.experiment, experiment_names)
        try:
            folder = make_output_dir(out / analysis.experiment, "the experiment's folder",
                                     allow_symlink=False)
        except PathError as err:
            raise ReportError(str(err)) from None
        files = ExperimentFiles(analysis)
        stems: set[str] = set()
        for figure in analysis.figures:
            _check_name("figure", figure.name, stems)
            png, svg = save_figure(figure, folder)
            files.figures.append((png.relative_to(out).as_posix(),
                                  svg.relative_to(out).as_posix(), _png_size(png)))
        stems = set()
        for table in analysis.tables:
            _check_name("table", table.name, stems)
            md, csv = write_table(table, folder)
            files.tables.append((md.relative_to(out).as_posix(), csv.relative_to(out).as_posix()))
        written.append(files)
    index = out / "index.html"  # a unique temporary file, then a rename: never half a page
    atomic_write_text(index, render_page(written, meta, skipped), what="the report page")
    return index
