"""``distil`` on the command line. Thin: parse arguments, build from the library, call it.

Errors that distil raises on purpose (bad recipe, missing file, shape mismatch) are printed
as one line naming the culprit, with exit status 2, never as a traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler

from distil.errors import DistilError

app = typer.Typer(
    help="distil — knowledge distillation for PyTorch: train, evaluate, compare, benchmark.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


def _friendly_errors(command):
    """Turn DistilError into a one-line message and exit status 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        logging.basicConfig(
            level=logging.INFO,
            format="%(message)s",
            handlers=[RichHandler(console=console, show_path=False)],
        )
        try:
            return command(*args, **kwargs)
        except DistilError as error:
            console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


@app.command()
@_friendly_errors
def train(
    recipe: Annotated[str, typer.Argument(help="recipe YAML file, or a shipped recipe's name")],
    overrides: Annotated[
        list[str] | None, typer.Argument(help="section.key=value overrides")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="continue from the run folder's last checkpoint")
    ] = False,
) -> None:
    """Train a student from a recipe; writes config, metrics, checkpoints and report."""
    from distil.config import load_config
    from distil.pipeline import run
    from distil.report import markdown_table, summary_rows
    from distil.report.runs import load_run

    result = run(load_config(recipe, overrides or []), resume=resume)
    if result.metrics:
        print(markdown_table(summary_rows([load_run(result.run_dir)])))
        print(f"\nrun folder: {result.run_dir}")


@app.command("eval")
@_friendly_errors
def eval_(
    run_dir: Annotated[Path, typer.Argument(help="a run folder written by `distil train`")],
    checkpoint: Annotated[
        str, typer.Option(help="'last' or 'best' (best validation step)")
    ] = "last",
    split: Annotated[str, typer.Option(help="'test' or 'val'")] = "test",
    student: Annotated[
        str, typer.Option(help="which student of the run: 'student', or a peer's name")
    ] = "student",
    unfinished: Annotated[
        bool, typer.Option(help="evaluate a run that did not finish, at its last checkpoint")
    ] = False,
) -> None:
    """Evaluate a trained run's weights again: generalisation beside fidelity to the teacher
    (on stderr), the metrics as JSON on stdout (the teacher's own under "teacher")."""
    from distil.eval.checkpointed import evaluate_run
    from distil.report.diagnostics import side_by_side

    if checkpoint not in ("last", "best") or split not in ("test", "val"):
        raise typer.BadParameter("checkpoint must be last|best and split test|val")
    metrics = evaluate_run(
        run_dir, checkpoint=checkpoint, split=split, student=student, unfinished=unfinished,
        with_teacher=True,
    )  # fmt: skip
    print(side_by_side(metrics, metrics.get("teacher"), split), file=sys.stderr)
    print(json.dumps(metrics, indent=1))


@app.command()
@_friendly_errors
def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="run folders to compare")],
    out: Annotated[Path, typer.Option(help="HTML file to write")] = Path("report.html"),
    title: Annotated[str, typer.Option(help="report title")] = "distil report",
) -> None:
    """One HTML report comparing several runs, and a markdown table on stdout."""
    from distil.report import markdown_table, summary_rows, write_report
    from distil.report.runs import load_run

    write_report(run_dirs, out, title=title)
    print(markdown_table(summary_rows([load_run(d) for d in run_dirs])))
    print(f"\nreport: {out}")


@app.command("list")
@_friendly_errors
def list_(
    kind: Annotated[
        str, typer.Argument(help="methods | losses | recipes | models | datasets | tasks")
    ],
) -> None:
    """List what is registered (methods, losses, models, datasets, tasks) or shipped (recipes)."""
    from distil.listing import listing

    for name, description in listing(kind):
        print(f"{name:24s} {description}")


@app.command("cache-teacher")
@_friendly_errors
def cache_teacher(
    recipe: Annotated[str, typer.Argument(help="an LM recipe (task: lm) with a teacher")],
    overrides: Annotated[
        list[str] | None, typer.Argument(help="section.key=value overrides")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="cache folder (default: the recipe's cache.dir)")
    ] = None,
) -> None:
    """Run the recipe's teacher once over its data and store top-k log-probs (resumable)."""
    from distil.config import load_config
    from distil.errors import ConfigError
    from distil.lm.caching import cache_recipe_teacher

    config = load_config(recipe, overrides or [])
    if config.task != "lm":
        raise ConfigError("task: cache-teacher needs a language-model recipe (task: lm)")
    manifest, stats = cache_recipe_teacher(config, folder=out)
    settings = manifest.settings
    for split in config.cache.splits:
        print(f"{split}: {manifest.sequences(split)} blocks, {manifest.tokens(split):,} tokens")
    print(
        f"codec {settings['codec']['name']}, k={settings['k']}: "
        f"{settings['record_bytes']} bytes/token; this call cached {stats.tokens:,} tokens "
        f"in {stats.seconds:.1f}s\ncache: {out or config.cache_dir()}"
    )


