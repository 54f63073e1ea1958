"""dropoutlab under modern PyTorch: torch.compile(fullgraph=True), torch.export, torch.func.

The native kernels are torch operators (``dropoutlab::*``, :mod:`dropoutlab.kernels`), so a
compiled or exported model sees one opaque operator per dropout call and the seed draw is an
operator of its own. These tests check, against eager execution with the same
``torch.manual_seed``: values, gradients and masks; zero graph breaks, counted by
``torch._dynamo`` itself; drop statistics of compiled code; strict and non-strict export;
``torch.func.grad``/``vmap``; memory format; ``inplace``; and TorchScript's clear refusal.

Statistical bounds are Hoeffding's, with a false-failure rate of at most 1e-6 per check.
"""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import nn

import dropoutlab as dl
from dropoutlab import backend, kernels
from dropoutlab import functional as F

DELTA = 1e-6
KINDS = ("dropout", "after_relu", "gaussian")

pytestmark = pytest.mark.skipif(
    not kernels.operators_available(), reason="native operators cannot be built on this machine"
)


def hoeffding(n: int, delta: float = DELTA) -> float:
    """Half-width t with P(|mean − E| ≥ t) ≤ delta for n independent values in [0, 1]."""
    return math.sqrt(math.log(2.0 / delta) / (2.0 * n))


@pytest.fixture(autouse=True)
def native() -> Iterator[None]:
    """Every test here runs the native operators, with fresh Dynamo state and counters."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    with backend.use_backend("native"):
        yield
    torch._dynamo.reset()


def graph_breaks() -> int:
    """Graph breaks Dynamo recorded since the counters were last cleared."""
    return sum(torch._dynamo.utils.counters["graph_break"].values())


class MLP(nn.Module):
    """784-style MLP in miniature, with one of the three dropout layers after each hidden ReLU."""

    def __init__(self, kind: str, widths: tuple[int, ...] = (20, 32, 32, 5)) -> None:
        super().__init__()
        self.kind = kind
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))
        make = (lambda: dl.GaussianDropout(0.4)) if kind == "gaussian" else (
            lambda: dl.Dropout(0.4))
        self.drops = nn.ModuleList(make() for _ in widths[1:-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for linear, drop in zip(self.linears, self.drops, strict=False):
            z = linear(x)
            x = drop.after_relu(z) if self.kind == "after_relu" else drop(torch.relu(z))
        return self.linears[-1](x)


def run(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
        seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Output and parameter gradients of one forward/backward under ``torch.manual_seed(seed)``."""
    params = list(model.parameters()) if isinstance(model, nn.Module) else []
    for param in params:
        param.grad = None
    torch.manual_seed(seed)
    y = model(x)
    y.square().sum().backward()
    return y.detach(), [param.grad.clone() for param in params if param.grad is not None]


