"""Frozen, validated run configurations and their stable hash (design.md, "Conventions").

A run is fully described by a :class:`RunConfig`: the data (:class:`DataConfig`), the network
(:class:`ModelConfig`), the optimisation recipe (:class:`OptimConfig`, Srivastava et al. 2014,
§5.1 and Appendix A) and the run's own settings (epochs, seed, device). Configs are inputs only;
everything computed from data goes on the run's result.

``p`` values here are **drop** probabilities; experiment definitions that follow the paper's
retention probability convert visibly (``drop = 1 - retain``).

Every field has a default with its reason; :func:`config_hash` gives a stable key for the results
store; :func:`apply_overrides` applies typed ``key=value`` overrides (``optim.lr=0.5``) and
rejects unknown keys with the list of valid ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from dropoutlab.atomic_io import check_input_file, describe_os_error
from dropoutlab.errors import ConfigError, PathError
from dropoutlab.precision import resolve_precision

__all__ = [
    "DATASETS",
    "HASH_NEUTRAL_DEFAULTS",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "apply_overrides",
    "config_hash",
    "config_to_toml",
    "flat_keys",
    "load_config",
    "with_changes",
]

# "file" is a user's own .npz/.csv/.parquet (data.path; dropoutlab.data.user).
DATASETS = ("mnist", "fashion-mnist", "digits", "cifar10", "cifar100", "svhn", "file")
MODEL_KINDS = ("mlp", "convnet", "autoencoder")
ACTIVATIONS = ("relu", "logistic")
DROPOUT_KINDS = ("bernoulli", "gaussian", "none")
SCALES = ("train", "test")
LR_SCHEDULES = ("constant", "exponential", "inverse_t")
MOMENTUM_RAMPS = ("linear", "exponential")
INITS = ("normal", "xavier", "kaiming")
MAX_SEED = 2**63 - 1  # seeds are stored in SQLite's signed 64-bit INTEGER


# Fields added after stores were first written, each with the default that keeps an old config's
# hash: :func:`config_hash` leaves such a field out while it holds this value, so a run stored
# before the field existed is still found (design.md: new fields default so old hashes hold).
# Add every new field here, as "section.name" (or "name" for a top-level field).
HASH_NEUTRAL_DEFAULTS: dict[str, Any] = {
    "data.path": None,
    "data.sha256": None,
    "data.target": None,
    "model.builder": None,
    "precision": "fp32",
}


def _one_of(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"`{name}` must be one of {allowed}, got {name}={value!r}; pass one "
                          f"of those")


def _in_range(name: str, value: float, low: float, high: float, *, high_open: bool = False) -> None:
    ok = low <= value < high if high_open else low <= value <= high
    if math.isnan(value) or not ok:
        bracket = ")" if high_open else "]"
        raise ConfigError(f"`{name}` must be in [{low}, {high}{bracket}, got {name}={value!r}; "
                          f"pass a value in that range")


def _positive(name: str, value: float | int | None, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or math.isnan(value) or value <= 0 or math.isinf(value):
        raise ConfigError(f"`{name}` must be a finite number > 0, got {name}={value!r}; pass "
                          f"a positive value")


@dataclass(frozen=True)
class DataConfig:
    """Which data a run trains and evaluates on (data.py documents each split)."""

    dataset: str = "mnist"  # the paper's main benchmark; "digits" for tiny, fast runs
    data_dir: str | None = None  # user copy of the data set; None = the packaged/default location
    train_size: int | None = None  # seeded stratified subset of the training split (Figure 10)
    merge_validation: bool = False  # the paper's protocol: after tuning, train on train+validation
    standardize: bool = False  # pixels stay in [0, 1] as in the paper's MNIST nets
    path: str | None = None  # dataset "file": the user's .npz/.csv/.parquet (absolute path)
    sha256: str | None = None  # the file's checksum: the content, not the path, keys the run
    target: str | None = None  # the label column of a .csv/.parquet table

    def __post_init__(self) -> None:
        _one_of("data.dataset", self.dataset, DATASETS)
        if (self.dataset == "file") != (self.path is not None):
            raise ConfigError(
                "`data.path` must be set exactly when data.dataset='file', got "
                f"dataset={self.dataset!r}, path={self.path!r}"
            )
        if self.train_size is not None and self.train_size < 1:
            raise ConfigError(
                f"`data.train_size` must be an integer >= 1 or None, got {self.train_size!r}"
            )


@dataclass(frozen=True)
class ModelConfig:
    """The network: an MLP (Table 2, 9), the conv net (Tables 3, 4) or the autoencoder (Fig. 7)."""

    kind: str = "mlp"
    hidden: tuple[int, ...] = (1024, 1024)  # MLP hidden widths; the autoencoder uses hidden[0]
    activation: str = "relu"  # ReLU beat logistic units in Table 2
    dropout: str = "bernoulli"  # "gaussian" is §10's multiplicative N(1, p/(1-p)) noise
    drop_input: float = 0.2  # paper: retain 0.8 for real-valued inputs (§A.4)
    drop_hidden: float = 0.5  # paper: retain 0.5 for hidden units (§A.4)
    scale: str = "train"  # inverted dropout; "test" is the paper's test-time weight scaling
    conv_channels: tuple[int, ...] = (96, 128, 256)  # the paper's conv net filter counts (?)
    conv_fc: tuple[int, ...] = (2048, 2048)  # the paper's conv net fully connected widths (?)
    conv_drop: tuple[float, ...] = (0.1, 0.25, 0.25, 0.5, 0.5, 0.5)  # input → top, §6.1.2
    init: str = "normal"  # N(0, init_std²) weights as in deepnet; "xavier"/"kaiming" also offered
    init_std: float = 0.01  # deepnet's MNIST nets use small Gaussian weights
    # "module:function" of a user's builder fn(p, p_input) -> nn.Module; None: build `kind`
    builder: str | None = None

    def __post_init__(self) -> None:
        _one_of("model.kind", self.kind, MODEL_KINDS)
        _one_of("model.activation", self.activation, ACTIVATIONS)
        _one_of("model.dropout", self.dropout, DROPOUT_KINDS)
        _one_of("model.scale", self.scale, SCALES)
        _one_of("model.init", self.init, INITS)
        _in_range("model.drop_input", self.drop_input, 0.0, 1.0, high_open=True)
        _in_range("model.drop_hidden", self.drop_hidden, 0.0, 1.0, high_open=True)
        for i, p in enumerate(self.conv_drop):
            _in_range(f"model.conv_drop[{i}]", p, 0.0, 1.0, high_open=True)
        if not self.hidden or any(int(w) < 1 for w in self.hidden):
            raise ConfigError(f"`model.hidden` must be widths >= 1, got {self.hidden!r}")
        _positive("model.init_std", self.init_std)
        if self.builder is not None and self.builder.count(":") != 1:
            raise ConfigError(f"`model.builder` must look like 'module:function', got "
                              f"builder={self.builder!r}")


@dataclass(frozen=True)
class OptimConfig:
    """The paper's optimisation recipe (§5.1, Appendix A, deepnet's MNIST example)."""

    batch_size: int = 100  # the paper's MNIST batch size
    # Dropout nets want 10-100x a standard net's rate (§A.2). Chosen on MNIST validation error,
    # best or tied at 2 and at 20 epochs (README, "Your own data: dropoutlab tune"); it was
    # 0.1, which every experiment and preset sets explicitly, so their keys are unchanged.
    lr: float = 1.0
    lr_schedule: str = "exponential"  # decaying rates work best with dropout (§5.1)
    lr_decay: float = 0.98  # per epoch for "exponential"; t0 in updates for "inverse_t"
    momentum_start: float = 0.5  # Hinton et al. 2012 ramp start
    momentum_end: float = 0.99  # §A.2: 0.95-0.99 for dropout nets
    momentum_updates: int = 5000  # length of the momentum ramp in updates
    momentum_ramp: str = "linear"  # "linear" (Hinton et al. 2012) or "exponential" (deepnet)
    damped_momentum: bool = True  # Δw = mΔw + (1-m)g keeps the step size steady as m → 0.99
    max_norm: float | None = 3.0  # §5.1: c = 3-4; None disables the constraint
    l2: float = 0.0  # coefficient of Σ‖W‖² (Table 9)
    l1: float = 0.0  # coefficient of Σ|W| (Table 9)
    l1_from_epoch: int = 0  # Table 9's "L1 applied towards the end of training"
    kl_sparsity: float = 0.0  # coefficient of the KL-sparsity penalty on hidden means (Table 9)
    kl_target: float = 0.05  # target mean activation ρ for KL-sparsity

    def __post_init__(self) -> None:
        _positive("optim.batch_size", self.batch_size)
        _positive("optim.lr", self.lr)
        _one_of("optim.lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _positive("optim.lr_decay", self.lr_decay)
        _in_range("optim.momentum_start", self.momentum_start, 0.0, 1.0, high_open=True)
        _in_range("optim.momentum_end", self.momentum_end, 0.0, 1.0, high_open=True)
        _one_of("optim.momentum_ramp", self.momentum_ramp, MOMENTUM_RAMPS)
        if self.momentum_updates < 0:
            raise ConfigError(
                f"`optim.momentum_updates` must be >= 0, got {self.momentum_updates!r}"
            )
        _positive("optim.max_norm", self.max_norm, allow_none=True)
        for name in ("l2", "l1", "kl_sparsity"):
            value = getattr(self, name)
            if math.isnan(value) or value < 0 or math.isinf(value):
                raise ConfigError(f"`optim.{name}` must be a finite number >= 0, got {value!r}")
        _in_range("optim.kl_target", self.kl_target, 0.0, 1.0, high_open=True)


@dataclass(frozen=True)
class RunConfig:
    """One training run: data, model, recipe, and the run's budget and seed."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    epochs: int = 50  # a few minutes of MNIST on a 2-core CPU
    seed: int = 0  # every random draw (init, data order, masks) derives from this
    device: str = "cpu"  # "cuda" for the paper budget
    early_stopping: int | None = None  # stop after this many epochs without a better val error
    checkpoint_every: int = 5  # epochs between checkpoints (and always on SIGINT/SIGTERM)
    eval_test_every: int = 1  # epochs between test-error evaluations in the history
    # "bf16": mixed precision (bf16 products and activations, fp32 weights, momentum, max-norm,
    # loss and metrics); "auto" becomes bf16 where the hardware has it (dropoutlab.precision)
    precision: str = "fp32"

    def __post_init__(self) -> None:
        _positive("epochs", self.epochs)
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"`seed` must be an integer in [0, {MAX_SEED}] (stored as a 64-bit "
                              f"integer), got seed={self.seed!r}")
        if not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):
            raise ConfigError(f"`device` must be 'cpu' or 'cuda[:N]', got device={self.device!r}")
        _positive("early_stopping", self.early_stopping, allow_none=True)
        _positive("checkpoint_every", self.checkpoint_every)
        _positive("eval_test_every", self.eval_test_every)
        if self.precision == "auto":  # resolved before hashing: a stored run says what it used
            object.__setattr__(self, "precision", resolve_precision("auto", self.device))
        _one_of("precision", self.precision, ("fp32", "bf16"))

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples become lists), the form stored and hashed."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """Rebuild a config from :meth:`to_dict` output (missing keys take defaults)."""
        return _build(cls, data, prefix="")


_SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig}


def _build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix + unknown[0]!r}; valid keys: {', '.join(flat_keys())}"
        )
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        if name in _SECTIONS and cls is RunConfig:
            if not isinstance(value, Mapping):
                raise ConfigError(f"config section {name!r} must be a table, got {value!r}")
            kwargs[name] = _build(_SECTIONS[name], value, prefix=f"{name}.")
        else:
            kwargs[name] = _coerce(prefix + name, _field_type(cls, name), value)
    return cls(**kwargs)


def _field_type(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def _coerce(key: str, annotation: Any, value: Any) -> Any:
    """Check ``value`` against a field's annotation; convert lists to tuples and ints to floats."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (value is None or value == "none"):
            return None  # TOML has no null: optional fields are written as "none"
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, inner[0], value)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"`{key}` must be a list, got {key}={value!r}")
        return tuple(_coerce(key, args[0], item) for item in value)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"`{key}` must be true or false, got {key}={value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"`{key}` must be an integer, got {key}={value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"`{key}` must be a number, got {key}={value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"`{key}` must be a string, got {key}={value!r}")
        return value
    raise ConfigError(f"`{key}` has an unsupported type {annotation!r}")  # pragma: no cover


def flat_keys() -> list[str]:
    """Every valid dotted override key, e.g. ``optim.lr``, ``model.hidden``, ``epochs``."""
    keys = []
    for f in fields(RunConfig):
        if f.name in _SECTIONS:
            keys += [f"{f.name}.{sub.name}" for sub in fields(_SECTIONS[f.name])]
        else:
            keys.append(f.name)
    return keys


def _parse_value(text: str) -> Any:
    """Parse an override's value as a TOML value, falling back to a bare string."""
    if text.lower() in ("none", "null"):
        return None
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    if key not in flat_keys():
        raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(flat_keys())}")
    section, _, name = key.rpartition(".")
    (data[section] if section else data)[name] = value


