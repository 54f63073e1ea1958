"""Tests for dropoutlab.config: TOML round trip, typed overrides, unknown keys, hash stability."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dropoutlab.config import (
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    apply_overrides,
    config_hash,
    config_to_toml,
    flat_keys,
    load_config,
    with_changes,
)
from dropoutlab.errors import ConfigError


def _custom() -> RunConfig:
    return RunConfig(
        data=DataConfig(dataset="digits", train_size=500, merge_validation=True),
        model=ModelConfig(hidden=(32, 16), dropout="gaussian", drop_input=0.1),
        optim=OptimConfig(lr=0.25, max_norm=None, l2=1e-4, lr_schedule="inverse_t"),
        epochs=7, seed=3, early_stopping=4,
    )


class TestRoundTrip:
    def test_toml_round_trip(self, tmp_path: Path) -> None:
        """config_to_toml → load_config gives back an equal config, None values included."""
        config = _custom()
        path = tmp_path / "run.toml"
        path.write_text(config_to_toml(config))
        assert load_config(path) == config

    def test_dict_round_trip(self) -> None:
        """to_dict → from_dict is the identity; tuples come back as tuples."""
        config = _custom()
        again = RunConfig.from_dict(config.to_dict())
        assert again == config
        assert isinstance(again.model.hidden, tuple)

    def test_missing_file_and_bad_toml(self, tmp_path: Path) -> None:
        """A missing or malformed file raises ConfigError naming the file."""
        with pytest.raises(ConfigError, match=r"does not exist"):
            load_config(tmp_path / "nope.toml")
        bad = tmp_path / "bad.toml"
        bad.write_text("epochs = = 3\n")
        with pytest.raises(ConfigError, match=r"not valid TOML"):
            load_config(bad)


class TestOverrides:
    def test_typed_values(self) -> None:
        """Overrides parse TOML values: floats, ints → floats, lists → tuples, none → None."""
        config = apply_overrides(RunConfig(), [
            "optim.lr=0.5", "optim.l2=1", "model.hidden=[800, 800]",
            "optim.max_norm=none", "data.dataset=digits", "epochs=2",
        ])
        assert config.optim.lr == 0.5
        assert config.optim.l2 == 1.0 and isinstance(config.optim.l2, float)
        assert config.model.hidden == (800, 800)
        assert config.optim.max_norm is None
        assert config.data.dataset == "digits"
        assert config.epochs == 2

    def test_unknown_key_lists_valid_keys(self) -> None:
        """An unknown key raises and the message lists every valid key."""
        with pytest.raises(ConfigError, match=r"unknown config key 'optim\.lrr'") as info:
            apply_overrides(RunConfig(), ["optim.lrr=1"])
        for key in flat_keys():
            assert key in str(info.value)

    @pytest.mark.parametrize("item, message", [
        ("epochs=2.5", "must be an integer"),
        ("optim.lr=fast", "must be a number"),
        ("model.drop_hidden=1.0", r"must be in \[0.0, 1.0\)"),
        ("data.dataset=imagenet", "must be one of"),
        ("optim.damped_momentum=1", "true or false"),
        ("noequals", "key=value"),
    ])
    def test_bad_values_rejected(self, item: str, message: str) -> None:
        """Wrong types, out-of-range values and malformed items raise ConfigError."""
        with pytest.raises(ConfigError, match=message):
            apply_overrides(RunConfig(), [item])

    def test_with_changes_validates(self) -> None:
        """with_changes takes Python values and validates them like overrides."""
        assert with_changes(RunConfig(), {"model.hidden": (8,)}).model.hidden == (8,)
        with pytest.raises(ConfigError):
            with_changes(RunConfig(), {"optim.lr": -1.0})


class TestHash:
    def test_equal_configs_equal_hash(self) -> None:
        """Two equal configs built differently hash alike; any change changes the hash."""
        a = _custom()
        b = RunConfig.from_dict(dict(reversed(list(a.to_dict().items()))))
        assert config_hash(a) == config_hash(b)
        assert config_hash(a) != config_hash(with_changes(a, {"seed": 4}))
        assert len(config_hash(a)) == 16 and int(config_hash(a), 16) >= 0

    def test_extra_changes_hash(self) -> None:
        """``extra`` (e.g. the task name) is part of the key."""
        config = _custom()
        assert config_hash(config) != config_hash(config, extra={"task": "x"})

    def test_stable_across_processes(self) -> None:
        """The hash does not depend on the process (no PYTHONHASHSEED or dict-order effects)."""
        code = ("from dropoutlab.config import RunConfig, config_hash; "
                "print(config_hash(RunConfig()))")
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               check=True, env={"PYTHONHASHSEED": "12345"}).stdout.strip()
        assert other == config_hash(RunConfig())
