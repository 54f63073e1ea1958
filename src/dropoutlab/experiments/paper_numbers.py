"""Every number printed in the paper that dropoutlab compares with (shared/paper.md).

Srivastava et al., "Dropout: A Simple Way to Prevent Neural Networks from Overfitting", JMLR 15
(2014). Values are test error in percent unless named otherwise. Those marked (?) in
shared/paper.md could not be checked against the printed paper: they carry ``uncertain=True``
and reports keep the mark.
"""

from __future__ import annotations

from dropoutlab.report.content import PaperValue

__all__ = [
    "FIGURE7_MEAN_ACTIVATION",
    "FIGURE9_PN_FIXED_SMALL_P",
    "RECIPE",
    "TABLE2",
    "TABLE4",
    "TABLE9",
    "TABLE10",
    "TABLE10_STD",
]


def _t(value: float, source: str, uncertain: bool = False) -> PaperValue:
    return PaperValue(value, source, uncertain)


# Table 2 — MNIST test error %, permutation invariant; dropout nets retain 0.5 hidden, 0.8 input.
TABLE2: dict[str, PaperValue] = {
    "standard logistic 2×800": _t(1.60, "Table 2"),
    "SVM, Gaussian kernel": _t(1.40, "Table 2"),
    "dropout logistic 3×1024": _t(1.35, "Table 2"),
    "dropout ReLU 3×1024": _t(1.25, "Table 2"),
    "dropout + max-norm ReLU 3×1024": _t(1.06, "Table 2"),
    "dropout + max-norm ReLU 3×2048": _t(1.04, "Table 2", uncertain=True),
    "dropout + max-norm ReLU 2×4096": _t(1.01, "Table 2"),
    "dropout + max-norm ReLU 2×8192": _t(0.95, "Table 2"),
    "DBN pretraining + dropout finetuning 500-500-2000": _t(0.92, "Table 2"),
    "DBM pretraining + dropout finetuning 500-500-2000": _t(0.79, "Table 2"),
}

# Table 9 — regularizers on a 784-1024-1024-2048-10 ReLU net, each tuned on validation.
TABLE9: dict[str, PaperValue] = {
    "L2": _t(1.62, "Table 9"),
    "L2 + L1 towards the end": _t(1.60, "Table 9"),
    "L2 + KL-sparsity": _t(1.55, "Table 9"),
    "max-norm": _t(1.35, "Table 9"),
    "dropout + L2": _t(1.25, "Table 9"),
    "dropout + max-norm": _t(1.05, "Table 9"),
}

# Table 10 — Bernoulli vs Gaussian dropout (σ = sqrt((1 − p)/p) per layer), test error %.
TABLE10: dict[str, PaperValue] = {
    "MNIST 2×1024 Bernoulli": _t(1.08, "Table 10"),
    "MNIST 2×1024 Gaussian": _t(0.95, "Table 10"),
    "CIFAR-10 Bernoulli": _t(12.6, "Table 10"),
    "CIFAR-10 Gaussian": _t(12.5, "Table 10"),
}
# The ± printed beside Table 10's values; the MNIST ones are (?) in shared/paper.md.
TABLE10_STD: dict[str, PaperValue] = {
    "MNIST 2×1024 Bernoulli": _t(0.04, "Table 10", uncertain=True),
    "MNIST 2×1024 Gaussian": _t(0.04, "Table 10", uncertain=True),
    "CIFAR-10 Bernoulli": _t(0.1, "Table 10"),
    "CIFAR-10 Gaussian": _t(0.1, "Table 10"),
}

# Tables 3 and 4 (and the "other data sets" table of shared/paper.md) — conv nets with max
# pooling: (data set, variant) → test error %.
TABLE4: dict[tuple[str, str], PaperValue] = {
    ("svhn", "no dropout"): _t(3.95, "Table 3"),
    ("svhn", "dropout in fc layers"): _t(3.02, "Table 3"),
    ("svhn", "dropout in all layers"): _t(2.55, "Table 3"),
    ("cifar10", "no dropout"): _t(14.98, "Table 4"),
    ("cifar10", "dropout in fc layers"): _t(14.32, "Table 4"),
    ("cifar10", "dropout in all layers"): _t(12.61, "Table 4"),
    ("cifar100", "no dropout"): _t(43.48, "Table 4"),
    ("cifar100", "dropout in fc layers"): _t(41.26, "Table 4", uncertain=True),
    ("cifar100", "dropout in all layers"): _t(37.20, "Table 4"),
}

# Other data sets of the paper that dropoutlab has no preset for (reference only; shared/paper.md
# gives no table numbers for them, so the source says "Section 6").
OTHER_DATASETS: dict[str, tuple[PaperValue | None, PaperValue]] = {
    "TIMIT phone error, 6-layer net": (_t(23.4, "Section 6"), _t(21.8, "Section 6")),
    "Reuters RCV1, 50 classes": (_t(31.05, "Section 6"), _t(29.62, "Section 6")),
    "ImageNet 2010 top-1, conv net": (None, _t(37.5, "Section 6")),
    "ImageNet 2010 top-5, conv net": (None, _t(17.0, "Section 6")),
}

# Figure 9 b — with p·n fixed, small p improves sharply: p = 0.1 goes from 2.7 % (n fixed,
# Figure 9 a) to 1.7 %; the best p is about 0.6, and p = 0.5 is close to optimal.
FIGURE9_PN_FIXED_SMALL_P: dict[str, PaperValue] = {
    "p=0.1, n fixed (test error %)": _t(2.7, "Figure 9a"),
    "p=0.1, p·n fixed (test error %)": _t(1.7, "Figure 9b"),
    "best retention p, p·n fixed": _t(0.6, "Figure 9b"),
}

# Figure 7/8 — mean hidden activation of the 784-256-784 ReLU autoencoder.
FIGURE7_MEAN_ACTIVATION: dict[str, PaperValue] = {
    "without dropout": _t(2.0, "Figure 8"),
    "with dropout (retention 0.5)": _t(0.7, "Figure 8"),
}

# Figure 11 — MC averaging matches weight scaling at about k = 50 sampled nets.
FIGURE11_MATCH_K = _t(50, "Figure 11")

# The recipe (§5.1, Appendix A, B.1) as numbers, for the notes of the paper budget.
RECIPE: dict[str, PaperValue] = {
    "retention, input": _t(0.8, "Appendix A.4"),
    "retention, hidden": _t(0.5, "Appendix A.4"),
    "max-norm c (typical)": _t(3.0, "Section 5.1"),
    "max-norm c (MNIST, Appendix B.1)": _t(2.0, "Appendix B.1"),
    "momentum start": _t(0.5, "Appendix A.2"),
    "momentum end": _t(0.99, "Appendix A.2"),
    "weight updates": _t(1e6, "Appendix B.1"),
    "batch size": _t(100, "Appendix B.1"),
    "conv net max-norm c": _t(4.0, "Section 6.1.2", uncertain=True),
}
