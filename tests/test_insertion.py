"""dl.insert_dropout: dropout after each activation module of a model someone else wrote."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import dropoutlab as dl
from dropoutlab.insertion import ReLUDropout


class Block(nn.Module):
    """A custom block holding its activation as an attribute (nested two levels down)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(width, width), nn.Linear(width, width)])
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = self.act(layer(x))
        return x


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Linear(6, 16), nn.Tanh())
        self.body = nn.Sequential(Block(16), Block(16))
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(x)))


def _count(model: nn.Module, kind: type) -> int:
    return sum(1 for m in model.modules() if type(m) is kind)


class TestInsertDropout:
    def test_nested_relus_become_fused_dropout_and_the_original_is_untouched(self) -> None:
        """Every nn.ReLU at any depth becomes a ReLUDropout; the original keeps its ReLUs."""
        torch.manual_seed(0)
        net = Net()
        before = {k: v.clone() for k, v in net.state_dict().items()}
        new = dl.insert_dropout(net, p=0.3)
        assert _count(new, ReLUDropout) == 2 and _count(new, nn.ReLU) == 0
        assert _count(net, nn.ReLU) == 2 and _count(net, ReLUDropout) == 0
        assert all(isinstance(m, dl.Dropout) for m in new.modules() if type(m) is ReLUDropout)
        for key, value in net.state_dict().items():
            assert torch.equal(value, before[key])
            assert new.state_dict()[key] is not value  # a copy, not shared storage

    def test_eval_mode_gives_the_original_function(self) -> None:
        """Inverted dropout is the identity at evaluation: same outputs as the original."""
        torch.manual_seed(0)
        net = Net().eval()
        new = dl.insert_dropout(net, p=0.5, p_input=0.2, after=(nn.ReLU, nn.Tanh))
        assert not new.training
        x = torch.randn(5, 6)
        torch.testing.assert_close(new(x), net(x), rtol=0, atol=0)

    def test_training_drops_at_the_requested_rate(self) -> None:
        """After a ReLU of all-positive inputs about p of the units are zero, the rest × 1/(1-p)."""
        net = nn.Sequential(nn.Identity(), nn.ReLU())
        new = dl.insert_dropout(net, p=0.25).train()
        torch.manual_seed(0)
        y = new(torch.ones(200, 500))
        assert abs((y == 0).float().mean().item() - 0.25) < 0.01
        assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / 0.75))

    def test_fused_form_matches_relu_then_dropout_bitwise(self) -> None:
        """ReLUDropout(x) is Dropout(ReLU(x)) with the same generator."""
        x = torch.randn(64, 33)
        fused = ReLUDropout(0.4)(x, torch.Generator().manual_seed(3))
        plain = dl.Dropout(0.4)(torch.relu(x), torch.Generator().manual_seed(3))
        assert torch.equal(fused, plain)

    def test_other_activations_get_dropout_after_them(self) -> None:
        """A non-ReLU activation is kept and followed by a Dropout."""
        new = dl.insert_dropout(Net(), p=0.5, after=nn.Tanh)
        stem_act = new.stem[1]
        assert isinstance(stem_act, nn.Sequential)
        assert isinstance(stem_act[0], nn.Tanh) and type(stem_act[1]) is dl.Dropout
        assert stem_act[1].p == 0.5 and _count(new, nn.ReLU) == 2

    def test_input_dropout_comes_first(self) -> None:
        """p_input puts a Dropout before the whole model."""
        new = dl.insert_dropout(Net(), p=0.5, p_input=0.2)
        assert isinstance(new, nn.Sequential) and type(new[0]) is dl.Dropout
        assert new[0].p == 0.2 and isinstance(new[1], Net)

    def test_bad_arguments_say_what_was_expected(self) -> None:
        with pytest.raises(ValueError, match=r"`p` must be a drop probability in \[0, 1\), "
                                             r"got p=1.5"):
            dl.insert_dropout(Net(), p=1.5)
        with pytest.raises(ValueError, match="`p_input` must be"):
            dl.insert_dropout(Net(), p=0.5, p_input=-0.1)
        with pytest.raises(ValueError, match="`after` must be"):
            dl.insert_dropout(Net(), after=("relu",))  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="no activation module of type GELU"):
            dl.insert_dropout(Net(), after=nn.GELU)

    def test_functional_activations_are_reported_not_ignored(self) -> None:
        """A model whose ReLU is a function call gets an error, not a silent no-op."""

        class Functional(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.fc = nn.Linear(4, 4)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return torch.relu(self.fc(x))

        with pytest.raises(ValueError, match="called as functions"):
            dl.insert_dropout(Functional(), p=0.5)
        only_input = dl.insert_dropout(Functional(), p=0.0, p_input=0.2)
        assert isinstance(only_input[0], dl.Dropout)