class TestCompile:
    @pytest.mark.parametrize("kind", KINDS)
    def test_fullgraph_mlp_matches_eager(self, kind: str, global_seed: int) -> None:
        """Inductor, fullgraph=True, train then eval: the same values and gradients as eager
        for the same torch.manual_seed (the same masks; inductor may round the matrix products
        differently, hence allclose), and no graph break."""
        torch.manual_seed(0)
        model = MLP(kind)
        compiled = torch.compile(model, fullgraph=True)
        x = torch.randn(16, 20)
        for _ in range(2):  # the second call reuses the graph and draws new masks
            eager_y, eager_g = run(model, x, global_seed)
            comp_y, comp_g = run(compiled, x, global_seed)
            torch.testing.assert_close(comp_y, eager_y, rtol=1e-5, atol=1e-6)
            for a, b in zip(comp_g, eager_g, strict=True):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
            global_seed += 1
        model.eval()  # a recompile: the eval graph has no dropout at all
        eager_y, eager_g = run(model, x, global_seed)
        comp_y, comp_g = run(compiled, x, global_seed)
        torch.testing.assert_close(comp_y, eager_y, rtol=1e-5, atol=1e-6)
        for a, b in zip(comp_g, eager_g, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert graph_breaks() == 0

    @pytest.mark.parametrize("kind", KINDS)
    def test_explain_counts_no_graph_break(self, kind: str) -> None:
        """torch._dynamo.explain sees one graph and zero breaks, in train and eval mode, and the
        train graph calls the dropoutlab operators."""
        model = MLP(kind)
        x = torch.randn(4, 20)
        for train in (True, False):
            model.train(train)
            torch._dynamo.reset()
            explanation = torch._dynamo.explain(model)(x)
            assert explanation.graph_break_count == 0 and explanation.graph_count == 1
            code = "\n".join(g.code for g in explanation.graphs)
            assert ("dropoutlab" in code) == train

    @pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
    @pytest.mark.parametrize("op", ["dropout", "relu_dropout", "gaussian_dropout"])
    def test_compiled_masks_are_eager_masks(self, op: str, global_seed: int,
                                            dtype: torch.dtype) -> None:
        """The same torch.manual_seed gives bitwise the same output and gradient compiled
        (aot_eager: Dynamo and AOT autograd) and eager, in float32 and bfloat16."""
        fn = getattr(F, op)

        def f(t: torch.Tensor) -> torch.Tensor:
            return fn(t, 0.3) * 3

        compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
        x = torch.randn(64, 65, generator=torch.Generator().manual_seed(1)).to(dtype)
        results = []
        for g in (f, compiled):
            leaf = x.clone().requires_grad_()
            torch.manual_seed(global_seed)
            y = g(leaf)
            y.backward(torch.ones_like(y))
            assert leaf.grad is not None
            results.append((y.detach(), leaf.grad))
        assert torch.equal(results[0][0], results[1][0])
        assert torch.equal(results[0][1], results[1][1])
        assert graph_breaks() == 0

    def test_aot_autograd_and_dynamic_shapes(self, global_seed: int) -> None:
        """AOT autograd alone (aot_function) and a dynamic-shape compile reproduce eager bitwise
        for the same seed."""
        from functorch.compile import aot_function, nop

        def f(t: torch.Tensor) -> torch.Tensor:
            return F.relu_dropout(t, 0.3) * F.gaussian_dropout(t, 0.2)

        dynamic = torch.compile(f, dynamic=True, fullgraph=True, backend="aot_eager")
        for rows in (10, 33):
            aot = aot_function(f, fw_compiler=nop, bw_compiler=nop)  # static shapes: one each
            x = torch.randn(rows, 7, generator=torch.Generator().manual_seed(rows))
            results = []
            for g in (f, aot, dynamic):
                leaf = x.clone().requires_grad_()
                torch.manual_seed(global_seed)
                y = g(leaf)
                y.sum().backward()
                results.append((y.detach(), leaf.grad))
            for y, grad in results[1:]:
                assert torch.equal(y, results[0][0]) and torch.equal(grad, results[0][1])
        assert graph_breaks() == 0

    def test_compiled_drop_statistics(self, global_seed: int) -> None:
        """Compiled dropout drops a fraction p of 2^18 units (Hoeffding, δ = 1e-6), and two
        calls on the same tensor in one graph draw independent masks: the seed draw is not
        merged by common-subexpression elimination (δ = 1e-6 for the joint frequency)."""
        p, n = 0.3, 1 << 18

        def two(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return F.dropout(t, p), F.dropout(t, p)

        compiled = torch.compile(two, backend="aot_eager", fullgraph=True)
        torch.manual_seed(global_seed)
        a, b = compiled(torch.ones(n, requires_grad=True))
        kept_a, kept_b = a != 0, b != 0
        t = hoeffding(n)
        assert abs((~kept_a).double().mean().item() - p) <= t
        assert abs((kept_a & kept_b).double().mean().item() - (1 - p) ** 2) <= t
        assert graph_breaks() == 0

    def test_first_call_inside_compile_needs_no_eager_warm_up(self) -> None:
        """The library check is a constant for Dynamo, so it may load the library while
        tracing: in a fresh process, the first dropout call is inside a fullgraph compile."""
        code = (
            "import torch, dropoutlab as dl\n"
            "from dropoutlab import kernels\n"
            "assert kernels._operators is None\n"
            "f = torch.compile(dl.Dropout(0.5), backend='aot_eager', fullgraph=True)\n"
            "y = f(torch.ones(1000))\n"
            "assert kernels._operators is not None and set(y.unique().tolist()) == {0.0, 2.0}\n"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=False, timeout=600)
        assert done.returncode == 0, done.stderr

    def test_generator_breaks_the_graph_or_raises_under_fullgraph(self) -> None:
        """A torch.Generator cannot enter a Dynamo graph: with fullgraph=True the error names
        `generator=` and the alternatives; without, the seed is drawn from the generator outside
        the graph (one break) and the masks equal eager's bitwise."""
        x = torch.ones(4096)

        def f(t: torch.Tensor, g: torch.Generator) -> torch.Tensor:
            return F.dropout(t, 0.5, generator=g) + 1

        with pytest.raises(torch._dynamo.exc.Unsupported, match="`generator=` cannot enter"):
            torch.compile(f, fullgraph=True)(x, torch.Generator().manual_seed(3))
        torch._dynamo.reset()
        compiled = torch.compile(f, backend="aot_eager")
        got = compiled(x, torch.Generator().manual_seed(3))
        assert torch.equal(got, f(x, torch.Generator().manual_seed(3)))


class TestExport:
    @pytest.mark.parametrize("strict", [True, False], ids=["strict", "non-strict"])
    @pytest.mark.parametrize("kind", KINDS)
    def test_exported_program_runs(self, kind: str, strict: bool, global_seed: int) -> None:
        """A train-mode export holds the dropoutlab operators (the one-call composites, and
        after run_decompositions the seed draw and the op) and, run under the same seed, gives
        eager's output; an eval-mode export holds none of them."""
        torch.manual_seed(0)
        model = MLP(kind)
        x = torch.randn(8, 20)
        program = torch.export.export(model, (x,), strict=strict)
        targets = {str(node.target) for node in program.graph.nodes}
        assert any(t.startswith("dropoutlab.draw_") for t in targets), targets
        decomposed = program.run_decompositions()  # the composite: seed draw + op
        targets = {str(node.target) for node in decomposed.graph.nodes}
        assert "dropoutlab.seed.default" in targets, targets
        for exported in (program, decomposed):
            torch.manual_seed(global_seed)
            got = exported.module()(x)
            torch.manual_seed(global_seed)
            torch.testing.assert_close(got, model(x), rtol=1e-5, atol=1e-6)
        model.eval()
        frozen = torch.export.export(model, (x,), strict=strict)
        assert not any("dropoutlab" in str(node.target) for node in frozen.graph.nodes)
        torch.testing.assert_close(frozen.module()(x), model(x))


class TestFunctorch:
    @pytest.mark.parametrize("op", ["dropout", "relu_dropout", "gaussian_dropout"])
    def test_grad_gives_the_backward_mask(self, op: str, global_seed: int) -> None:
        """torch.func.grad under a fixed torch.manual_seed equals backward() bitwise."""
        fn = getattr(F, op)
        x = torch.randn(33, 17, generator=torch.Generator().manual_seed(2))
        torch.manual_seed(global_seed)
        by_func = torch.func.grad(lambda t: fn(t, 0.4).mul(x).sum())(x)
        leaf = x.clone().requires_grad_()
        torch.manual_seed(global_seed)
        fn(leaf, 0.4).mul(x).sum().backward()
        assert torch.equal(by_func, leaf.grad)

    def test_vmap_randomness(self) -> None:
        """vmap refuses the draw under randomness="error" (as for torch's random ops);
        "same" gives every sample the unbatched call's mask, "different" one mask per sample
        (the per-sample calls with seeds drawn in order)."""
        x = torch.randn(4, 300, generator=torch.Generator().manual_seed(5))

        def f(t: torch.Tensor) -> torch.Tensor:
            return F.dropout(t, 0.5)

        with pytest.raises(RuntimeError, match="randomness"):
            torch.vmap(f)(x)
        torch.manual_seed(1)
        same = torch.vmap(f, randomness="same")(x)
        torch.manual_seed(1)
        expected_mask = F.dropout(torch.ones(300), 0.5) != 0
        assert torch.equal(same != 0, expected_mask.expand(4, 300))
        torch.manual_seed(1)
        different = torch.vmap(f, randomness="different")(x)
        torch.manual_seed(1)
        seeds = [torch.empty((), dtype=torch.int64).random_() for _ in range(4)]
        for row, seed in enumerate(seeds):
            want = torch.ops.dropoutlab.dropout(x[row], seed, 0.5, 2.0)
            assert torch.equal(different[row], want)
        assert not torch.equal(different[0] != 0, different[1] != 0)

    def test_vmap_of_grad(self) -> None:
        """Per-sample gradients (vmap of grad, randomness="different"): each row is the mask
        times 1/(1 − p), and rows differ."""
        x = torch.randn(3, 200)
        grads = torch.vmap(torch.func.grad(lambda t: F.dropout(t, 0.5).sum()),
                           randomness="different")(x)
        assert set(grads.unique().tolist()) <= {0.0, 2.0}
        assert not torch.equal(grads[0], grads[1])


class TestParity:
    @pytest.mark.parametrize("kind", KINDS)
    def test_channels_last_is_kept_and_backward_uses_the_same_mask(self, kind: str) -> None:
        """A channels_last input gives a channels_last output; a contiguous (NCHW) incoming
        gradient meets each element's own mask (checked as dx = g · y / x)."""
        x = (torch.rand(2, 3, 5, 7) + 0.5).to(memory_format=torch.channels_last)
        x.requires_grad_()
        layer = dl.GaussianDropout(0.3) if kind == "gaussian" else dl.Dropout(0.3)
        y = layer.after_relu(x) if kind == "after_relu" else layer(x)  # type: ignore[operator]
        assert y.is_contiguous(memory_format=torch.channels_last)
        g = torch.randn(2, 3, 5, 7)  # contiguous
        y.backward(g)
        assert x.grad is not None
        torch.testing.assert_close(x.grad, g * (y / x).detach(), rtol=1e-6, atol=1e-7)

    def test_channels_last_matches_torch_dropout_format_and_stats(self, global_seed: int) -> None:
        """Like torch.nn.Dropout, the output keeps channels_last; drop fraction within the
        Hoeffding bound (δ = 1e-6)."""
        x = torch.ones(8, 16, 32, 32).to(memory_format=torch.channels_last)
        theirs = nn.Dropout(0.5)(x)
        ours = dl.Dropout(0.5)(x, generator=torch.Generator().manual_seed(global_seed))
        assert theirs.is_contiguous(memory_format=torch.channels_last)
        assert ours.is_contiguous(memory_format=torch.channels_last)
        assert abs((ours == 0).double().mean().item() - 0.5) <= hoeffding(x.numel())

    @pytest.mark.parametrize("kind", KINDS)
    def test_inplace_writes_into_the_input(self, kind: str) -> None:
        """inplace=True returns the input holding the out-of-place result (same seed), and the
        gradient through it is the out-of-place gradient."""
        results = []
        for inplace in (False, True):
            leaf = torch.randn(40, 30, generator=torch.Generator().manual_seed(4))
            leaf.requires_grad_()
            h = leaf * 1.0  # a non-leaf, as after a Linear
            layer = (dl.GaussianDropout(0.3, inplace=inplace) if kind == "gaussian"
                     else dl.Dropout(0.3, inplace=inplace))
            g = torch.Generator().manual_seed(6)
            y = layer.after_relu(h, g) if kind == "after_relu" else layer(h, g)  # type: ignore[operator]
            assert (y is h) == inplace
            y.sum().backward()
            results.append((y.detach(), leaf.grad))
        assert torch.equal(results[0][0], results[1][0])
        assert torch.equal(results[0][1], results[1][1])

    def test_inplace_eval_and_p_one(self) -> None:
        """In place, eval with scale="test" multiplies x by (1 − p); p = 1 zeroes x."""
        x = torch.ones(5)
        assert F.dropout(x, 0.25, training=False, inplace=True, scale="test") is x
        assert torch.equal(x, torch.full((5,), 0.75))
        assert F.dropout(x, 1.0, inplace=True) is x and torch.count_nonzero(x) == 0

    def test_inplace_must_be_a_bool(self) -> None:
        """A non-bool inplace is refused, naming the argument and the value."""
        with pytest.raises(TypeError, match=r"`inplace` must be a bool, got inplace='yes'"):
            dl.Dropout(0.5, "yes")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"`inplace` must be a bool, got inplace=1"):
            F.gaussian_dropout(torch.ones(3), 0.5, True, 1)  # type: ignore[arg-type]

    def test_inplace_with_compile(self) -> None:
        """inplace=True compiles with fullgraph=True and writes into the input."""
        layer = dl.Dropout(0.5, inplace=True)
        compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
        x = torch.ones(1000)
        torch.manual_seed(3)
        y = compiled(x)
        torch.manual_seed(3)
        assert y is x and torch.equal(x, dl.Dropout(0.5)(torch.ones(1000)))

    @pytest.mark.parametrize("layer", [dl.Dropout(0.5), dl.GaussianDropout(0.5)])
    def test_torchscript_refuses_with_a_clear_error(self, layer: nn.Module) -> None:
        """torch.jit.script of a model holding the layer names the layer and the way out."""
        with pytest.raises(RuntimeError, match=r"cannot be compiled by torch\.jit\.script.*"
                                               r"torch\.compile or torch\.export"):
            torch.jit.script(nn.Sequential(nn.Linear(3, 3), layer))
