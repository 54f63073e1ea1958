"""Tests for dropoutlab.models: shapes, dropout wiring, hidden activations, init, builders."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from dropoutlab.config import ModelConfig
from dropoutlab.layers import Dropout, GaussianDropout
from dropoutlab.models import (
    MLP,
    Autoencoder,
    ConvNet,
    build_model,
    dropout_layers,
    init_weights_,
    set_dropout_generator,
)


class TestMLP:
    def test_paper_architecture_parameter_count(self) -> None:
        """784-1024-1024-10 has 1,863,690 parameters (weights + biases)."""
        model = build_model(ModelConfig(hidden=(1024, 1024)), (1, 28, 28), 10)
        assert sum(p.numel() for p in model.parameters()) == 1_863_690

    def test_output_and_hidden_shapes(self) -> None:
        """Logits are (N, C); hidden activations come one per layer with its width."""
        model = MLP(64, (32, 16), 10)
        out, hidden = model.forward_with_hidden(torch.rand(5, 64))
        assert out.shape == (5, 10)
        assert [h.shape for h in hidden] == [(5, 32), (5, 16)]
        assert len(model.hidden_activations(torch.rand(3, 64))) == 2

    @pytest.mark.parametrize("kind, layer_type", [("bernoulli", Dropout),
                                                  ("gaussian", GaussianDropout)])
    def test_dropout_kinds(self, kind: str, layer_type: type) -> None:
        """Input and each hidden layer get a dropout layer of the configured kind and p."""
        model = MLP(8, (4, 4), 2, dropout=kind, drop_input=0.2, drop_hidden=0.5)
        layers = dropout_layers(model)
        assert [type(layer) for layer in layers] == [layer_type] * 3
        assert [layer.p for layer in layers] == [0.2, 0.5, 0.5]  # type: ignore[attr-defined]

    def test_none_has_no_dropout(self) -> None:
        """dropout='none' adds no dropout layer, so training and eval agree."""
        model = MLP(8, (4,), 2, dropout="none")
        assert dropout_layers(model) == []
        x = torch.rand(3, 8)
        assert torch.equal(model.train()(x), model.eval()(x))

    def test_scale_mode_passed(self) -> None:
        """The Bernoulli scale mode reaches the layers (the paper's test-time scaling)."""
        model = MLP(8, (4,), 2, scale="test")
        assert {layer.scale for layer in dropout_layers(model)} == {"test"}  # type: ignore[attr-defined]

    def test_logistic_units(self) -> None:
        """Logistic hidden units output values in (0, 1)."""
        model = MLP(8, (4,), 2, activation="logistic").eval()
        hidden = model.hidden_activations(torch.randn(10, 8) * 5)[0].detach()
        assert float(hidden.min()) > 0.0 and float(hidden.max()) < 1.0

    def test_generator_makes_masks_reproducible(self) -> None:
        """With a seeded generator set on the layers, two training passes repeat exactly."""
        model = MLP(16, (32,), 4).train()
        x = torch.rand(6, 16)
        set_dropout_generator(model, torch.Generator().manual_seed(3))
        a = model(x)
        set_dropout_generator(model, torch.Generator().manual_seed(3))
        assert torch.equal(a, model(x))


    @pytest.mark.parametrize("activation", ["relu", "logistic"])
    @pytest.mark.parametrize("scale", ["train", "test"])
    def test_fused_forward_equals_layer_by_layer(self, dropout_backend: str, activation: str,
                                                 scale: str) -> None:
        """``forward`` (ReLU and dropout fused) gives bitwise the logits and parameter gradients
        of ``forward_with_hidden`` (one layer at a time) from the same generator state."""
        torch.manual_seed(0)
        fused = MLP(20, (30, 40), 5, activation=activation, scale=scale)
        separate = copy.deepcopy(fused)
        x = torch.randn(16, 20)
        grads = []
        for model, run in ((fused, fused.forward),
                           (separate, lambda t: separate.forward_with_hidden(t)[0])):
            gen = torch.Generator().manual_seed(3)
            for module in model.modules():
                if isinstance(module, Dropout):
                    module.generator = gen
            out = run(x)
            out.backward(torch.ones_like(out))
            grads.append([out.detach()] + [p.grad for p in model.parameters()])
        for a, b in zip(*grads, strict=True):
            assert b is not None and torch.equal(a, b)


class TestConvNet:
    @pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28), (1, 8, 8)])
    def test_shapes(self, shape: tuple[int, int, int]) -> None:
        """Flattened or image inputs give (N, C) logits; 3 conv + 2 fc hidden activations."""
        model = ConvNet(shape, 10, channels=(4, 6, 8), fc=(16, 12))
        flat = torch.rand(2, shape[0] * shape[1] * shape[2])
        out, hidden = model.forward_with_hidden(flat)
        assert out.shape == (2, 10) and len(hidden) == 5
        assert hidden[0].shape[1] == 4 and hidden[-1].shape == (2, 12)
        assert model(flat.reshape(2, *shape)).shape == (2, 10)

    def test_dropout_per_layer(self) -> None:
        """conv_drop gives input, three conv and two fc drop probabilities, in order."""
        model = ConvNet((3, 32, 32), 10, channels=(4, 4, 4), fc=(8, 8),
                        drops=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6))
        assert [layer.p for layer in dropout_layers(model)] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]  # type: ignore[attr-defined]

    def test_bad_lengths(self) -> None:
        """Wrong numbers of channels, widths or drop values are rejected."""
        with pytest.raises(ValueError, match=r"3 `conv_channels`"):
            ConvNet((3, 32, 32), 10, channels=(4, 4))
        with pytest.raises(ValueError, match=r"\(C, H, W\)"):
            ConvNet((784,), 10)

    def test_built_from_config(self) -> None:
        """build_model makes the conv net with the configured widths."""
        config = ModelConfig(kind="convnet", conv_channels=(4, 6, 8), conv_fc=(10, 10))
        model = build_model(config, (3, 32, 32), 100)
        assert isinstance(model, ConvNet)
        assert model(torch.rand(2, 3072)).shape == (2, 100)


