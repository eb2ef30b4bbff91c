"""Units of the training loop: the LR schedule's values, the sharded sample order, the
grouping of micro-batches into steps, and the running loss means of ``metrics.jsonl``."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from distil.methods.base import LossOutput
from distil.train.loss_window import LossWindow
from distil.train.sampling import ShardedBatches, epoch_permutation, step_groups
from distil.train.schedules import build_scheduler

# ----------------------------------------------------------------------------- schedules


def closed_form(step: int, total: int, warmup: int, kind: str) -> float:
    """LR factor of 0-based step ``step``, written out independently of ``lr_factor``."""
    if step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return {"constant": 1.0, "cosine": 0.5 + 0.5 * math.cos(math.pi * t), "linear": 1.0 - t}[kind]


def scheduled_lrs(peak: float, total: int, warmup: int, kind: str, steps: int) -> list[float]:
    """The LR the optimizer holds before each of ``steps`` optimizer steps."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=peak)
    scheduler = build_scheduler(optimizer, total_steps=total, warmup_steps=warmup, kind=kind)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize("kind", ["constant", "cosine", "linear"])
@pytest.mark.parametrize("warmup", [0, 1, 4])
def test_scheduled_lr_equals_the_closed_form(kind, warmup):
    """Bugs caught: warm-up 10× (or any factor) the peak, warm-up off by one step, a wrong
    decay shape or end point."""
    total, peak = 12, 0.3
    lrs = scheduled_lrs(peak, total, warmup, kind, total + 2)  # two steps past the end
    expected = [peak * closed_form(s, total, warmup, kind) for s in range(total + 2)]
    assert lrs == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_warmup_and_cosine_landmarks():
    """Bug caught: a warm-up that does not climb linearly to exactly the peak. Landmarks by
    hand: warm-up 4 → 0.25, 0.5, 0.75, 1.0 of the peak; cosine over 8 more steps → the
    peak right after warm-up, half of it half-way, 0 at the end."""
    lrs = scheduled_lrs(2.0, 12, 4, "cosine", 13)
    assert lrs[:6] == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.0, (1 + math.cos(math.pi / 8))])
    assert lrs[8] == pytest.approx(1.0)
    assert lrs[12] == pytest.approx(0.0, abs=1e-15)
    assert max(lrs) == pytest.approx(2.0)


# ----------------------------------------------------------------------------- ShardedBatches


def rank_batches(n: int, micro: int, world: int, *, seed: int = 0, epoch: int = 0,
                 skip: int = 0) -> list[list[list[int]]]:  # fmt: skip
    return [
        list(ShardedBatches(n, micro, seed=seed, rank=r, world_size=world).epoch(epoch, skip))
        for r in range(world)
    ]


@pytest.mark.parametrize("n, micro, world", [(23, 3, 2), (24, 4, 3), (10, 4, 1), (7, 2, 4)])
def test_ranks_shards_are_disjoint_and_cover_the_trimmed_permutation(n, micro, world):
    """Bugs caught: trimming dropped or wrong (ranks with different sample counts would run
    different step counts and hang DDP), overlapping shards, samples lost."""
    per_rank = n // world
    ranks = rank_batches(n, micro, world)
    seen = [i for batches in ranks for batch in batches for i in batch]
    assert len(seen) == len(set(seen)) == per_rank * world
    assert set(seen) == set(epoch_permutation(n, 0, 0)[: per_rank * world].tolist())
    for batches in ranks:
        assert sum(len(b) for b in batches) == per_rank
        assert len(batches) == len(ShardedBatches(n, micro, seed=0, world_size=world))
        assert len(batches) == math.ceil(per_rank / micro)
        assert all(len(b) == micro for b in batches[:-1]) and 0 < len(batches[-1]) <= micro


def test_ranks_micro_batches_together_are_the_single_process_micro_batch():
    """Bug caught: ranks taking contiguous blocks (or another layout) instead of every w-th
    sample — then 2 processes would train on other batches than 1 process."""
    one = rank_batches(24, 6, 1)[0]
    two = rank_batches(24, 3, 2)
    for k, batch in enumerate(one):
        assert sorted(two[0][k] + two[1][k]) == sorted(batch)


