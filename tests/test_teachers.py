"""Teachers are frozen, keep their own device and dtype, and precomputed outputs match live."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distil.data import ArrayDataset
from distil.errors import DataError
from distil.teachers import ModuleTeacher, PrecomputedTeacher, Teacher


def make_teacher(dtype=torch.float32) -> ModuleTeacher:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(6, 16), nn.Dropout(0.5), nn.ReLU(), nn.Linear(16, 3))
    return ModuleTeacher(module, dtype=dtype)


def test_module_teacher_is_frozen_and_deterministic():
    teacher = make_teacher()
    assert isinstance(teacher, Teacher)
    assert not teacher.module.training  # dropout off
    assert all(not p.requires_grad for p in teacher.module.parameters())
    batch = {"inputs": torch.randn(5, 6)}
    first, second = teacher.signal(batch).logits, teacher.signal(batch).logits
    assert torch.equal(first, second)
    assert not first.requires_grad


def test_teacher_runs_in_its_own_dtype_and_outputs_move_to_student():
    teacher = make_teacher(torch.bfloat16)
    outputs = teacher.signal({"inputs": torch.randn(4, 6)})
    assert outputs.logits.dtype == torch.bfloat16
    moved = outputs.to(torch.device("cpu"))
    assert moved.logits.dtype == torch.float32


def test_precomputed_teacher_matches_live_teacher():
    teacher = make_teacher()
    dataset = ArrayDataset(torch.randn(20, 6), torch.zeros(20, dtype=torch.long))
    cached = PrecomputedTeacher.from_teacher(teacher, dataset, batch_size=7)
    index = torch.tensor([3, 17, 0])
    batch = {"inputs": dataset.inputs[index], "index": index}
    torch.testing.assert_close(cached.signal(batch).logits, teacher.signal(batch).logits)


def test_precomputed_teacher_refuses_samples_it_was_not_computed_on():
    teacher = make_teacher()
    train = ArrayDataset(torch.randn(20, 6), torch.zeros(20, dtype=torch.long))
    cached = PrecomputedTeacher.from_teacher(teacher, train)
    other = torch.randn(3, 6)  # e.g. the validation split, whose indices also start at 0
    with pytest.raises(DataError, match="another dataset"):
        cached.signal({"inputs": other, "index": torch.tensor([0, 1, 2])})
    with pytest.raises(DataError, match="out of range"):
        cached.signal({"inputs": torch.randn(1, 6), "index": torch.tensor([25])})