class TestAutoencoder:
    def test_figure7_shape(self) -> None:
        """784-256-784: output has the input's size and lies in (0, 1); num_classes ignored."""
        model = build_model(ModelConfig(kind="autoencoder", hidden=(256,)), (1, 28, 28), 10)
        assert isinstance(model, Autoencoder)
        out = model(torch.rand(4, 784)).detach()
        assert out.shape == (4, 784)
        assert float(out.min()) > 0.0 and float(out.max()) < 1.0
        assert model.hidden_activations(torch.rand(4, 784))[0].shape == (4, 256)
        assert model.features.shape == (256, 784)

    def test_hidden_dropout_only_by_default(self) -> None:
        """The paper's autoencoder drops hidden units only (input drop 0 by default)."""
        model = Autoencoder(16, 8)
        assert [layer.p for layer in dropout_layers(model)] == [0.5]  # type: ignore[attr-defined]


class TestInit:
    def test_normal_std(self) -> None:
        """init='normal' draws N(0, std²) weights and zero biases."""
        layer = nn.Linear(1000, 500)
        init_weights_(layer, "normal", 0.01, torch.Generator().manual_seed(0))
        assert float(layer.weight.detach().std()) == pytest.approx(0.01, rel=0.02)
        assert float(layer.bias.detach().abs().max()) == 0.0

    def test_kaiming_std(self) -> None:
        """init='kaiming' uses std sqrt(2 / fan_in)."""
        layer = nn.Linear(800, 400)
        init_weights_(layer, "kaiming", 0.0, torch.Generator().manual_seed(0))
        assert float(layer.weight.detach().std()) == pytest.approx((2 / 800) ** 0.5, rel=0.02)

    def test_seeded_init_repeats(self) -> None:
        """The same init generator seed gives identical weights; another seed differs."""
        config = ModelConfig(hidden=(16,))

        def weights(seed: int) -> torch.Tensor:
            gen = torch.Generator().manual_seed(seed)
            model = build_model(config, (1, 8, 8), 10, generator=gen)
            return torch.cat([p.detach().flatten() for p in model.parameters()])

        assert torch.equal(weights(1), weights(1))
        assert not torch.equal(weights(1), weights(2))
