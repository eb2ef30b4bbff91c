"""User data files fuzzed: one line of a good CSV/JSONL table or LM corpus broken at a time.

Each example writes a small valid file, then breaks one line of it — truncated JSON, a
latin-1 byte, a NUL, invalid UTF-8 in the middle, a missing or wrong-typed label or text, a
class id of 10¹², an integer beyond float, a huge line, JSON nested 10⁵ deep — or the whole
file (UTF-16 with its BOM, a UTF-8 BOM, blank lines). The contract: the file loads to what
an independent reading of it says (same samples, finite inputs, labels in range), empty LM
texts skipped with one warning counting them; or it is refused with one ``DataError`` line
naming ``file:line`` of the broken line — never a traceback, a hang or silent garbage.

Examples per run (derandomized): classification files 300, LM corpora 300 — 600 fuzzed
files; plus a teacher whose label set is not the data's. (A teacher/student vocabulary
mismatch and token ids beyond a model's head are pinned in ``tests/test_lm_data.py``.)
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from distil.data import DataConfig, load_data
from distil.errors import ConfigError, DataError, DistilError
from distil.lm.data import read_jsonl

EXAMPLES = {"files": 300, "corpora": 300}
FUZZ = settings(
    deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)  # fmt: skip


def fuzz(family: str) -> settings:
    return settings(FUZZ, max_examples=EXAMPLES[family])


# Bytes that break a line's encoding or its JSON, spliced into the line at some position.
BAD_BYTES = [b"\xff", b"\xe9", b"\x00", b"\xc3", b"\xed\xa0\x80", b"\x80\x80", b"\xfe\xff"]
# What a field becomes in a broken row.
BAD_VALUES = st.one_of(
    st.sampled_from([None, "", " ", "abc", -1, 1.5, True, [], [1], {}, {"a": 1}, "NaN", "inf"]),
    st.sampled_from([10**12, 10**400, -(10**400), "1" * 500, "\u2028", "a\u2028b", "\x0c"]),
    st.text(max_size=8),
    st.integers(),
)


# Features at the edges of float32 and float64 (inputs are float32).
EDGE_NUMBERS = st.sampled_from([
    10**400, -(10**400), 1e300, -1e300, 3.4e38, 3.5e38, -3.5e38, 1e-320, "1e39", "-1e39",
    "nan", "inf", "-inf", "1_000", "0x10", " 7 ", True, 2**63, 1e38,
])  # fmt: skip


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def one_line(message: str) -> str:
    assert "\n" not in message and "Traceback" not in message, message
    return message


# ----------------------------------------------------------------------------- classification

ROWS = 30


def good_rows() -> list[dict[str, Any]]:
    return [{"x": i % 7, "y": (i * 3) % 5 - 2.5, "label": ["cat", "dog", "eel"][i % 3]} for i in range(ROWS)]  # fmt: skip


def encode(rows: list[dict], fmt: str) -> list[bytes]:
    """The file's lines (each with its newline); CSV's first line is the header."""
    if fmt == "jsonl":
        return [json.dumps(row, ensure_ascii=False).encode() + b"\n" for row in rows]
    fields = list(rows[0])
    lines = [",".join(fields).encode() + b"\n"]
    for row in rows:
        lines.append(",".join(_csv_cell(row.get(f, "")) for f in fields).encode() + b"\n")
    return lines


def _csv_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n\r') else text


@st.composite
def broken_tables(draw) -> dict[str, Any]:
    fmt = draw(st.sampled_from(["csv", "jsonl"]))
    rows = good_rows()
    kind = draw(st.sampled_from([
        "splice bytes", "truncate", "field value", "drop field", "extra field", "huge line",
        "deep nesting", "utf-16", "utf-8 bom", "latin-1", "blank lines", "edge number",
        "NUL in a label",
    ]))  # fmt: skip
    row = draw(st.integers(min_value=0, max_value=ROWS - 1))
    first_data_line = 2 if fmt == "csv" else 1
    line = row + first_data_line  # 1-based line of the broken row
    if kind == "edge number":
        rows[row][draw(st.sampled_from(["x", "y"]))] = draw(EDGE_NUMBERS)
    elif kind == "NUL in a label":
        rows[row]["label"] = rows[row]["label"][:1] + "\x00" + rows[row]["label"][1:]
    if kind in ("field value", "drop field", "extra field", "huge line", "deep nesting"):
        field = draw(st.sampled_from(["x", "y", "label"]))
        if kind == "field value":
            rows[row][field] = draw(BAD_VALUES)
        elif kind == "drop field":
            del rows[row][field]
        elif kind == "extra field":
            rows[row]["z"] = 1
        elif kind == "huge line":
            rows[row][field] = "9" * draw(st.sampled_from([10_000, 1_000_000]))
        if fmt == "csv" and kind in ("drop field", "extra field"):
            lines = encode(good_rows(), fmt)
            cells = lines[line - 1].rstrip(b"\n").split(b",")
            cells = cells[:-1] if kind == "drop field" else [*cells, b"1"]
            lines[line - 1] = b",".join(cells) + b"\n"
        else:
            lines = encode(rows, fmt)
        if kind == "deep nesting" and fmt == "jsonl":
            lines[line - 1] = b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b', "y": 1, "label": "cat"}\n'  # fmt: skip
    else:
        lines = encode(rows, fmt)
    data = b"".join(lines)
    if kind == "splice bytes":
        target = lines[line - 1]
        at = draw(st.integers(min_value=0, max_value=len(target) - 1))
        bad = target[:at] + draw(st.sampled_from(BAD_BYTES)) + target[at:]
        data = b"".join([*lines[: line - 1], bad, *lines[line:]])
    elif kind == "truncate":
        target = lines[line - 1]
        at = draw(st.integers(min_value=1, max_value=len(target) - 2))
        data = b"".join([*lines[: line - 1], target[:at] + b"\n", *lines[line:]])
    elif kind == "utf-16":
        data, line = data.decode().encode("utf-16"), 1
    elif kind == "utf-8 bom":
        data = b"\xef\xbb\xbf" + data
    elif kind == "latin-1":
        rows = good_rows()
        rows[row]["label"] = "caf\xe9"
        data, line = b"".join(encode(rows, fmt)).decode().encode("latin-1"), line
    elif kind == "blank lines":
        data = b"".join(lines[:line] + [b"\n", b"   \n"] + lines[line:])
    return {"fmt": fmt, "kind": kind, "data": data, "line": line, "rows": rows}


def independent_reading(case: dict) -> list[tuple[float, float, str]] | None:
    """What the file says, read without distil: (x, y, label) per row, or None when some
    row is not a well-formed, finite, UTF-8 sample of the table."""
    try:
        text = case["data"].decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    if "\x00" in text:
        return None
    samples = []
    if case["fmt"] == "jsonl":
        for raw in text.split("\n"):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, RecursionError):
                return None
            if not isinstance(record, dict) or set(record) != {"x", "y", "label"}:
                return None
            samples.append((record["x"], record["y"], record["label"]))
    else:
        import csv
        import io

        reader = csv.reader(io.StringIO(text, newline=""))
        try:
            header = next(reader)
            for values in reader:
                if not values or (len(values) == 1 and not values[0].strip()):
                    continue
                if len(values) != len(header):
                    return None
                samples.append(tuple(values))
        except csv.Error:  # e.g. a field beyond the csv module's 128 KiB limit
            return None
    checked = []
    for x, y, label in samples:
        try:
            numbers = [float(v.strip() if isinstance(v, str) else v) for v in (x, y)]
        except (TypeError, ValueError, OverflowError):
            return None
        numbers = [float(np.float32(n)) if abs(n) < 1e39 else math.inf for n in numbers]
        if any(isinstance(v, bool) for v in (x, y)) or not all(map(math.isfinite, numbers)):
            return None  # (inputs are float32: 1e300 is not a number there)
        if isinstance(label, bool) or not isinstance(label, (int, str)) or not str(label).strip():
            return None
        checked.append((numbers[0], numbers[1], str(label).strip()))
    return checked


@fuzz("files")
@given(case=broken_tables())
def test_a_broken_data_file_loads_as_written_or_is_refused_naming_its_line(case, tmp_path):
    path = write(tmp_path / f"pets.{case['fmt']}", case["data"])
    config = DataConfig(dataset="file", path=str(path), val_fraction=0.2, test_fraction=0.2)
    try:
        splits = load_data(config)
    except DistilError as error:
        event(f"refused: {case['kind']}")
        message = one_line(str(error))
        assert isinstance(error, DataError), message
        assert independent_reading(case) is None, f"{case['kind']}: refused a good table: {message}"
        named = [int(n) for n in _lines_named(message, path)]
        if case["fmt"] == "jsonl":
            assert case["line"] in named, (case["kind"], case["line"], message)
        else:  # a stray quote may make the csv module read on past the broken row
            assert any(n >= case["line"] for n in named), (case["kind"], case["line"], message)
        return
    event(f"loaded: {case['kind']}")
    expected = independent_reading(case)
    assert expected is not None, f"{case['kind']}: distil loaded a file that is not a table"
    samples = [*splits.train, *splits.val, *splits.test]
    assert len(samples) == len(expected)
    inputs = torch.stack([s["inputs"] for s in samples])
    assert torch.isfinite(inputs).all()
    labels = sorted({label for _, _, label in expected})
    assert splits.class_names == _class_order(labels)
    assert {int(s["labels"]) for s in samples} <= set(range(splits.num_classes))
    # every sample is one row of the file, with its own label
    rows = {(x, y, label) for x, y, label in expected}
    for sample in samples:
        x, y = (float(v) for v in sample["inputs"])
        assert (x, y, splits.class_names[int(sample["labels"])]) in rows


def _lines_named(message: str, path: Path) -> list[str]:
    import re

    return re.findall(rf"{re.escape(str(path))}:(\d+)", message)


def _class_order(labels: list[str]) -> list[str]:
    """Class names as a reader of the file would number them: ids 0…max when every label is
    a non-negative integer, names in sorted (numeric when integers) order otherwise."""
    if all(label.isdigit() and label.isascii() for label in labels):
        return [str(i) for i in range(max(int(label) for label in labels) + 1)]
    try:
        return sorted(labels, key=int)
    except ValueError:
        return sorted(labels)


def test_a_class_id_of_a_trillion_is_one_bad_row_not_a_trillion_classes(tmp_path):
    """It used to build a list of 10¹² class names: the process hung, then ran out of
    memory."""
    rows = [f"{i % 5},{i % 3}" for i in range(40)]
    rows[22] = "1,1000000000000"
    path = write(tmp_path / "ids.csv", ("x,label\n" + "\n".join(rows) + "\n").encode())
    with pytest.raises(DataError, match=r"ids.csv:24: class id 1000000000000 is far beyond"):
        load_data(DataConfig(dataset="file", path=str(path), val_fraction=0.2, test_fraction=0.2))


def test_a_form_feed_or_line_separator_inside_a_jsonl_string_stays_in_its_row(tmp_path):
    """``str.splitlines`` cut a row at U+2028 or a form feed inside a JSON string, so the
    row's halves were 'not valid JSON'."""
    rows = [{"x": i, "label": ["a\u2028b", "c\x0cd"][i % 2]} for i in range(20)]
    path = write(tmp_path / "sep.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode())  # fmt: skip
    splits = load_data(DataConfig(dataset="file", path=str(path), val_fraction=0.2, test_fraction=0.2))  # fmt: skip
    assert splits.class_names == ["a\u2028b", "c\x0cd"]
    assert len(splits.train) + len(splits.val) + len(splits.test) == 20


# ----------------------------------------------------------------------------- LM corpora

DOCUMENTS = 12


def good_corpus() -> list[dict[str, Any]]:
    return [{"text": f"Document {i} says the jury {'was' if i % 2 else 'is'} out.", "domain": ["news", "fiction"][i % 2]} for i in range(DOCUMENTS)]  # fmt: skip


@st.composite
def broken_corpora(draw) -> dict[str, Any]:
    records = good_corpus()
    kind = draw(st.sampled_from([
        "empty text", "whitespace text", "text value", "drop text", "messages", "prompt",
        "splice bytes", "truncate", "utf-16", "utf-8 bom", "huge line", "not an object",
    ]))  # fmt: skip
    row = draw(st.integers(min_value=0, max_value=DOCUMENTS - 1))
    line = row + 1
    if kind == "empty text":
        for extra in draw(st.lists(st.integers(0, DOCUMENTS - 1), min_size=0, max_size=4)):
            records[extra]["text"] = ""
        records[row]["text"] = ""
    elif kind == "whitespace text":
        records[row]["text"] = draw(st.sampled_from([" ", "\n\t ", "\u3000", "\u2028"]))
    elif kind == "text value":
        records[row]["text"] = draw(BAD_VALUES)
    elif kind == "drop text":
        del records[row]["text"]
    elif kind == "messages":
        records[row] = {"messages": draw(st.one_of(
            BAD_VALUES,
            st.lists(BAD_VALUES, max_size=2),
            st.just([{"role": "user"}]),
            st.just([{"role": "user", "content": 3}]),
            st.just([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yes"}]),
        ))}  # fmt: skip
    elif kind == "prompt":
        records[row] = {"prompt": draw(BAD_VALUES), "response": draw(BAD_VALUES)}
    elif kind == "huge line":
        records[row]["text"] = "word " * 200_000
    lines = [json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in records]
    if kind == "not an object":
        lines[row] = json.dumps(draw(st.sampled_from([[1], "text", 3, None]))).encode() + b"\n"
    data = b"".join(lines)
    if kind == "splice bytes":
        at = draw(st.integers(min_value=0, max_value=len(lines[row]) - 1))
        lines[row] = lines[row][:at] + draw(st.sampled_from(BAD_BYTES)) + lines[row][at:]
        data = b"".join(lines)
    elif kind == "truncate":
        at = draw(st.integers(min_value=1, max_value=len(lines[row]) - 2))
        lines[row] = lines[row][:at] + b"\n"
        data = b"".join(lines)
    elif kind == "utf-16":
        data, line = data.decode().encode("utf-16"), 1
    elif kind == "utf-8 bom":
        data = b"\xef\xbb\xbf" + data
    return {"kind": kind, "data": data, "line": line}


def expected_records(data: bytes) -> tuple[list[dict], int] | None:
    """Independent reading of a corpus: the records kept and how many blank texts were
    skipped, or None when some line is not a well-formed record."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    kept, skipped = [], 0
    for raw in text.split("\n"):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError:
            return None
        if not isinstance(record, dict):
            return None
        if "messages" in record:
            messages = record["messages"]
            if not (isinstance(messages, list) and messages and all(
                isinstance(m, dict) and isinstance(m.get("role"), str)
                and isinstance(m.get("content"), str) for m in messages
            )):  # fmt: skip
                return None
        elif "prompt" in record and "response" in record:
            if not (isinstance(record["prompt"], str) and isinstance(record["response"], str)):
                return None
        elif not isinstance(record.get("text"), str):
            return None
        elif not record["text"].strip():
            skipped += 1
            continue
        kept.append(record)
    return (kept, skipped) if kept else None


@fuzz("corpora")
@given(case=broken_corpora())
def test_a_broken_corpus_reads_as_written_or_is_refused_naming_its_line(case, tmp_path, caplog):
    path = write(tmp_path / "corpus.jsonl", case["data"])
    expected = expected_records(case["data"])
    caplog.clear()
    try:
        with caplog.at_level(logging.WARNING, logger="distil"):
            records = read_jsonl(path)
    except DistilError as error:
        event(f"refused: {case['kind']}")
        message = one_line(str(error))
        assert isinstance(error, DataError), message
        assert expected is None, f"{case['kind']}: refused a readable corpus: {message}"
        if "no records" not in message:
            assert f"{path}:{case['line']}:" in message, (case["kind"], message)
        return
    event(f"read: {case['kind']}")
    assert expected is not None, f"{case['kind']}: read a corpus that is not one"
    kept, skipped = expected
    assert records == kept
    warnings = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    if skipped:
        assert len(warnings) == 1 and f"skipped {skipped} record(s)" in warnings[0], warnings
    else:
        assert warnings == []


def test_empty_texts_are_skipped_and_the_blocks_are_those_of_the_corpus_without_them(
    tmp_path, caplog
):
    """Skipping is exact: the token blocks equal those of the same corpus with the empty
    records deleted by hand (they used to add a lone end-of-text token each)."""
    from distil.lm.config import LMDataConfig
    from distil.lm.data import load_lm_data

    texts = [f"The jury said {i} times that the election was conducted well." * 3 for i in range(30)]  # fmt: skip
    with_blanks = [*texts[:10], "", "   ", *texts[10:20], "\t", *texts[20:]]
    paths = {}
    for name, corpus in (("clean", texts), ("blanks", with_blanks)):
        paths[name] = write(tmp_path / f"{name}.jsonl", "".join(json.dumps({"text": t}) + "\n" for t in corpus).encode())  # fmt: skip
    config = {"corpus": "jsonl", "tokenizer": "brown-bpe-512", "block_size": 16, "val_fraction": 0.1, "test_fraction": 0.1}  # fmt: skip
    clean = load_lm_data(LMDataConfig(**config, path=str(paths["clean"])))
    with caplog.at_level(logging.WARNING, logger="distil"):
        blanks = load_lm_data(LMDataConfig(**config, path=str(paths["blanks"])))
    assert "skipped 3 record(s) whose text is empty or whitespace" in caplog.text
    assert "blanks.jsonl:11" in caplog.text
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(clean, split).input_ids, getattr(blanks, split).input_ids)


# ----------------------------------------------------------------------------- teacher / data


def test_a_teacher_of_ten_classes_on_three_class_data_is_named_as_that(tmp_path):
    """It used to read 'weights do not fit the model (wrong shape layers.4.bias …)'."""
    from types import SimpleNamespace

    from safetensors.torch import save_file

    from distil.models import build_model
    from distil.tasks.classification import TeacherConfig
    from distil.tasks.classifier_models import build_network

    ten = build_model("mlp", input_shape=(2,), num_classes=10, hidden=[8])
    save_file(ten.state_dict(), tmp_path / "teacher.safetensors")
    data = SimpleNamespace(input_shape=(2,), num_classes=3, class_names=["cat", "dog", "eel"])
    spec = TeacherConfig(model="mlp", options={"hidden": [8]}, weights=str(tmp_path / "teacher.safetensors"))  # fmt: skip
    with pytest.raises(ConfigError, match=r"teacher.safetensors: these weights score 10 classes but the data has 3 \(cat, dog, eel\)"):  # fmt: skip
        build_network(spec, data)
    # another architecture (a hidden layer of 3 that happens to equal the class count) is
    # not mistaken for another label set
    other = TeacherConfig(model="mlp", options={"hidden": [3]}, weights=spec.weights)
    with pytest.raises(DistilError, match="weights do not fit the model"):
        build_network(other, data)
