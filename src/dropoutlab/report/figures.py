"""Report figures: each analysis figure saved as PNG (shown in the page) and SVG (for papers).

The figures themselves are drawn by the experiments so that they redraw the paper's (same axes,
log scales and error bars where the paper has them); this module only writes them, without a
display (Agg), reproducibly: the SVG carries no date and stable element ids, so rebuilding a
report from the same runs gives the same files.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

from dropoutlab.atomic_io import atomic_write
from dropoutlab.report.content import Figure

__all__ = ["PNG_DPI", "save_figure", "use_agg"]

PNG_DPI = 144  # sharp on high-density screens, still small (a few hundred kB per figure)


def use_agg() -> None:
    """Select matplotlib's Agg backend unless a figure window is already open.

    Reports are written on servers and in CI, where there is no display; call this before any
    experiment draws a figure.
    """
    import matplotlib.pyplot as plt

    if not plt.get_fignums():
        matplotlib.use("Agg", force=True)


def save_figure(figure: Figure, directory: Path) -> tuple[Path, Path]:
    """Write ``<name>.png`` and ``<name>.svg`` into ``directory`` and release the figure.

    Args:
        figure: The analysis figure (its matplotlib figure is closed afterwards, so memory does
            not grow with the number of experiments).
        directory: An existing folder.

    Returns:
        The paths of the PNG and the SVG.
    """
    import matplotlib.pyplot as plt

    png_path = directory / f"{figure.name}.png"
    svg_path = directory / f"{figure.name}.svg"
    mpl_figure = figure.figure
    with matplotlib.rc_context({"svg.hashsalt": f"dropoutlab-{figure.name}",
                                "svg.fonttype": "none"}):
        try:  # unique temporary files and renames: a planted symlink is never followed
            atomic_write(png_path, lambda handle: mpl_figure.savefig(
                handle, format="png", dpi=PNG_DPI, bbox_inches="tight", facecolor="white",
                metadata={"Software": None}), what="a report figure")
            atomic_write(svg_path, lambda handle: mpl_figure.savefig(
                handle, format="svg", bbox_inches="tight", facecolor="white",
                metadata={"Date": None, "Creator": None}), what="a report figure")
        finally:
            plt.close(mpl_figure)
    return png_path, svg_path
