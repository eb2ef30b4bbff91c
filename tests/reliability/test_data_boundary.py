"""User data is validated where it enters: the label set is inferred and shown (or declared),
and labels that would silently make another task are errors naming the row."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from distil.data import DataConfig, load_data
from distil.errors import DataError


def labelled_csv(path: Path, labels: list[str]) -> Path:
    rows = [f"{i % 7},{(i * 3) % 5},{label}" for i, label in enumerate(labels)]
    path.write_text("x,y,label\n" + "\n".join(rows) + "\n")
    return path


def load(path: Path, **options):
    return load_data(DataConfig(dataset="file", path=str(path), val_fraction=0.2,
                                test_fraction=0.2, **options))  # fmt: skip


def test_a_stray_non_integer_among_class_ids_is_an_error_not_a_new_class(tmp_path):
    """'1O' for '10' used to become a class of its own, with every id read as a name."""
    labels = [str(i % 3) for i in range(40)]
    labels[17] = "1O"
    path = labelled_csv(tmp_path / "typo.csv", labels)
    with pytest.raises(
        DataError, match=r"typo.csv:19: label '1O' is not a class id .*label_kind: name"
    ):
        load(path)
    names = load(path, label_kind="name").class_names
    assert names == ["0", "1", "1O", "2"]  # read as names when the recipe says so


def test_declared_classes_fix_the_ids_and_refuse_other_labels(tmp_path, caplog):
    path = labelled_csv(tmp_path / "pets.csv", ["cat", "dog", "cat", "dog"] * 10)
    with caplog.at_level(logging.WARNING, logger="distil"):
        splits = load(path, classes=["dog", "cat", "bird"])
    assert splits.class_names == ["dog", "cat", "bird"]
    assert int(splits.train.labels.max()) <= 1
    assert "['bird'] occur in no row" in caplog.text
    with pytest.raises(DataError, match=r"pets.csv:\d+: label 'cat' is not one of data.classes"):
        load(path, classes=["dog", "bird"])


def test_the_inferred_label_set_is_shown(tmp_path, caplog):
    path = labelled_csv(tmp_path / "pets.csv", ["cat", "dog"] * 10)
    with caplog.at_level(logging.INFO, logger="distil"):
        load(path)
    assert "20 rows, 2 classes: cat, dog" in caplog.text


def test_a_single_class_is_an_error(tmp_path):
    path = labelled_csv(tmp_path / "one.csv", ["spam"] * 20)
    with pytest.raises(DataError, match="every label is 'spam'; a classifier needs at least two"):
        load(path)


def test_fewer_samples_than_the_splits_need_is_an_error(tmp_path):
    path = labelled_csv(tmp_path / "tiny.csv", ["a", "b"])
    with pytest.raises(DataError, match=r"tiny.csv has 2 samples, too few for its splits \(train"):
        load(path)
