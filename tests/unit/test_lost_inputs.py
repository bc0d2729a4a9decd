"""Unit: what the loaders and the serving metadata make of awkward inputs (issue 20, items 16
and 17): 16-bit PNGs scaled, not clipped; an infinite number refused, not taken for a category;
two columns that would share one serving input name refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ak_remote.errors import DataError
from ak_remote.model.serving import input_keys, number_problem
from ak_remote.runtime import data as data_module


def test_colliding_column_names_are_refused_before_training(tmp_path: Path) -> None:
    table = tmp_path / "cols.csv"
    rows = "".join(f"{i},{i * 2},{i % 2}\n" for i in range(30))
    table.write_text("x 1,x_1,label\n" + rows)
    with pytest.raises(DataError) as caught:
        data_module.load(str(table), "structured", "classifier")
    assert caught.value.message == (
        "the columns 'x 1' and 'x_1' would both be the serving model's input 'x_1'"
    )
    assert "rename one of them" in str(caught.value.hint)
    # The same names, apart: each column is its own key, and the mapping is what it says.
    assert input_keys(["x 1", "od280/od315", "1st"]) == {
        "x 1": "x_1",
        "od280/od315": "od280_od315",
        "1st": "c_1st",
    }
    with pytest.raises(DataError, match="'1st' and 'c_1st'"):
        input_keys(["1st", "c_1st"])
    with pytest.raises(DataError, match="'a' and 'a'"):
        input_keys(["a", "a"])


def test_an_infinite_number_is_refused_not_taken_for_a_category(tmp_path: Path) -> None:
    table = tmp_path / "inf.csv"
    rows = [f"{i * 0.5},{i},{'a' if i % 2 else 'b'}" for i in range(30)]
    rows[6] = "inf,6,a"
    table.write_text("width,height,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError) as caught:
        data_module.load(str(table), "structured", "classifier")
    assert caught.value.message == f"{table} row 7, column 'width': 'inf' is not a finite number"
    # A column of words that happens to hold the word "inf" stays a category column.
    words = tmp_path / "words.csv"
    words.write_text(
        "size,height,label\n"
        + "".join(f"{['inf', 'big', 'small'][i % 3]},{i},{i % 2}\n" for i in range(30))
    )
    loaded = data_module.load(str(words), "structured", "classifier")
    assert loaded.column_types == {"size": "categorical", "height": "numerical"}
    assert [number_problem(c) for c in ("", "nan", " 2.5 ", "1e999", "-inf", "x")] == [
        None,
        None,
        None,
        "'1e999' is not a finite number",
        "'-inf' is not a finite number",
        "'x' is not a number",
    ]


def test_16_bit_pngs_are_scaled_not_clipped(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(4)
    eight = rng.integers(0, 256, size=(12, 6, 6)).astype("uint8")
    for bits in (8, 16):
        for i, image in enumerate(eight):
            folder = tmp_path / str(bits) / ("odd" if i % 2 else "even")
            folder.mkdir(parents=True, exist_ok=True)
            array = image if bits == 8 else image.astype("uint16") * 257
            Image.fromarray(array).save(folder / f"{i:02d}.png")
    assert Image.open(tmp_path / "16" / "even" / "00.png").mode == "I;16"
    loaded = {
        bits: data_module.load(str(tmp_path / str(bits)), "image", "classifier") for bits in (8, 16)
    }
    np.testing.assert_allclose(loaded[16].x, loaded[8].x, atol=1e-4)
    assert loaded[8].notes == []
    assert loaded[16].notes == [
        "12 of 12 images are 16-bit grayscale: scaled to the 0-255 range (value / 257), "
        "kept as fractions"
    ]
