"""``precision``: what "auto" resolves to, and that the setting keeps old configs' hashes."""

from __future__ import annotations

import pytest

from dropoutlab.config import RunConfig, config_hash
from dropoutlab.errors import ConfigError
from dropoutlab.precision import bf16_support, cpu_flags, resolve_precision

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
