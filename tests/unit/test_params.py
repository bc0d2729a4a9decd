"""Typed job parameters: parsing, validation and round trips through ClearML's string form."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ak_remote.catalog import JOBS, get_job
from ak_remote.errors import UsageError
from ak_remote.params import (
    MAX_VALUE_LENGTH,
    format_value,
    parse_assignments,
    parse_sweep,
)
from tests.helpers import value_or_refusal

PARAMS = get_job("structured-classifier").params


def test_defaults_survive_a_round_trip_through_strings() -> None:
    for job in JOBS.values():
        defaults = job.params.defaults()
        assert job.params.resolve(job.params.to_strings(defaults)) == defaults


def test_overrides_are_typed() -> None:
    values = PARAMS.resolve(
        {"epochs": "7", "validation_split": "0.25", "export_formats": "keras, h5"}
    )
    assert values["epochs"] == 7
    assert values["validation_split"] == 0.25
    assert values["export_formats"] == ("keras", "h5")


def test_section_prefix_is_accepted() -> None:
    assert PARAMS.resolve({"General/epochs": "2"})["epochs"] == 2


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("epochs", "1.5", "not a valid int"),
        ("epochs", "-1", "below 1"),
        ("validation_split", "nan", "not a valid float"),
        ("validation_split", "0.9", "above 0.5"),
        ("export_formats", "onnx", "not one of"),
        ("export_formats", "", "not one of"),
        ("tuner", "grid", "not one of"),
        ("seed", "1e3", "not a valid int"),
    ],
)
def test_bad_values_name_the_parameter_and_what_it_takes(name: str, raw: str, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        PARAMS.resolve({name: raw})
    assert message in str(caught.value)
    assert f"{name} takes" in str(caught.value)


def test_overlong_value_is_refused() -> None:
    with pytest.raises(UsageError, match="characters long"):
        PARAMS.resolve({"dataset": "x" * (MAX_VALUE_LENGTH + 1)})


def test_sweep_axes() -> None:
    assert parse_sweep(["epochs=10,20", "tuner=greedy,random"]) == {
        "epochs": ["10", "20"],
        "tuner": ["greedy", "random"],
    }
    with pytest.raises(UsageError, match="empty value"):
        parse_sweep(["epochs=10,,20"])
    with pytest.raises(UsageError, match="repeats"):
        parse_sweep(["epochs=10,10"])


# Property-based: whatever text users type, parsing either gives a valid typed value or a
# UsageError, never another exception; and valid values survive the string round trip.
@given(name=st.sampled_from(PARAMS.names()), raw=st.text(max_size=64))
def test_any_text_gives_a_value_or_a_usage_error(name: str, raw: str) -> None:
    values = value_or_refusal(lambda: PARAMS.resolve({name: raw}))
    if isinstance(values, UsageError):
        assert name in str(values)
        assert "\n" not in values.message or "\n" in raw
        return
    again = PARAMS.resolve(PARAMS.to_strings(values))
    assert format_value(again[name]) == format_value(values[name])


@given(items=st.lists(st.text(max_size=20), max_size=5))
def test_assignment_parsing_never_crashes(items: list[str]) -> None:
    try:
        parsed = parse_assignments(items)
    except UsageError:
        return
    assert all(key and key == key.strip() for key in parsed)
    assert len(parsed) == len(items)
