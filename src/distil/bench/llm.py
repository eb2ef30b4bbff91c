"""``llm``: what distilling a language model through a teacher cache costs and keeps.

The full suite distils SmolLM2-135M-Instruct (the teacher) into a tiny Llama student that
shares its tokenizer, on Brown; ``--quick`` uses a tiny teacher pretrained here on a Brown
slice instead (every row names its teacher). Every ratio is measured against a baseline in
the same run.

* **Size and quality** (task ``cache``) — the teacher runs once over the training blocks and
  its full log-probs stay in memory (:class:`~distil.bench.llm_runs.DenseTeacher`); every
  cache (codec ∈ {plain, compact} × k) is written from those same log-probs by the real
  writer. A student is trained by word-level KD (forward KL, T = 1, α = ½, the teacher's
  tail mass as a (k+1)-th bucket) from each cache, one from the full log-probs, and one with
  cross-entropy alone, all from the same initialisation on the same batches. Rows:
  ``bytes_per_token`` (shard bytes on disk / cached tokens; ``record_bytes`` beside it), test
  ``perplexity``, and ``ppl_gap`` = (ppl_cache − ppl_full) / ppl_full; ``topk_mass``: the
  mean share of the teacher's probability its top-k holds.
* **Caching throughput** (task ``cache-throughput``) — tokens/s of ``cache_teacher`` (live
  teacher, compact, k = 64) over tokens/s of the teacher's bare forward pass on the same
  blocks and batch size, alternated and repeated: ``cache_throughput_ratio``.
* **Training-step time** (task ``step-time``) — median step seconds after warm-up of KD from
  the compact k = 64 cache over supervised training of the same student on the same batches,
  interleaved and repeated as in :mod:`distil.bench.overhead`: ``step_time_ratio``; a few
  steps of KD with the live teacher for comparison.
* **Fused loss** (tasks ``fused-32k``, ``fused-128k``) — ``peak_memory_ratio`` and
  ``time_ratio`` of the fused LM-head loss against the naive path, from
  :func:`~distil.bench.fused_loss.measure_fused_vs_naive`; a naive path predicted not to fit
  in the memory available is skipped and the row says so.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

from distil.bench.fused_loss import measure_fused_vs_naive
from distil.bench.harness import SUITES, Row, Suite
from distil.bench.llm_runs import (
    CacheSize,
    DenseTeacher,
    StudentSetup,
    held_out_perplexity,
    train_student,
    write_cache,
)
from distil.cache.reader import TeacherCache
from distil.data.datasets import in_order
from distil.lm.config import LMDataConfig, LMModelConfig, LMPretrainConfig, TinyLMConfig
from distil.lm.data import LMSplits, load_lm_data
from distil.lm.resolve import build_lm
from distil.teachers import ModuleTeacher
from distil.train.accelerator import make_accelerator
from distil.train.config import TrainConfig

SUPERVISED = {"name": "supervised"}
KD = {"name": "kd", "temperature": 1.0, "alpha": 0.5, "divergence": "forward_kl",
      "tail": "residual"}  # fmt: skip
CODECS = ("plain", "compact")
#: The cache the throughput and step-time sections use.
STEP_CODEC, STEP_K = "compact", 64
#: Run the naive fused-loss path only when its predicted peak is below this share of the
#: memory available: an out-of-memory kill on a shared machine may hit someone else's process.
MEMORY_HEADROOM = 0.85


@dataclass(frozen=True)
class Setting:
    """Every size of one version of the suite (full or quick)."""

    teacher_name: str
    data: LMDataConfig
    teacher: LMModelConfig
    students: StudentSetup
    ks: tuple[int, ...]
    batch_size: int  # blocks per teacher forward pass (cache writer and bare forward alike)
    throughput_blocks: int
    throughput_repeats: int
    step_warmup: int
    step_timed: int
    step_repeats: int
    live_steps: int  # timed steps of KD with the live teacher (after one warm-up step)
    fused_sizes: tuple[tuple[str, int, int, int], ...]  # (task, vocab, hidden, tokens)


def setting(quick: bool) -> Setting:
    """SmolLM2 on Brown (~20 min on 2 CPU cores), or a tiny teacher on a slice (seconds)."""
    if quick:
        return Setting(
            teacher_name="tiny (pretrained here)",
            data=LMDataConfig(
                limit_documents=75, tokenizer="brown-bpe-512", block_size=32, val_fraction=0.1,
                test_fraction=0.1, train_blocks=64, eval_blocks=32,
            ),
            teacher=LMModelConfig(
                tiny=TinyLMConfig(hidden=64, layers=2, heads=4),
                pretrain=LMPretrainConfig(steps=40, batch_size=32, lr=0.005),
            ),
            students=StudentSetup(
                LMModelConfig(tiny=TinyLMConfig(hidden=32, layers=1, heads=2)),
                _train_config(steps=20, batch_size=8), eval_batch_size=32,
            ),
            ks=(8, 64), batch_size=8, throughput_blocks=16, throughput_repeats=2,
            step_warmup=2, step_timed=4, step_repeats=1, live_steps=2,
            fused_sizes=(("fused-4k", 4096, 256, 1024),),
        )  # fmt: skip
    return Setting(
        teacher_name="smollm2",
        data=LMDataConfig(tokenizer="smollm2", block_size=128, train_blocks=256, eval_blocks=32),
        teacher=LMModelConfig(model="smollm2"),
        students=StudentSetup(
            LMModelConfig(tiny=TinyLMConfig(hidden=64, layers=2, heads=4)),
            _train_config(steps=64, batch_size=4), eval_batch_size=8,
        ),
        ks=(8, 32, 64, 128), batch_size=8, throughput_blocks=16, throughput_repeats=4,
        step_warmup=5, step_timed=20, step_repeats=3, live_steps=3,
        fused_sizes=(("fused-32k", 32_000, 2048, 8192), ("fused-128k", 128_000, 2048, 8192)),
    )  # fmt: skip


def _train_config(steps: int, batch_size: int) -> TrainConfig:
    return TrainConfig(
        max_steps=steps, batch_size=batch_size, lr=1e-2, warmup_steps=max(1, steps // 10),
        schedule="cosine", max_grad_norm=1.0, eval_every=10**9, checkpoint_every=10**9,
        log_every=10**9, balance_every=0, progress=False,
    )  # fmt: skip


def collect(quick: bool) -> list[Row]:
    """Fused loss first (in fresh processes, while this one holds little), then the LM parts."""
    current = setting(quick)
    logging.getLogger("distil").setLevel(logging.WARNING)
    rows = fused_rows(current)
    data = load_lm_data(current.data)
    model = build_lm(current.teacher, data.tokenizer, role="teacher", pretrain_data=data.teacher_train)  # fmt: skip
    live = ModuleTeacher(model, "cpu")
    base = {"suite": "llm", "seed": 0, "teacher": current.teacher_name,
            "train_blocks": len(data.train), "block_size": data.train.block_size,
            "vocab_size": data.vocab_size}  # fmt: skip
    with TemporaryDirectory(prefix="distil-bench-llm-") as scratch:
        folder = Path(scratch)
        dense = DenseTeacher.from_teacher(live, data.train, current.batch_size)
        caches = {
            (codec, k): write_cache(
                dense, data, folder / f"cache-{codec}-{k}", k=k, codec=codec,
                teacher_name=current.teacher_name, batch_size=current.batch_size,
            )
            for codec in CODECS
            for k in current.ks
        }  # fmt: skip
        rows += throughput_rows(live, data, current, folder, base)
        rows += step_time_rows(live, caches[STEP_CODEC, STEP_K], data, current, folder, base)
        teacher_perplexity = held_out_perplexity(model, data, current.students.eval_batch_size)
        rows.append({**base, "task": "cache", "method": f"teacher ({current.teacher_name})",
                     "metric": "perplexity", "value": teacher_perplexity})  # fmt: skip
        del live, model
        rows += quality_rows(dense, caches, data, current, folder, base)
    return rows


def quality_rows(
    dense: DenseTeacher,
    caches: dict[tuple[str, int], CacheSize],
    data: LMSplits,
    current: Setting,
    folder: Path,
    base: Row,
) -> list[Row]:
    """Test perplexity of students taught from each cache, from the full log-probs, and by
    the labels alone; cache sizes measured on disk."""
    setup, accelerator = current.students, make_accelerator()
    base = {**base, "task": "cache", "student": _describe(setup.student),
            "steps": setup.train.max_steps, "batch_size": setup.train.batch_size,
            **{f"kd_{key}": value for key, value in KD.items() if key != "name"}}  # fmt: skip
    variants = {"supervised": (SUPERVISED, None, {}), "kd (full logits)": (KD, dense, {})}
    for (codec, k), cache in caches.items():
        teacher = TeacherCache(cache.folder).split("train")
        variants[f"kd ({codec}, k={k})"] = (KD, teacher, {"codec": codec, "k": k})
    perplexity, rows = {}, []
    for name, (method, teacher, extra) in variants.items():
        student, result = train_student(
            setup, data, method, teacher, folder / f"student-{len(perplexity)}", accelerator
        )
        perplexity[name] = held_out_perplexity(student, data, setup.eval_batch_size)
        row = {**base, "method": name, **extra}
        rows.append({**row, "metric": "perplexity", "value": perplexity[name]})
        rows.append({**row, "metric": "step_seconds", "value": statistics.median(result.step_seconds)})  # fmt: skip
    full = perplexity["kd (full logits)"]
    for (codec, k), cache in caches.items():
        name = f"kd ({codec}, k={k})"
        row = {**base, "method": name, "codec": codec, "k": k, "cached_tokens": cache.tokens}
        rows.append({**row, "metric": "ppl_gap", "value": (perplexity[name] - full) / full})
        rows.append({**row, "metric": "bytes_per_token", "value": cache.bytes_per_token})
        rows.append({**row, "metric": "record_bytes", "value": float(cache.record_bytes)})
    for k in sorted({k for _, k in caches}):
        rows.append({**base, "method": f"teacher top-{k}", "k": k, "metric": "topk_mass",
                     "value": topk_mass(dense, k)})  # fmt: skip
    return rows


def topk_mass(dense: DenseTeacher, k: int, chunk: int = 16) -> float:
    """Mean share of the teacher's probability its top-``k`` tokens hold (what a top-k cache
    keeps exactly; the rest survives only as one tail bucket)."""
    total, count = 0.0, 0
    for start in range(0, len(dense.logprobs), chunk):
        logprobs = dense.logprobs[start : start + chunk].float()
        total += float(logprobs.topk(k, dim=-1).values.exp().sum(-1).sum())
        count += logprobs.shape[0] * logprobs.shape[1]
    return total / max(count, 1)


def throughput_rows(
    live: ModuleTeacher, data: LMSplits, current: Setting, folder: Path, base: Row
) -> list[Row]:
    """``cache_teacher`` against the bare forward pass over the same blocks, alternating which
    goes first so a drift in machine load hits both alike."""
    blocks = data.train.subset(range(min(current.throughput_blocks, len(data.train))))
    view = dataclasses.replace(data, train=blocks)
    tokens = blocks.num_tokens()
    method = f"cache_teacher ({STEP_CODEC}, k={STEP_K})"
    base = {**base, "task": "cache-throughput", "blocks": len(blocks), "tokens": tokens,
            "batch_size": current.batch_size}  # fmt: skip
    rows = []
    for repeat in range(current.throughput_repeats):
        seconds = {}
        for which in ("bare", "cache") if repeat % 2 == 0 else ("cache", "bare"):
            started = time.perf_counter()
            if which == "bare":
                for batch in in_order(blocks, current.batch_size):
                    live.signal(batch)
            else:
                write_cache(
                    live, view, folder / f"throughput-{repeat}", k=STEP_K, codec=STEP_CODEC,
                    teacher_name=current.teacher_name, batch_size=current.batch_size,
                )  # fmt: skip
            seconds[which] = time.perf_counter() - started
        row = {**base, "seed": repeat}
        rows += [
            {**row, "method": "bare forward", "metric": "tokens_per_second", "value": tokens / seconds["bare"]},
            {**row, "method": method, "metric": "tokens_per_second", "value": tokens / seconds["cache"]},
            {**row, "method": method, "metric": "cache_throughput_ratio", "value": seconds["bare"] / seconds["cache"]},
        ]  # fmt: skip
    return rows


def step_time_rows(
    live: ModuleTeacher,
    cache: CacheSize,
    data: LMSplits,
    current: Setting,
    folder: Path,
    base: Row,
) -> list[Row]:
    """Median step seconds after warm-up; every repetition's ratios use its own supervised
    time. The live teacher runs a few steps in the first repetition only (it is slow)."""
    setup, accelerator = current.students, make_accelerator()
    cached = TeacherCache(cache.folder).split("train")
    variants = {"supervised": (SUPERVISED, None), f"kd ({STEP_CODEC} cache, k={STEP_K})": (KD, cached)}  # fmt: skip
    base = {**base, "task": "step-time", "student": _describe(setup.student),
            "batch_size": setup.train.batch_size}  # fmt: skip
    rows = []
    for repeat in range(current.step_repeats):
        seconds, timed = {}, {}
        runs = dict(variants)
        if repeat == 0:
            runs["kd (live teacher)"] = (KD, live)
        for name, (method, teacher) in runs.items():
            warmup = 1 if name == "kd (live teacher)" else current.step_warmup
            steps = warmup + (current.live_steps if name == "kd (live teacher)" else current.step_timed)  # fmt: skip
            _, result = train_student(
                setup, data, method, teacher, folder / f"steps-{repeat}-{len(seconds)}",
                accelerator, max_steps=steps,
            )  # fmt: skip
            seconds[name] = statistics.median(result.step_seconds[warmup:])
            timed[name] = steps - warmup
        for name, value in seconds.items():
            row = {**base, "method": name, "seed": repeat, "timed_steps": timed[name]}
            rows.append({**row, "metric": "step_seconds", "value": value})
            rows.append({**row, "metric": "step_time_ratio", "value": value / seconds["supervised"]})  # fmt: skip
    return rows


def fused_rows(current: Setting) -> list[Row]:
    """Fused against naive LM-head loss per size; the naive path is skipped (and the row
    says why) where the previous size predicts it would not fit in the memory available."""
    rows: list[Row] = []
    naive_bytes_per_logit = None  # peak extra bytes of the naive path per float32 logit
    for task, vocab, hidden, tokens in current.fused_sizes:
        base = {"suite": "llm", "task": task, "method": "fused vs naive", "seed": 0,
                "vocab_size": vocab, "hidden": hidden, "tokens": tokens, "k": 64}  # fmt: skip
        if naive_bytes_per_logit is not None:
            needed = naive_bytes_per_logit * tokens * vocab + vocab * hidden * 4
            available = _available_memory_bytes()
            if needed > MEMORY_HEADROOM * available:
                note = (f"naive path not run: predicted peak {needed / 2**30:.1f} GiB, "
                        f"{available / 2**30:.1f} GiB available")  # fmt: skip
                rows.append({**base, "metric": "naive_predicted_gib", "value": needed / 2**30, "note": note})  # fmt: skip
                continue
        try:
            result = measure_fused_vs_naive(vocab, hidden=hidden, tokens=tokens, k=64)
        except subprocess.CalledProcessError as error:  # killed for memory, most likely
            note = f"a path failed (exit {error.returncode}): {str(error.stderr)[-300:]}"
            rows.append({**base, "metric": "failed", "value": 1.0, "note": note})
            continue
        naive, fused = result["naive"], result["fused"]
        naive_bytes_per_logit = naive["peak_extra_bytes"] / (tokens * vocab)
        details = {"naive_peak_bytes": naive["peak_extra_bytes"], "fused_peak_bytes": fused["peak_extra_bytes"],
                   "naive_seconds": naive["seconds"], "fused_seconds": fused["seconds"],
                   "loss_abs_diff": result["loss_abs_diff"]}  # fmt: skip
        for metric in ("peak_memory_ratio", "time_ratio", "cpu_time_ratio"):
            if metric in result:
                rows.append({**base, **details, "metric": metric, "value": result[metric]})
        gc.collect()
    return rows


def _available_memory_bytes() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def _describe(config: LMModelConfig) -> str:
    tiny = config.tiny
    return f"tiny h{tiny.hidden} l{tiny.layers}" if tiny else str(config.model)


# ----------------------------------------------------------------------------- the plot


def plot(rows: list[Row], path: Path) -> None:
    """Left: the size–quality curve; right: every ratio, against 1 (the baseline)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(13, 4.8))
    FigureCanvasAgg(figure)
    _plot_size_quality(figure.add_subplot(1, 2, 1), rows)
    _plot_ratios(figure.add_subplot(1, 2, 2), rows)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def _plot_size_quality(axes, rows: list[Row]) -> None:
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    perplexity = {r["method"]: r["value"] for r in rows if r["task"] == "cache" and r["metric"] == "perplexity"}  # fmt: skip
    size = {r["method"]: r for r in rows if r["metric"] == "bytes_per_token"}
    for codec in CODECS:
        points = sorted((r["value"], perplexity[m], r["k"]) for m, r in size.items() if r["codec"] == codec)  # fmt: skip
        if not points:
            continue
        xs, ys, ks = zip(*points, strict=True)
        axes.plot(xs, ys, marker="o", label=codec)
        for x, y, k in points:
            axes.annotate(f"k={k}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    vocab = next((r["vocab_size"] for r in rows if r["task"] == "cache"), None)
    dense = f", {2 * vocab:,} B/token at fp16" if vocab else ""
    for name, style, note in (("kd (full logits)", "--", dense), ("supervised", ":", "")):
        if name in perplexity:
            axes.axhline(perplexity[name], linestyle=style, color="grey",
                         label=f"{name}{note}: ppl {perplexity[name]:.4g}")  # fmt: skip
    teacher = next((r for r in rows if r["metric"] == "perplexity" and r["method"].startswith("teacher")), None)  # fmt: skip
    axes.set_xscale("log")
    axes.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axes.xaxis.set_major_formatter(ScalarFormatter())
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_xlabel("cache bytes per token (shards on disk)")
    axes.set_ylabel("student test perplexity")
    axes.set_title("size–quality" + (f" (teacher {teacher['teacher']}, ppl {teacher['value']:.3g})" if teacher else ""), fontsize=9)  # fmt: skip
    axes.legend(fontsize=7)


def _plot_ratios(axes, rows: list[Row]) -> None:
    metrics = ("step_time_ratio", "cache_throughput_ratio", "peak_memory_ratio", "time_ratio")
    values: dict[str, list[float]] = {}
    for row in rows:
        if row["metric"] in metrics and not (row["metric"] == "step_time_ratio" and row["method"] == "supervised"):  # fmt: skip
            values.setdefault(f"{row['metric']}\n{row['task']}: {row['method']}", []).append(row["value"])  # fmt: skip
    labels = list(values)
    means = [statistics.fmean(v) for v in values.values()]
    colours = [f"C{metrics.index(label.split(chr(10))[0])}" for label in labels]
    bars = axes.bar(range(len(labels)), means, color=colours)
    for bar, mean in zip(bars, means, strict=True):
        axes.annotate(f"{mean:.3g}", (bar.get_x() + bar.get_width() / 2, mean), ha="center",
                      va="bottom", fontsize=7)  # fmt: skip
    axes.axhline(1.0, color="black", linewidth=0.8)
    axes.set_yscale("log")
    axes.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=6)
    axes.set_ylabel("ratio to the baseline (log scale)")
    axes.set_title("ratios (1 = the baseline of the same run)", fontsize=9)
    if not means or not all(math.isfinite(m) for m in means):
        axes.text(0.5, 0.5, "no ratios", transform=axes.transAxes, ha="center")


SUITES.register("llm")(Suite("llm", collect, plot))
