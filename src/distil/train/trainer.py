"""The one training loop, on Hugging Face Accelerate.

Every method and every task trains here: the loop asks the teachers for their signals, has
the task run the student, lets the method turn both into a
:class:`~distil.methods.base.LossOutput`, and steps the optimizer. It owns gradient
accumulation and clipping, the LR schedule, mixed precision, periodic validation of every
student (the main one and any peers the method trains), best/last checkpoints with exact
resume, the per-step log and the loss-balance diagnostic. It knows no task: what a batch
means (how to run a model on it, how many targets it carries) comes from the ``task`` it is
given (:class:`LoopTask`). The same code runs on one CPU and under ``accelerate launch``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from accelerate import Accelerator
from torch import Tensor, nn
from torch.utils.data import Dataset, default_collate

from distil.errors import CheckpointError, ConfigError, TrainingError
from distil.methods.base import MAIN_STUDENT, LossOutput, Method
from distil.outputs import ModelOutputs, move_batch
from distil.teachers.base import Teacher
from distil.train import checkpoint
from distil.train.accelerator import make_accelerator
from distil.train.balance import dominant_part, gradient_shares, parameters_of
from distil.train.config import TrainConfig
from distil.train.loss_window import LossWindow
from distil.train.method_setup import prepare_method
from distil.train.module import StudentWithMethod
from distil.train.progress import MetricsLog, ProgressBar
from distil.train.rng import rng_state, set_rng_state
from distil.train.sampling import ShardedBatches, split_holdout, step_groups
from distil.train.schedules import build_scheduler

log = logging.getLogger("distil")

#: Gradient-share measurements averaged before the balance diagnostic may warn.
BALANCE_MIN_MEASUREMENTS = 3

#: Scores one student on the validation split: ``(model, device) -> {metric: value}``.
Validator = Callable[[nn.Module, torch.device], dict]


class LoopTask(Protocol):
    """What the loop needs to know of a task (:class:`distil.tasks.Task` is one)."""

    maximised_metrics: frozenset[str]

    def forward(self, model: nn.Module, batch: dict[str, Any]) -> ModelOutputs:
        """Run a model of the task on a batch."""
        ...

    def count_targets(self, batch: dict[str, Any]) -> int:
        """The targets a batch carries (samples, labelled tokens): its weight in a step."""
        ...

    def num_classes(self, data: Any) -> int | None:
        """Classes of the model's output, if it has any."""
        ...

    def target_loss(self, student: ModelOutputs, batch: dict[str, Any], **options: Any) -> Any:
        """The loss against the batch's own targets (what ``supervised`` trains on)."""
        ...

    def build_student(self, data: Any) -> nn.Module:
        """A fresh student of the recipe (a method's peers are built with it)."""
        ...


