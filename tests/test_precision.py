"""``precision``: what "auto" resolves to, and that the setting keeps old configs' hashes."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import pytest
import torch

from dropoutlab.config import RunConfig, config_hash, with_changes
from dropoutlab.errors import ConfigError
from dropoutlab.precision import bf16_support, cpu_flags, resolve_precision
from dropoutlab.presets import smoke
from dropoutlab.train import train

WITH_BF16 = "processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 amx_tile\n"
WITH_AMX = "flags\t\t: fpu avx2 amx_bf16 amx_tile\n"
WITHOUT = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n"


def test_cpu_flags_reads_the_first_flags_line() -> None:
    """The flags come from the first ``flags`` line; no such line gives none."""
    assert {"avx512_bf16", "avx2"} & cpu_flags(WITH_BF16) == {"avx512_bf16"}
    assert cpu_flags("processor: 0\n") == frozenset()


@pytest.mark.parametrize(("cpuinfo", "native", "why"), [
    (WITH_BF16, True, "avx512_bf16"),
    (WITH_AMX, True, "amx_bf16"),
    (WITHOUT, False, "no CPU flag avx512_bf16 or amx_bf16"),
])
def test_auto_is_bf16_only_with_native_bf16(cpuinfo: str, native: bool, why: str) -> None:
    """auto → bf16 with avx512_bf16 or amx_bf16, fp32 without; the reason names the flags."""
    ok, reason = bf16_support("cpu", cpuinfo=cpuinfo)
    assert ok is native and why in reason
    assert resolve_precision("auto", "cpu", cpuinfo=cpuinfo) == ("bf16" if native else "fp32")
    assert resolve_precision("fp32", "cpu", cpuinfo=cpuinfo) == "fp32"
    assert resolve_precision("bf16", "cpu", cpuinfo=cpuinfo) == "bf16"


def test_bad_precision_names_the_argument() -> None:
    """A precision outside fp32/bf16/auto is refused, naming the argument and the value."""
    with pytest.raises(ValueError, match=r"`precision` must be one of .*got precision='fp16'"):
        resolve_precision("fp16")
    with pytest.raises(ConfigError, match="`precision` must be one of"):
        RunConfig(precision="half")


def test_config_resolves_auto_before_hashing() -> None:
    """A config asking for auto stores (and hashes) what auto gave on this machine; fp32
    configs hash as before the setting existed, bf16 ones differently."""
    auto = RunConfig(precision="auto")
    assert auto.precision == resolve_precision("auto")
    assert config_hash(auto) == config_hash(RunConfig(precision=auto.precision))
    old = RunConfig().to_dict()
    del old["precision"]
    assert config_hash(old) == config_hash(RunConfig())
    assert config_hash(RunConfig(precision="bf16")) != config_hash(RunConfig())


class TestMixedPrecisionTraining:
    """bf16 runs: products and activations in bf16, weights, momentum and metrics in fp32."""

    @staticmethod
    def config(precision: str) -> RunConfig:
        base = with_changes(smoke(), {"model.hidden": (64, 64), "epochs": 4,
                                      "optim.max_norm": 3.0})
        return with_changes(base, {"precision": precision})

    def test_bf16_forward_runs_in_bf16_and_keeps_fp32_state(self) -> None:
        """During training each Linear layer's output is bf16; afterwards the parameters and
        the momentum buffers are float32, the max-norm bound holds and the metrics are
        finite floats."""
        seen: set[torch.dtype] = set()

        def record(module: torch.nn.Module, args: object, out: torch.Tensor) -> None:
            if module.training and isinstance(module, torch.nn.Linear):
                seen.add(out.dtype)

        handle = torch.nn.modules.module.register_module_forward_hook(record)
        try:
            result = train(self.config("bf16"), progress=False, keep_model=True)
        finally:
            handle.remove()
        assert seen == {torch.bfloat16}
        assert result.status == "done" and result.model is not None
        assert all(p.dtype == torch.float32 for p in result.model.parameters())
        norms = [w.norm(dim=1).max().item() for name, w in result.model.named_parameters()
                 if name.endswith("weight")]
        assert max(norms) <= 3.0 * (1 + 1e-5)
        assert all(isinstance(row["val_loss"], float) and math.isfinite(row["val_loss"])
                   for row in result.history)

    def test_bf16_learns_like_fp32(self) -> None:
        """On digits the bf16 run's test error is near the fp32 run's (a smoke-level check;
        the 3-seed MNIST comparison with the noise rule is in the README)."""
        errors = {p: train(self.config(p), progress=False).test_error for p in ("fp32", "bf16")}
        assert errors["fp32"] is not None and errors["bf16"] is not None
        assert errors["bf16"] < 20.0 and abs(errors["bf16"] - errors["fp32"]) < 5.0

    @pytest.mark.parametrize("changes", [
        {},
        {"model.kind": "convnet", "model.conv_channels": (4, 4, 4), "model.conv_fc": (8, 8),
         "epochs": 2},
        {"model.kind": "autoencoder", "model.hidden": (16,), "epochs": 2},
        {"optim.l2": 1e-4, "optim.l1": 1e-5, "epochs": 2},
    ], ids=["mlp", "convnet", "autoencoder", "penalties"])
    def test_bf16_copies_give_autocasts_numbers(self, monkeypatch: pytest.MonkeyPatch,
                                                changes: dict[str, object]) -> None:
        """Training on the bfloat16 working copies (dropoutlab.bf16_weights) ends bitwise where
        plain autocast ends, max-norm projections and weight penalties included, for every
        model kind: the same history, the same float32 weights."""
        from dropoutlab import train as train_module

        config = with_changes(self.config("bf16"), changes)
        copies = train(config, progress=False, keep_model=True)
        monkeypatch.setattr(train_module, "_uses_bf16_copies", lambda config, model: False)
        autocast = train(config, progress=False, keep_model=True)
        strip = [{k: v for k, v in row.items() if k != "seconds"} for row in copies.history]
        assert strip == [{k: v for k, v in row.items() if k != "seconds"}
                         for row in autocast.history]
        assert copies.model is not None and autocast.model is not None
        for p, q in zip(copies.model.parameters(), autocast.model.parameters(), strict=True):
            assert torch.equal(p, q)

    def test_same_seed_same_bf16_result(self) -> None:
        """bf16 runs are as reproducible as fp32 ones: the same seed gives the same history."""
        first, second = (train(self.config("bf16"), progress=False) for _ in range(2))
        strip = [{k: v for k, v in row.items() if k != "seconds"} for row in first.history]
        assert strip == [{k: v for k, v in row.items() if k != "seconds"}
                         for row in second.history]


class TestFlags:
    """``--precision`` on train and sweep sets the run config's precision (auto resolved)."""

    def test_train_flag(self, tmp_path: Path) -> None:
        from dropoutlab.cli import main

        out = tmp_path / "run"
        assert main(["train", "--preset", "smoke", "--epochs", "1", "--precision", "auto",
                     "--no-progress", "--out", str(out)]) == 0
        stored = tomllib.loads((out / "config.toml").read_text())
        assert stored["precision"] == resolve_precision("auto")

    def test_sweep_flag(self) -> None:
        from dropoutlab.cli import build_parser
        from dropoutlab.cli.sweep import build_jobs

        args = build_parser().parse_args(["sweep", "--set", "data.dataset=digits",
                                          "--grid", "seed=[0, 1]", "--precision", "bf16"])
        assert {job.config.precision for job in build_jobs(args)} == {"bf16"}
        args = build_parser().parse_args(["sweep", "--set", "data.dataset=digits"])
        assert {job.config.precision for job in build_jobs(args)} == {"fp32"}


