"""The job parameters as one typed object (ParamSet yields a name -> value mapping)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

from ak_remote.params import Value


@dataclass(frozen=True)
class Settings:
    """Validated parameters of one run, typed for the code that uses them."""

    dataset: str
    target: str
    max_samples: int
    max_trials: int
    epochs: int
    tuner: str
    objective: str
    batch_size: int
    validation_split: float
    test_split: float
    seed: int
    early_stopping_patience: int
    histogram_freq: int
    export_formats: tuple[str, ...]
    export_tolerance: float
    require_better_than_baseline: bool
    distribution: str
    gpus: int
    precision: str

    @classmethod
    def from_values(cls, values: Mapping[str, Value]) -> Settings:
        """Build from ParamSet.resolve output; raises TypeError if a value has the wrong type."""
        kwargs: dict[str, Value] = {}
        for item in fields(cls):
            value = values[item.name]
            expected = {"str": str, "int": int, "float": float}.get(str(item.type))
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if expected is not None and not isinstance(value, expected):
                raise TypeError(f"parameter {item.name} is {value!r}, not {item.type}")
            kwargs[item.name] = value
        return cls(**kwargs)  # type: ignore[arg-type]