@dataclass
class TrainState:
    """Counters that, with the checkpointed tensors, let a run continue exactly."""

    step: int = 0
    epoch: int = 0
    micro_batches_done: int = 0  # in the current epoch, on each rank
    best_metric: float | None = None
    best_step: int | None = None
    #: Peers' best validation (metric, step), by name.
    peer_best: dict[str, list] = field(default_factory=dict)
    balance_warned: bool = False
    balance_share_sums: dict[str, float] = field(default_factory=dict)
    balance_measurements: int = 0


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` leaves behind, beside the files in the run folder."""

    steps: int
    epochs_completed: int
    best_step: int | None
    best_val_metric: float | None
    seconds: float
    last_val: dict[str, float]
    step_seconds: list[float]  # wall time of each optimizer step run in this call


class Trainer:
    """Trains ``student`` with ``method`` on ``train_data``, validating every student.

    ``teachers`` maps each teacher's name to what the loop queries for its signal (a live
    module, precomputed outputs, a cache split); ``validator`` scores the main student, and
    ``peer_validator(name)`` makes one for each peer the method trains (default: the same).
    ``data`` is the task's splits (or whatever the task's ``num_classes`` and
    ``build_student`` read), handed to the method's setup.
    """

    def __init__(
        self,
        student: nn.Module,
        method: Method,
        *,
        task: LoopTask,
        train_data: Dataset,
        config: TrainConfig,
        output_dir: Path | str,
        validator: Validator,
        select_metric: str,
        data: Any,
        teachers: Mapping[str, Teacher] | None = None,
        accelerator: Accelerator | None = None,
        peer_validator: Callable[[str], Validator] | None = None,
        setup_batch_size: int = 512,
    ) -> None:
        teachers = dict(teachers or {})
        if method.needs_teacher and not teachers:
            raise ConfigError(f"method.name: {method.name!r} needs a teacher; none was given")
        self.config = config
        self.task = task
        self.teachers = teachers
        self.method = method
        self.train_data, self.holdout_data = split_holdout(
            train_data, method.holdout_fraction, config.seed
        )
        self.output_dir = Path(output_dir)
        self.select_metric = select_metric
        self.maximise = select_metric in task.maximised_metrics
        self.accelerator = accelerator or make_accelerator(config.mixed_precision)
        prepare_method(
            method, student, teachers, self.train_data, task=task, data=data,
            batch_size=setup_batch_size,
        )  # fmt: skip
        self.module = StudentWithMethod(student, method, task.forward)
        self.validators = {MAIN_STUDENT: validator}
        for name in method.peers():
            self.validators[name] = peer_validator(name) if peer_validator else validator
        self.checkpoints = self.output_dir / "checkpoints"

        world = self.accelerator.num_processes
        per_step = config.batch_size // config.grad_accum_steps
        if per_step % world:
            raise ConfigError(
                f"train.batch_size: {config.batch_size} / grad_accum_steps={config.grad_accum_steps} "
                f"= {per_step} samples per micro-step cannot be split over {world} processes"
            )
        self.batches = ShardedBatches(
            len(self.train_data),
            per_step // world,
            seed=config.seed,
            rank=self.accelerator.process_index,
            world_size=world,
        )
        self.steps_per_epoch = math.ceil(len(self.batches) / config.grad_accum_steps)
        self.total_steps = config.max_steps or config.epochs * self.steps_per_epoch

    # ------------------------------------------------------------------ public API

    def fit(self, resume: bool = False) -> TrainResult:
        """Train to the end (or continue from the last checkpoint with ``resume``)."""
        acc, config = self.accelerator, self.config
        optimizer = self._build_optimizer()
        scheduler = build_scheduler(
            optimizer,
            total_steps=self.total_steps,
            warmup_steps=config.warmup_steps,
            kind=config.schedule,
        )
        model, optimizer = acc.prepare(self.module, optimizer)
        state, window = TrainState(), LossWindow()
        main = self.accelerator.is_main_process
        source = checkpoint.usable_checkpoint(self.checkpoints, main=main) if resume else None
        self.accelerator.wait_for_everyone()  # the main process may have re-pointed last.json
        if source is not None:
            state = self._restore(source, optimizer, scheduler, window)
            log.info("resumed %s at step %d", self.output_dir, state.step)
        metrics_log = MetricsLog(
            self.output_dir / "metrics.jsonl",
            acc.is_main_process,
            resume_step=state.step if resume else None,
        )
        start = time.perf_counter()
        last_val: dict[str, float] = {}
        step_seconds: list[float] = []
        with ProgressBar(
            self.total_steps, self.output_dir.name, enabled=config.progress and acc.is_main_process
        ) as bar:
            bar.update(state.step, "")
            while state.step < self.total_steps:
                epoch_batches = list(self.batches.epoch(state.epoch, skip=state.micro_batches_done))
                for group in step_groups(epoch_batches, config.grad_accum_steps):
                    step_started = time.perf_counter()
                    loss = self._step(
                        model, optimizer, scheduler, group, state, window, metrics_log
                    )
                    step_seconds.append(time.perf_counter() - step_started)
                    state.micro_batches_done += len(group)
                    epoch_done = state.micro_batches_done >= len(self.batches)
                    if epoch_done:
                        state.epoch += 1
                        state.micro_batches_done = 0
                    finished = state.step >= self.total_steps
                    if self._due(config.eval_every, state.step, epoch_done, finished):
                        last_val = self._validate(state, metrics_log)
                    if self._due(config.checkpoint_every, state.step, epoch_done, finished):
                        self._save(optimizer, scheduler, state, window)
                    shown = f"loss {loss:.4f}"
                    if last_val:
                        shown += f"  val {self.select_metric} {last_val[self.select_metric]:.4f}"
                    bar.update(state.step, shown)
                    if finished:
                        break
        acc.wait_for_everyone()
        return TrainResult(
            steps=state.step,
            epochs_completed=state.epoch,
            best_step=state.best_step,
            best_val_metric=state.best_metric,
            seconds=time.perf_counter() - start,
            last_val=last_val,
            step_seconds=step_seconds,
        )

    # ------------------------------------------------------------------ one step

    def _step(self, model, optimizer, scheduler, group, state, window, metrics_log) -> float:
        acc, config = self.accelerator, self.config
        model.train()
        measure_balance = config.balance_every and state.step % config.balance_every == 0
        micro_losses: list[LossOutput] = []
        batches = []
        for position, indices in enumerate(group):
            batch = default_collate([self.train_data[i] for i in indices])
            if self.holdout_data is not None:
                batch["holdout"] = self._holdout_batch(state.step, position, len(indices))
            batches.append(self.method.prepare_batch(move_batch(batch, acc.device), state.step))
        shares = self._micro_batch_shares(batches)
        for position, batch in enumerate(batches):
            teacher_outputs = {
                name: teacher.signal(batch).to(acc.device)
                for name, teacher in self.teachers.items()
            }
            is_last = position == len(group) - 1
            with contextlib.ExitStack() as stack:
                if not is_last:
                    stack.enter_context(acc.no_sync(model))
                with acc.autocast():
                    _, loss = model(batch, teacher_outputs, (state.step + 1) / self.total_steps)
                if measure_balance and position == 0:
                    self._log_balance(loss, state, metrics_log)
                acc.backward(loss.total * shares[position])
            window.add(loss, len(group))
            micro_losses.append(loss)
        gradient_norm = None
        if config.max_grad_norm is not None:
            gradient_norm = acc.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        self._stop_unless_finite(micro_losses, gradient_norm, state.step + 1)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        if self._method_has_step_hook:
            self.method.on_step_end(state.step, self.total_steps, self._step_loss(micro_losses))
        if state.step % config.log_every == 0 or state.step == self.total_steps:
            row = window.reduce(acc)
            metrics_log.write(
                {
                    "kind": "train",
                    "step": state.step,
                    "epoch": state.epoch,
                    "lr": scheduler.get_last_lr()[0],
                    **row,
                }
            )
            return row["loss"]
        return window.last

    def _stop_unless_finite(
        self, micro_losses: list[LossOutput], gradient_norm: Tensor | None, step: int
    ) -> None:
        """Stop, before the optimizer moves, when a loss part or the gradient stopped being
        finite on any process (every process decides together, so none waits for the others
        in a collective). With fp16 the gradient scaler skips overflowing steps itself."""

        def finite(value: Tensor) -> bool:
            return bool(torch.isfinite(value.detach()).all())

        parts = sorted({n for m in micro_losses for n, v in m.parts.items() if not finite(v)})
        if not parts and not all(finite(m.total) for m in micro_losses):
            parts = ["total"]
        gradient_ok = True
        if self.config.mixed_precision != "fp16":
            if gradient_norm is None:
                gradients = [p.grad for p in parameters_of(self.module) if p.grad is not None]
                gradient_norm = torch.nn.utils.get_total_norm(gradients) if gradients else None
            gradient_ok = gradient_norm is None or bool(torch.isfinite(gradient_norm))
        flags = self._on_any_process([bool(parts), not gradient_ok])
        if not flags.any():
            return
        if parts:
            what = f"the loss is not finite (part {', '.join(repr(p) for p in parts)})"
        elif flags[0]:
            what = "the loss is not finite on another process"
        else:
            what = f"the gradient is not finite (norm {float(gradient_norm) if gradient_norm is not None else 'nan'})"
        raise TrainingError(
            f"step {step}: {what}; training stopped before the optimizer moved. "
            f"{self._last_good()} Lower train.lr, set train.max_grad_norm, or check the "
            "method's weights and the data"
        )

    def _on_any_process(self, flags: list[bool]) -> Tensor:
        """The flags summed over every process: every process decides the same way, so none
        is left waiting for the others in a collective."""
        summed = torch.tensor([float(f) for f in flags], device=self.accelerator.device)
        if self.accelerator.num_processes > 1:
            summed = self.accelerator.reduce(summed, reduction="sum")
        return summed

    def _last_good(self) -> str:
        try:
            step = checkpoint.read_pointer(self.checkpoints, "last")["step"]
        except CheckpointError:
            return "No checkpoint had been written yet."
        return f"The last good checkpoint (step {step}) is kept; --resume continues from it."

    def _micro_batch_shares(self, batches: list[dict]) -> list[float]:
        """Each micro-batch's share of the step's gradient: its targets as the task counts
        them (samples, or labelled tokens for an LM) over the step's total on all processes,
        times the process count (DDP averages over processes). Mean losses per micro-batch
        then add up to the mean over every target of the step, however unevenly spread."""
        counts = torch.tensor(
            [float(self.task.count_targets(batch)) for batch in batches],
            device=self.accelerator.device,
        )
        total = counts.sum()
        world = self.accelerator.num_processes
        if world > 1:
            total = self.accelerator.reduce(total, reduction="sum")
        return (counts * world / total.clamp_min(1.0)).tolist()

    def _holdout_batch(self, step: int, position: int, size: int) -> dict:
        """A batch of held-out samples, drawn from (seed, step, micro-batch) alone so that a
        resumed run draws the same ones."""
        generator = torch.Generator().manual_seed(
            (self.config.seed * 1_000_003 + step) * 1_009 + position
        )
        picks = torch.randint(len(self.holdout_data), (size,), generator=generator)
        return default_collate([self.holdout_data[int(i)] for i in picks])

    @property
    def _method_has_step_hook(self) -> bool:
        return type(self.method).on_step_end is not Method.on_step_end

    def _step_loss(self, micro_losses: list[LossOutput]) -> LossOutput:
        """The step's loss parts: mean over micro-batches and processes, detached, so every
        process's method hook sees the same numbers (a schedule must not drift per rank)."""
        names = list(micro_losses[0].parts)
        means = torch.stack(
            [torch.stack([m.parts[n].detach().float() for m in micro_losses]).mean() for n in names]
        )
        if self.accelerator.num_processes > 1:
            means = self.accelerator.reduce(means, reduction="mean")
        parts = dict(zip(names, means, strict=True))
        weights = micro_losses[0].weights
        return LossOutput.combine({n: (weights[n], parts[n]) for n in names})

    def _log_balance(self, loss: LossOutput, state: TrainState, metrics_log: MetricsLog) -> None:
        shares = gradient_shares(loss, parameters_of(self.module))
        if not shares:
            return
        metrics_log.write(
            {
                "kind": "balance",
                "step": state.step,
                **{f"balance/{name}": share for name, share in shares.items()},
            }
        )
        # One micro-batch is a noisy measurement: judge the mean share over the run so far.
        for name, share in shares.items():
            state.balance_share_sums[name] = state.balance_share_sums.get(name, 0.0) + share
        state.balance_measurements += 1
        if state.balance_measurements < BALANCE_MIN_MEASUREMENTS or state.balance_warned:
            return
        means = {
            name: total / state.balance_measurements
            for name, total in state.balance_share_sums.items()
        }
        dominant = dominant_part(means, self.config.balance_warn_share)
        if dominant and self.accelerator.is_main_process:
            state.balance_warned = True
            summary = ", ".join(f"{name} {share:.1%}" for name, share in means.items())
            log.warning(
                "loss part %r carries %.1f%% of the gradient norm on average over %d "
                "measurements up to step %d (%s); the other terms barely train the student. "
                "Check the method's weights.",
                dominant,
                100 * means[dominant],
                state.balance_measurements,
                state.step,
                summary,
            )

    # ------------------------------------------------------------------ eval, checkpoints

    @staticmethod
    def _due(every: int | None, step: int, epoch_done: bool, finished: bool) -> bool:
        return finished or (epoch_done if every is None else step % every == 0)

    def students(self) -> dict[str, nn.Module]:
        """Every student of the run by name: the main one, then the method's peers."""
        return {MAIN_STUDENT: self.module.student, **self.method.peers()}

    def _validate(self, state: TrainState, metrics_log) -> dict:
        """Score every student; keep each one's best weights by its own validation metric.
        Returns the main student's metrics."""
        main_metrics: dict = {}
        for name, model in self.students().items():
            metrics = self.validators[name](model, self.accelerator.device)
            row = {"kind": "eval", "step": state.step, "epoch": state.epoch, "split": "val"}
            if name != MAIN_STUDENT:
                row["student"] = name
            metrics_log.write({**row, **metrics})
            value = metrics[self.select_metric]
            if name == MAIN_STUDENT:
                main_metrics, best = metrics, state.best_metric
            else:
                best = state.peer_best.get(name, [None])[0]
            better = best is None or (value > best if self.maximise else value < best)
            if not better:
                continue
            if name == MAIN_STUDENT:
                state.best_metric, state.best_step = value, state.step
            else:
                state.peer_best[name] = [value, state.step]
            self._save_best(name, model, value, state.step)
        return main_metrics

    def _save_best(self, student: str, model: nn.Module, value: float, step: int) -> None:
        pointer = checkpoint.best_pointer(student)
        if self.accelerator.is_main_process:
            name = f"{pointer}-{step:06d}"
            folder = checkpoint.begin(self.checkpoints, name)
            checkpoint.write_model(folder, model.state_dict())
            checkpoint.commit(
                self.checkpoints,
                name,
                pointer,
                {"step": step, "metric": value, "select_metric": self.select_metric},
            )
        self.accelerator.wait_for_everyone()

    def _save(self, optimizer, scheduler, state: TrainState, window: LossWindow) -> None:
        acc = self.accelerator
        self._stop_unless_finite_weights(state.step)
        name = f"step-{state.step:06d}"
        if acc.is_main_process:
            folder = checkpoint.begin(self.checkpoints, name)
            checkpoint.write_model(folder, self.module.student.state_dict())
            checkpoint.write_model(folder, self.module.method.state_dict(), checkpoint.METHOD_FILE)
            checkpoint.write_training_state(
                folder,
                optimizer.state_dict(),
                {
                    "state": asdict(state),
                    "scheduler": scheduler.state_dict(),
                    "num_processes": acc.num_processes,
                },
            )
        acc.wait_for_everyone()
        checkpoint.write_rank_state(
            self.checkpoints / f".tmp-{name}",
            acc.process_index,
            {"rng": rng_state(), "loss_window": window.state()},
        )
        acc.wait_for_everyone()
        if acc.is_main_process:
            checkpoint.commit(self.checkpoints, name, "last", {"step": state.step})
        acc.wait_for_everyone()

    def _stop_unless_finite_weights(self, step: int) -> None:
        """Never write non-finite weights over the last good checkpoint."""
        tensors = [*self.module.named_parameters(), *self.module.named_buffers()]
        bad = [n for n, t in tensors if t.is_floating_point() and not torch.isfinite(t).all()]
        if not self._on_any_process([bool(bad)]).any():
            return
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise TrainingError(
            f"step {step}: weights are not finite ({shown or 'on another process'}); they were "
            f"not checkpointed. {self._last_good()}"
        )

    def _restore(self, source: Path, optimizer, scheduler, window: LossWindow) -> TrainState:
        student_state, method_state, optimizer_state, trainer_state, rank_state = (
            checkpoint.load_training_state(source, self.accelerator.process_index)
        )
        if trainer_state["num_processes"] != self.accelerator.num_processes:
            raise CheckpointError(
                f"{self.checkpoints}: saved with {trainer_state['num_processes']} processes, "
                f"resumed with {self.accelerator.num_processes}; the data order would differ"
            )
        checkpoint.load_into(self.module.student, student_state, source / checkpoint.MODEL_FILE)
        checkpoint.load_into(self.module.method, method_state, source / checkpoint.METHOD_FILE)
        optimizer.load_state_dict(optimizer_state)
        scheduler.load_state_dict(trainer_state["scheduler"])
        set_rng_state(rank_state["rng"])
        window.load_state(rank_state["loss_window"])
        return TrainState(**trainer_state["state"])

    def _build_optimizer(self) -> torch.optim.Optimizer:
        config = self.config
        parameters = parameters_of(self.module)
        if config.optimizer == "sgd":
            return torch.optim.SGD(
                parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
            )
        return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