@app.command()
@_friendly_errors
def demo(
    which: Annotated[
        str, typer.Argument(help="'classic' (image classifiers) or 'llm' (language models)")
    ] = "classic",
    quick: Annotated[
        bool, typer.Option(help="one seed, fewer epochs (well under a minute)")
    ] = False,
    out: Annotated[Path | None, typer.Option(help="output folder")] = None,
) -> None:
    """The embedded default: teacher, student alone, student distilled; prints the table."""
    from distil.demo import DEMOS, run_demo

    if which not in DEMOS:
        raise typer.BadParameter(f"demo is one of {', '.join(DEMOS)}")
    result = run_demo(which, out, quick=quick)
    print(result.table)
    shown = f"\nreport: {result.report}" if result.report else ""
    print(f"{shown}\nmetrics: {result.metrics_path}")


@app.command()
@_friendly_errors
def search(
    recipe: Annotated[
        str, typer.Argument(help="recipe with a teacher and a search.candidates list")
    ],
    overrides: Annotated[
        list[str] | None, typer.Argument(help="section.key=value overrides")
    ] = None,
) -> None:
    """Rank candidate students for the recipe's teacher without training (DisWOT)."""
    from distil.config import load_config
    from distil.errors import ConfigError
    from distil.search import rank_candidates
    from distil.tasks import task_for

    config = load_config(recipe, overrides or [])
    if getattr(config, "search", None) is None or config.teacher is None:
        raise ConfigError("search: the recipe needs a teacher section and search.candidates")
    ranked = rank_candidates(config, task_for(config).load_data())
    print("| rank | candidate | parameters | DisWOT score |\n|---:|:---|---:|---:|")
    for position, candidate in enumerate(ranked, start=1):
        print(
            f"| {position} | {candidate.label} | {candidate.parameters:,} | {candidate.score:.4f} |"
        )


@app.command()
@_friendly_errors
def sweep(
    recipe: Annotated[str, typer.Argument(help="recipe YAML file, or a shipped recipe's name")],
    overrides: Annotated[
        list[str] | None, typer.Argument(help="section.key=value overrides, kept for every trial")
    ] = None,
    grid: Annotated[
        list[str] | None,
        typer.Option(help="key=value1,value2,… — repeat for each key; the trials are the product"),
    ] = None,
    seeds: Annotated[int, typer.Option(min=1, help="seeds of the chosen setting")] = 3,
    out: Annotated[Path, typer.Option(help="folder for the runs and sweep.json")] = Path(
        "runs/sweep"
    ),
) -> None:
    """Tune a recipe fairly: every grid setting at seed 0, chosen on validation accuracy at
    the last step, then the chosen one at several seeds (test at the last step and at the
    best validation step)."""
    from distil.bench.tuning import as_overrides, parse_grid
    from distil.bench.tuning import sweep as run_sweep
    from distil.eval.aggregate import mean_std

    result = run_sweep(recipe, overrides or [], parse_grid(grid or []), seeds, out)
    print("| trial | setting | val accuracy (last step) |\n|---:|:---|---:|")
    for number, (setting, score) in enumerate(result.trials):
        print(f"| {number} | {' '.join(as_overrides(setting)) or '—'} | {score:.4f} |")
    mean, std = mean_std(result.test_accuracies())
    best = [run["best_val"]["test"]["accuracy"] for _, run in sorted(result.runs.items())]
    best_mean, best_std = mean_std(best)
    print(
        f"\nchosen: {' '.join(as_overrides(result.chosen)) or '—'} · {len(best)} seeds · "
        f"test accuracy {mean:.4f} ± {std:.4f} (last step), {best_mean:.4f} ± {best_std:.4f} "
        f"(best validation step)\nresults: {out / 'sweep.json'}"
    )


@app.command()
@_friendly_errors
def bench(
    suite: Annotated[
        str,
        typer.Argument(
            help="benchmark suite: classic | overhead | losses | diswot | features | llm | hacking"
            " | fidelity | privacy | reproduce"
        ),
    ],
    out: Annotated[Path, typer.Option(help="results folder")] = Path("benchmarks/results"),
    quick: Annotated[bool, typer.Option(help="a small version, to check the suite runs")] = False,
    show: Annotated[
        bool, typer.Option(help="print the table of the saved results; run nothing")
    ] = False,
    pivot: Annotated[
        str | None, typer.Option(help="with --show: one metric as a methods × tasks table")
    ] = None,
) -> None:
    """Run a benchmark suite; writes <out>/<suite>.json and a plot beside it."""
    from distil.bench import load_results, pivot_table, run_suite, summary_table

    if show:
        rows = load_results(suite, out)
        print(pivot_table(rows, pivot) if pivot else summary_table(rows))
        return
    result = run_suite(suite, out, quick=quick)
    print(result.table)
    print(f"\nresults: {result.json_path}\nplot: {result.plot_path}")


def main() -> None:  # pragma: no cover - console entry point
    """Entry point for ``python -m distil``."""
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
