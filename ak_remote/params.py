"""Typed job parameters: the one definition shared by jobs, templates and the launcher.

A job's parameters live in ClearML's `General` hyperparameter section as strings (that is how
the server stores them); this module turns `key=value` text into typed values and back, and
rejects anything that is not a known parameter of the right type and range.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ak_remote.contract import PARAM_SECTION
from ak_remote.errors import UsageError

Value = str | int | float | bool | tuple[str, ...]

# ClearML hyperparameter section the jobs connect their parameters to (ak_remote.contract).
SECTION = PARAM_SECTION

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
# A value longer than this is not a parameter but a mistake (or an attack on the UI).
MAX_VALUE_LENGTH = 4096


@dataclass(frozen=True)
class ParamSpec:
    """One typed parameter: its type, default, allowed range or choices, and help text."""

    name: str
    type: str  # "int", "float", "str", "bool" or "list" (comma-separated strings)
    default: Value
    help: str
    choices: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None

    def parse(self, raw: object) -> Value:
        """Turn `raw` (text from the CLI or ClearML, or a typed value) into this type.

        Raises UsageError naming the parameter, the bad value and what is accepted.
        """
        text = _as_text(raw)
        if len(text) > MAX_VALUE_LENGTH:
            raise UsageError(f"{self.name}: value is {len(text)} characters long", self.describe())
        value: Value
        try:
            if self.type == "int":
                if isinstance(raw, bool):
                    raise ValueError
                value = int(text, 10) if isinstance(raw, str) else int(raw)  # type: ignore[call-overload]
                if not isinstance(raw, str) and value != raw:
                    raise ValueError
            elif self.type == "float":
                if isinstance(raw, bool):
                    raise ValueError
                value = float(text)
                if not math.isfinite(value):
                    raise ValueError
            elif self.type == "bool":
                if isinstance(raw, bool):
                    value = raw
                elif text.strip().lower() in _TRUE:
                    value = True
                elif text.strip().lower() in _FALSE:
                    value = False
                else:
                    raise ValueError
            elif self.type == "list":
                items = raw if isinstance(raw, (list, tuple)) else text.split(",")
                value = tuple(str(item).strip() for item in items if str(item).strip())
            else:
                value = text
        except (TypeError, ValueError, OverflowError):
            raise UsageError(
                f"{self.name}: {text!r} is not a valid {self.type} value", self.describe()
            ) from None
        self._check_range(value, text)
        return value

    def _check_range(self, value: Value, text: str) -> None:
        if self.choices:
            picked = value if isinstance(value, tuple) else (str(value),)
            bad = [item for item in picked if item not in self.choices]
            if bad or (self.type == "list" and not picked):
                raise UsageError(
                    f"{self.name}: {text!r} is not one of {', '.join(self.choices)}",
                    self.describe(),
                )
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if self.min is not None and value < self.min:
                raise UsageError(f"{self.name}: {value} is below {_num(self.min)}", self.describe())
            if self.max is not None and value > self.max:
                raise UsageError(f"{self.name}: {value} is above {_num(self.max)}", self.describe())

    def describe(self) -> str:
        """A short 'what is accepted' text for error messages and --help."""
        article = "an" if self.type == "int" else "a"
        parts = [f"{self.name} takes {article} {self.type}"]
        if self.choices:
            joiner = "," if self.type == "list" else ", "
            parts.append(
                f"{'any of' if self.type == 'list' else 'one of'} {joiner.join(self.choices)}"
            )
        if self.min is not None and self.max is not None:
            parts.append(f"from {_num(self.min)} to {_num(self.max)}")
        elif self.min is not None:
            parts.append(f"of at least {_num(self.min)}")
        parts.append(f"default {format_value(self.default) or '(empty)'}")
        return ", ".join(parts)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _as_text(raw: object) -> str:
    if isinstance(raw, (list, tuple)):
        return ",".join(str(item) for item in raw)
    return str(raw)


def format_value(value: Value) -> str:
    """The text form of a typed value, as stored in ClearML and shown to users."""
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class ParamSet:
    """The parameters of one job, in display order."""

    specs: tuple[ParamSpec, ...]
    _by_name: dict[str, ParamSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {spec.name: spec for spec in self.specs})

    def names(self) -> list[str]:
        return [spec.name for spec in self.specs]

    def get(self, name: str) -> ParamSpec:
        """The spec called `name`; raises UsageError listing the valid names."""
        bare = name.split("/", 1)[1] if name.startswith(f"{SECTION}/") else name
        try:
            return self._by_name[bare]
        except KeyError:
            raise UsageError(
                f"unknown parameter {name!r}",
                f"valid parameters: {', '.join(self.names())}",
            ) from None

    def defaults(self) -> dict[str, Value]:
        return {spec.name: spec.default for spec in self.specs}

    def resolve(
        self, overrides: Mapping[str, object], base: Mapping[str, object] | None = None
    ) -> dict[str, Value]:
        """Defaults, then `base` (e.g. a template's values), then `overrides`, all validated.

        Raises UsageError on the first unknown name or bad value.
        """
        values = self.defaults()
        for source in (base or {}, overrides):
            for name, raw in source.items():
                spec = self.get(name)
                values[spec.name] = spec.parse(raw)
        return values

    def to_strings(self, values: Mapping[str, Value]) -> dict[str, str]:
        """Typed values as the strings ClearML stores."""
        return {name: format_value(values[name]) for name in self.names() if name in values}


def parse_assignments(items: Iterable[str], option: str = "--set") -> dict[str, str]:
    """Split `key=value` strings; raises UsageError for anything without a key and an '='."""
    result: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(
                f"{option} {item!r} is not KEY=VALUE", f"for example {option} epochs=10"
            )
        if key in result:
            raise UsageError(f"{option} gives {key!r} twice", "give each parameter once")
        result[key] = value.strip()
    return result


def parse_sweep(items: Iterable[str]) -> dict[str, list[str]]:
    """Split `key=v1,v2,...` sweep axes; raises UsageError for empty or malformed axes."""
    axes: dict[str, list[str]] = {}
    for key, text in parse_assignments(items, option="--sweep").items():
        values = [v.strip() for v in text.split(",")]
        if not values or any(not v for v in values):
            raise UsageError(
                f"--sweep {key}={text!r} has an empty value", "for example --sweep epochs=10,20"
            )
        if len(set(values)) != len(values):
            raise UsageError(f"--sweep {key} repeats a value", "give each value once")
        axes[key] = values
    return axes


def common_params(
    default_dataset: str,
    default_objective: str = "val_loss",
    objectives: tuple[str, ...] = (),
) -> tuple[ParamSpec, ...]:
    """The parameters every job takes, with the job's own dataset and objective defaults."""
    return (
        ParamSpec(
            "dataset",
            "str",
            default_dataset,
            "bundled name (see `ak-remote jobs JOB`), local path, URL/bucket path, or clearml://DATASET_ID",
        ),
        ParamSpec("target", "str", "", "target column of a CSV dataset (default: the last column)"),
        ParamSpec(
            "max_samples", "int", 0, "use at most this many samples (0: all)", min=0, max=10**9
        ),
        ParamSpec(
            "max_trials", "int", 3, "number of candidate models AutoKeras tries", min=1, max=10000
        ),
        ParamSpec("epochs", "int", 10, "epochs per trial and for the final fit", min=1, max=100000),
        ParamSpec(
            "tuner",
            "str",
            "greedy",
            "search algorithm",
            choices=("greedy", "bayesian", "hyperband", "random"),
        ),
        ParamSpec(
            "objective",
            "str",
            default_objective,
            "metric the search optimises (e.g. val_loss, val_accuracy)",
            choices=objectives,
        ),
        ParamSpec("batch_size", "int", 32, "training batch size", min=1, max=65536),
        ParamSpec(
            "validation_split",
            "float",
            0.2,
            "share of training data held out for validation",
            min=0.05,
            max=0.5,
        ),
        ParamSpec(
            "test_split",
            "float",
            0.2,
            "share of all data held out for the final test",
            min=0.05,
            max=0.5,
        ),
        ParamSpec(
            "seed", "int", 42, "seed of the split, the search and TensorFlow", min=0, max=2**31 - 1
        ),
        ParamSpec(
            "early_stopping_patience",
            "int",
            3,
            "epochs without improvement before stopping (0: off)",
            min=0,
            max=10000,
        ),
        ParamSpec(
            "histogram_freq",
            "int",
            1,
            "write weight histograms every N epochs (0: off)",
            min=0,
            max=10000,
        ),
        ParamSpec(
            "export_formats",
            "list",
            ("keras", "savedmodel"),
            "model formats to export",
            choices=("keras", "savedmodel", "h5"),
        ),
        ParamSpec(
            "export_tolerance",
            "float",
            1e-4,
            "largest absolute difference allowed between reloaded and in-memory predictions",
            min=0.0,
            max=1.0,
        ),
        ParamSpec(
            "require_better_than_baseline",
            "bool",
            False,
            "fail the run (exit 5) when it does not beat the majority-class / training-mean "
            "baseline on the test split",
        ),
        ParamSpec(
            "distribution",
            "str",
            "auto",
            "auto: MirroredStrategy over all GPUs when there are several; none; mirrored",
            choices=("auto", "none", "mirrored"),
        ),
        ParamSpec("gpus", "int", 0, "GPUs to use (0: all visible)", min=0, max=64),
        ParamSpec(
            "precision",
            "str",
            "float32",
            "Keras dtype policy for training: float32; mixed_float16 (NVIDIA GPUs of compute "
            "capability 7.0+); mixed_bfloat16 (Ampere+ GPUs, TPUs). Exported models keep "
            "float32 outputs",
            choices=("float32", "mixed_float16", "mixed_bfloat16"),
        ),
    )


def param_set(specs: Sequence[ParamSpec]) -> ParamSet:
    return ParamSet(tuple(specs))


def shortest_names(names: Sequence[str]) -> dict[str, str]:
    """Each "/"-separated name's shortest tail that no other name ends with
    ("structured_data_block_1/normalize" -> "normalize" while it is the only "normalize")."""
    short: dict[str, str] = {}
    for name in names:
        parts = name.split("/")
        for size in range(1, len(parts) + 1):
            tail = "/".join(parts[-size:])
            if sum("/".join(n.split("/")[-size:]) == tail for n in names) == 1:
                short[name] = tail
                break
        else:
            short[name] = name
    return short
