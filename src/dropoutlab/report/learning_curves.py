"""Learning curves of one run: loss and error per epoch, the overfitting onset marked.

The figure ``dropoutlab train`` writes beside its results (``learning_curves.png``), drawn from
plain per-epoch rows so that the report needs nothing from training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dropoutlab.atomic_io import atomic_write

__all__ = ["save_learning_curves"]


def save_learning_curves(history: Sequence[Mapping[str, Any]], path: Path, *,
                         onset: int | None, error_label: str, title: str) -> None:
    """Plot train/validation/test loss and error per epoch into the image file ``path``.

    Args:
        history: One row per epoch with ``epoch`` and ``{train,val,test}_{loss,error}`` keys
            (a missing or ``None`` value is not drawn).
        path: The image to write (its suffix picks the format).
        onset: The epoch the validation loss started to rise (a red line), or ``None``.
        error_label: The error axis' label, e.g. ``"error %"``.
        title: The figure's title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(10, 4))
    for split, style in (("train", "-"), ("val", "--"), ("test", ":")):
        for ax, metric in ((ax_loss, "loss"), (ax_err, "error")):
            pairs = [(e, row[f"{split}_{metric}"]) for e, row in zip(epochs, history, strict=True)
                     if row.get(f"{split}_{metric}") is not None]
            if pairs:
                ax.plot(*zip(*pairs, strict=True), style, label=split)
    for ax in (ax_loss, ax_err):
        if onset is not None:
            ax.axvline(onset, color="red", alpha=0.5, label=f"overfitting onset (epoch {onset})")
        ax.set_xlabel("epoch")
        ax.legend()
    ax_loss.set_ylabel("loss")
    ax_err.set_ylabel(error_label)
    ax_err.set_yscale("log")
    ax_err.yaxis.set_major_formatter(ticker.ScalarFormatter())
    ax_err.yaxis.set_minor_formatter(ticker.NullFormatter())
    fig.suptitle(title)
    fig.tight_layout()
    try:  # a unique temporary file and a rename: a symlink at ``path`` is never followed
        atomic_write(path, lambda handle: fig.savefig(handle, format=Path(path).suffix[1:],
                                                      dpi=100))
    finally:
        plt.close(fig)
