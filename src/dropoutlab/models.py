"""The paper's networks built from a :class:`~dropoutlab.config.ModelConfig` (§6, Figs. 7–8).

* :class:`MLP`: fully connected net (Tables 2 and 9): optional input dropout, then per hidden
  layer Linear → ReLU/logistic → dropout, then a Linear output layer (logits).
* :class:`ConvNet`: the paper's conv net (§6.1.2, Tables 3–4): three blocks of 5×5 convolution
  ("same" padding) → ReLU → 2×2 max-pooling, two fully connected ReLU layers, a Linear output;
  dropout with ``conv_drop`` = (input, conv1, conv2, conv3, fc1, fc2) drop probabilities.
  Widths scale with ``conv_channels`` and ``conv_fc``.
* :class:`Autoencoder`: the 784-256-784 autoencoder of Figures 7–8: Linear → ReLU → dropout
  (``drop_hidden``) → Linear → sigmoid; the output has the input's size.

Every model takes flattened inputs (N, D) (see :mod:`dropoutlab.data`); the conv net reshapes
them to ``input_shape``. Dropout layers are :class:`dropoutlab.Dropout` (``dropout="bernoulli"``,
with ``scale``) or :class:`dropoutlab.GaussianDropout` (``"gaussian"``); ``"none"`` adds no
dropout layer at all. Evaluation mode is the paper's weight-scaling network (§4).

Hidden activations for analysis and KL-sparsity: ``model.forward_with_hidden(x)`` returns the
output and the list of hidden-layer activations (after the nonlinearity, before dropout) from
the same pass; ``model.hidden_activations(x)`` returns just that list. Both follow the model's
current mode, so call ``model.eval()`` first to analyse the deterministic network.
"""

from __future__ import annotations

import importlib
import itertools
from collections.abc import Callable, Sequence

import torch
from torch import nn

from dropoutlab.config import ModelConfig
from dropoutlab.layers import Dropout, GaussianDropout

__all__ = [
    "MLP",
    "Autoencoder",
    "ConvNet",
    "build_model",
    "build_user_model",
    "dropout_layers",
    "import_builder",
    "init_weights_",
    "set_dropout_generator",
]


def _dropout(kind: str, p: float, scale: str) -> nn.Module:
    """One dropout layer of ``kind``; ``nn.Identity`` when there is nothing to drop."""
    if kind == "none" or p == 0.0:
        return nn.Identity()
    if kind == "gaussian":
        return GaussianDropout(p)
    return Dropout(p, scale=scale)


def _activation(name: str) -> nn.Module:
    return nn.ReLU() if name == "relu" else nn.Sigmoid()