def apply_overrides(config: RunConfig, overrides: Iterable[str]) -> RunConfig:
    """Apply ``key=value`` overrides (dotted keys, TOML values) with type checks.

    Example:
        >>> apply_overrides(RunConfig(), ["optim.lr=0.5", "model.hidden=[800, 800]"]).optim.lr
        0.5

    Raises:
        ConfigError: malformed override, unknown key (the message lists valid keys), wrong type
            or out-of-range value.
    """
    data = config.to_dict()
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override must look like key=value, got {item!r}")
        _set_dotted(data, key.strip(), _parse_value(raw.strip()))
    return RunConfig.from_dict(data)


def with_changes(config: RunConfig, changes: Mapping[str, Any]) -> RunConfig:
    """A copy of ``config`` with dotted keys replaced by Python values, validated.

    Example:
        >>> with_changes(RunConfig(), {"model.drop_hidden": 0.3, "epochs": 2}).epochs
        2
    """
    data = config.to_dict()
    for key, value in changes.items():
        _set_dotted(data, key, list(value) if isinstance(value, tuple) else value)
    return RunConfig.from_dict(data)


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> RunConfig:
    """Read a TOML config file (sections ``[data]``, ``[model]``, ``[optim]``), then overrides.

    Raises:
        ConfigError: the file is missing, not a readable regular file (a folder, a FIFO), not
            UTF-8, not TOML, or holds an invalid config; the message names the file.
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise ConfigError(f"config file {str(path)!r} does not exist; pass the path of a TOML "
                          f"config file")
    try:
        raw = check_input_file(path, "the config file",
                               hint="pass the path of a TOML config file").read_bytes()
        data = tomllib.loads(raw.decode("utf-8"))
    except PathError as err:
        raise ConfigError(str(err)) from None
    except OSError as err:
        raise ConfigError(f"config file {str(path)!r} cannot be read "
                          f"({describe_os_error(err)}); pass a readable TOML file") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {str(path)!r} must be UTF-8 text (TOML), got byte "
                          f"0x{err.object[err.start]:02x} at offset {err.start}, which is not "
                          f"UTF-8; save the file as UTF-8") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {err}") from None
    return apply_overrides(RunConfig.from_dict(data), overrides)


def _toml_value(value: Any) -> str:
    if value is None:
        return '"none"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def config_to_toml(config: RunConfig) -> str:
    """The resolved config as TOML; ``None`` is written as the string ``"none"``."""
    data = config.to_dict()
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if k not in _SECTIONS]
    for section in _SECTIONS:
        lines += ["", f"[{section}]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in data[section].items()]
    return "\n".join(lines) + "\n"


def config_hash(
    config: RunConfig | Mapping[str, Any], *, extra: Mapping[str, Any] | None = None
) -> str:
    """Stable 16-hex-digit SHA-256 key of a fully resolved config (plus optional ``extra``).

    The hash is of canonical JSON (sorted keys, no whitespace), so it does not depend on field order
    or Python version. Fields of :data:`HASH_NEUTRAL_DEFAULTS` at their neutral value are left out,
    so adding a field never changes the key of a config stored before it existed. A user's data
    file is keyed by ``data.sha256`` without ``data.path``: the same data moved or copied gives
    the same key, changed data another. ``extra`` lets a
    sweep key on what it runs besides the config (e.g. the task name).
    """
    data = config.to_dict() if isinstance(config, RunConfig) else dict(config)
    payload = {"config": _without_neutral_defaults(data),
               **({"extra": dict(extra)} if extra else {})}
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _without_neutral_defaults(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` less every field of :data:`HASH_NEUTRAL_DEFAULTS` that holds its neutral value."""
    out = {key: dict(value) if isinstance(value, Mapping) else value
           for key, value in data.items()}
    for dotted, neutral in HASH_NEUTRAL_DEFAULTS.items():
        section, _, name = dotted.rpartition(".")
        table = out.get(section) if section else out
        if isinstance(table, dict) and name in table and table[name] == neutral:
            del table[name]
    data_table = out.get("data")
    if isinstance(data_table, dict) and data_table.get("sha256") is not None:
        data_table.pop("path", None)  # a user's file is keyed by its content, not its place
    return out