def test_reproduce_sets_the_precision_of_every_run() -> None:
    """``reproduce --precision`` puts every grid run in that precision (a new key); the
    default leaves every job exactly as the experiment built it."""
    from dropoutlab.reproduce import plan, select

    experiments = select("overfitting-curves")
    default, _ = plan(experiments, budget="smoke")
    assert default[0].jobs == experiments[0].jobs("smoke")
    bf16, _ = plan(experiments, budget="smoke", precision="bf16")
    assert {job.config.precision for job in bf16[0].jobs} == {"bf16"}
    assert not {job.key for job in bf16[0].jobs} & {job.key for job in default[0].jobs}
    auto, _ = plan(experiments, budget="smoke", precision="auto")
    assert {job.config.precision for job in auto[0].jobs} == {resolve_precision("auto")}


def test_reproduce_keeps_each_designs_own_precision() -> None:
    """Without ``--precision`` a design that asks for ``auto`` (dataset-size at quick) runs in
    what ``auto`` gives here, the others in fp32; ``--precision fp32`` puts all in fp32."""
    from dropoutlab.reproduce import plan, select

    experiments = select("dataset-size") + select("overfitting-curves")
    designed, _ = plan(experiments, budget="quick")
    assert {job.config.precision for job in designed[0].jobs} == {resolve_precision("auto")}
    assert {job.config.precision for job in designed[1].jobs} == {"fp32"}
    forced, _ = plan(experiments, budget="quick", precision="fp32")
    assert {job.config.precision for item in forced for job in item.jobs} == {"fp32"}
    assert forced[1].jobs == designed[1].jobs


def test_plan_calibrates_bf16_runs_in_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--plan`` times a bf16 run's steps on the bf16 weight copies training uses (its own
    rate, its own key), and an fp32 run's without them."""
    from dropoutlab.bf16_weights import BF16Weights
    from dropoutlab.experiments.cost import calibrate, rate_of

    outputs: list[torch.dtype] = []
    forward = BF16Weights.__call__

    def counted(self: BF16Weights, x: torch.Tensor) -> torch.Tensor:
        out = forward(self, x)
        outputs.append(out.dtype)
        return out

    monkeypatch.setattr(BF16Weights, "__call__", counted)
    fp32 = with_changes(RunConfig(), {"data.dataset": "digits", "model.hidden": (32,),
                                      "optim.max_norm": 3.0})
    bf16 = with_changes(fp32, {"precision": "bf16"})
    rates = calibrate([fp32], steps=2)
    assert outputs == []
    rates |= calibrate([bf16], steps=2)
    assert outputs == [torch.bfloat16] * 3  # a warm-up step and the two timed ones
    assert len(rates) == 2
    assert rate_of(rates, fp32) > 0 and rate_of(rates, bf16) > 0