class _HiddenMixin(nn.Module):
    """Shared ``hidden_activations`` for models that implement ``forward_with_hidden``."""

    def forward_with_hidden(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:  # pragma: no cover - overridden
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's output (logits, or the reconstruction for the autoencoder)."""
        return self.forward_with_hidden(x)[0]

    def hidden_activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Activations of every hidden layer (after the nonlinearity, before dropout)."""
        return self.forward_with_hidden(x)[1]


class MLP(_HiddenMixin):
    """Fully connected dropout net, e.g. 784-1024-1024-10 (Table 2).

    Args:
        in_features: Input size D.
        hidden: Widths of the hidden layers.
        out_features: Number of classes.
        activation: ``"relu"`` or ``"logistic"``.
        dropout: ``"bernoulli"``, ``"gaussian"`` or ``"none"``.
        drop_input: Drop probability of the inputs.
        drop_hidden: Drop probability of every hidden layer.
        scale: Bernoulli scale mode, ``"train"`` (inverted) or ``"test"`` (the paper's).

    Shape:
        Input (N, D) (or (N, *) flattened); output (N, out_features) logits.
    """

    def __init__(self, in_features: int, hidden: Sequence[int], out_features: int, *,
                 activation: str = "relu", dropout: str = "bernoulli", drop_input: float = 0.2,
                 drop_hidden: float = 0.5, scale: str = "train") -> None:
        super().__init__()
        self.input_dropout = _dropout(dropout, drop_input, scale)
        widths = [in_features, *hidden]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))
        self.activation = _activation(activation)
        self.hidden_dropout = nn.ModuleList(
            _dropout(dropout, drop_hidden, scale) for _ in hidden
        )
        self.output = nn.Linear(widths[-1], out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, C). ReLU followed by Bernoulli dropout is one fused call per hidden layer
        (:meth:`Dropout.after_relu`): bitwise the output and gradients of the separate layers."""
        h = self.input_dropout(x.flatten(1))
        relu = isinstance(self.activation, nn.ReLU)
        for linear, drop in zip(self.hidden, self.hidden_dropout, strict=True):
            z = linear(h)
            h = drop.after_relu(z) if relu and isinstance(drop, Dropout) else drop(
                self.activation(z))
        out: torch.Tensor = self.output(h)
        return out

    def forward_with_hidden(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits (N, C) and the hidden activations [(N, h1), (N, h2), ...]."""
        h = self.input_dropout(x.flatten(1))
        hiddens = []
        for linear, drop in zip(self.hidden, self.hidden_dropout, strict=True):
            a = self.activation(linear(h))
            hiddens.append(a)
            h = drop(a)
        return self.output(h), hiddens


class ConvNet(_HiddenMixin):
    """The paper's conv net: 3 × (conv 5×5 → ReLU → max-pool 2×2), 2 fc ReLU layers, output.

    Args:
        input_shape: (C, H, W) of one example.
        out_features: Number of classes.
        channels: Filters of the three conv layers, e.g. (96, 128, 256).
        fc: Widths of the two fully connected layers, e.g. (2048, 2048).
        drops: Drop probabilities (input, conv1, conv2, conv3, fc1, fc2), §6.1.2.
        dropout: ``"bernoulli"``, ``"gaussian"`` or ``"none"``.
        scale: Bernoulli scale mode.

    Shape:
        Input (N, C·H·W) or (N, C, H, W); output (N, out_features) logits.
    """

    def __init__(self, input_shape: Sequence[int], out_features: int, *,
                 channels: Sequence[int] = (96, 128, 256), fc: Sequence[int] = (2048, 2048),
                 drops: Sequence[float] = (0.1, 0.25, 0.25, 0.5, 0.5, 0.5),
                 dropout: str = "bernoulli", scale: str = "train") -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"`input_shape` must be (C, H, W), got {tuple(input_shape)}")
        if len(channels) != 3 or len(fc) != 2 or len(drops) != 6:
            raise ValueError(
                "the conv net needs 3 `conv_channels`, 2 `conv_fc` widths and 6 `conv_drop` "
                f"values, got {len(channels)}, {len(fc)} and {len(drops)}"
            )
        c, h, w = (int(v) for v in input_shape)
        self.input_shape = (c, h, w)
        self.input_dropout = _dropout(dropout, drops[0], scale)
        self.convs = nn.ModuleList()
        self.conv_dropout = nn.ModuleList()
        for i, out_channels in enumerate(channels):
            self.convs.append(nn.Conv2d(c, out_channels, kernel_size=5, padding=2))
            self.conv_dropout.append(_dropout(dropout, drops[1 + i], scale))
            c, h, w = out_channels, (h + 1) // 2, (w + 1) // 2  # ceil-mode pooling
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        widths = [c * h * w, *fc]
        self.fc = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))
        self.fc_dropout = nn.ModuleList(_dropout(dropout, p, scale) for p in drops[4:6])
        self.output = nn.Linear(widths[-1], out_features)

    def forward_with_hidden(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits (N, C) and the hidden activations (3 conv maps, then 2 fc layers)."""
        h = self.input_dropout(x.reshape(len(x), *self.input_shape))  # (N, C, H, W)
        hiddens = []
        for conv, drop in zip(self.convs, self.conv_dropout, strict=True):
            a = self.pool(torch.relu(conv(h)))
            hiddens.append(a)
            h = drop(a)
        h = h.flatten(1)
        for linear, drop in zip(self.fc, self.fc_dropout, strict=True):
            a = torch.relu(linear(h))
            hiddens.append(a)
            h = drop(a)
        return self.output(h), hiddens


class Autoencoder(_HiddenMixin):
    """The autoencoder of Figures 7–8: D-h-D, ReLU hidden units, dropout on them, sigmoid output.

    Args:
        in_features: Input (and output) size D.
        hidden: Number of hidden units (256 in the paper).
        activation: Hidden nonlinearity, ``"relu"`` or ``"logistic"``.
        dropout: ``"bernoulli"``, ``"gaussian"`` or ``"none"``.
        drop_input: Drop probability of the inputs (0 in the paper's Figure 7).
        drop_hidden: Drop probability of the hidden units (0.5 in Figure 7).
        scale: Bernoulli scale mode.

    Shape:
        Input (N, D); output (N, D) reconstructions in (0, 1).
    """

    def __init__(self, in_features: int, hidden: int, *, activation: str = "relu",
                 dropout: str = "bernoulli", drop_input: float = 0.0, drop_hidden: float = 0.5,
                 scale: str = "train") -> None:
        super().__init__()
        self.input_dropout = _dropout(dropout, drop_input, scale)
        self.encoder = nn.Linear(in_features, hidden)
        self.activation = _activation(activation)
        self.hidden_dropout = _dropout(dropout, drop_hidden, scale)
        self.decoder = nn.Linear(hidden, in_features)

    def forward_with_hidden(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Reconstruction (N, D) and the hidden code [(N, hidden)]."""
        x = x.flatten(1)
        code = self.activation(self.encoder(self.input_dropout(x)))
        return torch.sigmoid(self.decoder(self.hidden_dropout(code))), [code]

    @property
    def features(self) -> torch.Tensor:
        """The learned features: the encoder's weight rows, (hidden, D) (Figure 7)."""
        return self.encoder.weight.detach()


@torch.no_grad()
def init_weights_(model: nn.Module, init: str, std: float,
                  generator: torch.Generator | None = None) -> nn.Module:
    """Initialise every Linear/Conv weight (biases zero) from ``generator``, in place.

    Args:
        model: The model.
        init: ``"normal"`` (N(0, std²), deepnet's choice for MNIST), ``"xavier"`` (Glorot
            normal) or ``"kaiming"`` (He normal, for ReLU).
        std: Standard deviation for ``"normal"``.
        generator: Seeded source of the draws; ``None`` uses the global generator.
    """
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            weight = module.weight
            fan_out, fan_in = weight.shape[0], weight[0].numel()
            receptive = weight[0, 0].numel()
            if init == "normal":
                sigma = std
            elif init == "xavier":
                sigma = (2.0 / (fan_in + fan_out * receptive)) ** 0.5
            else:
                sigma = (2.0 / fan_in) ** 0.5
            weight.normal_(0.0, sigma, generator=generator)
            if module.bias is not None:
                module.bias.zero_()
    return model


def dropout_layers(model: nn.Module) -> list[nn.Module]:
    """The dropoutlab dropout layers of ``model``, in order."""
    return [m for m in model.modules() if isinstance(m, Dropout | GaussianDropout)]


def set_dropout_generator(model: nn.Module, generator: torch.Generator | None) -> None:
    """Make every dropout layer of ``model`` draw its masks from ``generator``."""
    for layer in dropout_layers(model):
        layer.generator = generator  # type: ignore[assignment]


def import_builder(builder: str) -> Callable[[float, float], nn.Module]:
    """The user's model builder named ``"module:function"`` (``model.builder``).

    Raises:
        ValueError: the module cannot be imported or has no such callable.
    """
    module_name, _, name = builder.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"`model.builder` {builder!r}: cannot import module {module_name!r} "
                         f"({err}); it must be importable in every worker process") from None
    fn = module
    for part in name.split("."):
        fn = getattr(fn, part, None)  # type: ignore[assignment]
    if not callable(fn):
        raise ValueError(f"`model.builder` {builder!r}: module {module_name!r} has no "
                         f"function {name!r}")
    return fn


def build_user_model(model: ModelConfig, *,
                     generator: torch.Generator | None = None) -> nn.Module:
    """``builder(p, p_input)`` with ``p = model.drop_hidden``, ``p_input = model.drop_input``.

    The builder initialises its own weights with torch's global generator; it is called
    inside ``torch.random.fork_rng`` seeded from ``generator``, so the same run seed gives
    the same initial weights and the caller's global RNG state is left as it was.

    Raises:
        ValueError: no builder configured, or it cannot be imported.
        TypeError: the builder did not return an ``nn.Module``.
    """
    if model.builder is None:
        raise ValueError("`model.builder` is not set")
    fn = import_builder(model.builder)
    seed = (int(torch.randint(2**62, (1,), generator=generator).item())
            if generator is not None else None)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        net = fn(model.drop_hidden, model.drop_input)
    if not isinstance(net, nn.Module):
        raise TypeError(f"`model.builder` {model.builder!r} must return a torch.nn.Module, "
                        f"got {type(net).__name__}")
    return net


def build_model(model: ModelConfig, input_shape: Sequence[int], num_classes: int,
                *, generator: torch.Generator | None = None) -> nn.Module:
    """Build the network ``model`` describes for inputs of ``input_shape``.

    Args:
        model: The model config (kind, widths, units, dropout, init).
        input_shape: One example's shape, e.g. (1, 28, 28); its product is the input size.
        num_classes: Output classes (ignored by the autoencoder, whose output is the input).
        generator: Seeded source of the initial weights; ``None`` uses the global generator.

    Returns:
        An initialised :class:`MLP`, :class:`ConvNet` or :class:`Autoencoder` on the CPU.
    """
    if model.builder is not None:
        return build_user_model(model, generator=generator)
    in_features = 1
    for size in input_shape:
        in_features *= int(size)
    net: nn.Module
    if model.kind == "mlp":
        net = MLP(in_features, model.hidden, num_classes, activation=model.activation,
                  dropout=model.dropout, drop_input=model.drop_input,
                  drop_hidden=model.drop_hidden, scale=model.scale)
    elif model.kind == "convnet":
        net = ConvNet(input_shape, num_classes, channels=model.conv_channels, fc=model.conv_fc,
                      drops=model.conv_drop, dropout=model.dropout, scale=model.scale)
    else:
        net = Autoencoder(in_features, model.hidden[0], activation=model.activation,
                          dropout=model.dropout, drop_input=model.drop_input,
                          drop_hidden=model.drop_hidden, scale=model.scale)
    return init_weights_(net, model.init, model.init_std, generator)
