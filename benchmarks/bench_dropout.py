"""Run the dropout benchmark suite (``make bench``); same as ``dropoutlab bench``.

The measuring code lives in :mod:`dropoutlab.kernels.bench` so that an installed package can run
it too; this file is the thin runner, and ``mnist_plain_torch.py`` next to it is the plain-PyTorch
peer of the quick MNIST epoch. Arguments are those of ``dropoutlab bench --help``.
"""

from __future__ import annotations

import sys

from dropoutlab.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