def test_order_is_deterministic_per_seed_and_epoch():
    """Bugs caught: an order drawn from the global RNG (not reproducible on resume), or the
    same order every epoch / for every seed."""
    torch.manual_seed(123)
    first = rank_batches(30, 4, 2, seed=5, epoch=3)
    torch.manual_seed(456)
    assert rank_batches(30, 4, 2, seed=5, epoch=3) == first
    assert rank_batches(30, 4, 2, seed=5, epoch=4) != first
    assert rank_batches(30, 4, 2, seed=6, epoch=3) != first


@pytest.mark.parametrize("skip", [0, 1, 3, 4, 9])
def test_skip_resumes_at_the_next_micro_batch(skip):
    """Bug caught: resume skipping samples instead of micro-batches (or the wrong count)."""
    for rank, full in enumerate(rank_batches(23, 3, 2)):
        resumed = list(ShardedBatches(23, 3, seed=0, rank=rank, world_size=2).epoch(0, skip))
        assert resumed == full[skip:]


def test_more_processes_than_samples_is_refused():
    with pytest.raises(ValueError, match="cannot be split"):
        ShardedBatches(3, 1, seed=0, rank=0, world_size=4)


# ----------------------------------------------------------------------------- step_groups


def test_step_groups_cut_consecutive_micro_batches_with_a_short_last_group():
    """Bugs caught: the last partial group dropped or padded, groups overlapping."""
    batches = [[i] for i in range(7)]
    assert step_groups(batches, 3) == [[[0], [1], [2]], [[3], [4], [5]], [[6]]]
    assert step_groups(batches, 1) == [[b] for b in batches]
    assert step_groups(batches, 7) == [batches]
    assert step_groups(batches, 10) == [batches]
    assert step_groups([], 4) == []


# ----------------------------------------------------------------------------- LossWindow


def loss(ce: float, kd: float, alpha: float = 0.25) -> LossOutput:
    return LossOutput.combine(
        {"ce": (1 - alpha, torch.tensor(ce)), "kd": (alpha, torch.tensor(kd))}
    )


ONE_PROCESS = SimpleNamespace(num_processes=1, device=torch.device("cpu"))


def test_loss_window_mean_is_the_mean_over_steps_of_micro_batch_means():
    """Bugs caught: micro-batches weighed as whole steps (a 2-micro-batch step counting
    twice), a wrong count, the weighted parts not ``weight · part``, a window not reset
    after a row. Step 1: micro-batches (ce 1, kd 3) and (ce 3, kd 5); step 2: (ce 7, kd 1)."""
    window = LossWindow()
    window.add(loss(1.0, 3.0), 2)
    window.add(loss(3.0, 5.0), 2)
    window.add(loss(7.0, 1.0), 1)
    assert window.last == pytest.approx(0.75 * 7 + 0.25 * 1)
    ce = ((1 + 3) / 2 + 7) / 2
    kd = ((3 + 5) / 2 + 1) / 2
    row = window.reduce(ONE_PROCESS)
    assert row == pytest.approx({
        "loss": 0.75 * ce + 0.25 * kd, "loss/ce": ce, "loss/kd": kd,
        "loss/ce@weighted": 0.75 * ce, "loss/kd@weighted": 0.25 * kd,
    })  # fmt: skip
    window.add(loss(2.0, 2.0), 1)
    assert window.reduce(ONE_PROCESS)["loss/ce"] == pytest.approx(2.0)


def test_loss_window_state_round_trip_continues_the_same_window():
    """Bug caught: a resumed run logging other means than an uninterrupted one (state()
    missing the count or the sums, load_state not restoring them)."""
    straight, saved = LossWindow(), LossWindow()
    for window in (straight, saved):
        window.add(loss(1.0, 2.0), 2)
        window.add(loss(4.0, 0.5), 2)
    restored = LossWindow()
    restored.load_state(saved.state())
    assert restored.last == straight.last
    for window in (straight, restored):
        window.add(loss(3.0, 3.0), 1)
    assert restored.reduce(ONE_PROCESS) == straight.reduce(ONE_PROCESS)
