"""The dataset resolver and the recorded split, without training (fast: no TensorFlow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ak_remote.errors import DataError, ExitCode
from ak_remote.runtime import data as data_module


def test_bundled_sets_load_as_each_family_needs() -> None:
    images = data_module.load("digits", "image", "classifier")
    assert images.x.shape == (1797, 8, 8)
    assert images.x.dtype == np.float32
    assert data_module.class_names(images) == [str(d) for d in range(10)]
    table = data_module.load("digits", "structured", "regressor")
    assert table.x.shape == (1797, 64)
    assert len(table.columns) == 64
    assert table.y.dtype == np.float32
    wine = data_module.load("wine", "structured", "classifier")
    assert data_module.class_names(wine) == ["class_0", "class_1", "class_2"]
    assert wine.columns[0] == "alcohol"
    assert set(wine.column_types.values()) == {"numerical"}
    cancer = data_module.load("breast_cancer", "structured", "classifier")
    assert data_module.class_names(cancer) == ["benign", "malignant"]
    diabetes = data_module.load("diabetes", "structured", "regressor")
    assert diabetes.y.dtype == np.float32
    assert len(diabetes) == 442
    reviews = data_module.load("reviews", "text", "classifier")
    assert reviews.x.dtype.kind == "U"
    assert reviews.text_column == "text"
    assert data_module.class_names(reviews) == ["negative", "neutral", "positive"]
    stars = data_module.load("reviews", "text", "regressor")
    assert set(stars.y.tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}


def test_a_bad_reference_is_a_data_error_inside_a_job() -> None:
    with pytest.raises(DataError) as info:
        data_module.load("mnist", "image", "classifier")
    assert info.value.exit_code == ExitCode.DATA
    assert "unknown dataset 'mnist'" in str(info.value)


def test_split_is_seeded_disjoint_and_capped() -> None:
    data = data_module.load("wine", "structured", "classifier")
    first = data_module.split(data, seed=3, test_split=0.2, validation_split=0.25, cap=0)
    again = data_module.split(data, seed=3, test_split=0.2, validation_split=0.25, cap=0)
    other = data_module.split(data, seed=4, test_split=0.2, validation_split=0.25, cap=0)
    assert first.digest() == again.digest() != other.digest()
    parts = [set(first.train.tolist()), set(first.val.tolist()), set(first.test.tolist())]
    assert sum(map(len, parts)) == len(data) == len(set().union(*parts))
    assert len(first.test) == round(178 * 0.2)
    capped = data_module.split(data, seed=3, test_split=0.2, validation_split=0.25, cap=50)
    assert len(capped.train) + len(capped.val) + len(capped.test) == 50
    assert capped.to_json()["n_total"] == 178
    with pytest.raises(DataError, match="only 5 samples"):
        data_module.split(data, seed=3, test_split=0.2, validation_split=0.2, cap=5)


def test_recorded_validation_part_is_the_one_autokeras_takes() -> None:
    from autokeras.utils.data_utils import split_dataset

    data = data_module.load("iris", "structured", "classifier")
    for cap, fraction in ((0, 0.2), (37, 0.33), (120, 0.05)):
        split = data_module.split(data, seed=1, test_split=0.2, validation_split=fraction, cap=cap)
        order = split.train_val
        train, val = split_dataset(order, split.autokeras_validation_split)
        assert np.array_equal(val, split.val)
        assert np.array_equal(train, split.train)


def test_fingerprint_follows_the_arrays() -> None:
    data = data_module.load("iris", "structured", "classifier")
    same = data_module.load("iris", "structured", "classifier")
    assert data_module.fingerprint(data) == data_module.fingerprint(same)
    same.x[0, 0] += 1
    assert data_module.fingerprint(data) != data_module.fingerprint(same)


def test_csv_tables(tmp_path: Path) -> None:
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("size,colour,label\n1.5,red,a\n,blue,b\n2.0,red,a\n")
    data = data_module.load(str(mixed), "structured", "classifier")
    assert data.columns == ["size", "colour"]
    assert data.target_name == "label"
    assert data.column_types == {"size": "numerical", "colour": "categorical"}
    assert data.x.dtype.kind == "U"
    assert data.x[1, 0] == "nan"
    numeric = tmp_path / "numeric.csv"
    numeric.write_text("y,a,b\n1,2,3\n4,5,\n")
    table = data_module.load(str(numeric), "structured", "regressor", target="y")
    assert table.x.dtype == np.float32
    assert np.isnan(table.x[1, 1])
    assert table.y.tolist() == [1.0, 4.0]
    assert table.columns == ["a", "b"]
    with pytest.raises(DataError, match="not numeric"):
        data_module.load(str(mixed), "structured", "regressor")
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,b\n1,2\n3\n")
    with pytest.raises(DataError, match="line 3 has 1 fields"):
        data_module.load(str(ragged), "structured", "classifier")
    texts = tmp_path / "texts.csv"
    texts.write_text('label,text,extra\npos,"good, really",x\nneg,bad,y\n')
    text = data_module.load(str(texts), "text", "classifier", target="label")
    assert text.x.tolist() == ["good, really", "bad"]
    assert text.text_column == "text"


def test_image_folder_and_npz(tmp_path: Path) -> None:
    from PIL import Image

    root = tmp_path / "images"
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (6, 4), (i * 50, 0, 0)).save(root / label / f"{i}.jpg")
    (root / "dog" / "notes.txt").write_text("ignored")
    images = data_module.load(str(root), "image", "classifier")
    assert images.x.shape == (4, 4, 6, 3)
    assert images.y.tolist() == ["cat", "cat", "dog", "dog"]
    Image.new("RGB", (5, 5)).save(root / "dog" / "odd.png")
    with pytest.raises(DataError, match="resize the images"):
        data_module.load(str(root), "image", "classifier")

    arrays = tmp_path / "arrays.npz"
    np.savez(arrays, x=np.ones((3, 4, 4)), labels=np.arange(3))
    with pytest.raises(DataError, match="has no y array"):
        data_module.load(str(arrays), "image", "classifier")
    np.savez(arrays, x=np.ones((3, 4)), y=np.arange(3))
    with pytest.raises(DataError, match=r"images need \(n, height, width"):
        data_module.load(str(arrays), "image", "classifier")
    np.savez(arrays, x=np.ones((3, 4, 4)), y=np.array([1.0, 2.0, 3.0]))
    loaded = data_module.load(str(arrays), "image", "regressor")
    assert loaded.y.dtype == np.float32
    assert loaded.x.dtype == np.float32
