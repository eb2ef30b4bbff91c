"""Run loading, per-method summaries, the markdown table and the HTML report on fake runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from distil.errors import DataError
from distil.report import load_run, markdown_table, summary_rows, write_report
from distil.report.plots import (
    plot_loss_curves,
    plot_method_bars,
    plot_reliability,
    plot_teacher_hacking,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TEACHER_TEST = {"accuracy": 0.97, "nll": 0.1, "ece": 0.01}
# (method, seed) → last.test metrics; "supervised" has no teacher, so no agreement / KL.
LAST_TEST = {
    ("kd", 0): {"accuracy": 0.90, "nll": 0.30, "ece": 0.020, "agreement": 0.95, "teacher_kl": 0.10},
    ("kd", 1): {"accuracy": 0.92, "nll": 0.28, "ece": 0.030, "agreement": 0.96, "teacher_kl": 0.12},
    ("supervised", 0): {"accuracy": 0.85, "nll": 0.45, "ece": 0.050},
    ("supervised", 1): {"accuracy": 0.87, "nll": 0.41, "ece": 0.040},
}
BEST_VAL_TEST_ACCURACY = {
    ("kd", 0): 0.91,
    ("kd", 1): 0.94,
    ("supervised", 0): 0.86,
    ("supervised", 1): 0.86,
}


def reliability(n_bins: int = 5) -> dict[str, list]:
    edges = np.linspace(0, 1, n_bins + 1).tolist()
    return {
        "bin_lower": edges[:-1],
        "bin_upper": edges[1:],
        "confidence": [None, None, 0.55, 0.72, 0.93],
        "accuracy": [None, None, 0.40, 0.70, 0.95],
        "count": [0, 0, 10, 20, 70],
    }


def history(seed: int, parts: tuple[str, ...]) -> list[dict]:
    rows = []
    for step in (10, 20, 30):
        row = {"kind": "train", "step": step, "epoch": step // 10, "lr": 0.1, "loss": 2.0 / step}
        for part in parts:
            row[f"loss/{part}"] = 1.0 / step + seed
            row[f"loss/{part}@weighted"] = 0.5 / step
        rows.append(row)
        rows.append(
            {
                "kind": "eval",
                "step": step,
                "epoch": step // 10,
                "split": "val",
                "accuracy": 0.5 + step / 100,
                "nll": 1.0,
                "ece": 0.1,
            }
        )
        rows.append({"kind": "balance", "step": step, **{f"balance/{p}": 0.5 for p in parts}})
    return rows


def make_run(root: Path, method: str, seed: int) -> Path:
    run_dir = root / f"{method}-seed{seed}"
    run_dir.mkdir()
    has_teacher = method != "supervised"
    metrics = {
        "run": {
            "name": f"{method}-digits",
            "method": method,
            "dataset": "digits",
            "student": "mlp",
            "teacher": "cnn" if has_teacher else None,
            "seed": seed,
        },
        "last": {
            "step": 30,
            "epoch": 3,
            "test": LAST_TEST[method, seed],
            "val": LAST_TEST[method, seed],
        },
        "best_val": {
            "step": 20,
            "epoch": 2,
            "val": {"accuracy": 0.9},
            "test": {"accuracy": BEST_VAL_TEST_ACCURACY[method, seed]},
        },
        "teacher": {"test": TEACHER_TEST} if has_teacher else None,
        "reliability": reliability(),
        "train_seconds": 1.5,
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    parts = ("ce", "kd") if has_teacher else ("ce",)
    (run_dir / "metrics.jsonl").write_text(
        "\n".join(json.dumps(row) for row in history(seed, parts)) + "\n"
    )
    config = {
        "method": {"name": method, "temperature": 4.0},
        "data": {"dataset": "digits"},
        "student": {"model": "mlp"},
        "note": "<script>alert(1)</script>",
    }
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    return run_dir


@pytest.fixture
def run_dirs(tmp_path: Path) -> list[Path]:
    # Interleaved on purpose: grouping must keep first-seen order, not adjacency.
    return [make_run(tmp_path, method, seed) for seed in (0, 1) for method in ("kd", "supervised")]


def test_load_run_reads_all_three_files(run_dirs: list[Path]) -> None:
    run = load_run(run_dirs[0])
    assert run.path == run_dirs[0]
    assert run.config["method"]["name"] == "kd"
    assert run.metrics["last"]["test"]["accuracy"] == 0.90
    assert len(run.history) == 9
    assert run.method == "kd" and run.seed == 0 and run.label == "kd-digits (seed 0)"


def test_summary_rows_match_numpy(run_dirs: list[Path]) -> None:
    rows = summary_rows([load_run(run_dir) for run_dir in run_dirs])
    assert [row["method"] for row in rows] == ["teacher", "kd", "supervised"]
    by_method = {row["method"]: row for row in rows}
    for method in ("kd", "supervised"):
        row = by_method[method]
        assert row["n_seeds"] == 2
        for metric in ("accuracy", "ece", "nll"):
            values = [LAST_TEST[method, seed][metric] for seed in (0, 1)]
            assert row[metric] == pytest.approx(np.mean(values))
            assert row[f"{metric}_std"] == pytest.approx(np.std(values, ddof=1))
        best_val = [BEST_VAL_TEST_ACCURACY[method, seed] for seed in (0, 1)]
        assert row["best_val_accuracy"] == pytest.approx(np.mean(best_val))
        assert row["best_val_accuracy_std"] == pytest.approx(np.std(best_val, ddof=1))
    kd_agreement = [LAST_TEST["kd", seed]["agreement"] for seed in (0, 1)]
    assert by_method["kd"]["agreement_std"] == pytest.approx(np.std(kd_agreement, ddof=1))
    assert by_method["supervised"]["agreement"] is None
    assert by_method["supervised"]["teacher_kl_std"] is None


def test_shared_teacher_counts_once(run_dirs: list[Path]) -> None:
    teacher = summary_rows([load_run(run_dir) for run_dir in run_dirs])[0]
    assert teacher["method"] == "teacher"
    assert teacher["n_seeds"] == 1
    assert teacher["accuracy"] == pytest.approx(0.97) and teacher["accuracy_std"] == 0.0
    assert teacher["agreement"] is None and teacher["best_val_accuracy"] is None


def test_no_teacher_row_for_supervised_only(run_dirs: list[Path]) -> None:
    rows = summary_rows([load_run(run_dirs[1]), load_run(run_dirs[3])])
    assert [row["method"] for row in rows] == ["supervised"]


def test_markdown_table(run_dirs: list[Path]) -> None:
    table = markdown_table(summary_rows([load_run(run_dir) for run_dir in run_dirs]))
    lines = table.strip().splitlines()
    assert lines[0] == "| method | n | accuracy | ece | agreement | nll |"
    assert lines[1] == "|:---|---:|---:|---:|---:|---:|"
    assert len(lines) == 5
    # kd accuracy: mean(0.90, 0.92) = 0.910, sample std = 0.01414…
    assert lines[3].startswith("| kd | 2 | 0.910 ± 0.014 | 0.025 ± 0.007 | 0.955 ± 0.007 |")
    assert "| supervised | 2 | 0.860 ± 0.014 | 0.045 ± 0.007 | — |" in table


def test_markdown_table_custom_columns() -> None:
    rows = [
        {
            "method": "kd",
            "n_seeds": 3,
            "accuracy": 0.9,
            "accuracy_std": 0.01,
            "best_val_accuracy": None,
        }
    ]
    table = markdown_table(rows, columns=("accuracy", "best_val_accuracy"))
    assert table.splitlines()[2] == "| kd | 3 | 0.900 ± 0.010 | — |"


def test_write_report_is_one_self_contained_file(run_dirs: list[Path], tmp_path: Path) -> None:
    out_path = write_report(run_dirs, tmp_path / "out" / "report.html", title="KD <vs> alone")
    html = out_path.read_text(encoding="utf-8")
    assert out_path == tmp_path / "out" / "report.html"
    assert html.count("data:image/png;base64,") == 3
    assert re.search(r"<img src=\"data:image/png;base64,[A-Za-z0-9+/=]{100,}\"", html)
    for method in ("teacher", "kd", "supervised"):
        assert f"<td>{method}</td>" in html
    assert "best validation" in html
    assert "0.910 ± 0.014" in html
    assert "KD &lt;vs&gt; alone" in html  # autoescape on
    assert "<script>alert(1)</script>" not in html
    assert "temperature: 4.0" in html
    assert str(run_dirs[0]) in html


def test_write_report_for_one_run(run_dirs: list[Path]) -> None:
    out_path = write_report([run_dirs[0]], run_dirs[0] / "report.html", title="one run")
    assert out_path.read_text(encoding="utf-8").count("data:image/png;base64,") == 3


def test_missing_metrics_json_names_the_path(tmp_path: Path) -> None:
    empty_run = tmp_path / "crashed-run"
    empty_run.mkdir()
    with pytest.raises(DataError, match=re.escape(str(empty_run / "metrics.json"))):
        load_run(empty_run)
    with pytest.raises(DataError, match="crashed-run"):
        write_report([empty_run], tmp_path / "report.html", title="x")


def test_invalid_json_names_file_and_line(run_dirs: list[Path]) -> None:
    (run_dirs[0] / "metrics.json").write_text('{"run": ')
    with pytest.raises(DataError, match=re.escape(str(run_dirs[0] / "metrics.json"))):
        load_run(run_dirs[0])
    (run_dirs[1] / "metrics.jsonl").write_text('{"kind": "train"}\nnot json\n')
    with pytest.raises(DataError, match=re.escape(f"{run_dirs[1] / 'metrics.jsonl'}:2")):
        load_run(run_dirs[1])


def test_plots_write_png_files(run_dirs: list[Path], tmp_path: Path) -> None:
    runs = [load_run(run_dir) for run_dir in run_dirs]
    paths = [
        plot_loss_curves({run.label: run.history for run in runs}, tmp_path / "loss.png"),
        plot_method_bars(summary_rows(runs), "ece", tmp_path / "ece.png"),
        plot_reliability(
            {"kd": reliability(), "alone": reliability()},
            tmp_path / "rel.png",
            ece_by_label={"kd": 0.02},
        ),
        # nothing to draw still gives a readable figure rather than an error
        plot_loss_curves({}, tmp_path / "empty-loss.png"),
        plot_reliability({}, tmp_path / "empty-rel.png"),
        plot_reliability(
            {"teacher": reliability(), "kd": reliability()},
            tmp_path / "t.png",
            teacher_labels={"teacher"},
        ),  # fmt: skip
        plot_teacher_hacking({}, tmp_path / "empty-hacking.png"),
    ]
    for path in paths:
        assert path.read_bytes().startswith(PNG_MAGIC)


def classification_run(root: Path, name: str, teacher_bins: dict, teacher_ece: float) -> Path:
    """A finished run in today's envelope: the teacher's bins beside the student's."""
    run_dir = root / name
    run_dir.mkdir()
    metrics = {
        "run": {"name": name, "method": "kd", "seed": 0}, "task": "classification",
        "last": {"step": 30, "test": LAST_TEST["kd", 0]},
        "teachers": {"teacher": {"model": "cnn", "source": "live",
                                 "test": {**TEACHER_TEST, "ece": teacher_ece}}},
        "classification": {"reliability": {"student": reliability()},
                           "teacher_reliability": {"teacher": teacher_bins}},
    }  # fmt: skip
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


def test_a_shared_teacher_is_drawn_once_and_different_teachers_apart(tmp_path: Path) -> None:
    from distil.report.diagnostics import teacher_calibration

    strong = {**reliability(), "accuracy": [None, None, 0.5, 0.8, 0.99]}
    shared = [classification_run(tmp_path, f"kd{s}", strong, 0.011) for s in (0, 1)]
    runs = [load_run(d) for d in shared]
    bins, eces = teacher_calibration(runs, ["a", "b"])
    assert bins == {"teacher": strong} and eces == {"teacher": 0.011}
    runs.append(load_run(classification_run(tmp_path, "weak", reliability(), 0.2)))
    bins, eces = teacher_calibration(runs, ["a", "b", "c"])
    assert bins == {"teacher of a": strong, "teacher of c": reliability()}
    assert eces == {"teacher of a": 0.011, "teacher of c": 0.2}


def lm_run(root: Path, detected_at: int | None) -> Path:
    """A finished LM run evaluated against an oracle, with the monitor's verdict."""
    run_dir = root / f"lm-{detected_at}"
    run_dir.mkdir()
    evals = [{"kind": "eval", "step": s, "split": "val", "teacher_kl": 2.0 - 0.1 * s,
              "oracle_kl": 1.0 + 0.05 * s, "perplexity": 50.0} for s in (5, 10, 15, 20)]  # fmt: skip
    (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(row) for row in evals) + "\n")
    verdict = {"detected": detected_at is not None, "first_step": detected_at,
               "teacher_kl": {"first": 1.5, "min": 0.0, "last": 0.0},
               "oracle_kl": {"first": 1.25, "min": 1.25, "last": 2.0}}  # fmt: skip
    metrics = {"run": {"name": "lm", "method": "kd", "seed": 0}, "task": "lm",
               "last": {"step": 20, "test": {"perplexity": 50.0}},
               "lm": {"teacher_hacking": verdict}}  # fmt: skip
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


def test_an_lm_report_shows_the_hacking_curves_and_verdict(tmp_path: Path, run_dirs) -> None:
    html = write_report([lm_run(tmp_path, 20), lm_run(tmp_path, None)], tmp_path / "lm.html",
                        title="lm").read_text()  # fmt: skip
    assert html.count("data:image/png;base64,") == 3  # curves, perplexity bars, hacking
    assert "Test perplexity per method" in html and "Reliability" not in html
    assert "<h2>Teacher hacking</h2>" in html
    assert "<td>detected at step 20</td>" in html and "<td>not detected</td>" in html
    assert "1.250 → min 1.250 → 2.000" in html
    classic = write_report(run_dirs, tmp_path / "c.html", title="c").read_text()
    assert "Teacher hacking" not in classic and classic.count("data:image/png;base64,") == 3
    assert "Reliability diagrams" in classic
